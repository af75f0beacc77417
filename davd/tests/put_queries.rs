//! The database work of a small PUT (issue #12): a user without a quota limit is answered
//! without a quota warning check (the usage delta is folded a moment later); a user with one is
//! checked before the answer. A test binary of its own: it counts the statements logged by the
//! whole process.

mod common;

use common::*;

/// Reads of committed usage for the quota warning check (`shared::quota::fold_and_read`)
/// logged since `from`.
fn warning_checks(from: usize) -> usize {
    let logs = logs().lock().unwrap();
    let text = String::from_utf8_lossy(&logs[from..]);
    text.lines()
        .filter(|l| {
            l.contains("sqlx::query")
                && l.contains("WITH cfg AS MATERIALIZED")
                && l.contains("JOIN domains d ON d.id = u.domain_id")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_put_checks_quota_warnings_only_against_a_limit() {
    let _ = logs();
    // Alice has a limit, Bob none.
    let dav = Dav::start(Some(1_000_000)).await;
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("small.txt");
    std::fs::write(&local, vec![b's'; 4096]).unwrap();
    let local = local.to_string_lossy().into_owned();
    for (user, checks) in [(ALICE, 1), (BOB, 0)] {
        let from = logs().lock().unwrap().len();
        let r = dav.curl(user, &["-T", &local, &dav.url("/small.txt")]).await;
        assert_eq!(r.status, 201, "{user}");
        assert_eq!(warning_checks(from), checks, "{user}");
        // The file is in place as answered.
        assert_eq!(
            std::fs::read(dav.files_dir(user).join("small.txt")).unwrap().len(),
            4096
        );
    }
    // Bob's bytes are charged all the same (as a delta every reader counts, then folded).
    let db = &dav.env.context.db;
    let bob = shared::accounts::get_user(db, BOB).await.unwrap();
    assert_eq!(shared::quota::info(db, bob.id).await.unwrap().file_bytes, 4096);
    dav.stop().await;
}
