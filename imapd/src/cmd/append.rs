//! APPEND (RFC 3501 §6.3.11) and MULTIAPPEND (RFC 3502) with APPENDUID (RFC 4315 §3). The
//! quota was reserved for each message when its literal was announced (see the connection
//! loop), so an over-quota message is refused before its bytes cross the network.

use chrono::Utc;
use shared::mailstore::{NewMessage, StoreError};

use crate::session::{CmdResult, Code, Reply, Session};
use crate::wire::parse::AppendMessage;
use crate::wire::sequence::compact;

impl Session {
    pub(crate) async fn cmd_append(&mut self, raw: &str, messages: Vec<AppendMessage>) -> CmdResult {
        let user = self.user()?;
        let name = self.mailbox_in(raw)?;
        // RFC 3502 §3: one message refused refuses them all, so every check comes first.
        if messages.iter().any(|m| m.message.is_empty()) {
            tracing::info!(peer = %self.peer, "APPEND refused: empty message");
            return Ok(Reply::no("empty message"));
        }
        let mailbox = match self.ctx.mail.mailbox(user.id, &name).await {
            Ok(m) => m,
            Err(StoreError::NoSuchMailbox) => return Ok(Reply::no("no such mailbox").code(Code::TryCreate)),
            Err(e) => return Err(e.into()),
        };
        // Reserved in message order, one per message literal (session::reserve_for_append).
        // The store consumes them: committed with the rows, or released if the transaction fails.
        let mut reservations = std::mem::take(&mut self.reservations).into_iter();
        let batch: Vec<NewMessage> = messages
            .into_iter()
            .map(|m| NewMessage {
                raw: m.message,
                flags: m.flags,
                internal_date: m.date.map(|d| d.with_timezone(&Utc)).unwrap_or_else(Utc::now),
                reservation: reservations.next(),
            })
            .collect();
        // None are left over unless the command's literals and messages disagree; give them back.
        self.reservations = reservations.collect();
        let appended = if batch.len() == 1 {
            // One message (every APPEND but a MULTIAPPEND): the store's single-message path,
            // in the fewest round trips.
            let Some(NewMessage {
                raw,
                flags,
                internal_date,
                reservation,
            }) = batch.into_iter().next()
            else {
                return Ok(Reply::bad("APPEND without a message"));
            };
            // The store commits the reservation, or releases it if its transaction fails.
            let one = self
                .ctx
                .mail
                .append_owned(user.id, mailbox.id, raw, &flags, internal_date, reservation)
                .await?;
            vec![one]
        } else {
            self.ctx.mail.append_batch(user.id, mailbox.id, batch).await?
        };
        let uids: Vec<u32> = appended.iter().map(|a| a.uid).collect();
        Ok(Reply::ok("APPEND completed").code(Code::AppendUid {
            uidvalidity: appended.first().map_or(mailbox.uidvalidity, |a| a.uidvalidity),
            uids: compact(&uids),
        }))
    }
}
