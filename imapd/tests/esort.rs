//! ESORT (RFC 5267 §3) from outside, over a real socket: `SORT RETURN (...)` and `UID SORT
//! RETURN (...)` answered with `* ESEARCH` in sort order, with SAVE (RFC 5182 §2.4) and PARTIAL
//! (RFC 5267 §4.4, CONTEXT=SORT).

mod common;

use common::*;

/// A message with a subject and a sent date (day of December 2026).
fn dated(subject: &str, day: u32) -> Vec<u8> {
    format!(
        "From: Bob <bob@example.test>\r\nTo: Alice <alice@example.test>\r\nSubject: {subject}\r\n\
Date: {day:02} Dec 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@example.test>\r\n\r\nbody\r\n"
    )
    .into_bytes()
}

/// INBOX with five messages, UIDs and message numbers 1..=5, sent on 5, 4, 3, 1 and 2 December:
/// by DATE the order is 4 5 3 2 1, by REVERSE DATE 1 2 3 5 4.
async fn dated_mailbox(server: &Server) -> Client {
    for (subject, day) in [("e", 5), ("d", 4), ("c", 3), ("a", 1), ("b", 2)] {
        server.deliver(&dated(subject, day)).await;
    }
    let mut c = server.login().await;
    c.ok("SELECT INBOX").await;
    c
}

/// Send a command under `tag` and read its answer.
async fn tagged(c: &mut Client, tag: &str, command: &str) -> Response {
    c.write(format!("{tag} {command}\r\n").as_bytes()).await;
    c.until(tag).await
}

/// The one `* ESEARCH` line of an OK answer, with no `* SORT` or `* SEARCH` beside it.
fn esearch(r: &Response) -> String {
    assert!(r.tagged.contains(" OK"), "{r:#?}");
    assert!(
        !r.has("* SORT") && !r.has("* SEARCH"),
        "RETURN (...) answers only ESEARCH: {r:#?}"
    );
    let lines: Vec<&String> = r.lines.iter().filter(|l| l.starts_with("* ESEARCH")).collect();
    assert_eq!(lines.len(), 1, "{r:#?}");
    lines[0].clone()
}

#[tokio::test]
async fn esort_answers_in_sort_order() {
    let server = Server::start().await;
    let mut c = dated_mailbox(&server).await;
    let caps = c.ok("CAPABILITY").await;
    let caps = caps.find("* CAPABILITY");
    for word in ["ESORT", "CONTEXT=SEARCH", "CONTEXT=SORT", "SORT"] {
        assert!(caps.split(' ').any(|w| w == word), "{word} in {caps}");
    }
    // RFC 5267 §3.3: `RETURN ()` is ALL, in the requested order; §3.2: a range only where the
    // order ascends (1:3), never 5:4.
    let r = tagged(
        &mut c,
        "E01",
        "UID SORT RETURN () (REVERSE DATE) UTF-8 UNDELETED UNKEYWORD $Junk",
    )
    .await;
    assert_eq!(esearch(&r), "* ESEARCH (TAG \"E01\") UID ALL 1:3,5,4");
    let r = tagged(&mut c, "E02", "SORT RETURN (ALL) (DATE) UTF-8 ALL").await;
    assert_eq!(esearch(&r), "* ESEARCH (TAG \"E02\") ALL 4:5,3,2,1");
    // §3.1: MIN and MAX are the lowest and highest *sorted* message, not the smallest numbers.
    let r = tagged(&mut c, "E03", "SORT RETURN (MIN MAX COUNT) (DATE) UTF-8 ALL").await;
    assert_eq!(esearch(&r), "* ESEARCH (TAG \"E03\") MIN 4 MAX 1 COUNT 5");
    let r = tagged(
        &mut c,
        "E04",
        "UID SORT RETURN (MIN) (REVERSE SUBJECT) UTF-8 NOT SUBJECT e",
    )
    .await;
    assert_eq!(esearch(&r), "* ESEARCH (TAG \"E04\") UID MIN 2");
    // RFC 4731 §3.1: nothing matched: MIN, MAX and ALL left out, COUNT 0.
    let r = tagged(
        &mut c,
        "E05",
        "SORT RETURN (MIN MAX ALL COUNT) (DATE) UTF-8 SUBJECT nowhere",
    )
    .await;
    assert_eq!(esearch(&r), "* ESEARCH (TAG \"E05\") COUNT 0");
    // RFC 4731 §3.2 with RFC 7162 §3.1.5: MODSEQ is the highest of the messages returned,
    // here the MIN one only.
    let r = c.ok("FETCH 4 (MODSEQ)").await;
    let modseq = r
        .find("* 4 FETCH")
        .split("MODSEQ (")
        .nth(1)
        .unwrap()
        .trim_end_matches("))")
        .to_string();
    let r = tagged(&mut c, "E06", "SORT RETURN (MIN) (DATE) UTF-8 MODSEQ 1").await;
    assert_eq!(esearch(&r), format!("* ESEARCH (TAG \"E06\") MIN 4 MODSEQ {modseq}"));
    // Without RETURN, SORT answers as RFC 5256 says.
    let r = c.ok("SORT (DATE) UTF-8 ALL").await;
    assert_eq!(r.find("* SORT"), "* SORT 4 5 3 2 1");
    assert!(!r.has("* ESEARCH"), "{r:#?}");
    // An unknown return option, or a charset missing after RETURN, is a syntax error.
    c.bad("SORT RETURN (NOSUCH) (DATE) UTF-8 ALL").await;
    c.bad("SORT RETURN (ALL) (DATE) ALL").await;
    c.bad("SORT RETURN (DATE) UTF-8 ALL").await;
}

#[tokio::test]
async fn esort_partial_follows_the_sort_order() {
    let server = Server::start().await;
    let mut c = dated_mailbox(&server).await;
    // RFC 5267 §4.4: positions in the sorted result; the range as asked, lower first.
    let r = tagged(&mut c, "P01", "SORT RETURN (PARTIAL 2:3) (DATE) UTF-8 ALL").await;
    assert_eq!(esearch(&r), "* ESEARCH (TAG \"P01\") PARTIAL (2:3 5,3)");
    let r = tagged(
        &mut c,
        "P02",
        "UID SORT RETURN (PARTIAL 5:4 COUNT) (REVERSE DATE) UTF-8 ALL",
    )
    .await;
    assert_eq!(esearch(&r), "* ESEARCH (TAG \"P02\") UID COUNT 5 PARTIAL (4:5 5,4)");
    // Past the end: what there is, or NIL.
    let r = tagged(&mut c, "P03", "SORT RETURN (PARTIAL 4:100) (DATE) UTF-8 ALL").await;
    assert_eq!(esearch(&r), "* ESEARCH (TAG \"P03\") PARTIAL (4:100 2,1)");
    let r = tagged(&mut c, "P04", "SORT RETURN (PARTIAL 6:9) (DATE) UTF-8 ALL").await;
    assert_eq!(esearch(&r), "* ESEARCH (TAG \"P04\") PARTIAL (6:9 NIL)");
    // §4.4: "either one PARTIAL, one ALL, or neither".
    c.bad("SORT RETURN (PARTIAL 1:2 ALL) (DATE) UTF-8 ALL").await;
    c.bad("SORT RETURN (PARTIAL 1:2 PARTIAL 3:4) (DATE) UTF-8 ALL").await;
    c.bad("SORT RETURN (PARTIAL 0:2) (DATE) UTF-8 ALL").await;
}

/// RFC 5182 §2.4: SORT RETURN (SAVE) keeps the result as `$`; with MIN or MAX alone, the first
/// or last sorted message; a failed SORT with SAVE leaves `$` empty.
#[tokio::test]
async fn esort_saves_the_result() {
    let server = Server::start().await;
    let mut c = dated_mailbox(&server).await;
    // SAVE alone: no ESEARCH at all.
    let r = c.ok("SORT RETURN (SAVE) (DATE) UTF-8 OR SUBJECT a SUBJECT e").await;
    assert!(!r.has("* ESEARCH") && !r.has("* SORT"), "{r:#?}");
    assert_eq!(c.ok("SEARCH $").await.find("* SEARCH"), "* SEARCH 1 4");
    // `$` in SORT's own criteria (RFC 5182 §2.1: wherever a sequence set may be).
    let r = c.ok("SORT (REVERSE DATE) UTF-8 $").await;
    assert_eq!(r.find("* SORT"), "* SORT 1 4");
    let r = tagged(&mut c, "S00", "UID SORT RETURN (ALL) (DATE) UTF-8 UID $").await;
    assert_eq!(esearch(&r), "* ESEARCH (TAG \"S00\") UID ALL 4,1");
    let r = c.ok("THREAD ORDEREDSUBJECT UTF-8 $").await;
    assert_eq!(r.find("* THREAD"), "* THREAD (4)(1)");
    // MIN with SAVE: the first in sort order (4, sent first), not the lowest number.
    let r = tagged(&mut c, "S01", "SORT RETURN (SAVE MIN) (DATE) UTF-8 ALL").await;
    assert_eq!(esearch(&r), "* ESEARCH (TAG \"S01\") MIN 4");
    let r = c.ok("FETCH $ (UID)").await;
    assert_eq!(r.lines, vec!["* 4 FETCH (UID 4)".to_string()], "{r:#?}");
    let r = tagged(&mut c, "S02", "UID SORT RETURN (SAVE MAX) (DATE) UTF-8 ALL").await;
    assert_eq!(esearch(&r), "* ESEARCH (TAG \"S02\") UID MAX 1");
    assert_eq!(c.ok("SEARCH $").await.find("* SEARCH"), "* SEARCH 1");
    // With PARTIAL: the window's messages.
    let r = tagged(&mut c, "S03", "SORT RETURN (SAVE PARTIAL 1:2) (DATE) UTF-8 ALL").await;
    assert_eq!(esearch(&r), "* ESEARCH (TAG \"S03\") PARTIAL (1:2 4:5)");
    assert_eq!(c.ok("SEARCH $").await.find("* SEARCH"), "* SEARCH 4 5");
    // A SORT with SAVE that fails (bad charset: NO; bad syntax: BAD) empties `$`.
    c.no("SORT RETURN (SAVE) (DATE) KOI8-R ALL").await;
    assert_eq!(c.ok("SEARCH $").await.find("* SEARCH"), "* SEARCH");
    c.ok("SORT RETURN (SAVE) (DATE) UTF-8 ALL").await;
    c.bad("SORT RETURN (SAVE) (DATE) UTF-8 NOSUCHKEY").await;
    assert_eq!(c.ok("SEARCH $").await.find("* SEARCH"), "* SEARCH");
}
