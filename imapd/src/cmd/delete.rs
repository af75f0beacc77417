//! DELETE (RFC 3501 §6.3.4).

use shared::mailstore::{DELIMITER, normalize_mailbox_name};

use crate::session::{CmdResult, Code, Reply, Session, State};

impl Session {
    pub(crate) async fn cmd_delete(&mut self, raw: &str) -> CmdResult {
        let user = self.user()?;
        let name = normalize_mailbox_name(&self.mailbox_in(raw)?);
        if name == "INBOX" {
            return Ok(Reply::no("INBOX cannot be deleted").code(Code::Cannot));
        }
        let prefix = format!("{name}{DELIMITER}");
        let mailboxes = self.ctx.mail.list_mailboxes(user.id).await?;
        if mailboxes.iter().any(|m| m.name.starts_with(&prefix)) {
            // Keeping inferiors would leave a name that cannot be selected; refuse instead.
            return Ok(Reply::no("delete the mailboxes inside it first").code(Code::HasChildren));
        }
        let selected_here = matches!(&self.state, State::Selected { selected, .. } if selected.mailbox.name == name);
        self.ctx.mail.delete_mailbox(user.id, &name).await?;
        if selected_here {
            self.state = State::Authenticated { user };
        }
        Ok(Reply::ok("DELETE completed"))
    }
}
