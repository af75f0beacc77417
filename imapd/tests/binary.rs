//! BINARY (RFC 3516, RFC 9051 §6.4.5) over a real socket: FETCH BINARY[section]<partial>,
//! BINARY.PEEK and BINARY.SIZE give a part's content with its Content-Transfer-Encoding removed,
//! as a literal8 when it holds NUL (§4.2); an encoding that cannot be decoded gets
//! `NO [UNKNOWN-CTE]` (§4.3); APPEND takes a literal8 and stores it as is (§4.2). Also from
//! Python's imaplib.

mod common;

use std::time::Duration;

use common::*;

fn crlf(s: &str) -> Vec<u8> {
    s.replace('\n', "\r\n").into_bytes()
}

/// Part 1 quoted-printable text, part 2 base64 bytes with NUL (00 01 02 ff 00 41), part 3 an
/// unknown encoding, part 4 a message/rfc822 whose part 2 is base64 ("nested!").
fn message() -> Vec<u8> {
    crlf(
        "From: a@x.test\nSubject: binary\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b\"\n\n\
--b\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n\
caf=C3=A9 au lait, a long line that was =\nsoft broken\n\
--b\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\nAAEC\n/wBB\n\
--b\nContent-Type: application/x-thing\nContent-Transfer-Encoding: x-uuencode\n\nbegin 644 x\n\
--b\nContent-Type: message/rfc822\n\n\
From: c@x.test\nSubject: inner\nContent-Type: multipart/mixed; boundary=\"i\"\n\n\
--i\nContent-Type: text/plain\n\nplain inner\n\
--i\nContent-Type: text/plain\nContent-Transfer-Encoding: Base64\n\nbmVzdGVkIQ==\n\
--i--\n--b--\n",
    )
}

const PART2: &[u8] = &[0, 1, 2, 0xff, 0, b'A'];

/// A server with `message()` as message 1 of the selected INBOX.
async fn selected() -> (Server, Client) {
    let server = Server::start().await;
    let mut c = server.login().await;
    let r = c.append("INBOX", "()", &message()).await;
    assert!(r.tagged.contains(" OK"), "{r:#?}");
    c.ok("SELECT INBOX").await;
    (server, c)
}

/// `FETCH 1 (item)` read byte for byte: the response's first line up to its literal, the
/// literal's exact bytes, and the rest of the response up to the tagged OK.
async fn fetch_literal(c: &mut Client, item: &str) -> (String, Vec<u8>, String) {
    let tag = c.next_tag();
    c.write(format!("{tag} FETCH 1 ({item})\r\n").as_bytes()).await;
    let head = c.raw_line().await;
    assert!(head.starts_with("* 1 FETCH ("), "{head}");
    let open = head.rfind('{').expect("a literal");
    let len: usize = head[open + 1..head.len() - 1].parse().expect("literal length");
    let data = c.bytes(len).await;
    let rest = c.until(&tag).await;
    assert!(rest.tagged.contains(" OK"), "{rest:#?}");
    (head, data, rest.lines.join("\n"))
}

#[tokio::test]
async fn advertised() {
    let server = Server::start().await;
    let mut c = server.login().await;
    let r = c.ok("CAPABILITY").await;
    assert!(r.find("* CAPABILITY").split(' ').any(|w| w == "BINARY"), "{r:#?}");
}

/// RFC 3516 §4.2: the decoded content; with NUL in it the server sends a literal8.
#[tokio::test]
async fn base64_part_with_nul_is_a_literal8() {
    let (_server, mut c) = selected().await;
    let (head, data, _) = fetch_literal(&mut c, "BINARY.PEEK[2]").await;
    assert!(head.ends_with("BINARY[2] ~{6}"), "{head}");
    assert_eq!(data, PART2);
    let r = c.ok("FETCH 1 (BINARY.SIZE[2])").await;
    assert!(r.has("BINARY.SIZE[2] 6"), "{r:#?}");
    // PEEK left \Seen alone.
    let r = c.ok("FETCH 1 (FLAGS)").await;
    assert!(!r.has("\\Seen"), "{r:#?}");
}

/// Quoted-printable decoded (soft line break gone, =XX as bytes); no NUL: a plain literal.
/// BINARY without PEEK sets \Seen (RFC 3516 §4.1, like BODY).
#[tokio::test]
async fn quoted_printable_part_sets_seen() {
    let (_server, mut c) = selected().await;
    let expected = "café au lait, a long line that was soft broken".as_bytes();
    let (head, data, rest) = fetch_literal(&mut c, "BINARY[1]").await;
    assert!(head.ends_with(&format!("BINARY[1] {{{}}}", expected.len())), "{head}");
    assert_eq!(data, expected);
    assert!(rest.contains("\\Seen") || head.contains("\\Seen"), "{head} {rest}");
    let r = c.ok("FETCH 1 (BINARY.SIZE[1])").await;
    assert!(r.has(&format!("BINARY.SIZE[1] {}", expected.len())), "{r:#?}");
}

/// A part inside an enclosed message (4.2: message/rfc822 > multipart > base64), and the
/// enclosed message itself, which has no transfer encoding and is given as is.
#[tokio::test]
async fn nested_message_parts() {
    let (_server, mut c) = selected().await;
    let (head, data, _) = fetch_literal(&mut c, "BINARY.PEEK[4.2]").await;
    assert!(head.ends_with("BINARY[4.2] {7}"), "{head}");
    assert_eq!(data, b"nested!");
    let (_, data, _) = fetch_literal(&mut c, "BINARY.PEEK[4.1]").await;
    assert_eq!(data, b"plain inner");
    let (_, whole, _) = fetch_literal(&mut c, "BINARY.PEEK[4]").await;
    let (_, body, _) = fetch_literal(&mut c, "BODY.PEEK[4]").await;
    assert_eq!(whole, body);
    assert!(whole.starts_with(b"From: c@x.test\r\n"));
    // A part that does not exist: empty, as BODY[section] answers; its size 0.
    let r = c.ok("FETCH 1 (BINARY.PEEK[9] BINARY.SIZE[9])").await;
    assert!(r.has("BINARY[9] {0}") && r.has("BINARY.SIZE[9] 0"), "{r:#?}");
}

/// RFC 3516 §4.1: `<origin.length>` applies to the decoded content, and the response names the
/// origin (`BINARY[2]<3>`).
#[tokio::test]
async fn partial_of_the_decoded_content() {
    let (_server, mut c) = selected().await;
    let (head, data, _) = fetch_literal(&mut c, "BINARY.PEEK[2]<3.2>").await;
    assert!(head.ends_with("BINARY[2]<3> ~{2}"), "{head}");
    assert_eq!(data, [0xff, 0]);
    let (head, data, _) = fetch_literal(&mut c, "BINARY.PEEK[2]<5.100>").await;
    assert!(head.ends_with("BINARY[2]<5> {1}"), "{head}");
    assert_eq!(data, b"A");
    let r = c.ok("FETCH 1 (BINARY.PEEK[2]<50.10>)").await;
    assert!(r.has("BINARY[2]<50> {0}"), "{r:#?}");
    // The grammar: section-binary holds only part numbers, partial needs a length.
    c.bad("FETCH 1 (BINARY[1.TEXT])").await;
    c.bad("FETCH 1 (BINARY[1]<0.0>)").await;
    c.bad("FETCH 1 (BINARY.SIZE[1]<0.5>)").await;
}

/// RFC 3516 §4.3: an encoding the server cannot decode: `NO [UNKNOWN-CTE]`, and so is a
/// malformed base64 body.
#[tokio::test]
async fn unknown_cte() {
    let (server, mut c) = selected().await;
    let r = c.no("FETCH 1 (BINARY.PEEK[3])").await;
    assert!(r.tagged.contains("NO [UNKNOWN-CTE]"), "{r:#?}");
    let r = c.no("FETCH 1 (BINARY.SIZE[3])").await;
    assert!(r.tagged.contains("NO [UNKNOWN-CTE]"), "{r:#?}");
    // BODY[3] still gives the bytes as stored.
    let r = c.ok("FETCH 1 (BODY.PEEK[3])").await;
    assert!(r.has("begin 644 x"), "{r:#?}");
    server
        .deliver(&crlf(
            "Subject: broken\nContent-Transfer-Encoding: base64\n\nnot*base64\n",
        ))
        .await;
    c.ok("NOOP").await;
    let r = c.no("FETCH 2 (BINARY.PEEK[1])").await;
    assert!(r.tagged.contains("NO [UNKNOWN-CTE]"), "{r:#?}");
    let r = c.no("FETCH 2 (BINARY.SIZE[])").await;
    assert!(r.tagged.contains("NO [UNKNOWN-CTE]"), "{r:#?}");
    // The connection carries on, and the stored bytes are still there.
    let r = c.ok("FETCH 2 (BODY.PEEK[TEXT])").await;
    assert!(r.has("not*base64"), "{r:#?}");
}

/// RFC 3516 §4.2: APPEND takes a literal8 (`~{n}`, synchronizing and non-synchronizing) and
/// stores the bytes as they are, NUL included; BINARY[] gives them back.
#[tokio::test]
async fn append_literal8() {
    let server = Server::start().await;
    let mut c = server.login().await;
    let raw = b"Subject: nul\r\nContent-Type: application/octet-stream\r\n\r\na\0b\0c\r\n".to_vec();
    let tag = c.next_tag();
    c.write(format!("{tag} APPEND INBOX ~{{{}}}\r\n", raw.len()).as_bytes())
        .await;
    let cont = c.raw_line().await;
    assert!(cont.starts_with('+'), "{cont}");
    let mut rest = raw.clone();
    rest.extend_from_slice(b"\r\n");
    c.write(&rest).await;
    let r = c.until(&tag).await;
    assert!(r.tagged.contains(" OK [APPENDUID "), "{r:#?}");
    let tag = c.next_tag();
    let mut cmd = format!("{tag} APPEND INBOX (\\Seen) ~{{{}+}}\r\n", raw.len()).into_bytes();
    cmd.extend_from_slice(&raw);
    cmd.extend_from_slice(b"\r\n");
    c.write(&cmd).await;
    let r = c.until(&tag).await;
    assert!(r.tagged.contains(" OK [APPENDUID "), "{r:#?}");
    c.ok("SELECT INBOX").await;
    for seq in 1..=2 {
        let tag = c.next_tag();
        c.write(format!("{tag} FETCH {seq} (BINARY.PEEK[] RFC822.SIZE)\r\n").as_bytes())
            .await;
        let head = c.raw_line().await;
        assert!(head.ends_with(&format!("BINARY[] ~{{{}}}", raw.len())), "{head}");
        assert_eq!(c.bytes(raw.len()).await, raw);
        let r = c.until(&tag).await;
        assert!(r.tagged.contains(" OK"), "{r:#?}");
        let (_, body, _) = fetch_literal(&mut c, "BINARY.PEEK[1]").await;
        assert_eq!(body, b"a\0b\0c\r\n");
    }
}

/// Python's imaplib reads the literal8 answer and BINARY.SIZE, and gets the NO [UNKNOWN-CTE].
#[tokio::test]
async fn imaplib_binary() {
    let server = Server::start().await;
    let mut c = server.login().await;
    let r = c.append("INBOX", "()", &message()).await;
    assert!(r.tagged.contains(" OK"), "{r:#?}");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/binary.py");
    let hex: String = PART2.iter().map(|b| format!("{b:02x}")).collect();
    let out = server.imaplib(&[script], &[&hex], Duration::from_secs(20)).await;
    let text = printed(&out);
    assert!(out.status.success() && text.contains("binary ok"), "{text}");
}
