//! Searches kept live (RFC 5267 §4.3, CONTEXT=SEARCH and CONTEXT=SORT): after `SEARCH RETURN
//! (UPDATE)` or `SORT RETURN (UPDATE)` the session tells the client how the result changes, with
//! unsolicited `* ESEARCH (TAG "t") ADDTO (...)` / `REMOVEFROM (...)`, as messages arrive,
//! change flags or are expunged, until CANCELUPDATE (§4.3.5) or the mailbox is no longer
//! selected (the live searches belong to the view, `Selected::live`). With NOTIFY (RFC 5465
//! §7), `UPDATE (fetch-att ...)` also gets a FETCH of each new message joining the result,
//! between its EXISTS and the ADDTO.
//!
//! Changes are noticed where the session notices every change, `sync.rs`, which calls
//! [`Session::live_updates`] after it has announced new messages (`EXISTS`, §4.3.3: ADDTO comes
//! after it) and before it announces expunges (§4.3.4: REMOVEFROM comes before them). A message
//! is re-checked when its MODSEQ passed the one the live search is in step with (every flag
//! change and every arrival takes a new MODSEQ), so a change costs the evaluation of the changed
//! messages only, never a new search of the mailbox; a search reading no flags (FROM, BODY, a
//! date...) re-checks arrivals only.
//!
//! Limits (bounded memory and CPU): at most [`MAX_LIVE`] live searches per session and
//! [`MAX_LIVE_RESULTS`] results held by them together; past either, and for a search whose
//! result would change without any message changing (message numbers, which shift at every
//! expunge; `UID n:*` or `*`; OLDER / YOUNGER, which change with the clock), the server answers
//! the search and says it will not update it: `* NO [NOUPDATE "tag"]` (§4.3.1).

use std::collections::HashSet;

use chrono::Utc;

use super::{CmdResult, Failure, Reply, Session};
use crate::cmd::sort::{Value, compare_keys, value_of};
use crate::wire::parse::{FetchItem, SearchKey, SortCriterion};
use crate::wire::response::{Code, Response, Status};
use crate::wire::sequence::{Bound, compact};

/// Most searches one session keeps live (RFC 5267 §4.3.1: "at least one").
pub const MAX_LIVE: usize = 5;
/// Most results all live searches of a session hold together (a SORT result holds its sort
/// keys, subjects and addresses, beside each UID).
pub const MAX_LIVE_RESULTS: usize = 100_000;
/// Messages read per statement when sort keys of arrivals are read.
const BATCH: usize = 250;
/// Numbers per sequence set and changes per `* ESEARCH` line: a mass change (`STORE 1:*`) is
/// told in lines a client can take (a few KiB each), in order.
const PER_LINE: usize = 500;

/// One search kept live.
#[derive(Debug)]
pub struct Live {
    /// The tag of the searching command: the ESEARCH correlator (§4.3).
    tag: String,
    /// UID SEARCH / UID SORT: changes in UIDs, else in message numbers (§4.3.2).
    uid: bool,
    key: SearchKey,
    /// SORT's criteria; `None` for SEARCH, whose result is in mailbox order and whose changes
    /// are sent at context position 0 (§4.3.3, §4.3.4).
    order: Option<Vec<SortCriterion>>,
    /// The result: UIDs in the command's order, each with its sort keys (empty for SEARCH).
    results: Vec<(u32, Vec<Value>)>,
    /// The view's MODSEQ this result is in step with: messages with a higher one are re-checked.
    seen_modseq: u64,
    /// The highest UID checked: when the key reads nothing that changes on a message (flags,
    /// MODSEQ), only messages above it (arrivals) are re-checked.
    checked_uid: u32,
    /// RFC 5465 §7: what to FETCH for a new message joining the result (`UPDATE (...)`).
    fetch: Vec<FetchItem>,
}

/// Whether a key reads what changes on a message after it arrived: flags, keywords, MODSEQ.
fn reads_state(key: &SearchKey) -> bool {
    use SearchKey as K;
    match key {
        K::Answered
        | K::Deleted
        | K::Draft
        | K::Flagged
        | K::Seen
        | K::Unanswered
        | K::Undeleted
        | K::Undraft
        | K::Unflagged
        | K::Unseen
        | K::Keyword(_)
        | K::Unkeyword(_)
        | K::New
        | K::Old
        | K::Recent
        | K::ModSeq(_) => true,
        K::Not(k) => reads_state(k),
        K::Or(a, b) => reads_state(a) || reads_state(b),
        K::And(keys) => keys.iter().any(reads_state),
        _ => false,
    }
}

/// Whether a search's result changes only when messages arrive, change or go: not with message
/// numbers (they shift at every expunge), `*` (it moves with each arrival) or the clock.
fn updatable(key: &SearchKey) -> bool {
    match key {
        SearchKey::Sequence(_) | SearchKey::Older(_) | SearchKey::Younger(_) => false,
        SearchKey::Uid(set) => !set.0.iter().any(|&(a, b)| a == Bound::Star || b == Bound::Star),
        SearchKey::Not(k) => updatable(k),
        SearchKey::Or(a, b) => updatable(a) && updatable(b),
        SearchKey::And(keys) => keys.iter().all(updatable),
        _ => true,
    }
}

/// What one live search learned in a sync, before anything is changed.
struct Learned {
    /// The re-checked messages (UIDs, ascending) and which of them match now.
    rechecked: Vec<u32>,
    matched: HashSet<u32>,
    /// Messages that match now and were not in the result, with their sort keys, ascending.
    arriving: Vec<(u32, Vec<Value>)>,
}

impl Session {
    /// RFC 5267 §4.3: "An attempt to use UPDATE where a tag is already in use with a previous
    /// searching command that itself used UPDATE SHALL result in the server rejecting the
    /// searching command with a BAD response."
    pub(crate) fn refuse_tag_reuse(&self, tag: &str) -> Option<Reply> {
        let selected = self.selected().ok()?;
        if !selected.live.iter().any(|live| live.tag == tag) {
            return None;
        }
        tracing::info!(peer = %self.peer, tag, "UPDATE with the tag of a live search");
        Some(Reply::bad("tag already in use by a search kept live"))
    }

    /// Whether a search with UPDATE and `results` results may be kept live; if not, says so:
    /// "an untagged NO is generated during processing of the command with a response-code of
    /// NOUPDATE" (§4.3.1), before the answer as in §4.3.1's example; the other return options
    /// are still honoured.
    pub(crate) async fn may_keep_live(&mut self, tag: &str, key: &SearchKey, results: usize) -> Result<bool, Failure> {
        let refusal = {
            let selected = self.selected()?;
            let held: usize = selected.live.iter().map(|live| live.results.len()).sum();
            if selected.live.len() >= MAX_LIVE {
                Some(format!("at most {MAX_LIVE} searches are kept live"))
            } else if held + results > MAX_LIVE_RESULTS {
                Some(format!("at most {MAX_LIVE_RESULTS} results are kept live"))
            } else if !updatable(key) {
                Some("a search by message number, by `*` or by age is not kept live".to_string())
            } else {
                None
            }
        };
        let Some(text) = refusal else {
            return Ok(true);
        };
        tracing::info!(peer = %self.peer, tag, "UPDATE refused: {text}");
        let code = Code::NoUpdate(tag.to_string());
        self.respond(Response::Untagged {
            status: Status::No,
            code: Some(&code),
            text: &text,
        })
        .await?;
        Ok(false)
    }

    /// Keep a SEARCH result (UIDs, ascending) live ([`Session::may_keep_live`] said yes).
    pub(crate) fn keep_search_live(
        &mut self,
        tag: &str,
        uid: bool,
        key: &SearchKey,
        uids: Vec<u32>,
        fetch: Vec<FetchItem>,
    ) -> Result<(), Failure> {
        let results = uids.into_iter().map(|u| (u, Vec::new())).collect();
        self.keep_live(tag, uid, key, None, results, fetch)
    }

    /// Keep a SORT result (UIDs in sort order with their sort keys) live.
    pub(crate) fn keep_sort_live(
        &mut self,
        tag: &str,
        uid: bool,
        key: &SearchKey,
        criteria: &[SortCriterion],
        results: Vec<(u32, Vec<Value>)>,
        fetch: Vec<FetchItem>,
    ) -> Result<(), Failure> {
        self.keep_live(tag, uid, key, Some(criteria.to_vec()), results, fetch)
    }

    fn keep_live(
        &mut self,
        tag: &str,
        uid: bool,
        key: &SearchKey,
        order: Option<Vec<SortCriterion>>,
        results: Vec<(u32, Vec<Value>)>,
        fetch: Vec<FetchItem>,
    ) -> Result<(), Failure> {
        let selected = self.selected_mut()?;
        let (seen_modseq, checked_uid) = (selected.known_modseq, selected.max_uid());
        selected.live.push(Live {
            tag: tag.to_string(),
            uid,
            key: key.clone(),
            order,
            results,
            seen_modseq,
            checked_uid,
            fetch,
        });
        Ok(())
    }

    /// CANCELUPDATE (RFC 5267 §4.3.5): the named live searches stop. A tag that names none is
    /// refused with NO (as Dovecot does) and nothing is cancelled.
    pub(crate) fn cmd_cancel_update(&mut self, tags: &[String]) -> CmdResult {
        let peer = self.peer;
        let selected = self.selected_mut()?;
        if let Some(unknown) = tags.iter().find(|t| !selected.live.iter().any(|live| &live.tag == *t)) {
            tracing::info!(%peer, tag = %unknown, "CANCELUPDATE of a tag with no live search");
            return Ok(Reply::no(format!("no search is kept live under tag {unknown}")));
        }
        selected.live.retain(|live| !tags.contains(&live.tag));
        Ok(Reply::ok("CANCELUPDATE completed"))
    }

    /// Tell the client how its live searches changed (RFC 5267 §4.3.2 to §4.3.4), writing to
    /// `out`: `expunging` (UIDs, ascending) are about to be announced as expunged (their
    /// REMOVEFROM must come first, while their message numbers are valid), and messages whose
    /// MODSEQ passed a live search's are re-checked against it (arrivals come after their
    /// EXISTS, which the caller has written). Nothing changes unless every live search could
    /// be brought up to date (a store error leaves them as they were, for the next sync).
    pub(crate) async fn live_updates(&mut self, expunging: &[u32], out: &mut Vec<u8>) -> Result<(), Failure> {
        let Ok(selected) = self.selected_mut() else {
            return Ok(());
        };
        // Nothing arrived, changed or goes: nothing to tell (the common case, every command).
        let known = selected.known_modseq;
        if expunging.is_empty() && selected.live.iter().all(|live| live.seen_modseq >= known) {
            return Ok(());
        }
        let mut live = std::mem::take(&mut selected.live);
        // RFC 5465 §7: FETCHes for new messages joining a search with `UPDATE (fetch-att)`,
        // written after the EXISTS (already in `out`) and before the ADDTO (`updates`).
        let mut fetches: Vec<(Vec<FetchItem>, Vec<u32>)> = Vec::new();
        let mut updates = Vec::new();
        let mut learned = Vec::with_capacity(live.len());
        let mut failure = None;
        for one in &live {
            match self.learn(one, expunging).await {
                Ok(l) => learned.push(l),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if failure.is_none()
            && let Ok(selected) = self.selected()
        {
            for (one, learned) in live.iter_mut().zip(learned) {
                if learned.rechecked.is_empty() && expunging.is_empty() {
                    one.seen_modseq = selected.known_modseq;
                    continue;
                }
                if !one.fetch.is_empty() {
                    // Arrivals only: §7 "No untagged FETCH response SHOULD be returned if a
                    // message becomes a member of UPDATE SEARCH due to flag or annotation
                    // changes".
                    let seqs: Vec<u32> = learned
                        .arriving
                        .iter()
                        .filter(|a| a.0 > one.checked_uid)
                        .filter_map(|a| selected.seq_of(a.0))
                        .collect();
                    if !seqs.is_empty() {
                        fetches.push((one.fetch.clone(), seqs));
                    }
                }
                let by_uid = one.uid;
                let changes = one.apply(learned, expunging, |uid| {
                    if by_uid { Some(uid) } else { selected.seq_of(uid) }
                });
                for changes in changes.chunks(PER_LINE) {
                    Response::ESearchUpdate {
                        tag: &one.tag,
                        uid: one.uid,
                        changes,
                    }
                    .write(&mut updates);
                }
                one.seen_modseq = selected.known_modseq;
                one.checked_uid = selected.max_uid();
            }
        }
        if let Ok(selected) = self.selected_mut() {
            selected.live = live;
        }
        if let Some(e) = failure {
            return Err(e);
        }
        if !fetches.is_empty() {
            // §7: "the EXISTS response MUST precede any FETCH responses, and together they
            // MUST precede the ESEARCH response".
            self.conn.send(out).await?;
            out.clear();
            for (items, seqs) in fetches {
                self.fetch_unasked(&seqs, &items).await?;
            }
        }
        out.extend_from_slice(&updates);
        Ok(())
    }

    /// Re-check what changed for one live search: the fallible part (store reads).
    async fn learn(&self, live: &Live, expunging: &[u32]) -> Result<Learned, Failure> {
        let selected = self.selected()?;
        let any_change = reads_state(&live.key);
        let listed: Vec<(u32, u32)> = if selected.known_modseq > live.seen_modseq {
            selected
                .uids
                .iter()
                .zip(&selected.modseqs)
                .enumerate()
                .filter(|(_, (uid, modseq))| {
                    **modseq > live.seen_modseq
                        && (any_change || **uid > live.checked_uid)
                        && expunging.binary_search(uid).is_err()
                })
                .map(|(i, (uid, _))| (i as u32 + 1, *uid))
                .collect()
        } else {
            Vec::new()
        };
        if listed.is_empty() {
            return Ok(Learned {
                rechecked: Vec::new(),
                matched: HashSet::new(),
                arriving: Vec::new(),
            });
        }
        let hits = self.evaluate_listed(&live.key, &listed, Utc::now()).await?;
        let matched: HashSet<u32> = hits.into_iter().map(|hit| hit.1).collect();
        let members: HashSet<u32> = live.results.iter().map(|r| r.0).collect();
        let new: Vec<u32> = listed
            .iter()
            .map(|l| l.1)
            .filter(|uid| matched.contains(uid) && !members.contains(uid))
            .collect();
        let arriving = match &live.order {
            Some(criteria) if !new.is_empty() => self.sort_keys(criteria, &new).await?,
            _ => new.into_iter().map(|uid| (uid, Vec::new())).collect(),
        };
        Ok(Learned {
            rechecked: listed.into_iter().map(|l| l.1).collect(),
            matched,
            arriving,
        })
    }

    /// The sort keys of these messages (UIDs, ascending); one gone meanwhile is left out.
    async fn sort_keys(&self, criteria: &[SortCriterion], uids: &[u32]) -> Result<Vec<(u32, Vec<Value>)>, Failure> {
        let user_id = self.user()?.id;
        let mailbox_id = self.selected()?.mailbox.id;
        let mut keyed = Vec::with_capacity(uids.len());
        for chunk in uids.chunks(BATCH) {
            for message in self.ctx.mail.fetch_light(user_id, mailbox_id, chunk).await? {
                let keys = criteria.iter().map(|c| value_of(&message, c.key)).collect();
                keyed.push((message.uid, keys));
            }
        }
        Ok(keyed)
    }
}

impl Live {
    /// Bring the result up to date and say how, as (added, context position, set) in the order
    /// the client applies them (§4.3.2): removals first, then additions. `number` gives a
    /// message's UID or message number in the view as it is now (expunged ones still in it).
    fn apply(
        &mut self,
        learned: Learned,
        expunging: &[u32],
        number: impl Fn(u32) -> Option<u32>,
    ) -> Vec<(bool, u32, String)> {
        let rechecked: HashSet<u32> = learned.rechecked.into_iter().collect();
        let leaves = |uid: u32| {
            expunging.binary_search(&uid).is_ok() || (rechecked.contains(&uid) && !learned.matched.contains(&uid))
        };
        let mut changes = Vec::new();
        match &self.order {
            None => {
                // SEARCH: mailbox order, context position 0, the shortest sets (§4.3.3).
                let (gone, kept): (Vec<_>, Vec<_>) = self.results.drain(..).partition(|r| leaves(r.0));
                self.results = kept;
                let gone: Vec<u32> = gone.iter().filter_map(|r| number(r.0)).collect();
                for part in gone.chunks(PER_LINE) {
                    changes.push((false, 0, compact(part)));
                }
                let added: Vec<u32> = learned.arriving.iter().filter_map(|a| number(a.0)).collect();
                self.results.extend(learned.arriving);
                self.results.sort_unstable_by_key(|r| r.0);
                for part in added.chunks(PER_LINE) {
                    changes.push((true, 0, compact(part)));
                }
            }
            Some(criteria) => {
                // SORT: each change at its context position (1-based), so the client's copy
                // stays in sort order (§4.3.2); a removal's position is where it is before it
                // goes, an addition's where it is after it came.
                let mut kept = Vec::with_capacity(self.results.len());
                for result in self.results.drain(..) {
                    if leaves(result.0) {
                        if let Some(n) = number(result.0) {
                            changes.push((false, kept.len() as u32 + 1, n.to_string()));
                        }
                    } else {
                        kept.push(result);
                    }
                }
                self.results = kept;
                for (uid, keys) in learned.arriving {
                    // Equal keys: UID order, which is message number order (RFC 5256 §3).
                    let at = self.results.partition_point(|(other, other_keys)| {
                        compare_keys(criteria, other_keys, &keys).then(other.cmp(&uid)).is_lt()
                    });
                    if let Some(n) = number(uid) {
                        changes.push((true, at as u32 + 1, n.to_string()));
                    }
                    self.results.insert(at, (uid, keys));
                }
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse::SortKey;
    use crate::wire::sequence::SequenceSet;

    fn live(order: Option<Vec<SortCriterion>>, results: Vec<(u32, Vec<Value>)>) -> Live {
        Live {
            tag: "t".into(),
            uid: true,
            key: SearchKey::All,
            order,
            results,
            seen_modseq: 0,
            checked_uid: 0,
            fetch: Vec::new(),
        }
    }

    fn text(s: &str) -> Vec<Value> {
        vec![Value::Text(s.into())]
    }

    #[test]
    fn search_changes_are_sets_at_position_zero() {
        let mut one = live(None, vec![(1, vec![]), (3, vec![]), (4, vec![]), (6, vec![])]);
        let learned = Learned {
            rechecked: vec![3, 7, 8],
            matched: [7, 8].into_iter().collect(),
            arriving: vec![(7, vec![]), (8, vec![])],
        };
        let changes = one.apply(learned, &[4, 6], Some);
        assert_eq!(
            changes,
            vec![(false, 0, "3:4,6".to_string()), (true, 0, "7:8".to_string())]
        );
        assert_eq!(one.results.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 7, 8]);
    }

    #[test]
    fn a_mass_change_is_told_in_bounded_sets() {
        // Every other UID of 2,400 leaves: 1,200 numbers, no ranges, in sets of at most 500.
        let mut one = live(None, (1..=2400).map(|u| (u, vec![])).collect());
        let odd: Vec<u32> = (1..=2400).filter(|u| u % 2 == 1).collect();
        let learned = Learned {
            rechecked: odd.clone(),
            matched: HashSet::new(),
            arriving: vec![],
        };
        let changes = one.apply(learned, &[], Some);
        assert_eq!(changes.len(), 3);
        assert!(changes.iter().all(|(added, position, _)| !added && *position == 0));
        let told: Vec<u32> = changes
            .iter()
            .flat_map(|c| c.2.split(',').map(|n| n.parse::<u32>().unwrap()))
            .collect();
        assert_eq!(told, odd);
        assert_eq!(one.results.len(), 1200);
    }

    #[test]
    fn sort_changes_keep_the_order() {
        let criteria = vec![SortCriterion {
            key: SortKey::Subject,
            reverse: false,
        }];
        // b(1) d(2) f(3)
        let mut one = live(Some(criteria), vec![(1, text("b")), (2, text("d")), (3, text("f"))]);
        let learned = Learned {
            rechecked: vec![2, 4, 5],
            matched: [4, 5].into_iter().collect(),
            arriving: vec![(4, text("a")), (5, text("d"))],
        };
        // d(2) leaves from position 2; a(4) comes first; d(5) equals nothing left: before f.
        let changes = one.apply(learned, &[], Some);
        assert_eq!(
            changes,
            vec![
                (false, 2, "2".to_string()),
                (true, 1, "4".to_string()),
                (true, 3, "5".to_string())
            ]
        );
        assert_eq!(one.results.iter().map(|r| r.0).collect::<Vec<_>>(), vec![4, 1, 5, 3]);
        // Equal keys: the lower UID first (RFC 5256 §3: sequence order).
        let learned = Learned {
            rechecked: vec![6],
            matched: [6].into_iter().collect(),
            arriving: vec![(6, text("b"))],
        };
        assert_eq!(
            one.apply(learned, &[1], Some),
            vec![(false, 2, "1".to_string()), (true, 2, "6".to_string())]
        );
    }

    #[test]
    fn keys_whose_result_moves_by_itself_are_not_kept_live() {
        let uid_set = |s: &str| SearchKey::Uid(SequenceSet::parse(s.as_bytes()).unwrap());
        assert!(updatable(&SearchKey::And(vec![SearchKey::Unseen, uid_set("1:5")])));
        assert!(!updatable(&SearchKey::Not(Box::new(uid_set("5:*")))));
        assert!(!updatable(&SearchKey::Sequence(SequenceSet::parse(b"1:2").unwrap())));
        assert!(!updatable(&SearchKey::Or(
            Box::new(SearchKey::All),
            Box::new(SearchKey::Younger(5))
        )));
        assert!(reads_state(&SearchKey::Not(Box::new(SearchKey::Keyword(
            "$Junk".into()
        )))));
        assert!(!reads_state(&SearchKey::And(vec![
            SearchKey::From("a".into()),
            SearchKey::Larger(5)
        ])));
    }
}
