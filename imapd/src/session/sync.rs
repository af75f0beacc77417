//! Keeping the selected mailbox's view in step with the store (RFC 3501 §5.2, §7.3.1, §7.4.1):
//! new messages become `EXISTS`, flag changes by others become `FETCH (FLAGS)`, and messages
//! expunged by others become `EXPUNGE`, only at the moments the RFC allows.

use shared::mailstore::StoreError;

use super::{Failure, Session, State};
use crate::wire::response::Response;

impl Session {
    /// Bring the view up to date and tell the client; `expunge_ok` says whether EXPUNGE
    /// responses may be sent now.
    pub async fn sync(&mut self, expunge_ok: bool) -> Result<(), Failure> {
        let State::Selected { user, selected } = &mut self.state else {
            return Ok(());
        };
        let user_id = user.id;
        let mailbox_id = selected.mailbox.id;
        let (highest, count) = match self.ctx.mail.sync_point(user_id, mailbox_id).await {
            Ok(point) => (point.highestmodseq, point.messages),
            // The mailbox was deleted under us: nothing more to show.
            Err(StoreError::NoSuchMailbox) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut out: Vec<u8> = Vec::new();
        let live = selected.uids.len() - selected.ghosts.len();
        if highest != selected.known_modseq || count as usize != live {
            let changed = self
                .ctx
                .mail
                .message_states_since(user_id, mailbox_id, selected.known_modseq)
                .await?;
            // Announce new keywords before the FETCH responses that show them.
            selected.announce_keywords(changed.iter().flat_map(|s| s.flags.iter()), &mut out);
            let before = selected.uids.len();
            for state in changed {
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
            let live = selected.uids.len() - selected.ghosts.len();
            if count as usize != live {
                // Some messages went away: find which.
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
            if selected.uids.len() != before {
                // RFC 3501 §2.3.2: new messages nobody has claimed yet are \Recent here.
                if let Err(e) = super::recent::claim(&self.ctx.mail, user_id, selected).await {
                    tracing::warn!("claiming \\Recent messages: {e}");
                }
                Response::Exists(selected.uids.len()).write(&mut out);
                // RFC 3501 §7.3.2: RECENT goes with a change of the mailbox's size.
                Response::Recent(selected.recent.len()).write(&mut out);
            }
            selected.known_modseq = highest;
        }
        if expunge_ok && !selected.ghosts.is_empty() {
            let ghosts = std::mem::take(&mut selected.ghosts);
            for uid in ghosts {
                if let Ok(i) = selected.uids.binary_search(&uid) {
                    selected.remove_at(i);
                    Response::Expunge(i + 1).write(&mut out);
                }
            }
        }
        if !out.is_empty() {
            self.conn.send(&out).await?;
        }
        Ok(())
    }

    /// Remove expunged UIDs from the view, announcing each (`* n EXPUNGE`), or with
    /// `vanished` nothing else.
    pub async fn announce_expunged(&mut self, uids: &[u32]) -> Result<(), Failure> {
        let State::Selected { selected, .. } = &mut self.state else {
            return Ok(());
        };
        let mut out = Vec::new();
        for uid in uids {
            if let Ok(i) = selected.uids.binary_search(uid) {
                selected.remove_at(i);
                selected.ghosts.retain(|g| g != uid);
                Response::Expunge(i + 1).write(&mut out);
            }
        }
        self.conn.send(&out).await?;
        Ok(())
    }
}

/// Flags equal as sets (case-insensitive).
pub fn same_flags(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.iter().any(|y| x.eq_ignore_ascii_case(y)))
}
