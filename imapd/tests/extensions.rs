//! Extensions: QUOTA (GETQUOTAROOT, GETQUOTA, APPEND/COPY over quota), CONDSTORE (RFC 7162),
//! COMPRESS=DEFLATE (RFC 4978), NAMESPACE, ID, ENABLE.

mod common;

use std::time::Duration;

use common::*;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A user without a limit: after the first APPEND the process does not read the limit again
/// (`quota::reserve_known`), yet a limit the admin sets binds at once, at the latest when the
/// message commits, and before the literal is sent once the limit's event has arrived.
#[tokio::test]
async fn a_limit_set_while_a_session_appends_binds() {
    let server = Server::start_with(|_| {}, None).await;
    let mut c = server.login().await;
    for i in 0..3 {
        let r = c.append("INBOX", "()", &message(&format!("free {i}"), "x")).await;
        assert!(r.tagged.contains("OK [APPENDUID "), "{r:#?}");
    }
    shared::quota::set_limit(&server.ctx.db, server.user_id, Some(10 * 1024))
        .await
        .unwrap();
    let big = "y".repeat(20_000);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    for attempt in 0.. {
        let tag = format!("q{attempt}");
        c.write(format!("{tag} APPEND INBOX {{{}}}\r\n", big.len()).as_bytes())
            .await;
        let line = c.raw_line().await;
        if line.starts_with(&format!("{tag} NO [OVERQUOTA]")) {
            // The event arrived: refused before the bytes, as for any user with a limit.
            break;
        }
        // Not heard of yet: the commit checks the limit under the user's row lock all the same.
        assert!(line.starts_with('+'), "{line}");
        c.write(format!("{big}\r\n").as_bytes()).await;
        let line = c.raw_line().await;
        assert!(line.starts_with(&format!("{tag} NO [OVERQUOTA]")), "{line}");
        assert!(
            std::time::Instant::now() < deadline,
            "the limit's event never reached the session's process"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = c.ok("STATUS INBOX (MESSAGES)").await;
    assert!(r.has("(MESSAGES 3)"), "{r:#?}");
    // Cleared again: no limit binds.
    shared::quota::set_limit(&server.ctx.db, server.user_id, None)
        .await
        .unwrap();
    let r = c.append("INBOX", "()", &message("free again", &big)).await;
    assert!(r.tagged.contains("OK [APPENDUID "), "{r:#?}");
}

#[tokio::test]
async fn quota_root_and_refusals() {
    let server = Server::start_with(|_| {}, Some(10 * 1024)).await;
    let mut c = server.login().await;
    let r = c.ok("CAPABILITY").await;
    assert!(r.find("* CAPABILITY").contains("QUOTA"));
    let r = c.ok("GETQUOTAROOT INBOX").await;
    assert!(r.has("* QUOTAROOT \"INBOX\" \"\""), "{r:#?}");
    assert!(r.has("* QUOTA \"\" (STORAGE 0 10)"), "{r:#?}");
    let msg = message("fits", &"x".repeat(3000));
    c.append("INBOX", "()", &msg).await;
    let r = c.ok("GETQUOTA \"\"").await;
    assert!(r.has("* QUOTA \"\" (STORAGE 4 10)"), "{r:#?}");
    c.no("GETQUOTA other").await;
    // A synchronizing literal over quota is refused before the client sends it.
    c.write(b"q1 APPEND INBOX {20000}\r\n").await;
    let line = c.raw_line().await;
    assert!(line.starts_with("q1 NO [OVERQUOTA]"), "{line}");
    // LITERAL+: the bytes come anyway and are dropped; the session goes on.
    let big = message("big", &"y".repeat(9000));
    let r = c.append("INBOX", "()", &big).await;
    assert!(r.tagged.contains("NO [OVERQUOTA]"), "{r:?}");
    c.ok("NOOP").await;
    // COPY over quota.
    c.append("INBOX", "()", &message("second", &"z".repeat(3000))).await;
    c.ok("SELECT INBOX").await;
    let r = c.no("COPY 1:2 Archive").await;
    assert!(r.tagged.contains("[OVERQUOTA]"), "{r:?}");
    // Expunging frees space again.
    c.ok("STORE 1 +FLAGS (\\Deleted)").await;
    c.ok("EXPUNGE").await;
    let r = c.ok("GETQUOTAROOT INBOX").await;
    assert!(r.has("(STORAGE 4 10)"), "{r:#?}");
}

#[tokio::test]
async fn unlimited_user_has_no_quota_root() {
    let server = Server::start().await;
    let mut c = server.login().await;
    let r = c.ok("GETQUOTAROOT INBOX").await;
    assert_eq!(r.lines, vec!["* QUOTAROOT \"INBOX\""]);
}

#[tokio::test]
async fn condstore() {
    let server = Server::start_with(|c| c.imap.condstore = true, None).await;
    let mut c = server.login().await;
    let r = c.ok("CAPABILITY").await;
    assert!(r.find("* CAPABILITY").contains("CONDSTORE"));
    for i in 0..3 {
        c.append("INBOX", "()", &message(&format!("m{i}"), "x")).await;
    }
    let r = c.ok("SELECT INBOX (CONDSTORE)").await;
    let hms: u64 = r
        .find("HIGHESTMODSEQ")
        .split("HIGHESTMODSEQ ")
        .nth(1)
        .unwrap()
        .split(']')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let r = c.ok("FETCH 1:* (FLAGS) (CHANGEDSINCE 1)").await;
    assert_eq!(r.lines.len(), 3);
    assert!(r.find("* 1 FETCH").contains("MODSEQ ("), "{r:#?}");
    let r = c.ok(&format!("FETCH 1:* (FLAGS) (CHANGEDSINCE {hms})")).await;
    assert!(r.lines.is_empty(), "{r:#?}");
    let r = c.ok("STORE 2 +FLAGS (\\Seen)").await;
    let modseq_line = r.find("* 2 FETCH").to_string();
    assert!(modseq_line.contains("MODSEQ ("), "{modseq_line}");
    let r = c.ok(&format!("UID FETCH 1:* (FLAGS) (CHANGEDSINCE {hms})")).await;
    assert_eq!(r.lines.len(), 1, "{r:#?}");
    assert!(r.lines[0].contains("UID 2"));
    // UNCHANGEDSINCE: message 2 changed after hms and is refused.
    let r = c
        .ok(&format!("STORE 1:2 (UNCHANGEDSINCE {hms}) +FLAGS (\\Flagged)"))
        .await;
    assert!(r.tagged.contains("[MODIFIED 2]"), "{r:?}");
    assert!(r.has("* 1 FETCH"));
    let r = c.ok(&format!("SEARCH MODSEQ {}", hms + 1)).await;
    assert!(r.find("* SEARCH").starts_with("* SEARCH 1 2 (MODSEQ "), "{r:#?}");
    let r = c.ok("STATUS INBOX (HIGHESTMODSEQ)").await;
    assert!(r.has("HIGHESTMODSEQ"));
    let r = c.ok("FETCH 1 (MODSEQ)").await;
    assert!(r.has("MODSEQ ("));
    // ENABLE on a fresh session.
    let mut d = server.login().await;
    let r = d.ok("ENABLE CONDSTORE").await;
    assert!(r.has("* ENABLED CONDSTORE"));
}

#[tokio::test]
async fn condstore_off_when_configured_off() {
    let server = Server::start_with(|c| c.imap.condstore = false, None).await;
    let mut c = server.login().await;
    let r = c.ok("CAPABILITY").await;
    assert!(!r.find("* CAPABILITY").contains("CONDSTORE"));
    c.bad("SELECT INBOX (CONDSTORE)").await;
    let r = c.ok("ENABLE CONDSTORE").await;
    assert_eq!(r.lines, vec!["* ENABLED"]);
}

#[tokio::test]
async fn namespace_id_enable() {
    let server = Server::start().await;
    let mut c = server.connect().await;
    let r = c.ok("ID (\"name\" \"Thunderbird\" \"version\" \"128\")").await;
    assert!(r.has("* ID (\"name\" \"tinydc\""));
    c.ok(&format!("LOGIN {USER} \"{PASS}\"")).await;
    let r = c.ok("NAMESPACE").await;
    assert_eq!(r.lines, vec!["* NAMESPACE ((\"\" \"/\")) NIL NIL"]);
    let r = c.ok("ENABLE UTF8=ACCEPT X-UNKNOWN").await;
    assert_eq!(r.lines, vec!["* ENABLED UTF8=ACCEPT"]);
}

/// A client speaking raw DEFLATE after COMPRESS.
struct Deflated {
    tcp: TcpStream,
    inflate: Decompress,
    deflate: Compress,
    plain: Vec<u8>,
}

impl Deflated {
    async fn send(&mut self, text: &str) {
        let mut out = Vec::with_capacity(text.len() + 64);
        self.deflate
            .compress_vec(text.as_bytes(), &mut out, FlushCompress::Sync)
            .unwrap();
        self.tcp.write_all(&out).await.unwrap();
    }

    async fn until(&mut self, tag: &str) -> String {
        let mut raw = [0u8; 16384];
        loop {
            let text = String::from_utf8_lossy(&self.plain).to_string();
            let pos = text
                .find(&format!("\n{tag} "))
                .or(text.starts_with(&format!("{tag} ")).then_some(0));
            if let Some(pos) = pos
                && text[pos + 1..].contains('\n')
            {
                self.plain.clear();
                return text;
            }
            let n = tokio::time::timeout(Duration::from_secs(10), self.tcp.read(&mut raw))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no answer to {tag}; so far: {:?}",
                        &text[text.len().saturating_sub(300)..]
                    )
                })
                .unwrap();
            assert!(n > 0, "closed");
            let mut input = &raw[..n];
            // Until the input is used up and the inflater holds no more output: when the
            // output buffer fills, the inflater keeps the rest inside, even with no input left.
            loop {
                let (before_in, before_out) = (self.inflate.total_in(), self.inflate.total_out());
                self.plain.reserve(65536);
                self.inflate
                    .decompress_vec(input, &mut self.plain, FlushDecompress::Sync)
                    .unwrap();
                let used = (self.inflate.total_in() - before_in) as usize;
                input = &input[used..];
                if input.is_empty() && self.inflate.total_out() == before_out {
                    break;
                }
            }
        }
    }
}

#[tokio::test]
async fn compress_deflate() {
    let server = Server::start().await;
    let mut c = server.login().await;
    for i in 0..20 {
        c.append(
            "INBOX",
            "()",
            &message(&format!("m{i}"), &"compressible text ".repeat(200)),
        )
        .await;
    }
    let r = c.ok("CAPABILITY").await;
    assert!(r.find("* CAPABILITY").contains("COMPRESS=DEFLATE"));
    drop(c);
    let mut tcp = TcpStream::connect(server.plain).await.unwrap();
    let mut buf = [0u8; 4096];
    let _greeting = tcp.read(&mut buf).await.unwrap();
    tcp.write_all(format!("a LOGIN {USER} \"{PASS}\"\r\nb COMPRESS DEFLATE\r\n").as_bytes())
        .await
        .unwrap();
    let mut text = String::new();
    while !text.contains("b OK") {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0);
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(text.ends_with("b OK DEFLATE active\r\n"), "{text}");
    let mut d = Deflated {
        tcp,
        inflate: Decompress::new(false),
        deflate: Compress::new(Compression::default(), false),
        plain: Vec::new(),
    };
    d.send("c SELECT INBOX\r\n").await;
    let text = d.until("c").await;
    assert!(text.contains("* 20 EXISTS"), "{text}");
    d.send("e FETCH 1:* (BODY.PEEK[])\r\n").await;
    let text = d.until("e").await;
    assert!(
        text.contains("* 20 FETCH") && text.contains("e OK"),
        "{}",
        &text[..200.min(text.len())]
    );
    d.send("f CAPABILITY\r\n").await;
    let text = d.until("f").await;
    assert!(!text.contains("COMPRESS=DEFLATE"), "{text}");
    d.send("g COMPRESS DEFLATE\r\n").await;
    let text = d.until("g").await;
    assert!(
        text.contains("g NO [COMPRESSIONACTIVE]") || text.contains("g BAD"),
        "{text}"
    );
    d.send("h LOGOUT\r\n").await;
    let text = d.until("h").await;
    assert!(text.contains("* BYE"));
}
