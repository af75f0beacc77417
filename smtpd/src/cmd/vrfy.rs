//! VRFY (RFC 5321 §3.5.3): answered 252 without looking anything up, so the directory cannot be
//! harvested.

use crate::reply::Reply;
use crate::session::Session;

impl Session {
    pub fn vrfy(&mut self, _value: String) -> Reply {
        Reply::new(
            252,
            "2.5.0",
            "Cannot VRFY user, but will accept message and attempt delivery",
        )
    }
}
