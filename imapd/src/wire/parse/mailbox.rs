//! The mailbox commands' grammar: SELECT and EXAMINE (RFC 3501 §6.3.1-2, RFC 7162 §3.1.8
//! CONDSTORE), CREATE (RFC 6154 §3 USE), LIST (RFC 5258, RFC 6154 §5), LSUB and STATUS
//! (RFC 3501 §6.3.10). DELETE, RENAME and (UN)SUBSCRIBE take one or two plain names and are
//! read in [`super`].

use super::CommandBody;
use super::primitives::{PResult, Parser, is_atom_char};

/// Status data items (RFC 3501 §6.3.10, RFC 7162 §3.1.9 HIGHESTMODSEQ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusItem {
    Messages,
    Recent,
    UidNext,
    UidValidity,
    Unseen,
    HighestModSeq,
}

fn is_list_char(b: u8) -> bool {
    is_atom_char(b) || matches!(b, b'%' | b'*' | b']')
}

impl Parser<'_> {
    pub(super) fn list(&mut self) -> PResult<CommandBody> {
        self.sp()?;
        let mut special_use_only = false;
        let mut return_special_use = false;
        // RFC 5258 selection options; only SPECIAL-USE (RFC 6154 §5.1) and SUBSCRIBED are known.
        if self.peek() == Some(b'(') {
            self.pos += 1;
            while self.peek() != Some(b')') {
                self.try_sp();
                match self.keyword()?.as_str() {
                    "SPECIAL-USE" => special_use_only = true,
                    other => return Err(format!("unsupported LIST selection option {other}")),
                }
            }
            self.pos += 1;
            self.sp()?;
        }
        let reference = self.mailbox()?;
        self.sp()?;
        let pattern = self.list_mailbox()?;
        if self.try_sp() {
            if self.keyword()? != "RETURN" {
                return Err("expected RETURN".into());
            }
            self.sp()?;
            self.expect(b'(')?;
            while self.peek() != Some(b')') {
                self.try_sp();
                match self.keyword()?.as_str() {
                    "SPECIAL-USE" => return_special_use = true,
                    "CHILDREN" => {}
                    other => return Err(format!("unsupported LIST return option {other}")),
                }
            }
            self.pos += 1;
        }
        Ok(CommandBody::List {
            reference,
            pattern,
            special_use_only,
            return_special_use,
        })
    }

    /// list-mailbox: list-chars (with wildcards) or a string.
    fn list_mailbox(&mut self) -> PResult<String> {
        match self.peek() {
            Some(b'"') | Some(b'{') => String::from_utf8(self.string()?).map_err(|_| "not UTF-8".into()),
            _ => {
                let start = self.pos;
                while self.peek().is_some_and(|b| is_list_char(b) || b >= 0x80) {
                    self.pos += 1;
                }
                if self.pos == start {
                    return Err("expected a mailbox pattern".into());
                }
                String::from_utf8(self.input[start..self.pos].to_vec()).map_err(|_| "not UTF-8".into())
            }
        }
    }

    pub(super) fn select(&mut self, name: &str) -> PResult<CommandBody> {
        self.sp()?;
        let mailbox = self.mailbox()?;
        let mut condstore = false;
        if self.try_sp() {
            // RFC 7162 §3.1.8: (CONDSTORE)
            self.expect(b'(')?;
            loop {
                let p = self.keyword()?;
                if p != "CONDSTORE" {
                    return Err(format!("unknown SELECT parameter {p}"));
                }
                condstore = true;
                if !self.try_sp() {
                    break;
                }
            }
            self.expect(b')')?;
        }
        Ok(if name == "SELECT" {
            CommandBody::Select { mailbox, condstore }
        } else {
            CommandBody::Examine { mailbox, condstore }
        })
    }

    pub(super) fn create(&mut self) -> PResult<CommandBody> {
        self.sp()?;
        let mailbox = self.mailbox()?;
        let mut special_use = Vec::new();
        if self.try_sp() {
            // RFC 6154 §3: CREATE name (USE (\Sent))
            self.expect(b'(')?;
            if self.keyword()? != "USE" {
                return Err("unknown CREATE parameter".into());
            }
            self.sp()?;
            special_use = self.flag_list()?;
            self.expect(b')')?;
        }
        Ok(CommandBody::Create { mailbox, special_use })
    }

    pub(super) fn lsub(&mut self) -> PResult<CommandBody> {
        self.sp()?;
        let reference = self.mailbox()?;
        self.sp()?;
        let pattern = self.list_mailbox()?;
        Ok(CommandBody::Lsub { reference, pattern })
    }

    pub(super) fn status(&mut self) -> PResult<CommandBody> {
        self.sp()?;
        let mailbox = self.mailbox()?;
        self.sp()?;
        self.expect(b'(')?;
        let mut items = Vec::new();
        loop {
            items.push(match self.keyword()?.as_str() {
                "MESSAGES" => StatusItem::Messages,
                "RECENT" => StatusItem::Recent,
                "UIDNEXT" => StatusItem::UidNext,
                "UIDVALIDITY" => StatusItem::UidValidity,
                "UNSEEN" => StatusItem::Unseen,
                "HIGHESTMODSEQ" => StatusItem::HighestModSeq,
                other => return Err(format!("unknown STATUS item {other}")),
            });
            if !self.try_sp() {
                break;
            }
        }
        self.expect(b')')?;
        Ok(CommandBody::Status { mailbox, items })
    }
}
