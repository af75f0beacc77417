//! CONDSTORE and QRESYNC (RFC 7162) from outside: on by default, ENABLE QRESYNC, SELECT
//! (QRESYNC ...) answering a cache's missed changes with `VANISHED (EARLIER)` and FETCH, UID FETCH
//! (CHANGEDSINCE n VANISHED), `VANISHED` instead of EXPUNGE after ENABLE QRESYNC, `[CLOSED]`,
//! HIGHESTMODSEQ after EXPUNGE, and python imaplib resyncing a 10,000-message folder.

mod common;

use std::time::Duration;

use common::*;

/// The number after `name` in a response line (`HIGHESTMODSEQ 7]`, `UIDVALIDITY 3]`).
fn number_after(text: &str, name: &str) -> u64 {
    let rest = text.split(name).nth(1).unwrap_or_else(|| panic!("no {name} in {text}"));
    rest.trim_start_matches([' ', '('])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("no number after {name} in {text}"))
}

/// A server with `count` messages in INBOX, subjects m1..m{count}.
async fn server_with(count: usize) -> Server {
    let server = Server::start().await;
    for i in 1..=count {
        server.deliver(&message(&format!("m{i}"), "body")).await;
    }
    server
}

/// A logged-in session with QRESYNC enabled.
async fn qresync_client(server: &Server) -> Client {
    let mut c = server.login().await;
    let r = c.ok("ENABLE QRESYNC").await;
    assert!(r.has("* ENABLED QRESYNC"), "{r:#?}");
    c
}

/// The FETCH lines of a response, in order.
fn fetches(r: &Response) -> Vec<&str> {
    r.lines
        .iter()
        .filter(|l| l.contains(" FETCH "))
        .map(String::as_str)
        .collect()
}

#[tokio::test]
async fn advertised_by_default_and_enabled_only_by_enable() {
    let server = Server::start().await;
    let mut c = server.login().await;
    let caps = c.ok("CAPABILITY").await;
    let caps = caps.find("* CAPABILITY");
    assert!(caps.contains(" CONDSTORE") && caps.contains(" QRESYNC"), "{caps}");
    // RFC 7162 §3.2.5: the QRESYNC parameter before ENABLE QRESYNC is BAD.
    c.bad("SELECT INBOX (QRESYNC (1 1))").await;
    c.ok("SELECT INBOX").await;
    // §3.2.6: VANISHED before ENABLE QRESYNC is BAD too, and always needs UID FETCH with
    // CHANGEDSINCE.
    c.bad("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)").await;
    let r = c.ok("ENABLE QRESYNC").await;
    assert!(r.has("* ENABLED QRESYNC"), "{r:#?}");
    // Enabling QRESYNC enables CONDSTORE (§3.2.3): with a mailbox selected, its
    // HIGHESTMODSEQ is announced.
    assert!(r.has("* OK [HIGHESTMODSEQ "), "{r:#?}");
    let r = c.ok("ENABLE CONDSTORE QRESYNC").await;
    assert!(r.lines.contains(&"* ENABLED".to_string()), "already on: {r:#?}");
    c.bad("FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)").await;
    c.bad("UID FETCH 1:* (FLAGS) (VANISHED)").await;
    c.ok("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)").await;
    c.ok("UID FETCH 1:* (FLAGS) (VANISHED CHANGEDSINCE 1)").await;
    // Malformed QRESYNC parameters.
    c.bad("SELECT INBOX (QRESYNC (0 1))").await;
    c.bad("SELECT INBOX (QRESYNC (1))").await;
    c.bad("SELECT INBOX (QRESYNC (1 1 1:*))").await;
    c.bad("SELECT INBOX (QRESYNC (1 1 1:5 (1:3 1:2)))").await;
    c.bad("SELECT INBOX (QRESYNC (1 1 1:5 (1:4000000000 1:4000000000)))")
        .await;
    c.bad("SELECT INBOX (QRESYNC (1 99999999999999999999))").await;
}

#[tokio::test]
async fn condstore_can_still_be_turned_off() {
    let server = Server::start_with(|c| c.imap.condstore = false, None).await;
    let mut c = server.login().await;
    let caps = c.ok("CAPABILITY").await;
    let caps = caps.find("* CAPABILITY");
    assert!(!caps.contains("CONDSTORE") && !caps.contains("QRESYNC"), "{caps}");
    let r = c.ok("ENABLE QRESYNC CONDSTORE").await;
    assert_eq!(r.lines, vec!["* ENABLED"]);
    let r = c.ok("SELECT INBOX").await;
    assert!(!r.has("HIGHESTMODSEQ"), "{r:#?}");
    let r = c.ok("SELECT INBOX").await;
    assert!(!r.has("[CLOSED]"), "{r:#?}");
}

/// RFC 7162 §3.2.10 (and RFC 6851 §4.3 for MOVE): after ENABLE QRESYNC every expunge is a
/// `* VANISHED uids`, never `* n EXPUNGE`; a session without it still gets EXPUNGE.
#[tokio::test]
async fn vanished_replaces_expunge_after_enable_qresync() {
    let server = server_with(8).await;
    let mut plain = server.login().await;
    plain.ok("SELECT INBOX").await;
    let mut q = qresync_client(&server).await;
    q.ok("SELECT INBOX").await;
    let mut other = server.login().await;
    other.ok("SELECT INBOX").await;
    other.ok("UID STORE 2,4 +FLAGS.SILENT (\\Deleted)").await;
    other.ok("EXPUNGE").await;

    let r = plain.ok("NOOP").await;
    assert!(r.has("* 2 EXPUNGE") && r.has("* 3 EXPUNGE"), "{r:#?}");
    let r = q.ok("NOOP").await;
    assert!(r.lines.contains(&"* VANISHED 2,4".to_string()), "{r:#?}");
    assert!(!r.has("EXPUNGE"), "{r:#?}");

    // Not during FETCH (RFC 3501 §7.4.1 holds for VANISHED too), at the next NOOP.
    other.ok("UID STORE 5 +FLAGS.SILENT (\\Deleted)").await;
    other.ok("EXPUNGE").await;
    let r = q.ok("FETCH 1:* (FLAGS)").await;
    assert!(!r.has("VANISHED"), "{r:#?}");
    let r = q.ok("NOOP").await;
    assert!(r.lines.contains(&"* VANISHED 5".to_string()), "{r:#?}");

    // Its own EXPUNGE: VANISHED, and the new HIGHESTMODSEQ in the tagged OK (§3.2.10).
    q.ok("UID STORE 1,3 +FLAGS.SILENT (\\Deleted)").await;
    let r = q.ok("EXPUNGE").await;
    assert_eq!(r.lines, vec!["* VANISHED 1,3"], "{r:#?}");
    let highest = number_after(&r.tagged, "HIGHESTMODSEQ");
    let status = q.ok("STATUS INBOX (HIGHESTMODSEQ MESSAGES)").await;
    assert_eq!(number_after(status.find("* STATUS"), "HIGHESTMODSEQ"), highest);
    assert_eq!(number_after(status.find("* STATUS"), "MESSAGES"), 3);
    // UID EXPUNGE the same way; nothing removed: no HIGHESTMODSEQ.
    q.ok("UID STORE 6 +FLAGS.SILENT (\\Deleted)").await;
    let r = q.ok("UID EXPUNGE 6").await;
    assert_eq!(r.lines, vec!["* VANISHED 6"], "{r:#?}");
    assert!(r.tagged.contains("[HIGHESTMODSEQ "), "{r:#?}");
    let r = q.ok("UID EXPUNGE 7").await;
    assert!(r.lines.is_empty() && !r.tagged.contains("HIGHESTMODSEQ"), "{r:#?}");
    // MOVE: COPYUID, then VANISHED.
    q.ok("CREATE Saved").await;
    let r = q.ok("UID MOVE 7 Saved").await;
    assert!(r.has("[COPYUID "), "{r:#?}");
    assert!(r.lines.contains(&"* VANISHED 7".to_string()), "{r:#?}");
    assert!(!r.has("EXPUNGE"), "{r:#?}");
    // As Dovecot answers it: the new HIGHESTMODSEQ in the tagged OK.
    let highest = number_after(&r.tagged, "HIGHESTMODSEQ");
    let status = q.ok("STATUS INBOX (HIGHESTMODSEQ)").await;
    assert_eq!(number_after(status.find("* STATUS"), "HIGHESTMODSEQ"), highest);

    // The plain session saw all of it as EXPUNGE; UID 8 is left.
    let r = plain.ok("NOOP").await;
    assert!(r.has(" EXPUNGE") && !r.has("VANISHED"), "{r:#?}");
    let r = plain.ok("SEARCH ALL").await;
    assert_eq!(r.find("* SEARCH"), "* SEARCH 1");
}

/// RFC 7162 §3.2.11: a SELECT that replaces the selected mailbox first says `[CLOSED]`, also
/// without ENABLE QRESYNC and also when the new SELECT fails; CLOSE and UNSELECT do not.
#[tokio::test]
async fn closed_marks_the_switch_of_mailbox() {
    let server = server_with(1).await;
    let mut c = server.login().await;
    let r = c.ok("SELECT INBOX").await;
    assert!(!r.has("[CLOSED]"), "{r:#?}");
    c.ok("CREATE Other").await;
    let r = c.ok("EXAMINE Other").await;
    assert!(r.lines[0].starts_with("* OK [CLOSED]"), "first line: {r:#?}");
    let r = c.no("SELECT Nowhere").await;
    assert!(r.has("* OK [CLOSED]"), "{r:#?}");
    // Nothing is selected now: no [CLOSED].
    let r = c.ok("SELECT INBOX").await;
    assert!(!r.has("[CLOSED]"), "{r:#?}");
    let r = c.ok("CLOSE").await;
    assert!(!r.has("[CLOSED]") && !r.tagged.contains("[CLOSED]"), "{r:#?}");
    c.ok("SELECT INBOX").await;
    let r = c.ok("UNSELECT").await;
    assert!(!r.has("[CLOSED]") && !r.tagged.contains("[CLOSED]"), "{r:#?}");
}

/// RFC 7162 §3.2.5's example adapted: a client that knows the mailbox as of a MODSEQ gets, in
/// its SELECT, `VANISHED (EARLIER)` with the known UIDs expunged since, then one FETCH with
/// UID, FLAGS and MODSEQ per known message changed since; nothing else. A UIDVALIDITY
/// mismatch gets a plain SELECT (the client resyncs in full).
#[tokio::test]
async fn select_qresync_reports_exactly_what_the_cache_missed() {
    let server = server_with(12).await;
    let mut c = qresync_client(&server).await;
    let r = c.ok("SELECT INBOX").await;
    let uidvalidity = number_after(r.find("UIDVALIDITY"), "UIDVALIDITY");
    let cached = number_after(r.find("HIGHESTMODSEQ"), "HIGHESTMODSEQ");
    c.ok("LOGOUT").await;

    // Meanwhile: flags on 3 and 9, 5 and 10 expunged, 7 expunged after a flag change, one new.
    let mut other = server.login().await;
    other.ok("SELECT INBOX").await;
    other.ok("UID STORE 3 +FLAGS (\\Seen)").await;
    other.ok("UID STORE 9 +FLAGS ($Work)").await;
    other.ok("UID STORE 7 +FLAGS (\\Flagged)").await;
    other.ok("UID STORE 5,7,10 +FLAGS (\\Deleted)").await;
    other.ok("EXPUNGE").await;
    server.deliver(&message("m13", "body")).await;

    let mut c = qresync_client(&server).await;
    let r = c
        .ok(&format!("SELECT INBOX (QRESYNC ({uidvalidity} {cached} 1:12))"))
        .await;
    assert!(r.tagged.contains("[READ-WRITE]"), "{r:#?}");
    let highest = number_after(r.find("HIGHESTMODSEQ"), "HIGHESTMODSEQ");
    assert!(highest > cached);
    let vanished_at = r
        .lines
        .iter()
        .position(|l| l == "* VANISHED (EARLIER) 5,7,10")
        .unwrap_or_else(|| panic!("{r:#?}"));
    let f = fetches(&r);
    assert_eq!(f.len(), 2, "only UIDs 3 and 9 changed among the known ones: {r:#?}");
    assert!(f[0].starts_with("* 3 FETCH (UID 3 FLAGS (\\Seen) MODSEQ ("), "{}", f[0]);
    // UID 9 is message 7 now (5 and 7 are gone below it).
    assert!(f[1].starts_with("* 7 FETCH (UID 9 FLAGS ($Work) MODSEQ ("), "{}", f[1]);
    let first_fetch = r.lines.iter().position(|l| l.contains(" FETCH ")).unwrap();
    assert!(vanished_at < first_fetch, "VANISHED comes before the FETCHes: {r:#?}");
    assert!(r.has("* 10 EXISTS"), "{r:#?}");
    for (i, line) in f.iter().enumerate() {
        assert!(number_after(line, "MODSEQ (") > cached, "{i}: {line}");
    }

    // Without known-uids the client may know every UID: the new message is reported too.
    let r = c.ok(&format!("SELECT INBOX (QRESYNC ({uidvalidity} {cached}))")).await;
    assert!(r.lines[0].starts_with("* OK [CLOSED]"), "{r:#?}");
    assert!(r.lines.contains(&"* VANISHED (EARLIER) 5,7,10".to_string()), "{r:#?}");
    let f = fetches(&r);
    assert_eq!(f.len(), 3, "{r:#?}");
    assert!(f[2].starts_with("* 10 FETCH (UID 13 FLAGS ("), "{}", f[2]);

    // Known UIDs restrict both: only 9 and 10 asked about.
    let r = c
        .ok(&format!("EXAMINE INBOX (QRESYNC ({uidvalidity} {cached} 9:10))"))
        .await;
    assert!(r.lines.contains(&"* VANISHED (EARLIER) 10".to_string()), "{r:#?}");
    assert_eq!(fetches(&r).len(), 1, "{r:#?}");
    assert!(r.tagged.contains("[READ-ONLY]"), "{r:#?}");

    // Up to date: nothing but the usual SELECT responses.
    let r = c
        .ok(&format!("SELECT INBOX (QRESYNC ({uidvalidity} {highest} 1:13))"))
        .await;
    assert!(!r.has("VANISHED") && fetches(&r).is_empty(), "{r:#?}");

    // A UIDVALIDITY the mailbox does not have: a plain SELECT, no VANISHED, no FETCH.
    let r = c
        .ok(&format!("SELECT INBOX (QRESYNC ({} {cached} 1:12))", uidvalidity + 1))
        .await;
    assert!(!r.has("VANISHED") && fetches(&r).is_empty(), "{r:#?}");
    assert!(r.has(&format!("[UIDVALIDITY {uidvalidity}]")), "{r:#?}");
    assert!(r.has("* 10 EXISTS"), "{r:#?}");
}

/// RFC 7162 §3.2.6's example adapted: `UID FETCH set (FLAGS) (CHANGEDSINCE n VANISHED)`
/// answers the set's UIDs expunged since n first, then the changed messages.
#[tokio::test]
async fn uid_fetch_changedsince_vanished() {
    let server = server_with(10).await;
    let mut c = qresync_client(&server).await;
    let r = c.ok("SELECT INBOX").await;
    let since = number_after(r.find("HIGHESTMODSEQ"), "HIGHESTMODSEQ");
    let mut other = server.login().await;
    other.ok("SELECT INBOX").await;
    other.ok("UID STORE 2,6,9 +FLAGS (\\Deleted)").await;
    other.ok("EXPUNGE").await;
    other.ok("UID STORE 4,8 +FLAGS (\\Answered)").await;

    // The session's view catches up at NOOP (VANISHED without EARLIER); the FETCH's own
    // VANISHED (EARLIER) names the set's expunged UIDs anyway, before the changed messages.
    let r = c.ok("NOOP").await;
    assert!(r.lines.contains(&"* VANISHED 2,6,9".to_string()), "{r:#?}");
    let r = c
        .ok(&format!("UID FETCH 3:8 (FLAGS) (CHANGEDSINCE {since} VANISHED)"))
        .await;
    assert_eq!(r.lines.len(), 3, "{r:#?}");
    assert_eq!(r.lines[0], "* VANISHED (EARLIER) 6");
    // (\Recent: this session was the first to see them.)
    assert!(r.lines[1].starts_with("* 3 FETCH (UID 4 FLAGS (\\Answered"), "{r:#?}");
    assert!(r.lines[2].starts_with("* 6 FETCH (UID 8 FLAGS (\\Answered"), "{r:#?}");
    assert!(
        r.lines[1].contains(") MODSEQ (") && r.lines[2].contains(") MODSEQ ("),
        "{r:#?}"
    );
    // 1:* names every UID, also those above the highest left.
    other.ok("UID STORE 10 +FLAGS (\\Deleted)").await;
    other.ok("EXPUNGE").await;
    c.ok("NOOP").await;
    let r = c
        .ok(&format!("UID FETCH 1:* (FLAGS) (CHANGEDSINCE {since} VANISHED)"))
        .await;
    assert!(r.lines.contains(&"* VANISHED (EARLIER) 2,6,9:10".to_string()), "{r:#?}");
}

/// Expunges the store never recorded (before migration 0013, or beyond what it keeps): the
/// client is told every UID it may know that is gone (RFC 7162 §3.2.5.2 allows the superset),
/// narrowed by its seq-match-data; what the store remembers after that is exact again.
#[tokio::test]
async fn forgotten_expunges_are_answered_from_the_uids_present() {
    let server = server_with(10).await;
    let mut c = qresync_client(&server).await;
    let r = c.ok("SELECT INBOX").await;
    let uidvalidity = number_after(r.find("UIDVALIDITY"), "UIDVALIDITY");
    let cached = number_after(r.find("HIGHESTMODSEQ"), "HIGHESTMODSEQ");
    c.ok("UID STORE 2,5 +FLAGS.SILENT (\\Deleted)").await;
    c.ok("EXPUNGE").await;
    // As the migration leaves a mailbox whose removals were never recorded.
    sqlx::query("UPDATE mailboxes SET expunged_floor = highestmodseq")
        .execute(&server.ctx.db)
        .await
        .unwrap();
    sqlx::query("DELETE FROM expunged")
        .execute(&server.ctx.db)
        .await
        .unwrap();
    c.ok("LOGOUT").await;

    let mut c = qresync_client(&server).await;
    let r = c
        .ok(&format!("SELECT INBOX (QRESYNC ({uidvalidity} {cached} 1:10))"))
        .await;
    assert!(r.lines.contains(&"* VANISHED (EARLIER) 2,5".to_string()), "{r:#?}");
    // seq-match-data (§3.2.5.2): the client's message 1 is still UID 1, its 3 and 8 are not
    // (2 went away below them): only UIDs above 1 need naming, 2 and 5 still.
    let r = c
        .ok(&format!(
            "SELECT INBOX (QRESYNC ({uidvalidity} {cached} 1:10 (1,3,8 1,3,8)))"
        ))
        .await;
    assert!(r.lines.contains(&"* VANISHED (EARLIER) 2,5".to_string()), "{r:#?}");
    // A client that saw the first expunge already (its message 2 is UID 3 and 4 is UID 6):
    // UIDs up to 6 are known unchanged, none of its UIDs are reported gone.
    let r = c
        .ok(&format!(
            "SELECT INBOX (QRESYNC ({uidvalidity} {cached} 1:10 (2,4 3,6)))"
        ))
        .await;
    assert!(!r.has("VANISHED"), "{r:#?}");
    // A UID removed after the floor is remembered exactly again.
    let r = c.ok("STATUS INBOX (HIGHESTMODSEQ)").await;
    let floor = number_after(r.find("* STATUS"), "HIGHESTMODSEQ");
    c.ok("UID STORE 7 +FLAGS.SILENT (\\Deleted)").await;
    c.ok("EXPUNGE").await;
    let r = c
        .ok(&format!("SELECT INBOX (QRESYNC ({uidvalidity} {floor} 1:10))"))
        .await;
    assert!(r.lines.contains(&"* VANISHED (EARLIER) 7".to_string()), "{r:#?}");
}

/// The store's record of expunged UIDs is bounded: it grows to `EXPUNGED_PRUNE_AT` rows per
/// mailbox without any walk over it, then forgets its oldest removals (whole MODSEQs) down to
/// at most `EXPUNGED_KEPT`; older removals are answered from the UIDs present.
#[tokio::test]
async fn expunge_memory_is_bounded() {
    use shared::mailstore::{EXPUNGED_KEPT, EXPUNGED_PRUNE_AT};
    let server = server_with(1).await;
    let mut c = qresync_client(&server).await;
    c.ok("SELECT INBOX").await;
    // 1 -> 32768 messages by copying the mailbox into itself.
    for _ in 0..15 {
        c.ok("UID COPY 1:* INBOX").await;
    }
    let r = c.ok("STATUS INBOX (MESSAGES HIGHESTMODSEQ UIDVALIDITY)").await;
    let status = r.find("* STATUS").to_string();
    assert_eq!(number_after(&status, "MESSAGES"), 32768);
    let uidvalidity = number_after(&status, "UIDVALIDITY");
    let before = number_after(&status, "HIGHESTMODSEQ");
    let counted = || async {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM expunged")
            .fetch_one(&server.ctx.db)
            .await
            .unwrap();
        let kept: i64 = sqlx::query_scalar("SELECT expunged_rows FROM mailboxes WHERE name = 'INBOX'")
            .fetch_one(&server.ctx.db)
            .await
            .unwrap();
        (rows, kept)
    };
    let expunge = |from: i64, to: i64| format!("UID STORE {from}:{to} +FLAGS.SILENT (\\Deleted)");
    // Three removals: 5 UIDs, EXPUNGED_KEPT UIDs (still within the slack: nothing is
    // forgotten), then enough to pass EXPUNGED_PRUNE_AT.
    c.ok(&expunge(1, 5)).await;
    c.ok("EXPUNGE").await;
    let second_from = 100;
    let second_to = second_from + EXPUNGED_KEPT - 1;
    c.ok(&expunge(second_from, second_to)).await;
    c.ok("EXPUNGE").await;
    assert_eq!(
        counted().await,
        (EXPUNGED_KEPT + 5, EXPUNGED_KEPT + 5),
        "within the slack"
    );
    let after_second = number_after(&c.ok("STATUS INBOX (HIGHESTMODSEQ)").await.lines[0], "HIGHESTMODSEQ");
    let third_from = second_to + 1;
    let third_to = third_from + (EXPUNGED_PRUNE_AT - EXPUNGED_KEPT);
    c.ok(&expunge(third_from, third_to)).await;
    c.ok("EXPUNGE").await;
    // Past the bound: the newest EXPUNGED_KEPT rows reach into the second removal, so it is
    // forgotten whole with the first; only the third is left, and the count is exact again.
    let third = third_to - third_from + 1;
    assert!(third <= EXPUNGED_KEPT);
    assert_eq!(counted().await, (third, third), "pruned down to the newest removal");
    // From before the first removal: answered from the UIDs present (1:5 and 100:third_to are
    // gone, nothing else), the same set the exact record would have given.
    let r = c
        .ok(&format!("SELECT INBOX (QRESYNC ({uidvalidity} {before} 1:32768))"))
        .await;
    let expected = format!("* VANISHED (EARLIER) 1:5,{second_from}:{third_to}");
    assert!(r.lines.contains(&expected), "{:?}", &r.lines[..r.lines.len().min(12)]);
    // From after the second: exact, from the record.
    let r = c
        .ok(&format!(
            "SELECT INBOX (QRESYNC ({uidvalidity} {after_second} 1:32768))"
        ))
        .await;
    let expected = format!("* VANISHED (EARLIER) {third_from}:{third_to}");
    assert!(r.lines.contains(&expected), "{:?}", &r.lines[..r.lines.len().min(12)]);
}

/// Python's imaplib as a caching client: it caches a 10,000-message folder, another session
/// flags and expunges some and delivers new ones, and one SELECT (QRESYNC ...) brings the cache
/// exactly up to date (checked against a full fetch), with only the changes on the wire.
#[tokio::test]
async fn imaplib_resyncs_a_10000_message_folder_in_one_select() {
    let server = Server::start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/qresync_resync.py");
    let out = server.imaplib(&[script], &[], Duration::from_secs(180)).await;
    let text = printed(&out);
    println!("{text}");
    assert!(out.status.success() && text.contains("ALL OK"), "{text}");
}
