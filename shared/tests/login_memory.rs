//! Memory under a login flood (issue #8 item 5): 180 wrong passwords, 60 at a time, must not grow
//! the process by more than `auth.max_concurrent_checks` argon2 buffers (19 MiB each). Before the
//! cap and the reused buffers, 60 parallel attempts took a daemon from 8 to 470 MiB. Once the
//! logins stop, the buffers are given back (issue #12: a daemon kept them for good). Alone in its
//! binary so that no other test's memory is measured.

use std::net::IpAddr;
use std::sync::Arc;

use shared::auth::{Auth, AuthError};
use shared::testing::TestEnv;

/// Resident memory of this process, in MiB.
fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_login_flood_holds_at_most_the_capped_argon2_memory_and_gives_it_back() {
    // The allocator setting every daemon makes at start.
    shared::daemon::return_large_buffers_to_the_system();
    let env = TestEnv::new().await;
    env.add_user("alice@example.test", "s3cret", None).await;
    let mut config = env.context.config.auth.clone();
    // A generous gate (every attempt comes from its own address) so the cap is what bites.
    config.failures_per_ip_per_minute = 1000;
    config.failures_per_account_per_minute = 1000;
    config.max_waiting_checks = 100;
    assert_eq!(config.max_concurrent_checks, 2, "the default");
    let auth = Arc::new(Auth::new(env.context.db.clone(), &config));
    let before = rss_mib();
    for round in 0..3u8 {
        let tasks: Vec<_> = (0..60u8)
            .map(|i| {
                let auth = auth.clone();
                tokio::spawn(async move {
                    let ip = IpAddr::from([198, 18, round, i]);
                    auth.login("alice@example.test", "wrong", ip).await
                })
            })
            .collect();
        for t in tasks {
            assert!(matches!(t.await.unwrap(), Err(AuthError::Invalid)));
        }
    }
    let grown = rss_mib().saturating_sub(before);
    assert_eq!(auth.verifications(), 180);
    assert_eq!(auth.checks_high_water(), 2);
    // Two 19 MiB buffers, plus slack for everything else.
    assert!(grown <= 2 * 19 + 40, "resident memory grew by {grown} MiB");

    // Quiet now: each checking thread gives its buffer back after RELEASE_AFTER_IDLE.
    let after_flood = rss_mib();
    tokio::time::sleep(shared::auth::work::RELEASE_AFTER_IDLE + std::time::Duration::from_secs(2)).await;
    let idle = rss_mib();
    assert!(
        idle + 2 * 19 - 4 <= after_flood && idle <= before + 12,
        "resident memory before the flood {before} MiB, after it {after_flood} MiB, idle {idle} MiB"
    );
}
