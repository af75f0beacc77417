//! tinydc-imapd: IMAP4rev1 (RFC 3501) and the extensions Thunderbird uses, over the shared
//! mail store. [`run`] binds the configured listeners and serves until shutdown; tests bind
//! 127.0.0.1:0 through [`bind`] and [`serve`].

mod cmd;
pub mod fetch;
pub mod session;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use shared::Context;
use shared::net::{self, Shutdown};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use session::Session;
use session::budget::LiteralBudget;
use session::conn::Conn;

/// The bound listeners: STARTTLS (`listen`) and implicit TLS (`tls_listen`).
pub struct Listeners {
    pub plain: Option<TcpListener>,
    pub tls: Option<TcpListener>,
}

impl Listeners {
    pub fn plain_addr(&self) -> Option<SocketAddr> {
        self.plain.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|l| l.local_addr().ok())
    }
}

/// Bind the listeners named in `[imap]`.
pub async fn bind(ctx: &Context) -> anyhow::Result<Listeners> {
    let imap = &ctx.config.imap;
    let plain = match imap.listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?,
        ),
        None => None,
    };
    let tls = match imap.tls_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?,
        ),
        None => None,
    };
    Ok(Listeners { plain, tls })
}

/// Serve both listeners until `shutdown`, with one connection cap over both (shared::net).
pub async fn serve(ctx: Arc<Context>, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    let acceptor = shared::tls::acceptor(&ctx.config.tls.cert_file, &ctx.config.tls.key_file)?;
    let imap = &ctx.config.imap;
    let gate = net::Gate::new(net::Limits::new(
        &ctx.config.net,
        imap.max_connections,
        imap.max_connections_per_address,
    ));
    // One literal memory budget for every session of this server, over both ports.
    let literal_budget = LiteralBudget::new(imap.literal_memory, imap.max_literal_size);
    let mut tasks = tokio::task::JoinSet::new();
    let plain = listeners.plain.map(|l| (l, "imap, STARTTLS", net::Security::Plain));
    let tls = listeners
        .tls
        .map(|l| (l, "imaps, implicit TLS", net::Security::Tls(acceptor.clone())));
    for (listener, name, security) in plain.into_iter().chain(tls) {
        tracing::info!("listening on {} ({name})", listener.local_addr()?);
        let endpoint = net::Endpoint {
            name,
            security,
            refusal: net::IMAP_REFUSAL,
            per_address: true,
        };
        let (ctx, acceptor, literal_budget) = (ctx.clone(), acceptor.clone(), literal_budget.clone());
        tasks.spawn(net::serve(
            listener,
            gate.clone(),
            endpoint,
            shutdown.clone(),
            move |stream, peer, shutdown| {
                let conn = Conn::new(stream);
                Session::new(
                    ctx.clone(),
                    conn,
                    peer,
                    acceptor.clone(),
                    literal_budget.clone(),
                    shutdown,
                )
                .run()
            },
        ));
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Bind the configured listeners and serve until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: Shutdown) -> anyhow::Result<()> {
    let listeners = bind(&ctx).await?;
    serve(ctx, listeners, shutdown).await
}

/// imapd's event broadcast ring: every IDLE and NOTIFY session receives from it, and a NOTIFY
/// session that falls behind loses its notifications (RFC 5465 §5.8), so it keeps the default.
pub const EVENT_BACKLOG: usize = shared::events::BACKLOG;

/// The TLS acceptor type sessions use (re-exported for tests).
pub type Acceptor = TlsAcceptor;
