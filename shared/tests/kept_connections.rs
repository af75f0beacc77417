//! `db::KeptConnections` (issue #12): a connection whose statement ended well is kept out of the
//! pool for the next statement (sqlx pings every connection it takes back), goes back to the
//! pool when unused for `KEEP_FOR`, and one whose statement failed goes back at once.

use std::time::Duration;

use shared::db::{KEEP_FOR, KEEP_MAX, KeptConnections};
use shared::testing::test_db;

async fn backend_pid(conn: &mut sqlx::PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_connection_is_kept_between_statements_and_given_back_when_unused() {
    let pool = test_db().await;
    let kept = KeptConnections::new(pool.clone());
    let mut conn = kept.take().await.unwrap();
    let first = backend_pid(&mut conn).await;
    conn.done();
    // Kept: out of the pool (not idle there), and the next statement gets the same backend.
    assert_eq!(pool.num_idle(), 0, "a kept connection is not back in the pool");
    let mut conn = kept.take().await.unwrap();
    assert_eq!(backend_pid(&mut conn).await, first, "the kept connection is reused");
    conn.done();
    // Unused for KEEP_FOR: back in the pool within twice that (plus sqlx's own round trip).
    let deadline = tokio::time::Instant::now() + KEEP_FOR * 2 + Duration::from_secs(2);
    while pool.num_idle() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the kept connection never went back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pool.size(), 1);
    let mut again = pool.acquire().await.unwrap();
    assert_eq!(backend_pid(&mut again).await, first);
}

#[tokio::test]
async fn a_connection_whose_statement_failed_goes_back_to_the_pool() {
    let pool = test_db().await;
    let kept = KeptConnections::new(pool.clone());
    let mut conn = kept.take().await.unwrap();
    let err = sqlx::query("SELECT 1/0").execute(&mut *conn).await;
    assert!(err.is_err());
    // Not `done`: dropped, it goes through the pool's own release (which checks it).
    drop(conn);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while pool.num_idle() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the failed connection never went back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // And the next take gets it from the pool, in a state to run statements.
    let mut conn = kept.take().await.unwrap();
    backend_pid(&mut conn).await;
    conn.done();
}

#[tokio::test]
async fn no_more_than_keep_max_are_kept() {
    let pool = test_db().await;
    let kept = KeptConnections::new(pool.clone());
    let mut taken = Vec::new();
    for _ in 0..KEEP_MAX + 2 {
        let mut conn = kept.take().await.unwrap();
        backend_pid(&mut conn).await;
        taken.push(conn);
    }
    for conn in taken {
        conn.done();
    }
    // The two beyond KEEP_MAX went back to the pool (after sqlx's round trip, in its own task).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while pool.num_idle() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} idle in the pool",
            pool.num_idle()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pool.num_idle(), 2);
    assert_eq!(pool.size() as usize, KEEP_MAX + 2);
}

/// A pool at its maximum keeps nothing, even with an idle connection of its own: statements
/// that acquire from the pool (a LOGIN's) would otherwise wait for a kept connection to go back.
#[tokio::test]
async fn nothing_is_kept_while_the_pool_is_at_its_maximum() {
    let big = test_db().await;
    let pool = shared::db::pool((*big.connect_options()).clone(), 2, Duration::from_secs(5))
        .await
        .unwrap();
    let kept = KeptConnections::new(pool.clone());
    // One kept (the pool could still open another)...
    let mut a = kept.take().await.unwrap();
    let first = backend_pid(&mut a).await;
    a.done();
    // ...another opened and given back by a statement outside the kept connections...
    let mut b = pool.acquire().await.unwrap();
    backend_pid(&mut b).await;
    drop(b);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while pool.num_idle() == 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pool.size(), 2);
    // ...now the pool is at its maximum: the kept one, used again, goes back to the pool.
    let mut a = kept.take().await.unwrap();
    assert_eq!(backend_pid(&mut a).await, first);
    a.done();
    // Two statements from the pool at once get both connections without waiting for KEEP_FOR.
    let both = async {
        let x = pool.acquire().await.unwrap();
        let y = pool.acquire().await.unwrap();
        (x, y)
    };
    let (mut x, mut y) = tokio::time::timeout(KEEP_FOR / 2, both)
        .await
        .expect("a statement outside the kept connections waited for a kept one");
    backend_pid(&mut x).await;
    backend_pid(&mut y).await;
}
