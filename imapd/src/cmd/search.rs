//! SEARCH and UID SEARCH (RFC 3501 §6.4.4) with every key, CHARSET UTF-8 / US-ASCII, and MODSEQ
//! (RFC 7162 §3.1.5). Flags come from the session's view; dates, sizes and headers from the
//! stored metadata; the body is read only for BODY and TEXT.

use chrono::{DateTime, NaiveDate, Utc};
use shared::mailstore::StoredMessage;

use crate::fetch::mime;
use crate::session::{CmdResult, Code, Failure, Reply, Session, State};
use crate::wire::parse::CommandBody;
use crate::wire::parse::{FetchItem, SearchKey, SearchReturn};
use crate::wire::response::Response;
use crate::wire::sequence::{SequenceSet, compact};

const BATCH: usize = 250;

/// What a search key needs beyond the session's view.
fn needs(key: &SearchKey) -> (bool, bool) {
    use SearchKey as K;
    match key {
        K::Body(_) | K::Text(_) => (true, true),
        K::Bcc(_)
        | K::Cc(_)
        | K::From(_)
        | K::To(_)
        | K::Subject(_)
        | K::Header(..)
        | K::Before(_)
        | K::On(_)
        | K::Since(_)
        | K::SentBefore(_)
        | K::SentOn(_)
        | K::SentSince(_)
        | K::Larger(_)
        | K::Smaller(_)
        | K::Older(_)
        | K::Younger(_) => (true, false),
        K::Not(k) => needs(k),
        K::Or(a, b) => {
            let (a, b) = (needs(a), needs(b));
            (a.0 || b.0, a.1 || b.1)
        }
        K::And(keys) => keys
            .iter()
            .map(needs)
            .fold((false, false), |acc, n| (acc.0 || n.0, acc.1 || n.1)),
        _ => (false, false),
    }
}

pub(crate) fn uses_modseq(key: &SearchKey) -> bool {
    has_key(key, &|k| matches!(k, SearchKey::ModSeq(_)))
}

/// Whether `key` or any key inside it is one `is` picks.
fn has_key(key: &SearchKey, is: &impl Fn(&SearchKey) -> bool) -> bool {
    is(key)
        || match key {
            SearchKey::Not(k) => has_key(k, is),
            SearchKey::Or(a, b) => has_key(a, is) || has_key(b, is),
            SearchKey::And(keys) => keys.iter().any(|k| has_key(k, is)),
            _ => false,
        }
}

/// One message as the evaluator sees it.
struct Candidate<'a> {
    seq: u32,
    uid: u32,
    count: u32,
    max_uid: u32,
    flags: &'a [String],
    /// \Recent in this session (RFC 3501 §2.3.2).
    recent: bool,
    modseq: u64,
    /// When the search started, for OLDER and YOUNGER (RFC 5032).
    now: DateTime<Utc>,
    stored: Option<&'a StoredMessage>,
    /// Lower-cased text of the body parts (decoded), for BODY and TEXT.
    body_text: Option<&'a str>,
}

/// RFC 3501 §6.4.4: "the matching is case-insensitive". An ASCII needle (nearly all) is
/// compared byte by byte without lower-casing copies of every header value.
fn contains(haystack: &str, needle: &str) -> bool {
    if needle.is_ascii() {
        let needle = needle.as_bytes();
        return needle.is_empty()
            || haystack
                .as_bytes()
                .windows(needle.len())
                .any(|w| w.eq_ignore_ascii_case(needle));
    }
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

/// A header field's values, raw and decoded (RFC 2047), for substring matching.
/// Each field is unfolded only when it has the name; its encoded words are decoded only when it
/// has any (a value without them decodes to itself).
fn header_matches(stored: &StoredMessage, name: &str, needle: &str) -> bool {
    let mut fields = shared::header::fields(&stored.header).filter(|field| field.is(name));
    if needle.is_empty() {
        // RFC 3501: HEADER name "" matches every message that has the field.
        return fields.any(|field| field.value().is_some());
    }
    fields.filter_map(|field| field.unfolded()).any(|value| {
        let value = value.trim();
        contains(value, needle) || (value.contains("=?") && contains(&decode_words(value), needle))
    })
}

/// SUBJECT: RFC 9051 §6.4.4 matches "the envelope structure's SUBJECT field" (the last Subject
/// field, unfolded), as written or with its encoded words decoded. `MailStore::scan_light`
/// leaves out in PostgreSQL what this cannot match ([`subject_prefilter`]).
fn subject_matches(subject: Option<&str>, needle: &str) -> bool {
    let Some(subject) = subject else {
        return false;
    };
    contains(subject, needle) || (subject.contains("=?") && contains(&decode_words(subject), needle))
}

/// Text that every message `key` matches has in its envelope subject, for PostgreSQL to filter
/// on (`MailStore::scan_light`): a SUBJECT key at the top level or in a conjunction there, in
/// lower case. Only an ASCII one: [`contains`] compares those letter by letter, ignoring ASCII
/// case, which PostgreSQL's `lower` under the "C" collation reproduces; other text is
/// lower-cased by Unicode rules and found here only. Nor one with a NUL, which PostgreSQL's text
/// cannot hold (the statement would fail; here it simply matches nothing).
fn subject_prefilter(key: &SearchKey) -> Option<String> {
    match key {
        SearchKey::Subject(s) if !s.is_empty() && s.is_ascii() && !s.contains('\0') => Some(s.to_ascii_lowercase()),
        // The longest leaves the fewest rows.
        SearchKey::And(keys) => keys.iter().filter_map(subject_prefilter).max_by_key(String::len),
        _ => None,
    }
}

/// FROM, TO, CC and BCC: RFC 3501 §6.4.4 matches "the envelope structure's FROM field", so, as
/// Dovecot does, each address is matched as read for ENVELOPE and written back plainly
/// (`"Name" <@route:local@domain>`, decoded name, comments left out): `<user-from (comment)@
/// (comment) domain.org>` is found by `user-from@domain.org`, and text inside a comment is not
/// found. What the address reader drops (a bare word such as `undisclosed-recipients`) is still
/// found in the field's text with the comments inside addresses left out.
fn address_matches(stored: &StoredMessage, name: &str, needle: &str) -> bool {
    let values = mime::header_values(&stored.header, name);
    if needle.is_empty() {
        return !values.is_empty();
    }
    values.iter().any(|v| {
        if contains(&written(&shared::mailstore::parsed::address_list(v)), needle) {
            return true;
        }
        let text = shared::mailstore::parsed::without_addr_spec_comments(v).unwrap_or_else(|| v.clone());
        contains(&text, needle) || contains(&decode_words(&text), needle)
    })
}

/// An address list written back in its plain form (RFC 5322 §3.4), one address after another.
fn written(list: &[shared::mailstore::parsed::EnvelopeAddress]) -> String {
    let mut out = String::new();
    for a in list {
        match (&a.mailbox, &a.host) {
            // A group's start (name, no host) and end (nothing) markers (RFC 3501 §7.4.2).
            (Some(group), None) => out.push_str(&format!("{group}: ")),
            (None, None) => out.push_str("; "),
            (mailbox, Some(host)) => {
                let mailbox = mailbox.as_deref().unwrap_or_default();
                let adl = a.adl.as_deref().map(|r| format!("{r}:")).unwrap_or_default();
                match &a.name {
                    Some(name) => out.push_str(&format!("\"{name}\" <{adl}{mailbox}@{host}>, ")),
                    None if a.adl.is_some() => out.push_str(&format!("<{adl}{mailbox}@{host}>, ")),
                    None => out.push_str(&format!("{mailbox}@{host}, ")),
                }
            }
        }
    }
    out
}

/// TEXT over the header: the raw block, or any field's value with its encoded words decoded.
/// Decoding is per field: decoding the block as one value stopped at its first line.
fn text_in_header(header: &[u8], needle: &str) -> bool {
    contains(&String::from_utf8_lossy(header), needle)
        || shared::header::fields(header).any(|field| {
            field
                .unfolded()
                .is_some_and(|value| value.contains("=?") && contains(&decode_words(value.trim()), needle))
        })
}

/// Decode RFC 2047 encoded words in a header value.
pub(crate) fn decode_words(value: &str) -> String {
    if !value.contains("=?") {
        return value.to_string();
    }
    let raw = format!("Subject: {value}\r\n\r\n");
    mail_parser::MessageParser::default()
        .parse(raw.as_bytes())
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or_else(|| value.to_string())
}

fn sent_date(stored: &StoredMessage) -> Option<NaiveDate> {
    // From the stored header block (the light metadata query leaves the envelope empty).
    let value = mime::header_values(&stored.header, "Date").pop()?;
    let date = mail_parser::DateTime::parse_rfc822(&value)?;
    NaiveDate::from_ymd_opt(date.year as i32, date.month as u32, date.day as u32)
}

/// Seconds between the internal date and `now` (negative for a date in the future).
fn age_seconds(stored: &StoredMessage, now: DateTime<Utc>) -> i64 {
    (now - stored.internal_date).num_seconds()
}

fn has(flags: &[String], flag: &str) -> bool {
    flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
}

fn eval(key: &SearchKey, c: &Candidate<'_>) -> bool {
    use SearchKey as K;
    let stored = c.stored;
    let internal = || stored.map(|s| s.internal_date.date_naive());
    match key {
        K::All => true,
        // RFC 3501 §6.4.4: NEW is RECENT UNSEEN, OLD is NOT RECENT.
        K::Recent => c.recent,
        K::New => c.recent && !has(c.flags, "\\Seen"),
        K::Old => !c.recent,
        K::Answered => has(c.flags, "\\Answered"),
        K::Deleted => has(c.flags, "\\Deleted"),
        K::Draft => has(c.flags, "\\Draft"),
        K::Flagged => has(c.flags, "\\Flagged"),
        K::Seen => has(c.flags, "\\Seen"),
        K::Unanswered => !has(c.flags, "\\Answered"),
        K::Undeleted => !has(c.flags, "\\Deleted"),
        K::Undraft => !has(c.flags, "\\Draft"),
        K::Unflagged => !has(c.flags, "\\Flagged"),
        K::Unseen => !has(c.flags, "\\Seen"),
        K::Keyword(k) => has(c.flags, k),
        K::Unkeyword(k) => !has(c.flags, k),
        K::Bcc(s) => stored.is_some_and(|m| address_matches(m, "Bcc", s)),
        K::Cc(s) => stored.is_some_and(|m| address_matches(m, "Cc", s)),
        K::From(s) => stored.is_some_and(|m| address_matches(m, "From", s)),
        K::To(s) => stored.is_some_and(|m| address_matches(m, "To", s)),
        K::Subject(s) => stored.is_some_and(|m| subject_matches(m.envelope.subject.as_deref(), s)),
        K::Header(name, s) => stored.is_some_and(|m| header_matches(m, name, s)),
        K::Before(d) => internal().is_some_and(|x| x < *d),
        K::On(d) => internal().is_some_and(|x| x == *d),
        K::Since(d) => internal().is_some_and(|x| x >= *d),
        K::SentBefore(d) => stored.and_then(sent_date).is_some_and(|x| x < *d),
        K::SentOn(d) => stored.and_then(sent_date).is_some_and(|x| x == *d),
        K::SentSince(d) => stored.and_then(sent_date).is_some_and(|x| x >= *d),
        K::Larger(n) => stored.is_some_and(|m| m.size > *n),
        K::Smaller(n) => stored.is_some_and(|m| m.size < *n),
        K::Body(s) => c.body_text.is_some_and(|t| t.contains(&s.to_lowercase())),
        K::Text(s) => {
            c.body_text.is_some_and(|t| t.contains(&s.to_lowercase()))
                || stored.is_some_and(|m| text_in_header(&m.header, s))
        }
        K::Uid(set) => set.contains(c.uid, c.max_uid),
        K::Sequence(set) => set.contains(c.seq, c.count),
        K::ModSeq(n) => c.modseq >= *n,
        // RFC 5032 §3: OLDER n matches an internal date at least n seconds before now, YOUNGER
        // n one less than n seconds before now (so the two partition the mailbox).
        K::Older(n) => stored.is_some_and(|m| age_seconds(m, c.now) >= i64::try_from(*n).unwrap_or(i64::MAX)),
        K::Younger(n) => stored.is_some_and(|m| age_seconds(m, c.now) < i64::try_from(*n).unwrap_or(i64::MAX)),
        K::Not(k) => !eval(k, c),
        K::Or(a, b) => eval(a, c) || eval(b, c),
        K::And(keys) => keys.iter().all(|k| eval(k, c)),
    }
}

/// The decoded, lower-cased text of a message's text parts, found by the one MIME model
/// (shared::mailstore::parsed::MimeTree) that numbers parts for FETCH: each text/* leaf is
/// transfer- and charset-decoded by mail-parser on its own. CPU-heavy on a large message: the
/// caller runs it on the blocking pool.
fn body_text(raw: &[u8]) -> String {
    let tree = shared::mailstore::parsed::MimeTree::parse(raw);
    let mut text = String::new();
    for leaf in tree.leaves().filter(|leaf| leaf.media_type == "text") {
        // A text leaf alone is a one-part message: mail-parser splits nothing further.
        let Some(part) = mail_parser::MessageParser::default().parse(&raw[leaf.header.start..leaf.body.end]) else {
            continue;
        };
        let decoded = match part.parts.first().map(|p| &p.body) {
            Some(mail_parser::PartType::Text(t)) => Some(t.to_string()),
            Some(mail_parser::PartType::Html(html)) => Some(mail_parser::decoders::html::html_to_text(html)),
            _ => None,
        };
        if let Some(decoded) = decoded {
            text.push_str(&decoded);
            text.push('\n');
        }
    }
    text.to_lowercase()
}

/// The saved result (`$`, RFC 5182) as a set for a command: UIDs for a UID command or a UID
/// search key, message numbers otherwise; messages expunged since the SAVE are left out.
fn saved_set(selected: &crate::session::Selected, uid: bool) -> SequenceSet {
    let numbers: Vec<u32> = selected
        .saved
        .iter()
        .filter_map(|&u| selected.seq_of(u).map(|seq| if uid { u } else { seq }))
        .collect();
    SequenceSet::from_numbers(&numbers)
}

/// `$` inside SEARCH keys: a bare set is message numbers, `UID $` is UIDs.
fn resolve_saved_key(key: &mut SearchKey, selected: &crate::session::Selected) {
    match key {
        SearchKey::Sequence(set) if set.is_saved() => *set = saved_set(selected, false),
        SearchKey::Uid(set) if set.is_saved() => *set = saved_set(selected, true),
        SearchKey::Not(k) => resolve_saved_key(k, selected),
        SearchKey::Or(a, b) => {
            resolve_saved_key(a, selected);
            resolve_saved_key(b, selected);
        }
        SearchKey::And(keys) => keys.iter_mut().for_each(|k| resolve_saved_key(k, selected)),
        _ => {}
    }
}

impl Session {
    /// RFC 5182 §2.1: `$` in FETCH, STORE, COPY, MOVE, UID EXPUNGE and the search criteria of
    /// SEARCH, SORT and THREAD stands for the
    /// result the last `SEARCH RETURN (SAVE)` kept; it is replaced here, before the command
    /// runs, so each command reads sets one way. Commands run one after another, so a command
    /// pipelined after a SAVE sees its result (§2.1). Outside a selected mailbox `$` stays
    /// unresolved and matches nothing (those commands are refused there anyway).
    pub(crate) fn resolve_saved(&self, body: &mut CommandBody) {
        let State::Selected { selected, .. } = &self.state else {
            return;
        };
        match body {
            CommandBody::Fetch { uid, set, .. }
            | CommandBody::Store { uid, set, .. }
            | CommandBody::Copy { uid, set, .. }
            | CommandBody::Move { uid, set, .. }
                if set.is_saved() =>
            {
                *set = saved_set(selected, *uid);
            }
            CommandBody::UidExpunge(set) if set.is_saved() => *set = saved_set(selected, true),
            CommandBody::Search { key, .. } | CommandBody::Sort { key, .. } | CommandBody::Thread { key, .. } => {
                resolve_saved_key(key, selected)
            }
            _ => {}
        }
    }

    /// RFC 5182 §2: keep the UIDs of a SEARCH (or, §2.4, an extended SORT) as `$`: only the
    /// MIN and/or MAX message when those are all that was asked besides SAVE, only the PARTIAL
    /// window's messages when it was asked (as Dovecot does), every match otherwise. `hits` are
    /// in the command's order (mailbox order, or sort order for SORT: MIN is the first).
    pub(crate) fn save_result(&mut self, hits: &[(u32, u32, u64)], ret: SearchReturn) {
        let State::Selected { selected, .. } = &mut self.state else {
            return;
        };
        let mut picked: Vec<u32> = if let Some(window) = ret.partial {
            partial_window(hits, window).iter().map(|h| h.1).collect()
        } else if (ret.min || ret.max) && !(ret.all || ret.count) {
            let mut picked: Vec<u32> = Vec::new();
            if let Some(h) = hits.first().filter(|_| ret.min) {
                picked.push(h.1);
            }
            if let Some(h) = hits.last().filter(|_| ret.max) {
                picked.push(h.1);
            }
            picked
        } else {
            hits.iter().map(|h| h.1).collect()
        };
        // `$` is kept ascending (SORT's order does not matter to a set).
        picked.sort_unstable();
        picked.dedup();
        selected.saved = picked;
    }

    /// The `* ESEARCH` answer of a SEARCH or SORT with RETURN options (RFC 4731 §3.1, RFC 5267
    /// §3.1 and §4.4), `hits` in the command's order: mailbox order for SEARCH, sort order for
    /// SORT, where MIN and MAX are the first and last sorted message and ALL keeps the order.
    /// Also keeps `$` (SAVE); RFC 5182 §2: SAVE alone is answered with no ESEARCH.
    pub(crate) async fn answer_esearch(
        &mut self,
        tag: &str,
        uid: bool,
        hits: &[(u32, u32, u64)],
        ret: SearchReturn,
        modseq_search: bool,
    ) -> Result<(), Failure> {
        if ret.save {
            self.save_result(hits, ret);
            if !(ret.min || ret.max || ret.all || ret.count || ret.partial.is_some() || ret.update) {
                return Ok(());
            }
        }
        let number = |&(seq, msg_uid, _): &(u32, u32, u64)| if uid { msg_uid } else { seq };
        // RFC 4731 §3.1: MIN, MAX and ALL are left out when nothing matched; COUNT is then 0.
        let (first, last) = (hits.first().filter(|_| ret.min), hits.last().filter(|_| ret.max));
        let window = ret.partial.map(|range| (range, partial_window(hits, range)));
        // RFC 4731 §3.2 (with RFC 7162 §3.1.5): MODSEQ is the highest of the messages
        // returned: only the MIN, MAX (and PARTIAL) ones when neither ALL nor COUNT was asked.
        let highest = if ret.all || ret.count {
            hits.iter().map(|h| h.2).max()
        } else {
            let in_window = window.iter().flat_map(|w| w.1.iter());
            first.into_iter().chain(last).chain(in_window).map(|h| h.2).max()
        };
        let numbers = |list: &[(u32, u32, u64)]| list.iter().map(number).collect::<Vec<u32>>();
        // RFC 5267 §3.2: a range only where the order ascends by one (`5,4,3`, `3:5`).
        let all = (ret.all && !hits.is_empty()).then(|| compact(&numbers(hits)));
        let partial_set = window.as_ref().map(|(range, list)| {
            let set = (!list.is_empty()).then(|| compact(&numbers(list)));
            (*range, set)
        });
        self.respond(Response::ESearch {
            tag,
            uid,
            min: first.map(number),
            max: last.map(number),
            count: ret.count.then_some(hits.len()),
            all: all.as_deref(),
            partial: partial_set.as_ref().map(|(range, set)| (*range, set.as_deref())),
            modseq: highest.filter(|_| modseq_search),
        })
        .await?;
        Ok(())
    }

    pub(crate) async fn cmd_search(
        &mut self,
        tag: &str,
        uid: bool,
        charset: Option<&str>,
        key: &SearchKey,
        ret: Option<SearchReturn>,
        update_fetch: Vec<FetchItem>,
    ) -> CmdResult {
        if let Some(charset) = charset
            && let Some(refused) = refuse_charset(charset)
        {
            return Ok(refused);
        }
        let modseq_search = uses_modseq(key);
        let hits = self.matching(uid, key).await?;
        let number = |&(seq, msg_uid, _): &(u32, u32, u64)| if uid { msg_uid } else { seq };
        let numbers: Vec<u32> = hits.iter().map(number).collect();
        // RFC 9051 §6.4.4: in IMAP4rev2 a SEARCH without RETURN is RETURN (ALL), answered
        // with ESEARCH.
        let ret = ret.or(self.rev2.then_some(SearchReturn {
            all: true,
            ..SearchReturn::default()
        }));
        match ret {
            None => {
                // RFC 7162 §3.1.5: the highest MODSEQ of the hits, when the search used MODSEQ.
                let highest = hits.iter().map(|h| h.2).max();
                self.respond(Response::Search {
                    numbers: &numbers,
                    modseq: highest.filter(|_| modseq_search),
                })
                .await?;
            }
            Some(ret) => {
                if ret.update
                    && let Some(refused) = self.refuse_tag_reuse(tag)
                {
                    return Ok(refused);
                }
                let live = ret.update && self.may_keep_live(tag, key, hits.len()).await?;
                self.answer_esearch(tag, uid, &hits, ret, modseq_search).await?;
                if live {
                    self.keep_search_live(tag, uid, key, hits.iter().map(|h| h.1).collect(), update_fetch)?;
                }
            }
        }
        Ok(Reply::ok(if uid {
            "UID SEARCH completed"
        } else {
            "SEARCH completed"
        }))
    }

    /// The (sequence number, UID, MODSEQ) of the selected mailbox's messages that `key`
    /// matches, in sequence order: the one evaluator behind SEARCH, SORT and THREAD (RFC 5256
    /// §3: their searching criteria are SEARCH's). `uid` says whether the command is a UID form
    /// (it may then report expunges first).
    pub(crate) async fn matching(&mut self, uid: bool, key: &SearchKey) -> Result<Vec<(u32, u32, u64)>, Failure> {
        if uses_modseq(key) {
            self.enable_condstore().await?;
        }
        // A view the change clock vouches for needs no sync (`session/sync.rs`); one synced
        // here is the mailbox as of this command, so the sync at its end is skipped too.
        if !self.view_is_current() {
            self.sync(uid).await?;
            if let State::Selected { selected, .. } = &mut self.state {
                selected.current = true;
            }
        }
        let (needs_stored, needs_body) = needs(key);
        let now = Utc::now();
        let State::Selected { user, selected } = &self.state else {
            return Err(Failure::Reply(Reply::bad("no mailbox selected")));
        };
        let (user_id, mailbox_id) = (user.id, selected.mailbox.id);
        let count = selected.uids.len() as u32;
        let max_uid = selected.max_uid();
        // (sequence number, UID, MODSEQ) of each match, in mailbox order.
        let mut hits: Vec<(u32, u32, u64)> = Vec::new();
        if needs_stored && !needs_body {
            // Headers, dates and sizes only: one statement streams the whole mailbox, each row
            // checked as it arrives (no round trip per batch, one row in memory at a time).
            if let (Some(&first), Some(&last)) = (selected.uids.first(), selected.uids.last()) {
                let ctx = self.ctx.clone();
                ctx.mail
                    .scan_light(
                        user_id,
                        mailbox_id,
                        first..=last,
                        subject_prefilter(key).as_deref(),
                        |m| {
                            // A message the view does not have yet (arrived since) is not searched.
                            let Some(seq) = selected.seq_of(m.uid) else {
                                return;
                            };
                            let i = seq as usize - 1;
                            let candidate = Candidate {
                                seq,
                                uid: m.uid,
                                count,
                                max_uid,
                                flags: &selected.flags[i],
                                recent: selected.is_recent(m.uid),
                                modseq: selected.modseqs[i],
                                now,
                                stored: Some(&m),
                                body_text: None,
                            };
                            if eval(key, &candidate) {
                                hits.push((seq, m.uid, selected.modseqs[i]));
                            }
                        },
                    )
                    .await?;
            }
        }
        let all: Vec<(u32, u32)> = if needs_stored && !needs_body {
            Vec::new()
        } else {
            selected
                .uids
                .iter()
                .enumerate()
                .map(|(i, u)| (i as u32 + 1, *u))
                .collect()
        };
        hits.extend(self.evaluate_listed(key, &all, now).await?);
        Ok(hits)
    }

    /// The (sequence number, UID, MODSEQ) of the listed (sequence number, UID) messages of the
    /// view that `key` matches, in the order listed, read in batches (with the body when the key
    /// needs it). The view is taken as it is (no sync): also what a live search (RFC 5267 §4.3,
    /// session/context.rs) re-checks when messages arrive or change.
    pub(crate) async fn evaluate_listed(
        &self,
        key: &SearchKey,
        listed: &[(u32, u32)],
        now: DateTime<Utc>,
    ) -> Result<Vec<(u32, u32, u64)>, Failure> {
        let (needs_stored, needs_body) = needs(key);
        let needs_envelope = has_key(key, &|k| matches!(k, SearchKey::Subject(_)));
        let user_id = self.user()?.id;
        let (mailbox_id, count, max_uid) = {
            let selected = self.selected()?;
            (selected.mailbox.id, selected.uids.len() as u32, selected.max_uid())
        };
        let mut hits = Vec::new();
        for chunk in listed.chunks(BATCH) {
            let stored = if needs_stored {
                let uids: Vec<u32> = chunk.iter().map(|c| c.1).collect();
                // SUBJECT needs the envelope: whole rows then, light ones otherwise.
                if needs_envelope {
                    self.ctx.mail.fetch(user_id, mailbox_id, &uids).await?
                } else {
                    self.ctx.mail.fetch_light(user_id, mailbox_id, &uids).await?
                }
            } else {
                Vec::new()
            };
            for &(seq, msg_uid) in chunk {
                // Both reads answer in UID order: a binary search, not a scan per message.
                let message = stored
                    .binary_search_by_key(&msg_uid, |m| m.uid)
                    .ok()
                    .map(|i| &stored[i]);
                if needs_stored && message.is_none() {
                    continue;
                }
                let text = match (needs_body, message) {
                    (true, Some(m)) => match self.ctx.blobs.read(&m.blob).await {
                        Ok(raw) => match tokio::task::spawn_blocking(move || body_text(&raw)).await {
                            Ok(text) => Some(text),
                            Err(e) => {
                                tracing::error!(uid = msg_uid, "decoding message body for SEARCH: {e}");
                                None
                            }
                        },
                        Err(e) => {
                            tracing::error!(uid = msg_uid, "reading message body for SEARCH: {e}");
                            None
                        }
                    },
                    _ => None,
                };
                let selected = self.selected()?;
                let i = seq as usize - 1;
                let candidate = Candidate {
                    seq,
                    uid: msg_uid,
                    count,
                    max_uid,
                    flags: &selected.flags[i],
                    recent: selected.is_recent(msg_uid),
                    modseq: selected.modseqs[i],
                    now,
                    stored: message,
                    body_text: text.as_deref(),
                };
                if eval(key, &candidate) {
                    hits.push((seq, msg_uid, selected.modseqs[i]));
                }
            }
        }
        Ok(hits)
    }
}

/// RFC 5267 §4.4: the hits at positions `low..=high` (1-based) of the result, or fewer.
pub(crate) fn partial_window(hits: &[(u32, u32, u64)], (low, high): (u32, u32)) -> &[(u32, u32, u64)] {
    let start = (low as usize - 1).min(hits.len());
    let end = (high as usize).min(hits.len());
    &hits[start..end]
}

/// RFC 3501 §6.4.4 (and RFC 5256 §3 for SORT and THREAD): a charset other than UTF-8 and
/// US-ASCII is refused with NO [BADCHARSET].
pub(crate) fn refuse_charset(charset: &str) -> Option<Reply> {
    if matches!(charset, "UTF-8" | "US-ASCII" | "UTF8") {
        return None;
    }
    tracing::info!(charset, "search charset refused");
    Some(Reply::no("unsupported charset").code(Code::BadCharset(vec!["UTF-8", "US-ASCII"])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_decodes_every_header_field() {
        let header = b"From: a@example.test\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\r\n";
        assert!(text_in_header(header, "grüße"));
        assert!(text_in_header(header, "example.test"));
        assert!(!text_in_header(header, "nowhere"));
    }
}
