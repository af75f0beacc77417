//! SORT and THREAD (RFC 5256 §5 grammar, RFC 5957 DISPLAYFROM/DISPLAYTO): the criteria or the
//! algorithm, a mandatory charset, then the same search keys as SEARCH (`search.rs`).

use super::CommandBody;
use super::primitives::{PResult, Parser};

/// Most sort criteria in one SORT (there are nine keys; REVERSE may precede each).
const MAX_CRITERIA: usize = 16;

/// Most tags in one CANCELUPDATE (a session keeps far fewer live searches).
const MAX_CANCELLED: usize = 100;

/// One sort key (RFC 5256 §3, RFC 5957 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Arrival,
    Cc,
    Date,
    From,
    Size,
    Subject,
    To,
    DisplayFrom,
    DisplayTo,
}

/// A sort key and whether REVERSE preceded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortCriterion {
    pub key: SortKey,
    pub reverse: bool,
}

/// The THREAD algorithms (RFC 5256 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadAlgorithm {
    OrderedSubject,
    References,
}

impl Parser<'_> {
    /// `SORT SP sort-criteria SP search-criteria` (after the command name), or RFC 5267 §3's
    /// `extended-sort`: `SORT search-return-opts SP sort-criteria SP search-criteria`.
    pub(super) fn sort(&mut self, uid: bool) -> PResult<CommandBody> {
        self.sp()?;
        let (ret, update_fetch) = self.search_return()?.unzip();
        let update_fetch = update_fetch.unwrap_or_default();
        self.expect(b'(')?;
        let mut criteria = Vec::new();
        loop {
            let mut reverse = false;
            let mut word = self.keyword()?;
            if word == "REVERSE" {
                reverse = true;
                self.sp()?;
                word = self.keyword()?;
            }
            let key = match word.as_str() {
                "ARRIVAL" => SortKey::Arrival,
                "CC" => SortKey::Cc,
                "DATE" => SortKey::Date,
                "FROM" => SortKey::From,
                "SIZE" => SortKey::Size,
                "SUBJECT" => SortKey::Subject,
                "TO" => SortKey::To,
                "DISPLAYFROM" => SortKey::DisplayFrom,
                "DISPLAYTO" => SortKey::DisplayTo,
                other => return Err(format!("unknown sort key {other}")),
            };
            criteria.push(SortCriterion { key, reverse });
            if criteria.len() > MAX_CRITERIA {
                return Err("too many sort criteria".into());
            }
            if self.peek() == Some(b')') {
                self.pos += 1;
                break;
            }
            self.sp()?;
        }
        let (charset, key) = self.charset_and_keys()?;
        Ok(CommandBody::Sort {
            uid,
            criteria,
            charset,
            key,
            ret,
            update_fetch,
        })
    }

    /// `THREAD SP thread-alg SP search-criteria` (after the command name).
    pub(super) fn thread(&mut self, uid: bool) -> PResult<CommandBody> {
        self.sp()?;
        let algorithm = match self.keyword()?.as_str() {
            "ORDEREDSUBJECT" => ThreadAlgorithm::OrderedSubject,
            "REFERENCES" => ThreadAlgorithm::References,
            other => return Err(format!("unknown thread algorithm {other}")),
        };
        let (charset, key) = self.charset_and_keys()?;
        Ok(CommandBody::Thread {
            uid,
            algorithm,
            charset,
            key,
        })
    }

    /// RFC 5267 §5: `"CANCELUPDATE" 1*(SP quoted)`, the tags of searches kept live.
    pub(super) fn cancel_update(&mut self) -> PResult<CommandBody> {
        let mut tags = Vec::new();
        while self.try_sp() {
            let tag = String::from_utf8(self.quoted()?).map_err(|_| "tag is not UTF-8".to_string())?;
            tags.push(tag);
            if tags.len() > MAX_CANCELLED {
                return Err("too many tags in CANCELUPDATE".into());
            }
        }
        if tags.is_empty() {
            return Err("CANCELUPDATE needs a quoted tag".into());
        }
        Ok(CommandBody::CancelUpdate(tags))
    }

    /// `SP charset 1*(SP search-key)`: unlike SEARCH, the charset is not optional.
    fn charset_and_keys(&mut self) -> PResult<(String, super::SearchKey)> {
        self.sp()?;
        let charset = self.astring()?.to_ascii_uppercase();
        self.sp()?;
        Ok((charset, self.search_keys()?))
    }
}
