//! Message commands: APPEND (flags, date, literals, LITERAL+, APPENDUID), FETCH (every item,
//! sections, partials, macros, implicit \Seen), STORE, COPY/MOVE (COPYUID), EXPUNGE,
//! UID EXPUNGE, CLOSE, SEARCH.

mod common;

use common::*;

const MULTIPART: &[u8] = b"From: =?utf-8?q?J=C3=B6rg?= <jorg@example.test>\r\nTo: alice@example.test\r\n\
Subject: =?utf-8?q?caf=C3=A9?= report\r\nDate: Mon, 02 Feb 2026 08:00:00 +0100\r\nMessage-ID: <mp@example.test>\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n\
--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe quarterly numbers are in.\r\n\
--XX\r\nContent-Type: application/pdf; name=\"r.pdf\"\r\nContent-Disposition: attachment; filename=\"r.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--XX--\r\n";

#[tokio::test]
async fn append_variants() {
    let server = Server::start().await;
    let mut c = server.login().await;
    let r = c.append("INBOX", "(\\Seen \\Flagged)", &message("a", "body a")).await;
    assert!(r.tagged.contains("[APPENDUID "), "{r:?}");
    let uidvalidity: u32 = r.tagged.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!(r.tagged.contains(&format!("[APPENDUID {uidvalidity} 1]")));
    // Synchronizing literal with date.
    let msg = message("b", "body b");
    c.write(
        format!(
            "s1 APPEND INBOX () \"05-Mar-2024 10:11:12 +0200\" {{{}}}\r\n",
            msg.len()
        )
        .as_bytes(),
    )
    .await;
    assert!(c.raw_line().await.starts_with('+'));
    c.write(&msg).await;
    c.write(b"\r\n").await;
    let r = c.until("s1").await;
    assert!(r.tagged.contains("[APPENDUID") && r.tagged.contains(" 2]"), "{r:?}");
    let r = c.no("APPEND Nope {1+}\r\nx").await;
    assert!(r.tagged.contains("[TRYCREATE]"), "{r:?}");
    c.ok("SELECT INBOX").await;
    let r = c.ok("FETCH 1:2 (FLAGS INTERNALDATE)").await;
    assert!(r.find("* 1 FETCH").contains("\\Seen") && r.find("* 1 FETCH").contains("\\Flagged"));
    assert!(
        r.find("* 2 FETCH")
            .contains("INTERNALDATE \"05-Mar-2024 08:11:12 +0000\""),
        "{r:#?}"
    );
    // Appending to the selected mailbox shows up as EXISTS.
    let r = c.append("INBOX", "()", &message("c", "body c")).await;
    assert!(r.has("* 3 EXISTS"), "{r:#?}");
}

#[tokio::test]
async fn fetch_items() {
    let server = Server::start().await;
    let mut c = server.login().await;
    c.append("INBOX", "()", MULTIPART).await;
    c.ok("SELECT INBOX").await;
    let r = c.ok("FETCH 1 (ENVELOPE)").await;
    let env = r.find("ENVELOPE");
    assert!(env.contains("\"Mon, 02 Feb 2026 08:00:00 +0100\""), "{env}");
    assert!(env.contains("\"=?utf-8?q?caf=C3=A9?= report\""), "{env}");
    assert!(env.contains("\"jorg\" \"example.test\""), "{env}");
    assert!(env.contains("\"<mp@example.test>\""));
    let r = c.ok("FETCH 1 BODYSTRUCTURE").await;
    let bs = r.find("BODYSTRUCTURE");
    assert!(bs.contains("(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"utf-8\")"), "{bs}");
    assert!(bs.contains("\"APPLICATION\" \"PDF\""), "{bs}");
    assert!(bs.contains("\"MIXED\" (\"BOUNDARY\" \"XX\")"), "{bs}");
    assert!(bs.contains("(\"ATTACHMENT\" (\"FILENAME\" \"r.pdf\"))"), "{bs}");
    let r = c.ok("FETCH 1 BODY").await;
    assert!(r.find("BODY (").contains("\"MIXED\")"));
    let r = c.ok("FETCH 1 (BODY.PEEK[1])").await;
    assert!(r.find("BODY[1]").contains("The quarterly numbers are in."));
    let r = c.ok("FETCH 1 (BODY.PEEK[2.MIME])").await;
    assert!(r.find("BODY[2.MIME]").contains("Content-Disposition: attachment"));
    let r = c.ok("FETCH 1 (BODY.PEEK[HEADER.FIELDS (Subject Message-ID)])").await;
    let h = r.find("HEADER.FIELDS");
    assert!(h.contains("BODY[HEADER.FIELDS (Subject Message-ID)]"), "{h}");
    assert!(
        h.contains("Subject: =?utf-8?q?caf=C3=A9?= report") && !h.contains("From:"),
        "{h}"
    );
    let r = c.ok("FETCH 1 (BODY.PEEK[HEADER.FIELDS.NOT (Subject)])").await;
    let h = r.find("HEADER.FIELDS.NOT");
    assert!(!h.contains("Subject:") && h.contains("From:"), "{h}");
    let r = c.ok("FETCH 1 (BODY.PEEK[]<0.4>)").await;
    assert!(r.find("BODY[]<0>").ends_with("{4}\r\nFrom)"), "{r:#?}");
    let r = c.ok("FETCH 1 (RFC822.SIZE RFC822.HEADER UID)").await;
    let line = r.find("RFC822.SIZE");
    assert!(line.contains(&format!("RFC822.SIZE {}", MULTIPART.len())), "{line}");
    assert!(line.contains("UID 1"));
    let r = c.ok("FETCH 1 FAST").await;
    assert!(r.find("FETCH").contains("RFC822.SIZE"));
    let r = c.ok("FETCH 1 ALL").await;
    assert!(r.find("FETCH").contains("ENVELOPE"));
    let r = c.ok("FETCH 1 FULL").await;
    assert!(r.find("FETCH").contains("BODY ("));
    // Not seen yet (only PEEKs so far).
    let r = c.ok("FETCH 1 FLAGS").await;
    assert!(!r.find("FLAGS").contains("\\Seen"));
    // BODY[TEXT] sets \Seen and reports FLAGS.
    let r = c.ok("FETCH 1 BODY[TEXT]").await;
    let line = r.find("BODY[TEXT]");
    assert!(
        line.contains("--XX") && line.contains("FLAGS (\\Seen \\Recent)"),
        "{line}"
    );
    let r = c.ok("FETCH 1 (RFC822.TEXT)").await;
    assert!(r.find("RFC822.TEXT").contains("quarterly"));
    let r = c.ok("FETCH 1 RFC822").await;
    assert!(r.find("RFC822").contains("Message-ID: <mp@example.test>"));
    // UID FETCH names the UID; sets past the end.
    let r = c.ok("UID FETCH 1:* (FLAGS)").await;
    assert!(r.find("FETCH").contains("UID 1"));
    let r = c.ok("UID FETCH 5:* (FLAGS)").await;
    assert_eq!(r.lines.len(), 1, "n:* includes the last message");
    let r = c.ok("UID FETCH 9 (FLAGS)").await;
    assert!(r.lines.is_empty());
    c.bad("FETCH 2 FLAGS").await;
    c.bad("FETCH 1 (BOGUS)").await;
}

/// A message whose header section is empty (it starts with the empty line, RFC 5322 §2.1): the
/// header is that line alone, and the body's own blank lines stay in the body.
#[tokio::test]
async fn empty_header_section() {
    let server = Server::start().await;
    let mut c = server.login().await;
    c.append("INBOX", "()", b"\r\nfirst\r\n\r\nsecond\r\n").await;
    c.ok("SELECT INBOX").await;
    let r = c.ok("FETCH 1 (BODY.PEEK[HEADER])").await;
    assert!(r.find("BODY[HEADER]").ends_with("{2}\r\n\r\n)"), "{r:#?}");
    let r = c.ok("FETCH 1 (BODY.PEEK[TEXT])").await;
    assert!(
        r.find("BODY[TEXT]").ends_with("{17}\r\nfirst\r\n\r\nsecond\r\n)"),
        "{r:#?}"
    );
}

#[tokio::test]
async fn store_flags() {
    let server = Server::start().await;
    let mut c = server.login().await;
    for i in 0..3 {
        c.append("INBOX", "()", &message(&format!("m{i}"), "x")).await;
    }
    c.ok("SELECT INBOX").await;
    let r = c.ok("STORE 1:2 +FLAGS (\\Seen $Work)").await;
    assert!(r.find("* 1 FETCH").contains("\\Seen $Work"), "{r:#?}");
    assert!(r.has("* 2 FETCH"));
    let r = c.ok("STORE 1 -FLAGS.SILENT ($Work)").await;
    assert!(r.lines.is_empty(), "{r:#?}");
    let r = c.ok("UID STORE 3 FLAGS (\\Answered)").await;
    assert!(r.find("* 3 FETCH").contains("UID 3"));
    let r = c.ok("FETCH 1:3 FLAGS").await;
    // \Recent: this session selected the mailbox first (RFC 3501 §2.3.2); STORE cannot drop it.
    assert!(r.find("* 1 FETCH").contains("FLAGS (\\Seen \\Recent)"), "{r:#?}");
    assert!(r.find("* 3 FETCH").contains("FLAGS (\\Answered \\Recent)"));
    c.bad("STORE 1 +FLAGS (\\Bogus(").await;
}

#[tokio::test]
async fn copy_move_expunge() {
    let server = Server::start().await;
    let mut c = server.login().await;
    for i in 0..4 {
        c.append("INBOX", "()", &message(&format!("m{i}"), "x")).await;
    }
    c.ok("CREATE Work").await;
    let st = c.ok("STATUS Work (UIDVALIDITY)").await;
    let validity = st
        .find("UIDVALIDITY")
        .split("UIDVALIDITY ")
        .nth(1)
        .unwrap()
        .trim_end_matches(')')
        .to_string();
    c.ok("SELECT INBOX").await;
    let r = c.ok("COPY 1:2 Work").await;
    assert!(r.tagged.contains(&format!("[COPYUID {validity} 1:2 1:2]")), "{r:?}");
    let r = c.ok("UID COPY 4 Work").await;
    assert!(r.tagged.contains(&format!("[COPYUID {validity} 4 3]")), "{r:?}");
    let r = c.no("COPY 1 Nope").await;
    assert!(r.tagged.contains("[TRYCREATE]"));
    // MOVE: COPYUID untagged, then EXPUNGE.
    let r = c.ok("MOVE 2 Trash").await;
    assert!(r.has("* OK [COPYUID "), "{r:#?}");
    assert!(r.has("* 2 EXPUNGE"));
    let r = c.ok("UID MOVE 4 Trash").await;
    assert!(r.has("* 3 EXPUNGE"), "{r:#?}");
    // INBOX now holds UIDs 1 and 3.
    let r = c.ok("UID SEARCH ALL").await;
    assert_eq!(r.find("* SEARCH"), "* SEARCH 1 3");
    c.ok("STORE 1:2 +FLAGS.SILENT (\\Deleted)").await;
    // UID EXPUNGE only touches the named UIDs.
    let r = c.ok("UID EXPUNGE 3").await;
    assert!(r.has("* 2 EXPUNGE"), "{r:#?}");
    let r = c.ok("EXPUNGE").await;
    assert!(r.has("* 1 EXPUNGE"));
    let r = c.ok("STATUS Work (MESSAGES)").await;
    assert!(r.has("MESSAGES 3"));
    // CLOSE expunges silently.
    c.ok("SELECT Work").await;
    c.ok("STORE 1 +FLAGS (\\Deleted)").await;
    let r = c.ok("CLOSE").await;
    assert!(!r.has("EXPUNGE"));
    let r = c.ok("STATUS Work (MESSAGES)").await;
    assert!(r.has("MESSAGES 2"));
}

#[tokio::test]
async fn search_keys() {
    let server = Server::start().await;
    let mut c = server.login().await;
    c.append("INBOX", "(\\Seen)", &message("hello", "first body")).await;
    c.append("INBOX", "(\\Flagged $Todo)", MULTIPART).await;
    c.append("INBOX", "(\\Deleted)", &message("bye", "third body quarterly"))
        .await;
    c.ok("SELECT INBOX").await;
    let s = |r: Response| r.find("* SEARCH").to_string();
    assert_eq!(s(c.ok("SEARCH ALL").await), "* SEARCH 1 2 3");
    assert_eq!(s(c.ok("SEARCH SEEN").await), "* SEARCH 1");
    assert_eq!(s(c.ok("SEARCH UNSEEN").await), "* SEARCH 2 3");
    assert_eq!(s(c.ok("SEARCH FLAGGED").await), "* SEARCH 2");
    assert_eq!(s(c.ok("SEARCH KEYWORD $Todo").await), "* SEARCH 2");
    assert_eq!(s(c.ok("SEARCH UNKEYWORD $Todo").await), "* SEARCH 1 3");
    assert_eq!(s(c.ok("SEARCH DELETED").await), "* SEARCH 3");
    assert_eq!(s(c.ok("SEARCH UNDELETED").await), "* SEARCH 1 2");
    assert_eq!(s(c.ok("SEARCH SUBJECT hello").await), "* SEARCH 1");
    assert_eq!(s(c.ok("SEARCH CHARSET UTF-8 SUBJECT {5+}\r\ncafé").await), "* SEARCH 2");
    assert_eq!(s(c.ok("SEARCH FROM jörg").await), "* SEARCH 2");
    assert_eq!(s(c.ok("SEARCH FROM bob").await), "* SEARCH 1 3");
    assert_eq!(s(c.ok("SEARCH TO alice").await), "* SEARCH 1 2 3");
    assert_eq!(s(c.ok("SEARCH BODY quarterly").await), "* SEARCH 2 3");
    assert_eq!(s(c.ok("SEARCH TEXT \"report\"").await), "* SEARCH 2");
    assert_eq!(s(c.ok("SEARCH HEADER Message-ID <mp@").await), "* SEARCH 2");
    assert_eq!(s(c.ok("SEARCH OR SEEN FLAGGED").await), "* SEARCH 1 2");
    assert_eq!(s(c.ok("SEARCH NOT SEEN NOT DELETED").await), "* SEARCH 2");
    assert_eq!(s(c.ok("SEARCH (SEEN) 1:2").await), "* SEARCH 1");
    assert_eq!(s(c.ok("SEARCH 2:*").await), "* SEARCH 2 3");
    assert_eq!(s(c.ok("UID SEARCH UID 2:3").await), "* SEARCH 2 3");
    assert_eq!(s(c.ok("SEARCH LARGER 300").await), "* SEARCH 2");
    assert_eq!(s(c.ok("SEARCH SMALLER 300").await), "* SEARCH 1 3");
    assert_eq!(s(c.ok("SEARCH SENTBEFORE 1-Mar-2026").await), "* SEARCH 2");
    assert_eq!(s(c.ok("SEARCH SENTON 24-Nov-2026").await), "* SEARCH 1 3");
    assert_eq!(s(c.ok("SEARCH SENTSINCE 1-Mar-2026").await), "* SEARCH 1 3");
    assert_eq!(s(c.ok("SEARCH SINCE 1-Jan-2000").await), "* SEARCH 1 2 3");
    assert_eq!(s(c.ok("SEARCH BEFORE 1-Jan-2000").await), "* SEARCH");
    // All three are \Recent in this session (it selected first): NEW is RECENT UNSEEN.
    assert_eq!(s(c.ok("SEARCH NEW").await), "* SEARCH 2 3");
    assert_eq!(s(c.ok("SEARCH OLD").await), "* SEARCH");
    let r = c.no("SEARCH CHARSET KOI8-R ALL").await;
    assert!(r.tagged.contains("[BADCHARSET"));
    c.bad("SEARCH BOGUS").await;
}

/// SUBJECT matches the envelope's subject (RFC 9051 §6.4.4: the last Subject field, unfolded),
/// as written or decoded, in any letter case; PostgreSQL leaves out only what cannot match
/// (`MailStore::scan_light`), so each of these must still be found through that filter.
#[tokio::test]
async fn search_subject_is_the_envelope_subject_through_the_database_filter() {
    let server = Server::start().await;
    let mut c = server.login().await;
    // 1: folded; 2: encoded words only ("Invoice 42" in base64, "Réport" in Q); 3: two Subject
    // fields (the envelope has the last); 4: none.
    let raw = |subject: &str| {
        format!("From: Bob <bob@example.test>\r\n{subject}Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n\r\nbody\r\n")
    };
    c.append("INBOX", "()", raw("Subject: Weekly\r\n  Team Notes\r\n").as_bytes())
        .await;
    c.append(
        "INBOX",
        "()",
        raw("Subject: =?utf-8?b?SW52b2ljZSA0Mg==?= =?utf-8?q?R=C3=A9port?=\r\n").as_bytes(),
    )
    .await;
    c.append(
        "INBOX",
        "()",
        raw("Subject: Old words\r\nSubject: New words\r\n").as_bytes(),
    )
    .await;
    c.append("INBOX", "()", raw("").as_bytes()).await;
    c.ok("SELECT INBOX").await;
    let s = |r: Response| r.find("* SEARCH").to_string();
    assert_eq!(s(c.ok("SEARCH SUBJECT \"weekly  team\"").await), "* SEARCH 1");
    assert_eq!(s(c.ok("SEARCH SUBJECT wEEKLY").await), "* SEARCH 1");
    assert_eq!(s(c.ok("SEARCH SUBJECT \"invoice 42\"").await), "* SEARCH 2");
    assert_eq!(s(c.ok("SEARCH SUBJECT utf-8").await), "* SEARCH 2", "as written");
    assert_eq!(
        s(c.ok("SEARCH CHARSET UTF-8 SUBJECT {7+}\r\nRÉPORT").await),
        "* SEARCH 2"
    );
    assert_eq!(s(c.ok("SEARCH SUBJECT new").await), "* SEARCH 3");
    assert_eq!(s(c.ok("SEARCH SUBJECT old").await), "* SEARCH", "not the envelope's");
    assert_eq!(s(c.ok("SEARCH SUBJECT notes SUBJECT weekly").await), "* SEARCH 1");
    assert_eq!(s(c.ok("SEARCH SUBJECT weekly FROM nobody").await), "* SEARCH");
    assert_eq!(s(c.ok("SEARCH NOT SUBJECT weekly").await), "* SEARCH 2 3 4");
    assert_eq!(
        s(c.ok("SEARCH OR SUBJECT weekly SUBJECT invoice").await),
        "* SEARCH 1 2"
    );
    assert_eq!(s(c.ok("SEARCH SUBJECT \"\"").await), "* SEARCH 1 2 3");
    // A NUL (not an IMAP CHAR8, but a literal can carry one) is not sent to PostgreSQL.
    assert_eq!(s(c.ok("SEARCH SUBJECT {3+}\r\nw\0e").await), "* SEARCH");
    // The body path reads whole rows; SUBJECT beside BODY is the same test.
    assert_eq!(s(c.ok("SEARCH SUBJECT invoice BODY body").await), "* SEARCH 2");
}

/// Not a pass/fail test: times the open and header download of a big INBOX, as Thunderbird
/// does it. Run with `cargo test -p tinydc-imapd --release --test messages -- --ignored
/// --nocapture header_download` (IMAPD_BENCH_MESSAGES sets the count, default 2000).
#[tokio::test]
#[ignore]
async fn header_download_timing() {
    let n: usize = std::env::var("IMAPD_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let server = std::sync::Arc::new(Server::start().await);
    let start = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..8 {
        let server = server.clone();
        tasks.spawn(async move {
            for i in (w..n).step_by(8) {
                server
                    .deliver(&message(&format!("bench{i}"), &"line of text\r\n".repeat(100)))
                    .await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    println!("delivered {n} messages in {:?}", start.elapsed());
    let mut c = server.login().await;
    let start = std::time::Instant::now();
    c.ok("SELECT INBOX").await;
    println!("SELECT of {n} messages: {:?}", start.elapsed());
    let start = std::time::Instant::now();
    let r = c
        .ok("UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])")
        .await;
    println!("header download of {} messages: {:?}", r.lines.len(), start.elapsed());
    let start = std::time::Instant::now();
    let r = c.ok("UID FETCH 1:* (FLAGS)").await;
    println!("flag resync of {} messages: {:?}", r.lines.len(), start.elapsed());
}

#[tokio::test]
async fn big_message_is_streamed_whole_and_in_ranges() {
    let server = Server::start().await;
    let mut c = server.login().await;
    let body: String = (0..60_000).map(|i| format!("line {i:06}\r\n")).collect();
    let msg = message("big", &body);
    let r = c.append("INBOX", "()", &msg).await;
    assert!(r.tagged.contains("OK"), "{r:?}");
    c.ok("SELECT INBOX").await;
    let r = c.ok("FETCH 1 (RFC822.SIZE BODY.PEEK[])").await;
    let line = r.find("BODY[]");
    assert!(line.contains(&format!("RFC822.SIZE {}", msg.len())));
    let literal = format!("BODY[] {{{}}}\r\n", msg.len());
    let at = line.find(&literal).expect("literal header") + literal.len();
    assert_eq!(&line.as_bytes()[at..at + msg.len()], &msg[..]);
    let r = c.ok("FETCH 1 (BODY.PEEK[]<300000.12>)").await;
    let expected = String::from_utf8_lossy(&msg[300_000..300_012]).to_string();
    assert!(
        r.find("BODY[]<300000>").ends_with(&format!("{{12}}\r\n{expected})")),
        "{r:#?}"
    );
    let r = c.ok("FETCH 1 (BODY.PEEK[]<99999999.10>)").await;
    assert!(r.find("BODY[]<99999999> {0}").ends_with(')'), "{r:#?}");
    let r = c.ok("FETCH 1 (RFC822 FLAGS)").await;
    assert!(r.find("RFC822 {").contains("\\Seen"));
}
