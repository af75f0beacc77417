//! STORE (RFC 3501 §6.4.6, RFC 7162 §3.1.3 UNCHANGEDSINCE).

use super::CommandBody;
use super::primitives::{PResult, Parser};

/// STORE's way of changing flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    Add,
    Remove,
    Replace,
}

impl Parser<'_> {
    pub(super) fn store(&mut self, uid: bool) -> PResult<CommandBody> {
        self.sp()?;
        let set = self.sequence_set()?;
        self.sp()?;
        let mut unchanged_since = None;
        if self.peek() == Some(b'(') {
            // RFC 7162 §3.1.3: (UNCHANGEDSINCE n)
            self.pos += 1;
            if self.keyword()? != "UNCHANGEDSINCE" {
                return Err("unknown STORE modifier".into());
            }
            self.sp()?;
            unchanged_since = Some(self.number()?);
            self.expect(b')')?;
            self.sp()?;
        }
        let item = self.keyword()?;
        let (op, rest) = match item.as_bytes().first() {
            Some(b'+') => (StoreOp::Add, &item[1..]),
            Some(b'-') => (StoreOp::Remove, &item[1..]),
            _ => (StoreOp::Replace, &item[..]),
        };
        let silent = match rest {
            "FLAGS" => false,
            "FLAGS.SILENT" => true,
            _ => return Err("expected FLAGS or FLAGS.SILENT".into()),
        };
        self.sp()?;
        let flags = if self.peek() == Some(b'(') {
            self.flag_list()?
        } else {
            let mut flags = vec![self.flag()?];
            while self.try_sp() {
                flags.push(self.flag()?);
            }
            flags
        };
        Ok(CommandBody::Store {
            uid,
            set,
            op,
            silent,
            flags,
            unchanged_since,
        })
    }
}
