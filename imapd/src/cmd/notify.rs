//! NOTIFY (RFC 5465 §3.1): `NOTIFY SET [STATUS] event-groups` and `NOTIFY NONE`. What the
//! session then hears of, and how it is told, is in `session/notify.rs`.

use crate::session::{CmdResult, Reply, Session};
use crate::wire::parse::NotifySet;

impl Session {
    pub(crate) async fn cmd_notify(&mut self, set: Option<NotifySet>) -> CmdResult {
        match set {
            Some(set) => self.notify_set(set).await,
            None => {
                // §3.1: no event of any kind from now on; the selected mailbox is told of
                // changes at the end of commands again, as before NOTIFY.
                self.notify = None;
                Ok(Reply::ok("NOTIFY NONE completed"))
            }
        }
    }
}
