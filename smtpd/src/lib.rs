//! tinydc-smtpd: the MX (mail from the internet for local domains), submission (587 STARTTLS,
//! 465 implicit TLS, AUTH required) and the outbound queue.
//!
//! [`start`] binds the configured listeners and runs them until the shutdown token is
//! cancelled; tests call it with 127.0.0.1:0 listeners and fixed DNS records ([`dns::Dns`]).

pub mod cmd;
pub mod deliver;
pub mod dkim;
pub mod dns;
pub mod limits;
pub mod originator;
pub mod parser;
pub mod queue;
pub mod reply;
pub mod session;
pub mod verify;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use shared::Context;
use shared::net::Shutdown;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::reply::Reply;
use crate::session::Session;
use crate::session::io::{Conn, plain};

/// The three kinds of listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Port 25: mail for local recipients only, STARTTLS offered, no AUTH.
    Mx,
    /// Port 587: STARTTLS, AUTH required before MAIL.
    Submission,
    /// Port 465: implicit TLS (RFC 8314), AUTH required before MAIL.
    Submissions,
}

impl ListenerKind {
    pub fn name(self) -> &'static str {
        match self {
            ListenerKind::Mx => "smtp mx",
            ListenerKind::Submission => "smtp submission",
            ListenerKind::Submissions => "smtp submissions",
        }
    }
}

/// What every session shares.
pub struct Server {
    pub ctx: Arc<Context>,
    pub dns: Arc<dns::Dns>,
    pub tls: TlsAcceptor,
    pub limits: limits::Limits,
    /// Connections open at once over all listeners (`smtp.max_connections`).
    pub connections: Arc<tokio::sync::Semaphore>,
    /// Message bytes held in memory by all sessions.
    pub memory: limits::Memory,
    /// The bounded pool for parsing, verifying and signing whole messages.
    pub cpu: limits::Cpu,
}

/// The addresses actually bound (useful with port 0).
#[derive(Debug, Clone, Default)]
pub struct Bound {
    pub mx: Option<SocketAddr>,
    pub submission: Option<SocketAddr>,
    pub submissions: Option<SocketAddr>,
}

/// Bind the configured listeners and start serving them and the outbound queue in the
/// background. The returned handle finishes after `shutdown` once connections are done.
pub async fn start(
    ctx: Arc<Context>,
    dns: Arc<dns::Dns>,
    shutdown: Shutdown,
) -> anyhow::Result<(Bound, tokio::task::JoinHandle<()>)> {
    let config = ctx.config.clone();
    let tls =
        shared::tls::acceptor(&config.tls.cert_file, &config.tls.key_file).context("loading the TLS certificate")?;
    let server = Arc::new(Server {
        limits: limits::Limits::new(&config.smtp),
        connections: Arc::new(tokio::sync::Semaphore::new(config.smtp.max_connections as usize)),
        memory: limits::Memory::new(config.smtp.max_message_size),
        cpu: limits::Cpu::new(),
        ctx: ctx.clone(),
        dns: dns.clone(),
        tls,
    });
    let mut bound = Bound::default();
    let mut tasks = JoinSet::new();
    let kinds = [
        (ListenerKind::Mx, config.smtp.mx_listen),
        (ListenerKind::Submission, config.smtp.submission_listen),
        (ListenerKind::Submissions, config.smtp.submissions_listen),
    ];
    for (kind, addr) in kinds {
        let Some(addr) = addr else { continue };
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr} ({})", kind.name()))?;
        let local = listener.local_addr()?;
        tracing::info!("listening on {local} ({})", kind.name());
        match kind {
            ListenerKind::Mx => bound.mx = Some(local),
            ListenerKind::Submission => bound.submission = Some(local),
            ListenerKind::Submissions => bound.submissions = Some(local),
        }
        let server = server.clone();
        let max = config.smtp.max_connections as usize;
        let shutdown = shutdown.clone();
        tasks.spawn(shared::net::serve(
            listener,
            max,
            shutdown,
            move |stream, peer, shutdown| {
                let server = server.clone();
                async move { handle(server, kind, stream, peer, shutdown).await }
            },
        ));
    }
    tasks.spawn(queue::worker(ctx, dns, shutdown));
    let handle = tokio::spawn(async move { while tasks.join_next().await.is_some() {} });
    Ok((bound, handle))
}

/// Run until shutdown with the system's DNS resolver (the daemon's entry point).
pub async fn run(ctx: Arc<Context>, shutdown: Shutdown) -> anyhow::Result<()> {
    let dns = Arc::new(dns::Dns::system()?);
    let (_, handle) = start(ctx, dns, shutdown).await?;
    handle.await?;
    Ok(())
}

async fn handle(
    server: Arc<Server>,
    kind: ListenerKind,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    shutdown: Shutdown,
) {
    let permit = server.connections.clone().try_acquire_owned();
    let refusal = if permit.is_err() {
        tracing::warn!(%peer, "connection limit reached");
        Some(Reply::new(421, "4.3.2", "Too many connections, try again later"))
    } else if !server.limits.connection_allowed(peer.ip()) {
        tracing::warn!(%peer, "too many connections from this address");
        Some(Reply::new(421, "4.7.0", "Too many connections, try again later"))
    } else {
        None
    };
    if let Some(reply) = refusal {
        let mut conn = Conn::new(plain(stream));
        // On the implicit-TLS port a plaintext line would only confuse the client.
        if kind != ListenerKind::Submissions {
            conn.write(&reply.to_wire());
        }
        conn.shutdown().await;
        return;
    }
    let _permit = permit;
    let (conn, tls) = if kind == ListenerKind::Submissions {
        let timeout = std::time::Duration::from_secs(server.ctx.config.smtp.command_timeout_secs);
        match tokio::time::timeout(timeout, server.tls.accept(stream)).await {
            Ok(Ok(tls)) => (Conn::new(Box::new(tls)), true),
            Ok(Err(e)) => {
                tracing::info!(%peer, "TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                tracing::info!(%peer, "TLS handshake timed out");
                return;
            }
        }
    } else {
        (Conn::new(plain(stream)), false)
    };
    tracing::debug!(%peer, kind = kind.name(), "connection");
    Session::new(server, kind, peer, conn, tls, shutdown).run().await;
}
