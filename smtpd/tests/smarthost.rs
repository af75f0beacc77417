//! Outgoing mail through a smarthost with AUTH: server A relays through server B's submission
//! port (B authenticates A's account), and B delivers through its route to a sink.

mod common;

use common::sink::Sink;
use common::{Client, message, start_with};
use shared::config::SmarthostConfig;
use tinydc_smtpd::dns::Dns;

#[tokio::test]
async fn relay_through_an_authenticated_smarthost() {
    let sink = Sink::start().await;
    let route = sink.addr.to_string();
    let b = start_with(
        move |c| {
            c.smtp.routes.insert("far.test".into(), route);
        },
        Dns::fixed(),
    )
    .await;
    b.add_user("relay@example.test", "pw-relay", None).await;
    // The relay account may send as alice (A's user): an alias on B.
    shared::accounts::add_alias(&b.ctx.db, "alice@example.test", &["relay@example.test".into()])
        .await
        .unwrap();
    let port = b.submission().port();
    let a = start_with(
        move |c| {
            c.smtp.smarthost = Some(SmarthostConfig {
                host: "127.0.0.1".into(),
                port,
                security: "none".into(),
                username: "relay@example.test".into(),
                password: "pw-relay".into(),
            })
        },
        Dns::fixed(),
    )
    .await;
    a.add_user("alice@example.test", "secret-a", None).await;
    let mut c = Client::connect(a.submission()).await;
    c.expect("EHLO laptop", 250).await;
    assert_eq!(c.auth_plain("alice@example.test", "secret-a").await.code, 235);
    c.expect("MAIL FROM:<alice@example.test>", 250).await;
    c.expect("RCPT TO:<bob@far.test>", 250).await;
    assert_eq!(
        c.data(&message("alice@example.test", "bob@far.test", "relayed"))
            .await
            .code,
        250
    );
    let got = sink.wait_for(1).await;
    let (from, to, msg) = &got[0];
    assert_eq!((from.as_str(), to.as_str()), ("alice@example.test", "bob@far.test"));
    assert_eq!(msg.matches("Received: from laptop").count(), 1, "{msg}");
    assert!(msg.contains("with ESMTPA"), "B saw an authenticated client: {msg}");
    assert!(msg.contains("Subject: relayed"));
}
