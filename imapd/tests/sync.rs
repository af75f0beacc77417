//! Several sessions on one mailbox: sequence numbers stay right, EXPUNGE is reported only when
//! RFC 3501 §7.4.1 allows, flag changes and new messages reach other sessions, and IDLE wakes
//! for a delivery through the shared mail store.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test]
async fn expunge_reaches_the_other_session_at_the_right_time() {
    let server = Server::start().await;
    let mut a = server.login().await;
    let mut b = server.login().await;
    for i in 0..4 {
        a.append("INBOX", "()", &message(&format!("m{i}"), "x")).await;
    }
    a.ok("SELECT INBOX").await;
    b.ok("SELECT INBOX").await;
    a.ok("STORE 2 +FLAGS.SILENT (\\Deleted)").await;
    let r = a.ok("EXPUNGE").await;
    assert!(r.has("* 2 EXPUNGE"));
    // B's FETCH must not carry EXPUNGE; its sequence numbers still include the gone message.
    let r = b.ok("FETCH 1:4 (UID)").await;
    assert!(!r.has("EXPUNGE"), "{r:#?}");
    assert!(
        r.has("* 1 FETCH (UID 1)") && r.has("* 3 FETCH (UID 3)") && r.has("* 4 FETCH (UID 4)"),
        "{r:#?}"
    );
    let r = b.ok("STORE 4 +FLAGS (\\Flagged)").await;
    assert!(!r.has("EXPUNGE"));
    assert!(r.has("* 4 FETCH (UID 4"), "{r:#?}");
    let r = b.ok("SEARCH ALL").await;
    assert!(!r.has("EXPUNGE"));
    // NOOP may report it; afterwards numbering follows.
    let r = b.ok("NOOP").await;
    assert!(r.has("* 2 EXPUNGE"), "{r:#?}");
    let r = b.ok("FETCH 3 (UID)").await;
    assert!(r.has("* 3 FETCH (UID 4)"), "{r:#?}");
    // A's view hears about B's flag change.
    let r = a.ok("NOOP").await;
    // A selected first, so the four are \Recent there (RFC 3501 §2.3.2).
    assert!(r.has("* 3 FETCH (UID 4 FLAGS (\\Flagged \\Recent))"), "{r:#?}");
    // UID commands may carry EXPUNGE.
    b.ok("STORE 1 +FLAGS.SILENT (\\Deleted)").await;
    b.ok("EXPUNGE").await;
    let r = a.ok("UID FETCH 1:* (FLAGS)").await;
    assert!(r.has("* 1 EXPUNGE"), "{r:#?}");
}

#[tokio::test]
async fn new_messages_reach_other_sessions() {
    let server = Server::start().await;
    let mut a = server.login().await;
    a.ok("SELECT INBOX").await;
    server.deliver(&message("new", "x")).await;
    let r = a.ok("NOOP").await;
    assert!(r.has("* 1 EXISTS"), "{r:#?}");
    let mut b = server.login().await;
    b.append("INBOX", "()", &message("appended", "y")).await;
    let r = a.ok("CHECK").await;
    assert!(r.has("* 2 EXISTS"), "{r:#?}");
    let r = a.ok("FETCH 2 (ENVELOPE)").await;
    assert!(r.find("ENVELOPE").contains("appended"));
}

#[tokio::test]
async fn idle_wakes_on_delivery() {
    let server = Server::start().await;
    let mut a = server.login().await;
    a.ok("SELECT INBOX").await;
    a.write(b"i1 IDLE\r\n").await;
    assert!(a.raw_line().await.starts_with('+'));
    // Let the idling session settle, then deliver as smtpd does.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    server.deliver(&message("while idle", "z")).await;
    let line = a.raw_line().await;
    assert_eq!(line, "* 1 EXISTS");
    // The idling session learns of it first: it is \Recent there (RFC 3501 §2.3.2, §7.3.2).
    assert_eq!(a.raw_line().await, "* 1 RECENT");
    // The issue asks for "within a second"; the bound is loose so a loaded CI box does not flake.
    println!("IDLE woken {:?} after the delivery", start.elapsed());
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "woken after {:?}",
        start.elapsed()
    );
    // A flag change by another session wakes it too.
    let mut b = server.login().await;
    b.ok("SELECT INBOX").await;
    b.ok("STORE 1 +FLAGS (\\Seen)").await;
    let line = a.raw_line().await;
    assert!(line.starts_with("* 1 FETCH (UID 1 FLAGS (\\Seen \\Recent))"), "{line}");
    a.write(b"DONE\r\n").await;
    let r = a.until("i1").await;
    assert!(r.tagged.starts_with("i1 OK"), "{r:?}");
    a.ok("NOOP").await;
}

#[tokio::test]
async fn idle_sees_expunge_by_other_session() {
    let server = Server::start().await;
    let mut a = server.login().await;
    a.append("INBOX", "()", &message("one", "x")).await;
    a.append("INBOX", "()", &message("two", "x")).await;
    a.ok("SELECT INBOX").await;
    a.write(b"i1 IDLE\r\n").await;
    assert!(a.raw_line().await.starts_with('+'));
    let mut b = server.login().await;
    b.ok("SELECT INBOX").await;
    b.ok("MOVE 1 Trash").await;
    assert_eq!(a.raw_line().await, "* 1 EXPUNGE");
    a.write(b"DONE\r\n").await;
    a.until("i1").await;
    let r = a.ok("FETCH 1 (UID)").await;
    assert!(r.has("* 1 FETCH (UID 2)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_and_a_watching_session() {
    let server = std::sync::Arc::new(Server::start().await);
    let mut watcher = server.login().await;
    watcher.ok("SELECT INBOX").await;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..4 {
        let server = server.clone();
        tasks.spawn(async move {
            let mut c = server.login().await;
            c.ok("SELECT INBOX").await;
            for i in 0..15 {
                let r = c.append("INBOX", "()", &message(&format!("w{w}m{i}"), "x")).await;
                assert!(r.tagged.contains("OK"), "{r:?}");
                if i % 5 == 4 {
                    // Delete one of our own messages now and then.
                    let r = c.ok(&format!("UID SEARCH SUBJECT w{w}m{}", i - 2)).await;
                    let uid = r.find("* SEARCH ").trim_start_matches("* SEARCH ").to_string();
                    c.ok(&format!("UID STORE {uid} +FLAGS.SILENT (\\Deleted)")).await;
                    c.ok(&format!("UID EXPUNGE {uid}")).await;
                }
            }
        });
    }
    let mut count = 0usize;
    while !tasks.is_empty() {
        let r = watcher.ok("NOOP").await;
        follow(&r, &mut count);
        if let Some(done) = tasks.try_join_next() {
            done.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = watcher.ok("NOOP").await;
    follow(&r, &mut count);
    // 60 appended, 12 expunged: the watcher's view must agree with the store.
    assert_eq!(count, 48);
    let r = watcher.ok("FETCH 1:* (UID)").await;
    assert_eq!(r.lines.len(), 48);
    let uids: Vec<u32> = r
        .lines
        .iter()
        .map(|l| l.split("UID ").nth(1).unwrap().trim_end_matches(')').parse().unwrap())
        .collect();
    assert!(uids.windows(2).all(|w| w[0] < w[1]), "{uids:?}");
    for (i, line) in r.lines.iter().enumerate() {
        assert!(line.starts_with(&format!("* {} FETCH", i + 1)), "{line}");
    }
}

/// Follow EXISTS and EXPUNGE responses in order (RFC 3501 §7.3.1, §7.4.1).
fn follow(r: &Response, count: &mut usize) {
    for line in &r.lines {
        if let Some(n) = line.strip_prefix("* ").and_then(|l| l.strip_suffix(" EXISTS")) {
            *count = n.parse().unwrap();
        }
        if let Some(n) = line.strip_prefix("* ").and_then(|l| l.strip_suffix(" EXPUNGE")) {
            let n: usize = n.parse().unwrap();
            assert!(n >= 1 && n <= *count, "EXPUNGE {n} with {count} messages");
            *count -= 1;
        }
    }
}

/// Skipping the sync at the end of SELECT, FETCH and STORE loses nothing another session did
/// before the command: FETCH reports it (its sync comes first), STORE reads it back because
/// its own MODSEQ does not follow the view's, and a change made just after either is reported
/// by the next command.
#[tokio::test]
async fn others_changes_still_arrive_around_skipped_syncs() {
    let server = Server::start().await;
    server.deliver(&message("one", "body")).await;
    let mut a = server.login().await;
    a.ok("SELECT INBOX").await;
    let mut b = server.login().await;
    b.ok("SELECT INBOX").await;

    // Before FETCH: a new message and a flag change.
    b.append("INBOX", "()", &message("two", "body")).await;
    b.ok("STORE 1 +FLAGS (\\Flagged)").await;
    let r = a.ok("FETCH 1:* (UID FLAGS)").await;
    assert!(r.has("* 2 EXISTS"), "{r:#?}");
    assert!(r.find("* 1 FETCH").contains("\\Flagged"), "{r:#?}");

    // Before STORE: another session's change is read back and reported.
    b.ok("STORE 2 +FLAGS (\\Answered)").await;
    let r = a.ok("STORE 1 +FLAGS (\\Seen)").await;
    assert!(
        r.lines
            .iter()
            .any(|l| l.starts_with("* 2 FETCH") && l.contains("\\Answered")),
        "{r:#?}"
    );

    // After STORE (own MODSEQ followed on, sync skipped): the next command reports it.
    let r = a.ok("STORE 1 -FLAGS (\\Seen)").await;
    assert!(!r.has("* 2 FETCH"), "{r:#?}");
    b.ok("STORE 2 +FLAGS (\\Draft)").await;
    b.append("INBOX", "()", &message("three", "body")).await;
    let r = a.ok("NOOP").await;
    assert!(r.has("* 3 EXISTS"), "{r:#?}");
    assert!(
        r.lines
            .iter()
            .any(|l| l.starts_with("* 2 FETCH") && l.contains("\\Draft")),
        "{r:#?}"
    );

    // After SELECT: a message expunged elsewhere right after is announced by the next command.
    a.ok("SELECT INBOX").await;
    b.ok("STORE 3 +FLAGS (\\Deleted)").await;
    b.ok("EXPUNGE").await;
    let r = a.ok("NOOP").await;
    assert!(r.has("* 3 EXPUNGE"), "{r:#?}");
}

/// The subject each `* n FETCH` line of `r` shows, by sequence number.
fn subjects(r: &Response) -> Vec<(u32, String)> {
    r.lines
        .iter()
        .filter_map(|l| {
            let seq = l.strip_prefix("* ")?.split(' ').next()?.parse().ok()?;
            let subject = l.split("Subject: ").nth(1)?.split('\r').next()?.to_string();
            l.contains(" FETCH (").then_some((seq, subject))
        })
        .collect()
}

/// FETCH reads its first rows in the statement of its sync (as the view named them before it):
/// what another session changed just before still shows, and the rows are the mailbox's as of
/// then: a message that arrived is answered with its own data, one expunged is skipped by
/// sequence number and announced by UID FETCH, and a first batch the sync shifted (more than
/// 250 messages, one of the first gone) is read again.
#[tokio::test]
async fn fetch_reads_its_first_rows_with_its_sync() {
    let server = Server::start().await;
    for n in 1..=3 {
        server.deliver(&message(&format!("m{n}"), "x")).await;
    }
    let mut a = server.login().await;
    a.ok("SELECT INBOX").await;
    let mut b = server.login().await;
    b.ok("SELECT INBOX").await;
    b.append("INBOX", "()", &message("m4", "x")).await;
    b.ok("STORE 1 +FLAGS (\\Flagged)").await;
    b.ok("STORE 2 +FLAGS (\\Deleted)").await;
    b.ok("EXPUNGE").await;
    let headers = "(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (Subject)])";
    // The rows read ahead (1:3) are the batch after the sync too.
    let r = a.ok(&format!("FETCH 1:3 {headers}")).await;
    assert!(r.has("* 4 EXISTS"), "{r:#?}");
    assert!(!r.has("EXPUNGE"), "{r:#?}");
    assert!(r.find("* 1 FETCH").contains("\\Flagged"), "{r:#?}");
    // Message 2 was expunged elsewhere: still numbered, not answered (RFC 3501 §7.4.1).
    let want: Vec<(u32, String)> = [(1, "m1"), (3, "m3")]
        .iter()
        .map(|&(seq, s)| (seq, s.to_string()))
        .collect();
    assert_eq!(subjects(&r), want, "{r:#?}");
    // A message the sync adds to the batch: read with the batch after it.
    b.append("INBOX", "()", &message("m5", "x")).await;
    let r = a.ok(&format!("FETCH 3:* {headers}")).await;
    assert!(r.has("* 5 EXISTS"), "{r:#?}");
    let want: Vec<(u32, String)> = [(3, "m3"), (4, "m4"), (5, "m5")]
        .iter()
        .map(|&(seq, s)| (seq, s.to_string()))
        .collect();
    assert_eq!(subjects(&r), want, "{r:#?}");
    let r = a.ok(&format!("UID FETCH 1:* {headers}")).await;
    assert!(r.has("* 2 EXPUNGE"), "{r:#?}");
    let want: Vec<(u32, String)> = [(1, "m1"), (2, "m3"), (3, "m4"), (4, "m5")]
        .iter()
        .map(|&(seq, s)| (seq, s.to_string()))
        .collect();
    assert_eq!(subjects(&r), want, "{r:#?}");

    // More than one batch: the first batch after the sync is not the one read ahead.
    for n in 6..=300 {
        server.deliver(&message(&format!("m{n}"), "x")).await;
    }
    a.ok("NOOP").await;
    b.ok("STORE 1 +FLAGS (\\Deleted)").await;
    b.ok("EXPUNGE").await;
    let r = a.ok(&format!("UID FETCH 1:* {headers}")).await;
    assert!(r.has("* 1 EXPUNGE"), "{r:#?}");
    let got = subjects(&r);
    let want: Vec<(u32, String)> = (3..=300)
        .enumerate()
        .map(|(i, n)| (i as u32 + 1, format!("m{n}")))
        .collect();
    assert_eq!(got, want);
}

/// A session whose view the change clock vouches for (`shared::mailstore::clock`: no sync
/// before its commands) still hears of every change: one made by another process of the
/// install (its own mail store over the same data directory, so the same clock and not the
/// same header-row cache) at its next command, with the new message's own header; one by a
/// writer that does not tick this clock (a store over another data directory stands for a
/// process that could not map it) once the clock's trust has run out.
#[tokio::test]
async fn a_view_the_clock_vouches_for_still_hears_of_every_change() {
    use shared::blobs::BlobStore;
    use shared::mailstore::{FlagOp, MailStore, clock};
    let server = Server::start().await;
    server.deliver(&message("one", "body")).await;
    let mut a = server.login().await;
    a.ok("SELECT INBOX").await;
    // The sync of this NOOP vouches for the view.
    a.ok("NOOP").await;
    let other = MailStore::new(server.ctx.db.clone(), BlobStore::new(server.ctx.config.blobs_dir()));
    other
        .deliver(
            vec![shared::mailstore::DeliveryTarget {
                user_id: server.user_id,
                mailbox_id: None,
                reservation: None,
            }],
            &message("two", "body"),
            &[],
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    let r = a.ok("FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (Subject)])").await;
    assert!(r.has("* 2 EXISTS"), "{r:#?}");
    assert_eq!(subjects(&r), [(1, "one".to_string()), (2, "two".to_string())], "{r:#?}");

    // Vouched for again by that FETCH's sync; now a writer that does not tick this clock.
    a.ok("NOOP").await;
    let elsewhere = tempfile::tempdir().unwrap();
    let blind = MailStore::new(server.ctx.db.clone(), BlobStore::new(elsewhere.path().join("blobs")));
    let inbox = blind.mailbox(server.user_id, "INBOX").await.unwrap();
    let first_uid = blind.message_states(server.user_id, inbox.id).await.unwrap()[0].uid;
    blind
        .store_flags(
            server.user_id,
            inbox.id,
            &[first_uid],
            FlagOp::Add,
            &["\\Flagged".into()],
            None,
        )
        .await
        .unwrap();
    tokio::time::sleep(clock::TRUST_FOR + Duration::from_millis(200)).await;
    let r = a.ok("NOOP").await;
    assert!(
        r.lines
            .iter()
            .any(|l| l.starts_with("* 1 FETCH") && l.contains("\\Flagged")),
        "{r:#?}"
    );
}
