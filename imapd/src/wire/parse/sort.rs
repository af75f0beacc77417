//! SORT and THREAD (RFC 5256 §5 grammar, RFC 5957 DISPLAYFROM/DISPLAYTO): the criteria or the
//! algorithm, a mandatory charset, then the same search keys as SEARCH (`search.rs`).

use super::CommandBody;
use super::primitives::{PResult, Parser};

/// Most sort criteria in one SORT (there are nine keys; REVERSE may precede each).
const MAX_CRITERIA: usize = 16;

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
    /// `SORT SP sort-criteria SP search-criteria` (after the command name).
    pub(super) fn sort(&mut self, uid: bool) -> PResult<CommandBody> {
        self.sp()?;
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

    /// `SP charset 1*(SP search-key)`: unlike SEARCH, the charset is not optional.
    fn charset_and_keys(&mut self) -> PResult<(String, super::SearchKey)> {
        self.sp()?;
        let charset = self.astring()?.to_ascii_uppercase();
        self.sp()?;
        Ok((charset, self.search_keys()?))
    }
}
