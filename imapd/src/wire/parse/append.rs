//! APPEND (RFC 3501 §6.3.11, RFC 3502 MULTIAPPEND, RFC 4469 CATENATE, RFC 6855 §4 UTF8, RFC 7888
//! non-synchronizing literals).

use super::primitives::{PResult, Parser, parse_date_time};
use super::{AppendMessage, CatPart, CommandBody, MAX_CAT_PARTS};

impl Parser<'_> {
    pub(super) fn append(&mut self) -> PResult<CommandBody> {
        self.sp()?;
        let mailbox = self.mailbox()?;
        // RFC 3502 §6.3.11: append = "APPEND" SP mailbox 1*append-message, each message being
        // SP [flag-list SP] [date-time SP] literal. The number of messages is bounded where
        // their literals are read (session: MAX_APPEND_MESSAGES).
        let mut messages = Vec::new();
        loop {
            self.sp()?;
            messages.push(self.append_message()?);
            if self.at_end() {
                break;
            }
        }
        Ok(CommandBody::Append { mailbox, messages })
    }

    fn append_message(&mut self) -> PResult<AppendMessage> {
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
        if self.rest().len() >= 9 && self.rest()[..9].eq_ignore_ascii_case(b"CATENATE ") {
            // RFC 4469 §5: "CATENATE" SP "(" cat-part *(SP cat-part) ")".
            self.pos += 9;
            self.expect(b'(')?;
            let mut parts = Vec::new();
            loop {
                let part = match self.keyword()?.as_str() {
                    "TEXT" => {
                        self.sp()?;
                        // RFC 4469 §5 text-literal; a literal8 with BINARY (RFC 3516 §4.2).
                        CatPart::Text(self.literal(true)?)
                    }
                    "URL" => {
                        self.sp()?;
                        let url = self.astring_bytes()?;
                        CatPart::Url(String::from_utf8(url).map_err(|_| "URL is not UTF-8")?)
                    }
                    other => return Err(format!("unknown CATENATE part {other}")),
                };
                parts.push(part);
                if parts.len() > MAX_CAT_PARTS {
                    return Err(format!("at most {MAX_CAT_PARTS} CATENATE parts"));
                }
                if !self.try_sp() {
                    break;
                }
            }
            self.expect(b')')?;
            return Ok(AppendMessage {
                flags,
                date,
                message: Vec::new(),
                catenate: Some(parts),
            });
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
        Ok(AppendMessage {
            flags,
            date,
            message,
            catenate: None,
        })
    }
}
