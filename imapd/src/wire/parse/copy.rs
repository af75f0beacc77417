//! COPY and MOVE (RFC 3501 §6.4.7, RFC 6851 §3.1).

use super::CommandBody;
use super::primitives::{PResult, Parser};

impl Parser<'_> {
    pub(super) fn copy_move(&mut self, uid: bool, is_move: bool) -> PResult<CommandBody> {
        self.sp()?;
        let set = self.sequence_set()?;
        self.sp()?;
        let mailbox = self.mailbox()?;
        Ok(if is_move {
            CommandBody::Move { uid, set, mailbox }
        } else {
            CommandBody::Copy { uid, set, mailbox }
        })
    }
}
