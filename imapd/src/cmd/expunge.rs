//! EXPUNGE (RFC 3501 §6.4.3) and UID EXPUNGE (RFC 4315 §2.1), announced as `VANISHED` after
//! ENABLE QRESYNC (RFC 7162 §3.2.10).

use crate::session::{CmdResult, Code, Reply, Session, State};
use crate::wire::sequence::SequenceSet;

impl Session {
    pub(crate) async fn cmd_expunge(&mut self, set: Option<SequenceSet>) -> CmdResult {
        let uids = match &set {
            Some(set) => Some(self.resolve(true, set)?.into_iter().map(|t| t.1).collect::<Vec<_>>()),
            None => None,
        };
        let State::Selected { user, selected } = &self.state else {
            return Ok(Reply::bad("no mailbox selected"));
        };
        if selected.read_only {
            return Ok(Reply::no("mailbox is read-only").code(Code::ReadOnly));
        }
        let (user_id, mailbox_id) = (user.id, selected.mailbox.id);
        let clock_before = self.clock_reading();
        let expunged = self.ctx.mail.expunge_at(user_id, mailbox_id, uids.as_deref()).await?;
        let removed = expunged.uids;
        // The removal's own MODSEQ: when it follows the view's, the view is current once the
        // removed messages leave it (no sync read after the command).
        self.selected_mut()?.advance_to(expunged.modseq);
        self.own_change_ticked(clock_before);
        self.announce_expunged(&removed).await?;
        let reply = Reply::ok(if set.is_some() {
            "UID EXPUNGE completed"
        } else {
            "EXPUNGE completed"
        });
        if self.qresync && !removed.is_empty() {
            // RFC 7162 §3.2.10 (EXPUNGE, UID EXPUNGE with QRESYNC): the mailbox's new
            // HIGHESTMODSEQ in the tagged OK. Everything up to it is announced first (others'
            // changes too), so a client that stores it misses nothing: the sync reads nothing
            // when this removal directly followed the view.
            if !self.view_is_current() {
                self.sync(true).await?;
            }
            let highest = self.selected()?.known_modseq;
            return Ok(reply.code(Code::HighestModSeq(highest)));
        }
        Ok(reply)
    }
}
