//! SORT and UID SORT (RFC 5256 §3, DISPLAYFROM/DISPLAYTO of RFC 5957 §3). The messages are
//! chosen by the SEARCH evaluator (`search.rs`, `Session::matching`); their sort keys come from
//! the stored header block, dates and sizes, read for the whole mailbox in one streamed
//! statement (`MailStore::scan_light`). The base subject and sent date are THREAD's too.

use std::cmp::Ordering;

use shared::mailstore::StoredMessage;
use shared::mailstore::parsed::{EnvelopeAddress, address_list};
use unicode_normalization::UnicodeNormalization;

use crate::cmd::search::{decode_words, refuse_charset};
use crate::fetch::mime;
use crate::session::{CmdResult, Failure, Reply, Session};
use crate::wire::parse::{FetchItem, SearchKey, SearchReturn, SortCriterion, SortKey};
use crate::wire::response::Response;

/// One message's value for one sort key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Value {
    Number(i64),
    Text(String),
}

/// A matching message with its sort keys.
pub(crate) struct Keyed<T> {
    pub seq: u32,
    pub uid: u32,
    pub keys: T,
}

/// The comparator `i;unicode-casemap` (RFC 5051 §2) in the simplified form Dovecot uses
/// (`uni_utf8_to_decomposed_titlecase`): each character's title (here upper) case, then the
/// compatibility decomposition (NFKD), compared as octets. "Ärger" and "a\u{308}rger" are equal.
pub(crate) fn casemap(text: &str) -> String {
    text.chars().flat_map(char::to_uppercase).nfkd().collect()
}

/// RFC 5256 §2.2: the sent date is the Date header in UTC, or the internal date when it is
/// missing or cannot be read. In seconds since the epoch.
pub(crate) fn sent_date(stored: &StoredMessage) -> i64 {
    mime::header_values(&stored.header, "Date")
        .first()
        .and_then(|value| mail_parser::DateTime::parse_rfc822(value))
        .filter(|date| date.is_valid())
        .map(|date| date.to_timestamp())
        .unwrap_or_else(|| stored.internal_date.timestamp())
}

fn is_wsp(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// `subj-blob = "[" *BLOBCHAR "]" *WSP` at the start of `s`: what follows it.
fn after_blob(s: &str) -> Option<&str> {
    let rest = s.strip_prefix('[')?;
    let end = rest.find([']', '['])?;
    if rest.as_bytes()[end] != b']' {
        return None;
    }
    Some(rest[end + 1..].trim_start_matches(is_wsp))
}

/// `subj-leader = (*subj-blob subj-refwd) / WSP` at the start of `s`, with `subj-refwd =
/// ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"`: what follows it.
fn after_leader(s: &str) -> Option<&str> {
    if s.starts_with(is_wsp) {
        return Some(s.trim_start_matches(is_wsp));
    }
    let mut rest = s;
    while let Some(after) = after_blob(rest) {
        rest = after;
    }
    let lower = rest.get(..3).map(str::to_ascii_lowercase);
    let lower2 = rest.get(..2).map(str::to_ascii_lowercase);
    rest = if lower.as_deref() == Some("fwd") {
        &rest[3..]
    } else if matches!(lower2.as_deref(), Some("re" | "fw")) {
        &rest[2..]
    } else {
        return None;
    };
    rest = rest.trim_start_matches(is_wsp);
    if let Some(after) = after_blob(rest) {
        rest = after;
    }
    rest.strip_prefix(':')
}

/// RFC 5256 §2.1: the base subject of a Subject field's value, and whether the subject said it
/// was a reply or forward (a leader, a `(fwd)` trailer or `[fwd: ...]` was removed), which
/// THREAD=REFERENCES needs (§4 step 6).
pub(crate) fn base_subject(value: &str) -> (String, bool) {
    // (1) Decode encoded words (RFC 2047); every run of white space becomes one space.
    let decoded = decode_words(value);
    let mut collapsed = String::with_capacity(decoded.len());
    for word in decoded.split(|c: char| c.is_ascii_whitespace()) {
        if !word.is_empty() {
            if !collapsed.is_empty() {
                collapsed.push(' ');
            }
            collapsed.push_str(word);
        }
    }
    let mut s = collapsed.as_str();
    let mut reply = false;
    loop {
        // (2) Remove trailing "(fwd)" and white space, repeatedly.
        loop {
            if let Some(t) = s.strip_suffix(is_wsp) {
                s = t;
            } else if s.len() >= 5 && s.is_char_boundary(s.len() - 5) && s[s.len() - 5..].eq_ignore_ascii_case("(fwd)")
            {
                s = &s[..s.len() - 5];
                reply = true;
            } else {
                break;
            }
        }
        // (5) Repeat (3) and (4) until neither changes anything.
        loop {
            let before = s.len();
            // (3) Remove all prefix text of the subj-leader production.
            while let Some(rest) = after_leader(s) {
                if rest.len() < s.len() && !s.starts_with(is_wsp) {
                    reply = true;
                }
                s = rest;
            }
            // (4) A leading subj-blob goes if text other than white space follows it.
            if let Some(rest) = after_blob(s)
                && !rest.is_empty()
            {
                s = rest;
            }
            if s.len() == before {
                break;
            }
        }
        // (6) "[fwd:" ... "]" around the whole subject: remove it and start again at (2).
        if s.len() >= 6 && s.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("[fwd:")) && s.ends_with(']') {
            s = &s[5..s.len() - 1];
            reply = true;
            continue;
        }
        break;
    }
    (s.to_string(), reply)
}

/// The first mailbox of an address field (RFC 5256 §3: "the first ... address"), group
/// markers skipped.
fn first_mailbox(stored: &StoredMessage, field: &str) -> Option<EnvelopeAddress> {
    let value = mime::header_values(&stored.header, field).into_iter().next()?;
    address_list(&value).into_iter().find(|a| a.host.is_some())
}

/// RFC 5256 §3 FROM, TO, CC: the addr-mailbox (local part) of the first address, or the empty
/// string.
fn address_key(stored: &StoredMessage, field: &str) -> String {
    let mailbox = first_mailbox(stored, field).and_then(|a| a.mailbox);
    casemap(mailbox.as_deref().unwrap_or_default())
}

/// RFC 5957 §3 DISPLAYFROM, DISPLAYTO: the (decoded) display name of the first address, or its
/// addr-spec when it has none, or the empty string.
fn display_key(stored: &StoredMessage, field: &str) -> String {
    let Some(address) = first_mailbox(stored, field) else {
        return String::new();
    };
    match address.name.as_deref().map(str::trim) {
        Some(name) if !name.is_empty() => casemap(name),
        _ => casemap(&format!(
            "{}@{}",
            address.mailbox.as_deref().unwrap_or_default(),
            address.host.as_deref().unwrap_or_default()
        )),
    }
}

/// The casemapped base subject of a message (RFC 5256 §3 SUBJECT).
pub(crate) fn subject_key(stored: &StoredMessage) -> (String, bool) {
    let value = mime::header_values(&stored.header, "Subject").into_iter().next();
    let (base, reply) = base_subject(value.as_deref().unwrap_or_default());
    (casemap(&base), reply)
}

pub(crate) fn value_of(stored: &StoredMessage, key: SortKey) -> Value {
    match key {
        SortKey::Arrival => Value::Number(stored.internal_date.timestamp()),
        SortKey::Date => Value::Number(sent_date(stored)),
        SortKey::Size => Value::Number(i64::try_from(stored.size).unwrap_or(i64::MAX)),
        SortKey::Subject => Value::Text(subject_key(stored).0),
        SortKey::From => Value::Text(address_key(stored, "From")),
        SortKey::To => Value::Text(address_key(stored, "To")),
        SortKey::Cc => Value::Text(address_key(stored, "Cc")),
        SortKey::DisplayFrom => Value::Text(display_key(stored, "From")),
        SortKey::DisplayTo => Value::Text(display_key(stored, "To")),
    }
}

/// Two messages' sort keys compared by the criteria (REVERSE applied).
pub(crate) fn compare_keys(criteria: &[SortCriterion], a: &[Value], b: &[Value]) -> Ordering {
    for (i, criterion) in criteria.iter().enumerate() {
        let order = a[i].cmp(&b[i]);
        let order = if criterion.reverse { order.reverse() } else { order };
        if order != Ordering::Equal {
            return order;
        }
    }
    Ordering::Equal
}

fn compare(criteria: &[SortCriterion], a: &Keyed<Vec<Value>>, b: &Keyed<Vec<Value>>) -> Ordering {
    // RFC 5256 §3: messages equal on every key are in sequence order (REVERSE does not apply).
    compare_keys(criteria, &a.keys, &b.keys).then(a.seq.cmp(&b.seq))
}

impl Session {
    /// The matching messages with what `keys_of` reads from each: one streamed statement over
    /// the UIDs the hits span. A message expunged meanwhile is left out.
    pub(crate) async fn keyed_matches<T>(
        &mut self,
        uid: bool,
        key: &SearchKey,
        mut keys_of: impl FnMut(&StoredMessage) -> T,
    ) -> Result<(Vec<Keyed<T>>, u64), Failure> {
        let hits = self.matching(uid, key).await?;
        let highest = hits.iter().map(|h| h.2).max().unwrap_or(0);
        let (Some(&(_, first, _)), Some(&(_, last, _))) = (hits.first(), hits.last()) else {
            return Ok((Vec::new(), highest));
        };
        let user_id = self.user()?.id;
        let mailbox_id = self.selected()?.mailbox.id;
        let mut keyed = Vec::with_capacity(hits.len());
        self.ctx
            .mail
            .scan_light(user_id, mailbox_id, first..=last, None, |m| {
                // Hits are in sequence order, which is UID order.
                if let Ok(i) = hits.binary_search_by_key(&m.uid, |h| h.1) {
                    keyed.push(Keyed {
                        seq: hits[i].0,
                        uid: m.uid,
                        keys: keys_of(&m),
                    });
                }
            })
            .await?;
        Ok((keyed, highest))
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn cmd_sort(
        &mut self,
        tag: &str,
        uid: bool,
        criteria: &[SortCriterion],
        charset: &str,
        key: &SearchKey,
        ret: Option<SearchReturn>,
        update_fetch: Vec<FetchItem>,
    ) -> CmdResult {
        if let Some(refused) = refuse_charset(charset) {
            return Ok(refused);
        }
        if ret.is_some_and(|r| r.update)
            && let Some(refused) = self.refuse_tag_reuse(tag)
        {
            return Ok(refused);
        }
        let (mut keyed, highest) = self
            .keyed_matches(uid, key, |m| criteria.iter().map(|c| value_of(m, c.key)).collect())
            .await?;
        keyed.sort_by(|a, b| compare(criteria, a, b));
        let modseq_search = crate::cmd::search::uses_modseq(key);
        if let Some(ret) = ret {
            self.answer_sorted(tag, uid, criteria, key, keyed, ret, modseq_search, update_fetch)
                .await?;
        } else {
            let numbers: Vec<u32> = keyed.iter().map(|k| if uid { k.uid } else { k.seq }).collect();
            // RFC 7162 §3.1.5: SORT with MODSEQ reports the highest MODSEQ of the hits, as SEARCH.
            let modseq = (modseq_search && !numbers.is_empty()).then_some(highest);
            self.respond(Response::Sort {
                numbers: &numbers,
                modseq,
            })
            .await?;
        }
        Ok(Reply::ok(if uid { "UID SORT completed" } else { "SORT completed" }))
    }

    /// RFC 5267 §3.1 (ESORT): the sorted matches answered as `* ESEARCH`, MIN and MAX the first
    /// and last in sort order, ALL and PARTIAL (§4.4) in sort order; SAVE keeps them as `$`
    /// (RFC 5182 §2.4); UPDATE (§4.3) keeps the sorted result live.
    #[allow(clippy::too_many_arguments)]
    async fn answer_sorted(
        &mut self,
        tag: &str,
        uid: bool,
        criteria: &[SortCriterion],
        key: &SearchKey,
        keyed: Vec<Keyed<Vec<Value>>>,
        ret: SearchReturn,
        modseq_search: bool,
        update_fetch: Vec<FetchItem>,
    ) -> Result<(), Failure> {
        let hits: Vec<(u32, u32, u64)> = {
            let selected = self.selected()?;
            keyed
                .iter()
                .map(|k| (k.seq, k.uid, selected.modseqs[k.seq as usize - 1]))
                .collect()
        };
        let live = ret.update && self.may_keep_live(tag, key, hits.len()).await?;
        self.answer_esearch(tag, uid, &hits, ret, modseq_search).await?;
        if live {
            let results = keyed.into_iter().map(|k| (k.uid, k.keys)).collect();
            self.keep_sort_live(tag, uid, key, criteria, results, update_fetch)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_subject_follows_rfc_5256_section_2_1() {
        let base = |s: &str| base_subject(s).0;
        assert_eq!(base("Re: hello"), "hello");
        assert_eq!(base("RE: Re[2]: re :hello"), "hello");
        assert_eq!(base("Fwd: Fw: hello (fwd) (FWD)  "), "hello");
        assert_eq!(base("[list] Re: [list] hello"), "hello");
        assert_eq!(base("[fwd: Re: hello]"), "hello");
        assert_eq!(base("[nothing else]"), "[nothing else]");
        assert_eq!(base("  hello \t  world "), "hello world");
        assert_eq!(base("=?utf-8?q?Re=3A_Gr=C3=BC=C3=9Fe?="), "Grüße");
        assert_eq!(base("Regarding"), "Regarding");
        assert_eq!(base(""), "");
        assert!(base_subject("Re: x").1);
        assert!(base_subject("x (fwd)").1);
        assert!(!base_subject("[blob] x").1);
        assert!(!base_subject("x").1);
    }

    #[test]
    fn casemap_ignores_case_and_composition() {
        assert_eq!(casemap("ärger"), casemap("A\u{308}RGER"));
        assert!(casemap("apple") < casemap("Banana"));
    }
}
