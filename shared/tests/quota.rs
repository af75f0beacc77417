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

/// The one-statement commit (quota::commit's mail path) must apply charge's test to what goes
/// beyond the reservation: the limit less the usage and every other live reservation.
#[tokio::test]
async fn excess_over_a_reservation_counts_the_other_reservations() {
    let env = TestEnv::new().await;
    let user = env.add_user("carol@example.test", "pw", Some(1000)).await;
    let db = &env.context.db;
    let other = quota::reserve(db, user.id, 300).await.unwrap();
    // 800 would fit beside the usage alone, not beside the other 300 reserved.
    let r = quota::reserve(db, user.id, 500).await.unwrap();
    let kept = quota::Reservation {
        id: r.id,
        user_id: r.user_id,
        bytes: r.bytes,
    };
    let mut tx = db.begin().await.unwrap();
    assert!(matches!(
        quota::commit(&mut tx, r, 800, Usage::Mail).await,
        Err(QuotaError::Exceeded { requested: 800, .. })
    ));
    tx.rollback().await.unwrap();
    // The rollback kept the reservation; give it back as a failed delivery does.
    quota::release(db, kept).await.unwrap();
    // 650 goes beyond its 500 reserved but fits in 1000 - 300.
    let r = quota::reserve(db, user.id, 500).await.unwrap();
    let mut tx = db.begin().await.unwrap();
    quota::commit(&mut tx, r, 650, Usage::Mail).await.unwrap();
    tx.commit().await.unwrap();
    let info = quota::info(db, user.id).await.unwrap();
    assert_eq!((info.mail_bytes, info.reserved_bytes), (650, 300));
    quota::release(db, other).await.unwrap();
}

/// Another process's reservation, as its `quota::reserve` would make it: a dedicated connection
/// holds the owner lock on a fresh owner id, and the row carries that id. Closing the connection
/// is what the kernel does when that process dies (SIGKILL, crash).
async fn foreign_reservation(db: &sqlx::PgPool, user_id: i64, bytes: i64) -> (sqlx::PgConnection, i64) {
    use sqlx::Connection as _;
    let mut owner = sqlx::PgConnection::connect_with(&db.connect_options()).await.unwrap();
    let id: i32 = sqlx::query_scalar("SELECT nextval('quota_owner_seq')::integer")
        .fetch_one(&mut owner)
        .await
        .unwrap();
    sqlx::query("SELECT pg_advisory_lock($1, $2)")
        .bind(quota::OWNER_LOCK_CLASS)
        .bind(id)
        .execute(&mut owner)
        .await
        .unwrap();
    let row: i64 = sqlx::query_scalar(
        "INSERT INTO quota_reservations (user_id, bytes, expires_at, owner)
         VALUES ($1, $2, now() + interval '6 hours', $3) RETURNING id",
    )
    .bind(user_id)
    .bind(bytes)
    .bind(id)
    .fetch_one(&mut owner)
    .await
    .unwrap();
    (owner, row)
}

/// The process dies: its connection closes and PostgreSQL drops its locks when the backend ends
/// (asynchronously, so wait until pg_locks no longer shows it).
async fn kill_owner(db: &sqlx::PgPool, owner: sqlx::PgConnection) {
    use sqlx::Connection as _;
    let pid: i32 = {
        let mut owner = owner;
        let pid = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut owner)
            .await
            .unwrap();
        owner.close().await.unwrap();
        pid
    };
    for _ in 0..100 {
        let alive: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
            .bind(pid)
            .fetch_one(db)
            .await
            .unwrap();
        if !alive {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the closed owner's backend kept its locks");
}

async fn reservation_exists(db: &sqlx::PgPool, id: i64) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM quota_reservations WHERE id = $1)")
        .bind(id)
        .fetch_one(db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_dead_writers_reservation_is_released_when_a_reserve_would_be_refused() {
    let env = TestEnv::new().await;
    let user = env.add_user("carol@example.test", "pw", Some(10_000)).await;
    let db = &env.context.db;
    let (owner, row) = foreign_reservation(db, user.id, 6000).await;
    // Its writer is alive: its 6000 bytes count, and a reserve must not take them.
    assert!(matches!(
        quota::reserve(db, user.id, 6000).await,
        Err(QuotaError::Exceeded {
            requested: 6000,
            available: 4000
        })
    ));
    assert!(
        reservation_exists(db, row).await,
        "a live writer's reservation was taken"
    );
    kill_owner(db, owner).await;
    // Dead now: the reserve that would be refused clears it first, hours before it expires.
    let r = quota::reserve(db, user.id, 6000).await.unwrap();
    assert!(!reservation_exists(db, row).await);
    assert_eq!(quota::info(db, user.id).await.unwrap().reserved_bytes, 6000);
    quota::release(db, r).await.unwrap();
}

#[tokio::test]
async fn release_stale_takes_dead_writers_reservations_and_keeps_live_ones() {
    let env = TestEnv::new().await;
    let user = env.add_user("dave@example.test", "pw", Some(100_000)).await;
    let db = &env.context.db;
    let (live, live_row) = foreign_reservation(db, user.id, 1000).await;
    let (dead, dead_row) = foreign_reservation(db, user.id, 2000).await;
    // This process's own reservation, in progress.
    let mine = quota::reserve(db, user.id, 4000).await.unwrap();
    kill_owner(db, dead).await;
    // What `tinydc quota recalc` and every daemon start run.
    assert_eq!(quota::release_stale(db).await.unwrap(), 1);
    assert!(!reservation_exists(db, dead_row).await);
    assert!(reservation_exists(db, live_row).await);
    assert!(reservation_exists(db, mine.id).await);
    assert_eq!(quota::info(db, user.id).await.unwrap().reserved_bytes, 5000);
    // A second daemon starting beside the live writers takes nothing of theirs either.
    assert_eq!(quota::start_owner(db).await.unwrap(), 0);
    kill_owner(db, live).await;
    assert_eq!(quota::start_owner(db).await.unwrap(), 1);
    let mut tx = db.begin().await.unwrap();
    quota::commit(&mut tx, mine, 4000, Usage::Files).await.unwrap();
    tx.commit().await.unwrap();
    let info = quota::info(db, user.id).await.unwrap();
    assert_eq!((info.file_bytes, info.reserved_bytes), (4000, 0));
}

#[tokio::test]
async fn a_reservation_released_under_its_writer_is_charged_with_a_check_at_commit() {
    let env = TestEnv::new().await;
    let user = env.add_user("erin@example.test", "pw", Some(1000)).await;
    let db = &env.context.db;
    let r = quota::reserve(db, user.id, 800).await.unwrap();
    // Its row went (expired, or our owner lock was lost with the database), and someone else
    // took the space meanwhile.
    sqlx::query("DELETE FROM quota_reservations WHERE id = $1")
        .bind(r.id)
        .execute(db)
        .await
        .unwrap();
    let other = quota::reserve(db, user.id, 500).await.unwrap();
    let mut tx = db.begin().await.unwrap();
    assert!(matches!(
        quota::commit(&mut tx, r, 800, Usage::Mail).await,
        Err(QuotaError::Exceeded { .. })
    ));
    tx.rollback().await.unwrap();
    quota::release(db, other).await.unwrap();
}

#[tokio::test]
async fn a_lost_owner_lock_is_renewed_and_never_reused() {
    let env = TestEnv::new().await;
    let user = env.add_user("frank@example.test", "pw", Some(1_000_000)).await;
    let db = &env.context.db;
    let first = quota::reserve(db, user.id, 10).await.unwrap();
    let owner_of = |id: i64| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i32>("SELECT owner FROM quota_reservations WHERE id = $1")
                .bind(id)
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    let old = owner_of(first.id).await;
    // The owner's connection is cut (as by a database restart) while the process lives on.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_locks
         WHERE locktype = 'advisory' AND classid = $1::oid AND objid = $2::oid AND objsubid = 2
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .bind(quota::OWNER_LOCK_CLASS)
    .bind(old)
    .execute(db)
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let second = quota::reserve(db, user.id, 10).await.unwrap();
    let new = owner_of(second.id).await;
    assert_ne!(old, new, "a reservation must not carry an owner whose lock is gone");
    // The new owner is live: its reservation survives a sweep; the old one (whose lock died) goes.
    quota::release_stale(db).await.unwrap();
    assert!(reservation_exists(db, second.id).await);
    assert!(!reservation_exists(db, first.id).await);
    quota::release(db, second).await.unwrap();
}

/// Backends of the test database other than `observer`'s own.
async fn backends(observer: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(observer)
    .await
    .unwrap()
}

/// Issue #12: a daemon keeps at most ONE backend besides its pool, its event listener's (given up
/// when idle: tests/listener.rs), which also holds the quota owner lock; every other backend
/// belongs to the pool (which shrinks when idle). After
/// that backend is killed (as by a database restart) the listener reconnects, takes a fresh
/// owner id on its new connection, and still delivers events.
#[tokio::test]
async fn the_event_listener_holds_the_owner_lock_on_its_one_connection() {
    use sqlx::Connection as _;
    let env = TestEnv::new().await;
    let user = env.add_user("grace@example.test", "pw", Some(1_000_000)).await;
    let db = &env.context.db;
    quota::start_owner(db).await.unwrap();
    let first = quota::reserve(db, user.id, 10).await.unwrap();
    let mut observer = sqlx::PgConnection::connect_with(&db.connect_options()).await.unwrap();
    // The pool's open connections and the listener's own one; a dedicated owner connection
    // would be one more.
    assert_eq!(
        backends(&mut observer).await,
        i64::from(db.size()) + 1,
        "backends beyond the pool and the listener"
    );
    let owner_pid = || async {
        sqlx::query_scalar::<_, i32>(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2
               AND classid = $1::oid
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .bind(quota::OWNER_LOCK_CLASS)
        .fetch_all(db)
        .await
        .unwrap()
    };
    let pids = owner_pid().await;
    assert_eq!(pids.len(), 1, "one owner lock per process: {pids:?}");
    // Waits (up to 5 s) until the backend is gone: until then its lock still shows as held,
    // and a reservation made meanwhile rightly carries the old id.
    let gone: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
        .bind(pids[0])
        .fetch_one(&mut observer)
        .await
        .unwrap();
    assert!(gone, "the listener's backend did not end");
    // The listener notices, reconnects and re-takes a lock; a reservation waits for it.
    let second = tokio::time::timeout(std::time::Duration::from_secs(15), quota::reserve(db, user.id, 10))
        .await
        .expect("reserve waits for the listener boundedly")
        .unwrap();
    let renewed = owner_pid().await;
    assert_eq!(renewed.len(), 1, "{renewed:?}");
    assert_ne!(renewed[0], pids[0]);
    quota::release_stale(db).await.unwrap();
    assert!(reservation_exists(db, second.id).await);
    assert!(!reservation_exists(db, first.id).await);
    // The reconnected listener still delivers events (it is the same connection as the lock).
    let mut events = env.context.events.subscribe();
    let event = shared::events::Event::Mailbox {
        user_id: user.id,
        mailbox_id: 7,
    };
    let mut conn = db.acquire().await.unwrap();
    shared::events::notify(&mut conn, &event).await.unwrap();
    drop(conn);
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), events.recv())
        .await
        .expect("event delivered after the reconnect")
        .unwrap();
    assert_eq!(got, event);
    // Still one backend beyond the pool's: the listener's.
    assert_eq!(
        backends(&mut observer).await,
        i64::from(db.size()) + 1,
        "backends beyond the pool and the listener"
    );
    quota::release(db, second).await.unwrap();
}

/// Issue #12: a write that committed its reservation but not yet its transaction (an SMTP
/// delivery waiting for its WAL flush) must not hold back the account's next reservation. Before
/// usage deltas (migration 0016), `commit` updated the user's row and every `reserve` of that
/// user queued behind the whole delivering transaction.
#[tokio::test]
async fn a_committing_write_does_not_hold_back_the_accounts_next_reservation() {
    let env = TestEnv::new().await;
    let user = env.add_user("dave@example.test", "pw", Some(10_000)).await;
    let db = &env.context.db;
    let r = quota::reserve(db, user.id, 4000).await.unwrap();
    let delivered_id = r.id;
    let mut writing = db.begin().await.unwrap();
    quota::commit(&mut writing, r, 3000, Usage::Mail).await.unwrap();
    // The delivering transaction is still open: the next reservation is granted at once, and
    // counts the open write at its reserved 4000 (not yet committed), never less.
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), quota::reserve(db, user.id, 6000))
        .await
        .expect("reserve waited for another write's transaction")
        .unwrap();
    assert!(matches!(
        tokio::time::timeout(std::time::Duration::from_secs(5), quota::reserve(db, user.id, 1)).await,
        Ok(Err(QuotaError::Exceeded { available: 0, .. }))
    ));
    writing.commit().await.unwrap();
    // Committed: 3000 used, 6000 reserved, so 1000 left (the write's 1000 unused bytes came back).
    let info = quota::info(db, user.id).await.unwrap();
    assert_eq!(
        (info.mail_bytes, info.reserved_bytes, info.available()),
        (3000, 6000, 1000)
    );
    quota::release(db, next).await.unwrap();
    // A released reservation is gone, a committed write's usage is not: release never takes a
    // charged delta, even given its id (a writer that lost the answer to its COMMIT).
    let committed = quota::Reservation {
        id: delivered_id,
        user_id: user.id,
        bytes: 4000,
    };
    quota::release(db, committed).await.unwrap();
    let info = quota::info(db, user.id).await.unwrap();
    assert_eq!((info.mail_bytes, info.reserved_bytes), (3000, 0));
}

/// Deltas are folded into the user's row, by `fold` and by the next `reserve`; `recalc` then
/// finds nothing to correct, and a recount counts each write once.
#[tokio::test]
async fn usage_deltas_fold_into_the_users_row_and_recount_the_same() {
    let env = TestEnv::new().await;
    let user = env.add_user("erin@example.test", "pw", Some(100_000)).await;
    let db = &env.context.db;
    let row_bytes = |db: sqlx::PgPool| async move {
        sqlx::query_as::<_, (i64, i64, i64)>(
            "SELECT mail_bytes, file_bytes,
                    (SELECT count(*) FROM quota_reservations WHERE user_id = users.id AND charged IS NOT NULL)
             FROM users WHERE id = $1",
        )
        .bind(user.id)
        .fetch_one(&db)
        .await
        .unwrap()
    };
    for (bytes, usage) in [(700, Usage::Files), (300, Usage::Files)] {
        let r = quota::reserve(db, user.id, bytes).await.unwrap();
        let mut tx = db.begin().await.unwrap();
        quota::commit(&mut tx, r, bytes, usage).await.unwrap();
        tx.commit().await.unwrap();
    }
    // The second reserve folded the first delta; the second is still a delta.
    assert_eq!(row_bytes(db.clone()).await, (0, 700, 1));
    let info = quota::info(db, user.id).await.unwrap();
    assert_eq!((info.file_bytes, info.reserved_bytes), (1000, 0));
    quota::fold(db, &[user.id]).await.unwrap();
    assert_eq!(row_bytes(db.clone()).await, (0, 1000, 0));
    // A delta left unfolded (as after a crash) is replaced by a recount, not added to it.
    let r = quota::reserve(db, user.id, 500).await.unwrap();
    let mut tx = db.begin().await.unwrap();
    quota::commit(&mut tx, r, 500, Usage::Files).await.unwrap();
    tx.commit().await.unwrap();
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("a"), vec![0u8; 1500]).unwrap();
    let recount = quota::recalc(db, user.id, files.path()).await.unwrap();
    assert!(!recount.corrected(), "{recount:?}");
    assert_eq!(row_bytes(db.clone()).await, (0, 1500, 0));
}

/// A user without a limit gets a reservation without a row (no transaction, no lock); a limit
/// set before such a write commits still holds: the commit checks the whole write.
#[tokio::test]
async fn unlimited_users_reserve_without_a_row_and_a_new_limit_still_holds() {
    let env = TestEnv::new().await;
    let user = env.add_user("frank@example.test", "pw", None).await;
    let db = &env.context.db;
    let rows = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM quota_reservations WHERE user_id = $1")
            .bind(user.id)
            .fetch_one(db)
            .await
            .unwrap()
    };
    let r = quota::reserve(db, user.id, 1000).await.unwrap();
    assert_eq!(r.id, quota::Reservation::UNLIMITED);
    assert_eq!(rows().await, 0);
    quota::set_limit(db, user.id, Some(500)).await.unwrap();
    let mut tx = db.begin().await.unwrap();
    assert!(matches!(
        quota::commit(&mut tx, r, 1000, Usage::Mail).await,
        Err(QuotaError::Exceeded {
            requested: 1000,
            available: 500
        })
    ));
    tx.rollback().await.unwrap();
    quota::set_limit(db, user.id, None).await.unwrap();
    let r = quota::reserve(db, user.id, 800).await.unwrap();
    let mut tx = db.begin().await.unwrap();
    quota::commit(&mut tx, r, 800, Usage::Mail).await.unwrap();
    tx.commit().await.unwrap();
    // Charged as a delta until folded.
    assert_eq!(rows().await, 1);
    let info = quota::info(db, user.id).await.unwrap();
    assert_eq!((info.mail_bytes, info.reserved_bytes), (800, 0));
    quota::fold(db, &[user.id]).await.unwrap();
    assert_eq!(rows().await, 0);
    assert_eq!(quota::info(db, user.id).await.unwrap().mail_bytes, 800);
    assert!(matches!(
        quota::reserve(db, 999_999, 1).await,
        Err(QuotaError::UnknownUser)
    ));
}

/// Writes of a user without a limit are answered without a fold or a warning check: their
/// deltas count at once wherever usage is read, and this process folds them into the user's row
/// in a batch a moment later (`quota::FoldQueue`), so they never pile up.
#[tokio::test]
async fn unlimited_writes_are_folded_in_a_batch_after_their_answers() {
    let env = TestEnv::new().await;
    let user = env.add_user("grace@example.test", "pw", None).await;
    let db = &env.context.db;
    let mail = &env.context.mail;
    let inbox = mail.mailbox(user.id, "INBOX").await.unwrap();
    let deltas = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM quota_reservations WHERE user_id = $1 AND charged IS NOT NULL",
        )
        .bind(user.id)
        .fetch_one(db)
        .await
        .unwrap()
    };
    let message = b"Subject: s\r\n\r\nhello\r\n".to_vec();
    for _ in 0..20 {
        let r = quota::reserve(db, user.id, message.len() as u64).await.unwrap();
        assert_eq!(r.id, quota::Reservation::UNLIMITED);
        mail.append(user.id, inbox.id, &message, &[], chrono::Utc::now(), Some(r))
            .await
            .unwrap();
    }
    assert_eq!(
        quota::info(db, user.id).await.unwrap().mail_bytes,
        20 * message.len() as u64
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while deltas().await > 0 {
        assert!(std::time::Instant::now() < deadline, "the deltas were never folded");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (row,): (i64,) = sqlx::query_as("SELECT mail_bytes FROM users WHERE id = $1")
        .bind(user.id)
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(row, 20 * message.len() as i64);
}
