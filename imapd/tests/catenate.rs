//! CATENATE (RFC 4469): APPEND builds a message from text literals and IMAP URLs (RFC 5092) to
//! the user's own messages and sections, over a real socket: RFC 4469 §5's example adapted,
//! the absolute URL form, `NO [BADURL]` for another user's mailbox, a wrong UIDVALIDITY and
//! more (§6), `NO [TOOBIG]` past the message size limit, the quota, and CATENATE inside a
//! MULTIAPPEND (RFC 3502).

mod common;

use common::*;

fn crlf(s: &str) -> Vec<u8> {
    s.replace('\n', "\r\n").into_bytes()
}

/// The draft RFC 4469 §5 starts from: a text part and a base64 attachment.
fn draft() -> Vec<u8> {
    crlf(
        "From: alice@example.test\nSubject: draft\nContent-Type: multipart/mixed; boundary=\"XX\"\n\n\
--XX\nContent-Type: text/plain\n\nold text\n\
--XX\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\nAAEC\n--XX--\n",
    )
}

/// APPEND `raw` to `mailbox`; its UIDVALIDITY and UID from APPENDUID.
async fn append(c: &mut Client, mailbox: &str, raw: &[u8]) -> (u32, u32) {
    let r = c.append(mailbox, "()", raw).await;
    let code = r.tagged.split("[APPENDUID ").nth(1).unwrap_or_else(|| panic!("{r:#?}"));
    let mut words = code
        .trim_end_matches(|c: char| c != ']')
        .trim_end_matches(']')
        .split(' ');
    let uidvalidity = words.next().unwrap().parse().unwrap();
    let uid = words.next().unwrap().parse().unwrap();
    (uidvalidity, uid)
}

/// Send a command whose literals are synchronizing: `pieces` alternate between text that ends
/// in `{n}\r\n` and the n octets, each literal sent after the server's `+`.
async fn send_synchronizing(c: &mut Client, tag: &str, pieces: &[&[u8]]) -> Response {
    let mut pending = format!("{tag} ").into_bytes();
    for (i, piece) in pieces.iter().enumerate() {
        pending.extend_from_slice(piece);
        if i % 2 == 0 && i + 1 < pieces.len() {
            c.write(&pending).await;
            pending.clear();
            let cont = c.raw_line().await;
            assert!(cont.starts_with('+'), "{cont}");
        }
    }
    pending.extend_from_slice(b"\r\n");
    c.write(&pending).await;
    c.until(tag).await
}

/// The exact bytes of `BODY.PEEK[]` of the message with `uid` in the selected mailbox.
async fn body(c: &mut Client, uid: u32) -> Vec<u8> {
    let tag = c.next_tag();
    c.write(format!("{tag} UID FETCH {uid} (BODY.PEEK[])\r\n").as_bytes())
        .await;
    let head = c.raw_line().await;
    let open = head.rfind('{').expect("a literal");
    let len: usize = head[open + 1..head.len() - 1].parse().unwrap();
    let data = c.bytes(len).await;
    let r = c.until(&tag).await;
    assert!(r.tagged.contains(" OK"), "{r:#?}");
    data
}

async fn messages_in(c: &mut Client, mailbox: &str) -> String {
    let r = c.ok(&format!("STATUS {mailbox} (MESSAGES)")).await;
    r.find("MESSAGES").to_string()
}

#[tokio::test]
async fn advertised() {
    let server = Server::start().await;
    let mut c = server.login().await;
    let r = c.ok("CAPABILITY").await;
    assert!(r.find("* CAPABILITY").split(' ').any(|w| w == "CATENATE"), "{r:#?}");
}

/// RFC 4469 §5's example, adapted: a new draft from the old one's header, a new text part, and
/// the old attachment (its MIME header and body by URL), with synchronizing literals.
#[tokio::test]
async fn rfc4469_example() {
    let server = Server::start().await;
    let mut c = server.login().await;
    // Drafts is one of a new account's mailboxes.
    let (v, uid) = append(&mut c, "Drafts", &draft()).await;
    let text1 = b"\r\n--XX\r\nContent-Type: text/plain\r\n\r\nnew text\r\n--XX\r\n";
    let text2 = b"\r\n--XX--\r\n";
    let url = format!("/Drafts;UIDVALIDITY={v}/;UID={uid}");
    let tag = c.next_tag();
    let first = format!(
        "APPEND Drafts (\\Seen \\Draft $MDNSent) CATENATE (URL \"{url}/;section=HEADER\" TEXT {{{}}}\r\n",
        text1.len()
    );
    let second = format!(
        " URL \"{url}/;section=2.MIME\" URL \"{url}/;section=2\" TEXT {{{}}}\r\n",
        text2.len()
    );
    let r = send_synchronizing(&mut c, &tag, &[first.as_bytes(), text1, second.as_bytes(), text2, b")"]).await;
    assert!(r.tagged.contains(" OK [APPENDUID "), "{r:#?}");
    let mut expected =
        crlf("From: alice@example.test\nSubject: draft\nContent-Type: multipart/mixed; boundary=\"XX\"\n\n");
    expected.extend_from_slice(text1);
    expected
        .extend_from_slice(b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC");
    expected.extend_from_slice(text2);
    c.ok("SELECT Drafts").await;
    assert_eq!(body(&mut c, uid + 1).await, expected);
    let r = c.ok(&format!("UID FETCH {} (FLAGS BODY.PEEK[1])", uid + 1)).await;
    assert!(r.has("$MDNSent") && r.has("\\Draft") && r.has("new text"), "{r:#?}");
}

/// RFC 5092's absolute form naming this user (percent-encoded), with PARTIAL; and CATENATE as
/// one message of a MULTIAPPEND next to a plain literal.
#[tokio::test]
async fn absolute_url_and_multiappend() {
    let server = Server::start().await;
    let mut c = server.login().await;
    let original = message("source", "the source body");
    let (v, uid) = append(&mut c, "INBOX", &original).await;
    let url = format!("imap://alice%40example.test@mail.example.test/INBOX;UIDVALIDITY={v}/;UID={uid}");
    let plain = message("plain", "second");
    let tag = c.next_tag();
    let mut cmd = format!(
        "{tag} APPEND INBOX CATENATE (URL \"{url}\" TEXT {{7+}}\r\nappend. URL \"{url}/;PARTIAL=0.4\") {{{}+}}\r\n",
        plain.len()
    )
    .into_bytes();
    cmd.extend_from_slice(&plain);
    cmd.extend_from_slice(b"\r\n");
    c.write(&cmd).await;
    let r = c.until(&tag).await;
    assert!(r.tagged.contains(&format!(" OK [APPENDUID {v} 2:3]")), "{r:#?}");
    c.ok("SELECT INBOX").await;
    let mut expected = original.clone();
    expected.extend_from_slice(b"append.");
    expected.extend_from_slice(&original[..4]);
    assert_eq!(body(&mut c, 2).await, expected);
    assert_eq!(body(&mut c, 3).await, plain);
}

/// RFC 4469 §6: NO [BADURL url] for a URL to another user's mailbox, a wrong UIDVALIDITY, a
/// missing message, mailbox or section, URLAUTH, and a URL that is not one; nothing is stored,
/// not even the other messages of the command.
#[tokio::test]
async fn bad_urls() {
    let server = Server::start().await;
    server.env.add_user("bob@example.test", "bob password", None).await;
    let mut bob = server.connect().await;
    bob.ok("LOGIN bob@example.test \"bob password\"").await;
    let (bob_v, bob_uid) = append(&mut bob, "INBOX", &message("bob's", "private")).await;
    let mut c = server.login().await;
    let (v, uid) = append(&mut c, "INBOX", &message("mine", "mine")).await;
    for url in [
        format!("imap://bob%40example.test@localhost/INBOX;UIDVALIDITY={bob_v}/;UID={bob_uid}"),
        format!("/INBOX;UIDVALIDITY={}/;UID={uid}", v.wrapping_add(1)),
        format!("/INBOX;UIDVALIDITY={v}/;UID={}", uid + 10),
        format!("/Nowhere/;UID={uid}"),
        format!("/INBOX/;UID={uid}/;SECTION=7"),
        format!("/INBOX/;UID={uid}/;SECTION=BOGUS"),
        format!("/INBOX/;UID={uid};URLAUTH=anonymous:internal:abc"),
        "imap://localhost/INBOX/;UID=1".to_string(),
        "INBOX".to_string(),
    ] {
        let tag = c.next_tag();
        let cmd = format!("{tag} APPEND INBOX {{3+}}\r\nabc CATENATE (TEXT {{2+}}\r\nhi URL \"{url}\")\r\n");
        c.write(cmd.as_bytes()).await;
        let r = c.until(&tag).await;
        assert!(r.tagged.contains(&format!("NO [BADURL {url}]")), "{url}: {r:#?}");
    }
    assert!(messages_in(&mut c, "INBOX").await.contains("MESSAGES 1"));
    // Bob's message is untouched and his mailbox holds only it.
    assert!(messages_in(&mut bob, "INBOX").await.contains("MESSAGES 1"));
}

/// RFC 4469 §5: a result over the message size limit is NO [TOOBIG]; the quota holds for the
/// whole message (RFC 9208 §4.1 OVERQUOTA).
#[tokio::test]
async fn too_big_and_over_quota() {
    let server = Server::start_with(|config| config.imap.max_literal_size = 10_000, Some(14_000)).await;
    let mut c = server.login().await;
    let (_, uid) = append(&mut c, "INBOX", &message("big", &"x".repeat(6_000))).await;
    let url = format!("/INBOX/;UID={uid}");
    let r = c
        .no(&format!("APPEND INBOX CATENATE (URL \"{url}\" URL \"{url}\")"))
        .await;
    assert!(r.tagged.contains("NO [TOOBIG]"), "{r:#?}");
    // One copy (about 6 KB) fits the limit but not the quota left (14 KB less the first 6 KB
    // is 8 KB: the second copy fits, a third does not).
    c.ok(&format!("APPEND INBOX CATENATE (URL \"{url}\")")).await;
    let r = c.no(&format!("APPEND INBOX CATENATE (URL \"{url}\")")).await;
    assert!(r.tagged.contains("NO [OVERQUOTA]"), "{r:#?}");
    c.ok("SELECT INBOX").await;
    let r = c.ok("FETCH 1:* (RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])").await;
    // (The third message may be the quota warning of shared::quota::warn.)
    assert_eq!(
        r.lines.iter().filter(|l| l.contains("Subject: big")).count(),
        2,
        "{r:#?}"
    );
}

/// Python's imaplib sends a CATENATE APPEND (URL parts) through its generic command path.
#[tokio::test]
async fn imaplib_catenate() {
    let server = Server::start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/catenate.py");
    let out = server.imaplib(&[script], &[], std::time::Duration::from_secs(20)).await;
    let text = printed(&out);
    assert!(out.status.success() && text.contains("catenate ok"), "{text}");
}
