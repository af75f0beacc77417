//! The accept loop: connection caps with a refusal in words, shutdown as a parameter, and the
//! write timeout, on real sockets.

use std::time::Duration;

use shared::net::{Endpoint, Gate, Limits, Security, Shutdown, TimedStream, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

fn limits(max_connections: usize, max_per_address: usize) -> Limits {
    Limits {
        max_connections,
        max_per_address,
        handshake_timeout: Duration::from_secs(1),
        write_timeout: Duration::from_secs(1),
    }
}

/// A server that greets, then waits for one line and closes.
async fn start(limits: Limits) -> (std::net::SocketAddr, Shutdown, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let endpoint = Endpoint {
        name: "test",
        security: Security::Plain,
        refusal: b"NO too many\r\n",
        per_address: true,
    };
    let task = tokio::spawn(serve(
        listener,
        Gate::new(limits),
        endpoint,
        shutdown.clone(),
        |mut stream, _peer, _shutdown| async move {
            stream.write_all(b"hello\n").await.unwrap();
            let mut buf = [0u8; 64];
            let _ = stream.read(&mut buf).await;
        },
    ));
    (addr, shutdown, task)
}

async fn connect_from(ip: &str, to: std::net::SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// What the server says first, within five seconds.
async fn first_words(stream: &mut TcpStream) -> String {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Ok(Err(e)) => format!("error {e}"),
        Err(_) => "nothing within 5 s".into(),
    }
}

#[tokio::test]
async fn connections_over_a_cap_are_refused_in_words_and_slots_come_back() {
    let (addr, shutdown, task) = start(limits(3, 2)).await;
    let mut a = connect_from("127.0.0.1", addr).await;
    let mut b = connect_from("127.0.0.1", addr).await;
    assert_eq!(first_words(&mut a).await, "hello\n");
    assert_eq!(first_words(&mut b).await, "hello\n");
    // Per address...
    let mut c = connect_from("127.0.0.1", addr).await;
    assert_eq!(first_words(&mut c).await, "NO too many\r\n");
    // ...and for the whole daemon.
    let mut d = connect_from("127.0.0.2", addr).await;
    assert_eq!(first_words(&mut d).await, "hello\n");
    let mut e = connect_from("127.0.0.3", addr).await;
    assert_eq!(first_words(&mut e).await, "NO too many\r\n");
    // A finished connection frees its slot.
    a.write_all(b"bye\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut f = connect_from("127.0.0.1", addr).await;
    assert_eq!(first_words(&mut f).await, "hello\n");
    for s in [&mut b, &mut d, &mut f] {
        s.write_all(b"bye\n").await.unwrap();
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "nothing listens after shutdown"
    );
}

#[tokio::test]
async fn a_write_to_a_client_that_stops_reading_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let _client = socket.connect(addr).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    let mut timed = TimedStream::new(server, Duration::from_secs(1));
    let started = std::time::Instant::now();
    let chunk = vec![0u8; 1 << 20];
    let error = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Err(e) = timed.write_all(&chunk).await {
                return e;
            }
        }
    })
    .await
    .expect("the write timed out within 10 s");
    assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}
