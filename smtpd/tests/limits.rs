//! Connection limits and timeouts (shared::net, session timeouts) against the real server over
//! real sockets, from several loopback addresses (all of 127.0.0.0/8 reaches the server).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Client, start_with};
use tinydc_smtpd::dns::Dns;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const USER: &str = "alice@example.test";
const PASS: &str = "secret-a";
const TOO_MANY: &str = "Too many connections, try again later";

async fn connect_from(ip: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.expect("connect")
}

/// A client from `ip` and its greeting, which must come within five seconds (not wait in the
/// backlog); code 0 when the server closed without a word.
async fn greeted_from(ip: &str, to: SocketAddr) -> (Client, common::Answer) {
    let mut client = Client::over(Box::new(connect_from(ip, to).await));
    let greeting = tokio::time::timeout(Duration::from_secs(5), client.read())
        .await
        .expect("a greeting or a refusal within 5 s");
    (client, greeting)
}

async fn closed_within(client: &mut Client, within: Duration) -> bool {
    tokio::time::timeout(within, async {
        loop {
            if client.read().await.code == 0 {
                return;
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn the_caps_answer_421_and_other_addresses_get_in() {
    let h = start_with(
        |c| {
            c.smtp.max_connections = 4;
            c.smtp.max_connections_per_address = 2;
        },
        Dns::fixed(),
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let (c, greeting) = greeted_from("127.0.0.1", h.mx()).await;
        assert_eq!(greeting.code, 220);
        held.push(c);
    }
    // The per-address cap, counted over all listeners: RFC 5321 §3.8 421, then the close.
    let (mut over, refusal) = greeted_from("127.0.0.1", h.submission()).await;
    assert_eq!((refusal.code, refusal.text()), (421, format!("4.7.0 {TOO_MANY}")));
    assert!(closed_within(&mut over, Duration::from_secs(5)).await);
    // Another address gets in, up to the daemon's cap.
    for _ in 0..2 {
        let (c, greeting) = greeted_from("127.0.0.2", h.submission()).await;
        assert_eq!(greeting.code, 220);
        held.push(c);
    }
    let (_, refusal) = greeted_from("127.0.0.3", h.mx()).await;
    assert_eq!((refusal.code, refusal.text()), (421, format!("4.7.0 {TOO_MANY}")));
    // On the implicit-TLS port the refusal comes after the handshake.
    let tcp = connect_from("127.0.0.3", h.submissions()).await;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = h.tls_client().connect(name, tcp).await.expect("handshake");
    let mut c = Client::over(Box::new(tls));
    assert_eq!(c.read().await.code, 421);
    // A freed slot is usable again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut c, greeting) = greeted_from("127.0.0.3", h.mx()).await;
    assert_eq!(greeting.code, 220);
    c.expect("EHLO client.test", 250).await;
}

#[tokio::test]
async fn two_hundred_idle_connections_do_not_lock_out_a_sender() {
    // The default caps (200 open, 20 per address) and timeouts.
    let h = start_with(|_| {}, Dns::fixed()).await;
    h.add_user(USER, PASS, None).await;
    let (mut flood, mut greeted, mut refused) = (Vec::new(), 0, 0);
    let sources: Vec<String> = std::iter::repeat_n("127.0.0.1".to_string(), 50)
        .chain((0..200).map(|i| format!("127.0.0.{}", 2 + i % 8)))
        .collect();
    for ip in &sources {
        let (c, greeting) = greeted_from(ip, h.submission()).await;
        match greeting.code {
            220 => greeted += 1,
            // In words, or (past the refusals answered at once) a plain close.
            421 | 0 => refused += 1,
            other => panic!("{other} {greeting:?}"),
        }
        flood.push(c);
    }
    assert_eq!(greeted, 9 * 20, "20 per address from 9 addresses");
    assert_eq!(refused, 250 - 9 * 20);
    let started = Instant::now();
    let (mut c, greeting) = greeted_from("127.0.0.10", h.submission()).await;
    assert_eq!(greeting.code, 220);
    c.expect("EHLO client.test", 250).await;
    assert_eq!(c.auth_plain(USER, PASS).await.code, 235);
    c.expect(&format!("MAIL FROM:<{USER}>"), 250).await;
    c.expect(&format!("RCPT TO:<{USER}>"), 250).await;
    assert_eq!(
        c.data(&common::message(USER, USER, "through the flood")).await.code,
        250
    );
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

#[tokio::test]
async fn idle_submission_sessions_expire_before_auth_but_not_after() {
    let h = start_with(
        |c| {
            c.smtp.max_connections = 6;
            c.smtp.login_timeout_secs = 2;
        },
        Dns::fixed(),
    )
    .await;
    h.add_user(USER, PASS, None).await;
    let (mut user, _) = greeted_from("127.0.0.1", h.submission()).await;
    user.expect("EHLO client.test", 250).await;
    assert_eq!(user.auth_plain(USER, PASS).await.code, 235);
    let (mut mx, _) = greeted_from("127.0.0.4", h.mx()).await;
    mx.expect("EHLO sender.test", 250).await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        let (c, greeting) = greeted_from("127.0.0.2", h.submission()).await;
        assert_eq!(greeting.code, 220);
        idle.push(c);
    }
    let (_, refusal) = greeted_from("127.0.0.3", h.submission()).await;
    assert_eq!(refusal.code, 421, "at the daemon's cap: refused at once");
    let started = Instant::now();
    for c in &mut idle {
        let answer = tokio::time::timeout(Duration::from_secs(5), c.read())
            .await
            .expect("timed out in time");
        assert_eq!(answer.code, 421, "{answer:?}");
        assert!(closed_within(c, Duration::from_secs(2)).await);
    }
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    // The authenticated session and the MX session (RFC 5321's 5 minutes) are still there.
    user.expect("NOOP", 250).await;
    mx.expect("NOOP", 250).await;
    let (mut late, greeting) = greeted_from("127.0.0.3", h.submission()).await;
    assert_eq!(greeting.code, 220);
    late.expect("EHLO client.test", 250).await;
}

#[tokio::test]
async fn a_stalled_starttls_handshake_is_dropped() {
    let h = start_with(|c| c.net.tls_handshake_timeout_secs = 1, Dns::fixed()).await;
    let (mut c, _) = greeted_from("127.0.0.1", h.mx()).await;
    c.expect("EHLO client.test", 250).await;
    c.expect("STARTTLS", 220).await;
    assert!(
        closed_within(&mut c, Duration::from_secs(4)).await,
        "stalled STARTTLS kept open"
    );
    let mut tcp = connect_from("127.0.0.1", h.submissions()).await;
    let mut buf = [0u8; 64];
    let ended = tokio::time::timeout(Duration::from_secs(4), tcp.read(&mut buf)).await;
    assert!(matches!(ended, Ok(Ok(0) | Err(_))), "stalled implicit TLS kept open");
}

#[tokio::test]
async fn a_client_that_stops_reading_loses_its_slot() {
    let h = start_with(
        |c| {
            c.net.write_timeout_secs = 1;
            c.smtp.max_connections_per_address = 1;
        },
        Dns::fixed(),
    )
    .await;
    // A small receive window never read, and pipelined commands whose replies fill it.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.5:0".parse().unwrap()).unwrap();
    let stream = socket.connect(h.mx()).await.unwrap();
    let (_reader, mut writer) = stream.into_split();
    let pipelined = tokio::spawn(async move {
        let noops = b"NOOP\r\n".repeat(1_000_000);
        let _ = tokio::time::timeout(Duration::from_secs(20), writer.write_all(&noops)).await;
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, refusal) = greeted_from("127.0.0.5", h.mx()).await;
    assert_eq!(refusal.code, 421, "the stalled client holds its slot");
    let started = Instant::now();
    loop {
        let (_, greeting) = greeted_from("127.0.0.5", h.mx()).await;
        if greeting.code == 220 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "slot never freed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pipelined.abort();
}
