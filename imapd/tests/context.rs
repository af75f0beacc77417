//! CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267 §4) from outside, over real sockets: PARTIAL
//! (§4.4), searches kept live with UPDATE while a second session appends, flags and expunges
//! (§4.3: ADDTO after EXISTS, REMOVEFROM before EXPUNGE), CANCELUPDATE (§4.3.5), NOUPDATE and
//! the limits (§4.3.1), and python imaplib as a client.

mod common;

use common::*;

/// Send a command under `tag` and read its answer.
async fn tagged(c: &mut Client, tag: &str, command: &str) -> Response {
    c.write(format!("{tag} {command}\r\n").as_bytes()).await;
    c.until(tag).await
}

/// The `* ESEARCH` lines of an answer.
fn esearches(r: &Response) -> Vec<String> {
    r.lines.iter().filter(|l| l.starts_with("* ESEARCH")).cloned().collect()
}

/// Where a line is in an answer (it must be there).
fn position(r: &Response, line: &str) -> usize {
    r.lines
        .iter()
        .position(|l| l == line)
        .unwrap_or_else(|| panic!("{line:?} not in {r:#?}"))
}

/// Deliver `n` messages with subjects s1..sn, then log in and select INBOX (UIDs 1..=n).
async fn mailbox(server: &Server, n: u32) -> Client {
    for i in 1..=n {
        server.deliver(&message(&format!("s{i}"), "body")).await;
    }
    let mut c = server.login().await;
    c.ok("SELECT INBOX").await;
    c
}

/// RFC 5267 §4.4's examples in form: the window of a SEARCH result in mailbox order.
#[tokio::test]
async fn partial_search_results() {
    let server = Server::start().await;
    let mut c = mailbox(&server, 6).await;
    c.ok("STORE 2,5 +FLAGS (\\Deleted)").await;
    // Undeleted: 1 3 4 6.
    let r = tagged(&mut c, "A01", "UID SEARCH RETURN (PARTIAL 1:2) UNDELETED").await;
    assert_eq!(esearches(&r), vec!["* ESEARCH (TAG \"A01\") UID PARTIAL (1:2 1,3)"]);
    let r = tagged(&mut c, "A02", "UID SEARCH RETURN (COUNT PARTIAL 3:500) UNDELETED").await;
    assert_eq!(
        esearches(&r),
        vec!["* ESEARCH (TAG \"A02\") UID COUNT 4 PARTIAL (3:500 4,6)"]
    );
    // "A range 500:400 is the same as 400:500"; none there: NIL.
    let r = tagged(&mut c, "A04", "UID SEARCH RETURN (PARTIAL 24500:24000) UNDELETED").await;
    assert_eq!(
        esearches(&r),
        vec!["* ESEARCH (TAG \"A04\") UID PARTIAL (24000:24500 NIL)"]
    );
    let r = tagged(&mut c, "A05", "SEARCH RETURN (MIN PARTIAL 2:3) UNDELETED").await;
    assert_eq!(esearches(&r), vec!["* ESEARCH (TAG \"A05\") MIN 1 PARTIAL (2:3 3:4)"]);
    // CONTEXT is a hint (§4.2): alone it is RETURN (), ALL.
    let r = tagged(&mut c, "A06", "SEARCH RETURN (CONTEXT) UNDELETED").await;
    assert_eq!(esearches(&r), vec!["* ESEARCH (TAG \"A06\") ALL 1,3:4,6"]);
    for bad in [
        "SEARCH RETURN (PARTIAL 1:2 ALL) ALL",
        "SEARCH RETURN (PARTIAL 1:2 PARTIAL 3:4) ALL",
        "SEARCH RETURN (PARTIAL 0:2) ALL",
        "SEARCH RETURN (PARTIAL 1:*) ALL",
        "SEARCH RETURN (PARTIAL) ALL",
        "SEARCH RETURN (PARTIAL 99999999999:1) ALL",
    ] {
        c.bad(bad).await;
    }
}

/// A live UID SEARCH (§4.3, context position 0 for SEARCH) while a second session appends,
/// flags and expunges; the first hears at its next command, ADDTO after EXISTS and REMOVEFROM
/// before the expunge.
#[tokio::test]
async fn live_search_follows_another_session() {
    let server = Server::start().await;
    let mut a = mailbox(&server, 4).await;
    let mut b = server.login().await;
    b.ok("SELECT INBOX").await;
    b.ok("STORE 2 +FLAGS (\\Seen)").await;
    let r = tagged(&mut a, "B01", "UID SEARCH RETURN (UPDATE ALL) UNSEEN").await;
    assert!(r.tagged.starts_with("B01 OK"), "{r:#?}");
    assert_eq!(esearches(&r), vec!["* ESEARCH (TAG \"B01\") UID ALL 1,3:4"]);
    // Nothing changed: nothing said.
    let r = a.ok("NOOP").await;
    assert!(esearches(&r).is_empty(), "{r:#?}");
    // A new unseen message arrives.
    let appended = b.append("INBOX", "()", &message("s5", "body")).await;
    assert!(appended.tagged.contains(" OK"), "{appended:#?}");
    let r = a.ok("NOOP").await;
    let added = "* ESEARCH (TAG \"B01\") UID ADDTO (0 5)";
    assert!(
        position(&r, "* 5 EXISTS") < position(&r, added),
        "ADDTO after EXISTS: {r:#?}"
    );
    // Flags change both ways.
    b.ok("STORE 3 +FLAGS (\\Seen)").await;
    b.ok("STORE 2 -FLAGS (\\Seen)").await;
    let r = a.ok("NOOP").await;
    assert_eq!(
        esearches(&r),
        vec!["* ESEARCH (TAG \"B01\") UID REMOVEFROM (0 3) ADDTO (0 2)"],
        "{r:#?}"
    );
    // A flag change that leaves the result as it is says nothing.
    b.ok("STORE 1 +FLAGS (\\Flagged)").await;
    let r = a.ok("NOOP").await;
    assert!(esearches(&r).is_empty(), "{r:#?}");
    // Expunged by the other session: REMOVEFROM, then the EXPUNGE.
    b.ok("STORE 4 +FLAGS (\\Deleted)").await;
    b.ok("EXPUNGE").await;
    let r = a.ok("NOOP").await;
    let removed = "* ESEARCH (TAG \"B01\") UID REMOVEFROM (0 4)";
    assert!(position(&r, removed) < position(&r, "* 4 EXPUNGE"), "{r:#?}");
    // This session's own STORE and EXPUNGE count too (told with the command's answer).
    let r = a.ok("STORE 1 +FLAGS (\\Seen)").await;
    assert_eq!(
        esearches(&r),
        vec!["* ESEARCH (TAG \"B01\") UID REMOVEFROM (0 1)"],
        "{r:#?}"
    );
    let r = a.ok("NOOP").await;
    assert!(esearches(&r).is_empty(), "told once: {r:#?}");
    a.ok("STORE 2 +FLAGS (\\Deleted)").await;
    let r = a.ok("EXPUNGE").await;
    let removed = "* ESEARCH (TAG \"B01\") UID REMOVEFROM (0 2)";
    assert!(position(&r, removed) < position(&r, "* 2 EXPUNGE"), "{r:#?}");
    // This session's own APPEND into the selected mailbox: told with the command's answer,
    // ADDTO after EXISTS.
    let r = a.append("INBOX", "()", &message("s6", "body")).await;
    let added = "* ESEARCH (TAG \"B01\") UID ADDTO (0 6)";
    assert!(position(&r, "* 4 EXISTS") < position(&r, added), "{r:#?}");
}

/// A live SEARCH by message number: the numbers are valid when sent (ADDTO after EXISTS,
/// REMOVEFROM before EXPUNGE shifts them), and updates come during IDLE too (§4.3.2).
#[tokio::test]
async fn live_search_in_message_numbers_and_during_idle() {
    let server = Server::start().await;
    let mut a = mailbox(&server, 3).await;
    let mut b = server.login().await;
    b.ok("SELECT INBOX").await;
    let r = tagged(&mut a, "C01", "SEARCH RETURN (UPDATE COUNT) SUBJECT s").await;
    assert_eq!(esearches(&r), vec!["* ESEARCH (TAG \"C01\") COUNT 3"]);
    b.ok("STORE 1 +FLAGS (\\Deleted)").await;
    b.ok("EXPUNGE").await;
    server.deliver(&message("s4", "body")).await;
    let r = a.ok("NOOP").await;
    // Message 4 (UID 4) is added after `* 4 EXISTS`; message 1 is removed before its EXPUNGE.
    let exists = position(&r, "* 4 EXISTS");
    let update = position(&r, "* ESEARCH (TAG \"C01\") REMOVEFROM (0 1) ADDTO (0 4)");
    let expunge = position(&r, "* 1 EXPUNGE");
    assert!(exists < update && update < expunge, "{r:#?}");
    // During IDLE: a delivery is told at once, as EXISTS then ADDTO.
    a.write(b"I1 IDLE\r\n").await;
    assert!(a.line().await.starts_with("+ "));
    server.deliver(&message("s5", "body")).await;
    let mut idled = Vec::new();
    while !idled.last().is_some_and(|l: &String| l.starts_with("* ESEARCH")) {
        idled.push(a.line().await);
    }
    assert_eq!(idled.first().map(String::as_str), Some("* 4 EXISTS"), "{idled:#?}");
    assert_eq!(
        idled.last().map(String::as_str),
        Some("* ESEARCH (TAG \"C01\") ADDTO (0 4)")
    );
    a.write(b"DONE\r\n").await;
    let r = a.until("I1").await;
    assert!(r.tagged.contains(" OK"), "{r:#?}");
}

/// A live SORT (CONTEXT=SORT): changes at their context positions in the sort order.
#[tokio::test]
async fn live_sort_keeps_the_sort_order() {
    let server = Server::start().await;
    for subject in ["b", "d", "f"] {
        server.deliver(&message(subject, "body")).await;
    }
    let mut a = server.login().await;
    a.ok("SELECT INBOX").await;
    let mut b = server.login().await;
    b.ok("SELECT INBOX").await;
    let r = tagged(
        &mut a,
        "D01",
        "UID SORT RETURN (UPDATE ALL) (REVERSE SUBJECT) UTF-8 UNSEEN",
    )
    .await;
    // f d b
    assert_eq!(esearches(&r), vec!["* ESEARCH (TAG \"D01\") UID ALL 3,2,1"]);
    // "c" (UID 4) goes between d and b: position 3.
    assert!(
        b.append("INBOX", "()", &message("c", "body"))
            .await
            .tagged
            .contains(" OK")
    );
    let r = a.ok("NOOP").await;
    let added = "* ESEARCH (TAG \"D01\") UID ADDTO (3 4)";
    assert!(position(&r, "* 4 EXISTS") < position(&r, added), "{r:#?}");
    // f d c b; "d" seen: removed from position 2; then "g" arrives first, "a" last.
    b.ok("STORE 2 +FLAGS (\\Seen)").await;
    assert!(
        b.append("INBOX", "()", &message("g", "body"))
            .await
            .tagged
            .contains(" OK")
    );
    assert!(
        b.append("INBOX", "()", &message("a", "body"))
            .await
            .tagged
            .contains(" OK")
    );
    let r = a.ok("NOOP").await;
    assert_eq!(
        esearches(&r),
        vec!["* ESEARCH (TAG \"D01\") UID REMOVEFROM (2 2) ADDTO (1 5 5 6)"],
        "{r:#?}"
    );
    // g f c b a; "b" expunged from position 4, before the EXPUNGE.
    b.ok("STORE 1 +FLAGS (\\Deleted)").await;
    b.ok("EXPUNGE").await;
    let r = a.ok("NOOP").await;
    let removed = "* ESEARCH (TAG \"D01\") UID REMOVEFROM (4 1)";
    assert!(position(&r, removed) < position(&r, "* 1 EXPUNGE"), "{r:#?}");
    // The same, by message number: g f c a is 4 2 3 5 (after UID 1 went, UID n is n-1); 2 and
    // 3 ascend, so they are a range (§3.2).
    let r = tagged(&mut a, "D02", "SORT RETURN (UPDATE ALL) (REVERSE SUBJECT) UTF-8 UNSEEN").await;
    assert_eq!(esearches(&r), vec!["* ESEARCH (TAG \"D02\") ALL 4,2:3,5"]);
    b.ok("STORE 4 +FLAGS (\\Seen)").await;
    let r = a.ok("NOOP").await;
    assert_eq!(
        esearches(&r),
        vec![
            "* ESEARCH (TAG \"D01\") UID REMOVEFROM (1 5)",
            "* ESEARCH (TAG \"D02\") REMOVEFROM (1 4)"
        ],
        "{r:#?}"
    );
}

/// CANCELUPDATE (§4.3.5), tag reuse (§4.3), NOUPDATE past the limits or for a search whose
/// result would move without a message changing (§4.3.1), and the end of the view.
#[tokio::test]
async fn cancel_reuse_limits_and_unselect() {
    let server = Server::start().await;
    let mut a = mailbox(&server, 2).await;
    let mut b = server.login().await;
    b.ok("SELECT INBOX").await;
    tagged(&mut a, "B01", "UID SEARCH RETURN (UPDATE) UNSEEN").await;
    // §4.3: "An attempt to use UPDATE where a tag is already in use ... SHALL result in ... BAD".
    let r = tagged(&mut a, "B01", "UID SEARCH RETURN (UPDATE COUNT) UNSEEN").await;
    assert!(r.tagged.starts_with("B01 BAD"), "{r:#?}");
    assert!(esearches(&r).is_empty(), "{r:#?}");
    // The same tag without UPDATE is an ordinary search.
    let r = tagged(&mut a, "B01", "UID SEARCH RETURN (COUNT) UNSEEN").await;
    assert_eq!(esearches(&r), vec!["* ESEARCH (TAG \"B01\") UID COUNT 2"]);
    // CANCELUPDATE takes quoted tags; an unknown one is NO and cancels nothing.
    a.bad("CANCELUPDATE B01").await;
    a.no("CANCELUPDATE \"B01\" \"nosuch\"").await;
    b.ok("STORE 1 +FLAGS (\\Seen)").await;
    let r = a.ok("NOOP").await;
    assert_eq!(esearches(&r), vec!["* ESEARCH (TAG \"B01\") UID REMOVEFROM (0 1)"]);
    let r = tagged(&mut a, "B04", "CANCELUPDATE \"B01\"").await;
    assert!(r.tagged.starts_with("B04 OK"), "{r:#?}");
    b.ok("STORE 2 +FLAGS (\\Seen)").await;
    let r = a.ok("NOOP").await;
    assert!(esearches(&r).is_empty(), "cancelled: {r:#?}");
    a.no("CANCELUPDATE \"B01\"").await;
    // At most 100 tags in one CANCELUPDATE (a session keeps 5 live searches).
    let many: Vec<String> = (0..101).map(|i| format!("\"x{i}\"")).collect();
    a.bad(&format!("CANCELUPDATE {}", many.join(" "))).await;
    // Five live searches; the sixth is answered (other options honoured) with NOUPDATE.
    for i in 1..=5 {
        tagged(&mut a, &format!("L{i}"), "UID SEARCH RETURN (UPDATE) SEEN").await;
    }
    let r = tagged(&mut a, "L6", "UID SEARCH RETURN (UPDATE COUNT) SEEN").await;
    assert!(r.tagged.starts_with("L6 OK"), "{r:#?}");
    // As in §4.3.1's example: the NO, then the answer.
    assert!(r.lines[0].starts_with("* NO [NOUPDATE \"L6\"] "), "{r:#?}");
    assert_eq!(esearches(&r), vec!["* ESEARCH (TAG \"L6\") UID COUNT 2"]);
    let r = tagged(&mut a, "L6S", "UID SORT RETURN (UPDATE MIN) (SUBJECT) UTF-8 SEEN").await;
    assert!(
        r.tagged.starts_with("L6S OK") && r.has("* NO [NOUPDATE \"L6S\"]"),
        "{r:#?}"
    );
    assert_eq!(esearches(&r), vec!["* ESEARCH (TAG \"L6S\") UID MIN 1"]);
    let r = tagged(&mut a, "L7", "CANCELUPDATE \"L1\" \"L2\" \"L3\" \"L4\" \"L5\"").await;
    assert!(r.tagged.starts_with("L7 OK"), "{r:#?}");
    // Message numbers shift at every expunge: not kept live.
    let r = tagged(&mut a, "N1", "SEARCH RETURN (UPDATE ALL) 1:2").await;
    assert!(
        r.tagged.starts_with("N1 OK") && r.has("* NO [NOUPDATE \"N1\"]"),
        "{r:#?}"
    );
    assert_eq!(esearches(&r), vec!["* ESEARCH (TAG \"N1\") ALL 1:2"]);
    let r = tagged(&mut a, "N2", "UID SEARCH RETURN (UPDATE) UID 1:*").await;
    assert!(r.has("* NO [NOUPDATE \"N2\"]"), "{r:#?}");
    let r = tagged(&mut a, "N3", "UID SEARCH RETURN (UPDATE) YOUNGER 60").await;
    assert!(r.has("* NO [NOUPDATE \"N3\"]"), "{r:#?}");
    // A live search ends with the view (§4.3): UNSELECT, then SELECT again.
    tagged(&mut a, "U1", "UID SEARCH RETURN (UPDATE) SEEN").await;
    a.ok("UNSELECT").await;
    a.ok("SELECT INBOX").await;
    b.ok("STORE 1:2 -FLAGS (\\Seen)").await;
    let r = a.ok("NOOP").await;
    assert!(esearches(&r).is_empty(), "{r:#?}");
    a.no("CANCELUPDATE \"U1\"").await;
    // Outside the selected state CANCELUPDATE is refused.
    a.ok("UNSELECT").await;
    a.bad("CANCELUPDATE \"U1\"").await;
}

/// python imaplib drives a live search: RETURN (UPDATE ALL) from one connection, an APPEND and
/// a STORE from another, the ESEARCH updates collected as imaplib's untagged responses.
#[tokio::test]
async fn imaplib_live_search() {
    let server = Server::start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/context_update.py");
    let out = server.imaplib(&[script], &[], std::time::Duration::from_secs(60)).await;
    let text = printed(&out);
    assert!(out.status.success() && text.contains("ALL OK"), "{text}");
}

/// RFC 5465 §7 (NOTIFY with CONTEXT=SEARCH/SORT): `UPDATE (fetch-att ...)` asks for a FETCH of
/// each new message that joins the live result, sent after its EXISTS and before the ADDTO,
/// and for none that joins by a flag change.
#[tokio::test]
async fn update_with_fetch_atts_fetches_new_members() {
    let server = Server::start().await;
    server.deliver(&message("old boss", "body")).await;
    let mut a = server.login().await;
    a.ok("SELECT INBOX").await;
    let mut b = server.login().await;
    b.ok("SELECT INBOX").await;
    let r = tagged(
        &mut a,
        "A00",
        "SEARCH RETURN (COUNT UPDATE (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])) SUBJECT boss",
    )
    .await;
    assert_eq!(esearches(&r), vec!["* ESEARCH (TAG \"A00\") COUNT 1"]);
    // §7's example: EXISTS, the FETCH, then ADDTO.
    assert!(
        b.append("INBOX", "()", &message("good morning boss", "body"))
            .await
            .tagged
            .contains(" OK")
    );
    b.append("INBOX", "()", &message("not this one", "body")).await;
    let r = a.ok("NOOP").await;
    let exists = position(&r, "* 3 EXISTS");
    let fetch = r
        .lines
        .iter()
        .position(|l| l.starts_with("* 2 FETCH (UID 2 BODY[HEADER.FIELDS (SUBJECT)] {"))
        .unwrap_or_else(|| panic!("no FETCH of message 2 in {r:#?}"));
    let added = position(&r, "* ESEARCH (TAG \"A00\") ADDTO (0 2)");
    assert!(exists < fetch && fetch < added, "{r:#?}");
    assert!(r.has("Subject: good morning boss"), "{r:#?}");
    assert!(!r.has("* 3 FETCH"), "{r:#?}");
    // No \Seen from the unasked FETCH (BODY.PEEK, read as EXAMINE would).
    let r = a.ok("FETCH 2 (FLAGS)").await;
    assert!(!r.has("\\Seen"), "{r:#?}");
    // A message joining by a flag change gets its ADDTO but no FETCH (§7 SHOULD).
    tagged(&mut a, "A01", "UID SEARCH RETURN (UPDATE (UID FLAGS)) FLAGGED").await;
    b.ok("STORE 1 +FLAGS.SILENT (\\Flagged)").await;
    let r = a.ok("NOOP").await;
    assert!(r.has("* ESEARCH (TAG \"A01\") UID ADDTO (0 1)"), "{r:#?}");
    // The flag update of RFC 3501 §7.4.2, once: not a second FETCH for the live search.
    assert_eq!(
        r.lines.iter().filter(|l| l.starts_with("* 1 FETCH")).count(),
        1,
        "{r:#?}"
    );
}
