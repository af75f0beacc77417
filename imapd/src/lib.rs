//! tinydc-imapd: IMAP4rev1 (RFC 3501) and the extensions Thunderbird uses, over the shared
//! mail store. [`run`] binds the configured listeners and serves until shutdown; tests bind
//! 127.0.0.1:0 through [`bind`] and [`serve`].

mod cmd;
pub mod fetch;
pub mod session;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use shared::Context;
use shared::net::Shutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use session::Session;
use session::conn::Conn;

/// How long a client gets to finish an implicit-TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Serve both listeners until `shutdown`.
pub async fn serve(ctx: Arc<Context>, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    let acceptor = shared::tls::acceptor(&ctx.config.tls.cert_file, &ctx.config.tls.key_file)?;
    let max = ctx.config.imap.max_connections as usize;
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(listener) = listeners.plain {
        tracing::info!("listening on {} (imap, STARTTLS)", listener.local_addr()?);
        let (ctx, acceptor) = (ctx.clone(), acceptor.clone());
        tasks.spawn(shared::net::serve(
            listener,
            max,
            shutdown.clone(),
            move |stream, peer, shutdown| {
                let (ctx, acceptor) = (ctx.clone(), acceptor.clone());
                async move {
                    Session::new(ctx, Conn::plain(stream), peer, acceptor, shutdown)
                        .run()
                        .await;
                }
            },
        ));
    }
    if let Some(listener) = listeners.tls {
        tracing::info!("listening on {} (imaps, implicit TLS)", listener.local_addr()?);
        let (ctx, acceptor) = (ctx.clone(), acceptor.clone());
        tasks.spawn(shared::net::serve(
            listener,
            max,
            shutdown.clone(),
            move |stream, peer, shutdown| {
                let (ctx, acceptor) = (ctx.clone(), acceptor.clone());
                async move {
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::info!(%peer, "TLS handshake failed: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::info!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    Session::new(ctx, Conn::tls(tls), peer, acceptor, shutdown).run().await;
                }
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

/// The TLS acceptor type sessions use (re-exported for tests).
pub type Acceptor = TlsAcceptor;
