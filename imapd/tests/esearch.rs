//! SEARCH extensions from outside, over a real socket: WITHIN (RFC 5032) and ESEARCH
//! (RFC 4731), the latter with the RFC's examples.

mod common;

use common::*;

/// A logged-in session with INBOX selected holding: 1 appended with an internal date in 2020,
/// then 2 and 3 delivered now.
async fn mailbox_old_and_new(server: &Server) -> Client {
    let mut c = server.login().await;
    let r = c
        .append("INBOX", "() \"01-Jan-2020 00:00:00 +0000\"", &message("old", "body"))
        .await;
    assert!(r.tagged.contains(" OK"), "{r:#?}");
    server.deliver(&message("new1", "body")).await;
    server.deliver(&message("new2", "body")).await;
    c.ok("SELECT INBOX").await;
    c
}

#[tokio::test]
async fn within_older_and_younger() {
    let server = Server::start().await;
    let mut c = mailbox_old_and_new(&server).await;
    let caps = c.ok("CAPABILITY").await;
    assert!(caps.find("* CAPABILITY").split(' ').any(|w| w == "WITHIN"), "{caps:#?}");
    // RFC 5032 §3: intervals in seconds against the internal date.
    let r = c.ok("SEARCH OLDER 3600").await;
    assert_eq!(r.find("* SEARCH"), "* SEARCH 1");
    let r = c.ok("SEARCH YOUNGER 3600").await;
    assert_eq!(r.find("* SEARCH"), "* SEARCH 2 3");
    let r = c.ok("UID SEARCH NOT YOUNGER 3600").await;
    assert_eq!(r.find("* SEARCH"), "* SEARCH 1");
    // OLDER and YOUNGER together: "within the last n but more than m seconds ago".
    let r = c.ok("SEARCH OLDER 60 YOUNGER 3600").await;
    assert_eq!(r.find("* SEARCH"), "* SEARCH");
    let r = c.ok("SEARCH OR OLDER 86400 SUBJECT new2").await;
    assert_eq!(r.find("* SEARCH"), "* SEARCH 1 3");
    // interval = nz-number: zero, a missing or a non-number interval is a syntax error.
    c.bad("SEARCH OLDER 0").await;
    c.bad("SEARCH YOUNGER").await;
    c.bad("SEARCH YOUNGER -5").await;
    // A huge interval is accepted and simply matches nothing older / everything younger.
    let r = c.ok("SEARCH OLDER 9999999999999999999").await;
    assert_eq!(r.find("* SEARCH"), "* SEARCH");
    let r = c.ok("SEARCH YOUNGER 9999999999999999999").await;
    assert_eq!(r.find("* SEARCH"), "* SEARCH 1 2 3");
}

/// The tag a response was answered under.
fn tag_of(r: &Response) -> &str {
    r.tagged.split(' ').next().expect("a tag")
}

/// The one `* ESEARCH` line of a response, asserting there is no `* SEARCH` line beside it.
fn esearch(r: &Response) -> String {
    assert!(r.tagged.contains(" OK"), "{r:#?}");
    assert!(!r.has("* SEARCH"), "RETURN (...) answers only ESEARCH: {r:#?}");
    let lines: Vec<&String> = r.lines.iter().filter(|l| l.starts_with("* ESEARCH")).collect();
    assert_eq!(lines.len(), 1, "{r:#?}");
    lines[0].clone()
}

/// INBOX with 11 messages whose UIDs are 2..=12 (UID 1 expunged), sequence numbers 2, 10 and
/// 11 (UIDs 3, 11, 12) \Flagged, one STORE each so that their MODSEQs ascend.
async fn flagged_mailbox(server: &Server) -> Client {
    for i in 1..=12 {
        server.deliver(&message(&format!("m{i}"), "body")).await;
    }
    let mut c = server.login().await;
    c.ok("SELECT INBOX").await;
    c.ok("STORE 1 +FLAGS (\\Deleted)").await;
    c.ok("EXPUNGE").await;
    for seq in [2, 10, 11] {
        c.ok(&format!("STORE {seq} +FLAGS (\\Flagged)")).await;
    }
    c
}

#[tokio::test]
async fn esearch_rfc4731_examples() {
    let server = Server::start().await;
    let mut c = flagged_mailbox(&server).await;
    let caps = c.ok("CAPABILITY").await;
    assert!(
        caps.find("* CAPABILITY").split(' ').any(|w| w == "ESEARCH"),
        "{caps:#?}"
    );

    // RFC 4731 §3.1 examples (A282, A283): MIN and COUNT, and RETURN () meaning ALL.
    let r = c
        .cmd("SEARCH RETURN (MIN COUNT) FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\"")
        .await;
    assert_eq!(esearch(&r), format!("* ESEARCH (TAG \"{}\") MIN 2 COUNT 3", tag_of(&r)));
    let r = c
        .cmd("SEARCH RETURN () FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\"")
        .await;
    assert_eq!(esearch(&r), format!("* ESEARCH (TAG \"{}\") ALL 2,10:11", tag_of(&r)));
    // A284: nothing matched: MIN, MAX and ALL are left out, the ESEARCH response is still sent.
    let r = c.cmd("SEARCH RETURN (MIN MAX ALL) KEYWORD nosuchkeyword").await;
    assert_eq!(esearch(&r), format!("* ESEARCH (TAG \"{}\")", tag_of(&r)));
    let r = c.cmd("SEARCH RETURN (COUNT) KEYWORD nosuchkeyword").await;
    assert_eq!(esearch(&r), format!("* ESEARCH (TAG \"{}\") COUNT 0", tag_of(&r)));
    // A285: UID SEARCH answers UIDs, marked UID.
    let r = c.cmd("UID SEARCH RETURN (MIN MAX) 1:5000").await;
    assert_eq!(
        esearch(&r),
        format!("* ESEARCH (TAG \"{}\") UID MIN 2 MAX 12", tag_of(&r))
    );
    let r = c.cmd("UID SEARCH RETURN (MIN MAX COUNT ALL) FLAGGED").await;
    assert_eq!(
        esearch(&r),
        format!(
            "* ESEARCH (TAG \"{}\") UID MIN 3 MAX 12 COUNT 3 ALL 3,11:12",
            tag_of(&r)
        )
    );
    let r = c.cmd("UID SEARCH RETURN () KEYWORD nosuchkeyword").await;
    assert_eq!(esearch(&r), format!("* ESEARCH (TAG \"{}\") UID", tag_of(&r)));
    // RETURN with CHARSET after it (RFC 4731 §7: search-return-opts come first).
    let r = c.cmd("SEARCH RETURN (ALL) CHARSET UTF-8 UNFLAGGED").await;
    assert_eq!(esearch(&r), format!("* ESEARCH (TAG \"{}\") ALL 1,3:9", tag_of(&r)));
    // Without RETURN, the plain SEARCH response as before.
    let r = c.ok("SEARCH FLAGGED").await;
    assert_eq!(r.find("* SEARCH"), "* SEARCH 2 10 11");
    assert!(!r.has("ESEARCH"));

    // Unknown options (and SAVE, RFC 5182, not offered) and broken lists are syntax errors.
    c.bad("SEARCH RETURN (FOO) ALL").await;
    c.bad("SEARCH RETURN (SAVE) ALL").await;
    c.bad("SEARCH RETURN (MIN ALL").await;
    c.bad("SEARCH RETURN (MIN)ALL").await;
    c.bad("SEARCH RETURN MIN ALL").await;
}

/// The MODSEQ of the message with sequence number `seq`, from FETCH.
async fn modseq_of(c: &mut Client, seq: u32) -> u64 {
    let r = c.ok(&format!("FETCH {seq} (MODSEQ)")).await;
    let line = r.find("MODSEQ (");
    line.split("MODSEQ (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

#[tokio::test]
async fn esearch_with_modseq() {
    let server = Server::start().await;
    let mut c = flagged_mailbox(&server).await;
    let (m2, m11) = (modseq_of(&mut c, 2).await, modseq_of(&mut c, 11).await);
    assert!(m2 < m11);
    // RFC 7162 §3.1.5 / RFC 4731 §3.2: MODSEQ last, the highest of all matches with ALL or
    // COUNT, of the returned ones with only MIN/MAX.
    let r = c.cmd("SEARCH RETURN (ALL) FLAGGED MODSEQ 1").await;
    assert_eq!(
        esearch(&r),
        format!("* ESEARCH (TAG \"{}\") ALL 2,10:11 MODSEQ {m11}", tag_of(&r))
    );
    let r = c.cmd("SEARCH RETURN (MIN) FLAGGED MODSEQ 1").await;
    assert_eq!(
        esearch(&r),
        format!("* ESEARCH (TAG \"{}\") MIN 2 MODSEQ {m2}", tag_of(&r))
    );
    let r = c.cmd("UID SEARCH RETURN (COUNT) FLAGGED MODSEQ 1").await;
    assert_eq!(
        esearch(&r),
        format!("* ESEARCH (TAG \"{}\") UID COUNT 3 MODSEQ {m11}", tag_of(&r))
    );
    // No match, no MODSEQ.
    let r = c.cmd("SEARCH RETURN (ALL) FLAGGED MODSEQ 999999").await;
    assert_eq!(esearch(&r), format!("* ESEARCH (TAG \"{}\")", tag_of(&r)));
}
