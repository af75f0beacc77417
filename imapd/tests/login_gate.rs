//! Login floods over real sockets against imapd (issue #8 items 4 and 5): parallel wrong
//! passwords from one address get the configured number of argon2 checks and no more, at most
//! `auth.max_concurrent_checks` run at once, and the real user still gets in from elsewhere.

mod common;

use std::net::SocketAddr;
use std::time::Instant;

use common::{Client, PASS, Server, USER};
use tokio::net::TcpSocket;

/// A plain connection from `source` (any 127.0.0.0/8 address reaches the loopback listener).
async fn connect_from(server: &Server, source: [u8; 4]) -> Client {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    let stream = socket.connect(server.plain).await.expect("connect");
    let mut client = Client::new(Box::new(stream));
    let greeting = client.line().await;
    assert!(greeting.starts_with("* OK"), "{greeting}");
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_parallel_wrong_passwords_get_the_configured_checks_and_the_user_still_gets_in() {
    // Room for all 60 connections from one address: the connection cap is tests/limits.rs's.
    let server = Server::start_with(|c| c.imap.max_connections_per_address = 100, None).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..60 {
        let mut c = server.connect().await;
        tasks.push(tokio::spawn(async move {
            c.cmd(&format!("LOGIN {USER} \"wrong\"")).await.tagged
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let checks = server.ctx.auth.verifications();
    // auth.failures_per_ip_per_minute = 10: a burst of 10, then one per 6 s.
    let budget = 10 + started.elapsed().as_secs() / 6;
    assert!((1..=budget).contains(&checks), "{checks} checks (budget {budget})");
    let failed = answers
        .iter()
        .filter(|a| a.contains("NO [AUTHENTICATIONFAILED]"))
        .count() as u64;
    let throttled = answers.iter().filter(|a| a.contains("NO [UNAVAILABLE]")).count() as u64;
    assert_eq!((failed, failed + throttled), (checks, 60), "{answers:#?}");
    let cap = server.ctx.config.auth.max_concurrent_checks as usize;
    assert!(server.ctx.auth.checks_high_water() <= cap);

    // The attacker's address is refused even with the right password...
    let mut c = server.connect().await;
    let r = c.cmd(&format!("LOGIN {USER} \"{PASS}\"")).await;
    assert!(r.tagged.contains("NO [UNAVAILABLE]"), "{r:?}");
    // ...while the real user, from a clean address, logs in.
    let mut c = connect_from(&server, [127, 0, 0, 2]).await;
    c.ok(&format!("LOGIN {USER} \"{PASS}\"")).await;
    c.ok("SELECT INBOX").await;
}

#[tokio::test]
async fn an_over_long_name_is_refused_and_not_stored() {
    let server = Server::start().await;
    let mut c = server.connect().await;
    let name = "n".repeat(4000);
    let tag = c.next_tag();
    c.write(format!("{tag} LOGIN {{{}+}}\r\n{name} \"x\"\r\n", name.len()).as_bytes())
        .await;
    let r = c.until(&tag).await;
    assert!(r.tagged.contains("NO [AUTHENTICATIONFAILED]"), "{r:?}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM login_gate")
        .fetch_one(&server.ctx.db)
        .await
        .unwrap();
    assert_eq!(rows, 0, "nothing stored for a name no address can have");
    assert_eq!(server.ctx.auth.verifications(), 0);
}
