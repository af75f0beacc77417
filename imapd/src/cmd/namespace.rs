//! NAMESPACE (RFC 2342): one personal namespace, no others.

use crate::session::{CmdResult, Reply, Session};

impl Session {
    pub(crate) async fn cmd_namespace(&mut self) -> CmdResult {
        self.untagged("NAMESPACE ((\"\" \"/\")) NIL NIL").await?;
        Ok(Reply::ok("NAMESPACE completed"))
    }
}
