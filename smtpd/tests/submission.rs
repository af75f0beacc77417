//! Submission (587 STARTTLS, 465 implicit TLS): AUTH required, sender ownership, local delivery,
//! rate limits.

mod common;

use common::{Client, message, start, start_with};
use tinydc_smtpd::dns::Dns;

#[tokio::test]
async fn auth_required_and_sender_rules() {
    let h = start().await;
    let alice = h.add_user("alice@example.test", "secret-a", None).await;
    let bob = h.add_user("bob@example.test", "secret-b", None).await;
    shared::accounts::add_alias(&h.ctx.db, "ally@example.test", &["alice@example.test".into()])
        .await
        .unwrap();
    let mut c = Client::connect(h.submission()).await;
    let ehlo = c.expect("EHLO laptop", 250).await;
    // Loopback with allow_plaintext_on_loopback (the test config): AUTH offered before TLS.
    assert!(ehlo.text().contains("AUTH PLAIN LOGIN"), "{ehlo:?}");
    let a = c.expect("MAIL FROM:<alice@example.test>", 530).await;
    assert!(a.text().starts_with("5.7.0"));
    assert_eq!(c.auth_plain("alice@example.test", "wrong").await.code, 535);
    assert_eq!(c.auth_plain("alice@example.test", "secret-a").await.code, 235);
    c.expect("AUTH PLAIN AGFAYg==", 503).await;
    // Someone else's address: 553 5.7.1.
    let a = c.expect("MAIL FROM:<bob@example.test>", 553).await;
    assert!(a.text().starts_with("5.7.1"), "{a:?}");
    // Her alias is hers.
    c.expect("MAIL FROM:<ally@example.test>", 250).await;
    c.expect("RCPT TO:<bob@example.test>", 250).await;
    // But the From header must be hers too.
    let a = c.data(&message("bob@example.test", "bob@example.test", "forged")).await;
    assert_eq!(a.code, 553, "{a:?}");
    c.expect("MAIL FROM:<alice@example.test>", 250).await;
    c.expect("RCPT TO:<bob@example.test>", 250).await;
    let a = c.data(&message("ally@example.test", "bob@example.test", "fine")).await;
    assert_eq!(a.code, 250, "{a:?}");
    let inbox = h.inbox(bob).await;
    assert_eq!(inbox.len(), 1, "local recipients get the message at once");
    assert!(inbox[0].contains("with ESMTPA id"), "{}", inbox[0]);
    assert!(h.inbox(alice).await.is_empty());
}

#[tokio::test]
async fn auth_login_mechanism() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let h = start().await;
    h.add_user("alice@example.test", "secret-a", None).await;
    let mut c = Client::connect(h.submission()).await;
    c.expect("EHLO laptop", 250).await;
    let a = c.expect("AUTH LOGIN", 334).await;
    assert_eq!(a.text(), "VXNlcm5hbWU6");
    c.expect(&b64("alice@example.test"), 334).await;
    c.expect(&b64("secret-a"), 235).await;
    let mut c = Client::connect(h.submission()).await;
    c.expect("EHLO laptop", 250).await;
    c.expect("AUTH PLAIN", 334).await;
    c.expect("*", 501).await;
    c.expect("AUTH CRAM-MD5", 504).await;
}

#[tokio::test]
async fn tls_required_for_passwords_off_loopback_rule() {
    let h = start_with(|c| c.auth.allow_plaintext_on_loopback = false, Dns::fixed()).await;
    h.add_user("alice@example.test", "secret-a", None).await;
    let bob = h.add_user("bob@example.test", "secret-b", None).await;
    let mut c = Client::connect(h.submission()).await;
    let ehlo = c.expect("EHLO laptop", 250).await;
    assert!(!ehlo.text().contains("AUTH"), "{ehlo:?}");
    assert_eq!(c.auth_plain("alice@example.test", "secret-a").await.code, 538);
    c.starttls(&h.tls_client()).await;
    let ehlo = c.expect("EHLO laptop", 250).await;
    assert!(ehlo.text().contains("AUTH PLAIN LOGIN"), "{ehlo:?}");
    assert_eq!(c.auth_plain("alice@example.test", "secret-a").await.code, 235);
    c.expect("MAIL FROM:<alice@example.test>", 250).await;
    c.expect("RCPT TO:<bob@example.test>", 250).await;
    assert_eq!(
        c.data(&message("alice@example.test", "bob@example.test", "tls"))
            .await
            .code,
        250
    );
    assert!(h.inbox(bob).await[0].contains("with ESMTPSA id"));
}

#[tokio::test]
async fn implicit_tls_submissions() {
    let h = start().await;
    h.add_user("alice@example.test", "secret-a", None).await;
    let bob = h.add_user("bob@example.test", "secret-b", None).await;
    let mut c = Client::connect_tls(h.submissions(), &h.tls_client()).await;
    let ehlo = c.expect("EHLO laptop", 250).await;
    assert!(
        !ehlo.text().contains("STARTTLS") && ehlo.text().contains("AUTH PLAIN LOGIN"),
        "{ehlo:?}"
    );
    c.expect("STARTTLS", 503).await;
    assert_eq!(c.auth_plain("alice@example.test", "secret-a").await.code, 235);
    c.expect("MAIL FROM:<alice@example.test>", 250).await;
    c.expect("RCPT TO:<bob@example.test>", 250).await;
    assert_eq!(
        c.data(&message("alice@example.test", "bob@example.test", "465"))
            .await
            .code,
        250
    );
    assert_eq!(h.inbox(bob).await.len(), 1);
}

#[tokio::test]
async fn repeated_auth_failures_disconnect() {
    let h = start().await;
    h.add_user("alice@example.test", "secret-a", None).await;
    let mut c = Client::connect(h.submission()).await;
    c.expect("EHLO laptop", 250).await;
    assert_eq!(c.auth_plain("alice@example.test", "x1").await.code, 535);
    assert_eq!(c.auth_plain("alice@example.test", "x2").await.code, 535);
    assert_eq!(c.auth_plain("alice@example.test", "x3").await.code, 535);
    assert_eq!(c.read().await.code, 421);
    assert_eq!(c.read().await.code, 0, "connection closed");
}

#[tokio::test]
async fn messages_per_user_per_hour() {
    let h = start_with(|c| c.smtp.messages_per_user_per_hour = 2, Dns::fixed()).await;
    h.add_user("alice@example.test", "secret-a", None).await;
    h.add_user("bob@example.test", "secret-b", None).await;
    let mut c = Client::connect(h.submission()).await;
    c.expect("EHLO laptop", 250).await;
    assert_eq!(c.auth_plain("alice@example.test", "secret-a").await.code, 235);
    for n in 0..2 {
        c.expect("MAIL FROM:<alice@example.test>", 250).await;
        c.expect("RCPT TO:<bob@example.test>", 250).await;
        let subject = format!("n{n}");
        assert_eq!(
            c.data(&message("alice@example.test", "bob@example.test", &subject))
                .await
                .code,
            250
        );
    }
    let a = c.expect("MAIL FROM:<alice@example.test>", 450).await;
    assert!(a.text().starts_with("4.7.1"));
}

#[tokio::test]
async fn connections_per_ip_per_minute() {
    let h = start_with(|c| c.smtp.connections_per_ip_per_minute = 2, Dns::fixed()).await;
    let _a = Client::connect(h.mx()).await;
    let _b = Client::connect(h.mx()).await;
    let mut stream = tokio::net::TcpStream::connect(h.mx()).await.unwrap();
    let mut buf = Vec::new();
    use tokio::io::AsyncReadExt;
    stream.read_to_end(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf).starts_with("421 4.7.0"), "{buf:?}");
}
