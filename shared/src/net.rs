//! The one way every daemon listens: an accept loop with a connection cap per daemon and per
//! client address, a clear refusal in the protocol's own words at either cap, the TLS handshake
//! with one timeout, and a write timeout on every connection. Shutdown is passed in as a
//! parameter (a [`Shutdown`] token), so tests can bind 127.0.0.1:0 and stop a server when they
//! are done.
//!
//! A daemon makes one [`Gate`] (its limits and its counts) and runs [`serve`] once per listener
//! with it, so the caps hold over all of its listeners together.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::NetConfig;

/// Cancelled when the process (or a test) wants the server to stop.
pub type Shutdown = tokio_util::sync::CancellationToken;

/// How long open connections get to finish after shutdown before they are dropped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Refusals being answered at once (each holds a socket for at most [`REFUSAL_TIME`]); past
/// this a connection over a cap is closed without a word, so a flood costs bounded memory.
const MAX_REFUSING: usize = 256;
/// How long a refused connection is kept to say why (TLS handshake included) and to let the
/// client read it.
const REFUSAL_TIME: Duration = Duration::from_secs(3);
/// At most one "refused" log line per daemon in this time; the lines skipped are counted in the
/// next one, so a flood does not fill the disk.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// The limits of one daemon's listeners.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once over all of the daemon's listeners.
    pub max_connections: usize,
    /// Connections open at once from one client address ([`address_key`]).
    pub max_per_address: usize,
    /// Time to finish a TLS handshake (implicit TLS and STARTTLS).
    pub handshake_timeout: Duration,
    /// Time a write may make no progress before the connection fails ([`TimedStream`]).
    pub write_timeout: Duration,
}

impl Limits {
    /// The limits from `[net]` and a daemon's own caps.
    pub fn new(net: &NetConfig, max_connections: u64, max_per_address: u64) -> Limits {
        Limits {
            max_connections: max_connections.max(1) as usize,
            max_per_address: max_per_address.max(1) as usize,
            handshake_timeout: handshake_timeout(net),
            write_timeout: Duration::from_secs(net.write_timeout_secs),
        }
    }
}

/// The configured TLS handshake timeout (also for STARTTLS in the sessions).
pub fn handshake_timeout(net: &NetConfig) -> Duration {
    Duration::from_secs(net.tls_handshake_timeout_secs)
}

/// What connections are counted by: an IPv4 address, or the /64 of an IPv6 address (one host
/// commonly holds a whole /64, so counting single IPv6 addresses would cap nothing). An
/// IPv4-mapped IPv6 address counts as its IPv4 address.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    /// Only addresses with open connections: bounded by `max_connections`.
    by_address: HashMap<IpAddr, usize>,
}

/// One daemon's connection counts and limits, shared by all its listeners.
pub struct Gate {
    limits: Limits,
    counts: Mutex<Counts>,
    refusing: Arc<Semaphore>,
    log: Mutex<RefusalLog>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Full,
    Address,
}

impl Gate {
    pub fn new(limits: Limits) -> Arc<Gate> {
        Arc::new(Gate {
            limits,
            counts: Mutex::new(Counts::default()),
            refusing: Arc::new(Semaphore::new(MAX_REFUSING)),
            log: Mutex::new(RefusalLog::default()),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    /// A slot for a new connection from `ip`, or why not. `per_address: false` counts the
    /// connection only against the daemon's cap.
    fn admit(self: &Arc<Self>, ip: IpAddr, per_address: bool) -> Result<Slot, Refusal> {
        let key = per_address.then(|| address_key(ip));
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.total >= self.limits.max_connections {
            return Err(Refusal::Full);
        }
        if let Some(key) = key {
            let n = counts.by_address.entry(key).or_insert(0);
            if *n >= self.limits.max_per_address {
                return Err(Refusal::Address);
            }
            *n += 1;
        }
        counts.total += 1;
        Ok(Slot {
            gate: self.clone(),
            key,
        })
    }

    fn log_refusal(&self, listener: &str, peer: SocketAddr, why: Refusal) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if log.last.is_some_and(|t| now.duration_since(t) < REFUSAL_LOG_EVERY) {
            log.skipped += 1;
            return;
        }
        let reason = match why {
            Refusal::Full => format!("{} connections open (the daemon's cap)", self.limits.max_connections),
            Refusal::Address => format!(
                "{} connections open from this address (the per-address cap)",
                self.limits.max_per_address
            ),
        };
        tracing::warn!(
            listener,
            %peer,
            not_logged_before = log.skipped,
            "connection refused: {reason}"
        );
        log.last = Some(now);
        log.skipped = 0;
    }
}

#[derive(Default)]
struct RefusalLog {
    last: Option<Instant>,
    skipped: u64,
}

/// An admitted connection's place in the counts, given back when dropped.
struct Slot {
    gate: Arc<Gate>,
    key: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.gate.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.total -= 1;
        if let Some(key) = self.key
            && let Some(n) = counts.by_address.get_mut(&key)
        {
            *n -= 1;
            if *n == 0 {
                counts.by_address.remove(&key);
            }
        }
    }
}

/// How clients of a listener start.
pub enum Security {
    /// In clear (STARTTLS may follow inside the protocol).
    Plain,
    /// Implicit TLS (RFC 8314): the handshake comes first, within the handshake timeout.
    Tls(TlsAcceptor),
}

/// One listener of a daemon.
pub struct Endpoint {
    /// For log lines ("imap", "smtp submission", ...).
    pub name: &'static str,
    pub security: Security,
    /// What a client over a cap is told before the connection is closed, in the protocol's
    /// own words (after the TLS handshake on an implicit-TLS listener).
    pub refusal: &'static [u8],
    /// Count connections per client address. Off only for a loopback listener behind a
    /// reverse proxy, whose clients all arrive from the proxy's one address.
    pub per_address: bool,
}

/// SMTP at a cap (RFC 5321 §3.8: 421 and close; RFC 3463 §3.8 4.7.0).
pub const SMTP_REFUSAL: &[u8] = b"421 4.7.0 Too many connections, try again later\r\n";
/// IMAP at a cap (RFC 9051 §7.1.5 BYE as the greeting, §7.1 UNAVAILABLE).
pub const IMAP_REFUSAL: &[u8] = b"* BYE [UNAVAILABLE] Too many connections\r\n";
/// HTTP at a cap (RFC 9110 §15.6.4 503, §10.2.3 Retry-After).
pub const HTTP_REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 60\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 34\r\nConnection: close\r\n\r\n\
too many connections, retry later\n";

/// Accept connections on `listener` until `shutdown`, counting each against `gate`. An
/// admitted connection is handled by `handle(stream, peer, shutdown)` in its own task (after
/// the TLS handshake on an implicit-TLS listener); one over a cap is answered
/// `endpoint.refusal` and closed, and the loop goes on accepting. After shutdown, open
/// connections get [`SHUTDOWN_GRACE`] to finish (handlers should watch the token themselves).
pub async fn serve<H, F>(listener: TcpListener, gate: Arc<Gate>, endpoint: Endpoint, shutdown: Shutdown, handle: H)
where
    H: Fn(Stream, SocketAddr, Shutdown) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let endpoint = Arc::new(endpoint);
    let handle = Arc::new(handle);
    let mut tasks = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(listener = endpoint.name, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let stream = TimedStream::new(stream, gate.limits.write_timeout);
        match gate.admit(peer.ip(), endpoint.per_address) {
            Ok(slot) => {
                let (endpoint, handle, shutdown) = (endpoint.clone(), handle.clone(), shutdown.clone());
                let timeout = gate.limits.handshake_timeout;
                tasks.spawn(async move {
                    let _slot = slot;
                    let stream = match &endpoint.security {
                        Security::Plain => Stream::Plain(stream),
                        Security::Tls(acceptor) => match handshake(acceptor, stream, timeout).await {
                            Ok(tls) => Stream::Tls(Box::new(tls)),
                            // A client that closes before the handshake is done (a port check, a
                            // scanner, a load balancer's probe) did not try TLS and fail: debug
                            // only. A refused or broken handshake stays an INFO line.
                            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                                tracing::debug!(listener = endpoint.name, %peer, "closed before the TLS handshake finished");
                                return;
                            }
                            Err(e) => {
                                tracing::info!(listener = endpoint.name, %peer, "TLS handshake failed: {e}");
                                return;
                            }
                        },
                    };
                    handle(stream, peer, shutdown).await;
                });
            }
            Err(why) => {
                gate.log_refusal(endpoint.name, peer, why);
                // Past MAX_REFUSING refusals in flight the stream is just dropped (closed).
                if let Ok(permit) = gate.refusing.clone().try_acquire_owned() {
                    let (endpoint, shutdown) = (endpoint.clone(), shutdown.clone());
                    tasks.spawn(async move {
                        tokio::select! {
                            _ = tokio::time::timeout(REFUSAL_TIME, refuse(stream, &endpoint)) => {}
                            _ = shutdown.cancelled() => {}
                        }
                        drop(permit);
                    });
                }
            }
        }
        // Reap finished connections so the set does not grow.
        while tasks.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.shutdown().await;
}

/// Tell a refused client why, in the protocol's words, and close.
async fn refuse(stream: TimedStream<TcpStream>, endpoint: &Endpoint) {
    match &endpoint.security {
        Security::Plain => say_and_close(stream, endpoint.refusal).await,
        Security::Tls(acceptor) => {
            if let Ok(tls) = acceptor.accept(stream).await {
                say_and_close(tls, endpoint.refusal).await;
            }
        }
    }
}

async fn say_and_close<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, text: &[u8]) {
    if stream.write_all(text).await.is_err() || stream.flush().await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    // Read what the client sent (an HTTP request, say) until it closes: closing a socket with
    // unread input resets the connection, which can destroy the refusal before it is read.
    let mut buf = [0u8; 4096];
    let mut total = 0;
    while total < 64 * 1024 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
}

/// A TLS handshake on `stream` that gives up after `timeout` (io::ErrorKind::TimedOut).
pub async fn handshake<S>(acceptor: &TlsAcceptor, stream: S, timeout: Duration) -> io::Result<TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")),
    }
}

/// A client connection as a session gets it: TCP with the write timeout, maybe under TLS.
pub enum Stream {
    Plain(TimedStream<TcpStream>),
    Tls(Box<TlsStream<TimedStream<TcpStream>>>),
}

impl Stream {
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// The TCP socket under any TLS.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s.get_ref(),
            Stream::Tls(s) => s.get_ref().0.get_ref(),
        }
    }

    /// Acknowledge what was read at once instead of after the delayed-ACK timer (Linux
    /// TCP_QUICKACK, tcp(7)). A client that writes a literal and then its closing CRLF as two
    /// writes with Nagle's algorithm on (python's imaplib, RFC 3501 §7.5 synchronizing literals)
    /// holds the CRLF until the literal is acknowledged; with a delayed ACK each such command
    /// waits 40 ms. Linux clears the flag again by itself, so this is called after each read.
    pub fn ack_now(&self) {
        if let Err(e) = self.tcp().set_quickack(true) {
            tracing::debug!("TCP_QUICKACK: {e}");
        }
    }

    /// STARTTLS: the handshake on a plain stream, within `timeout`.
    pub async fn start_tls(self, acceptor: &TlsAcceptor, timeout: Duration) -> io::Result<Stream> {
        match self {
            Stream::Plain(stream) => Ok(Stream::Tls(Box::new(handshake(acceptor, stream, timeout).await?))),
            Stream::Tls(_) => Err(io::Error::other("TLS already active")),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    /// Forwarded, so a writer that hands over several buffers (hyper's queue of a response's
    /// head and body pieces) gets one writev instead of copying them into a buffer first:
    /// without it hyper "flattens" every body byte it sends into its own buffer.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A stream whose writes fail with `TimedOut` once one has made no progress for the timeout:
/// a client that stops reading (its receive window full) loses its connection and its slot
/// instead of holding them forever. Reads are not timed here (each protocol has its own idle
/// rules). TLS sits on top of this, so its writes are covered too.
pub struct TimedStream<S> {
    inner: S,
    timeout: Duration,
    /// Armed when a write first waits; reset by any write that makes progress.
    stall: Pin<Box<Sleep>>,
    stalled: bool,
}

impl<S> TimedStream<S> {
    pub fn new(inner: S, timeout: Duration) -> TimedStream<S> {
        TimedStream {
            inner,
            timeout,
            stall: Box::pin(tokio::time::sleep(timeout)),
            stalled: false,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn watch<T>(&mut self, cx: &mut Context<'_>, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match result {
            Poll::Ready(r) => {
                self.stalled = false;
                Poll::Ready(r)
            }
            Poll::Pending => {
                if !self.stalled {
                    self.stalled = true;
                    let deadline = tokio::time::Instant::now() + self.timeout;
                    self.stall.as_mut().reset(deadline);
                }
                match self.stall.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "write timed out: the client stopped reading",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, result)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[tokio::test]
    async fn the_caps_count_and_free_slots() {
        let gate = Gate::new(Limits {
            max_connections: 3,
            max_per_address: 2,
            handshake_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
        });
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let two: IpAddr = "192.0.2.2".parse().unwrap();
        let a = gate.admit(one, true).unwrap();
        let _b = gate.admit(one, true).unwrap();
        assert_eq!(gate.admit(one, true).err(), Some(Refusal::Address));
        let _c = gate.admit(two, true).unwrap();
        assert_eq!(gate.admit(two, true).err(), Some(Refusal::Full));
        drop(a);
        assert_eq!(gate.open(), 2);
        let _d = gate.admit(one, true).unwrap();
        assert_eq!(gate.counts.lock().unwrap().by_address.len(), 2);
    }
}
