//! Speed regressions that come from how bytes cross the socket, measured from outside with real
//! clients against the real server. Each bound is several times what the fixed server takes on a
//! loaded 2-core machine, and well below what the fault it guards against costs.

mod common;

use std::time::Duration;

use common::*;

/// python's imaplib writes a synchronizing literal and its closing CRLF as two writes with
/// Nagle's algorithm on: the CRLF waits until the literal is acknowledged. With the server's
/// delayed ACK (40 ms on Linux) each APPEND took over 40 ms (21 messages/s); the server now
/// acknowledges at once (TCP_QUICKACK after each read, shared::net::Stream::ack_now).
#[tokio::test]
async fn imaplib_synchronizing_appends_do_not_wait_for_delayed_acks() {
    let server = Server::start().await;
    let count = 25;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/append_sync.py");
    let out = server
        .imaplib(&[script], &[&count.to_string()], Duration::from_secs(60))
        .await;
    let text = printed(&out);
    assert!(out.status.success(), "{text}");
    println!("{text}");
    let extra: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("EXTRA_MS "))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no timing in: {text}"));
    // A delayed ACK costs at least 40 ms per APPEND; the continuation's round trip a few.
    assert!(
        extra < 20.0,
        "a synchronizing APPEND took {extra:.1} ms more than a LITERAL+ one (delayed ACKs?): {text}"
    );
}

/// A message of about `size` bytes whose every line names it, so a body sent for the wrong
/// message or from the wrong offset shows.
fn sized_message(n: usize, size: usize) -> Vec<u8> {
    let mut raw = format!("From: a@example.test\r\nSubject: sized {n}\r\n\r\n").into_bytes();
    let mut line = 0;
    while raw.len() < size {
        raw.extend_from_slice(format!("message {n} line {line} {}\r\n", "y".repeat(40)).as_bytes());
        line += 1;
    }
    raw
}

/// FETCH reads small message files whole in groups (read ahead on the blocking pool) and
/// streams large ones: a mix of sizes across group boundaries, with whole, partial and TEXT
/// sections in one command, must give every message's own bytes.
#[tokio::test]
async fn body_fetch_of_mixed_sizes_gives_each_message_its_bytes() {
    let server = Server::start().await;
    // 64 KiB is the largest file read whole; 256 KiB of them make one group.
    let sizes = [
        900, 70_000, 60_000, 60_000, 60_000, 65_536, 60_000, 60_000, 50, 2_000, 1_500_000, 60_000, 10, 65_537, 4_000,
    ];
    let mut messages = Vec::new();
    for (n, size) in sizes.iter().enumerate() {
        let raw = sized_message(n, *size);
        server.deliver(&raw).await;
        messages.push(raw);
    }
    let mut c = server.login().await;
    c.ok("SELECT INBOX").await;
    let r = c
        .ok("FETCH 1:* (BODY.PEEK[] BODY.PEEK[]<100.50> BODY.PEEK[TEXT])")
        .await;
    assert_eq!(r.lines.len(), messages.len(), "one response per message");
    for (i, raw) in messages.iter().enumerate() {
        let text_start = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let body = &raw[text_start..];
        let expected = format!(
            "* {seq} FETCH (BODY[] {{{len}}}\r\n{whole} BODY[]<100> {{50}}\r\n{part} BODY[TEXT] {{{tlen}}}\r\n{text})",
            seq = i + 1,
            len = raw.len(),
            whole = String::from_utf8_lossy(raw),
            part = String::from_utf8_lossy(&raw[100.min(raw.len())..150.min(raw.len())]),
            tlen = body.len(),
            text = String::from_utf8_lossy(body),
        );
        if raw.len() < 150 {
            // Short messages: the partial is clamped, checked by the other tests.
            assert!(r.lines[i].starts_with(&format!("* {} FETCH (BODY[] {{{}}}", i + 1, raw.len())));
            continue;
        }
        assert!(
            r.lines[i] == expected,
            "message {} ({} bytes) differs",
            i + 1,
            raw.len()
        );
    }
}

/// FETCH reads the next two batches' rows (100, then 250 messages each) while it writes the
/// responses of this one: across four batches, two reads in flight at once, every message still
/// gets its own size, header fields and body, in order.
#[tokio::test]
async fn fetch_across_batches_gives_each_message_its_own_rows() {
    let server = Server::start().await;
    let count = 620;
    let mut messages = Vec::new();
    for n in 0..count {
        let raw = sized_message(n, 100 + (n * 37) % 3000);
        server.deliver(&raw).await;
        messages.push(raw);
    }
    let mut c = server.login().await;
    c.ok("SELECT INBOX").await;
    let r = c
        .ok("UID FETCH 1:* (UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        .await;
    assert_eq!(r.lines.len(), count, "one response per message");
    for (i, raw) in messages.iter().enumerate() {
        let subject = format!("Subject: sized {i}\r\n\r\n");
        let expected = format!(
            "* {seq} FETCH (UID {seq} RFC822.SIZE {len} BODY[HEADER.FIELDS (SUBJECT)] {{{hlen}}}\r\n{subject})",
            seq = i + 1,
            len = raw.len(),
            hlen = subject.len(),
        );
        assert_eq!(r.lines[i], expected);
    }
    let r = c.ok("FETCH 1:* (BODY.PEEK[])").await;
    assert_eq!(r.lines.len(), count, "one response per message");
    for (i, raw) in messages.iter().enumerate() {
        let expected = format!(
            "* {seq} FETCH (BODY[] {{{len}}}\r\n{whole})",
            seq = i + 1,
            len = raw.len(),
            whole = String::from_utf8_lossy(raw),
        );
        assert!(r.lines[i] == expected, "message {} differs", i + 1);
    }
}

/// A client that logs in again and again with the right password (a phone polling every
/// minute, Thunderbird's several connections) pays argon2id once; a wrong password over the
/// same socket protocol is still checked in full (shared/src/auth/cache.rs).
#[tokio::test]
async fn repeated_imap_logins_pay_argon2_once() {
    let server = Server::start().await;
    for _ in 0..4 {
        let mut c = server.login().await;
        c.ok("LOGOUT").await;
    }
    // AUTHENTICATE PLAIN (RFC 4616) goes through the same check.
    let mut c = server.connect().await;
    let plain = base64_plain(USER, PASS);
    c.ok(&format!("AUTHENTICATE PLAIN {plain}")).await;
    assert_eq!(server.ctx.auth.verifications(), 1, "one password check for five logins");
    assert_eq!(server.ctx.auth.cache_hits(), 4);
    let mut c = server.connect().await;
    c.no(&format!("LOGIN {USER} \"not the password\"")).await;
    assert_eq!(
        server.ctx.auth.verifications(),
        2,
        "a wrong password is checked in full"
    );
}

fn base64_plain(user: &str, pass: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"))
}

/// SEARCH over headers streams the whole mailbox in one statement (MailStore::scan_light): the
/// hits are the same as message-by-message matching gives, case-insensitive, across folded
/// lines, and a message another session expunged (still numbered in this view, RFC 3501
/// §7.4.1) is not a hit.
#[tokio::test]
async fn header_search_over_a_streamed_mailbox() {
    let server = Server::start().await;
    let mut expected = Vec::new();
    for i in 1..=300u32 {
        let subject = match i {
            _ if i % 37 == 0 => format!("the NeEdLe number {i}"),
            150 => "folded\r\n needle".to_string(),
            _ => format!("hay {i}"),
        };
        if i % 37 == 0 || i == 150 {
            expected.push(i);
        }
        server.deliver(&message(&subject, "body")).await;
    }
    let mut c = server.login().await;
    c.ok("SELECT INBOX").await;
    let want = |seqs: &[u32]| {
        let mut line = "* SEARCH".to_string();
        for s in seqs {
            line.push_str(&format!(" {s}"));
        }
        line
    };
    let r = c.ok("SEARCH SUBJECT needle").await;
    assert_eq!(r.find("* SEARCH"), want(&expected));
    let r = c.ok("SEARCH SUBJECT \"folded needle\"").await;
    assert_eq!(r.find("* SEARCH"), want(&[150]));
    let r = c.ok("SEARCH NOT SUBJECT hay LARGER 10").await;
    assert_eq!(r.find("* SEARCH"), want(&expected));

    // Another session expunges message 74; this one keeps its number until told.
    let mut other = server.login().await;
    other.ok("SELECT INBOX").await;
    other.ok("STORE 74 +FLAGS (\\Deleted)").await;
    other.ok("EXPUNGE").await;
    let r = c.ok("SEARCH SUBJECT needle").await;
    let without: Vec<u32> = expected.iter().copied().filter(|&s| s != 74).collect();
    assert_eq!(r.find("* SEARCH"), want(&without));
    assert!(!r.has("EXPUNGE"), "no EXPUNGE during SEARCH: {r:#?}");
}

/// After its own STORE a session does not read the whole mailbox back (Selected::advance_known),
/// but only when nobody else changed it in between: another session's change made just before
/// is still reported, and one made just after too.
#[tokio::test]
async fn own_store_skips_the_read_back_but_others_changes_still_arrive() {
    let server = Server::start().await;
    for i in 0..5 {
        server.deliver(&message(&format!("m{i}"), "body")).await;
    }
    let mut a = server.login().await;
    a.ok("SELECT INBOX").await;
    let mut b = server.login().await;
    b.ok("SELECT INBOX").await;

    let r = a.ok("STORE 1:* +FLAGS (\\Seen)").await;
    assert_eq!(r.lines.iter().filter(|l| l.contains("FETCH")).count(), 5, "{r:#?}");
    let r = a.ok("NOOP").await;
    assert!(!r.has("FETCH"), "its own change is not reported again: {r:#?}");

    // B changes message 3 before A's next STORE: A's STORE takes the MODSEQ after B's, so A
    // must still read B's change and report it.
    b.ok("STORE 3 +FLAGS (\\Flagged)").await;
    let r = a.ok("STORE 1 +FLAGS (\\Answered)").await;
    assert!(
        r.has("* 3 FETCH") && r.find("* 3 FETCH").contains("\\Flagged"),
        "another session's change before this STORE is reported: {r:#?}"
    );
    // And a change right after.
    b.ok("STORE 4 +FLAGS (\\Flagged)").await;
    let r = a.ok("NOOP").await;
    assert!(
        r.has("* 4 FETCH") && r.find("* 4 FETCH").contains("\\Flagged"),
        "{r:#?}"
    );
}
