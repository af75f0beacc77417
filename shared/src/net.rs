//! The accept loop every daemon uses: a connection cap, and shutdown passed in as a parameter
//! (a [`Shutdown`] token), so tests can bind 127.0.0.1:0 and stop a server when they are done.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Cancelled when the process (or a test) wants the server to stop.
pub type Shutdown = tokio_util::sync::CancellationToken;

/// How long open connections get to finish after shutdown before they are dropped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Accept connections on `listener` until `shutdown`, at most `max_connections` at once, each
/// handled by `handle(stream, peer, shutdown)` in its own task. A connection over the cap waits
/// in the kernel's backlog until a slot frees. After shutdown, open connections get
/// [`SHUTDOWN_GRACE`] to finish (handlers should watch the token themselves).
pub async fn serve<H, F>(listener: TcpListener, max_connections: usize, shutdown: Shutdown, handle: H)
where
    H: Fn(TcpStream, SocketAddr, Shutdown) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let mut tasks = JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let connection = handle(stream, peer, shutdown.clone());
                tasks.spawn(async move {
                    connection.await;
                    drop(permit);
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // Reap finished connections so the set does not grow.
        while tasks.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.shutdown().await;
}

/// Cancel `shutdown` on SIGINT or SIGTERM.
pub fn cancel_on_signals(shutdown: Shutdown) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        shutdown.cancel();
    });
}
