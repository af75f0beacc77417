//! CREATE (RFC 3501 §6.3.3), with USE (RFC 6154 §3).

use shared::mailstore::{SpecialUse, normalize_mailbox_name};

use crate::session::{CmdResult, Code, Reply, Session};

impl Session {
    pub(crate) async fn cmd_create(&mut self, raw: &str, uses: &[String]) -> CmdResult {
        let user = self.user()?;
        let name = self.mailbox_in(raw)?;
        // A trailing delimiter only says the client means to create inferiors later.
        let name = normalize_mailbox_name(&name);
        if name == "INBOX" {
            return Ok(Reply::no("INBOX always exists").code(Code::AlreadyExists));
        }
        let special_use = match uses {
            [] => None,
            [one] => match SpecialUse::from_imap(one) {
                Some(u) => Some(u),
                None => return Ok(Reply::no("unsupported special use").code(Code::UseAttr)),
            },
            _ => return Ok(Reply::no("only one special use per mailbox").code(Code::UseAttr)),
        };
        // RFC 3501 §6.3.3: the store creates the superior names that are needed, in the same
        // transaction, within the limits (NO [LIMIT], RFC 5530), or nothing at all.
        self.ctx.mail.create_mailbox(user.id, &name, special_use).await?;
        Ok(Reply::ok("CREATE completed"))
    }
}
