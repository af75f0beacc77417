//! Connection limits and timeouts (shared::net, session idle rules) against the real server over
//! real sockets, from several loopback addresses (all of 127.0.0.0/8 reaches the server).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Client, PASS, Server, USER};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

/// A TCP connection to `to` from the local address `ip`.
async fn connect_from(ip: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.expect("connect")
}

/// The first line the server sends ("" when it closes first), within five seconds.
async fn first_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(1) = stream.read(&mut byte).await {
            line.push(byte[0]);
            if byte[0] == b'\n' {
                break;
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "no greeting and no close within 5 s (waiting in the backlog?)"
    );
    String::from_utf8_lossy(&line).trim_end().to_string()
}

/// Whether the server closes `stream` within `within` (any bytes before the end are read).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

async fn login_from(server: &Server, ip: &str) -> Client {
    let mut stream = connect_from(ip, server.plain).await;
    let greeting = first_line(&mut stream).await;
    assert!(greeting.starts_with("* OK"), "{greeting}");
    let mut client = Client::new(Box::new(stream));
    client.ok(&format!("LOGIN {USER} \"{PASS}\"")).await;
    client
}

#[tokio::test]
async fn the_per_address_cap_answers_bye_and_other_addresses_get_in() {
    let server = Server::start_with(|c| c.imap.max_connections_per_address = 3, None).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = connect_from("127.0.0.1", server.plain).await;
        assert!(first_line(&mut s).await.starts_with("* OK"));
        held.push(s);
    }
    // RFC 9051 §7.1.5: BYE as the greeting, with the UNAVAILABLE code; then the close.
    let mut over = connect_from("127.0.0.1", server.plain).await;
    assert_eq!(first_line(&mut over).await, "* BYE [UNAVAILABLE] Too many connections");
    assert!(closed_within(&mut over, Duration::from_secs(5)).await);
    // The implicit-TLS listener shares the count: the refusal comes after the handshake.
    let tcp = connect_from("127.0.0.1", server.tls).await;
    let mut tls = server
        .tls_connector()
        .connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let mut text = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_string(&mut text)).await;
    assert!(text.starts_with("* BYE [UNAVAILABLE]"), "{text:?}");
    // Another address still gets in and logs in.
    let mut other = login_from(&server, "127.0.0.2").await;
    other.ok("NOOP").await;
    // A freed slot is usable again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = login_from(&server, "127.0.0.1").await;
    again.ok("NOOP").await;
}

#[tokio::test]
async fn a_flood_of_idle_connections_does_not_lock_out_a_login() {
    // The default caps (500 open, 50 per address) and timeouts.
    let server = Server::start().await;
    let (mut flood, mut greeted, mut refused) = (Vec::new(), 0, 0);
    // 500 idle connections from one address, then 500 more from eight others.
    let sources: Vec<String> = std::iter::repeat_n("127.0.0.1".to_string(), 500)
        .chain((0..500).map(|i| format!("127.0.0.{}", 2 + i % 8)))
        .collect();
    for ip in &sources {
        let mut s = connect_from(ip, server.plain).await;
        let line = first_line(&mut s).await;
        if line.starts_with("* OK") {
            greeted += 1;
        } else {
            // A refusal in words, or (past the refusals answered at once) a plain close.
            assert!(line.is_empty() || line.starts_with("* BYE [UNAVAILABLE]"), "{line}");
            refused += 1;
        }
        flood.push(s);
    }
    assert_eq!(greeted, 9 * 50, "50 per address from 9 addresses");
    assert_eq!(refused, 1000 - 9 * 50);
    let started = Instant::now();
    let mut user = login_from(&server, "127.0.0.10").await;
    user.ok("SELECT INBOX").await;
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[tokio::test]
async fn idle_unauthenticated_sessions_expire_and_logged_in_ones_stay() {
    let server = Server::start_with(
        |c| {
            c.imap.max_connections = 10;
            c.imap.login_timeout_secs = 2;
        },
        None,
    )
    .await;
    let mut user = login_from(&server, "127.0.0.1").await;
    let mut idle = Vec::new();
    for _ in 0..9 {
        let mut s = connect_from("127.0.0.2", server.plain).await;
        assert!(first_line(&mut s).await.starts_with("* OK"));
        idle.push(s);
    }
    // At the daemon's cap: refused in words at once, not left waiting in the backlog.
    let mut over = connect_from("127.0.0.3", server.plain).await;
    assert_eq!(first_line(&mut over).await, "* BYE [UNAVAILABLE] Too many connections");
    // The unauthenticated ones are told and closed after the short login timeout...
    let started = Instant::now();
    for s in &mut idle {
        assert_eq!(first_line(s).await, "* BYE idle for too long");
        assert!(closed_within(s, Duration::from_secs(2)).await);
    }
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    // ...the logged-in one is not, and a new login gets a freed slot.
    user.ok("NOOP").await;
    let mut late = login_from(&server, "127.0.0.3").await;
    late.ok("NOOP").await;
}

#[tokio::test]
async fn stalled_tls_handshakes_and_authenticate_are_dropped() {
    let server = Server::start_with(
        |c| {
            c.net.tls_handshake_timeout_secs = 1;
            c.imap.login_timeout_secs = 1;
        },
        None,
    )
    .await;
    // STARTTLS answered, then no ClientHello.
    let mut s = connect_from("127.0.0.1", server.plain).await;
    assert!(first_line(&mut s).await.starts_with("* OK"));
    tokio::io::AsyncWriteExt::write_all(&mut s, b"a STARTTLS\r\n")
        .await
        .unwrap();
    assert!(first_line(&mut s).await.starts_with("a OK"));
    assert!(
        closed_within(&mut s, Duration::from_secs(4)).await,
        "stalled STARTTLS kept open"
    );
    // Implicit TLS, nothing sent.
    let mut s = connect_from("127.0.0.1", server.tls).await;
    assert!(
        closed_within(&mut s, Duration::from_secs(4)).await,
        "stalled TLS handshake kept open"
    );
    // AUTHENTICATE's continuation never answered.
    let mut s = connect_from("127.0.0.1", server.plain).await;
    assert!(first_line(&mut s).await.starts_with("* OK"));
    tokio::io::AsyncWriteExt::write_all(&mut s, b"a AUTHENTICATE PLAIN\r\n")
        .await
        .unwrap();
    assert!(first_line(&mut s).await.starts_with('+'));
    assert_eq!(first_line(&mut s).await, "* BYE authentication timed out");
    assert!(
        closed_within(&mut s, Duration::from_secs(4)).await,
        "stalled AUTHENTICATE kept open"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_a_fetch_loses_its_slot() {
    let server = Server::start_with(
        |c| {
            c.net.write_timeout_secs = 1;
            c.imap.max_connections_per_address = 1;
        },
        None,
    )
    .await;
    let body: String = (0..300_000).map(|i| format!("line {i:035}\r\n")).collect();
    let message = common::message("big", &body);
    server.deliver(&message).await;
    // A small receive window that is never read: the server's writes stop making progress.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.5:0".parse().unwrap()).unwrap();
    let stream = socket.connect(server.plain).await.unwrap();
    let mut stalled = Client::new(Box::new(stream));
    assert!(stalled.line().await.starts_with("* OK"));
    stalled.ok(&format!("LOGIN {USER} \"{PASS}\"")).await;
    stalled.ok("SELECT INBOX").await;
    stalled.write(b"f FETCH 1 BODY[]\r\n").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The slot is held while the server waits...
    let mut s = connect_from("127.0.0.5", server.plain).await;
    assert!(first_line(&mut s).await.starts_with("* BYE [UNAVAILABLE]"));
    // ...until the write timeout drops the connection and frees it.
    let started = Instant::now();
    loop {
        let mut s = connect_from("127.0.0.5", server.plain).await;
        if first_line(&mut s).await.starts_with("* OK") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "slot never freed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stalled.stream.read_to_end(&mut rest)).await;
    assert!(rest.len() < message.len(), "the whole message was sent: {}", rest.len());
}
