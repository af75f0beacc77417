//! COPY and MOVE with their UID forms (RFC 3501 §6.4.7, RFC 6851), answering COPYUID
//! (RFC 4315 §3); a MOVE after ENABLE QRESYNC announces VANISHED and HIGHESTMODSEQ.

use shared::mailstore::StoreError;

use crate::session::{CmdResult, Code, Reply, Session, State, Status};
use crate::wire::response::Response;
use crate::wire::sequence::{SequenceSet, compact};

impl Session {
    pub(crate) async fn cmd_copy(&mut self, uid: bool, set: &SequenceSet, raw: &str, is_move: bool) -> CmdResult {
        let targets = self.resolve(uid, set)?;
        let name = self.mailbox_in(raw)?;
        let State::Selected { user, selected } = &self.state else {
            return Ok(Reply::bad("no mailbox selected"));
        };
        if is_move && selected.read_only {
            return Ok(Reply::no("mailbox is read-only").code(Code::ReadOnly));
        }
        let (user_id, from) = (user.id, selected.mailbox.id);
        let verb = match (uid, is_move) {
            (false, false) => "COPY",
            (true, false) => "UID COPY",
            (false, true) => "MOVE",
            (true, true) => "UID MOVE",
        };
        let target = match self.ctx.mail.mailbox(user_id, &name).await {
            Ok(m) => m,
            // RFC 3501 §6.4.7: TRYCREATE tells the client it may create the target.
            Err(StoreError::NoSuchMailbox) => return Ok(Reply::no("no such mailbox").code(Code::TryCreate)),
            Err(e) => return Err(e.into()),
        };
        let uids: Vec<u32> = targets.iter().map(|t| t.1).collect();
        if uids.is_empty() {
            return Ok(Reply::ok(format!("{verb} completed (nothing to do)")));
        }
        let pairs = if is_move {
            self.ctx.mail.move_messages(user_id, from, &uids, target.id).await?
        } else {
            self.ctx.mail.copy(user_id, from, &uids, target.id).await?
        };
        let code = (!pairs.is_empty()).then(|| {
            let src: Vec<u32> = pairs.iter().map(|p| p.0).collect();
            let dst: Vec<u32> = pairs.iter().map(|p| p.1).collect();
            Code::CopyUid {
                uidvalidity: target.uidvalidity,
                source: compact(&src),
                destination: compact(&dst),
            }
        });
        if is_move {
            // RFC 6851 §4.3: COPYUID in an untagged OK before the EXPUNGEs.
            if let Some(code) = &code {
                self.respond(Response::Untagged {
                    status: Status::Ok,
                    code: Some(code),
                    text: "moved",
                })
                .await?;
            }
            // RFC 6851 §4.3 with QRESYNC: VANISHED instead of EXPUNGE (announce_expunged).
            let moved: Vec<u32> = pairs.iter().map(|p| p.0).collect();
            self.announce_expunged(&moved).await?;
            let reply = Reply::ok(format!("{verb} completed"));
            if self.qresync && !moved.is_empty() {
                // As after EXPUNGE (RFC 7162 §3.2.10), and as Dovecot answers a MOVE: the new
                // HIGHESTMODSEQ in the tagged OK, once everything up to it is announced.
                self.sync(true).await?;
                let highest = self.selected()?.known_modseq;
                return Ok(reply.code(Code::HighestModSeq(highest)));
            }
            return Ok(reply);
        }
        let reply = Reply::ok(format!("{verb} completed"));
        Ok(match code {
            Some(code) => reply.code(code),
            None => reply,
        })
    }
}
