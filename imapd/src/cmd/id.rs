//! ID (RFC 2971).

use crate::session::{CmdResult, Reply, Session};

impl Session {
    pub(crate) async fn cmd_id(&mut self) -> CmdResult {
        let version = env!("CARGO_PKG_VERSION");
        self.untagged(&format!("ID (\"name\" \"tinydc\" \"version\" \"{version}\")"))
            .await?;
        Ok(Reply::ok("ID completed"))
    }
}
