//! Keeping the selected mailbox's view in step with the store (RFC 3501 §5.2, §7.3.1, §7.4.1):
//! new messages become `EXISTS`, flag changes by others become `FETCH (FLAGS)`, and messages
//! expunged by others become `EXPUNGE` (`VANISHED` after ENABLE QRESYNC, RFC 7162 §3.2.10),
//! only at the moments the RFC allows. Also what a client's cache missed while it was away
//! (`VANISHED (EARLIER)`, RFC 7162 §3.2.5, §3.2.6).

use shared::mailstore::{Changes, MailStore, StoreError, StoredMessage, clock};

use super::{Failure, Selected, Session, State};
use crate::wire::response::Response;
use crate::wire::sequence::{Ranges, compact};

impl Session {
    /// Bring the view up to date and tell the client; `expunge_ok` says whether EXPUNGE
    /// responses may be sent now.
    pub async fn sync(&mut self, expunge_ok: bool) -> Result<(), Failure> {
        self.sync_reading(expunge_ok, &[]).await.map(drop)
    }

    /// [`Session::sync`] that also reads the messages `uids` without their parse, in the same
    /// statement as the changes (`MailStore::changes_and_light`): FETCH's sync read and its
    /// first rows in one round trip, both as of one moment. Returns the rows found, in UID
    /// order (none for a UID expunged meanwhile).
    pub async fn sync_reading(&mut self, expunge_ok: bool, uids: &[u32]) -> Result<Vec<StoredMessage>, Failure> {
        let State::Selected { user, selected } = &mut self.state else {
            return Ok(Vec::new());
        };
        let user_id = user.id;
        let mailbox_id = selected.mailbox.id;
        // Read before the database is: every change answered before this is in what it reads.
        let clock = self.ctx.mail.clock().read(mailbox_id);
        // Everything since the MODSEQ the view knows, in one statement: usually nothing.
        let (since, known_uid) = (selected.known_modseq, selected.max_uid());
        let read = if uids.is_empty() {
            changes_of_view(&self.ctx.mail, user_id, mailbox_id, selected)
                .await?
                .map(|changes| (changes, Vec::new()))
        } else {
            match self
                .ctx
                .mail
                .changes_and_light(user_id, mailbox_id, since, known_uid, uids)
                .await
            {
                Ok(read) => Some(read),
                Err(StoreError::NoSuchMailbox) => None,
                Err(e) => return Err(e.into()),
            }
        };
        let Some((changes, rows)) = read else {
            return Ok(Vec::new());
        };
        let State::Selected { user: _, selected } = &mut self.state else {
            return Ok(Vec::new());
        };
        selected.verified = clock.map(|c| (c, std::time::Instant::now()));
        let mut out: Vec<u8> = Vec::new();
        if changes.highestmodseq != selected.known_modseq {
            // Announce new keywords before the FETCH responses that show them.
            selected.announce_keywords(changes.changed.iter().flat_map(|s| s.flags.iter()), &mut out);
            let before = selected.uids.len();
            for state in changes.changed {
                if state.uid > selected.max_uid() {
                    selected.uids.push(state.uid);
                    selected.flags.push(state.flags);
                    selected.modseqs.push(state.modseq);
                    continue;
                }
                let Ok(i) = selected.uids.binary_search(&state.uid) else {
                    continue;
                };
                selected.modseqs[i] = state.modseq;
                if !same_flags(&selected.flags[i], &state.flags) {
                    selected.flags[i] = state.flags;
                    Response::FlagsFetch {
                        seq: i + 1,
                        uid: state.uid,
                        flags: Some(&selected.flags[i]),
                        recent: selected.is_recent(state.uid),
                        modseq: self.condstore.then_some(state.modseq),
                    }
                    .write(&mut out);
                }
            }
            match changes.expunged {
                // Removed by others since: those still in the view wait to be announced
                // (this session's own are out of the view already, `announce_expunged`).
                Some(expunged) => {
                    // Appended and sorted once: inserting each in place moved the list's tail
                    // once per UID (10,000 removed at once: some 50 million moves).
                    let before = selected.ghosts.len();
                    for uid in expunged {
                        if selected.uids.binary_search(&uid).is_ok()
                            && selected.ghosts[..before].binary_search(&uid).is_err()
                        {
                            selected.ghosts.push(uid);
                        }
                    }
                    if selected.ghosts.len() != before {
                        selected.ghosts.sort_unstable();
                        selected.ghosts.dedup();
                    }
                }
                // The removal record does not reach back to the view's MODSEQ: compare the
                // whole view with the mailbox.
                None => {
                    let all = self.ctx.mail.message_states(user_id, mailbox_id).await?;
                    let mut present = all.iter().map(|m| m.uid).peekable();
                    let mut gone = Vec::new();
                    for &uid in &selected.uids {
                        while present.peek().is_some_and(|&p| p < uid) {
                            present.next();
                        }
                        if present.peek() != Some(&uid) {
                            gone.push(uid);
                        }
                    }
                    selected.ghosts = gone;
                }
            }
            if selected.uids.len() != before {
                // RFC 3501 §2.3.2: new messages nobody has claimed yet are \Recent here; an
                // IMAP4rev2 session has no \Recent (RFC 9051 Appendix E) and claims nothing.
                if !self.rev2
                    && let Err(e) = super::recent::claim(&self.ctx.mail, user_id, selected).await
                {
                    tracing::warn!("claiming \\Recent messages: {e}");
                }
                Response::Exists(selected.uids.len()).write(&mut out);
                // RFC 3501 §7.3.2: RECENT goes with a change of the mailbox's size.
                if !self.rev2 {
                    Response::Recent(selected.recent.len()).write(&mut out);
                }
            }
            selected.known_modseq = changes.highestmodseq;
        }
        let expunging = if expunge_ok {
            std::mem::take(&mut selected.ghosts)
        } else {
            Vec::new()
        };
        // RFC 5267 §4.3.3, §4.3.4: live searches hear of arrivals after EXISTS and of expunges
        // before EXPUNGE (session/context.rs).
        let live = self.live_updates(&expunging, &mut out).await;
        if let State::Selected { selected, .. } = &mut self.state {
            if live.is_ok() {
                remove_announced(selected, &expunging, self.qresync, &mut out);
            } else {
                // Announced at the next sync, after the live searches have heard of them; what
                // the view took in already (EXISTS, FETCH) is told now.
                selected.ghosts = expunging;
            }
        }
        if !out.is_empty() {
            self.conn.send(&out).await?;
        }
        live.map(|()| rows)
    }

    /// The change clock's reading for the selected mailbox (`None`: no clock, or none
    /// selected). Read before a change of this session's, for [`Session::own_change_ticked`].
    pub(crate) fn clock_reading(&self) -> Option<u64> {
        match &self.state {
            State::Selected { selected, .. } => self.ctx.mail.clock().read(selected.mailbox.id),
            _ => None,
        }
    }

    /// After this session's own change to the selected mailbox (the clock read `before` it):
    /// when the change took the MODSEQ right after the view's (the view is current) and it is
    /// the only tick since, the clock vouches for the view again.
    pub(crate) fn own_change_ticked(&mut self, before: Option<u64>) {
        let now = self.clock_reading();
        if let State::Selected { selected, .. } = &mut self.state
            && selected.current
            && let (Some(before), Some(now)) = (before, now)
            && now == before + 1
        {
            selected.verified = Some((now, std::time::Instant::now()));
        }
    }

    /// When a command starts: the view is current if the clock has not moved since the view
    /// was verified (within `clock::TRUST_FOR`; a writer that does not tick is seen by then).
    pub(crate) fn trust_clock(&mut self) {
        let now = self.clock_reading();
        if let State::Selected { selected, .. } = &mut self.state {
            selected.current = matches!(
                (selected.verified, now),
                (Some((seen, at)), Some(now)) if seen == now && at.elapsed() < clock::TRUST_FOR
            );
        }
    }

    /// When a command has run: a change the command made without taking it into the view
    /// (a COPY into the selected mailbox) or anyone else's moved the clock: the sync after
    /// the command reads it.
    pub(crate) fn recheck_clock(&mut self) {
        let now = self.clock_reading();
        if let State::Selected { selected, .. } = &mut self.state
            && selected.current
            && let Some((seen, _)) = selected.verified
            && Some(seen) != now
        {
            selected.current = false;
        }
    }

    /// Whether the sync at the end of the command can be skipped: the view is the mailbox as of
    /// a moment within this command ([`Selected::current`]) and the sync has nothing left to do
    /// (no expunge waiting to be announced, no live search or NOTIFY to tell). A change another
    /// session commits after that moment is concurrent with the command; RFC 3501 §5.2 and
    /// §7.3.1 ask for the changes the server observed while processing it, and the next
    /// command's sync (or IDLE) reports this one. Saves the `sync_point` round trip of SELECT,
    /// FETCH (which synced before reading) and STORE.
    pub(crate) fn view_is_current(&self) -> bool {
        match &self.state {
            State::Selected { selected, .. } => {
                selected.current && selected.ghosts.is_empty() && selected.live.is_empty() && self.notify.is_none()
            }
            _ => false,
        }
    }

    /// Remove this session's own expunged UIDs (ascending) from the view and announce them.
    pub async fn announce_expunged(&mut self, uids: &[u32]) -> Result<(), Failure> {
        let State::Selected { selected, .. } = &mut self.state else {
            return Ok(());
        };
        selected.ghosts.retain(|g| uids.binary_search(g).is_err());
        let mut out = Vec::new();
        // RFC 5267 §4.3.4: REMOVEFROM before the expunge is announced.
        self.live_updates(uids, &mut out).await?;
        let State::Selected { selected, .. } = &mut self.state else {
            return Ok(());
        };
        remove_announced(selected, uids, self.qresync, &mut out);
        self.conn.send(&out).await?;
        Ok(())
    }

    /// The UIDs of `within` that a client whose cache is as of `since` may know and that are
    /// gone, for `* VANISHED (EARLIER)` (RFC 7162 §3.2.5.2, §3.2.6), in sequence-set form
    /// (empty: none). `present` is the mailbox's UIDs now (ascending). When the store no longer
    /// remembers every removal after `since` (mailstore::EXPUNGED_KEPT), every UID of `within`
    /// below UIDNEXT that is not present is named: the RFC allows UIDs the client never had
    /// (it ignores them); `above` then leaves out the UIDs the client's seq-match-data shows
    /// unchanged.
    pub async fn vanished_earlier(
        &self,
        mailbox_id: i64,
        since: u64,
        within: &Ranges,
        present: &[u32],
        above: u32,
    ) -> Result<String, Failure> {
        let user_id = self.user()?.id;
        match self.ctx.mail.expunged_since(user_id, mailbox_id, since).await? {
            Some(gone) => {
                // A UID still in the view was expunged after it was read: the next sync
                // announces it (VANISHED without EARLIER) as the view loses it.
                let gone: Vec<u32> = within
                    .keep(&gone)
                    .into_iter()
                    .filter(|uid| present.binary_search(uid).is_err())
                    .collect();
                Ok(compact(&gone))
            }
            None => {
                let uidnext = self.ctx.mail.mailbox_by_id(user_id, mailbox_id).await?.uidnext;
                let low = above.saturating_add(1);
                Ok(within.gaps(low, uidnext.saturating_sub(1), present).to_string())
            }
        }
    }
}

/// Take `uids` (ascending) out of the view and tell the client: `* n EXPUNGE` for each
/// (RFC 3501 §7.4.1), or after ENABLE QRESYNC one `* VANISHED uids` (RFC 7162 §3.2.10: it
/// replaces EXPUNGE entirely then). UIDs not in the view are skipped.
fn remove_announced(selected: &mut Selected, uids: &[u32], qresync: bool, out: &mut Vec<u8>) {
    let mut removed = Vec::with_capacity(uids.len());
    for &uid in uids {
        if let Ok(i) = selected.uids.binary_search(&uid) {
            selected.remove_at(i);
            removed.push(uid);
            if !qresync {
                Response::Expunge(i + 1).write(out);
            }
        }
    }
    if qresync && !removed.is_empty() {
        removed.sort_unstable();
        let set = compact(&removed);
        Response::Vanished {
            earlier: false,
            uids: &set,
        }
        .write(out);
    }
}

/// Flags equal as sets (case-insensitive).
pub fn same_flags(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.iter().any(|y| x.eq_ignore_ascii_case(y)))
}

/// What changed in a selected mailbox since the view's MODSEQ (`MailStore::changes_since`);
/// `None` when the mailbox was deleted under the session: nothing more to show.
pub(super) async fn changes_of_view(
    mail: &MailStore,
    user_id: i64,
    mailbox_id: i64,
    selected: &Selected,
) -> Result<Option<Changes>, Failure> {
    match mail
        .changes_since(user_id, mailbox_id, selected.known_modseq, selected.max_uid())
        .await
    {
        Ok(changes) => Ok(Some(changes)),
        Err(StoreError::NoSuchMailbox) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
