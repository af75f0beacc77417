//! ID (RFC 2971).

use crate::session::{CmdResult, Reply, Session};
use crate::wire::response::Response;

impl Session {
    pub(crate) async fn cmd_id(&mut self) -> CmdResult {
        self.respond(Response::Id {
            name: "tinydc",
            version: env!("CARGO_PKG_VERSION"),
        })
        .await?;
        Ok(Reply::ok("ID completed"))
    }
}
