//! SEARCH extensions from outside, over a real socket: WITHIN (RFC 5032) and ESEARCH
//! (RFC 4731) and SEARCHRES (RFC 5182), the latter two with their RFCs' examples.

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

    // Unknown options and broken lists are syntax errors.
    c.bad("SEARCH RETURN (FOO) ALL").await;
    c.bad("SEARCH RETURN (MIN FOO) ALL").await;
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

/// The `(seq, UID)` pairs of a `FETCH ... (UID)` response, in order.
fn fetched(r: &Response) -> Vec<(u32, u32)> {
    assert!(r.tagged.contains(" OK"), "{r:#?}");
    r.lines
        .iter()
        .filter_map(|l| {
            let rest = l.strip_prefix("* ")?;
            let (seq, rest) = rest.split_once(" FETCH (")?;
            let uid = rest.split("UID ").nth(1)?.split([' ', ')']).next()?;
            Some((seq.parse().ok()?, uid.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn searchres_saves_and_reuses_a_result() {
    let server = Server::start().await;
    let mut c = flagged_mailbox(&server).await;
    let caps = c.ok("CAPABILITY").await;
    assert!(
        caps.find("* CAPABILITY").split(' ').any(|w| w == "SEARCHRES"),
        "{caps:#?}"
    );
    // RFC 5182 §2.1: `$` is empty after SELECT: FETCH $ answers nothing.
    assert_eq!(fetched(&c.ok("FETCH $ (UID)").await), vec![]);
    // §2.4 example: SAVE alone gives no ESEARCH (nor SEARCH) response.
    let r = c
        .ok("SEARCH RETURN (SAVE) FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\"")
        .await;
    assert!(r.lines.is_empty(), "{r:#?}");
    assert_eq!(fetched(&c.ok("FETCH $ (UID)").await), vec![(2, 3), (10, 11), (11, 12)]);
    assert_eq!(
        fetched(&c.ok("UID FETCH $ (UID)").await),
        vec![(2, 3), (10, 11), (11, 12)]
    );
    // `$` in SEARCH: as message numbers, and after UID as UIDs.
    assert_eq!(c.ok("SEARCH $").await.find("* SEARCH"), "* SEARCH 2 10 11");
    assert_eq!(c.ok("UID SEARCH UID $").await.find("* SEARCH"), "* SEARCH 3 11 12");
    assert_eq!(c.ok("SEARCH NOT $ 1:3").await.find("* SEARCH"), "* SEARCH 1 3");
    // SAVE with MIN/MAX only keeps those messages (§2), and answers ESEARCH for MIN/MAX.
    let r = c.cmd("SEARCH RETURN (SAVE MIN MAX) FLAGGED").await;
    assert_eq!(esearch(&r), format!("* ESEARCH (TAG \"{}\") MIN 2 MAX 11", tag_of(&r)));
    assert_eq!(c.ok("SEARCH $").await.find("* SEARCH"), "* SEARCH 2 11");
    let r = c.cmd("SEARCH RETURN (SAVE MIN COUNT) FLAGGED").await;
    assert_eq!(esearch(&r), format!("* ESEARCH (TAG \"{}\") MIN 2 COUNT 3", tag_of(&r)));
    assert_eq!(c.ok("SEARCH $").await.find("* SEARCH"), "* SEARCH 2 10 11");
    // STORE, COPY and MOVE on `$`.
    c.ok("STORE $ +FLAGS.SILENT (\\Seen)").await;
    assert_eq!(c.ok("SEARCH SEEN").await.find("* SEARCH"), "* SEARCH 2 10 11");
    c.ok("CREATE Saved").await;
    c.ok("COPY $ Saved").await;
    assert!(c.ok("STATUS Saved (MESSAGES)").await.has("(MESSAGES 3)"));
    c.ok("SEARCH RETURN (SAVE) UID 12").await;
    c.ok("UID MOVE $ Saved").await;
    assert!(c.ok("STATUS Saved (MESSAGES)").await.has("(MESSAGES 4)"));
    // UID EXPUNGE $ removes only the saved messages (RFC 4315 with RFC 5182).
    c.ok("STORE 1:3 +FLAGS.SILENT (\\Deleted)").await;
    c.ok("SEARCH RETURN (SAVE) UID 3").await;
    let r = c.ok("UID EXPUNGE $").await;
    assert_eq!(r.lines, vec!["* 2 EXPUNGE".to_string()], "{r:#?}");
    assert_eq!(c.ok("SEARCH $").await.find("* SEARCH"), "* SEARCH");
    // `$` only stands alone (RFC 5182 §3 grammar).
    c.bad("FETCH $,1 (UID)").await;
    c.bad("FETCH 1:$ (UID)").await;
}

#[tokio::test]
async fn searchres_pipelined_after_save() {
    let server = Server::start().await;
    let mut c = flagged_mailbox(&server).await;
    c.ok("STORE 5 +FLAGS (\\Seen)").await;
    // RFC 5182 §2.1: a command using `$` sent right behind the SEARCH that saves it sees the
    // new result (commands run in order).
    c.write(b"p1 SEARCH RETURN (SAVE) SEEN\r\np2 FETCH $ (UID)\r\np3 UID SEARCH RETURN (SAVE) FLAGGED\r\np4 UID FETCH $ (UID)\r\n")
        .await;
    let r = c.until("p1").await;
    assert!(r.tagged.contains(" OK"), "{r:#?}");
    assert_eq!(fetched(&c.until("p2").await), vec![(5, 6)]);
    let r = c.until("p3").await;
    assert!(r.tagged.contains(" OK"), "{r:#?}");
    assert_eq!(fetched(&c.until("p4").await), vec![(2, 3), (10, 11), (11, 12)]);
}

#[tokio::test]
async fn searchres_after_expunge_failure_and_reselect() {
    let server = Server::start().await;
    let mut c = flagged_mailbox(&server).await;
    c.ok("SEARCH RETURN (SAVE) FLAGGED").await;
    // The expunged message leaves `$`; the others keep their new numbers.
    c.ok("STORE 10 +FLAGS (\\Deleted)").await;
    c.ok("EXPUNGE").await;
    assert_eq!(c.ok("SEARCH $").await.find("* SEARCH"), "* SEARCH 2 10");
    assert_eq!(c.ok("UID SEARCH UID $").await.find("* SEARCH"), "* SEARCH 3 12");
    // RFC 5182 §2.1: a SEARCH with SAVE that fails empties `$`.
    c.no("SEARCH RETURN (SAVE) CHARSET KOI8-R ALL").await;
    assert_eq!(c.ok("SEARCH $").await.find("* SEARCH"), "* SEARCH");
    // ... and so does one refused as BAD (a syntax error in its criteria).
    c.ok("SEARCH RETURN (SAVE) FLAGGED").await;
    c.bad("UID SEARCH RETURN (MIN SAVE) FLAGGED NOSUCHKEY").await;
    assert_eq!(c.ok("SEARCH $").await.find("* SEARCH"), "* SEARCH");
    // A BAD for another command leaves `$` alone.
    c.ok("SEARCH RETURN (SAVE) FLAGGED").await;
    c.bad("SEARCH RETURN (MIN) FLAGGED NOSUCHKEY").await;
    c.bad("FETCH SAVE").await;
    assert_eq!(c.ok("SEARCH $").await.find("* SEARCH"), "* SEARCH 2 10");
    // SELECT, EXAMINE, CLOSE and UNSELECT reset it.
    for reset in ["SELECT INBOX", "EXAMINE INBOX", "UNSELECT", "CLOSE"] {
        c.ok("SELECT INBOX").await;
        c.ok("SEARCH RETURN (SAVE) FLAGGED").await;
        assert_eq!(c.ok("SEARCH $").await.find("* SEARCH"), "* SEARCH 2 10");
        c.ok(reset).await;
        c.ok("SELECT INBOX").await;
        assert_eq!(c.ok("SEARCH $").await.find("* SEARCH"), "* SEARCH", "after {reset}");
    }
}

/// python imaplib (a real client that passes criteria through) drives OLDER/YOUNGER, RETURN
/// (MIN MAX COUNT ALL), RETURN (SAVE) and `$`.
#[tokio::test]
async fn imaplib_drives_within_esearch_and_searchres() {
    let server = Server::start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/esearch_searchres.py");
    let out = server.imaplib(&[script], &[], std::time::Duration::from_secs(60)).await;
    let text = printed(&out);
    assert!(out.status.success() && text.contains("ALL OK"), "{text}");
}
