//! STATUS (RFC 3501 §6.3.10), with HIGHESTMODSEQ (RFC 7162 §3.1.9), SIZE (RFC 8438) and
//! DELETED (RFC 9051 §6.3.11); the same answer follows each LIST line of LIST-STATUS
//! (RFC 5819).

use shared::mailstore::MailboxStatus;

use crate::session::{CmdResult, Failure, Reply, Session};
use crate::wire::parse::StatusItem;
use crate::wire::response::Response;

impl Session {
    pub(crate) async fn cmd_status(&mut self, raw: &str, items: &[StatusItem]) -> CmdResult {
        let user = self.user()?;
        let name = self.mailbox_in(raw)?;
        let status = self.ctx.mail.mailbox_status(user.id, &name).await?;
        self.send_status(&status, items).await?;
        Ok(Reply::ok("STATUS completed"))
    }

    /// `* STATUS name (...)` with the items asked for, in their order (STATUS, and LIST-STATUS
    /// after a LIST line).
    pub(crate) async fn send_status(&mut self, status: &MailboxStatus, items: &[StatusItem]) -> Result<(), Failure> {
        let mailbox = &status.mailbox;
        let mut values = Vec::with_capacity(items.len());
        for &item in items {
            let value = match item {
                StatusItem::Messages => status.messages,
                // RFC 3501 §2.3.2: RECENT counts the messages no session has claimed yet.
                StatusItem::Recent => status.recent,
                StatusItem::UidNext => mailbox.uidnext.into(),
                StatusItem::UidValidity => mailbox.uidvalidity.into(),
                StatusItem::Unseen => status.unseen,
                StatusItem::HighestModSeq => {
                    self.enable_condstore().await?;
                    mailbox.highestmodseq
                }
                StatusItem::Size => status.size,
                StatusItem::Deleted => status.deleted,
            };
            values.push((item, value));
        }
        let name = self.mailbox_out(&mailbox.name);
        self.respond(Response::Status {
            name: &name,
            items: &values,
        })
        .await?;
        Ok(())
    }
}
