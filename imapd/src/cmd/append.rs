//! APPEND (RFC 3501 §6.3.11) with APPENDUID (RFC 4315 §3). The quota was reserved when the
//! literal was announced (see the connection loop), so an over-quota message is refused before
//! its bytes cross the network.

use chrono::{DateTime, FixedOffset, Utc};
use shared::mailstore::{StoreError, normalize_flags};

use crate::session::{CmdResult, Code, Reply, Session};

impl Session {
    pub(crate) async fn cmd_append(
        &mut self,
        raw: &str,
        flags: Vec<String>,
        date: Option<DateTime<FixedOffset>>,
        message: Vec<u8>,
    ) -> CmdResult {
        let user = self.user()?;
        let name = self.mailbox_in(raw)?;
        if message.is_empty() {
            return Ok(Reply::no("empty message"));
        }
        let mailbox = match self.ctx.mail.mailbox(user.id, &name).await {
            Ok(m) => m,
            Err(StoreError::NoSuchMailbox) => return Ok(Reply::no("no such mailbox").code(Code::TryCreate)),
            Err(e) => return Err(e.into()),
        };
        let flags = normalize_flags(&flags);
        let date = date.map(|d| d.with_timezone(&Utc)).unwrap_or_else(Utc::now);
        let reservation = self.reservation.take();
        // The store consumes the reservation; if its transaction fails, the reservation row
        // is still there and is given back here rather than held until it expires.
        let held = reservation.as_ref().map(|r| (r.id, r.user_id, r.bytes));
        let appended = match self
            .ctx
            .mail
            .append_owned(user.id, mailbox.id, message, &flags, date, reservation)
            .await
        {
            Ok(appended) => appended,
            Err(e) => {
                if let Some((id, user_id, bytes)) = held {
                    let reservation = shared::quota::Reservation { id, user_id, bytes };
                    if let Err(e) = shared::quota::release(&self.ctx.db, reservation).await {
                        tracing::warn!("releasing a quota reservation: {e}");
                    }
                }
                return Err(e.into());
            }
        };
        Ok(Reply::ok("APPEND completed").code(Code::AppendUid {
            uidvalidity: appended.uidvalidity,
            uid: appended.uid,
        }))
    }
}
