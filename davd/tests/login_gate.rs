//! Login floods over real sockets (issue #8 items 4 and 5): parallel wrong passwords over WebDAV
//! (curl) get the configured number of argon2 checks and no more, and attempts spread over IMAP,
//! submission and WebDAV together share one budget per address, whichever daemon they reach.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use common::{ALICE, Dav, PW, curl};
use shared::Context;
use shared::net::Shutdown;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// curl with Basic credentials from `source` (a 127.0.0.0/8 address) against `url`.
async fn propfind(user: &str, password: &str, source: &str, url: &str) -> u16 {
    let args: Vec<String> = [
        "--interface",
        source,
        "-u",
        &format!("{user}:{password}"),
        "-X",
        "PROPFIND",
        "-H",
        "Depth: 0",
        url,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    curl(&args).await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_parallel_wrong_passwords_get_the_configured_checks_and_the_user_still_gets_in() {
    // Room for all 60 connections from one address: this test is about the login gate, not
    // the connection cap (50 per address by default, tests/limits.rs).
    let mut env = shared::testing::TestEnv::new().await;
    let mut config = (*env.context.config).clone();
    config.dav.max_connections_per_address = 100;
    env.context = Context::new(config, env.context.db.clone()).await.unwrap();
    env.add_user(ALICE, PW, None).await;
    let dav = Dav::serve(env).await;
    let url = dav.url("/");
    let started = Instant::now();
    let tasks: Vec<_> = (0..60)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { propfind(ALICE, "wrong", "127.0.0.1", &url).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let auth = &dav.env.context.auth;
    let checks = auth.verifications();
    // auth.failures_per_ip_per_minute = 10: a burst of 10, then one per 6 s.
    let budget = 10 + started.elapsed().as_secs() / 6;
    assert!((1..=budget).contains(&checks), "{checks} checks (budget {budget})");
    let failed = statuses.iter().filter(|s| **s == 401).count() as u64;
    let throttled = statuses.iter().filter(|s| **s == 429).count() as u64;
    assert_eq!((failed, failed + throttled), (checks, 60), "{statuses:?}");
    let cap = dav.env.context.config.auth.max_concurrent_checks as usize;
    assert!(auth.checks_high_water() <= cap);

    // The attacker's address is refused even with the right password...
    assert_eq!(propfind(ALICE, PW, "127.0.0.1", &url).await, 429);
    // ...while the real user, from a clean address, gets in.
    assert_eq!(propfind(ALICE, PW, "127.0.0.2", &url).await, 207);
}

/// One IMAP LOGIN on a fresh connection; the tagged answer.
async fn imap_login(addr: SocketAddr, user: &str, password: &str) -> String {
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    stream.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("* OK"), "{line}");
    stream
        .get_mut()
        .write_all(format!("a LOGIN {user} \"{password}\"\r\n").as_bytes())
        .await
        .unwrap();
    loop {
        line.clear();
        stream.read_line(&mut line).await.unwrap();
        if line.starts_with("a ") || line.is_empty() {
            return line;
        }
    }
}

/// One SMTP AUTH PLAIN on a fresh submission connection; the reply code.
async fn smtp_login(addr: SocketAddr, user: &str, password: &str) -> u16 {
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut stream = BufReader::new(stream);
    async fn reply(stream: &mut BufReader<TcpStream>) -> u16 {
        let mut line = String::new();
        loop {
            line.clear();
            stream.read_line(&mut line).await.unwrap();
            if line.len() < 4 || line.as_bytes()[3] == b' ' {
                return line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            }
        }
    }
    assert_eq!(reply(&mut stream).await, 220);
    stream.get_mut().write_all(b"EHLO attacker.test\r\n").await.unwrap();
    assert_eq!(reply(&mut stream).await, 250);
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
    stream
        .get_mut()
        .write_all(format!("AUTH PLAIN {token}\r\n").as_bytes())
        .await
        .unwrap();
    reply(&mut stream).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attempts_over_imap_smtp_and_webdav_share_one_budget() {
    let dav = Dav::start(None).await;
    let env = &dav.env;
    let shutdown = Shutdown::new();
    // imapd and smtpd as other processes would be: each its own Context (own Auth), same database.
    let imap_ctx = Context::new((*env.context.config).clone(), env.context.db.clone())
        .await
        .unwrap();
    let listeners = tinydc_imapd::bind(&imap_ctx).await.unwrap();
    let imap = listeners.plain_addr().unwrap();
    tokio::spawn(tinydc_imapd::serve(imap_ctx.clone(), listeners, shutdown.clone()));
    let mut smtp_config = (*env.context.config).clone();
    smtp_config.smtp.connections_per_ip_per_minute = 1000;
    let smtp_ctx = Context::new(smtp_config, env.context.db.clone()).await.unwrap();
    let dns = Arc::new(tinydc_smtpd::dns::Dns::fixed());
    let (bound, _smtp_task) = tinydc_smtpd::start(smtp_ctx.clone(), dns, shutdown.clone())
        .await
        .unwrap();
    let submission = bound.submission.unwrap();

    let started = Instant::now();
    let url = dav.url("/");
    let mut imap_tasks = Vec::new();
    let mut smtp_tasks = Vec::new();
    let mut dav_tasks = Vec::new();
    for _ in 0..20 {
        imap_tasks.push(tokio::spawn(imap_login(imap, ALICE, "wrong")));
        smtp_tasks.push(tokio::spawn(smtp_login(submission, ALICE, "wrong")));
        let url = url.clone();
        dav_tasks.push(tokio::spawn(async move {
            propfind(ALICE, "wrong", "127.0.0.1", &url).await
        }));
    }
    let mut failed = 0u64;
    for t in imap_tasks {
        let a = t.await.unwrap();
        assert!(
            a.contains("NO [AUTHENTICATIONFAILED]") || a.contains("NO [UNAVAILABLE]"),
            "{a}"
        );
        failed += a.contains("AUTHENTICATIONFAILED") as u64;
    }
    for t in smtp_tasks {
        let code = t.await.unwrap();
        assert!(code == 535 || code == 454, "{code}");
        failed += (code == 535) as u64;
    }
    for t in dav_tasks {
        let status = t.await.unwrap();
        assert!(status == 401 || status == 429, "{status}");
        failed += (status == 401) as u64;
    }
    let per_daemon = [
        imap_ctx.auth.verifications(),
        smtp_ctx.auth.verifications(),
        env.context.auth.verifications(),
    ];
    let checks: u64 = per_daemon.iter().sum();
    let budget = 10 + started.elapsed().as_secs() / 6;
    assert!(
        (1..=budget).contains(&checks),
        "{checks} checks {per_daemon:?} for 60 attempts over three daemons (budget {budget})"
    );
    assert_eq!(failed, checks);
    // Every daemon now refuses the address, whichever one it tries.
    assert!(imap_login(imap, ALICE, PW).await.contains("NO [UNAVAILABLE]"));
    assert_eq!(smtp_login(submission, ALICE, PW).await, 454);
    assert_eq!(propfind(ALICE, PW, "127.0.0.1", &url).await, 429);
    shutdown.cancel();
}
