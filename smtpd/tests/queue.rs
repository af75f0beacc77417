//! The outbound queue: delivery through a route to a local sink, DKIM signing, retry after a
//! temporary failure, bounce after a permanent one, and the queue and key operations of
//! `shared::queue` / `shared::dkim` that `tinydc queue` and `tinydc dkim` call (their command
//! line is tested in ops/tests/cli.rs).

mod common;

use std::time::Duration;

use common::sink::Sink;
use common::{Client, Harness, message, start_with};
use tinydc_smtpd::dns::Dns;

async fn harness(sink: &Sink) -> Harness {
    let route = sink.addr.to_string();
    start_with(
        move |c| {
            c.smtp.routes.insert("remote.test".into(), route);
        },
        Dns::fixed(),
    )
    .await
}

async fn submit(h: &Harness, to: &str, subject: &str) {
    let mut c = Client::connect(h.submission()).await;
    c.expect("EHLO laptop", 250).await;
    assert_eq!(c.auth_plain("alice@example.test", "secret-a").await.code, 235);
    c.expect("MAIL FROM:<alice@example.test>", 250).await;
    c.expect(&format!("RCPT TO:<{to}>"), 250).await;
    let a = c.data(&message("alice@example.test", to, subject)).await;
    assert_eq!(a.code, 250, "{a:?}");
    c.expect("QUIT", 221).await;
}

async fn queue_len(h: &Harness) -> usize {
    shared::queue::rows(&h.ctx.db).await.unwrap().len()
}

/// A new RSA key for `domain` stored as `tinydc dkim generate` stores it; returns the TXT
/// record's name and value.
async fn dkim_key(h: &Harness, domain: &str) -> (String, String) {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let private = key.to_pkcs8_der().unwrap().as_bytes().to_vec();
    let public = key.to_public_key().to_public_key_der().unwrap().as_bytes().to_vec();
    let stored = shared::dkim::replace_key(&h.ctx.db, domain, "s1", &private, &public)
        .await
        .unwrap();
    (
        format!("{}._domainkey.{}", stored.selector, stored.domain),
        format!("v=DKIM1; k=rsa; p={}", stored.public_key),
    )
}

async fn wait_until<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..300 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("condition not reached in 30 s");
}

async fn blob_refs(h: &Harness) -> i64 {
    sqlx::query_scalar("SELECT coalesce(sum(refcount), 0)::bigint FROM blobs")
        .fetch_one(&h.ctx.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn queued_delivery_through_a_route_with_dkim() {
    let sink = Sink::start().await;
    let h = harness(&sink).await;
    h.add_user("alice@example.test", "secret-a", None).await;
    let (name, value) = dkim_key(&h, "example.test").await;
    let public = shared::dkim::public_key(&h.ctx.db, "example.test")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(format!("v=DKIM1; k=rsa; p={}", public.public_key), value);
    submit(&h, "carol@remote.test", "out").await;
    let got = sink.wait_for(1).await;
    let (from, to, msg) = &got[0];
    assert_eq!(
        (from.as_str(), to.as_str()),
        ("alice@example.test", "carol@remote.test")
    );
    assert!(msg.contains("DKIM-Signature: "), "{msg}");
    assert!(!msg.contains("Return-Path"), "{msg}");
    wait_until(|| async { queue_len(&h).await == 0 }).await;
    assert_eq!(blob_refs(&h).await, 0, "the queue dropped its blob reference");

    // The signature verifies with mail-auth against the published record.
    let dns = Dns::fixed();
    dns.add_txt(&name, &value).unwrap();
    let parsed = mail_auth::AuthenticatedMessage::parse(msg.as_bytes()).unwrap();
    let results = dns.authenticator().unwrap().verify_dkim(dns.params(&parsed)).await;
    assert!(!results.is_empty());
    assert!(
        results.iter().all(|r| r.result() == &mail_auth::DkimResult::Pass),
        "{:?}",
        results.iter().map(|r| r.result()).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn retry_after_temporary_failure() {
    let sink = Sink::start().await;
    sink.script(&["451 4.3.0 try later"]);
    let h = harness(&sink).await;
    h.add_user("alice@example.test", "secret-a", None).await;
    submit(&h, "carol@remote.test", "retry").await;
    wait_until(|| async {
        shared::queue::rows(&h.ctx.db)
            .await
            .unwrap()
            .first()
            .is_some_and(|r| r.attempts == 1 && r.last_error.as_deref().is_some_and(|e| e.contains("451")))
    })
    .await;
    assert!(sink.received.lock().unwrap().is_empty());
    // `tinydc queue retry --all` makes it due and wakes the worker through an event.
    assert_eq!(
        shared::queue::retry(&h.ctx.db, shared::queue::Which::All)
            .await
            .unwrap(),
        1
    );
    let got = sink.wait_for(1).await;
    assert_eq!(got[0].1, "carol@remote.test");
    wait_until(|| async { queue_len(&h).await == 0 }).await;
}

#[tokio::test]
async fn bounce_after_permanent_failure() {
    let sink = Sink::start().await;
    sink.script(&["550 5.1.1 no such user"]);
    let h = harness(&sink).await;
    let alice = h.add_user("alice@example.test", "secret-a", None).await;
    submit(&h, "nobody@remote.test", "doomed").await;
    wait_until(|| async { h.inbox(alice).await.len() == 1 }).await;
    let dsn = &h.inbox(alice).await[0];
    assert!(dsn.starts_with("Return-Path: <>\r\n"), "{dsn}");
    assert!(dsn.contains("report-type=delivery-status"), "{dsn}");
    assert!(dsn.contains("Final-Recipient: rfc822; nobody@remote.test"), "{dsn}");
    assert!(dsn.contains("Status: 5.1.1"), "{dsn}");
    assert!(dsn.contains("Subject: doomed"), "original headers included: {dsn}");
    wait_until(|| async { queue_len(&h).await == 0 }).await;
    assert!(sink.received.lock().unwrap().is_empty());
}

#[tokio::test]
async fn expiry_bounces_with_4_4_7() {
    let sink = Sink::start().await;
    sink.script(&["451 4.3.0 try later"]);
    let route = sink.addr.to_string();
    let h = start_with(
        move |c| {
            c.smtp.routes.insert("remote.test".into(), route);
            c.smtp.queue_lifetime_secs = 0;
        },
        Dns::fixed(),
    )
    .await;
    let alice = h.add_user("alice@example.test", "secret-a", None).await;
    submit(&h, "carol@remote.test", "late").await;
    wait_until(|| async { h.inbox(alice).await.len() == 1 }).await;
    assert!(h.inbox(alice).await[0].contains("Status: 4.4.7"));
}

#[tokio::test]
async fn queue_list_and_delete() {
    let sink = Sink::start().await;
    sink.script(&["451 4.3.0 try later"]);
    let h = harness(&sink).await;
    h.add_user("alice@example.test", "secret-a", None).await;
    submit(&h, "carol@remote.test", "stuck").await;
    wait_until(|| async {
        shared::queue::rows(&h.ctx.db)
            .await
            .unwrap()
            .first()
            .is_some_and(|r| r.attempts == 1)
    })
    .await;
    let rows = shared::queue::rows(&h.ctx.db).await.unwrap();
    assert_eq!(rows[0].sender, "alice@example.test");
    assert!(!shared::queue::remove(&h.ctx.db, rows[0].id + 1000).await.unwrap());
    assert_eq!(
        shared::queue::retry(&h.ctx.db, shared::queue::Which::One(rows[0].id + 1000))
            .await
            .unwrap(),
        0
    );
    assert!(shared::queue::remove(&h.ctx.db, rows[0].id).await.unwrap());
    assert_eq!(queue_len(&h).await, 0);
    assert_eq!(blob_refs(&h).await, 0);
}

#[tokio::test]
async fn queue_survives_a_restart() {
    let sink = Sink::start().await;
    // First run: the route points at a closed port, so the delivery fails temporarily.
    let h = start_with(
        |c| {
            c.smtp.routes.insert("remote.test".into(), "127.0.0.1:1".into());
        },
        Dns::fixed(),
    )
    .await;
    h.add_user("alice@example.test", "secret-a", None).await;
    submit(&h, "carol@remote.test", "restart").await;
    wait_until(|| async {
        shared::queue::rows(&h.ctx.db)
            .await
            .unwrap()
            .first()
            .is_some_and(|r| r.attempts == 1)
    })
    .await;
    h.shutdown.cancel();
    // Second run over the same database and blobs, now routed to the sink.
    let mut config = (*h.ctx.config).clone();
    config.smtp.routes.insert("remote.test".into(), sink.addr.to_string());
    let ctx = std::sync::Arc::new(shared::Context {
        config: std::sync::Arc::new(config),
        db: h.ctx.db.clone(),
        blobs: h.ctx.blobs.clone(),
        mail: shared::mailstore::MailStore::new(h.ctx.db.clone(), h.ctx.blobs.clone()),
        auth: shared::auth::Auth::new(h.ctx.db.clone(), &h.ctx.config.auth),
        events: h.ctx.events.clone(),
    });
    let shutdown = shared::net::Shutdown::new();
    let _server = tinydc_smtpd::start(ctx, std::sync::Arc::new(Dns::fixed()), shutdown.clone())
        .await
        .unwrap();
    shared::queue::retry(&h.ctx.db, shared::queue::Which::All)
        .await
        .unwrap();
    let got = sink.wait_for(1).await;
    assert!(got[0].2.contains("Subject: restart"));
    wait_until(|| async { queue_len(&h).await == 0 }).await;
    shutdown.cancel();
}
