//! STATUS (RFC 3501 §6.3.10), with HIGHESTMODSEQ (RFC 7162 §3.1.9).

use shared::mailstore::MailboxStatus;

use crate::session::{CmdResult, Reply, Session};
use crate::wire::parse::StatusItem;
use crate::wire::response::Response;

impl Session {
    pub(crate) async fn cmd_status(&mut self, raw: &str, items: &[StatusItem]) -> CmdResult {
        let user = self.user()?;
        let name = self.mailbox_in(raw)?;
        // RFC 3501 §2.3.2: RECENT counts the messages no session has claimed yet.
        let MailboxStatus {
            mailbox,
            messages,
            unseen,
            recent,
        } = self.ctx.mail.mailbox_status(user.id, &name).await?;
        let mut values = Vec::with_capacity(items.len());
        for &item in items {
            let value = match item {
                StatusItem::Messages => messages,
                StatusItem::Recent => recent,
                StatusItem::UidNext => mailbox.uidnext.into(),
                StatusItem::UidValidity => mailbox.uidvalidity.into(),
                StatusItem::Unseen => unseen,
                StatusItem::HighestModSeq => {
                    self.enable_condstore().await?;
                    mailbox.highestmodseq
                }
            };
            values.push((item, value));
        }
        let name = self.mailbox_out(&mailbox.name);
        self.respond(Response::Status {
            name: &name,
            items: &values,
        })
        .await?;
        Ok(Reply::ok("STATUS completed"))
    }
}
