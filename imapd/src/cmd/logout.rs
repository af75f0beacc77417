//! LOGOUT (RFC 3501 §6.1.3).

use crate::session::{CmdResult, Reply, Session, State};

impl Session {
    pub(crate) async fn cmd_logout(&mut self) -> CmdResult {
        self.untagged("BYE logging out").await?;
        self.state = State::Logout;
        Ok(Reply::ok("LOGOUT completed"))
    }
}
