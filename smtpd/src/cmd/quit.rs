//! QUIT (RFC 5321 §4.1.1.10).

use crate::reply::Reply;
use crate::session::Session;

impl Session {
    pub fn quit(&mut self) -> Reply {
        self.closing = true;
        Reply::new(221, "2.0.0", format!("{} closing connection", self.hostname()))
    }
}
