//! APPEND (RFC 3501 §6.3.11) and MULTIAPPEND (RFC 3502) with APPENDUID (RFC 4315 §3). The
//! quota was reserved for each message when its literal was announced (see the connection
//! loop), so an over-quota message is refused before its bytes cross the network. A CATENATE
//! message (RFC 4469) is put together first, from its text literals and the sections its IMAP
//! URLs name, and reserved once its size is known.

use chrono::Utc;
use shared::auth::AuthedUser;
use shared::mailstore::{Appended, NewMessage, SelectedView, StoreError, normalize_flags};
use shared::quota;

use crate::fetch::mime;
use crate::session::{CmdResult, Code, Failure, Reply, Session, State, recent};
use crate::wire::imap_url;
use crate::wire::parse::{AppendMessage, CatPart, section_spec};
use crate::wire::response::Response;
use crate::wire::sequence::compact;

impl Session {
    pub(crate) async fn cmd_append(&mut self, raw: &str, messages: Vec<AppendMessage>) -> CmdResult {
        let user = self.user()?;
        let name = self.mailbox_in(raw)?;
        let mut messages = messages;
        let catenated = messages.iter().any(|m| m.catenate.is_some());
        if catenated {
            // RFC 4469 §5: each CATENATE message is built before anything is stored; one bad
            // URL or one too large refuses the whole command (RFC 3502 §3).
            for m in &mut messages {
                if let Some(parts) = m.catenate.take() {
                    m.message = match self.catenate(&user, parts).await? {
                        Ok(bytes) => bytes,
                        Err(refusal) => return Ok(refusal),
                    };
                }
            }
        }
        // RFC 3502 §3: one message refused refuses them all, so every check comes first.
        if messages.iter().any(|m| m.message.is_empty()) {
            tracing::info!(peer = %self.peer, "APPEND refused: empty message");
            return Ok(Reply::no("empty message"));
        }
        if !catenated && messages.len() == 1 {
            // One message (every APPEND but a MULTIAPPEND and CATENATE): the store's
            // single-message path, in the fewest round trips: the mailbox is found by name in
            // the statement that takes its UID, and an APPEND into the selected mailbox
            // advances the view from that statement's answer (`SelectedView`).
            let Some(AppendMessage {
                message, flags, date, ..
            }) = messages.pop()
            else {
                return Ok(Reply::bad("APPEND without a message"));
            };
            // Reserved when its literal was announced (session::reserve_for_append); the store
            // commits it, or releases it if its transaction fails. Any other (the literals and
            // the message disagree) goes back after the command.
            let reservation = (!self.reservations.is_empty()).then(|| self.reservations.remove(0));
            let view = self.view_for_append(&name);
            let clock_before = self.clock_reading();
            let internal_date = date.map(|d| d.with_timezone(&Utc)).unwrap_or_else(Utc::now);
            let one = match self
                .ctx
                .mail
                .append_named(user.id, &name, view, message, &flags, internal_date, reservation)
                .await
            {
                Ok(one) => one,
                Err(StoreError::NoSuchMailbox) => return Ok(Reply::no("no such mailbox").code(Code::TryCreate)),
                Err(e) => return Err(e.into()),
            };
            if view.is_some() {
                // Without a view (a live search or NOTIFY to tell), the sync does it all.
                self.take_in_own_append(&one, &flags).await?;
                self.own_change_ticked(clock_before);
            }
            return Ok(Reply::ok("APPEND completed").code(Code::AppendUid {
                uidvalidity: one.uidvalidity,
                uids: one.uid.to_string(),
            }));
        }
        let mailbox = match self.ctx.mail.mailbox(user.id, &name).await {
            Ok(m) => m,
            Err(StoreError::NoSuchMailbox) => return Ok(Reply::no("no such mailbox").code(Code::TryCreate)),
            Err(e) => return Err(e.into()),
        };
        if catenated {
            // The literals' reservations were for text parts, not messages: reserve each
            // message's real size instead (RFC 4469 §5 with the quota, RFC 9208 §4.1).
            if let Some(refusal) = self.reserve_messages(&user, &messages).await {
                return Ok(refusal);
            }
        }
        // Reserved in message order, one per message literal (session::reserve_for_append).
        // The store consumes them: committed with the rows, or released if the transaction fails.
        let mut reservations = std::mem::take(&mut self.reservations).into_iter();
        let batch: Vec<NewMessage> = messages
            .into_iter()
            .map(|m| NewMessage {
                raw: m.message,
                flags: m.flags,
                internal_date: m.date.map(|d| d.with_timezone(&Utc)).unwrap_or_else(Utc::now),
                reservation: reservations.next(),
            })
            .collect();
        // None are left over unless the command's literals and messages disagree; give them back.
        self.reservations = reservations.collect();
        let appended = self.ctx.mail.append_batch(user.id, mailbox.id, batch).await?;
        let uids: Vec<u32> = appended.iter().map(|a| a.uid).collect();
        Ok(Reply::ok("APPEND completed").code(Code::AppendUid {
            uidvalidity: appended.first().map_or(mailbox.uidvalidity, |a| a.uidvalidity),
            uids: compact(&uids),
        }))
    }
}

impl Session {
    /// The view to hand the store when `name` is the selected mailbox and the view can take the
    /// new message in from the store's answer alone: no live search (RFC 5267) or NOTIFY
    /// (RFC 5465) that the sync would have to tell. \Recent is claimed for a read-write
    /// IMAP4rev1 view only (RFC 9051 Appendix E: IMAP4rev2 has none).
    fn view_for_append(&self, name: &str) -> Option<SelectedView> {
        let State::Selected { selected, .. } = &self.state else {
            return None;
        };
        if selected.mailbox.name != shared::mailstore::normalize_mailbox_name(name)
            || !selected.live.is_empty()
            || self.notify.is_some()
        {
            return None;
        }
        Some(SelectedView {
            mailbox_id: selected.mailbox.id,
            known_modseq: selected.known_modseq,
            claim_recent: !selected.read_only && !self.rev2,
        })
    }

    /// After this session's own APPEND into its selected mailbox: when the message took the
    /// MODSEQ right after the one the view knew, nobody else changed the mailbox in between, so
    /// the view takes the message in as the store answered it, with the \Recent the same
    /// statement claimed, and the client hears of it now (RFC 3501 §6.3.11: "the server SHOULD
    /// notify the client immediately via an untagged EXISTS response"; §7.3.2 RECENT with it).
    /// The view is then current and the sync after the command reads nothing
    /// ([`Session::view_is_current`]). Otherwise the sync does all of this as for anyone's
    /// message.
    async fn take_in_own_append(&mut self, appended: &Appended, flags: &[String]) -> Result<(), Failure> {
        let rev2 = self.rev2;
        let State::Selected { selected, .. } = &mut self.state else {
            return Ok(());
        };
        if selected.mailbox.id != appended.mailbox_id
            || selected.known_modseq.checked_add(1) != Some(appended.modseq)
            || appended.uid <= selected.max_uid()
        {
            return Ok(());
        }
        let flags = normalize_flags(flags);
        let mut out = Vec::new();
        selected.announce_keywords(flags.iter(), &mut out);
        selected.uids.push(appended.uid);
        selected.flags.push(flags);
        selected.modseqs.push(appended.modseq);
        selected.known_modseq = appended.modseq;
        selected.current = true;
        if let Some(from) = appended.recent_from {
            recent::take_won(selected, from);
        }
        Response::Exists(selected.uids.len()).write(&mut out);
        if !rev2 {
            Response::Recent(selected.recent.len()).write(&mut out);
        }
        self.conn.send(&out).await?;
        Ok(())
    }

    /// A CATENATE message's bytes (RFC 4469 §5): its text parts and the sections its URLs name,
    /// in order; `Err(reply)` refuses the command: `NO [BADURL url]` for a URL that is invalid
    /// or names nothing of this user's (§6), `NO [TOOBIG]` past `max_literal_size` (§5).
    async fn catenate(&self, user: &AuthedUser, parts: Vec<CatPart>) -> Result<Result<Vec<u8>, Reply>, Failure> {
        let limit = self.ctx.config.imap.max_literal_size;
        let mut message = Vec::new();
        for part in parts {
            let bytes = match part {
                CatPart::Text(text) => text,
                CatPart::Url(url) => match self.url_content(user, &url).await? {
                    Ok(bytes) => bytes,
                    Err(why) => {
                        tracing::info!(peer = %self.peer, user_id = user.id, url, "CATENATE refused: {why}");
                        return Ok(Err(Reply::no(format!("bad URL: {why}")).code(Code::BadUrl(url))));
                    }
                },
            };
            message.extend_from_slice(&bytes);
            if message.len() as u64 > limit {
                tracing::info!(peer = %self.peer, user_id = user.id, "CATENATE refused: over {limit} octets");
                return Ok(Err(Reply::no("the message would be too large").code(Code::TooBig)));
            }
        }
        Ok(Ok(message))
    }

    /// The bytes an IMAP URL (RFC 5092) names, read only from `user`'s own mailboxes: a
    /// relative URL is this session's; an absolute one must name this user.
    async fn url_content(&self, user: &AuthedUser, url: &str) -> Result<Result<Vec<u8>, &'static str>, Failure> {
        let url = match imap_url::parse(url) {
            Ok(url) => url,
            Err(why) => return Ok(Err(why)),
        };
        if url
            .user
            .as_ref()
            .is_some_and(|u| !u.eq_ignore_ascii_case(&user.address))
        {
            return Ok(Err("the URL names another user"));
        }
        let mailbox = match self.ctx.mail.mailbox(user.id, &url.mailbox).await {
            Ok(m) => m,
            Err(StoreError::NoSuchMailbox) => return Ok(Err("no such mailbox")),
            Err(e) => return Err(e.into()),
        };
        if url.uidvalidity.is_some_and(|v| v != mailbox.uidvalidity) {
            return Ok(Err("UIDVALIDITY does not match"));
        }
        let stored = self.ctx.mail.fetch_light(user.id, mailbox.id, &[url.uid]).await?;
        let Some(stored) = stored.into_iter().find(|m| m.uid == url.uid) else {
            return Ok(Err("no such message"));
        };
        let raw = match self.ctx.blobs.read(&stored.blob).await {
            Ok(raw) => raw,
            Err(e) => {
                tracing::error!(uid = url.uid, "reading message body for CATENATE: {e}");
                return Err(Reply::no("message body unavailable").code(Code::ServerBug).into());
            }
        };
        let content = match &url.section {
            None => raw,
            Some(spec) => {
                let Ok((part, text)) = section_spec(spec.as_bytes()) else {
                    return Ok(Err("not a section spec"));
                };
                // The BODY[section] reader (RFC 5092 §3.5: the section as in a FETCH).
                match mime::section(&raw, &part, &text) {
                    Some(bytes) => bytes,
                    None => return Ok(Err("no such section")),
                }
            }
        };
        Ok(Ok(match url.partial {
            None => content,
            Some((offset, length)) => {
                let start = (offset as usize).min(content.len());
                let end = match length {
                    Some(l) => start.saturating_add(l as usize).min(content.len()),
                    None => content.len(),
                };
                content[start..end].to_vec()
            }
        }))
    }

    /// Replace the reservations taken while the literals were read by one per message, of its
    /// size; `Some(reply)` when the quota (or the disk) cannot hold them.
    async fn reserve_messages(&mut self, user: &AuthedUser, messages: &[AppendMessage]) -> Option<Reply> {
        let stale: Vec<i64> = self.reservations.drain(..).map(|r| r.id).collect();
        if let Err(e) = quota::release_ids(&self.ctx.db, &stale).await {
            tracing::warn!("releasing quota reservations: {e}");
        }
        for m in messages {
            match quota::reserve(&self.ctx.db, user.id, m.message.len() as u64).await {
                Ok(reservation) => self.reservations.push(reservation),
                Err(e) => {
                    // The ones taken so far go back after the command (the session releases
                    // what is left in `reservations`).
                    return Some(match e {
                        quota::QuotaError::Exceeded { .. } => {
                            tracing::info!(peer = %self.peer, user_id = user.id, "CATENATE refused: over quota");
                            Reply::no("message does not fit in the quota").code(Code::OverQuota)
                        }
                        e if e.is_disk_full() => {
                            tracing::warn!(peer = %self.peer, user_id = user.id, "CATENATE refused: {e}");
                            Reply::no("Not enough disk space").code(Code::OverQuota)
                        }
                        e => crate::session::store_error(StoreError::Quota(e)),
                    });
                }
            }
        }
        None
    }
}
