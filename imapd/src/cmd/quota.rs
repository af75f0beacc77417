//! GETQUOTA and GETQUOTAROOT (RFC 9208): one root, "", with STORAGE in KiB over mail and files
//! together (what Thunderbird's quota meter reads).

use shared::quota;

use crate::session::{CmdResult, Code, Reply, Session};
use crate::wire::response::Response;

impl Session {
    /// The QUOTA response of the one root, when the user has a limit.
    async fn quota_line(&mut self, user_id: i64) -> Result<Option<Vec<u8>>, crate::session::Failure> {
        let info = quota::info(&self.ctx.db, user_id).await?;
        Ok(info.limit.map(|limit| {
            Response::Quota {
                root: "",
                used_kib: info.used().div_ceil(1024),
                limit_kib: limit / 1024,
            }
            .to_bytes()
        }))
    }

    pub(crate) async fn cmd_getquota(&mut self, root: &str) -> CmdResult {
        let user = self.user()?;
        if !root.is_empty() {
            return Ok(Reply::no("no such quota root").code(Code::NonExistent));
        }
        match self.quota_line(user.id).await? {
            Some(line) => {
                self.conn.send(&line).await?;
                Ok(Reply::ok("GETQUOTA completed"))
            }
            None => Ok(Reply::no("no quota limit").code(Code::NonExistent)),
        }
    }

    pub(crate) async fn cmd_getquotaroot(&mut self, raw: &str) -> CmdResult {
        let user = self.user()?;
        let name = self.mailbox_in(raw)?;
        let mailbox = self.ctx.mail.mailbox(user.id, &name).await?;
        let name = self.mailbox_out(&mailbox.name);
        let quota = self.quota_line(user.id).await?;
        let roots: &[&str] = if quota.is_some() { &[""] } else { &[] };
        self.respond(Response::QuotaRoot { name: &name, roots }).await?;
        if let Some(quota) = quota {
            self.conn.send(&quota).await?;
        }
        Ok(Reply::ok("GETQUOTAROOT completed"))
    }
}
