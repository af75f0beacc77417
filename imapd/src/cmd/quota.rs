//! GETQUOTA and GETQUOTAROOT (RFC 9208): one root, "", with STORAGE in KiB over mail and files
//! together (what Thunderbird's quota meter reads).

use shared::quota;

use crate::session::{CmdResult, Code, Reply, Session};

impl Session {
    async fn quota_line(&mut self, user_id: i64) -> Result<Option<String>, crate::session::Failure> {
        let info = quota::info(&self.ctx.db, user_id).await?;
        Ok(info
            .limit
            .map(|limit| format!("QUOTA \"\" (STORAGE {} {})", info.used().div_ceil(1024), limit / 1024)))
    }

    pub(crate) async fn cmd_getquota(&mut self, root: &str) -> CmdResult {
        let user = self.user()?;
        if !root.is_empty() {
            return Ok(Reply::no("no such quota root").code(Code::NonExistent));
        }
        match self.quota_line(user.id).await? {
            Some(line) => {
                self.untagged(&line).await?;
                Ok(Reply::ok("GETQUOTA completed"))
            }
            None => Ok(Reply::no("no quota limit").code(Code::NonExistent)),
        }
    }

    pub(crate) async fn cmd_getquotaroot(&mut self, raw: &str) -> CmdResult {
        let user = self.user()?;
        let name = self.mailbox_in(raw)?;
        let mailbox = self.ctx.mail.mailbox(user.id, &name).await?;
        let mut line = b"* QUOTAROOT ".to_vec();
        line.extend_from_slice(&self.mailbox_out(&mailbox.name));
        let quota = self.quota_line(user.id).await?;
        if quota.is_some() {
            line.extend_from_slice(b" \"\"");
        }
        line.extend_from_slice(b"\r\n");
        self.conn.send(&line).await?;
        if let Some(quota) = quota {
            self.untagged(&quota).await?;
        }
        Ok(Reply::ok("GETQUOTAROOT completed"))
    }
}
