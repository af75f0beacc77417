//! Quota warnings caused by mail arriving over SMTP (shared::quota::warn): the real MX
//! listener, one message to two recipients pushing both past 80%.

mod common;

use common::{Client, start};

fn warnings(inbox: &[String]) -> Vec<&str> {
    inbox
        .iter()
        .filter_map(|m| m.lines().find_map(|l| l.strip_prefix("Subject: ")))
        .filter(|s| s.starts_with("Your storage is"))
        .collect()
}

#[tokio::test]
async fn a_delivery_that_crosses_80_percent_warns_each_recipient_once() {
    let h = start().await;
    let alice = h.add_user("alice@example.test", "pw", Some(40_000)).await;
    let bob = h.add_user("bob@example.test", "pw", Some(40_000)).await;
    shared::accounts::add_alias(
        &h.ctx.db,
        "family@example.test",
        &["alice@example.test".into(), "bob@example.test".into()],
    )
    .await
    .unwrap();
    let mut c = Client::connect(h.mx()).await;
    c.expect("EHLO x.org", 250).await;

    let send = async |c: &mut Client, subject: &str, size: usize| {
        // SIZE (RFC 1870): reserve what the message needs, not the default estimate.
        c.expect(&format!("MAIL FROM:<a@x.org> SIZE={}", size + 1_000), 250)
            .await;
        c.expect("RCPT TO:<family@example.test>", 250).await;
        let body = format!("Subject: {subject}\r\n\r\n{}\r\n", "z".repeat(size));
        assert_eq!(c.data(&body).await.code, 250);
    };
    // About 50%: nothing.
    send(&mut c, "half", 20_000).await;
    assert!(warnings(&h.inbox(alice).await).is_empty());
    // About 85%: one warning each, in their INBOX after the message.
    send(&mut c, "more", 13_000).await;
    for user in [alice, bob] {
        let inbox = h.inbox(user).await;
        assert_eq!(warnings(&inbox), ["Your storage is 80% full"], "{inbox:?}");
        assert!(
            inbox
                .last()
                .unwrap()
                .contains("From: Postmaster <postmaster@example.test>")
        );
    }
    // Still under 95%: nothing new.
    send(&mut c, "little", 500).await;
    for user in [alice, bob] {
        assert_eq!(warnings(&h.inbox(user).await).len(), 1);
    }
    h.stop().await;
}
