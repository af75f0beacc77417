//! CAPABILITY (RFC 3501 §6.1.1).

use crate::session::{CmdResult, Reply, Session};
use crate::wire::response::Response;

impl Session {
    pub(crate) async fn cmd_capability(&mut self) -> CmdResult {
        let caps = self.capabilities();
        self.respond(Response::Capability(&caps)).await?;
        Ok(Reply::ok("CAPABILITY completed"))
    }
}
