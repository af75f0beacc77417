//! RENAME (RFC 3501 §6.3.5), INBOX included (its messages move, INBOX stays).

use crate::session::{CmdResult, Reply, Session};

impl Session {
    pub(crate) async fn cmd_rename(&mut self, from: &str, to: &str) -> CmdResult {
        let user = self.user()?;
        let from = self.mailbox_in(from)?;
        let to = self.mailbox_in(to)?;
        self.ctx.mail.rename_mailbox(user.id, &from, &to).await?;
        Ok(Reply::ok("RENAME completed"))
    }
}
