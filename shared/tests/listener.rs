//! The event listener gives its PostgreSQL connection (and the quota owner lock on it) up when
//! nothing needs it, and takes them again when work arrives (issue #12), against a real
//! PostgreSQL.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use shared::accounts;
use shared::events::{self, APPLICATION_NAME, Event};
use shared::quota::{self, OWNER_LOCK_CLASS};
use shared::testing::TestEnv;
use sqlx::PgPool;

const IDLE: Duration = Duration::from_millis(300);

/// Backends of this database that are an event listener, and owner locks held in it.
async fn listeners(db: &PgPool) -> (i64, i64) {
    let backends: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1",
    )
    .bind(APPLICATION_NAME)
    .fetch_one(db)
    .await
    .unwrap();
    let locks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND classid = $1::integer::oid",
    )
    .bind(OWNER_LOCK_CLASS)
    .fetch_one(db)
    .await
    .unwrap();
    (backends, locks)
}

/// Wait (at most 5 s) until the listener backends and owner locks are `want`.
async fn wait_listeners(db: &PgPool, want: (i64, i64)) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = listeners(db).await;
        if now == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "listener backends and owner locks: {now:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_idle_listener_gives_up_its_backend_and_returns_on_interest() {
    let env = TestEnv::with_listener_idle(IDLE).await;
    let db = env.context.db.clone();
    let ev = &env.context.events;
    assert_eq!(
        listeners(&db).await,
        (1, 1),
        "connected and holding the owner lock at start"
    );
    // Nobody needs it: the backend and the lock go.
    wait_listeners(&db, (0, 0)).await;
    assert!(!ev.is_listening());
    let mut rx = ev.subscribe();
    let mut reconnects = ev.reconnects();
    // Work arrives: connected again (a new backend) before `listening` returns.
    let interest = ev.listening().await;
    assert!(ev.is_listening());
    assert!(reconnects.has_changed().unwrap(), "a reconnect is announced");
    reconnects.mark_unchanged();
    let mut conn = db.acquire().await.unwrap();
    events::notify(&mut conn, &Event::Queue).await.unwrap();
    drop(conn);
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
    assert_eq!(got.expect("event in time").unwrap(), Event::Queue);
    // Held well past the idle time: it stays.
    tokio::time::sleep(IDLE * 4).await;
    assert_eq!(listeners(&db).await.0, 1, "an interest keeps the listener");
    drop(interest);
    wait_listeners(&db, (0, 0)).await;
    // Giving the connection up is no reconnect: waiters are not woken for it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!reconnects.has_changed().unwrap(), "giving up is not a reconnect");
}

#[tokio::test]
async fn an_outstanding_reservation_keeps_the_owner_lock() {
    let env = TestEnv::with_listener_idle(IDLE).await;
    let user = env.add_user("alice@example.test", "pw", Some(10_000)).await;
    let db = env.context.db.clone();
    wait_listeners(&db, (0, 0)).await;
    // A reservation wakes the listener for the owner id it carries...
    let reservation = quota::reserve(&db, user.id, 1000).await.unwrap();
    assert_eq!(listeners(&db).await, (1, 1));
    // ...and keeps its lock while it is outstanding: its space stays promised.
    tokio::time::sleep(IDLE * 4).await;
    assert_eq!(
        listeners(&db).await,
        (1, 1),
        "the owner lock stays while a reservation is outstanding"
    );
    assert_eq!(quota::count_stale(&db).await.unwrap(), 0);
    quota::release(&db, reservation).await.unwrap();
    wait_listeners(&db, (0, 0)).await;
    // Reservations still work after it went, under a fresh owner id.
    let again = quota::reserve(&db, user.id, 9000).await.unwrap();
    assert_eq!(quota::count_stale(&db).await.unwrap(), 0);
    quota::release(&db, again).await.unwrap();
}

#[tokio::test]
async fn a_password_changed_while_the_listener_was_away_is_not_served_from_the_cache() {
    let env = TestEnv::with_listener_idle(IDLE).await;
    env.add_user("alice@example.test", "old password", None).await;
    let db = env.context.db.clone();
    let auth = &env.context.auth;
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    auth.login("alice@example.test", "old password", ip).await.unwrap();
    let hits = auth.cache_hits();
    auth.login("alice@example.test", "old password", ip).await.unwrap();
    assert_eq!(auth.cache_hits(), hits + 1, "the second login is a cache hit");
    wait_listeners(&db, (0, 0)).await;
    // Changed by another process (`tinydc passwd`) while no event could reach this one.
    accounts::set_password(&db, "alice@example.test", "new password")
        .await
        .unwrap();
    assert!(
        auth.login("alice@example.test", "old password", ip).await.is_err(),
        "the old password no longer logs in"
    );
    auth.login("alice@example.test", "new password", ip).await.unwrap();
}

/// A daemon whose receivers tolerate falling behind (smtpd's queue worker re-reads the queue)
/// starts its events with a short ring (issue #12: the default's 80 KiB are written at start):
/// a receiver that misses more than the ring holds is told so, and hears what came after.
#[tokio::test]
async fn a_short_event_ring_tells_a_receiver_that_fell_behind() {
    let env = TestEnv::new().await;
    let db = env.context.db.clone();
    let events = events::Events::start_with_backlog(&db, IDLE, 2).await.unwrap();
    let mut rx = events.subscribe();
    let _interest = events.listening().await;
    let mut conn = db.acquire().await.unwrap();
    for user_id in 1..=5 {
        events::notify(&mut conn, &Event::QuotaLimit { user_id }).await.unwrap();
    }
    drop(conn);
    // Nothing received while the five arrive (`len` counts what was sent since the receiver's
    // position, lost or not): the ring keeps the last two.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while rx.len() < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of 5 events arrived",
            rx.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut missed = 0;
    let mut heard = Vec::new();
    while heard.last() != Some(&Event::QuotaLimit { user_id: 5 }) {
        match tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("events in time")
        {
            Ok(event) => heard.push(event),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => missed += n,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        missed, 3,
        "a receiver five events behind a ring of two lost three: heard {heard:?}"
    );
    assert_eq!(
        heard,
        [Event::QuotaLimit { user_id: 4 }, Event::QuotaLimit { user_id: 5 }]
    );
}
