//! ID (RFC 2971 §3.1): the client's fields are read and bounded, not kept.

use super::CommandBody;
use super::primitives::{PResult, Parser};

impl Parser<'_> {
    pub(super) fn id(&mut self) -> PResult<CommandBody> {
        // RFC 2971: ID ("name" "value" ...) or ID NIL; the values are only logged.
        self.sp()?;
        if self.peek() == Some(b'(') {
            self.pos += 1;
            let mut count = 0;
            while self.peek() != Some(b')') {
                if count > 0 {
                    self.sp()?;
                }
                self.nstring()?;
                count += 1;
                if count > 60 {
                    return Err("too many ID fields".into());
                }
            }
            self.pos += 1;
        } else if self.keyword()? != "NIL" {
            return Err("expected NIL or a list".into());
        }
        Ok(CommandBody::Id)
    }
}
