//! The database pool every daemon uses gives its connections back to PostgreSQL when idle: each
//! is a backend of several MiB, and a Pi must not keep a burst's worth of them (issue #12).

use std::time::{Duration, Instant};

use shared::db::POOL_IDLE_TIMEOUT;

/// Backends connected to the current database other than the asking one (a separate
/// connection, so asking does not keep the pool's own alive).
async fn backends(db: &sqlx::PgPool) -> i64 {
    use sqlx::ConnectOptions as _;
    let mut conn = db.connect_options().connect().await.unwrap();
    let n = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    sqlx::Connection::close(conn).await.unwrap();
    n
}

#[tokio::test]
async fn a_burst_of_connections_is_closed_once_idle() {
    let db = shared::testing::test_db().await;
    // Four queries at once: the pool opens four connections.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            sqlx::query("SELECT pg_sleep(0.3)").execute(&db).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(db.size() >= 4, "the pool has {} connections", db.size());
    assert!(backends(&db).await >= 4);

    // sqlx reaps once per idle timeout: closed within two of them, and that within half a
    // minute (a pool that keeps a burst's backends for minutes fails here in 30 s).
    let limit = Duration::from_secs(30);
    assert!(POOL_IDLE_TIMEOUT * 2 + Duration::from_secs(5) <= limit);
    let started = Instant::now();
    while db.size() > 0 || backends(&db).await > 0 {
        assert!(
            started.elapsed() < limit,
            "after {:?} idle the pool still holds {} connections ({} backends)",
            started.elapsed(),
            db.size(),
            backends(&db).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // And it still works: a new connection is opened on demand.
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&db).await.unwrap();
    assert_eq!(one, 1);
}

/// Every pooled connection plans a prepared statement once, for any values (a plan showing the
/// parameter rather than the value it was given), so the write paths' array statements are not
/// planned again at each execution (`shared::db::pool`, issue #12).
#[tokio::test]
async fn pooled_connections_plan_a_prepared_statement_once() {
    let db = shared::testing::test_db().await;
    let mut conn = db.acquire().await.unwrap();
    let mode: String = sqlx::query_scalar("SHOW plan_cache_mode")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(mode, "force_generic_plan");
    sqlx::raw_sql("PREPARE by_ids(int[]) AS SELECT n FROM generate_series(1, 10) AS t(n) WHERE n = ANY($1)")
        .execute(&mut *conn)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar("EXPLAIN EXECUTE by_ids('{3}')")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("$1"), "a plan made for the values given: {plan}");
}
