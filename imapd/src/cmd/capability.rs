//! CAPABILITY (RFC 3501 §6.1.1).

use crate::session::{CmdResult, Reply, Session};

impl Session {
    pub(crate) async fn cmd_capability(&mut self) -> CmdResult {
        let caps = self.capabilities();
        self.untagged(&format!("CAPABILITY {caps}")).await?;
        Ok(Reply::ok("CAPABILITY completed"))
    }
}
