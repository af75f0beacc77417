//! SEARCH (RFC 3501 §6.4.4, RFC 7162 §3.1.5 MODSEQ, RFC 5032 OLDER/YOUNGER): its keys, with nesting bounded.

use chrono::NaiveDate;

use super::primitives::{PResult, Parser, parse_date};
use super::{CommandBody, FetchItem};
use crate::wire::sequence::SequenceSet;

/// SEARCH keys (RFC 3501 §6.4.4, RFC 7162 §3.1.5 MODSEQ).
#[derive(Debug, Clone, PartialEq)]
pub enum SearchKey {
    All,
    Answered,
    Bcc(String),
    Before(NaiveDate),
    Body(String),
    Cc(String),
    Deleted,
    Draft,
    Flagged,
    From(String),
    Header(String, String),
    Keyword(String),
    Larger(u64),
    New,
    Not(Box<SearchKey>),
    Old,
    On(NaiveDate),
    Or(Box<SearchKey>, Box<SearchKey>),
    Recent,
    Seen,
    SentBefore(NaiveDate),
    SentOn(NaiveDate),
    SentSince(NaiveDate),
    Since(NaiveDate),
    Smaller(u64),
    Subject(String),
    Text(String),
    To(String),
    Uid(SequenceSet),
    Unanswered,
    Undeleted,
    Undraft,
    Unflagged,
    Unkeyword(String),
    Unseen,
    Sequence(SequenceSet),
    And(Vec<SearchKey>),
    ModSeq(u64),
    /// RFC 5032 WITHIN: internal date at least this many seconds ago.
    Older(u64),
    /// RFC 5032 WITHIN: internal date less than this many seconds ago.
    Younger(u64),
}

/// What `SEARCH RETURN (...)` or `SORT RETURN (...)` asked for (RFC 4731 §3.1, RFC 5267 §3.1
/// and §4): answered with `* ESEARCH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SearchReturn {
    pub min: bool,
    pub max: bool,
    pub all: bool,
    pub count: bool,
    /// RFC 5182: keep the result as `$`.
    pub save: bool,
    /// RFC 5267 §4.4: the results at these positions (1-based, low first).
    pub partial: Option<(u32, u32)>,
    /// RFC 5267 §4.3: keep the result live with ADDTO / REMOVEFROM.
    pub update: bool,
}

/// Whether a command line (which may have failed to parse) is a SEARCH or UID SEARCH whose
/// RETURN options name SAVE: RFC 5182 §2.1 has `$` emptied when such a SEARCH fails, even with
/// BAD. Reads only the first words, never the criteria.
pub fn asks_to_save(line: &[u8]) -> bool {
    let text = String::from_utf8_lossy(&line[..line.len().min(200)]).to_ascii_uppercase();
    let mut words = text.split(' ').skip(1).peekable();
    if words.peek() == Some(&"UID") {
        words.next();
    }
    if !matches!(words.next(), Some("SEARCH" | "SORT")) || words.next() != Some("RETURN") {
        return false;
    }
    let rest: Vec<&str> = words.collect();
    let options = rest.join(" ");
    let options = options.split(')').next().unwrap_or_default();
    options
        .trim_start_matches('(')
        .split([' ', '('])
        .any(|w| w.trim_end() == "SAVE")
}

/// Most fetch attributes one `UPDATE (...)` may name (RFC 5465 §7).
const MAX_UPDATE_FETCH: usize = 64;

/// Most nesting of parentheses accepted in SEARCH (bounds recursion on hostile input).
const MAX_DEPTH: usize = 32;

impl Parser<'_> {
    pub(super) fn search(&mut self, uid: bool) -> PResult<CommandBody> {
        self.sp()?;
        let (ret, update_fetch) = self.search_return()?.unzip();
        let update_fetch = update_fetch.unwrap_or_default();
        let mut charset = None;
        let save = self.pos;
        if self.keyword().ok().as_deref() == Some("CHARSET") {
            self.sp()?;
            charset = Some(self.astring()?.to_ascii_uppercase());
            self.sp()?;
        } else {
            self.pos = save;
        }
        let key = self.search_keys()?;
        Ok(CommandBody::Search {
            uid,
            charset,
            key,
            ret,
            update_fetch,
        })
    }

    /// One or more search keys separated by spaces, as one key (RFC 3501 §9 `1*(SP
    /// search-key)`, also the end of SORT and THREAD, RFC 5256 §5).
    pub(super) fn search_keys(&mut self) -> PResult<SearchKey> {
        let mut keys = vec![self.search_key()?];
        while self.try_sp() {
            if self.at_end() {
                break;
            }
            keys.push(self.search_key()?);
        }
        Ok(if keys.len() == 1 {
            keys.pop().expect("one key")
        } else {
            SearchKey::And(keys)
        })
    }

    /// RFC 4731 §7: `search-return-opts = SP "RETURN" SP "(" [search-return-opt *(SP
    /// search-return-opt)] ")"`, read with the SP after it; `RETURN ()` means ALL (§3.1).
    /// An option this server does not know is a syntax error. RFC 5267 §4 adds CONTEXT (a
    /// hint, §4.2: ignored, so `RETURN (CONTEXT)` is `RETURN ()`), UPDATE (§4.3) and `PARTIAL
    /// m:n` (§4.4: at most one PARTIAL or ALL; `500:400` is `400:500`; no `*`).
    ///
    /// RFC 5465 §7 and §8 (`modifier-update`): with NOTIFY, `UPDATE (fetch-att ...)` names what
    /// to FETCH for a new message that joins the live result; returned beside the options.
    pub(super) fn search_return(&mut self) -> PResult<Option<(SearchReturn, Vec<FetchItem>)>> {
        let save = self.pos;
        if self.keyword().ok().as_deref() != Some("RETURN") || self.peek() != Some(b' ') {
            self.pos = save;
            return Ok(None);
        }
        let mut update_fetch = Vec::new();
        self.sp()?;
        self.expect(b'(')?;
        let mut ret = SearchReturn::default();
        let mut any = false;
        while self.peek() != Some(b')') {
            if any {
                self.sp()?;
            }
            match self.keyword()?.as_str() {
                "MIN" => ret.min = true,
                "MAX" => ret.max = true,
                "ALL" => ret.all = true,
                "COUNT" => ret.count = true,
                "SAVE" => ret.save = true,
                "UPDATE" => {
                    ret.update = true;
                    if self.rest().starts_with(b" (") {
                        self.pos += 2;
                        loop {
                            self.fetch_att(&mut update_fetch)?;
                            if update_fetch.len() > MAX_UPDATE_FETCH {
                                return Err("too many UPDATE fetch attributes".into());
                            }
                            if !self.try_sp() {
                                break;
                            }
                        }
                        self.expect(b')')?;
                    }
                }
                "CONTEXT" => {}
                "PARTIAL" => {
                    if ret.partial.is_some() {
                        return Err("PARTIAL can be given only once".into());
                    }
                    self.sp()?;
                    ret.partial = Some(self.partial_range()?);
                }
                other => return Err(format!("unknown SEARCH RETURN option {other}")),
            }
            any = true;
        }
        self.expect(b')')?;
        self.sp()?;
        if ret.all && ret.partial.is_some() {
            return Err("PARTIAL conflicts with ALL".into());
        }
        if ret == SearchReturn::default() {
            ret.all = true;
        }
        Ok(Some((ret, update_fetch)))
    }

    /// RFC 5267 §5: `partial-range = nz-number ":" nz-number`, the lower first.
    fn partial_range(&mut self) -> PResult<(u32, u32)> {
        let a = self.number32()?;
        self.expect(b':')?;
        let b = self.number32()?;
        if a == 0 || b == 0 {
            return Err("PARTIAL range starts at 1".into());
        }
        Ok((a.min(b), a.max(b)))
    }

    fn search_string(&mut self) -> PResult<String> {
        self.sp()?;
        String::from_utf8(self.astring_bytes()?).map_err(|_| "search string is not UTF-8".into())
    }

    /// RFC 5032 `interval`: seconds, a non-zero number.
    fn search_interval(&mut self) -> PResult<u64> {
        self.sp()?;
        match self.number()? {
            0 => Err("OLDER/YOUNGER interval must be non-zero".into()),
            n => Ok(n),
        }
    }

    fn search_date(&mut self) -> PResult<NaiveDate> {
        self.sp()?;
        let raw = if self.peek() == Some(b'"') {
            self.quoted()?
        } else {
            let start = self.pos;
            while self.peek().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'-') {
                self.pos += 1;
            }
            self.input[start..self.pos].to_vec()
        };
        parse_date(&raw).ok_or_else(|| "bad date".into())
    }

    fn search_key(&mut self) -> PResult<SearchKey> {
        if self.peek() == Some(b'(') {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err("search nested too deep".into());
            }
            self.pos += 1;
            let mut keys = vec![self.search_key()?];
            while self.try_sp() {
                keys.push(self.search_key()?);
            }
            self.expect(b')')?;
            self.depth -= 1;
            return Ok(SearchKey::And(keys));
        }
        if self
            .peek()
            .is_some_and(|b| b.is_ascii_digit() || b == b'*' || b == b'$')
        {
            return Ok(SearchKey::Sequence(self.sequence_set()?));
        }
        let word = self.keyword()?;
        Ok(match word.as_str() {
            "ALL" => SearchKey::All,
            "ANSWERED" => SearchKey::Answered,
            "BCC" => SearchKey::Bcc(self.search_string()?),
            "BEFORE" => SearchKey::Before(self.search_date()?),
            "BODY" => SearchKey::Body(self.search_string()?),
            "CC" => SearchKey::Cc(self.search_string()?),
            "DELETED" => SearchKey::Deleted,
            "DRAFT" => SearchKey::Draft,
            "FLAGGED" => SearchKey::Flagged,
            "FROM" => SearchKey::From(self.search_string()?),
            "HEADER" => {
                let name = self.search_string()?;
                SearchKey::Header(name, self.search_string()?)
            }
            "KEYWORD" => {
                self.sp()?;
                SearchKey::Keyword(self.flag()?)
            }
            "LARGER" => {
                self.sp()?;
                SearchKey::Larger(self.number()?)
            }
            "NEW" => SearchKey::New,
            "NOT" => {
                self.sp()?;
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err("search nested too deep".into());
                }
                let key = self.search_key()?;
                self.depth -= 1;
                SearchKey::Not(Box::new(key))
            }
            "OLD" => SearchKey::Old,
            // RFC 5032 §3: `OLDER SP interval` / `YOUNGER SP interval`, interval = nz-number.
            "OLDER" => SearchKey::Older(self.search_interval()?),
            "YOUNGER" => SearchKey::Younger(self.search_interval()?),
            "ON" => SearchKey::On(self.search_date()?),
            "OR" => {
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err("search nested too deep".into());
                }
                self.sp()?;
                let a = self.search_key()?;
                self.sp()?;
                let b = self.search_key()?;
                self.depth -= 1;
                SearchKey::Or(Box::new(a), Box::new(b))
            }
            "RECENT" => SearchKey::Recent,
            "SEEN" => SearchKey::Seen,
            "SENTBEFORE" => SearchKey::SentBefore(self.search_date()?),
            "SENTON" => SearchKey::SentOn(self.search_date()?),
            "SENTSINCE" => SearchKey::SentSince(self.search_date()?),
            "SINCE" => SearchKey::Since(self.search_date()?),
            "SMALLER" => {
                self.sp()?;
                SearchKey::Smaller(self.number()?)
            }
            "SUBJECT" => SearchKey::Subject(self.search_string()?),
            "TEXT" => SearchKey::Text(self.search_string()?),
            "TO" => SearchKey::To(self.search_string()?),
            "UID" => {
                self.sp()?;
                SearchKey::Uid(self.sequence_set()?)
            }
            "UNANSWERED" => SearchKey::Unanswered,
            "UNDELETED" => SearchKey::Undeleted,
            "UNDRAFT" => SearchKey::Undraft,
            "UNFLAGGED" => SearchKey::Unflagged,
            "UNKEYWORD" => {
                self.sp()?;
                SearchKey::Unkeyword(self.flag()?)
            }
            "UNSEEN" => SearchKey::Unseen,
            "MODSEQ" => {
                // RFC 7162 §3.1.5: MODSEQ [entry-name entry-type-req] mod-sequence-valzer
                self.sp()?;
                if self.peek() == Some(b'"') {
                    self.quoted()?;
                    self.sp()?;
                    self.keyword()?;
                    self.sp()?;
                }
                SearchKey::ModSeq(self.number()?)
            }
            other => return Err(format!("unknown search key {other}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::asks_to_save;

    #[test]
    fn save_is_seen_in_lines_that_fail_to_parse() {
        assert!(asks_to_save(b"a SEARCH RETURN (SAVE) NOSUCHKEY"));
        assert!(asks_to_save(b"a uid search return (min save) ALL"));
        assert!(asks_to_save(b"a SORT RETURN (SAVE) (NOSUCHKEY) UTF-8 ALL"));
        assert!(!asks_to_save(b"a SEARCH RETURN (MIN) SAVE"));
        assert!(!asks_to_save(b"a SEARCH SUBJECT SAVE"));
        assert!(!asks_to_save(b"a FETCH RETURN (SAVE)"));
        assert!(!asks_to_save(b""));
    }
}
