//! APPEND (RFC 3501 §6.3.11, RFC 6855 §4 UTF8, RFC 7888 non-synchronizing literals).

use super::CommandBody;
use super::primitives::{PResult, Parser, parse_date_time};

impl Parser<'_> {
    pub(super) fn append(&mut self) -> PResult<CommandBody> {
        self.sp()?;
        let mailbox = self.mailbox()?;
        self.sp()?;
        let mut flags = Vec::new();
        if self.peek() == Some(b'(') {
            flags = self.flag_list()?;
            self.sp()?;
        }
        let mut date = None;
        if self.peek() == Some(b'"') {
            let text = self.quoted()?;
            date = Some(parse_date_time(&text).ok_or("bad date-time")?);
            self.sp()?;
        }
        let message = if self.rest().len() >= 4 && self.rest()[..4].eq_ignore_ascii_case(b"UTF8") {
            // RFC 6855 §4: APPEND ... UTF8 (~{n}...)
            self.pos += 4;
            self.sp()?;
            self.expect(b'(')?;
            let m = self.literal(true)?;
            self.expect(b')')?;
            m
        } else {
            self.literal(true)?
        };
        Ok(CommandBody::Append {
            mailbox,
            flags,
            date,
            message,
        })
    }
}
