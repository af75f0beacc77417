//! End to end: a message sent over SMTP is read over IMAP (tinydc-imapd in-process, python3's
//! imaplib as the client).

mod common;

use common::{Client, have, message, start};
use tokio::process::Command;

const IMAPLIB: &str = r#"
import imaplib, sys
port = int(sys.argv[1])
m = imaplib.IMAP4("127.0.0.1", port)
m.login("alice@example.test", "pw-alice")
typ, data = m.select("INBOX")
assert typ == "OK" and data[0] == b"1", data
typ, data = m.fetch("1", "(RFC822)")
raw = data[0][1]
assert b"Subject: over imap" in raw, raw
assert raw.startswith(b"Return-Path: <bob@example.org>"), raw[:80]
print("ok")
m.logout()
"#;

#[tokio::test]
async fn smtp_delivery_is_visible_over_imap() {
    if !have("python3") {
        return;
    }
    let h = start().await;
    h.add_user("alice@example.test", "pw-alice", None).await;
    let listeners = tinydc_imapd::bind(&h.ctx).await.unwrap();
    let imap_port = listeners.plain_addr().expect("imap listener").port();
    tokio::spawn(tinydc_imapd::serve(h.ctx.clone(), listeners, h.shutdown.clone()));

    let mut c = Client::connect(h.mx()).await;
    c.expect("EHLO x.org", 250).await;
    c.expect("MAIL FROM:<bob@example.org>", 250).await;
    c.expect("RCPT TO:<alice@example.test>", 250).await;
    assert_eq!(
        c.data(&message("bob@example.org", "alice@example.test", "over imap"))
            .await
            .code,
        250
    );

    let out = Command::new("python3")
        .args(["-c", IMAPLIB, &imap_port.to_string()])
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.contains("ok"), "{text}");
}
