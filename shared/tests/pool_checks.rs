//! When the pool checks a connection before handing it out (shared::db::POOL_CHECK_AFTER_IDLE):
//! one idle for a while is checked with a round trip and replaced if PostgreSQL closed it; one
//! used moments ago goes out unchecked, sparing every statement of a busy daemon that round
//! trip (issue #12), and if it did break, the statement fails as "unavailable" (the daemons'
//! answer is a retry-later, IMAP's NO [UNAVAILABLE]) and the pool drops it.

use std::time::Duration;

use shared::db::{POOL_CHECK_AFTER_IDLE, is_unavailable};

async fn backend_pid(db: &sqlx::PgPool) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(db).await
}

/// End a backend from a connection of its own (outside the pool).
async fn terminate(db: &sqlx::PgPool, pid: i32) {
    use sqlx::ConnectOptions as _;
    let mut conn = db.connect_options().connect().await.unwrap();
    let done: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
        .bind(pid)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(done, "backend {pid} ended");
    sqlx::Connection::close(conn).await.unwrap();
}

#[tokio::test]
async fn a_connection_closed_while_idle_is_checked_and_replaced() {
    let db = shared::testing::test_db().await;
    let first = backend_pid(&db).await.unwrap();
    terminate(&db, first).await;
    tokio::time::sleep(POOL_CHECK_AFTER_IDLE + Duration::from_millis(300)).await;
    // The check finds the dead connection; the statement runs on a new one.
    let second = backend_pid(&db)
        .await
        .expect("a statement after the idle check succeeds");
    assert_ne!(first, second);
}

#[tokio::test]
async fn a_connection_used_moments_ago_goes_out_unchecked() {
    let db = shared::testing::test_db().await;
    let first = backend_pid(&db).await.unwrap();
    terminate(&db, first).await;
    // Used well within POOL_CHECK_AFTER_IDLE: no round trip before the statement, which then
    // meets the closed connection. With sqlx's default check before every acquire it would
    // have succeeded on a fresh connection.
    let err = backend_pid(&db).await.expect_err("the unchecked connection was closed");
    assert!(
        is_unavailable(&err),
        "a closed connection reads as unavailable: {err:?}"
    );
    // The broken connection is not given back: the next statement gets a working one.
    let second = backend_pid(&db).await.expect("the pool replaced the broken connection");
    assert_ne!(first, second);
}
