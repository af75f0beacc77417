//! NAMESPACE (RFC 2342): one personal namespace, no others.

use shared::mailstore::DELIMITER;

use crate::session::{CmdResult, Reply, Session};
use crate::wire::response::Response;

impl Session {
    pub(crate) async fn cmd_namespace(&mut self) -> CmdResult {
        self.respond(Response::Namespace {
            prefix: "",
            delimiter: DELIMITER,
        })
        .await?;
        Ok(Reply::ok("NAMESPACE completed"))
    }
}
