//! Connection limits and timeouts (shared::net, hyper's header timer) against the real server
//! over real sockets, from several loopback addresses (all of 127.0.0.0/8 reaches the server).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use shared::testing::TestEnv;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;

/// davd with its config changed by `edit`, and alice.
async fn start_with(edit: impl FnOnce(&mut shared::Config)) -> Dav {
    let mut env = TestEnv::new().await;
    let mut config = (*env.context.config).clone();
    edit(&mut config);
    env.context = shared::Context::new(config, env.context.db.clone()).await.unwrap();
    env.add_user(ALICE, PW, None).await;
    Dav::serve(env).await
}

async fn tcp_from(ip: &str, to: SocketAddr, recv_buffer: Option<u32>) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.expect("connect")
}

async fn tls_from(dav: &Dav, ip: &str, recv_buffer: Option<u32>) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&dav.env.context.config.tls.cert_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tcp_from(ip, dav.addr, recv_buffer).await;
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

/// OPTIONS / (answered without credentials) with curl from the local address `ip`.
async fn options_from(dav: &Dav, ip: &str) -> Reply {
    let url = format!("https://127.0.0.1:{}/", dav.addr.port());
    curl(&["--interface".into(), ip.into(), "-X".into(), "OPTIONS".into(), url]).await
}

/// Whether the server closes the connection within `within` (bytes before the end are kept).
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, within: Duration) -> (bool, Vec<u8>) {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let ended = tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (ended, got)
}

#[tokio::test]
async fn the_per_address_cap_answers_503_and_other_addresses_get_in() {
    let dav = start_with(|c| c.dav.max_connections_per_address = 2).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tcp_from("127.0.0.1", dav.addr, None).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // RFC 9110 §15.6.4: 503 with Retry-After, after the TLS handshake.
    let r = options_from(&dav, "127.0.0.1").await;
    assert_eq!(r.status, 503, "{}", r.headers);
    assert_eq!(r.header("retry-after").as_deref(), Some("60"));
    assert_eq!(options_from(&dav, "127.0.0.2").await.status, 200);
    // A freed slot is usable again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(options_from(&dav, "127.0.0.1").await.status, 200);
}

#[tokio::test]
async fn silent_and_idle_keep_alive_connections_are_closed() {
    let dav = start_with(|c| c.dav.header_timeout_secs = 1).await;
    // No request at all after the handshake.
    let mut tls = tls_from(&dav, "127.0.0.1", None).await;
    let started = Instant::now();
    assert!(
        closed_within(&mut tls, Duration::from_secs(4)).await.0,
        "silent client kept"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    // One request, answered, then an idle keep-alive connection.
    let mut tls = tls_from(&dav, "127.0.0.1", None).await;
    tls.write_all(b"OPTIONS / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let (ended, got) = closed_within(&mut tls, Duration::from_secs(4)).await;
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"), "{got:?}");
    assert!(ended, "idle keep-alive connection kept");
}

#[tokio::test]
async fn a_client_that_stops_reading_a_get_loses_its_slot() {
    let dav = start_with(|c| {
        c.net.write_timeout_secs = 1;
        c.dav.max_connections_per_address = 1;
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("big.bin");
    std::fs::write(&src, vec![b'x'; 16 << 20]).unwrap();
    let put = dav
        .curl(ALICE, &["-T", &src.to_string_lossy(), &dav.url("/big.bin")])
        .await;
    assert_eq!(put.status, 201, "{}", put.headers);
    // A GET whose response is never read, over a small receive window.
    let mut stalled = tls_from(&dav, "127.0.0.5", Some(4096)).await;
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{ALICE}:{PW}"));
    let request = format!("GET /big.bin HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {token}\r\n\r\n");
    stalled.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        options_from(&dav, "127.0.0.5").await.status,
        503,
        "the stalled client holds its slot"
    );
    let started = Instant::now();
    while options_from(&dav, "127.0.0.5").await.status != 200 {
        assert!(started.elapsed() < Duration::from_secs(10), "slot never freed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, got) = closed_within(&mut stalled, Duration::from_secs(10)).await;
    assert!(got.len() < 16 << 20, "the whole file was sent");
}
