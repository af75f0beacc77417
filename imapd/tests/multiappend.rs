//! MULTIAPPEND (RFC 3502): several messages in one APPEND, all stored or none (§3), with
//! APPENDUID's UID set (RFC 4315 §3), over a real socket with synchronizing and LITERAL+
//! literals.

mod common;

use common::*;
use shared::mailstore::NewMessage;

/// ` flags date` of one message, each left out when empty.
fn options(flags: &str, date: &str) -> String {
    [flags, date]
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| format!(" {s}"))
        .collect()
}

/// A MULTIAPPEND of `messages` (flags, date, body) with synchronizing literals: each literal
/// is sent only after the server's `+`. Returns the tagged response, or the first line that is
/// not a continuation request (a refusal before a literal).
async fn multiappend_sync(c: &mut Client, mailbox: &str, messages: &[(&str, &str, Vec<u8>)]) -> Response {
    let tag = c.next_tag();
    let mut pending = format!("{tag} APPEND {mailbox}").into_bytes();
    for (flags, date, body) in messages {
        pending.extend_from_slice(format!("{} {{{}}}\r\n", options(flags, date), body.len()).as_bytes());
        c.write(&pending).await;
        let line = c.raw_line().await;
        if !line.starts_with('+') {
            return Response {
                lines: Vec::new(),
                tagged: line,
            };
        }
        pending = body.clone();
    }
    pending.extend_from_slice(b"\r\n");
    c.write(&pending).await;
    c.until(&tag).await
}

/// The same with LITERAL+ literals, all in one write.
async fn multiappend_plus(c: &mut Client, mailbox: &str, messages: &[(&str, &str, Vec<u8>)]) -> Response {
    let tag = c.next_tag();
    let mut bytes = format!("{tag} APPEND {mailbox}").into_bytes();
    for (flags, date, body) in messages {
        bytes.extend_from_slice(format!("{} {{{}+}}\r\n", options(flags, date), body.len()).as_bytes());
        bytes.extend_from_slice(body);
    }
    bytes.extend_from_slice(b"\r\n");
    c.write(&bytes).await;
    c.until(&tag).await
}

async fn message_count(c: &mut Client, mailbox: &str) -> String {
    let r = c.ok(&format!("STATUS {mailbox} (MESSAGES UIDNEXT)")).await;
    r.find("* STATUS").to_string()
}

#[tokio::test]
async fn three_messages_with_synchronizing_literals() {
    let server = Server::start().await;
    let mut c = server.login().await;
    let caps = c.ok("CAPABILITY").await;
    assert!(caps.find("* CAPABILITY").contains(" MULTIAPPEND"), "{caps:#?}");
    let messages = [
        ("(\\Seen)", "\"05-Mar-2024 08:11:12 +0000\"", message("one", "first")),
        ("()", "", message("two", "second")),
        (
            "(\\Flagged $Work)",
            "\"06-Mar-2024 09:00:00 +0100\"",
            message("three", "third"),
        ),
    ];
    let r = multiappend_sync(&mut c, "INBOX", &messages).await;
    assert!(r.tagged.contains(" OK [APPENDUID "), "{r:#?}");
    let status = c.ok("SELECT INBOX").await;
    let validity = status.find("UIDVALIDITY").to_string();
    let uidvalidity = validity
        .split("UIDVALIDITY ")
        .nth(1)
        .and_then(|s| s.split(']').next())
        .expect("uidvalidity");
    // RFC 4315 §3: one UIDVALIDITY, then the UIDs of all messages in order, as a set.
    assert!(r.tagged.contains(&format!("[APPENDUID {uidvalidity} 1:3]")), "{r:#?}");
    let f = c
        .ok("UID FETCH 1:* (FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        .await;
    let all = f.all();
    let one = f.find("Subject: one");
    assert!(one.contains("UID 1") && one.contains("\\Seen"), "{all}");
    assert!(one.contains("INTERNALDATE \"05-Mar-2024 08:11:12 +0000\""), "{all}");
    let two = f.find("Subject: two");
    assert!(two.contains("UID 2") && !two.contains("\\Seen"), "{all}");
    let three = f.find("Subject: three");
    assert!(
        three.contains("UID 3") && three.contains("\\Flagged") && three.contains("$Work"),
        "{all}"
    );
    assert!(three.contains("INTERNALDATE \"06-Mar-2024 08:00:00 +0000\""), "{all}");
}

#[tokio::test]
async fn literal_plus_and_mixed_literals() {
    let server = Server::start().await;
    let mut c = server.login().await;
    c.ok("APPEND Archive {5+}\r\nhello").await;
    let messages = [("()", "", message("a", "a")), ("(\\Draft)", "", message("b", "b"))];
    let r = multiappend_plus(&mut c, "Archive", &messages).await;
    assert!(r.tagged.contains(" OK [APPENDUID "), "{r:#?}");
    assert!(r.tagged.contains(" 2:3]"), "{r:#?}");
    // A synchronizing first literal, then LITERAL+ ones.
    let tag = c.next_tag();
    let first = message("c", "c");
    c.write(format!("{tag} APPEND Archive {{{}}}\r\n", first.len()).as_bytes())
        .await;
    assert!(c.raw_line().await.starts_with('+'));
    let second = message("d", "d");
    let mut rest = first.clone();
    rest.extend_from_slice(format!(" (\\Seen) {{{}+}}\r\n", second.len()).as_bytes());
    rest.extend_from_slice(&second);
    rest.extend_from_slice(b"\r\n");
    c.write(&rest).await;
    let r = c.until(&tag).await;
    assert!(r.tagged.contains(" 4:5]"), "{r:#?}");
    assert!(message_count(&mut c, "Archive").await.contains("MESSAGES 5"));
}

#[tokio::test]
async fn second_message_over_quota_stores_nothing() {
    let server = Server::start_with(|_| {}, Some(10 * 1024)).await;
    let mut c = server.login().await;
    let before = message_count(&mut c, "INBOX").await;
    // Each fits alone; together they do not: the quota is charged for the total.
    let messages = [
        ("()", "", message("first", &"x".repeat(6000))),
        ("()", "", message("second", &"y".repeat(6000))),
    ];
    let r = multiappend_sync(&mut c, "INBOX", &messages).await;
    assert!(r.tagged.contains(" NO [OVERQUOTA]"), "{r:#?}");
    assert_eq!(message_count(&mut c, "INBOX").await, before);
    let r = multiappend_plus(&mut c, "INBOX", &messages).await;
    assert!(r.tagged.contains(" NO [OVERQUOTA]"), "{r:#?}");
    c.ok("NOOP").await;
    assert_eq!(message_count(&mut c, "INBOX").await, before);
    // The refused commands' reservations were given back: one message still fits.
    let q = c.ok("GETQUOTA \"\"").await;
    assert!(q.has("(STORAGE 0 10)"), "{q:#?}");
    let r = multiappend_plus(&mut c, "INBOX", &messages[..1]).await;
    assert!(r.tagged.contains(" OK [APPENDUID "), "{r:#?}");
}

#[tokio::test]
async fn bad_date_or_empty_second_message_stores_nothing() {
    let server = Server::start().await;
    let mut c = server.login().await;
    let before = message_count(&mut c, "INBOX").await;
    let bad_date = [
        ("()", "", message("first", "ok")),
        ("()", "\"31-Feb-2026 10:00:00 +0000\"", message("second", "bad date")),
    ];
    let r = multiappend_plus(&mut c, "INBOX", &bad_date).await;
    assert!(r.tagged.contains(" BAD "), "{r:#?}");
    assert_eq!(message_count(&mut c, "INBOX").await, before);
    let r = multiappend_sync(&mut c, "INBOX", &bad_date).await;
    assert!(r.tagged.contains(" BAD "), "{r:#?}");
    assert_eq!(message_count(&mut c, "INBOX").await, before);
    let empty = [("()", "", message("first", "ok")), ("()", "", Vec::new())];
    let r = multiappend_plus(&mut c, "INBOX", &empty).await;
    assert!(r.tagged.contains(" NO "), "{r:#?}");
    assert_eq!(message_count(&mut c, "INBOX").await, before);
    // No such mailbox: NO [TRYCREATE], nothing anywhere.
    let r = multiappend_plus(&mut c, "Nowhere", &bad_date[..1]).await;
    assert!(r.tagged.contains(" NO [TRYCREATE]"), "{r:#?}");
    c.ok("NOOP").await;
}

#[tokio::test]
async fn message_count_is_limited() {
    let server = Server::start().await;
    let mut c = server.login().await;
    let body = message("many", "x");
    let limit = 100;
    let too_many: Vec<(&str, &str, Vec<u8>)> = (0..limit + 1).map(|_| ("()", "", body.clone())).collect();
    // LITERAL+: the rest of the command is read and dropped; NO [LIMIT], nothing stored.
    let r = multiappend_plus(&mut c, "INBOX", &too_many).await;
    assert!(r.tagged.contains(" NO [LIMIT]"), "{r:#?}");
    c.ok("NOOP").await;
    assert!(message_count(&mut c, "INBOX").await.contains("MESSAGES 0"));
    // Synchronizing: refused before the 101st literal is sent.
    let r = multiappend_sync(&mut c, "INBOX", &too_many).await;
    assert!(r.tagged.contains(" NO [LIMIT]"), "{r:#?}");
    c.ok("NOOP").await;
    assert!(message_count(&mut c, "INBOX").await.contains("MESSAGES 0"));
    // The limit itself is accepted.
    let r = multiappend_plus(&mut c, "INBOX", &too_many[..limit]).await;
    assert!(r.tagged.contains(&format!(" 1:{limit}]")), "{r:#?}");
}

/// The store's batch is one transaction: a message refused inside it (here the quota, checked
/// at commit time when nothing was reserved) leaves none of the batch behind.
#[tokio::test]
async fn store_batch_rolls_back_as_a_whole() {
    let server = Server::start_with(|_| {}, Some(10 * 1024)).await;
    let store = &server.ctx.mail;
    let inbox = store.mailbox(server.user_id, "INBOX").await.expect("inbox");
    let new = |subject: &str, size: usize| NewMessage {
        raw: message(subject, &"z".repeat(size)),
        flags: Vec::new(),
        internal_date: chrono::Utc::now(),
        reservation: None,
    };
    let err = store
        .append_batch(server.user_id, inbox.id, vec![new("a", 6000), new("b", 6000)])
        .await
        .expect_err("over quota");
    assert!(err.is_over_quota(), "{err:?}");
    assert!(store.message_states(server.user_id, inbox.id).await.unwrap().is_empty());
    let appended = store
        .append_batch(server.user_id, inbox.id, vec![new("c", 100), new("d", 100)])
        .await
        .expect("fits");
    let uids: Vec<u32> = appended.iter().map(|a| a.uid).collect();
    // The failed batch took no UIDs (its transaction rolled back).
    assert_eq!(uids, vec![1, 2]);
}

/// Concurrent MULTIAPPENDs into one mailbox (the same bodies in opposite orders): each is
/// stored whole, with its own contiguous UID range (the mailbox stays locked for the batch).
#[tokio::test]
async fn concurrent_batches_get_contiguous_ranges() {
    let server = Server::start().await;
    let bodies: Vec<Vec<u8>> = (0..10).map(|i| message(&format!("shared{i}"), "same")).collect();
    let mut tasks = Vec::new();
    for n in 0..4 {
        let mut c = server.login().await;
        let mut mine: Vec<(&'static str, &'static str, Vec<u8>)> =
            bodies.iter().map(|b| ("()", "", b.clone())).collect();
        if n % 2 == 1 {
            mine.reverse();
        }
        tasks.push(tokio::spawn(async move {
            let r = multiappend_plus(&mut c, "INBOX", &mine).await;
            assert!(r.tagged.contains(" OK [APPENDUID "), "{r:#?}");
            let set = r
                .tagged
                .split(' ')
                .nth(4)
                .expect("uid set")
                .trim_end_matches(']')
                .to_string();
            let (lo, hi) = set.split_once(':').expect("one range");
            let (lo, hi): (u32, u32) = (lo.parse().unwrap(), hi.parse().unwrap());
            assert_eq!(hi - lo, 9, "{set}");
            lo
        }));
    }
    let mut starts = Vec::new();
    for t in tasks {
        starts.push(t.await.expect("batch"));
    }
    starts.sort_unstable();
    assert_eq!(starts, vec![1, 11, 21, 31]);
    let mut c = server.login().await;
    assert!(message_count(&mut c, "INBOX").await.contains("MESSAGES 40"));
}
