//! One MIME model for BODYSTRUCTURE, BODY[section] and SEARCH (issue #13, fix 1): part
//! numbering (RFC 3501 §6.4.5), message/rfc822 structure (RFC 3501 §7.4.2), multipart/digest's
//! default type (RFC 2046 §5.1.5), parts with an empty header, nested messages, and malformed
//! multiparts, over a real socket.
//!
//! The expected answers were checked against the RFCs and are Debian's Dovecot 2.3.19 answers
//! for the same messages (`dovecot`'s strings below are copied from it; it writes media types,
//! encodings and parameter names in lower case where tinydc writes upper case, which IMAP
//! treats alike, so those are compared without regard to ASCII case). Where Dovecot departs
//! from the RFC, the test says so and follows the RFC.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn crlf(s: &str) -> Vec<u8> {
    s.replace('\n', "\r\n").into_bytes()
}

/// A multipart/mixed holding a multipart/digest: the digest's first part has an empty header
/// (so it is message/rfc822 by default), its second says message/rfc822 and encloses a
/// multipart/alternative.
fn digest() -> Vec<u8> {
    crlf(
        "From: a@x.test\nSubject: digest\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"outer\"\n\n\
--outer\nContent-Type: multipart/digest; boundary=\"dig\"\n\n\
--dig\n\nFrom: inner1@x.test\nSubject: first inner\n\ninner body one\n\
--dig\nContent-Type: message/rfc822\n\nFrom: inner2@x.test\nSubject: second inner\n\
Content-Type: multipart/alternative; boundary=\"alt\"\n\n\
--alt\nContent-Type: text/plain\n\nplain two\n--alt\nContent-Type: text/html\n\n<p>html two</p>\n--alt--\n\
--dig--\n--outer\nContent-Type: text/plain\n\ntail\n--outer--\n",
    )
}

/// A body part that starts with an empty header (a blank line right after the boundary), whose
/// body looks like a header: it is body; and an enclosed message without a header.
fn empty_header() -> Vec<u8> {
    crlf(
        "From: a@x.test\nSubject: empty header\nContent-Type: multipart/mixed; boundary=\"b\"\n\n\
--b\n\nContent-Type: text/html\n\nno header here\n--b\nContent-Type: message/rfc822\n\n\nenclosed body: no header\n--b--\n",
    )
}

/// multipart/mixed > message/rfc822 > multipart/mixed > (multipart/alternative, message/rfc822).
fn nested() -> Vec<u8> {
    crlf(
        "From: a@x.test\nSubject: nested\nContent-Type: multipart/mixed; boundary=\"o\"\n\n\
--o\nContent-Type: text/plain\n\nintro\n\
--o\nContent-Type: message/rfc822\n\nFrom: b@x.test\nSubject: fwd\nContent-Type: multipart/mixed; boundary=\"i\"\n\n\
--i\nContent-Type: multipart/alternative; boundary=\"a\"\n\n\
--a\nContent-Type: text/plain\n\ndeep plain\n--a\nContent-Type: text/html\n\n<b>deep</b>\n--a--\n\
--i\nContent-Type: message/rfc822\n\nSubject: innermost\n\ninnermost body\n--i--\n--o--\n",
    )
}

/// A message that is not multipart and whose body is a message.
fn single_message() -> Vec<u8> {
    crlf(
        "From: a@x.test\nSubject: single\nContent-Type: message/rfc822\n\n\
From: c@x.test\nSubject: wrapped\n\nwrapped body\n",
    )
}

/// The boundary in the preamble (not at a line start, and as the start of a longer line), an
/// inner multipart without its close delimiter, and no close delimiter at all.
fn malformed() -> Vec<u8> {
    crlf(
        "From: a@x.test\nSubject: malformed\nContent-Type: multipart/mixed; boundary=\"m\"\n\n\
preamble mentions --m in the middle\n--mnot a delimiter\n\
--m\nContent-Type: text/plain\n\none\n\
--m\nContent-Type: multipart/mixed; boundary=\"n\"\n\n--n\nContent-Type: text/plain\n\ninner no close\n\
--m\nContent-Type: text/plain\n\nlast without close\n",
    )
}

/// The exact bytes of `BODY.PEEK[spec]` of message 1.
async fn section(c: &mut Client, spec: &str) -> String {
    let r = c.ok(&format!("FETCH 1 (BODY.PEEK[{spec}])")).await;
    let line = r.find(" FETCH (");
    let marker = format!("BODY[{spec}] {{");
    let at = line.find(&marker).unwrap_or_else(|| panic!("no {marker} in {line:?}")) + marker.len();
    let close = line[at..].find('}').expect("literal length") + at;
    let len: usize = line[at..close].parse().expect("literal length");
    let data = &line[close + 3..];
    assert!(data.len() > len, "{line:?}");
    assert_eq!(&data[len..], ")", "{line:?}");
    data[..len].to_string()
}

async fn bodystructure(c: &mut Client) -> String {
    let r = c.ok("FETCH 1 (BODYSTRUCTURE)").await;
    let line = r.find("BODYSTRUCTURE");
    let start = line.find("BODYSTRUCTURE ").unwrap() + "BODYSTRUCTURE ".len();
    line[start..line.len() - 1].to_string()
}

fn assert_same(ours: &str, dovecot: &str) {
    assert!(
        ours.eq_ignore_ascii_case(dovecot),
        "\n ours:    {ours}\n dovecot: {dovecot}"
    );
}

/// A server with `raw` as the only message of the selected INBOX.
async fn with_message(raw: &[u8]) -> (Server, Client) {
    let server = Server::start().await;
    let mut c = server.login().await;
    let r = c.append("INBOX", "()", raw).await;
    assert!(r.tagged.contains(" OK"), "{r:#?}");
    c.ok("SELECT INBOX").await;
    (server, c)
}

/// RFC 2046 §5.1.5: in a digest a part without Content-Type is message/rfc822; RFC 3501
/// §7.4.2: a message/rfc822 part has envelope, body structure and line count, and its size is
/// the size of the enclosed message.
#[tokio::test]
async fn digest_parts_are_messages() {
    let (_server, mut c) = with_message(&digest()).await;
    assert_same(
        &bodystructure(&mut c).await,
        "(((\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 59 (NIL \"first inner\" ((NIL NIL \"inner1\" \"x.test\")) \
((NIL NIL \"inner1\" \"x.test\")) ((NIL NIL \"inner1\" \"x.test\")) NIL NIL NIL NIL NIL) \
(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 14 0 NIL NIL NIL NIL) 3 NIL NIL NIL NIL)\
(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 205 (NIL \"second inner\" ((NIL NIL \"inner2\" \"x.test\")) \
((NIL NIL \"inner2\" \"x.test\")) ((NIL NIL \"inner2\" \"x.test\")) NIL NIL NIL NIL NIL) \
((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 9 0 NIL NIL NIL NIL)\
(\"text\" \"html\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 15 0 NIL NIL NIL NIL) \"alternative\" (\"boundary\" \"alt\") NIL NIL NIL) \
13 NIL NIL NIL NIL) \"digest\" (\"boundary\" \"dig\") NIL NIL NIL)\
(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 4 0 NIL NIL NIL NIL) \"mixed\" (\"boundary\" \"outer\") NIL NIL NIL)",
    );
    let inner1 = "From: inner1@x.test\r\nSubject: first inner\r\n\r\ninner body one";
    assert_eq!(section(&mut c, "1.1").await, inner1);
    // The part's own (empty) MIME header is the blank line.
    assert_eq!(section(&mut c, "1.1.MIME").await, "\r\n");
    assert_eq!(
        section(&mut c, "1.1.HEADER").await,
        "From: inner1@x.test\r\nSubject: first inner\r\n\r\n"
    );
    assert_eq!(section(&mut c, "1.1.TEXT").await, "inner body one");
    assert_eq!(section(&mut c, "1.1.1").await, "inner body one");
    assert_eq!(
        section(&mut c, "1.1.HEADER.FIELDS (Subject)").await,
        "Subject: first inner\r\n\r\n"
    );
    assert_eq!(section(&mut c, "1.2.1").await, "plain two");
    assert_eq!(section(&mut c, "1.2.2").await, "<p>html two</p>");
    assert_eq!(section(&mut c, "1.2.2.MIME").await, "Content-Type: text/html\r\n\r\n");
    assert_eq!(
        section(&mut c, "1.2.HEADER.FIELDS (Subject)").await,
        "Subject: second inner\r\n\r\n"
    );
    assert_eq!(
        section(&mut c, "1.2").await,
        "From: inner2@x.test\r\nSubject: second inner\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n\
--alt\r\nContent-Type: text/plain\r\n\r\nplain two\r\n--alt\r\nContent-Type: text/html\r\n\r\n<p>html two</p>\r\n--alt--\r\n"
    );
    assert_eq!(
        section(&mut c, "1.MIME").await,
        "Content-Type: multipart/digest; boundary=\"dig\"\r\n\r\n"
    );
    assert_eq!(section(&mut c, "2").await, "tail");
    // The size BODYSTRUCTURE gives is the size BODY[1.2] has.
    assert_eq!(section(&mut c, "1.2").await.len(), 205);
}

/// A body part whose header is empty: text/plain by default (RFC 2045 §5.2), its body starts
/// after the blank line, even when it looks like a header.
#[tokio::test]
async fn a_part_with_an_empty_header() {
    let (_server, mut c) = with_message(&empty_header()).await;
    assert_same(
        &bodystructure(&mut c).await,
        "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 41 2 NIL NIL NIL NIL)\
(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 26 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) \
(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 24 0 NIL NIL NIL NIL) 1 NIL NIL NIL NIL) \
\"mixed\" (\"boundary\" \"b\") NIL NIL NIL)",
    );
    assert_eq!(
        section(&mut c, "1").await,
        "Content-Type: text/html\r\n\r\nno header here"
    );
    assert_eq!(section(&mut c, "1.MIME").await, "\r\n");
    // HEADER and TEXT name a message: a text part has neither.
    assert_eq!(section(&mut c, "1.HEADER").await, "");
    assert_eq!(section(&mut c, "1.TEXT").await, "");
    assert_eq!(section(&mut c, "2").await, "\r\nenclosed body: no header");
    assert_eq!(section(&mut c, "2.MIME").await, "Content-Type: message/rfc822\r\n\r\n");
    assert_eq!(section(&mut c, "2.HEADER").await, "\r\n");
    assert_eq!(section(&mut c, "2.TEXT").await, "enclosed body: no header");
    assert_eq!(section(&mut c, "2.1").await, "enclosed body: no header");
    assert_eq!(section(&mut c, "3").await, "");
    let r = c.ok("SEARCH BODY \"enclosed body\"").await;
    assert_eq!(r.find("* SEARCH").trim_end(), "* SEARCH 1");
}

/// Multiparts inside a message inside a multipart, numbered per RFC 3501 §6.4.5.
#[tokio::test]
async fn nested_multiparts_inside_a_message() {
    let (_server, mut c) = with_message(&nested()).await;
    assert_same(
        &bodystructure(&mut c).await,
        "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 5 0 NIL NIL NIL NIL)\
(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 314 (NIL \"fwd\" ((NIL NIL \"b\" \"x.test\")) ((NIL NIL \"b\" \"x.test\")) \
((NIL NIL \"b\" \"x.test\")) NIL NIL NIL NIL NIL) \
(((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 10 0 NIL NIL NIL NIL)\
(\"text\" \"html\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 11 0 NIL NIL NIL NIL) \"alternative\" (\"boundary\" \"a\") NIL NIL NIL)\
(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 36 (NIL \"innermost\" NIL NIL NIL NIL NIL NIL NIL NIL) \
(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 14 0 NIL NIL NIL NIL) 2 NIL NIL NIL NIL) \
\"mixed\" (\"boundary\" \"i\") NIL NIL NIL) 23 NIL NIL NIL NIL) \"mixed\" (\"boundary\" \"o\") NIL NIL NIL)",
    );
    assert_eq!(section(&mut c, "1").await, "intro");
    // A non-multipart part's only part is 1 (as Dovecot answers).
    assert_eq!(section(&mut c, "1.1").await, "intro");
    assert_eq!(
        section(&mut c, "2.HEADER").await,
        "From: b@x.test\r\nSubject: fwd\r\nContent-Type: multipart/mixed; boundary=\"i\"\r\n\r\n"
    );
    let text = section(&mut c, "2.TEXT").await;
    assert!(text.starts_with("--i\r\nContent-Type: multipart/alternative") && text.ends_with("--i--\r\n"));
    assert_eq!(text.len(), 237);
    assert_eq!(section(&mut c, "2").await.len(), 314);
    assert_eq!(
        section(&mut c, "2.1").await,
        "--a\r\nContent-Type: text/plain\r\n\r\ndeep plain\r\n--a\r\nContent-Type: text/html\r\n\r\n<b>deep</b>\r\n--a--\r\n"
    );
    assert_eq!(
        section(&mut c, "2.1.MIME").await,
        "Content-Type: multipart/alternative; boundary=\"a\"\r\n\r\n"
    );
    assert_eq!(section(&mut c, "2.1.1").await, "deep plain");
    assert_eq!(section(&mut c, "2.1.2").await, "<b>deep</b>");
    assert_eq!(section(&mut c, "2.2").await, "Subject: innermost\r\n\r\ninnermost body");
    assert_eq!(section(&mut c, "2.2.TEXT").await, "innermost body");
    assert_eq!(section(&mut c, "2.2.1").await, "innermost body");
    assert_eq!(section(&mut c, "2.2.HEADER").await, "Subject: innermost\r\n\r\n");
    assert_eq!(section(&mut c, "2.3").await, "");
    assert_eq!(section(&mut c, "3").await, "");
}

/// A message whose body is a message: its only part 1 is the enclosed message, [1.TEXT] and
/// [1.HEADER] are the enclosed message's, [1.1] is its body.
#[tokio::test]
async fn a_message_that_is_a_message() {
    let (_server, mut c) = with_message(&single_message()).await;
    assert_same(
        &bodystructure(&mut c).await,
        "(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 50 (NIL \"wrapped\" ((NIL NIL \"c\" \"x.test\")) \
((NIL NIL \"c\" \"x.test\")) ((NIL NIL \"c\" \"x.test\")) NIL NIL NIL NIL NIL) \
(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 14 1 NIL NIL NIL NIL) 4 NIL NIL NIL NIL)",
    );
    let wrapped = "From: c@x.test\r\nSubject: wrapped\r\n\r\nwrapped body\r\n";
    assert_eq!(section(&mut c, "1").await, wrapped);
    assert_eq!(section(&mut c, "TEXT").await, wrapped);
    assert_eq!(
        section(&mut c, "1.MIME").await,
        "From: a@x.test\r\nSubject: single\r\nContent-Type: message/rfc822\r\n\r\n"
    );
    assert_eq!(
        section(&mut c, "1.HEADER").await,
        "From: c@x.test\r\nSubject: wrapped\r\n\r\n"
    );
    assert_eq!(section(&mut c, "1.TEXT").await, "wrapped body\r\n");
    assert_eq!(section(&mut c, "1.1").await, "wrapped body\r\n");
    assert_eq!(section(&mut c, "2").await, "");
}

/// RFC 2046 §5.1.1: a delimiter line is `--boundary`, optional blanks and the line end, at the
/// start of a line; a missing close delimiter ends a part at the enclosing delimiter or at the
/// end. Dovecot 2.3 takes any line that starts with `--m` as a delimiter (it answers an empty
/// first part for `--mnot a delimiter`); tinydc follows the RFC's grammar, so the preamble
/// holds both lines and the rest matches Dovecot's parts 2 to 4.
#[tokio::test]
async fn malformed_multiparts() {
    let (_server, mut c) = with_message(&malformed()).await;
    assert_same(
        &bodystructure(&mut c).await,
        "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 3 0 NIL NIL NIL NIL)\
((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 14 0 NIL NIL NIL NIL) \"mixed\" (\"boundary\" \"n\") NIL NIL NIL)\
(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 20 1 NIL NIL NIL NIL) \"mixed\" (\"boundary\" \"m\") NIL NIL NIL)",
    );
    assert_eq!(section(&mut c, "1").await, "one");
    assert_eq!(
        section(&mut c, "2").await,
        "--n\r\nContent-Type: text/plain\r\n\r\ninner no close"
    );
    assert_eq!(section(&mut c, "2.1").await, "inner no close");
    assert_eq!(section(&mut c, "2.1.MIME").await, "Content-Type: text/plain\r\n\r\n");
    assert_eq!(section(&mut c, "3").await, "last without close\r\n");
}

/// A multipart without a boundary parameter, or whose boundary never appears, has no parts; its
/// BODYSTRUCTURE shows one empty text part (the grammar needs one) and BODY[1] is empty, as
/// Dovecot answers. A message/rfc822 part with a transfer encoding (RFC 2046 §5.2.1 forbids it)
/// encloses an empty message, as in Dovecot; Dovecot reads the base64 line as the enclosed
/// message's header and so counts the line break before `--q--` into the part (22 octets, 1
/// line), where RFC 2046 §5.1.1 gives it to the delimiter (20 octets, 0 lines).
#[tokio::test]
async fn multiparts_without_parts_and_encoded_messages() {
    let server = Server::start().await;
    let mut c = server.login().await;
    let no_boundary = crlf("Subject: nb\nContent-Type: multipart/mixed\n\n--x\nContent-Type: text/plain\n\na\n--x--\n");
    let no_delimiter = crlf("Subject: nd\nContent-Type: multipart/mixed; boundary=\"zz\"\n\njust text\n");
    let encoded = crlf(
        "Subject: b64\nContent-Type: multipart/mixed; boundary=\"q\"\n\n--q\nContent-Type: message/rfc822\n\
Content-Transfer-Encoding: base64\n\nU3ViamVjdDogeAoKeQo=\n--q--\n",
    );
    for raw in [&no_boundary, &no_delimiter, &encoded] {
        c.append("INBOX", "()", raw).await;
    }
    c.ok("SELECT INBOX").await;
    let r = c.ok("FETCH 1:3 (BODYSTRUCTURE BODY.PEEK[1] BODY.PEEK[1.1])").await;
    assert_same(
        r.find("* 1 FETCH"),
        "* 1 FETCH (BODYSTRUCTURE ((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL) \
\"mixed\" NIL NIL NIL NIL) BODY[1] {0}\r\n BODY[1.1] {0}\r\n)",
    );
    assert_same(
        r.find("* 2 FETCH"),
        "* 2 FETCH (BODYSTRUCTURE ((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL) \
\"mixed\" (\"boundary\" \"zz\") NIL NIL NIL) BODY[1] {0}\r\n BODY[1.1] {0}\r\n)",
    );
    assert_same(
        r.find("* 3 FETCH"),
        "* 3 FETCH (BODYSTRUCTURE ((\"message\" \"rfc822\" NIL NIL NIL \"base64\" 20 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) \
(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL) 0 NIL NIL NIL NIL) \
\"mixed\" (\"boundary\" \"q\") NIL NIL NIL) BODY[1] {20}\r\nU3ViamVjdDogeAoKeQo= BODY[1.1] {0}\r\n)",
    );
}

/// SEARCH BODY and TEXT read the same parts FETCH numbers: text inside a digest's messages, a
/// nested message's alternative, a part with an empty header and a base64 part are found;
/// a non-text part and the header of a part are not body text (Dovecot 2.3 answers the same
/// for each key).
#[tokio::test]
async fn search_reads_the_same_parts() {
    let server = Server::start().await;
    let mut c = server.login().await;
    let base64 = crlf(
        "Subject: encoded\nContent-Type: multipart/mixed; boundary=\"e\"\n\n--e\nContent-Type: text/plain\n\
Content-Transfer-Encoding: base64\n\nc2VjcmV0IHdvcmQ=\n--e\nContent-Type: application/octet-stream\n\nbinary needle\n--e--\n",
    );
    for raw in [digest(), empty_header(), nested(), base64] {
        c.append("INBOX", "()", &raw).await;
    }
    c.ok("SELECT INBOX").await;
    for (key, hits) in [
        ("BODY \"inner body one\"", "* SEARCH 1"),
        ("BODY \"html two\"", "* SEARCH 1"),
        ("BODY \"no header here\"", "* SEARCH 2"),
        // Body text of the part with an empty header, not its header.
        ("BODY \"text/html\"", "* SEARCH 2"),
        ("BODY \"enclosed body\"", "* SEARCH 2"),
        ("BODY \"deep plain\"", "* SEARCH 3"),
        ("BODY \"innermost body\"", "* SEARCH 3"),
        ("BODY \"secret word\"", "* SEARCH 4"),
        ("TEXT \"secret word\"", "* SEARCH 4"),
        ("BODY \"binary needle\"", "* SEARCH"),
        ("BODY \"multipart/alternative\"", "* SEARCH"),
        ("BODY \"second inner\"", "* SEARCH"),
    ] {
        let r = c.ok(&format!("SEARCH {key}")).await;
        let line = r.find("* SEARCH");
        assert_eq!(line.trim_end(), hits, "SEARCH {key}");
    }
}

/// Deep nesting and many parts stay bounded: 10,000 parts, 5,000 nested multiparts and 5,000
/// nested messages are answered in seconds, the structure is cut at the model's depth, and a
/// section past the cut is empty.
#[tokio::test]
async fn deep_and_wide_messages_stay_bounded() {
    let server = Server::start().await;
    let mut c = server.login().await;
    let mut wide = String::from("Subject: wide\r\nContent-Type: multipart/mixed; boundary=\"w\"\r\n\r\n");
    for i in 0..10_000 {
        wide.push_str(&format!("--w\r\n\r\np{i}\r\n"));
    }
    wide.push_str("--w--\r\n");
    let mut deep = String::from("Subject: deep\r\nContent-Type: multipart/mixed; boundary=\"d0\"\r\n\r\n");
    for i in 0..5_000 {
        deep.push_str(&format!(
            "--d{i}\r\nContent-Type: multipart/mixed; boundary=\"d{}\"\r\n\r\n",
            i + 1
        ));
    }
    deep.push_str("--d5000\r\n\r\nbottom\r\n");
    let mut messages = String::from("Subject: messages\r\n");
    for _ in 0..5_000 {
        messages.push_str("Content-Type: message/rfc822\r\n\r\n");
    }
    messages.push_str("Subject: bottom\r\n\r\nbottom\r\n");
    for raw in [&wide, &deep, &messages] {
        let r = c.append("INBOX", "()", raw.as_bytes()).await;
        assert!(r.tagged.contains(" OK"), "{r:#?}");
    }
    c.ok("SELECT INBOX").await;
    let started = Instant::now();
    let r = c
        .ok("FETCH 1 (BODYSTRUCTURE BODY.PEEK[10000] BODY.PEEK[9999.MIME])")
        .await;
    let line = r.find("* 1 FETCH");
    assert_eq!(line.matches("(\"TEXT\" \"PLAIN\"").count(), 10_000);
    assert!(
        line.contains("BODY[10000] {5}\r\np9999 "),
        "{}",
        &line[line.len() - 200..]
    );
    assert!(line.contains("BODY[9999.MIME] {2}\r\n\r\n)"));
    let r = c
        .ok("FETCH 2:3 (BODYSTRUCTURE BODY.PEEK[1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1])")
        .await;
    for seq in ["* 2 FETCH", "* 3 FETCH"] {
        let line = r.find(seq);
        let depth = line.matches('(').count();
        assert!((20..200).contains(&depth), "{seq}: {depth} levels");
        assert!(line.ends_with(" {0}\r\n)"), "{line}");
    }
    let r = c.ok("SEARCH BODY bottom").await;
    assert_eq!(r.find("* SEARCH").trim_end(), "* SEARCH");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

/// Structures stored before the MIME model (no `model` key in the JSON) still read: a single
/// part as stored, one with parts recomputed from the body, so BODYSTRUCTURE and BODY[section]
/// agree for messages already in the mailbox.
#[tokio::test]
async fn structures_stored_before_the_model() {
    let server = Server::start().await;
    let mut c = server.login().await;
    c.append("INBOX", "()", &digest()).await;
    c.append("INBOX", "()", &message("plain", "hello")).await;
    // What mail-parser's walk stored for the digest: no parts at all; and an old single part.
    let old_digest = r#"{"kind":"multipart","parts":[],"media_subtype":"mixed","params":[],
        "disposition":null,"language":[],"location":null}"#;
    let old_single = r#"{"kind":"single","media_type":"text","media_subtype":"plain","params":[],"id":null,
        "description":null,"encoding":"7BIT","size":77,"lines":7,"md5":null,"disposition":null,
        "language":[],"location":null,"message":null}"#;
    for (uid, json) in [(1i64, old_digest), (2, old_single)] {
        let done = sqlx::query("UPDATE messages SET body_structure = $1::text::jsonb WHERE uid = $2")
            .bind(json)
            .bind(uid)
            .execute(&server.ctx.db)
            .await
            .unwrap();
        assert_eq!(done.rows_affected(), 1);
    }
    c.ok("SELECT INBOX").await;
    let r = c.ok("FETCH 1:2 (BODY)").await;
    assert!(
        r.find("* 1 FETCH")
            .contains("\"DIGEST\")(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 4 0) \"MIXED\")"),
        "{r:#?}"
    );
    assert!(
        r.find("* 1 FETCH")
            .contains("(\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 59 "),
        "{r:#?}"
    );
    assert_eq!(
        r.find("* 2 FETCH"),
        "* 2 FETCH (BODY (\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 77 7))"
    );
    assert_eq!(section(&mut c, "1.1.TEXT").await, "inner body one");
}
