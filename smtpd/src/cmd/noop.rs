//! NOOP (RFC 5321 §4.1.1.9).

use crate::reply::Reply;
use crate::session::Session;

impl Session {
    pub fn noop(&mut self) -> Reply {
        Reply::ok()
    }
}
