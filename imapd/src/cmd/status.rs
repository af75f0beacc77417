//! STATUS (RFC 3501 §6.3.10), with HIGHESTMODSEQ (RFC 7162 §3.1.9).

use shared::mailstore::MailboxStatus;

use crate::session::{CmdResult, Reply, Session};
use crate::wire::parse::StatusItem;

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
        let mut parts = Vec::new();
        for item in items {
            parts.push(match item {
                StatusItem::Messages => format!("MESSAGES {messages}"),
                StatusItem::Recent => format!("RECENT {recent}"),
                StatusItem::UidNext => format!("UIDNEXT {}", mailbox.uidnext),
                StatusItem::UidValidity => format!("UIDVALIDITY {}", mailbox.uidvalidity),
                StatusItem::Unseen => format!("UNSEEN {unseen}"),
                StatusItem::HighestModSeq => {
                    if !self.ctx.config.imap.condstore {
                        return Ok(Reply::bad("CONDSTORE is not offered"));
                    }
                    self.condstore = true;
                    format!("HIGHESTMODSEQ {}", mailbox.highestmodseq)
                }
            });
        }
        let mut line = b"* STATUS ".to_vec();
        line.extend_from_slice(&self.mailbox_out(&mailbox.name));
        line.extend_from_slice(format!(" ({})\r\n", parts.join(" ")).as_bytes());
        self.conn.send(&line).await?;
        Ok(Reply::ok("STATUS completed"))
    }
}
