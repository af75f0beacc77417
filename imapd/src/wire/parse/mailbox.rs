//! The mailbox commands' grammar: SELECT and EXAMINE (RFC 3501 §6.3.1-2, RFC 7162 §3.1.8
//! CONDSTORE), CREATE (RFC 6154 §3 USE), LIST (RFC 5258, RFC 6154 §5), LSUB and STATUS
//! (RFC 3501 §6.3.10). DELETE, RENAME and (UN)SUBSCRIBE take one or two plain names and are
//! read in [`super`].

use super::CommandBody;
use super::primitives::{PResult, Parser, is_atom_char};
use crate::wire::sequence::{Bound, SequenceSet};

/// Pairs of `seq-match-data` a client may send (RFC 7162 §3.2.5.2 suggests a sample of its
/// cache, not all of it).
const MAX_SEQ_MATCH: u64 = 100_000;

/// RFC 7162 §3.2.5: `QRESYNC (uidvalidity modseq [known-uids [seq-match-data]])`, what a
/// client's cache of the mailbox knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QresyncParams {
    pub uidvalidity: u32,
    pub modseq: u64,
    /// The UIDs the client knows of (None: all, `1:*`).
    pub known_uids: Option<SequenceSet>,
    /// `(known-sequence-set known-uid-set)` as (message number, UID) pairs, ascending.
    pub seq_match: Vec<(u32, u32)>,
}

/// The numbers of a set without `*`, in the client's order, at most `limit` of them.
fn enumerate(set: &SequenceSet, limit: u64) -> PResult<Vec<u32>> {
    let mut out = Vec::new();
    for &(a, b) in &set.0 {
        let (Bound::Num(a), Bound::Num(b)) = (a, b) else {
            return Err("\"*\" is not allowed in seq-match-data".into());
        };
        let (lo, hi) = (a.min(b), a.max(b));
        if out.len() as u64 + u64::from(hi - lo) + 1 > limit {
            return Err("seq-match-data too long".into());
        }
        out.extend(lo..=hi);
    }
    Ok(out)
}

/// Status data items (RFC 3501 §6.3.10, RFC 7162 §3.1.9 HIGHESTMODSEQ, RFC 8438 SIZE,
/// RFC 9051 §6.3.11 DELETED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusItem {
    Messages,
    Recent,
    UidNext,
    UidValidity,
    Unseen,
    HighestModSeq,
    Size,
    Deleted,
}

/// Mailbox patterns one LIST may carry (RFC 5258 §3 `patterns`); the command line bounds
/// their bytes, this bounds the matching work.
const MAX_LIST_PATTERNS: usize = 64;

/// What an extended LIST (RFC 5258 §3) asks for: its selection options (which names are
/// listed) and return options (what is said of each).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Selection SUBSCRIBED (RFC 5258 §3.1): the subscribed names, existing or not.
    pub subscribed: bool,
    /// Selection SPECIAL-USE (RFC 6154 §5.1): only mailboxes with a special use.
    pub special_use: bool,
    /// Selection RECURSIVEMATCH (RFC 5258 §3.1): also the parents of selected names that the
    /// pattern does not reach, with CHILDINFO.
    pub recursive_match: bool,
    /// Return SUBSCRIBED (RFC 5258 §3.2; implied by the selection option): `\Subscribed`.
    pub return_subscribed: bool,
    /// Return STATUS (RFC 5819 §2): a STATUS response after each selectable mailbox's LIST.
    pub status: Option<Vec<StatusItem>>,
}

fn is_list_char(b: u8) -> bool {
    is_atom_char(b) || matches!(b, b'%' | b'*' | b']')
}

impl Parser<'_> {
    /// RFC 5258 §6: `"LIST" [SP list-select-opts] SP mailbox SP mbox-or-pat
    /// [SP list-return-opts]`, mbox-or-pat one pattern or a parenthesized list of them.
    pub(super) fn list(&mut self) -> PResult<CommandBody> {
        self.sp()?;
        let mut options = ListOptions::default();
        let mut other_selection = false;
        if self.peek() == Some(b'(') {
            for option in self.option_list()? {
                match option.as_str() {
                    "SUBSCRIBED" => {
                        options.subscribed = true;
                        other_selection = true;
                        // RFC 5258 §3.1: SUBSCRIBED implies the SUBSCRIBED return option.
                        options.return_subscribed = true;
                    }
                    "SPECIAL-USE" => {
                        options.special_use = true;
                        other_selection = true;
                    }
                    // No remote mailboxes here: REMOTE adds nothing (RFC 5258 §3.1).
                    "REMOTE" => {}
                    "RECURSIVEMATCH" => options.recursive_match = true,
                    // RFC 5258 §3: "Server implementations MUST reject unrecognized selection
                    // options".
                    other => return Err(format!("unknown LIST selection option {other}")),
                }
            }
            // RFC 5258 §3.1: RECURSIVEMATCH alone (or with REMOTE only) is a BAD command.
            if options.recursive_match && !other_selection {
                return Err("RECURSIVEMATCH needs another selection option".into());
            }
            self.sp()?;
        }
        let reference = self.mailbox()?;
        self.sp()?;
        let mut patterns = Vec::new();
        if self.peek() == Some(b'(') {
            self.pos += 1;
            loop {
                if patterns.len() == MAX_LIST_PATTERNS {
                    return Err(format!("at most {MAX_LIST_PATTERNS} patterns in one LIST"));
                }
                patterns.push(self.list_mailbox()?);
                if !self.try_sp() {
                    break;
                }
            }
            self.expect(b')')?;
        } else {
            patterns.push(self.list_mailbox()?);
        }
        if self.try_sp() {
            if self.keyword()? != "RETURN" {
                return Err("expected RETURN".into());
            }
            self.sp()?;
            self.expect(b'(')?;
            while self.peek() != Some(b')') {
                match self.keyword()?.as_str() {
                    "SUBSCRIBED" => options.return_subscribed = true,
                    // Always given here (RFC 5258 §4 allows it without the option); the
                    // special-use attributes likewise (RFC 6154 §2).
                    "CHILDREN" | "SPECIAL-USE" => {}
                    "STATUS" if options.status.is_none() => {
                        self.sp()?;
                        options.status = Some(self.status_items()?);
                    }
                    other => return Err(format!("unknown LIST return option {other}")),
                }
                if !self.try_sp() {
                    break;
                }
            }
            self.expect(b')')?;
        }
        Ok(CommandBody::List {
            reference,
            patterns,
            options,
        })
    }

    /// `"(" [atom *(SP atom)] ")"`, upper-cased.
    fn option_list(&mut self) -> PResult<Vec<String>> {
        self.expect(b'(')?;
        let mut out = Vec::new();
        if self.peek() == Some(b')') {
            self.pos += 1;
            return Ok(out);
        }
        loop {
            out.push(self.keyword()?);
            if !self.try_sp() {
                break;
            }
        }
        self.expect(b')')?;
        Ok(out)
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
        let mut qresync = None;
        if self.try_sp() {
            // RFC 7162 §3.1.8 (CONDSTORE) and §3.2.5 (QRESYNC (...)), RFC 4466 select-params.
            self.expect(b'(')?;
            loop {
                match self.keyword()?.as_str() {
                    "CONDSTORE" => condstore = true,
                    "QRESYNC" if qresync.is_none() => {
                        self.sp()?;
                        qresync = Some(self.qresync_params()?);
                    }
                    p => return Err(format!("unknown SELECT parameter {p}")),
                }
                if !self.try_sp() {
                    break;
                }
            }
            self.expect(b')')?;
        }
        Ok(if name == "SELECT" {
            CommandBody::Select {
                mailbox,
                condstore,
                qresync,
            }
        } else {
            CommandBody::Examine {
                mailbox,
                condstore,
                qresync,
            }
        })
    }

    /// RFC 7162 §7: `"(" uidvalidity SP mod-sequence-value [SP known-uids] [SP seq-match-data] ")"`.
    fn qresync_params(&mut self) -> PResult<QresyncParams> {
        self.expect(b'(')?;
        let uidvalidity = self.number32()?;
        if uidvalidity == 0 {
            return Err("UIDVALIDITY is a non-zero number".into());
        }
        self.sp()?;
        let modseq = self.number()?;
        if modseq > i64::MAX as u64 {
            return Err("mod-sequence-value is at most 63 bits".into());
        }
        let mut known_uids = None;
        let mut seq_match = Vec::new();
        if self.try_sp() {
            if self.peek() != Some(b'(') {
                let set = self.sequence_set()?;
                // RFC 7162 §3.2.5: "*" is not allowed in known-uids (nor `$`: SELECT empties it).
                if !set
                    .0
                    .iter()
                    .all(|&(a, b)| matches!((a, b), (Bound::Num(_), Bound::Num(_))))
                {
                    return Err("\"*\" is not allowed in known-uids".into());
                }
                known_uids = Some(set);
                self.try_sp();
            }
            if self.peek() == Some(b'(') {
                self.pos += 1;
                let seqs = enumerate(&self.sequence_set()?, MAX_SEQ_MATCH)?;
                self.sp()?;
                let uids = enumerate(&self.sequence_set()?, MAX_SEQ_MATCH)?;
                self.expect(b')')?;
                // RFC 7162 §3.2.5.2: both sets hold the same number of entries.
                if seqs.len() != uids.len() {
                    return Err("seq-match-data sets differ in length".into());
                }
                seq_match = seqs.into_iter().zip(uids).collect();
            }
        }
        self.expect(b')')?;
        Ok(QresyncParams {
            uidvalidity,
            modseq,
            known_uids,
            seq_match,
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
        let items = self.status_items()?;
        Ok(CommandBody::Status { mailbox, items })
    }

    /// `"(" status-att *(SP status-att) ")"` (RFC 9051 §9), for STATUS and LIST RETURN
    /// (STATUS ...) (RFC 5819 §4).
    fn status_items(&mut self) -> PResult<Vec<StatusItem>> {
        self.expect(b'(')?;
        let mut items = Vec::new();
        loop {
            let item = match self.keyword()?.as_str() {
                "MESSAGES" => StatusItem::Messages,
                "RECENT" => StatusItem::Recent,
                "UIDNEXT" => StatusItem::UidNext,
                "UIDVALIDITY" => StatusItem::UidValidity,
                "UNSEEN" => StatusItem::Unseen,
                "HIGHESTMODSEQ" => StatusItem::HighestModSeq,
                "SIZE" => StatusItem::Size,
                "DELETED" => StatusItem::Deleted,
                other => return Err(format!("unknown STATUS item {other}")),
            };
            // Eight kinds of item: a repeat adds nothing and is dropped.
            if !items.contains(&item) {
                items.push(item);
            }
            if !self.try_sp() {
                break;
            }
        }
        self.expect(b')')?;
        Ok(items)
    }
}
