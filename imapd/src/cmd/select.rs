//! SELECT and EXAMINE (RFC 3501 §6.3.1, §6.3.2), with CONDSTORE (RFC 7162 §3.1.8, §3.1.2.1).

use crate::session::{CmdResult, Code, Reply, Selected, Session, State, Status};
use crate::wire::response::Response;

/// The system flags (RFC 3501 §2.3.2).
pub const SYSTEM_FLAGS: [&str; 5] = ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"];

impl Session {
    pub(crate) async fn cmd_select(&mut self, raw: &str, read_only: bool, condstore: bool) -> CmdResult {
        let user = self.user()?;
        // Selecting (even unsuccessfully) leaves the current mailbox without expunging.
        if let State::Selected { user, .. } = &self.state {
            self.state = State::Authenticated { user: user.clone() };
        }
        if condstore {
            if !self.ctx.config.imap.condstore {
                return Ok(Reply::bad("CONDSTORE is not offered"));
            }
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
        });
        // EXAMINE claims nothing (`claim` leaves read-only views alone), but RFC 3501 §6.3.2
        // has it report RECENT like SELECT would: the messages no session has claimed yet.
        crate::session::recent::claim(&self.ctx.mail, user.id, &mut selected).await?;
        let recent = if read_only {
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
        Response::Recent(recent).write(&mut out);
        if let Some(seq) = first_unseen {
            ok(&mut out, Code::Unseen(seq), "first unseen");
        }
        ok(&mut out, Code::UidValidity(mailbox.uidvalidity), "UIDs valid");
        ok(&mut out, Code::UidNext(mailbox.uidnext), "predicted next UID");
        if self.ctx.config.imap.condstore {
            // RFC 7162 §3.1.2.1: every successful SELECT of a server offering CONDSTORE.
            ok(&mut out, Code::HighestModSeq(mailbox.highestmodseq.max(1)), "highest");
        }
        self.conn.send(&out).await?;
        self.state = State::Selected { user, selected };
        Ok(if read_only {
            Reply::ok("EXAMINE completed").code(Code::ReadOnly)
        } else {
            Reply::ok("SELECT completed").code(Code::ReadWrite)
        })
    }
}
