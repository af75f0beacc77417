//! IMAP4rev2 (RFC 9051) from outside: advertised beside IMAP4rev1, chosen with ENABLE
//! (§6.3.1), and then the rev2 answers where RFC 9051 Appendix E differs: no RECENT and no
//! \Recent, SELECT with the mailbox's LIST response, SEARCH answered with ESEARCH; STATUS SIZE
//! and the NONEXISTENT / ALREADYEXISTS codes.

mod common;

use common::*;

async fn rev2_session(server: &Server) -> Client {
    let mut c = server.login().await;
    let r = c.ok("ENABLE IMAP4rev2").await;
    assert_eq!(r.lines, ["* ENABLED IMAP4rev2"]);
    c
}

#[tokio::test]
async fn advertised_beside_rev1() {
    let server = Server::start().await;
    let mut c = server.connect().await;
    let r = c.ok("CAPABILITY").await;
    let caps: Vec<&str> = r.find("* CAPABILITY").split(' ').collect();
    assert!(caps.contains(&"IMAP4rev1") && caps.contains(&"IMAP4rev2"), "{caps:?}");
    c.ok(&format!("LOGIN {USER} \"{PASS}\"")).await;
    // Enabling twice reports it once (RFC 5161 §3.1: only what this ENABLE turned on).
    c.ok("ENABLE IMAP4rev2").await;
    let r = c.ok("ENABLE IMAP4rev2").await;
    assert_eq!(r.lines, ["* ENABLED"]);
}

/// RFC 9051 Appendix E: no RECENT response and no \Recent flag in IMAP4rev2. SELECT gives the
/// LIST response instead (§6.3.2), and the messages stay \Recent for an IMAP4rev1 session.
#[tokio::test]
async fn select_without_recent() {
    let server = Server::start().await;
    server.deliver(&message("one", "body")).await;
    server.deliver(&message("two", "body")).await;
    let mut c = rev2_session(&server).await;
    let r = c.ok("SELECT INBOX").await;
    assert!(r.has("* 2 EXISTS"), "{r:#?}");
    assert!(!r.has("RECENT") && !r.has("\\Recent") && !r.has("[UNSEEN"), "{r:#?}");
    assert!(r.has("* LIST (\\HasNoChildren) \"/\" \"INBOX\""), "{r:#?}");
    let r = c.ok("FETCH 1:* FLAGS").await;
    assert!(!r.has("\\Recent"), "{r:#?}");
    // A new message: EXISTS without RECENT.
    server.deliver(&message("three", "body")).await;
    let r = c.ok("NOOP").await;
    assert_eq!(r.lines, ["* 3 EXISTS"]);
    let r = c.ok("EXAMINE Sent").await;
    assert!(
        !r.has("RECENT") && r.has("* LIST (\\HasNoChildren \\Sent) \"/\" \"Sent\""),
        "{r:#?}"
    );

    // An IMAP4rev1 session still has them \Recent: the rev2 session claimed none.
    let mut old = server.login().await;
    let r = old.ok("SELECT INBOX").await;
    assert!(r.has("* 3 RECENT"), "{r:#?}");
    assert!(!r.has("* LIST"), "{r:#?}");
    let r = old.ok("FETCH 1 FLAGS").await;
    assert!(r.has("\\Recent"), "{r:#?}");
    // ENABLE IMAP4rev2 with the mailbox selected: no \Recent from then on.
    old.ok("ENABLE IMAP4rev2").await;
    let r = old.ok("FETCH 1:* FLAGS").await;
    assert!(!r.has("\\Recent"), "{r:#?}");
}

/// RFC 9051 §6.4.4: SEARCH without RETURN is answered with ESEARCH (as RETURN (ALL)), the
/// command's tag and UID for UID SEARCH; nothing found gives the bare ESEARCH.
#[tokio::test]
async fn search_answers_esearch() {
    let server = Server::start().await;
    for s in ["a", "b", "c"] {
        server.deliver(&message(s, "body")).await;
    }
    let mut c = rev2_session(&server).await;
    c.ok("SELECT INBOX").await;
    c.ok("STORE 2 +FLAGS (\\Flagged)").await;
    let r = c.ok("SEARCH ALL").await;
    let tag = r.tagged.split(' ').next().unwrap().to_string();
    assert_eq!(r.lines, [format!("* ESEARCH (TAG \"{tag}\") ALL 1:3")]);
    let r = c.ok("UID SEARCH UNFLAGGED").await;
    let tag = r.tagged.split(' ').next().unwrap().to_string();
    assert_eq!(r.lines, [format!("* ESEARCH (TAG \"{tag}\") UID ALL 1,3")]);
    let r = c.ok("SEARCH SUBJECT nothing-like-this").await;
    let tag = r.tagged.split(' ').next().unwrap().to_string();
    assert_eq!(r.lines, [format!("* ESEARCH (TAG \"{tag}\")")]);
    // RETURN options still choose what is returned.
    let r = c.ok("SEARCH RETURN (COUNT) ALL").await;
    assert!(r.lines[0].ends_with(" COUNT 3"), "{r:#?}");

    // IMAP4rev1 sessions keep `* SEARCH`.
    let mut old = server.login().await;
    old.ok("SELECT INBOX").await;
    let r = old.ok("SEARCH ALL").await;
    assert_eq!(r.lines, ["* SEARCH 1 2 3"]);
}

/// STATUS SIZE (RFC 8438, folded into RFC 9051) equals the sum of RFC822.SIZE.
#[tokio::test]
async fn status_size_is_the_sum_of_rfc822_size() {
    let server = Server::start().await;
    for (s, body) in [("a", "x"), ("b", &"y".repeat(4000)), ("c", "z z z")] {
        server.deliver(&message(s, body)).await;
    }
    let mut c = rev2_session(&server).await;
    c.ok("EXAMINE INBOX").await;
    let r = c.ok("FETCH 1:* RFC822.SIZE").await;
    let total: u64 = r
        .lines
        .iter()
        .map(|l| {
            let n = l.rsplit_once("RFC822.SIZE ").expect("a size").1;
            n.trim_end_matches(')').parse::<u64>().expect("a number")
        })
        .sum();
    let r = c.ok("STATUS INBOX (MESSAGES SIZE)").await;
    assert_eq!(
        r.find("* STATUS"),
        format!("* STATUS \"INBOX\" (MESSAGES 3 SIZE {total})")
    );
}

/// RFC 9051 §7.1: NONEXISTENT and ALREADYEXISTS response codes.
#[tokio::test]
async fn nonexistent_and_alreadyexists() {
    let server = Server::start().await;
    let mut c = rev2_session(&server).await;
    let r = c.no("SELECT Nowhere").await;
    assert!(r.tagged.contains("[NONEXISTENT]"), "{r:#?}");
    let r = c.no("STATUS Nowhere (MESSAGES)").await;
    assert!(r.tagged.contains("[NONEXISTENT]"), "{r:#?}");
    c.ok("CREATE Here").await;
    let r = c.no("CREATE Here").await;
    assert!(r.tagged.contains("[ALREADYEXISTS]"), "{r:#?}");
}

/// RFC 9051 §5.1: IMAP4rev2 mailbox names are UTF-8, not modified UTF-7: a name created as
/// UTF-8 is listed as UTF-8, and the same mailbox is shown to an IMAP4rev1 session in modified
/// UTF-7.
#[tokio::test]
async fn mailbox_names_are_utf8() {
    let server = Server::start().await;
    let mut c = rev2_session(&server).await;
    c.ok("CREATE \"Entw\u{fc}rfe/Caf\u{e9}\"").await;
    let r = c.ok("LIST \"\" \"Entw\u{fc}rfe/*\"").await;
    assert_eq!(r.lines, ["* LIST (\\HasNoChildren) \"/\" \"Entw\u{fc}rfe/Caf\u{e9}\""]);
    let r = c.ok("SELECT \"Entw\u{fc}rfe/Caf\u{e9}\"").await;
    assert!(
        r.has("* LIST (\\HasNoChildren) \"/\" \"Entw\u{fc}rfe/Caf\u{e9}\""),
        "{r:#?}"
    );
    let mut old = server.login().await;
    let r = old.ok("LIST \"\" \"Entw&APw-rfe/*\"").await;
    assert_eq!(r.lines, ["* LIST (\\HasNoChildren) \"/\" \"Entw&APw-rfe/Caf&AOk-\""]);
}
