//! RSET (RFC 5321 §4.1.1.5): drop the transaction, keep the greeting and login.

use crate::reply::Reply;
use crate::session::Session;

impl Session {
    pub async fn rset(&mut self) -> Reply {
        self.reset().await;
        Reply::ok()
    }
}
