//! Quota reservations against real PostgreSQL.

use shared::quota::{self, QuotaError, Usage};
use shared::testing::TestEnv;

#[tokio::test]
async fn parallel_writers_never_pass_the_limit() {
    let env = TestEnv::new().await;
    let user = env.add_user("alice@example.test", "pw", Some(10_000)).await;
    let db = env.context.db.clone();
    // 40 writers of 1000 bytes race for 10 000 bytes: exactly 10 may win.
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            match quota::reserve(&db, user.id, 1000).await {
                Ok(r) => {
                    let mut tx = db.begin().await.unwrap();
                    quota::commit(&mut tx, r, 1000, Usage::Files).await.unwrap();
                    tx.commit().await.unwrap();
                    true
                }
                Err(QuotaError::Exceeded { .. }) => false,
                Err(e) => panic!("{e}"),
            }
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += t.await.unwrap() as u32;
    }
    assert_eq!(won, 10);
    let info = quota::info(&db, user.id).await.unwrap();
    assert_eq!(info.file_bytes, 10_000);
    assert_eq!(info.reserved_bytes, 0);
    assert_eq!(info.available(), 0);
}

#[tokio::test]
async fn reservations_count_until_released_and_excess_is_checked() {
    let env = TestEnv::new().await;
    let user = env.add_user("bob@example.test", "pw", Some(1000)).await;
    let db = &env.context.db;
    let r1 = quota::reserve(db, user.id, 600).await.unwrap();
    assert!(matches!(
        quota::reserve(db, user.id, 600).await,
        Err(QuotaError::Exceeded {
            requested: 600,
            available: 400
        })
    ));
    quota::release(db, r1).await.unwrap();
    let r2 = quota::reserve(db, user.id, 600).await.unwrap();
    // Committing more than reserved checks the excess: 1200 does not fit in 1000.
    let mut tx = db.begin().await.unwrap();
    assert!(quota::commit(&mut tx, r2, 1200, Usage::Mail).await.is_err());
    tx.rollback().await.unwrap();
    // The reservation survived the rollback; a refund brings usage down again.
    let info = quota::info(db, user.id).await.unwrap();
    assert_eq!((info.mail_bytes, info.reserved_bytes), (0, 600));
    quota::set_limit(db, user.id, None).await.unwrap();
    assert_eq!(quota::info(db, user.id).await.unwrap().available(), u64::MAX);
}
