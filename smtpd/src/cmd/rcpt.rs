//! RCPT TO (RFC 5321 §4.1.1.3): local users, aliases and catch-alls are accepted with their quota
//! reserved now (452 4.2.2 when full); other domains only from authenticated submission.

use shared::accounts::{Recipient as Resolved, resolve_recipient};
use shared::quota::{self, QuotaError};
use smtp_proto::RcptTo;

use crate::ListenerKind;
use crate::reply::Reply;
use crate::session::{Recipient, Session, State, Target};

/// Bytes reserved per recipient when the client gave no SIZE.
pub const SIZE_ESTIMATE: u64 = 4096;

impl Session {
    pub async fn rcpt(&mut self, to: RcptTo<String>) -> Reply {
        let max = self.server.ctx.config.smtp.max_recipients as usize;
        let (count, size, smtputf8) = match &self.state {
            State::Mail(tx) => (tx.recipients.len(), tx.size, tx.smtputf8),
            _ => return Reply::new(503, "5.5.1", "Need MAIL before RCPT"),
        };
        // RFC 5321 §4.5.3.1.8: 452 for too many recipients, the client sends the rest later.
        if count >= max {
            return Reply::new(452, "4.5.3", "Too many recipients");
        }
        let address = to.address.trim().to_string();
        if !smtputf8 && !address.is_ascii() {
            return Reply::new(553, "5.6.7", "Non-ASCII address requires SMTPUTF8");
        }
        let db = &self.server.ctx.db;
        // shared::accounts::resolve_recipient holds the postmaster fallback (RFC 5321 §4.5.1).
        let target = match resolve_recipient(db, &address).await {
            Ok(Resolved::Local(users)) => {
                let mut reservations = Vec::with_capacity(users.len());
                let bytes = if size > 0 { size } else { SIZE_ESTIMATE };
                for user in users {
                    // The lookup just read the user's limit: not read again.
                    match quota::reserve_read(db, user.id, user.quota_limit, bytes).await {
                        Ok(r) => reservations.push(r),
                        Err(e) => {
                            for r in reservations {
                                let _ = quota::release(db, r).await;
                            }
                            return match e {
                                QuotaError::Exceeded { .. } => {
                                    tracing::info!(rcpt = address, "mailbox full");
                                    Reply::new(452, "4.2.2", "Mailbox full")
                                }
                                e if e.is_disk_full() => {
                                    tracing::warn!(rcpt = address, "refused: {e}");
                                    insufficient_storage()
                                }
                                e => {
                                    tracing::error!("quota reservation failed: {e}");
                                    Reply::new(451, "4.3.0", "Temporary failure")
                                }
                            };
                        }
                    }
                }
                Target::Local(reservations)
            }
            Ok(Resolved::UnknownLocal) => return Reply::new(550, "5.1.1", "No such user here"),
            Ok(Resolved::Remote) => {
                if self.kind == ListenerKind::Mx {
                    // Not an open relay: only mail for our domains arrives on the MX port.
                    return Reply::new(554, "5.7.1", "Relay access denied");
                }
                if shared::accounts::normalize_address(&address).is_err() {
                    return Reply::new(501, "5.1.3", "Bad recipient address syntax");
                }
                // Outgoing mail reserves no quota but still lands on the disk (the queue).
                if let Err(e) = quota::check_disk(db, if size > 0 { size } else { SIZE_ESTIMATE }) {
                    tracing::warn!(rcpt = address, "refused: {e}");
                    return insufficient_storage();
                }
                Target::Remote
            }
            Err(e) => {
                tracing::error!("recipient lookup failed: {e}");
                return Reply::new(451, "4.3.0", "Temporary lookup failure");
            }
        };
        if let State::Mail(tx) = &mut self.state {
            tx.recipients.push(Recipient { address, target });
        }
        Reply::new(250, "2.1.5", "Recipient OK")
    }
}

/// RFC 5321 §4.2.3 452 with RFC 3463 §3.4 X.3.1 "Mail system full": a transient refusal, the
/// client retries later (the disk is full, or would go below its configured reserve).
pub(crate) fn insufficient_storage() -> Reply {
    Reply::new(452, "4.3.1", "Insufficient system storage")
}
