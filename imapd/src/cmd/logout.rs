//! LOGOUT (RFC 3501 §6.1.3).

use crate::session::{CmdResult, Reply, Session, State};
use crate::wire::response::Response;

impl Session {
    pub(crate) async fn cmd_logout(&mut self) -> CmdResult {
        self.respond(Response::Bye("logging out")).await?;
        self.state = State::Logout;
        Ok(Reply::ok("LOGOUT completed"))
    }
}
