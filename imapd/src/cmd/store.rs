//! STORE and UID STORE (RFC 3501 §6.4.6), with UNCHANGEDSINCE (RFC 7162 §3.2).

use std::collections::HashSet;

use shared::mailstore::{FlagOp, normalize_flags};

use crate::session::{CmdResult, Code, Reply, Session, State};
use crate::wire::parse::StoreOp;
use crate::wire::response::Response;
use crate::wire::sequence::{SequenceSet, compact};

impl Session {
    pub(crate) async fn cmd_store(
        &mut self,
        uid: bool,
        set: &SequenceSet,
        op: StoreOp,
        silent: bool,
        flags: &[String],
        unchanged_since: Option<u64>,
    ) -> CmdResult {
        if unchanged_since.is_some() {
            self.enable_condstore().await?;
        }
        let targets = self.resolve(uid, set)?;
        let State::Selected { user, selected } = &self.state else {
            return Ok(Reply::bad("no mailbox selected"));
        };
        if selected.read_only {
            return Ok(Reply::no("mailbox is read-only").code(Code::ReadOnly));
        }
        let (user_id, mailbox_id) = (user.id, selected.mailbox.id);
        let flags = normalize_flags(flags);
        let op = match op {
            StoreOp::Add => FlagOp::Add,
            StoreOp::Remove => FlagOp::Remove,
            StoreOp::Replace => FlagOp::Replace,
        };
        let uids: Vec<u32> = targets.iter().map(|t| t.1).collect();
        let clock_before = self.clock_reading();
        let change = self
            .ctx
            .mail
            .store_flags(user_id, mailbox_id, &uids, op, &flags, unchanged_since)
            .await?;
        let condstore = self.condstore;
        let selected = self.selected_mut()?;
        // Sets, not lists: `STORE 1:* +FLAGS` looks each target up in both (was quadratic).
        let mut changed_uids = HashSet::with_capacity(change.changed.len());
        for state in &change.changed {
            if let Some(seq) = selected.seq_of(state.uid) {
                selected.flags[seq as usize - 1] = state.flags.clone();
                selected.modseqs[seq as usize - 1] = state.modseq;
                changed_uids.insert(state.uid);
            }
        }
        selected.advance_known(&change.changed);
        self.own_change_ticked(clock_before);
        let selected = self.selected_mut()?;
        let modified: HashSet<u32> = change.modified.iter().copied().collect();
        let mut out = Vec::new();
        selected.announce_keywords(change.changed.iter().flat_map(|s| s.flags.iter()), &mut out);
        for &(seq, msg_uid) in &targets {
            if modified.contains(&msg_uid) {
                continue;
            }
            let i = seq as usize - 1;
            if silent {
                // RFC 7162 §3.2: with CONDSTORE, .SILENT still reports the new MODSEQ.
                if condstore && changed_uids.contains(&msg_uid) {
                    Response::FlagsFetch {
                        seq: seq as usize,
                        uid: msg_uid,
                        flags: None,
                        recent: false,
                        modseq: Some(selected.modseqs[i]),
                    }
                    .write(&mut out);
                }
                continue;
            }
            Response::FlagsFetch {
                seq: seq as usize,
                uid: msg_uid,
                flags: Some(&selected.flags[i]),
                recent: selected.is_recent(msg_uid),
                modseq: condstore.then_some(selected.modseqs[i]),
            }
            .write(&mut out);
        }
        self.conn.send(&out).await?;
        if !change.modified.is_empty() {
            let selected = self.selected()?;
            let mut numbers: Vec<u32> = if uid {
                change.modified.clone()
            } else {
                change.modified.iter().filter_map(|u| selected.seq_of(*u)).collect()
            };
            numbers.sort_unstable();
            return Ok(Reply::ok("some messages were changed meanwhile").code(Code::Modified(compact(&numbers))));
        }
        Ok(Reply::ok(if uid { "UID STORE completed" } else { "STORE completed" }))
    }
}
