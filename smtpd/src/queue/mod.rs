//! The outbound queue's worker. The rows (`smtp_queue`, one per remote recipient, the message in
//! the blob store) belong to `shared::queue`, which holds all its SQL. The worker delivers due rows with lettre: through a per-domain route,
//! the smarthost, or the domain's MX hosts (opportunistic STARTTLS). Temporary failures are
//! retried with doubling delays until `queue_lifetime_secs` (5 days); permanent failures and
//! expiry send a DSN (RFC 3464) to the sender. The worker sleeps until the next retry is due or
//! an `Event::Queue` arrives; the queue survives restarts because it is only rows and blobs.

pub mod dsn;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use shared::Context;
use shared::blobs::BlobId;
use shared::events::Event;
use shared::net::Shutdown;
use tokio::sync::broadcast::error::RecvError;

use crate::dns::Dns;

/// Rows delivered at once.
const BATCH: i64 = 8;
/// How long a claimed row stays claimed if its worker dies.
const CLAIM: Duration = Duration::from_secs(900);
/// Longest wait between retries.
const MAX_DELAY: Duration = Duration::from_secs(4 * 3600);
/// Wait before asking the database again after an error.
const DB_RETRY: Duration = Duration::from_secs(30);
/// Longest sleep of an idle worker (a safety net; events and the timer normally wake it).
const IDLE: Duration = Duration::from_secs(3600);

pub use shared::queue::{Entry, enqueue};

/// How one attempt ended.
#[derive(Debug)]
pub enum Outcome {
    Delivered,
    /// Try again later.
    Temporary(String),
    /// Give up and bounce.
    Permanent(String),
}

/// Claim due rows (several workers or processes never take the same row).
async fn claim(ctx: &Context) -> sqlx::Result<Vec<Entry>> {
    shared::queue::claim(&ctx.db, BATCH, CLAIM).await
}

/// The delay before retry number `attempts + 1`.
pub fn retry_delay(first: Duration, attempts: i32) -> Duration {
    let factor = 1u32 << (attempts.clamp(1, 20) - 1) as u32;
    first.saturating_mul(factor).min(MAX_DELAY)
}

/// The queue worker: runs until shutdown.
pub async fn worker(ctx: Arc<Context>, dns: Arc<Dns>, shutdown: Shutdown) {
    let mut events = ctx.events.subscribe();
    let mut reconnects = ctx.events.reconnects();
    // While rows wait in the queue, the event listener stays connected so `tinydc queue retry`
    // (another process) wakes us; an empty queue lets it go (shared::events), and only this
    // process's SMTP sessions, which hold their own interest, can fill it again.
    let mut listener: Option<shared::events::Interest> = None;
    loop {
        loop {
            let batch = match claim(&ctx).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!("queue: claiming rows failed: {e}");
                    break;
                }
            };
            if batch.is_empty() {
                break;
            }
            let ids: Vec<i64> = batch.iter().map(|e| e.id).collect();
            let attempts = batch.into_iter().map(|entry| process(&ctx, &dns, entry));
            tokio::select! {
                _ = futures::future::join_all(attempts) => {}
                _ = shutdown.cancelled() => {
                    // Give the unfinished rows back so a restart retries them at once
                    // (a remote that already took one may get it twice, never zero times).
                    let _ = shared::queue::unclaim(&ctx.db, &ids).await;
                    return;
                }
            }
        }
        let next = shared::queue::next_due(&ctx.db).await;
        match &next {
            Ok(Some(_)) | Err(_) => {
                listener.get_or_insert_with(|| ctx.events.interest());
            }
            Ok(None) => listener = None,
        }
        let sleep = match next {
            Ok(Some(t)) => (t - Utc::now()).to_std().unwrap_or(Duration::ZERO).min(IDLE),
            Ok(None) => IDLE,
            Err(e) => {
                tracing::error!("queue: reading the next due time failed: {e}");
                DB_RETRY
            }
        };
        let timer = tokio::time::sleep(sleep.max(Duration::from_millis(50)));
        tokio::pin!(timer);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = &mut timer => break,
                // The listener (re)connected: a Queue event may have gone by unheard.
                changed = reconnects.changed() => {
                    if changed.is_ok() {
                        break;
                    }
                    (&mut timer).await;
                    break;
                }
                event = events.recv() => match event {
                    Ok(Event::Queue) | Err(RecvError::Lagged(_)) => break,
                    Ok(_) => continue,
                    Err(RecvError::Closed) => {
                        // No more events: the timer alone wakes us.
                        (&mut timer).await;
                        break;
                    }
                },
            }
        }
    }
}

async fn process(ctx: &Context, dns: &Dns, entry: Entry) {
    let message = ctx.blobs.read(&BlobId(entry.blob_id.clone())).await;
    let outcome = match &message {
        Ok(message) => attempt(ctx, dns, &entry, message).await,
        Err(e) => Outcome::Temporary(format!("reading the queued message: {e}")),
    };
    // The bounce quotes the message already read (empty when it could not be).
    let original = message.as_deref().unwrap_or_default();
    if let Err(e) = settle(ctx, &entry, outcome, original).await {
        tracing::error!(id = entry.id, "queue: recording the outcome failed: {e}");
    }
}

async fn settle(ctx: &Context, entry: &Entry, outcome: Outcome, original: &[u8]) -> anyhow::Result<()> {
    let config = &ctx.config.smtp;
    let expired = Utc::now() - entry.created_at > chrono::Duration::seconds(config.queue_lifetime_secs as i64);
    let failure = match outcome {
        Outcome::Delivered => {
            tracing::info!(id = entry.id, rcpt = entry.recipient, "queue: delivered");
            remove(ctx, entry.id).await?;
            return Ok(());
        }
        Outcome::Temporary(error) if !expired => {
            let delay = retry_delay(Duration::from_secs(config.queue_retry_secs), entry.attempts);
            tracing::info!(
                id = entry.id,
                rcpt = entry.recipient,
                "queue: temporary failure, retry in {delay:?}: {error}"
            );
            shared::queue::retry_later(&ctx.db, entry.id, delay, &error).await?;
            return Ok(());
        }
        Outcome::Temporary(error) => dsn::Failure {
            status: "4.4.7".into(),
            diagnostic: format!("gave up after {} attempts; last error: {error}", entry.attempts),
        },
        Outcome::Permanent(error) => dsn::Failure {
            status: dsn::status_of(&error).unwrap_or_else(|| "5.0.0".into()),
            diagnostic: error,
        },
    };
    tracing::warn!(
        id = entry.id,
        rcpt = entry.recipient,
        "queue: delivery failed: {}",
        failure.diagnostic
    );
    if !entry.sender.is_empty() {
        dsn::bounce(ctx, entry, &failure, original).await?;
    }
    remove(ctx, entry.id).await?;
    Ok(())
}

/// Delete a row and its blob reference.
pub async fn remove(ctx: &Context, id: i64) -> sqlx::Result<bool> {
    shared::queue::remove(&ctx.db, id).await
}

/// Where a domain's mail goes: (host, port, TLS, credentials).
struct Hop {
    host: String,
    port: u16,
    tls: TlsMode,
    credentials: Option<Credentials>,
}

#[derive(Clone, Copy)]
enum TlsMode {
    Opportunistic,
    Required,
    Wrapper,
    None,
}

async fn hops(ctx: &Context, dns: &Dns, domain: &str) -> Result<Vec<Hop>, Outcome> {
    let config = &ctx.config.smtp;
    if let Some(route) = config.routes.get(domain) {
        let (host, port) = route.rsplit_once(':').unwrap_or((route.as_str(), "25"));
        let port = port
            .parse()
            .map_err(|_| Outcome::Temporary(format!("bad route {route:?}")))?;
        return Ok(vec![Hop {
            host: host.to_string(),
            port,
            tls: TlsMode::Opportunistic,
            credentials: None,
        }]);
    }
    if let Some(relay) = &config.smarthost {
        let tls = match relay.security.as_str() {
            "tls" => TlsMode::Wrapper,
            "none" => TlsMode::None,
            _ => TlsMode::Required,
        };
        return Ok(vec![Hop {
            host: relay.host.clone(),
            port: relay.port,
            tls,
            credentials: (!relay.username.is_empty())
                .then(|| Credentials::new(relay.username.clone(), relay.password.clone())),
        }]);
    }
    let hosts = dns
        .mail_hosts(domain)
        .await
        .map_err(|e| Outcome::Temporary(e.to_string()))?;
    Ok(hosts
        .into_iter()
        .map(|host| Hop {
            host,
            port: 25,
            tls: TlsMode::Opportunistic,
            credentials: None,
        })
        .collect())
}

/// Try to deliver one row's message.
pub async fn attempt(ctx: &Context, dns: &Dns, entry: &Entry, message: &[u8]) -> Outcome {
    let from = if entry.sender.is_empty() {
        None
    } else {
        match lettre::Address::from_str(&entry.sender) {
            Ok(a) => Some(a),
            Err(e) => return Outcome::Permanent(format!("bad sender address: {e}")),
        }
    };
    let to = match lettre::Address::from_str(&entry.recipient) {
        Ok(a) => a,
        Err(e) => return Outcome::Permanent(format!("bad recipient address: {e}")),
    };
    let envelope = match Envelope::new(from, vec![to.clone()]) {
        Ok(e) => e,
        Err(e) => return Outcome::Permanent(format!("bad envelope: {e}")),
    };
    let hops = match hops(ctx, dns, &to.domain().to_lowercase()).await {
        Ok(h) => h,
        Err(outcome) => return outcome,
    };
    let mut last = Outcome::Temporary("no mail host".into());
    for hop in hops {
        match send(ctx, &hop, &envelope, message).await {
            Ok(()) => return Outcome::Delivered,
            Err(e) if e.is_permanent() => return Outcome::Permanent(format!("{}: {e}", hop.host)),
            Err(e) => last = Outcome::Temporary(format!("{}: {e}", hop.host)),
        }
    }
    last
}

async fn send(
    ctx: &Context,
    hop: &Hop,
    envelope: &Envelope,
    message: &[u8],
) -> Result<(), lettre::transport::smtp::Error> {
    let params = || {
        // Opportunistic TLS to MX hosts cannot verify names (RFC 7435); a smarthost is verified.
        let lenient = matches!(hop.tls, TlsMode::Opportunistic);
        TlsParameters::builder(hop.host.clone())
            .dangerous_accept_invalid_certs(lenient)
            .dangerous_accept_invalid_hostnames(lenient)
            .build_rustls()
    };
    let tls = match hop.tls {
        TlsMode::Opportunistic => Tls::Opportunistic(params()?),
        TlsMode::Required => Tls::Required(params()?),
        TlsMode::Wrapper => Tls::Wrapper(params()?),
        TlsMode::None => Tls::None,
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(hop.host.clone())
        .port(hop.port)
        .tls(tls)
        .hello_name(ClientId::Domain(ctx.config.server.hostname.clone()))
        .timeout(Some(Duration::from_secs(120)));
    if let Some(credentials) = &hop.credentials {
        builder = builder.credentials(credentials.clone());
    }
    builder.build().send_raw(envelope, message).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_up_to_a_cap() {
        let first = Duration::from_secs(60);
        let delays: Vec<u64> = (1..=10).map(|n| retry_delay(first, n).as_secs()).collect();
        assert_eq!(&delays[..5], &[60, 120, 240, 480, 960]);
        assert_eq!(retry_delay(first, 1000), MAX_DELAY);
        assert_eq!(retry_delay(first, 0).as_secs(), 60);
    }
}
