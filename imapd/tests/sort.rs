//! SORT (RFC 5256 §3, RFC 5957 DISPLAYFROM/DISPLAYTO) and THREAD (RFC 5256 §4) over a real
//! socket: messages crafted for each sort key and each rule of the RFC (base subject, sent date
//! fallback, ties in sequence order, REVERSE, UID forms, charsets), and python's imaplib
//! `.sort()` and `.thread()`. Every expected answer below (SORT by each key, ORDEREDSUBJECT,
//! REFERENCES with its dummy, duplicate, loop and subject cases) is what Debian's Dovecot 2.3
//! answered for the same messages, checked by hand with python imaplib against a throwaway
//! Dovecot (ops/tests/common/dovecot.rs).

mod common;

use std::time::Duration;

use common::*;

/// A message with the given header fields (`None` leaves a field out) and a body of `body_len`
/// bytes.
fn mail(from: &str, to: Option<&str>, cc: Option<&str>, subject: &str, date: Option<&str>, body_len: usize) -> Vec<u8> {
    let mut m = format!("From: {from}\r\n");
    if let Some(to) = to {
        m.push_str(&format!("To: {to}\r\n"));
    }
    if let Some(cc) = cc {
        m.push_str(&format!("Cc: {cc}\r\n"));
    }
    m.push_str(&format!("Subject: {subject}\r\n"));
    if let Some(date) = date {
        m.push_str(&format!("Date: {date}\r\n"));
    }
    m.push_str("\r\n");
    m.push_str(&"x".repeat(body_len));
    m.push_str("\r\n");
    m.into_bytes()
}

/// The numbers of the `* SORT` line.
fn sort_line(r: &Response) -> String {
    r.find("* SORT").trim_end().to_string()
}

/// INBOX with UIDs 2..=5 (sequence 1..=4: the first appended message is expunged, so that UID
/// and sequence numbers differ) holding four messages that order differently on every key.
async fn mailbox(server: &Server) -> Client {
    let mut c = server.login().await;
    c.ok("SELECT INBOX").await;
    let first = mail("x@example.test", None, None, "gone", None, 1);
    assert!(c.append("INBOX", "()", &first).await.tagged.contains(" OK"));
    c.ok("STORE 1 +FLAGS (\\Deleted)").await;
    c.ok("EXPUNGE").await;
    let messages: [(Vec<u8>, &str); 4] = [
        (
            mail(
                "Zed <carol@example.test>",
                Some("dave@example.test"),
                None,
                "Re: banana",
                Some("Wed, 02 Jan 2030 10:00:00 +0000"),
                1,
            ),
            "05-Jan-2020 00:00:00 +0000",
        ),
        // No Date: its sent date is the internal date (RFC 5256 §2.2).
        (
            mail(
                "Aaron <bob@example.test>",
                Some("Carl <erin@example.test>"),
                Some("zara@example.test"),
                "apple",
                None,
                500,
            ),
            "01-Jan-2020 00:00:00 +0000",
        ),
        // 23:00 -0500 is 04:00 UTC the next day: before message 1's 10:00.
        (
            mail(
                "adam@example.test",
                Some("alice@example.test"),
                Some("Ann <ann@example.test>"),
                "Fwd: [list] Banana (fwd)",
                Some("Tue, 01 Jan 2030 23:00:00 -0500"),
                200,
            ),
            "03-Jan-2020 00:00:00 +0000",
        ),
        (
            mail(
                "Bob <Bob@example.test>",
                None,
                None,
                "APPLE",
                Some("Mon, 01 Jan 2029 00:00:00 +0000"),
                300,
            ),
            "03-Jan-2020 00:00:00 +0000",
        ),
    ];
    for (raw, arrival) in messages {
        let r = c.append("INBOX", &format!("() \"{arrival}\""), &raw).await;
        assert!(r.tagged.contains(" OK"), "{r:#?}");
    }
    c.ok("NOOP").await;
    c
}

#[tokio::test]
async fn sort_by_every_key_with_the_rfc_rules() {
    let server = Server::start().await;
    let mut c = mailbox(&server).await;
    let cases = [
        // Base subjects: apple (2, 4), banana (1, 3); equal keys stay in sequence order.
        ("(SUBJECT) UTF-8 ALL", "* SORT 2 4 1 3"),
        // REVERSE turns the key around, not the sequence order of ties.
        ("(REVERSE SUBJECT) UTF-8 ALL", "* SORT 1 3 2 4"),
        ("(ARRIVAL) US-ASCII ALL", "* SORT 2 3 4 1"),
        ("(DATE) UTF-8 ALL", "* SORT 2 4 3 1"),
        ("(REVERSE DATE) UTF-8 ALL", "* SORT 1 3 4 2"),
        // Local parts: adam, bob, Bob (equal without case), carol.
        ("(FROM) UTF-8 ALL", "* SORT 3 2 4 1"),
        // Display names, else the address: Aaron, adam@example.test, Bob, Zed.
        ("(DISPLAYFROM) UTF-8 ALL", "* SORT 2 3 4 1"),
        // A message without To sorts first (the empty string).
        ("(TO) UTF-8 ALL", "* SORT 4 3 1 2"),
        ("(DISPLAYTO) UTF-8 ALL", "* SORT 4 3 2 1"),
        ("(CC) UTF-8 ALL", "* SORT 1 4 3 2"),
        ("(SIZE) UTF-8 ALL", "* SORT 1 3 4 2"),
        ("(REVERSE SIZE) UTF-8 ALL", "* SORT 2 4 3 1"),
        ("(SUBJECT REVERSE DATE) UTF-8 ALL", "* SORT 4 2 1 3"),
        // The searching criteria are SEARCH's.
        ("(SUBJECT) UTF-8 FROM bob", "* SORT 2 4"),
        ("(DATE) US-ASCII SUBJECT banana", "* SORT 3 1"),
        ("(DATE) UTF-8 OR LARGER 400 TO dave 1:*", "* SORT 2 1"),
        ("(SUBJECT) UTF-8 SUBJECT nothing-like-this", "* SORT"),
    ];
    for (args, expected) in cases {
        let r = c.ok(&format!("SORT {args}")).await;
        assert_eq!(sort_line(&r), expected, "SORT {args}");
    }
    // UID SORT answers UIDs (sequence n is UID n+1 here).
    let r = c.ok("UID SORT (SUBJECT) UTF-8 ALL").await;
    assert_eq!(sort_line(&r), "* SORT 3 5 2 4");
    let r = c.ok("UID SORT (REVERSE DATE) UTF-8 UID 3:4").await;
    assert_eq!(sort_line(&r), "* SORT 4 3");
}

#[tokio::test]
async fn sort_refuses_what_it_cannot_do() {
    let server = Server::start().await;
    let mut c = server.login().await;
    // Only in the selected state.
    c.bad("SORT (DATE) UTF-8 ALL").await;
    c.ok("SELECT INBOX").await;
    let r = c.no("SORT (DATE) KOI8-R ALL").await;
    assert!(r.tagged.contains("[BADCHARSET (UTF-8 US-ASCII)]"), "{r:#?}");
    let r = c.no("THREAD REFERENCES ISO-2022-JP ALL").await;
    assert!(r.tagged.contains("[BADCHARSET"), "{r:#?}");
    // RFC 5256 §5: the criteria are parenthesized and the charset is not optional.
    c.bad("SORT DATE UTF-8 ALL").await;
    c.bad("SORT (DATE) ALL").await;
    c.bad("SORT () UTF-8 ALL").await;
    c.bad("SORT (REVERSE) UTF-8 ALL").await;
    c.bad("SORT (COLOUR) UTF-8 ALL").await;
    c.bad("THREAD JWZ UTF-8 ALL").await;
    c.bad(&format!("SORT ({}) UTF-8 ALL", vec!["DATE"; 100].join(" ")))
        .await;
    // An empty mailbox sorts to nothing.
    let r = c.ok("SORT (DATE) UTF-8 ALL").await;
    assert_eq!(sort_line(&r), "* SORT");
    let r = c.ok("THREAD REFERENCES UTF-8 ALL").await;
    assert_eq!(r.find("* THREAD").trim_end(), "* THREAD");
}

#[tokio::test]
async fn thread_orderedsubject_groups_by_base_subject() {
    let server = Server::start().await;
    let mut c = mailbox(&server).await;
    // apple: 2 (2020) then 4 (2029); banana: 3 (04:00) then 1 (10:00); apple starts first.
    let r = c.ok("THREAD ORDEREDSUBJECT UTF-8 ALL").await;
    assert_eq!(r.find("* THREAD").trim_end(), "* THREAD (2 4)(3 1)");
    let r = c.ok("UID THREAD ORDEREDSUBJECT UTF-8 ALL").await;
    assert_eq!(r.find("* THREAD").trim_end(), "* THREAD (3 5)(4 2)");
    // Three of one subject: the first is the parent of the other two.
    let extra = mail(
        "x@example.test",
        None,
        None,
        "Re: APPLE",
        Some("Tue, 01 Jan 2030 00:00:00 +0000"),
        1,
    );
    assert!(c.append("INBOX", "()", &extra).await.tagged.contains(" OK"));
    c.ok("NOOP").await;
    let r = c.ok("THREAD ORDEREDSUBJECT UTF-8 ALL").await;
    assert_eq!(r.find("* THREAD").trim_end(), "* THREAD (2 (4)(5))(3 1)");
    let r = c.ok("THREAD ORDEREDSUBJECT UTF-8 NOT SUBJECT banana").await;
    assert_eq!(r.find("* THREAD").trim_end(), "* THREAD (2 (4)(5))");
}

/// A message for threading: Message-ID, references and a date on 1 Jan 2030.
fn threaded(message_id: Option<&str>, references: &str, subject: &str, time: &str) -> Vec<u8> {
    let mut m = String::from("From: t@example.test\r\n");
    if let Some(id) = message_id {
        m.push_str(&format!("Message-ID: <{id}>\r\n"));
    }
    if !references.is_empty() {
        m.push_str(&format!("{references}\r\n"));
    }
    m.push_str(&format!(
        "Subject: {subject}\r\nDate: Tue, 01 Jan 2030 {time} +0000\r\n\r\nbody\r\n"
    ));
    m.into_bytes()
}

#[tokio::test]
async fn thread_references_links_replies_and_survives_bad_headers() {
    let server = Server::start().await;
    let mut c = server.login().await;
    c.ok("SELECT INBOX").await;
    let messages = [
        threaded(Some("a@x"), "", "topic", "10:00:00"),
        threaded(Some("b@x"), "In-Reply-To: <a@x>", "Re: topic", "10:05:00"),
        threaded(Some("c@x"), "References: <a@x> <b@x>", "Re: topic", "10:10:00"),
        threaded(Some("d@x"), "References: <a@x>", "Re: topic", "10:07:00"),
        // Both reply to a message that is not here: a dummy holds them together.
        threaded(Some("e@x"), "References: <missing@x>", "other", "09:00:00"),
        threaded(Some("f@x"), "References: <missing@x>", "Re: other", "09:30:00"),
        // A duplicate Message-ID: the later message is treated as unique.
        threaded(Some("a@x"), "", "dup", "08:00:00"),
        // 8 and 9 reference each other: the link that would close the loop is not made.
        threaded(Some("g@x"), "References: <h@x>", "loop", "11:00:00"),
        threaded(Some("h@x"), "References: <g@x>", "Re: loop", "11:30:00"),
        // No Message-ID and no references: gathered under "topic" by its subject (step 6).
        threaded(None, "", "Re: topic", "12:00:00"),
    ];
    for m in &messages {
        assert!(c.append("INBOX", "()", m).await.tagged.contains(" OK"));
    }
    c.ok("NOOP").await;
    let r = c.ok("THREAD REFERENCES UTF-8 ALL").await;
    assert_eq!(
        r.find("* THREAD").trim_end(),
        "* THREAD (7)((5)(6))(1 (2 3)(4)(10))(9 8)"
    );
    // Only the messages the search criteria match are threaded.
    let r = c.ok("THREAD REFERENCES US-ASCII 1:4").await;
    assert_eq!(r.find("* THREAD").trim_end(), "* THREAD (1 (2 3)(4))");
    let r = c.ok("UID THREAD REFERENCES UTF-8 UID 5:6").await;
    assert_eq!(r.find("* THREAD").trim_end(), "* THREAD ((5)(6))");
}

/// A reply chain far longer than any real thread, and a References field with thousands of
/// identifiers: answered quickly, without recursion trouble.
#[tokio::test]
async fn thread_references_is_bounded_on_hostile_chains() {
    let server = Server::start().await;
    let mut c = server.login().await;
    c.ok("SELECT INBOX").await;
    let count = 3000;
    for i in 0..count {
        let refs = if i == 0 {
            String::new()
        } else {
            format!("In-Reply-To: <m{}@x>", i - 1)
        };
        server
            .deliver(&threaded(Some(&format!("m{i}@x")), &refs, "Re: chain", "10:00:00"))
            .await;
    }
    let long: String = (0..5000).map(|i| format!("<r{i}@x> ")).collect();
    server
        .deliver(&threaded(
            Some("long@x"),
            &format!("References: {long}"),
            "long",
            "10:00:00",
        ))
        .await;
    c.ok("NOOP").await;
    let started = std::time::Instant::now();
    let r = c.ok("THREAD REFERENCES UTF-8 ALL").await;
    let line = r.find("* THREAD");
    // Links deeper than the bound (MAX_LINK_DEPTH, 512) are not made: the chain is cut into
    // pieces, which step 6 gathers again by their common subject under one dummy.
    let head: Vec<String> = (1..=500).map(|i| i.to_string()).collect();
    assert!(
        line.starts_with(&format!("* THREAD (({} ", head.join(" "))),
        "{}",
        &line[..200]
    );
    assert!(line.trim_end().ends_with(&format!("({})", count + 1)));
    // Every message is answered exactly once.
    let mut numbers: Vec<u32> = line[9..]
        .split(|c: char| !c.is_ascii_digit())
        .filter(|n| !n.is_empty())
        .map(|n| n.parse().unwrap())
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=count + 1).collect::<Vec<u32>>());
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

/// python's imaplib drives SORT and THREAD as a client library does.
#[tokio::test]
async fn imaplib_sort_and_thread() {
    let server = Server::start().await;
    let mut c = mailbox(&server).await;
    c.ok("LOGOUT").await;
    let script = r#"
import imaplib, sys
m = imaplib.IMAP4(sys.argv[1], int(sys.argv[2]))
m.login(sys.argv[3], sys.argv[4])
caps = m.capability()[1][0].split()
assert b'SORT' in caps and b'SORT=DISPLAY' in caps and b'THREAD=REFERENCES' in caps, caps
m.select('INBOX')
print(m.sort('(REVERSE DATE)', 'UTF-8', 'ALL'))
print(m.uid('SORT', '(DISPLAYFROM)', 'UTF-8', 'ALL'))
print(m.thread('ORDEREDSUBJECT', 'UTF-8', 'ALL'))
m.logout()
"#;
    let out = server.imaplib(&["-c", script], &[], Duration::from_secs(30)).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "('OK', [b'1 3 4 2'])",
            "('OK', [b'3 4 5 2'])",
            "('OK', [b'(2 4)(3 1)'])"
        ]
    );
}

/// RFC 7162 §3.1.5: a SORT whose criteria use MODSEQ ends its answer with the highest MODSEQ of
/// the messages it lists, as SEARCH does.
#[tokio::test]
async fn sort_with_modseq_reports_the_highest() {
    let server = Server::start_with(|c| c.imap.condstore = true, None).await;
    let mut c = mailbox(&server).await;
    c.ok("STORE 3 +FLAGS (\\Flagged)").await;
    let r = c.ok("FETCH 3 (MODSEQ)").await;
    let line = r.find("MODSEQ (");
    let modseq: u64 = line[line.find("MODSEQ (").unwrap() + 8..]
        .trim_end_matches(['(', ')', ' '])
        .trim_end_matches(')')
        .parse()
        .unwrap();
    let r = c.ok(&format!("SORT (DATE) UTF-8 MODSEQ {modseq}")).await;
    assert_eq!(sort_line(&r), format!("* SORT 3 (MODSEQ {modseq})"));
    let r = c.ok("SORT (REVERSE DATE) UTF-8 MODSEQ 1").await;
    assert_eq!(sort_line(&r), format!("* SORT 1 3 4 2 (MODSEQ {modseq})"));
    let r = c.ok("SORT (DATE) UTF-8 ALL").await;
    assert_eq!(sort_line(&r), "* SORT 2 4 3 1");
}
