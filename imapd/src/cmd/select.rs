//! SELECT and EXAMINE (RFC 3501 §6.3.1, §6.3.2), with CONDSTORE (RFC 7162 §3.1.8, §3.1.2.1)
//! and QRESYNC (RFC 7162 §3.2.5: the changes and expunges a client's cache missed, answered
//! within the SELECT; §3.2.11: `[CLOSED]` when a SELECT replaces the selected mailbox).

use crate::session::{CmdResult, Code, Reply, Selected, Session, State, Status};
use crate::wire::parse::QresyncParams;
use crate::wire::response::Response;
use crate::wire::sequence::{Bound, SequenceSet};

/// Untagged responses are handed to the connection in pieces of about this size, so a resync
/// of a large mailbox is never built whole in memory.
const FLUSH_AT: usize = 64 * 1024;

/// The system flags (RFC 3501 §2.3.2).
pub const SYSTEM_FLAGS: [&str; 5] = ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"];

impl Session {
    pub(crate) async fn cmd_select(
        &mut self,
        raw: &str,
        read_only: bool,
        condstore: bool,
        qresync: Option<QresyncParams>,
    ) -> CmdResult {
        let user = self.user()?;
        let offered = self.ctx.config.imap.condstore;
        if (condstore || qresync.is_some()) && !offered {
            return Ok(Reply::bad("CONDSTORE is not offered"));
        }
        // RFC 7162 §3.2.5: the QRESYNC parameter without ENABLE QRESYNC is BAD.
        if qresync.is_some() && !self.qresync {
            return Ok(Reply::bad("ENABLE QRESYNC first"));
        }
        // Selecting (even unsuccessfully) leaves the current mailbox without expunging.
        if let State::Selected { user, .. } = &self.state {
            self.state = State::Authenticated { user: user.clone() };
            // RFC 7162 §3.2.11: a server offering QRESYNC marks where the old mailbox's
            // responses end, whether or not the client enabled it.
            if offered {
                self.respond(Response::Untagged {
                    status: Status::Ok,
                    code: Some(&Code::Closed),
                    text: "previous mailbox closed",
                })
                .await?;
            }
        }
        if condstore {
            // SELECT (CONDSTORE) announces HIGHESTMODSEQ itself, below.
            self.condstore = true;
        }
        let name = self.mailbox_in(raw)?;
        let mailbox = self.ctx.mail.mailbox(user.id, &name).await?;
        let states = self.ctx.mail.message_states(user.id, mailbox.id).await?;

        let mut keywords: Vec<String> = Vec::new();
        for state in &states {
            for flag in &state.flags {
                if !flag.starts_with('\\') && !keywords.iter().any(|k| k.eq_ignore_ascii_case(flag)) {
                    keywords.push(flag.clone());
                }
            }
        }
        let mut flags: Vec<String> = SYSTEM_FLAGS.iter().map(|s| s.to_string()).collect();
        flags.extend(keywords.iter().cloned());
        let first_unseen = states
            .iter()
            .position(|s| !s.flags.iter().any(|f| f == "\\Seen"))
            .map(|i| i + 1);

        // The view first: RECENT counts what this SELECT claims (RFC 3501 §2.3.2).
        let mut uids = Vec::with_capacity(states.len());
        let mut all_flags = Vec::with_capacity(states.len());
        let mut modseqs = Vec::with_capacity(states.len());
        for state in states {
            uids.push(state.uid);
            all_flags.push(state.flags);
            modseqs.push(state.modseq);
        }
        let known_modseq = mailbox.highestmodseq;
        let mut selected = Box::new(Selected {
            mailbox,
            read_only,
            uids,
            flags: all_flags,
            modseqs,
            ghosts: Vec::new(),
            known_modseq,
            recent: Vec::new(),
            keywords,
            saved: Vec::new(),
            live: Vec::new(),
            // Just read: the sync after SELECT would only re-read what this SELECT reported.
            current: true,
            // The mailbox row and the messages are two reads: the first sync vouches.
            verified: None,
        });
        // EXAMINE claims nothing (`claim` leaves read-only views alone), but RFC 3501 §6.3.2
        // has it report RECENT like SELECT would: the messages no session has claimed yet.
        // IMAP4rev2 has no \Recent (RFC 9051 Appendix E): such a session claims nothing, so the
        // messages stay \Recent for an IMAP4rev1 session.
        if !self.rev2 {
            crate::session::recent::claim(&self.ctx.mail, user.id, &mut selected).await?;
        }
        let recent = if self.rev2 {
            0
        } else if read_only {
            let unclaimed = self.ctx.mail.mailbox_status(user.id, &name).await?.recent;
            (unclaimed as usize).min(selected.uids.len())
        } else {
            selected.recent.len()
        };
        let mailbox = &selected.mailbox;
        // RFC 3501 §6.3.1: FLAGS, EXISTS and RECENT, then the status codes a client relies on.
        let mut out = Response::Flags(&flags).to_bytes();
        let ok = |out: &mut Vec<u8>, code: Code, text: &str| {
            Response::Untagged {
                status: Status::Ok,
                code: Some(&code),
                text,
            }
            .write(out)
        };
        if read_only {
            ok(&mut out, Code::PermanentFlags(Vec::new()), "read-only");
        } else {
            let mut permanent = flags.clone();
            permanent.push("\\*".into());
            ok(&mut out, Code::PermanentFlags(permanent), "flags stored");
        }
        Response::Exists(selected.uids.len()).write(&mut out);
        if self.rev2 {
            // RFC 9051 §6.3.2: IMAP4rev2 has the mailbox's LIST response instead of RECENT and
            // UNSEEN (Appendix E: both are gone from SELECT).
            self.select_list_line(user.id, &selected.mailbox, &mut out).await?;
        } else {
            Response::Recent(recent).write(&mut out);
            if let Some(seq) = first_unseen {
                ok(&mut out, Code::Unseen(seq), "first unseen");
            }
        }
        ok(&mut out, Code::UidValidity(mailbox.uidvalidity), "UIDs valid");
        ok(&mut out, Code::UidNext(mailbox.uidnext), "predicted next UID");
        if offered {
            // RFC 7162 §3.1.2.1: every successful SELECT of a server offering CONDSTORE.
            ok(&mut out, Code::HighestModSeq(mailbox.highestmodseq.max(1)), "highest");
        }
        // RFC 7162 §3.2.5: with the UIDVALIDITY the client's cache has (else it resyncs in
        // full and is told nothing more), what changed since its MODSEQ.
        if let Some(q) = qresync.filter(|q| q.uidvalidity == mailbox.uidvalidity) {
            self.conn.send(&out).await?;
            out.clear();
            self.resync(&selected, &q, &mut out).await?;
        }
        self.conn.send(&out).await?;
        self.state = State::Selected { user, selected };
        Ok(if read_only {
            Reply::ok("EXAMINE completed").code(Code::ReadOnly)
        } else {
            Reply::ok("SELECT completed").code(Code::ReadWrite)
        })
    }

    /// RFC 7162 §3.2.5.2: `* VANISHED (EARLIER)` with the known UIDs expunged since the
    /// client's MODSEQ, then `* n FETCH (UID FLAGS MODSEQ)` for each known message changed
    /// since (RFC 7162 §3.2.5 example: VANISHED first).
    async fn resync(
        &mut self,
        selected: &Selected,
        q: &QresyncParams,
        out: &mut Vec<u8>,
    ) -> Result<(), crate::session::Failure> {
        let highest_uid = selected.mailbox.uidnext.saturating_sub(1);
        // Without known-uids the client may know any UID up to UIDNEXT.
        let within = q
            .known_uids
            .clone()
            .unwrap_or_else(|| SequenceSet(vec![(Bound::Num(1), Bound::Star)]))
            .ranges(highest_uid);
        // RFC 7162 §3.2.5.2: a (message number, UID) pair of the client's that still holds
        // means no message below that UID went away since; the largest such UID bounds what
        // has to be named when the store forgot the exact expunges.
        let above = q
            .seq_match
            .iter()
            .filter(|&&(seq, uid)| seq >= 1 && selected.uids.get(seq as usize - 1) == Some(&uid))
            .map(|&(_, uid)| uid)
            .max()
            .unwrap_or(0);
        let vanished = self
            .vanished_earlier(selected.mailbox.id, q.modseq, &within, &selected.uids, above)
            .await?;
        if !vanished.is_empty() {
            Response::Vanished {
                earlier: true,
                uids: &vanished,
            }
            .write(out);
        }
        for (i, &uid) in selected.uids.iter().enumerate() {
            if selected.modseqs[i] <= q.modseq || (q.known_uids.is_some() && !within.contains(uid)) {
                continue;
            }
            Response::FlagsFetch {
                seq: i + 1,
                uid,
                flags: Some(&selected.flags[i]),
                recent: selected.is_recent(uid),
                modseq: Some(selected.modseqs[i]),
            }
            .write(out);
            if out.len() >= FLUSH_AT {
                self.conn.send(out).await?;
                out.clear();
            }
        }
        Ok(())
    }
}
