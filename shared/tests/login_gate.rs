//! The login gate (PostgreSQL, shared by every process) and the cap on argon2 work, driven through
//! `Auth::login` against real PostgreSQL. The daemons' own tests repeat the floods over sockets.

use std::net::IpAddr;
use std::sync::Arc;

use shared::auth::{Auth, AuthError};
use shared::config::AuthConfig;
use shared::testing::TestEnv;

fn config(edit: impl FnOnce(&mut AuthConfig)) -> AuthConfig {
    let mut c = shared::Config::defaults(std::path::Path::new("/nonexistent")).auth;
    edit(&mut c);
    c
}

async fn gate_rows(env: &TestEnv) -> Vec<(String, String)> {
    sqlx::query_as("SELECT scope, key FROM login_gate ORDER BY scope, key")
        .fetch_all(&env.context.db)
        .await
        .unwrap()
}

/// Run `n` wrong-password logins for alice from `ip` at once, through `auths` in turn (several
/// `Auth`s over one database are several daemons).
async fn flood(auths: &[Arc<Auth>], ip: IpAddr, n: usize) -> Vec<Result<(), String>> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let auth = auths[i % auths.len()].clone();
            tokio::spawn(async move {
                match auth.login("alice@example.test", "wrong", ip).await {
                    Ok(_) => Err("logged in".to_string()),
                    Err(AuthError::Invalid) => Ok(()),
                    Err(e) => Err(e.to_string()),
                }
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_attempts_from_one_address_across_processes_get_one_budget() {
    let env = TestEnv::new().await;
    env.add_user("alice@example.test", "s3cret", None).await;
    // Three "daemons", each with its own Auth (its own process state), one database.
    let c = config(|c| c.max_waiting_checks = 100);
    let auths: Vec<Arc<Auth>> = (0..3)
        .map(|_| Arc::new(Auth::new(env.context.db.clone(), &c)))
        .collect();
    let attacker: IpAddr = "203.0.113.9".parse().unwrap();
    let started = std::time::Instant::now();
    let results = flood(&auths, attacker, 60).await;
    let checks: u64 = auths.iter().map(|a| a.verifications()).sum();
    // Budget: 10 per minute as a burst, then one per 6 s.
    let budget = 10 + started.elapsed().as_secs() / 6;
    assert!(
        (1..=budget).contains(&checks),
        "{checks} password checks for 60 parallel attempts (budget {budget})"
    );
    let invalid = results.iter().filter(|r| r.is_ok()).count() as u64;
    assert_eq!(
        invalid, checks,
        "each check answered Invalid, the rest Throttled: {results:?}"
    );
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().is_ok() || r.as_ref().unwrap_err().contains("too many failed logins"))
    );
    // The real user, from a clean address, still gets in (through any daemon).
    let home: IpAddr = "198.51.100.7".parse().unwrap();
    auths[1].login("alice@example.test", "s3cret", home).await.unwrap();
    // The attacker's address stays refused, even with the right password.
    assert!(matches!(
        auths[2].login("alice@example.test", "s3cret", attacker).await,
        Err(AuthError::Throttled { .. })
    ));
}

#[tokio::test]
async fn successes_are_refunded_and_never_lock_anyone_out() {
    let env = TestEnv::new().await;
    env.add_user("alice@example.test", "s3cret", None).await;
    let auth = &env.context.auth;
    let ip: IpAddr = "192.0.2.44".parse().unwrap();
    // Three times the per-address budget and five times the account's, all correct.
    for _ in 0..30 {
        auth.login("alice@example.test", "s3cret", ip).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn argon2_work_in_flight_never_exceeds_the_cap_and_the_queue_is_bounded() {
    let env = TestEnv::new().await;
    env.add_user("alice@example.test", "s3cret", None).await;
    // A generous gate so the cap is what bites: 60 attempts from 60 addresses at once.
    let c = config(|c| {
        c.failures_per_ip_per_minute = 1000;
        c.failures_per_account_per_minute = 1000;
        c.max_concurrent_checks = 2;
        c.max_waiting_checks = 8;
    });
    let auth = Arc::new(Auth::new(env.context.db.clone(), &c));
    let tasks: Vec<_> = (0..60u8)
        .map(|i| {
            let auth = auth.clone();
            tokio::spawn(async move {
                let ip = IpAddr::from([198, 18, 0, i]);
                auth.login("alice@example.test", "wrong", ip).await
            })
        })
        .collect();
    let (mut invalid, mut busy) = (0u64, 0i64);
    for t in tasks {
        match t.await.unwrap() {
            Err(AuthError::Invalid) => invalid += 1,
            Err(AuthError::Busy) => busy += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(auth.checks_high_water(), 2, "the cap is reached and never passed");
    assert_eq!(auth.verifications(), invalid);
    assert!(busy > 0, "beyond 2 running and 8 waiting, logins are refused at once");
    assert!(invalid >= 10, "running and waiting logins are checked: {invalid}");
    // A refused (busy) attempt was never checked and its charge was given back (tat moved back
    // below the expiry the charge set); a checked one marked its address as failed.
    let (failed, refunded): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE failed_at IS NOT NULL),
                count(*) FILTER (WHERE failed_at IS NULL AND tat < expires)
         FROM login_gate WHERE scope = 'ip'",
    )
    .fetch_one(&env.context.db)
    .await
    .unwrap();
    assert_eq!((failed as u64, refunded), (invalid, busy));
}

#[tokio::test]
async fn expired_gate_rows_are_pruned() {
    let env = TestEnv::new().await;
    env.add_user("alice@example.test", "s3cret", None).await;
    let auth = &env.context.auth;
    for n in 0..3u8 {
        let ip = IpAddr::from([192, 0, 2, n]);
        assert!(matches!(
            auth.login(&format!("user{n}@example.test"), "x", ip).await,
            Err(AuthError::Invalid)
        ));
    }
    assert_eq!(gate_rows(&env).await.len(), 6, "{:?}", gate_rows(&env).await);
    // Fresh rows are not pruned.
    assert_eq!(auth.prune_gate().await.unwrap(), 0);
    // Time passes (16 minutes: past the budget window and the 15 minutes of suspicion) for two
    // of the addresses and their accounts.
    sqlx::query(
        "UPDATE login_gate SET tat = tat - interval '16 minutes', expires = expires - interval '16 minutes',
             failed_at = failed_at - interval '16 minutes'
         WHERE key IN ('192.0.2.0', '192.0.2.1', 'user0@example.test', 'user1@example.test')",
    )
    .execute(&env.context.db)
    .await
    .unwrap();
    // A new process prunes with its first login, without being asked.
    let fresh = Auth::new(env.context.db.clone(), &env.context.config.auth);
    fresh
        .login("alice@example.test", "s3cret", "192.0.2.9".parse().unwrap())
        .await
        .unwrap();
    let left = gate_rows(&env).await;
    let keys: Vec<&str> = left.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(
        keys,
        ["alice@example.test", "user2@example.test", "192.0.2.2", "192.0.2.9"],
        "only live rows stay"
    );
}

#[tokio::test]
async fn an_over_long_name_is_refused_without_being_stored() {
    let env = TestEnv::new().await;
    let auth = &env.context.auth;
    let ip: IpAddr = "192.0.2.77".parse().unwrap();
    for len in [321, 4096, 64 * 1024] {
        let name = format!("{}@example.test", "a".repeat(len));
        assert!(matches!(auth.login(&name, "x", ip).await, Err(AuthError::Invalid)));
    }
    assert!(gate_rows(&env).await.is_empty(), "nothing stored, not even the address");
    assert_eq!(auth.verifications(), 0, "no password check for an impossible name");
    // The longest possible address is still checked (and counted) normally.
    let name = format!("{}@{}", "a".repeat(64), "b".repeat(255));
    assert!(matches!(auth.login(&name, "x", ip).await, Err(AuthError::Invalid)));
    assert_eq!(auth.verifications(), 1);
    assert_eq!(gate_rows(&env).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_devices_behind_one_address_logging_in_at_once_all_get_in() {
    let env = TestEnv::new().await;
    env.add_user("alice@example.test", "s3cret", None).await;
    // The cache off: every one of these logins is a full password check.
    let auth = Arc::new(Auth::new(
        env.context.db.clone(),
        &config(|c| {
            c.max_waiting_checks = 100;
            c.credential_cache_secs = 0;
        }),
    ));
    let ip: IpAddr = "192.0.2.45".parse().unwrap();
    // Three times the per-address budget, all at once and all correct: the attempts beyond the
    // budget wait for the successes to give their charges back.
    let tasks: Vec<_> = (0..30)
        .map(|_| {
            let auth = auth.clone();
            tokio::spawn(async move { auth.login("alice@example.test", "s3cret", ip).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(auth.verifications(), 30);
}

/// The verified-credential cache (auth/cache.rs): a repeated correct login skips argon2id, a
/// wrong password always pays it and is counted by the gate, and a changed password is never
/// answered from the cache (the old one fails, the new one is checked in full).
#[tokio::test]
async fn repeated_logins_skip_argon2_but_failures_and_changed_passwords_do_not() {
    let env = TestEnv::new().await;
    env.add_user("alice@example.test", "s3cret", None).await;
    let auth = Auth::new(env.context.db.clone(), &config(|_| {}));
    let ip: IpAddr = "192.0.2.80".parse().unwrap();
    for _ in 0..5 {
        let user = auth.login("Alice@Example.test", "s3cret", ip).await.unwrap();
        assert_eq!(user.address, "alice@example.test");
    }
    assert_eq!(auth.verifications(), 1, "one argon2 run for five logins");
    assert_eq!(auth.cache_hits(), 4);
    for _ in 0..3 {
        assert!(matches!(
            auth.login("alice@example.test", "s3cre", ip).await,
            Err(AuthError::Invalid)
        ));
    }
    assert_eq!(auth.verifications(), 4, "every wrong password is checked in full");
    // The failures were charged to the address like any (their gate rows exist).
    assert!(
        gate_rows(&env).await.iter().any(|(scope, _)| scope == "ip"),
        "{:?}",
        gate_rows(&env).await
    );

    shared::accounts::set_password(&env.context.db, "alice@example.test", "new one")
        .await
        .unwrap();
    assert!(matches!(
        auth.login("alice@example.test", "s3cret", ip).await,
        Err(AuthError::Invalid)
    ));
    assert_eq!(
        auth.verifications(),
        5,
        "the old password is checked against the new hash"
    );
    auth.login("alice@example.test", "new one", ip).await.unwrap();
    assert_eq!(auth.verifications(), 6);
    auth.login("alice@example.test", "new one", ip).await.unwrap();
    assert_eq!(auth.verifications(), 6);
    assert_eq!(auth.cache_hits(), 5);

    // An address over its budget is refused before the cache is looked at, even with the
    // right (remembered) password.
    let attacker: IpAddr = "192.0.2.81".parse().unwrap();
    let mut throttled = false;
    for i in 0..20 {
        // A different name each time, so it is the address's budget that runs out.
        match auth.login(&format!("nobody{i}@example.test"), "guess", attacker).await {
            Err(AuthError::Throttled { .. }) => {
                throttled = true;
                break;
            }
            Err(AuthError::Invalid) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(throttled, "the address reached its budget");
    let hits = auth.cache_hits();
    let answer = auth.login("alice@example.test", "new one", attacker).await;
    assert!(matches!(answer, Err(AuthError::Throttled { .. })), "{answer:?}");
    assert_eq!(auth.cache_hits(), hits);

    // With the cache off every login is checked.
    let off = Auth::new(env.context.db.clone(), &config(|c| c.credential_cache_secs = 0));
    for _ in 0..2 {
        off.login("alice@example.test", "new one", ip).await.unwrap();
    }
    assert_eq!(off.verifications(), 2);
    assert_eq!(off.cache_hits(), 0);
}

/// A refund locks the address's row before the account's, as a charge does, whatever order the
/// rows lie in on disk: here the account's row comes first and a "charge" holds the address's
/// row and then asks for the account's. Before, the refund's one UPDATE locked the account's row
/// first and the two waited for each other until PostgreSQL's deadlock check failed one (seen as
/// a WebDAV 503 under parallel uploads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_takes_the_rows_in_the_order_a_charge_does() {
    use shared::auth::gate::Gate;
    let env = TestEnv::new().await;
    let ip: IpAddr = "192.0.2.77".parse().unwrap();
    // The account's row first in the heap, then the address's.
    for (scope, key) in [("account", "alice@example.test"), ("ip", "192.0.2.77")] {
        sqlx::query(
            "INSERT INTO login_gate (scope, key, tat, allowed, expires)
             VALUES ($1, $2, now() + interval '1 minute', true, now() + interval '1 minute')",
        )
        .bind(scope)
        .bind(key)
        .execute(&env.context.db)
        .await
        .unwrap();
    }
    let mut charge = env.context.db.begin().await.unwrap();
    sqlx::query("SET LOCAL lock_timeout = '5s'")
        .execute(&mut *charge)
        .await
        .unwrap();
    sqlx::query("SELECT 1 FROM login_gate WHERE scope = 'ip' AND key = '192.0.2.77' FOR UPDATE")
        .execute(&mut *charge)
        .await
        .unwrap();
    let gate = Gate::new(env.context.db.clone(), 10, 10);
    let refund = tokio::spawn(async move { gate.refund(ip, Some("alice@example.test")).await });
    // Time for the refund to take whatever it takes before it waits.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let account =
        sqlx::query("SELECT 1 FROM login_gate WHERE scope = 'account' AND key = 'alice@example.test' FOR UPDATE")
            .execute(&mut *charge)
            .await;
    assert!(
        account.is_ok(),
        "the charge could not lock the account's row: {account:?}"
    );
    charge.commit().await.unwrap();
    refund.await.unwrap();
    // The refund went through after the charge: both rows gave one interval back.
    let ahead: Vec<f64> =
        sqlx::query_scalar("SELECT extract(epoch FROM tat - now())::float8 FROM login_gate ORDER BY scope")
            .fetch_all(&env.context.db)
            .await
            .unwrap();
    assert!(ahead.iter().all(|&s| s < 55.0), "{ahead:?}");
}
