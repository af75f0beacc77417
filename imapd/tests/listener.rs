//! imapd's event listener gives its PostgreSQL connection up while no session is open (issue
//! #12) and nothing is lost across the gap: a message delivered meanwhile by another daemon is in
//! a session opened afterwards, and a session in IDLE keeps the listener, so it is woken by the
//! next delivery instead of sleeping through it.

mod common;

use std::time::Duration;

use common::*;
use sqlx::PgPool;

const LISTENER_IDLE: Duration = Duration::from_millis(300);

/// Backends of this database that are an event listener.
async fn listener_backends(db: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1",
    )
    .bind(shared::events::APPLICATION_NAME)
    .fetch_one(db)
    .await
    .unwrap()
}

async fn wait_backends(db: &PgPool, want: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = listener_backends(db).await;
        if now == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{now} listener backends, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn message(subject: &str) -> Vec<u8> {
    format!("From: bob@example.test\r\nTo: alice@example.test\r\nSubject: {subject}\r\n\r\nbody\r\n").into_bytes()
}

/// Deliver into the user's INBOX from another daemon's context (as smtpd does, in its process).
async fn deliver_elsewhere(server: &Server, subject: &str) {
    server
        .env
        .context
        .mail
        .deliver(
            vec![shared::mailstore::DeliveryTarget {
                user_id: server.user_id,
                mailbox_id: None,
                reservation: None,
            }],
            &message(subject),
            &[],
            chrono::Utc::now(),
        )
        .await
        .expect("deliver");
}

#[tokio::test]
async fn a_delivery_while_the_listener_is_away_is_seen_and_idle_keeps_the_listener() {
    let server = Server::start_with_listener_idle(|_| {}, None, LISTENER_IDLE).await;
    let db = server.ctx.db.clone();
    // No session: both processes' listeners (imapd's and the other daemon's) go.
    wait_backends(&db, 0).await;
    deliver_elsewhere(&server, "while nobody listened").await;
    // A session opened afterwards reconnects imapd's listener and sees the message.
    let mut a = server.login().await;
    assert_eq!(
        listener_backends(&db).await,
        1,
        "the session connected imapd's listener"
    );
    let selected = a.ok("SELECT INBOX").await;
    assert!(selected.lines.iter().any(|l| l == "* 1 EXISTS"), "{:?}", selected.lines);
    a.write(b"i1 IDLE\r\n").await;
    assert!(a.raw_line().await.starts_with('+'));
    // Far past the idle release: the idling session keeps imapd's listener.
    tokio::time::sleep(LISTENER_IDLE * 5).await;
    assert_eq!(listener_backends(&db).await, 1, "an IDLE session keeps the listener");
    deliver_elsewhere(&server, "while idling").await;
    let woken = tokio::time::timeout(Duration::from_secs(3), a.raw_line())
        .await
        .expect("IDLE woken by the delivery");
    assert_eq!(woken, "* 2 EXISTS");
    a.write(b"DONE\r\n").await;
    a.until("i1").await;
    a.ok("LOGOUT").await;
    // The session is gone: so is the listener.
    wait_backends(&db, 0).await;
}
