//! SUBSCRIBE and UNSUBSCRIBE (RFC 3501 §6.3.6, §6.3.7).

use crate::session::{CmdResult, Reply, Session};

impl Session {
    pub(crate) async fn cmd_subscribe(&mut self, raw: &str, subscribed: bool) -> CmdResult {
        let user = self.user()?;
        let name = self.mailbox_in(raw)?;
        self.ctx.mail.set_subscribed(user.id, &name, subscribed).await?;
        Ok(Reply::ok(if subscribed {
            "SUBSCRIBE completed"
        } else {
            "UNSUBSCRIBE completed"
        }))
    }
}
