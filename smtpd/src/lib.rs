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
use shared::net::{self, Shutdown};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::reply::Reply;
use crate::session::Session;
use crate::session::io::Conn;

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
    /// Message bytes held in memory by all sessions.
    pub memory: limits::Memory,
    /// The bounded pool for parsing, verifying and signing whole messages.
    pub cpu: limits::Cpu,
}

/// smtpd's event broadcast ring (`shared::events::BACKLOG`): its one receiver, the queue
/// worker, treats falling behind as a wake-up that re-reads the queue, so a short ring loses
/// nothing (issue #12: the default's 80 KiB were written at start).
pub const EVENT_BACKLOG: usize = 16;

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
        memory: limits::Memory::new(config.smtp.max_message_size),
        cpu: limits::Cpu::new(),
        ctx: ctx.clone(),
        dns: dns.clone(),
        tls,
    });
    // One cap over the three listeners, and per client address (shared::net).
    let gate = net::Gate::new(net::Limits::new(
        &config.net,
        config.smtp.max_connections,
        config.smtp.max_connections_per_address,
    ));
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
        let endpoint = net::Endpoint {
            name: kind.name(),
            security: match kind {
                ListenerKind::Submissions => net::Security::Tls(server.tls.clone()),
                ListenerKind::Mx | ListenerKind::Submission => net::Security::Plain,
            },
            refusal: net::SMTP_REFUSAL,
            per_address: true,
        };
        let server = server.clone();
        tasks.spawn(net::serve(
            listener,
            gate.clone(),
            endpoint,
            shutdown.clone(),
            move |stream, peer, shutdown| handle(server.clone(), kind, stream, peer, shutdown),
        ));
    }
    tasks.spawn(queue::worker(ctx, dns, shutdown));
    let handle = tokio::spawn(async move { while tasks.join_next().await.is_some() {} });
    Ok((bound, handle))
}

/// Run until shutdown with the system's DNS resolver (the daemon's entry point).
pub async fn run(ctx: Arc<Context>, shutdown: Shutdown) -> anyhow::Result<()> {
    let dns = Arc::new(dns::Dns::system(&ctx.config.smtp.dns_fallback)?);
    let (_, handle) = start(ctx, dns, shutdown).await?;
    handle.await?;
    Ok(())
}

async fn handle(server: Arc<Server>, kind: ListenerKind, stream: net::Stream, peer: SocketAddr, shutdown: Shutdown) {
    let tls = stream.is_tls();
    let mut conn = Conn::new(Box::new(stream));
    if !server.limits.connection_allowed(peer.ip()) {
        tracing::warn!(%peer, "too many new connections from this address");
        // RFC 5321 §3.8: 421 and close.
        conn.write(&Reply::new(421, "4.7.0", "Too many connections, try again later").to_wire());
        conn.shutdown().await;
        return;
    }
    tracing::debug!(%peer, kind = kind.name(), "connection");
    // A message this session queues wakes the queue worker through the process's event
    // listener: keep it connected while the session lasts (shared::events).
    let _listener = server.ctx.events.interest();
    Session::new(server, kind, peer, conn, tls, shutdown).run().await;
}
