//! Inbound SPF, DKIM and DMARC on the MX with fixed DNS records: Authentication-Results, DMARC
//! reject honoured, quarantine filed into Junk.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{Client, Harness, start_with};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
use tinydc_smtpd::dkim::{DomainKey, sign};
use tinydc_smtpd::dns::Dns;

/// A key for `domain` and its DNS record value.
fn key(domain: &str) -> (DomainKey, String) {
    // 2048 bits: ring signs with nothing smaller.
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let private = key.to_pkcs8_der().unwrap().as_bytes().to_vec();
    let public = B64.encode(key.to_public_key().to_public_key_der().unwrap().as_bytes());
    (
        DomainKey {
            domain: domain.into(),
            selector: "s1".into(),
            private_key: private,
        },
        format!("v=DKIM1; k=rsa; p={public}"),
    )
}

fn body(from: &str, subject: &str) -> String {
    format!(
        "From: <{from}>\r\nTo: <alice@example.test>\r\nSubject: {subject}\r\nDate: Tue, 24 Nov 2026 02:00:00 +0000\r\nMessage-ID: <{subject}@x>\r\n\r\nSigned body.\r\n"
    )
}

async fn send(h: &Harness, mail_from: &str, message: &str) -> u16 {
    let mut c = Client::connect(h.mx()).await;
    c.expect("EHLO mail.sender.test", 250).await;
    c.expect(&format!("MAIL FROM:<{mail_from}>"), 250).await;
    c.expect("RCPT TO:<alice@example.test>", 250).await;
    c.data(message).await.code
}

#[tokio::test]
async fn signed_message_passes_spf_dkim_dmarc() {
    let (k, record) = key("sender.test");
    let dns = Dns::fixed();
    dns.add_txt("s1._domainkey.sender.test", &record).unwrap();
    dns.add_txt("sender.test", "v=spf1 ip4:127.0.0.1 -all").unwrap();
    dns.add_txt("_dmarc.sender.test", "v=DMARC1; p=reject").unwrap();
    let h = start_with(|_| {}, dns).await;
    let alice = h.add_user("alice@example.test", "pw", None).await;
    let message = body("news@sender.test", "signed");
    let signature = sign(message.as_bytes(), &k).unwrap();
    assert_eq!(
        send(&h, "bounces@sender.test", &format!("{signature}{message}")).await,
        250
    );
    let inbox = h.inbox(alice).await;
    let m = &inbox[0];
    let ar = m.split("\r\nReceived:").next().unwrap();
    assert!(ar.contains("Authentication-Results: localhost;"), "{m}");
    assert!(ar.contains("dkim=pass"), "{ar}");
    assert!(ar.contains("spf=pass"), "{ar}");
    assert!(ar.contains("dmarc=pass"), "{ar}");
}

#[tokio::test]
async fn dmarc_reject_is_honoured_and_quarantine_goes_to_junk() {
    let dns = Dns::fixed();
    dns.add_txt("strict.test", "v=spf1 ip4:192.0.2.1 -all").unwrap();
    dns.add_txt("_dmarc.strict.test", "v=DMARC1; p=reject").unwrap();
    dns.add_txt("soft.test", "v=spf1 ip4:192.0.2.1 -all").unwrap();
    dns.add_txt("_dmarc.soft.test", "v=DMARC1; p=quarantine").unwrap();
    let h = start_with(|_| {}, dns).await;
    let alice = h.add_user("alice@example.test", "pw", None).await;
    // Forged: SPF fails (we are 127.0.0.1) and there is no signature.
    assert_eq!(
        send(&h, "ceo@strict.test", &body("ceo@strict.test", "forged")).await,
        550
    );
    assert_eq!(send(&h, "x@soft.test", &body("x@soft.test", "dubious")).await, 250);
    assert!(h.inbox(alice).await.is_empty());
    let junk = h.messages(alice, "Junk").await;
    assert_eq!(junk.len(), 1);
    let m = String::from_utf8_lossy(&junk[0]);
    assert!(m.contains("dmarc=fail") && m.contains("spf=fail"), "{m}");
}

#[tokio::test]
async fn dmarc_reject_can_be_turned_off() {
    let dns = Dns::fixed();
    dns.add_txt("strict.test", "v=spf1 ip4:192.0.2.1 -all").unwrap();
    dns.add_txt("_dmarc.strict.test", "v=DMARC1; p=reject").unwrap();
    let h = start_with(
        |c| {
            c.smtp.dmarc_reject = false;
            c.smtp.junk_on_fail = false;
        },
        dns,
    )
    .await;
    let alice = h.add_user("alice@example.test", "pw", None).await;
    assert_eq!(
        send(&h, "ceo@strict.test", &body("ceo@strict.test", "forged")).await,
        250
    );
    let inbox = h.inbox(alice).await;
    assert!(inbox[0].contains("dmarc=fail"), "{}", inbox[0]);
}
