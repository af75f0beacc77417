//! Login floods over real sockets against submission (issue #8 items 4 and 5): parallel wrong
//! passwords from one address get the configured number of argon2 checks and no more, at most
//! `auth.max_concurrent_checks` run at once, and the real user still gets in from elsewhere
//! (python's smtplib from another loopback address).

mod common;

use std::process::Command;
use std::time::Instant;

use common::{Client, start_with};
use tinydc_smtpd::dns::Dns;

const USER: &str = "alice@example.test";
const PASS: &str = "alice password";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_parallel_wrong_passwords_get_the_configured_checks_and_the_user_still_gets_in() {
    // Enough connections per minute that the connection limiter is not what answers.
    // Enough connections per minute and per address that the connection limits are not what
    // answers (tests/limits.rs tests those).
    let h = start_with(
        |c| {
            c.smtp.connections_per_ip_per_minute = 1000;
            c.smtp.max_connections_per_address = 100;
        },
        Dns::fixed(),
    )
    .await;
    h.add_user(USER, PASS, None).await;
    let addr = h.submission();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..60 {
        let mut c = Client::connect(addr).await;
        c.expect("EHLO attacker.test", 250).await;
        tasks.push(tokio::spawn(async move { c.auth_plain(USER, "wrong").await }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let checks = h.ctx.auth.verifications();
    // auth.failures_per_ip_per_minute = 10: a burst of 10, then one per 6 s.
    let budget = 10 + started.elapsed().as_secs() / 6;
    assert!((1..=budget).contains(&checks), "{checks} checks (budget {budget})");
    let failed = answers.iter().filter(|a| a.code == 535).count() as u64;
    let throttled = answers
        .iter()
        .filter(|a| a.code == 454 && a.text().contains("Too many failed logins"))
        .count() as u64;
    assert_eq!((failed, failed + throttled), (checks, 60), "{answers:#?}");
    let cap = h.ctx.config.auth.max_concurrent_checks as usize;
    assert!(h.ctx.auth.checks_high_water() <= cap);

    // The attacker's address is refused even with the right password...
    let mut c = Client::connect(addr).await;
    c.expect("EHLO attacker.test", 250).await;
    assert_eq!(c.auth_plain(USER, PASS).await.code, 454);
    // ...while the real user, from a clean address, logs in with smtplib.
    assert!(common::have("python3"), "python3 is needed");
    let script = format!(
        "import smtplib\ns = smtplib.SMTP('127.0.0.1', {port}, source_address=('127.0.0.2', 0), timeout=20)\n\
         s.ehlo('home.test')\ns.login('{USER}', '{PASS}')\ns.quit()\nprint('logged in')\n",
        port = addr.port()
    );
    let out = tokio::task::spawn_blocking(move || Command::new("python3").arg("-c").arg(script).output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("logged in"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn an_over_long_name_is_refused_and_not_stored() {
    let h = start_with(|_| {}, Dns::fixed()).await;
    let mut c = Client::connect(h.submission()).await;
    c.expect("EHLO attacker.test", 250).await;
    let name = "n".repeat(400);
    assert_eq!(c.auth_plain(&name, "x").await.code, 535);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM login_gate")
        .fetch_one(&h.ctx.db)
        .await
        .unwrap();
    assert_eq!(rows, 0, "nothing stored for a name no address can have");
    assert_eq!(h.ctx.auth.verifications(), 0);
}
