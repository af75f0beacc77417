//! CLOSE (RFC 3501 §6.4.2) and UNSELECT (RFC 3691). CLOSE announces nothing, with QRESYNC
//! neither (no VANISHED, no HIGHESTMODSEQ: the client has not seen the changes of others up to
//! it); its expunges are recorded by the mail store for the next SELECT (QRESYNC).

use crate::session::{CmdResult, Reply, Session, State};

impl Session {
    /// `expunge`: CLOSE removes `\Deleted` messages silently (unless read-only); UNSELECT does not.
    pub(crate) async fn cmd_close(&mut self, expunge: bool) -> CmdResult {
        let State::Selected { user, selected } = &self.state else {
            return Ok(Reply::bad("no mailbox selected"));
        };
        let user = user.clone();
        if expunge && !selected.read_only {
            self.ctx.mail.expunge(user.id, selected.mailbox.id, None).await?;
        }
        self.state = State::Authenticated { user };
        Ok(Reply::ok(if expunge {
            "CLOSE completed"
        } else {
            "UNSELECT completed"
        }))
    }
}
