//! The accept loop: connection cap and shutdown as a parameter, on real sockets.

use std::time::Duration;

use shared::net::{Shutdown, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A server that greets, then echoes one line back and closes.
async fn start(max: usize) -> (std::net::SocketAddr, Shutdown, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let task = tokio::spawn(serve(
        listener,
        max,
        shutdown.clone(),
        |mut stream, _peer, _shutdown| async move {
            stream.write_all(b"hello\n").await.unwrap();
            let mut buf = [0u8; 64];
            let _ = stream.read(&mut buf).await;
        },
    ));
    (addr, shutdown, task)
}

async fn greeted(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 6];
    matches!(tokio::time::timeout(wait, stream.read_exact(&mut buf)).await, Ok(Ok(_)))
}

#[tokio::test]
async fn connections_over_the_cap_wait_for_a_free_slot() {
    let (addr, shutdown, task) = start(2).await;
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut b = TcpStream::connect(addr).await.unwrap();
    assert!(greeted(&mut a, Duration::from_secs(5)).await);
    assert!(greeted(&mut b, Duration::from_secs(5)).await);
    let mut c = TcpStream::connect(addr).await.unwrap();
    assert!(
        !greeted(&mut c, Duration::from_millis(300)).await,
        "a third connection must wait"
    );
    a.write_all(b"bye\n").await.unwrap();
    assert!(
        greeted(&mut c, Duration::from_secs(5)).await,
        "served once a slot is free"
    );
    b.write_all(b"bye\n").await.unwrap();
    c.write_all(b"bye\n").await.unwrap();
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
