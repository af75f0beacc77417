//! FETCH and UID FETCH (RFC 3501 §6.4.5, §6.4.8), with CHANGEDSINCE and MODSEQ (RFC 7162
//! §3.1.4). Metadata comes from the database in batches; the body file is read only for
//! sections that need it; responses are written message by message (never built whole).

use std::collections::VecDeque;

use shared::blobs::BlobId;
use shared::mailstore::{FlagOp, StoreError, StoredMessage, parsed};

use crate::fetch::{binary, mime};
use crate::session::{CmdResult, Code, Failure, Reply, Selected, Session, State};
use crate::wire::fetch_response::{BodyName, FetchAttr, FetchResponse};
use crate::wire::parse::{FetchItem, Section, SectionText, part_spec};
use crate::wire::response::Response;
use crate::wire::sequence::SequenceSet;

/// Messages whose metadata is read in one query.
const BATCH: usize = 250;
/// The first batch is smaller: it is read before anything is written (with the sync's
/// statement), so its size is the wait for the first response; the next, full one is read
/// while it is written.
const FIRST_BATCH: usize = 100;
/// Batches read ahead of the one being written, each on a pooled connection of its own: with
/// one, a batch's responses often waited for its read (issue #12).
const READS_AHEAD: usize = 2;
/// FETCH responses from the session's view alone written into one buffer before it is sent.
const VIEW_BATCH: usize = 1000;

impl Session {
    pub(crate) async fn cmd_fetch(
        &mut self,
        uid: bool,
        set: &SequenceSet,
        items: Vec<FetchItem>,
        changed_since: Option<u64>,
        vanished: bool,
    ) -> CmdResult {
        // RFC 7162 §3.2.6: the VANISHED modifier only after ENABLE QRESYNC.
        if vanished && !self.qresync {
            return Ok(Reply::bad("ENABLE QRESYNC first"));
        }
        // Fresh flags first (untagged updates are allowed here; EXPUNGE only for UID FETCH),
        // read with the first batch of rows as the view names them now: one round trip.
        let ahead = self.rows_ahead(uid, set, &items);
        // The rows may be kept already (`MailStore::cached_light`); a view the change clock
        // vouches for needs no sync: then the FETCH is answered without PostgreSQL. Otherwise
        // the sync reads the rows that are not kept with it; kept rows of messages the sync
        // finds expunged are dropped with the batch (`ReadAhead::rows_for`).
        let kept = if ahead.is_empty() {
            Some(Vec::new())
        } else {
            self.ctx.mail.cached_light(self.selected()?.mailbox.id, &ahead)
        };
        let rows = match kept {
            Some(rows) if self.view_is_current() => rows,
            Some(rows) => {
                self.sync_reading(uid, &[]).await?;
                rows
            }
            None => self.sync_reading(uid, &ahead).await?,
        };
        // The view is now the mailbox as of this command: unless the FETCH sets \Seen in a way
        // that does not follow on (advance_known), the sync at its end would find nothing more
        // than changes made concurrently with it.
        self.selected_mut()?.current = true;
        let read = ReadAhead { uids: ahead, rows };
        self.fetch_read(uid, set, items, changed_since, vanished, read).await
    }

    /// The UIDs of the first batch a FETCH reads with `MailStore::fetch_light`, as the view
    /// resolves `set` before the sync (none when the items need the parse or no stored data,
    /// or the set does not resolve yet). The sync only appends to the view or, for UID FETCH,
    /// drops expunged UIDs, so the batch after it is usually the same or a part of it
    /// ([`ReadAhead::rows_for`] checks).
    fn rows_ahead(&self, uid: bool, set: &SequenceSet, items: &[FetchItem]) -> Vec<u32> {
        if !needs_stored(items) || needs_parse(items) {
            return Vec::new();
        }
        match self.resolve(uid, set) {
            Ok(targets) => targets.iter().take(FIRST_BATCH).map(|&(_, uid)| uid).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// FETCH against the view as it is, without the sync first: for a FETCH the server sends
    /// unasked from within a sync (a live search's `UPDATE (fetch-att)`, RFC 5465 §7).
    pub(crate) async fn fetch_synced(
        &mut self,
        uid: bool,
        set: &SequenceSet,
        items: Vec<FetchItem>,
        changed_since: Option<u64>,
        vanished: bool,
    ) -> CmdResult {
        self.fetch_read(uid, set, items, changed_since, vanished, ReadAhead::default())
            .await
    }

    /// FETCH against the view as it is; `read` holds rows read already with the sync.
    async fn fetch_read(
        &mut self,
        uid: bool,
        set: &SequenceSet,
        mut items: Vec<FetchItem>,
        changed_since: Option<u64>,
        vanished: bool,
        mut read: ReadAhead,
    ) -> CmdResult {
        if changed_since.is_some() || items.contains(&FetchItem::ModSeq) {
            self.enable_condstore().await?;
        }
        if uid && !items.contains(&FetchItem::Uid) {
            items.insert(0, FetchItem::Uid);
        }
        if changed_since.is_some() && !items.contains(&FetchItem::ModSeq) {
            items.push(FetchItem::ModSeq);
        }
        let mut targets = self.resolve(uid, set)?;
        let (user_id, mailbox_id, read_only) = {
            let State::Selected { user, selected } = &self.state else {
                return Ok(Reply::bad("no mailbox selected"));
            };
            (user.id, selected.mailbox.id, selected.read_only)
        };
        if let Some(since) = changed_since {
            if vanished {
                // RFC 7162 §3.2.6: the UIDs of the set expunged since, before the FETCHes.
                let selected = self.selected()?;
                let largest = selected.max_uid().max(selected.mailbox.uidnext.saturating_sub(1));
                let within = set.ranges(largest);
                let present = selected.uids.clone();
                let gone = self.vanished_earlier(mailbox_id, since, &within, &present, 0).await?;
                if !gone.is_empty() {
                    self.respond(Response::Vanished {
                        earlier: true,
                        uids: &gone,
                    })
                    .await?;
                }
            }
            let selected = self.selected()?;
            targets.retain(|(seq, _)| selected.modseqs[*seq as usize - 1] > since);
        }
        let needs_stored = needs_stored(&items);
        let needs_parse = needs_parse(&items);
        // The whole message is streamed from its file; only parts need it in memory.
        let needs_file = items.iter().any(is_whole_message);
        let needs_body = items.iter().any(|i| match i {
            FetchItem::Rfc822Text => true,
            FetchItem::Section(s) => !s.part.is_empty() || matches!(s.text, SectionText::Text),
            FetchItem::Binary(_) | FetchItem::BinarySize(_) => true,
            _ => false,
        });
        let wants_structure = items
            .iter()
            .any(|i| matches!(i, FetchItem::Body | FetchItem::BodyStructure));
        let sets_seen = !read_only
            && items.iter().any(|i| match i {
                FetchItem::Rfc822 | FetchItem::Rfc822Text => true,
                FetchItem::Section(s) => !s.peek,
                // RFC 3516 §4.1: BINARY sets \Seen like BODY; BINARY.SIZE does not.
                FetchItem::Binary(b) => !b.peek,
                _ => false,
            });
        // RFC 7162 §3.1: with CONDSTORE on, a FETCH that sets \Seen carries UID and MODSEQ.
        if sets_seen && self.condstore {
            if !items.contains(&FetchItem::Uid) {
                items.insert(0, FetchItem::Uid);
            }
            if !items.contains(&FetchItem::ModSeq) {
                items.push(FetchItem::ModSeq);
            }
        }

        if !needs_stored && !sets_seen {
            // UID, FLAGS and MODSEQ only (a client's flag resync, `UID FETCH 1:* (UID FLAGS)`):
            // all of it is in the session's view, so no database read and no buffers per
            // message, only one per VIEW_BATCH responses.
            let mut out = Vec::new();
            for chunk in targets.chunks(VIEW_BATCH) {
                out.clear();
                let selected = self.selected()?;
                for &(seq, msg_uid) in chunk {
                    view_response(&mut out, selected, seq, msg_uid, &items);
                }
                self.conn.send(&out).await?;
            }
            return Ok(Reply::ok(if uid { "UID FETCH completed" } else { "FETCH completed" }));
        }
        // Each item's section spec as the responses name it (`HEADER.FIELDS (From To ...)`),
        // written once per command instead of once per message.
        let specs: Vec<String> = items.iter().map(item_spec).collect();
        // The next batch's rows are read (on another pooled connection) while this batch's
        // responses are written, so PostgreSQL and this session work at the same time instead of
        // in turn (issue #12: the header download of 2000 messages waited for 7 reads in turn).
        //
        // A batch whose rows the header-row cache holds every one of is taken from it instead
        // (`MailStore::cached_light`; the rows of a message never change). Unlike the first
        // batch's (`cmd_fetch`), this needs no current view: the view was synced when the
        // command began, and a message expunged since by another session may still be answered
        // with the data it had (RFC 2180 §4.1.1), as the client's view still holds it.
        let store = self.ctx.mail.clone();
        let read_rows = |uids: Vec<u32>| {
            if !needs_parse && let Some(rows) = store.cached_light(mailbox_id, &uids) {
                return RowRead::Kept(rows);
            }
            let mail = store.clone();
            RowRead::Reading(tokio::spawn(async move {
                if needs_parse {
                    mail.fetch(user_id, mailbox_id, &uids).await
                } else {
                    mail.fetch_light(user_id, mailbox_id, &uids).await
                }
            }))
        };
        let chunks = batches(&targets);
        // Reads of the batches from the current one on, in order (at most READS_AHEAD ahead),
        // and the first batch not asked for yet (batch 0 is read with the sync or here).
        let mut reading: VecDeque<RowRead> = VecDeque::new();
        let mut next_to_read = 1;
        for (c, &chunk) in chunks.iter().enumerate() {
            let stored: Vec<StoredMessage> = if needs_stored {
                let uids: Vec<u32> = chunk.iter().map(|c| c.1).collect();
                let rows = match (read.rows_for(&uids), reading.pop_front()) {
                    (Some(rows), _) => rows,
                    (None, Some(RowRead::Kept(rows))) => rows,
                    (None, Some(RowRead::Reading(reading))) => reading
                        .await
                        .map_err(|e| std::io::Error::other(format!("row reader failed: {e}")))??,
                    // The first batch the sync's read did not bring: read here, not in a task.
                    (None, None) if needs_parse => self.ctx.mail.fetch(user_id, mailbox_id, &uids).await?,
                    (None, None) => match self.ctx.mail.cached_light(mailbox_id, &uids) {
                        Some(rows) => rows,
                        None => self.ctx.mail.fetch_light(user_id, mailbox_id, &uids).await?,
                    },
                };
                while next_to_read < chunks.len() && next_to_read <= c + READS_AHEAD {
                    reading.push_back(read_rows(chunks[next_to_read].iter().map(|c| c.1).collect()));
                    next_to_read += 1;
                }
                rows
            } else {
                Vec::new()
            };
            // RFC 3501 §6.4.5: fetching a body section sets \Seen.
            let mut newly_seen: Vec<u32> = Vec::new();
            if sets_seen {
                let unseen: Vec<u32> = {
                    let selected = self.selected()?;
                    chunk
                        .iter()
                        .filter(|(seq, _)| !selected.flags[*seq as usize - 1].iter().any(|f| f == "\\Seen"))
                        .map(|c| c.1)
                        .collect()
                };
                if !unseen.is_empty() {
                    let change = self
                        .ctx
                        .mail
                        .store_flags(user_id, mailbox_id, &unseen, FlagOp::Add, &["\\Seen".into()], None)
                        .await?;
                    let selected = self.selected_mut()?;
                    selected.advance_known(&change.changed);
                    for state in change.changed {
                        if let Some(seq) = selected.seq_of(state.uid) {
                            selected.flags[seq as usize - 1] = state.flags;
                            selected.modseqs[seq as usize - 1] = state.modseq;
                            newly_seen.push(state.uid);
                        }
                    }
                }
            }
            // The chunk's messages with their metadata, in UID order; one expunged meanwhile
            // is skipped. The rows stay where they were read (no copy per message).
            let mut rows: Vec<(u32, u32, Option<&StoredMessage>)> = Vec::with_capacity(chunk.len());
            let mut stored_iter = stored.iter().peekable();
            for &(seq, msg_uid) in chunk {
                if !needs_stored {
                    rows.push((seq, msg_uid, None));
                    continue;
                }
                while stored_iter.peek().is_some_and(|m| m.uid < msg_uid) {
                    stored_iter.next();
                }
                if let Some(m) = stored_iter.next_if(|m| m.uid == msg_uid) {
                    rows.push((seq, msg_uid, Some(m)));
                }
            }
            // Small message files are read whole, many per blocking task, the next group while
            // this one is written: one thread hand-off per group instead of four (open,
            // metadata, seek, read) per message. Large ones are streamed in pieces.
            let groups = if needs_file || needs_body {
                read_groups(&rows)
            } else {
                vec![ReadGroup {
                    range: 0..rows.len(),
                    whole: false,
                }]
            };
            let mut ahead = groups.first().and_then(|g| self.read_ahead(g, &rows));
            for (g, group) in groups.iter().enumerate() {
                let loaded = match ahead.take() {
                    Some(task) => Some(
                        task.await
                            .map_err(|e| std::io::Error::other(format!("file reader failed: {e}")))?,
                    ),
                    None => None,
                };
                ahead = groups.get(g + 1).and_then(|next| self.read_ahead(next, &rows));
                let mut loaded = loaded.map(Vec::into_iter);
                for (seq, msg_uid, message) in &rows[group.range.clone()] {
                    let (seq, msg_uid) = (*seq, *msg_uid);
                    let whole = match loaded.as_mut().and_then(Iterator::next) {
                        Some(Ok(bytes)) => Some(bytes),
                        Some(Err(e)) => {
                            tracing::error!(uid = msg_uid, "reading message body: {e}");
                            return Ok(Reply::no("message body unavailable").code(Code::ServerBug));
                        }
                        None => None,
                    };
                    // A structure stored before the MIME model is recomputed from the body, so
                    // its part numbers are the ones BODY[section] uses.
                    let needs_body = needs_body
                        || (wants_structure
                            && message.as_ref().is_some_and(|m| m.body_structure.predates_mime_model()));
                    let body = match (message, needs_body, &whole) {
                        (Some(_), true, Some(bytes)) => Some(bytes.clone()),
                        (Some(m), true, None) => match self.ctx.blobs.read(&m.blob).await {
                            Ok(b) => Some(b),
                            Err(e) => {
                                tracing::error!(uid = msg_uid, "reading message body: {e}");
                                return Ok(Reply::no("message body unavailable").code(Code::ServerBug));
                            }
                        },
                        _ => None,
                    };
                    let mut file = match (message, needs_file, &whole) {
                        (Some(_), true, Some(bytes)) => Some((Source::Memory, bytes.len() as u64)),
                        (Some(m), true, None) => match self.ctx.blobs.open(&m.blob).await {
                            Ok(f) => {
                                let len = f.metadata().await.map(|md| md.len()).unwrap_or(m.size);
                                Some((Source::File(f), len))
                            }
                            Err(e) => {
                                tracing::error!(uid = msg_uid, "opening message body: {e}");
                                return Ok(Reply::no("message body unavailable").code(Code::ServerBug));
                            }
                        },
                        _ => None,
                    };
                    let add_flags = newly_seen.contains(&msg_uid) && !items.contains(&FetchItem::Flags);
                    let pieces = self.fetch_one(
                        seq,
                        msg_uid,
                        &items,
                        &specs,
                        *message,
                        body.as_deref(),
                        file.as_ref().map(|f| f.1),
                        add_flags,
                    )?;
                    for piece in pieces {
                        match piece {
                            Piece::Bytes(bytes) => self.conn.send(&bytes).await?,
                            Piece::File { start, len } => match file.as_mut() {
                                Some((Source::File(f), _)) => self.stream_file(f, start, len).await?,
                                Some((Source::Memory, _)) => {
                                    let bytes = whole.as_deref().unwrap_or_default();
                                    // start + len is within the file: fetch_one clamps it.
                                    let span = bytes.get(start as usize..(start + len) as usize).ok_or_else(|| {
                                        Failure::Io(std::io::Error::other("message span out of range"))
                                    })?;
                                    self.conn.send(span).await?;
                                }
                                None => {}
                            },
                        }
                    }
                }
            }
            // The client reads one batch while the next is written (the last goes out with
            // the tagged reply).
            if c + 1 < chunks.len() {
                self.conn.flush().await?;
            }
        }
        Ok(Reply::ok(if uid { "UID FETCH completed" } else { "FETCH completed" }))
    }

    /// Start reading a group of small message files whole on the blocking pool (None for a
    /// group that is streamed instead).
    fn read_ahead(
        &self,
        group: &ReadGroup,
        rows: &[(u32, u32, Option<&StoredMessage>)],
    ) -> Option<tokio::task::JoinHandle<Vec<std::io::Result<Vec<u8>>>>> {
        if !group.whole {
            return None;
        }
        let blobs: Vec<(BlobId, u64)> = rows[group.range.clone()]
            .iter()
            .filter_map(|(_, _, m)| m.as_ref().map(|m| (m.blob.clone(), m.size)))
            .collect();
        let store = self.ctx.blobs.clone();
        Some(tokio::task::spawn_blocking(move || {
            blobs
                .iter()
                .map(|(blob, size)| store.read_known_size_blocking(blob, *size))
                .collect()
        }))
    }

    /// Copy `len` bytes of a message file from `start` to the client, in chunks.
    async fn stream_file(&mut self, file: &mut tokio::fs::File, start: u64, len: u64) -> Result<(), Failure> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        file.seek(std::io::SeekFrom::Start(start)).await?;
        let mut remaining = len;
        let mut buf = vec![0u8; 64 * 1024];
        while remaining > 0 {
            let want = (remaining as usize).min(buf.len());
            let n = file.read(&mut buf[..want]).await?;
            if n == 0 {
                // The literal length was promised: a shrunken file cannot be answered.
                return Err(Failure::Io(std::io::Error::other("message file shorter than its size")));
            }
            self.conn.send(&buf[..n]).await?;
            remaining -= n as u64;
        }
        Ok(())
    }

    /// One message's FETCH response, as bytes and spans of the message file (`file_len`
    /// long) to stream in between.
    #[allow(clippy::too_many_arguments)]
    fn fetch_one(
        &self,
        seq: u32,
        uid: u32,
        items: &[FetchItem],
        specs: &[String],
        message: Option<&StoredMessage>,
        body: Option<&[u8]>,
        file_len: Option<u64>,
        add_flags: bool,
    ) -> Result<Vec<Piece>, Failure> {
        let mut pieces = Vec::new();
        let selected = self.selected()?;
        let i = seq as usize - 1;
        let recent = selected.is_recent(uid);
        let flags = FetchAttr::Flags {
            flags: &selected.flags[i],
            recent,
        };
        // RFC 3501 §7.4.2: `* n FETCH (...)`, written by wire/fetch_response.rs; the literal
        // of a whole message is only announced there and streamed from its file in between.
        // Room for a typical response (flags, size, a header's fields) in one allocation.
        let mut out = Vec::with_capacity(1024);
        let mut response = FetchResponse::open(&mut out, seq);
        let missing = || Failure::Reply(Reply::no("message metadata unavailable").code(Code::ServerBug));
        for (item, spec) in items.iter().zip(specs) {
            match item {
                FetchItem::Uid => response.attr(&mut out, FetchAttr::Uid(uid)),
                FetchItem::Flags => response.attr(&mut out, flags),
                FetchItem::ModSeq => response.attr(&mut out, FetchAttr::ModSeq(selected.modseqs[i])),
                FetchItem::InternalDate => {
                    let m = message.ok_or_else(missing)?;
                    response.attr(&mut out, FetchAttr::InternalDate(m.internal_date));
                }
                FetchItem::Rfc822Size => {
                    let m = message.ok_or_else(missing)?;
                    response.attr(&mut out, FetchAttr::Rfc822Size(m.size));
                }
                FetchItem::Envelope => {
                    let m = message.ok_or_else(missing)?;
                    let attr = FetchAttr::Envelope {
                        envelope: &m.envelope,
                        utf8: self.utf8,
                    };
                    response.attr(&mut out, attr);
                }
                FetchItem::Body | FetchItem::BodyStructure => {
                    let m = message.ok_or_else(missing)?;
                    let recomputed = match body {
                        Some(raw) if m.body_structure.predates_mime_model() => Some(parsed::parse(raw).body_structure),
                        _ => None,
                    };
                    let attr = FetchAttr::Structure {
                        structure: recomputed.as_ref().unwrap_or(&m.body_structure),
                        extended: *item == FetchItem::BodyStructure,
                        utf8: self.utf8,
                    };
                    response.attr(&mut out, attr);
                }
                FetchItem::Rfc822 => {
                    let len = file_len.ok_or_else(missing)?;
                    let attr = FetchAttr::LiteralHeader {
                        name: BodyName::Rfc822,
                        len,
                    };
                    response.attr(&mut out, attr);
                    pieces.push(Piece::Bytes(std::mem::take(&mut out)));
                    pieces.push(Piece::File { start: 0, len });
                }
                FetchItem::Rfc822Header => {
                    let attr = FetchAttr::Literal {
                        name: BodyName::Rfc822Header,
                        data: &message.ok_or_else(missing)?.header,
                    };
                    response.attr(&mut out, attr);
                }
                FetchItem::Rfc822Text => {
                    let raw = body.ok_or_else(missing)?;
                    let attr = FetchAttr::Literal {
                        name: BodyName::Rfc822Text,
                        data: mime::split(raw).body,
                    };
                    response.attr(&mut out, attr);
                }
                FetchItem::Section(section) if is_whole_message(item) => {
                    let total = file_len.ok_or_else(missing)?;
                    let (start, len) = match section.partial {
                        Some((start, len)) => {
                            let s = u64::from(start).min(total);
                            (s, u64::from(len).min(total - s))
                        }
                        None => (0, total),
                    };
                    let attr = FetchAttr::LiteralHeader {
                        name: BodyName::Section {
                            spec: "",
                            origin: section.partial.map(|(origin, _)| origin),
                        },
                        len,
                    };
                    response.attr(&mut out, attr);
                    pieces.push(Piece::Bytes(std::mem::take(&mut out)));
                    pieces.push(Piece::File { start, len });
                }
                FetchItem::Section(section) => {
                    let data = section_data(section, message.ok_or_else(missing)?, body).unwrap_or_default();
                    let (origin, data) = partial_window(&data, section.partial);
                    let attr = FetchAttr::Literal {
                        name: BodyName::Section { spec, origin },
                        data,
                    };
                    response.attr(&mut out, attr);
                }
                FetchItem::Binary(section) => {
                    let data = decoded(uid, body.ok_or_else(missing)?, &section.part)?;
                    let (origin, data) = partial_window(&data, section.partial);
                    let attr = FetchAttr::Literal {
                        name: BodyName::Binary { spec, origin },
                        data,
                    };
                    response.attr(&mut out, attr);
                }
                FetchItem::BinarySize(part) => {
                    let data = decoded(uid, body.ok_or_else(missing)?, part)?;
                    let attr = FetchAttr::BinarySize {
                        spec,
                        size: data.len() as u64,
                    };
                    response.attr(&mut out, attr);
                }
            }
        }
        if add_flags {
            response.attr(&mut out, flags);
        }
        response.close(&mut out);
        pieces.push(Piece::Bytes(out));
        Ok(pieces)
    }
}

/// One message's FETCH response of the items the session's view holds (UID, FLAGS, MODSEQ:
/// the caller checked `items` has no other), appended to `out` (RFC 3501 §7.4.2).
/// The section spec a FETCH response names `item` by (empty for items without one).
fn item_spec(item: &FetchItem) -> String {
    match item {
        FetchItem::Section(section) => section.spec(),
        FetchItem::Binary(section) => section.spec(),
        FetchItem::BinarySize(part) => part_spec(part),
        _ => String::new(),
    }
}

fn view_response(out: &mut Vec<u8>, selected: &Selected, seq: u32, uid: u32, items: &[FetchItem]) {
    let i = seq as usize - 1;
    let mut response = FetchResponse::open(out, seq);
    for item in items {
        match item {
            FetchItem::Uid => response.attr(out, FetchAttr::Uid(uid)),
            FetchItem::Flags => response.attr(
                out,
                FetchAttr::Flags {
                    flags: &selected.flags[i],
                    recent: selected.is_recent(uid),
                },
            ),
            FetchItem::ModSeq => response.attr(out, FetchAttr::ModSeq(selected.modseqs[i])),
            _ => {}
        }
    }
    response.close(out);
}

/// Message files up to this size are read whole (in groups); larger ones are streamed.
const SMALL_FILE: u64 = 64 * 1024;
/// Bytes of small files one group reads at once (64 messages of 4 KiB). A session holds at
/// most two groups (the one being written and the next), so a FETCH costs at most 512 KiB of
/// memory, and 500 connections fetching at once 250 MiB.
const GROUP_BYTES: u64 = 256 * 1024;

/// Where a message's bytes come from while a FETCH response is written.
enum Source {
    /// Read whole with its group.
    Memory,
    /// Opened and streamed in pieces (a large message).
    File(tokio::fs::File),
}

/// Consecutive messages of a FETCH chunk read together.
struct ReadGroup {
    range: std::ops::Range<usize>,
    /// Read whole in one blocking task (small files), or streamed one by one.
    whole: bool,
}

/// Split the chunk into groups of small files (at most GROUP_BYTES together, by their stored
/// sizes) and single large files.
fn read_groups(rows: &[(u32, u32, Option<&StoredMessage>)]) -> Vec<ReadGroup> {
    let mut groups: Vec<ReadGroup> = Vec::new();
    let mut bytes = 0u64;
    for (i, (_, _, message)) in rows.iter().enumerate() {
        let size = message.as_ref().map_or(0, |m| m.size);
        let small = message.is_some() && size <= SMALL_FILE;
        match groups.last_mut() {
            Some(g) if small && g.whole && bytes + size <= GROUP_BYTES => {
                g.range.end = i + 1;
                bytes += size;
            }
            _ => {
                groups.push(ReadGroup {
                    range: i..i + 1,
                    whole: small,
                });
                bytes = size;
            }
        }
    }
    groups
}

/// Part of a FETCH response: bytes, or a span of the message file streamed from disk.
enum Piece {
    Bytes(Vec<u8>),
    File { start: u64, len: u64 },
}

/// The bytes of `<start.len>` (RFC 3501 §6.4.5, RFC 3516 §4.1) within `data`, cut at its end,
/// with the origin octet the response names; the whole of `data` without a partial.
fn partial_window(data: &[u8], partial: Option<(u32, u32)>) -> (Option<u32>, &[u8]) {
    match partial {
        Some((start, len)) => {
            let s = (start as usize).min(data.len());
            let e = s.saturating_add(len as usize).min(data.len());
            (Some(start), &data[s..e])
        }
        None => (None, data),
    }
}

/// Whether any item needs the message's stored data (not only the view's UID, FLAGS, MODSEQ).
fn needs_stored(items: &[FetchItem]) -> bool {
    items
        .iter()
        .any(|i| !matches!(i, FetchItem::Flags | FetchItem::Uid | FetchItem::ModSeq))
}

/// Whether any item needs the stored parse: ENVELOPE and BODYSTRUCTURE do; Thunderbird's header
/// download (sizes, flags, header fields) does not, and skips decoding it.
fn needs_parse(items: &[FetchItem]) -> bool {
    items
        .iter()
        .any(|i| matches!(i, FetchItem::Envelope | FetchItem::Body | FetchItem::BodyStructure))
}

/// Rows read without their parse together with the sync ([`Session::sync_reading`]): those
/// found of `uids` (ascending), in UID order, as of the moment the sync read the changes.
#[derive(Default)]
struct ReadAhead {
    uids: Vec<u32>,
    rows: Vec<StoredMessage>,
}

/// The rows of one batch after the current: taken from the header-row cache, or being read.
enum RowRead {
    Kept(Vec<StoredMessage>),
    Reading(tokio::task::JoinHandle<Result<Vec<StoredMessage>, StoreError>>),
}

impl ReadAhead {
    /// The rows of `batch` (ascending UIDs), taken out, when every UID of it was read ahead;
    /// `None` otherwise (a message the sync added to the view: the batch is read now). A UID
    /// read ahead without a row was expunged by then, as `fetch_light` would have found.
    fn rows_for(&mut self, batch: &[u32]) -> Option<Vec<StoredMessage>> {
        if self.uids.is_empty() || !batch.iter().all(|uid| self.uids.binary_search(uid).is_ok()) {
            return None;
        }
        self.uids.clear();
        let mut rows = std::mem::take(&mut self.rows);
        rows.retain(|m| batch.binary_search(&m.uid).is_ok());
        Some(rows)
    }
}

/// `targets` in the batches read one query each: [`FIRST_BATCH`], then [`BATCH`] at a time.
fn batches(targets: &[(u32, u32)]) -> Vec<&[(u32, u32)]> {
    let (first, rest) = targets.split_at(targets.len().min(FIRST_BATCH));
    std::iter::once(first)
        .filter(|f| !f.is_empty())
        .chain(rest.chunks(BATCH))
        .collect()
}

/// RFC822 and BODY[] (with or without a partial range): the whole message, streamed.
fn is_whole_message(item: &FetchItem) -> bool {
    match item {
        FetchItem::Rfc822 => true,
        FetchItem::Section(s) => s.part.is_empty() && s.text == SectionText::Full,
        _ => false,
    }
}

/// The decoded content of a BINARY section (RFC 3516 §4.1), empty for a part that does not
/// exist (as BODY[section] answers); a Content-Transfer-Encoding that cannot be decoded fails
/// the command with `NO [UNKNOWN-CTE]` (RFC 3516 §4.3).
fn decoded(uid: u32, raw: &[u8], part: &[u32]) -> Result<Vec<u8>, Failure> {
    match binary::section(raw, part) {
        Ok(data) => Ok(data.unwrap_or_default()),
        Err(e) => {
            tracing::info!(uid, part = %part_spec(part), "BINARY refused: {e}");
            let what = match part {
                [] => "the body".to_string(),
                _ => format!("part {}", part_spec(part)),
            };
            let text = format!("cannot decode {what} of UID {uid}: {e}");
            Err(Failure::Reply(Reply::no(text).code(Code::UnknownCte)))
        }
    }
}

/// A section's bytes: top-level headers from the stored header block, the rest from the body.
fn section_data(section: &Section, message: &StoredMessage, body: Option<&[u8]>) -> Option<Vec<u8>> {
    if section.part.is_empty() {
        match &section.text {
            SectionText::Header => return Some(message.header.clone()),
            SectionText::HeaderFields(names) => return Some(mime::filter_header(&message.header, names, true)),
            SectionText::HeaderFieldsNot(names) => {
                return Some(mime::filter_header(&message.header, names, false));
            }
            _ => {}
        }
    }
    mime::section(body?, &section.part, &section.text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_start_small_then_cover_every_target_once_in_order() {
        for n in [0, 1, FIRST_BATCH, FIRST_BATCH + 1, FIRST_BATCH + BATCH, 2000] {
            let targets: Vec<(u32, u32)> = (1..=n as u32).map(|i| (i, i * 2)).collect();
            let split = batches(&targets);
            assert_eq!(split.concat(), targets, "{n} targets");
            assert!(split.iter().all(|b| !b.is_empty()), "{n} targets");
            assert!(split.first().is_none_or(|b| b.len() <= FIRST_BATCH), "{n} targets");
            assert!(split.iter().all(|b| b.len() <= BATCH), "{n} targets");
        }
        assert_eq!(batches(&[(1, 1); 2000]).len(), 1 + (2000 - FIRST_BATCH).div_ceil(BATCH));
    }
}
