//! MAIL FROM (RFC 5321 §4.1.1.2) with SIZE (RFC 1870), BODY=8BITMIME (RFC 6152) and SMTPUTF8
//! (RFC 6531). On submission the sender must be one of the user's addresses.

use smtp_proto::{MAIL_BODY_BINARYMIME, MAIL_RET_FULL, MAIL_RET_HDRS, MAIL_SMTPUTF8, MailFrom};

use crate::ListenerKind;
use crate::reply::Reply;
use crate::session::{Session, State, Transaction};

impl Session {
    pub async fn mail(&mut self, from: MailFrom<String>) -> Reply {
        let config = &self.server.ctx.config.smtp;
        // RFC 1870 §6.1: refuse at once a message announced larger than we take.
        if from.size as u64 > config.max_message_size {
            return Reply::new(552, "5.3.4", "Message size exceeds fixed maximum message size");
        }
        if from.flags & MAIL_BODY_BINARYMIME != 0 {
            return Reply::new(555, "5.5.4", "BODY=BINARYMIME not supported");
        }
        // DSN (RFC 3461) is not offered, so its parameters are not accepted.
        if from.flags & (MAIL_RET_FULL | MAIL_RET_HDRS) != 0 || from.env_id.is_some() {
            return Reply::new(555, "5.5.4", "DSN parameters not supported");
        }
        let smtputf8 = from.flags & MAIL_SMTPUTF8 != 0;
        // RFC 6531 §3.4: a non-ASCII address needs SMTPUTF8.
        if !smtputf8 && !from.address.is_ascii() {
            return Reply::new(553, "5.6.7", "Non-ASCII address requires SMTPUTF8");
        }
        let address = from.address.trim().to_string();
        let mut senders = Vec::new();
        if self.kind != ListenerKind::Mx {
            let Some(user) = self.user.clone() else {
                return Reply::new(530, "5.7.0", "Authentication required");
            };
            match shared::accounts::sender_addresses(&self.server.ctx.db, user.id).await {
                Ok(mine) if mine.iter().any(|a| a.eq_ignore_ascii_case(&address)) => senders = mine,
                Ok(_) => {
                    tracing::warn!(peer = %self.peer, user = user.address, sender = address, "sender not owned");
                    return Reply::new(
                        553,
                        "5.7.1",
                        format!("Sender address <{address}> not owned by {}", user.address),
                    );
                }
                Err(e) => {
                    tracing::error!("sender lookup failed: {e}");
                    return Reply::new(451, "4.3.0", "Temporary lookup failure");
                }
            }
            // Messages per authenticated user per hour.
            if !self.server.limits.message_allowed(user.id) {
                tracing::warn!(user = user.address, "message rate limit reached");
                return Reply::new(450, "4.7.1", "Too many messages sent, try again later");
            }
        }
        self.state = State::Mail(Transaction {
            from: address,
            size: from.size as u64,
            smtputf8,
            senders,
            ..Transaction::default()
        });
        Reply::new(250, "2.1.0", "Sender OK")
    }
}
