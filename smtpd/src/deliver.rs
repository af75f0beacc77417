//! End of a message (after DATA or the last BDAT): submission checks, trace headers
//! (RFC 5321 §4.4), inbound authentication, DKIM signing, local delivery through the shared mail
//! store and queueing for remote recipients. `250` is answered only after every copy is durable.

use std::collections::HashSet;
use std::sync::Arc;

use mail_auth::AuthenticatedMessage;
use shared::mailstore::{DeliveryTarget, SpecialUse};
use shared::quota::Reservation;

use crate::ListenerKind;
use crate::originator::Refusal;
use crate::reply::Reply;
use crate::session::{Session, State, Target, Transaction};

/// How long inbound SPF/DKIM/DMARC checks may take (RFC 5321 §4.5.3.2.6 gives the client
/// 10 minutes after the final dot; DNS answers within seconds or not at all).
const VERIFY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A short random id for trace headers and logs.
pub fn new_id() -> String {
    use rand::Rng;
    format!("{:016x}", rand::thread_rng().r#gen::<u64>())
}

/// An address as it may appear inside a header we write: no control characters, no brackets.
pub fn header_safe(address: &str) -> String {
    address
        .chars()
        .filter(|c| !c.is_control() && *c != '<' && *c != '>')
        .collect()
}

/// The reply to a submission whose From or Sender fields are refused (logged).
fn refuse_originator(user: &str, peer: std::net::SocketAddr, refusal: Refusal) -> Reply {
    match refusal {
        Refusal::Malformed(why) => {
            tracing::warn!(%peer, user, "originator fields refused: {why}");
            // RFC 3463 X.6.0: a problem with the message's content.
            Reply::new(554, "5.6.0", format!("Message refused: {why}"))
        }
        Refusal::NotOwned(address) => {
            tracing::warn!(%peer, user, from = address, "From/Sender header not owned");
            Reply::new(
                553,
                "5.7.1",
                format!(
                    "From/Sender header address <{}> not owned by the authenticated user",
                    header_safe(&address)
                ),
            )
        }
    }
}

impl Session {
    /// Inbound checks of the MX (verify.rs) with the message parsed and its body hashed on the
    /// blocking pool; the DNS lookups that follow wait there without holding a CPU slot.
    async fn checked_inbound(&self, body: Vec<u8>, from: &str) -> Result<(Vec<u8>, crate::verify::Verdict), Reply> {
        let cpu = self.server.cpu.clone();
        let dns = self.server.dns.clone();
        let hostname = self.hostname().to_string();
        let helo = self.helo.clone().unwrap_or_default();
        let from = from.to_string();
        let (ip, peer) = (self.peer.ip(), self.peer);
        let runtime = tokio::runtime::Handle::current();
        let job = tokio::task::spawn_blocking(move || {
            let slot = runtime.block_on(cpu.slot());
            let body = crate::verify::strip_own_results(&body, &hostname);
            let verdict = {
                let parsed = AuthenticatedMessage::parse(&body);
                drop(slot);
                let checks = crate::verify::verify(&dns, &hostname, ip, &helo, &from, parsed.as_ref());
                // Slow DNS must not hold the client past its own DATA timeout.
                runtime.block_on(async {
                    match tokio::time::timeout(VERIFY_TIMEOUT, checks).await {
                        Ok(v) => v,
                        Err(_) => {
                            tracing::warn!(%peer, "SPF/DKIM/DMARC checks timed out");
                            crate::verify::Verdict::temperror(&hostname)
                        }
                    }
                })
            };
            (body, verdict)
        });
        job.await.map_err(|e| {
            tracing::error!("inbound checks failed: {e}");
            Reply::new(451, "4.3.0", "Temporary failure, try again later")
        })
    }

    /// The with-protocol of the Received header (RFC 3848, RFC 6531 §3.7.3).
    fn protocol(&self, smtputf8: bool) -> String {
        let mut p = String::from(if smtputf8 {
            "UTF8SMTP"
        } else if self.esmtp {
            "ESMTP"
        } else {
            "SMTP"
        });
        if self.tls {
            p.push('S');
        }
        if self.user.is_some() {
            p.push('A');
        }
        p
    }

    fn received(&self, tx: &Transaction, id: &str) -> String {
        let helo = self.helo.as_deref().unwrap_or("unknown");
        let helo: String = helo.chars().filter(|c| !c.is_control()).take(255).collect();
        let rcpt = match tx.recipients.as_slice() {
            [only] => format!("\r\n\tfor <{}>", header_safe(&only.address)),
            _ => String::new(),
        };
        format!(
            "Received: from {helo} ({ip})\r\n\tby {host} (tinydc) with {proto} id {id}{rcpt};\r\n\t{date}\r\n",
            ip = self.peer.ip(),
            host = self.hostname(),
            proto = self.protocol(tx.smtputf8),
            date = chrono::Utc::now().to_rfc2822(),
        )
    }

    pub async fn finish_message(&mut self, body: Vec<u8>) -> Reply {
        let State::Mail(mut tx) = std::mem::replace(&mut self.state, State::Ready) else {
            return Reply::new(503, "5.5.1", "No transaction");
        };
        let mut reservations = Vec::new();
        let mut local_users = Vec::new();
        let mut remote = Vec::new();
        let mut seen = HashSet::new();
        let id = new_id();
        let received = self.received(&tx, &id);
        for r in &tx.recipients {
            if let Target::Remote = r.target
                && !remote.iter().any(|a: &String| a.eq_ignore_ascii_case(&r.address))
            {
                remote.push(r.address.clone());
            }
        }
        let from = tx.from.clone();
        let senders = std::mem::take(&mut tx.senders);
        for r in tx.recipients {
            if let Target::Local(rs) = r.target {
                for reservation in rs {
                    // An alias and its target in one message: one copy each.
                    if seen.insert(reservation.user_id) {
                        local_users.push((reservation.user_id, r.address.clone()));
                        reservations.push(reservation);
                    } else {
                        let _ = shared::quota::release(&self.server.ctx.db, reservation).await;
                    }
                }
            }
        }
        let reply = self
            .store(
                &from,
                &senders,
                &id,
                &received,
                body,
                reservations,
                &local_users,
                remote,
            )
            .await;
        if reply.is_positive() {
            tracing::info!(peer = %self.peer, id, from, local = local_users.len(), "message accepted");
        }
        reply
    }

    /// Deliver copy by copy; `Err` when nobody could take it. Full mailboxes are reported to the
    /// sender with a DSN (RFC 3464).
    async fn deliver_each(
        &self,
        id: &str,
        from: &str,
        local: &Arc<Vec<u8>>,
        plan: &[(i64, Option<i64>)],
        addresses: &[(i64, String)],
    ) -> Result<(), Reply> {
        let ctx = &self.server.ctx;
        let mut delivered = 0;
        let mut full = Vec::new();
        for &(user_id, mailbox_id) in plan {
            let target = DeliveryTarget {
                user_id,
                mailbox_id,
                reservation: None,
            };
            match ctx
                .mail
                .deliver_owned(vec![target], local.clone(), &[], chrono::Utc::now())
                .await
            {
                Ok(_) => delivered += 1,
                Err(e) if e.is_over_quota() => full.push(user_id),
                Err(e) if e.is_disk_full() && delivered == 0 => {
                    tracing::warn!(id, "local delivery refused: {e}");
                    return Err(crate::cmd::rcpt::insufficient_storage());
                }
                Err(e) => {
                    tracing::error!(id, "local delivery failed: {e}");
                    if delivered == 0 {
                        return Err(Reply::new(451, "4.3.0", "Local delivery failed, try again later"));
                    }
                }
            }
        }
        if delivered == 0 {
            return Err(Reply::new(552, "5.2.2", "Mailbox full"));
        }
        if from.is_empty() {
            return Ok(());
        }
        for user_id in full {
            let recipient = addresses
                .iter()
                .find(|(u, _)| *u == user_id)
                .map(|(_, a)| a.clone())
                .unwrap_or_default();
            let entry = crate::queue::Entry {
                id: 0,
                blob_id: String::new(),
                sender: from.to_string(),
                recipient,
                attempts: 1,
                created_at: chrono::Utc::now(),
            };
            let failure = crate::queue::dsn::Failure {
                status: "5.2.2".into(),
                diagnostic: "552 5.2.2 Mailbox full".into(),
            };
            if let Err(e) = crate::queue::dsn::bounce(ctx, &entry, &failure, local).await {
                tracing::error!(id, "DSN for a full mailbox failed: {e}");
            }
        }
        Ok(())
    }

    async fn release_all(&self, reservations: Vec<Reservation>) {
        for r in reservations {
            let _ = shared::quota::release(&self.server.ctx.db, r).await;
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn store(
        &mut self,
        from: &str,
        senders: &[String],
        id: &str,
        received: &str,
        body: Vec<u8>,
        reservations: Vec<Reservation>,
        local_users: &[(i64, String)],
        remote: Vec<String>,
    ) -> Reply {
        let ctx = self.server.ctx.clone();
        let hostname = self.hostname().to_string();
        let mut junk = false;
        // Everything that reads or hashes the whole message runs on the blocking pool
        // (limits::Cpu), never on the async worker threads.
        let message = if self.kind == ListenerKind::Mx {
            let (body, verdict) = match self.checked_inbound(body, from).await {
                Ok(done) => done,
                Err(reply) => {
                    self.release_all(reservations).await;
                    return reply;
                }
            };
            if verdict.dmarc_reject && ctx.config.smtp.dmarc_reject {
                self.release_all(reservations).await;
                tracing::warn!(peer = %self.peer, from, "DMARC policy reject");
                return Reply::new(550, "5.7.1", "Message rejected by the sender domain's DMARC policy");
            }
            junk = verdict.suspicious && ctx.config.smtp.junk_on_fail;
            let mut message = Vec::with_capacity(body.len() + verdict.header.len() + received.len());
            message.extend_from_slice(verdict.header.as_bytes());
            message.extend_from_slice(received.as_bytes());
            message.extend_from_slice(&body);
            message
        } else {
            // Submission: the author (From) and Sender must be the user's too, checked against
            // the addresses read when MAIL checked the envelope (no second lookup per message).
            let senders = senders.to_vec();
            let checked = self
                .server
                .cpu
                .run(move || {
                    let body = crate::verify::strip_own_results(&body, &hostname);
                    let from = crate::originator::check(&body, &senders);
                    (body, from)
                })
                .await;
            let user = self.user.as_ref().map(|u| u.address.clone()).unwrap_or_default();
            let (body, header_from) = match checked {
                Ok((body, Ok(from))) => (body, from),
                Ok((_, Err(refusal))) => {
                    self.release_all(reservations).await;
                    return refuse_originator(&user, self.peer, refusal);
                }
                Err(e) => {
                    self.release_all(reservations).await;
                    tracing::error!(id, "{e}");
                    return Reply::new(451, "4.3.0", "Temporary failure, try again later");
                }
            };
            let domain = shared::accounts::domain_of(&header_from[0]).to_string();
            let signature = match shared::dkim::signing_key(&ctx.db, &domain).await {
                Ok(Some(key)) => {
                    let signed = self.server.cpu.run(move || {
                        let signature = crate::dkim::sign(&body, &key);
                        (body, signature)
                    });
                    match signed.await {
                        Ok((signed_body, Ok(signature))) => (signed_body, Some(signature)),
                        Ok((signed_body, Err(e))) => {
                            tracing::error!("{e}");
                            (signed_body, None)
                        }
                        Err(e) => {
                            self.release_all(reservations).await;
                            tracing::error!(id, "{e}");
                            return Reply::new(451, "4.3.0", "Temporary failure, try again later");
                        }
                    }
                }
                Ok(None) => {
                    tracing::debug!(domain, "no DKIM key: sending unsigned");
                    (body, None)
                }
                Err(e) => {
                    tracing::error!("reading the DKIM key of {domain}: {e}");
                    (body, None)
                }
            };
            let (body, signature) = signature;
            let signature = signature.unwrap_or_default();
            let mut message = Vec::with_capacity(body.len() + signature.len() + received.len());
            message.extend_from_slice(received.as_bytes());
            message.extend_from_slice(signature.as_bytes());
            message.extend_from_slice(&body);
            message
        };

        if !reservations.is_empty() {
            // RFC 5321 §4.4: the delivering server adds Return-Path.
            let mut local = format!("Return-Path: <{}>\r\n", header_safe(from)).into_bytes();
            local.extend_from_slice(&message);
            // Shared with the mail store's parse on the blocking pool, not copied (up to the
            // message size limit per message).
            let local = Arc::new(local);
            let mut targets = Vec::with_capacity(reservations.len());
            let copies: Vec<Reservation> = reservations
                .iter()
                .map(|r| Reservation {
                    id: r.id,
                    user_id: r.user_id,
                    bytes: r.bytes,
                })
                .collect();
            let mut plan = Vec::with_capacity(reservations.len());
            for reservation in reservations {
                let mailbox_id = if junk {
                    ctx.mail
                        .mailbox_with_use(reservation.user_id, SpecialUse::Junk)
                        .await
                        .ok()
                        .map(|m| m.id)
                } else {
                    None
                };
                plan.push((reservation.user_id, mailbox_id));
                targets.push(DeliveryTarget {
                    user_id: reservation.user_id,
                    mailbox_id,
                    reservation: Some(reservation),
                });
            }
            // deliver() returns after the blob is fsynced and the rows committed.
            if let Err(e) = ctx
                .mail
                .deliver_owned(targets, local.clone(), &[], chrono::Utc::now())
                .await
            {
                // The transaction rolled back: give the reserved space back.
                self.release_all(copies).await;
                if e.is_disk_full() {
                    tracing::warn!(id, "local delivery refused: {e}");
                    return crate::cmd::rcpt::insufficient_storage();
                }
                if !e.is_over_quota() {
                    tracing::error!(id, "local delivery failed: {e}");
                    return Reply::new(451, "4.3.0", "Local delivery failed, try again later");
                }
                tracing::info!(id, "over quota at end of data");
                if plan.len() == 1 {
                    return Reply::new(552, "5.2.2", "Mailbox full");
                }
                // Several recipients, at least one full: the others still get the message and the
                // sender gets a DSN for the full ones (one reply after DATA cannot say both).
                if let Err(reply) = self.deliver_each(id, from, &local, &plan, local_users).await {
                    return reply;
                }
            }
        }
        if !remote.is_empty() {
            let user_id = self.user.as_ref().map(|u| u.id);
            if let Err(e) = crate::queue::enqueue(&ctx, from, &remote, &message, user_id).await {
                let full = e
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(shared::quota::is_no_space)
                    || e.downcast_ref::<sqlx::Error>()
                        .is_some_and(shared::quota::is_db_disk_full);
                if full {
                    tracing::warn!(id, "queueing refused: {e}");
                    return crate::cmd::rcpt::insufficient_storage();
                }
                tracing::error!(id, "queueing failed: {e}");
                return Reply::new(451, "4.3.0", "Queueing failed, try again later");
            }
        }
        Reply::new(250, "2.0.0", format!("OK id={id}"))
    }
}
