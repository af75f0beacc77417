//! NOTIFY (RFC 5465): what a session asked to hear of, and turning the shared change events
//! (shared::events) into responses: `* STATUS` for other mailboxes (§5.1-5.3), EXISTS,
//! EXPUNGE / VANISHED, flag FETCHes and the asked-for FETCH attributes for the selected one
//! (§5.1-5.3), `* LIST` for created, deleted, renamed (§5.4) and (un)subscribed (§5.5)
//! mailboxes, `* METADATA mailbox entry...` for changed METADATA entries of a watched mailbox
//! (§5.6) or of the server (§5.7). In NOTIFY mode these are sent at any time, also between commands (§3.1); the
//! connection loop and IDLE hand every event here.
//!
//! Only the session's own user's events are looked at (every event names its user). The queue
//! of events not yet handled is the process's broadcast channel (shared::events, bounded): a
//! session that falls behind it gets `* OK [NOTIFICATIONOVERFLOW]` and NOTIFY is off (§5.8).

use std::collections::{HashMap, VecDeque};

use shared::events::Event;
use shared::mailstore::{DELIMITER, MailboxStatus, StoreError, normalize_mailbox_name};
use tokio::sync::broadcast::error::RecvError;

use super::{Code, Failure, Reply, Session, State, Status};
use crate::wire::parse::{CommandBody, FetchItem, NotifyEvent, NotifyFilter, NotifySet, StatusItem};
use crate::wire::response::Response;
use crate::wire::sequence::SequenceSet;

/// The events this server reports (RFC 5465 §3.1: BADEVENT lists them).
pub const SUPPORTED_EVENTS: &[&str] = &[
    "MessageNew",
    "MessageExpunge",
    "FlagChange",
    "MailboxName",
    "SubscriptionChange",
    // Required with METADATA advertised (§5.6, §5.7).
    "MailboxMetadataChange",
    "ServerMetadataChange",
];

/// Own changes remembered so their echo is not reported (§5 SHOULD), at most this many, for
/// at most `OWN_WINDOW` (the echo comes within milliseconds; a command that changed nothing,
/// e.g. SUBSCRIBE of a subscribed name, sends no event and must not hide a later one).
const MAX_OWN: usize = 32;
const OWN_WINDOW: std::time::Duration = std::time::Duration::from_secs(5);
/// STATUS values remembered per mailbox; past this the memory is dropped (mailboxes created
/// and deleted in a loop must not grow it).
const MAX_KNOWN: usize = 4096;

/// What to tell about the selected mailbox (RFC 5465 §6.1).
#[derive(Debug, Clone)]
struct SelectedSpec {
    /// SELECTED-DELAYED: expunges only where EXPUNGE may be sent (RFC 3501 §7.4.1).
    delayed: bool,
    /// FlagChange was asked for.
    flags: bool,
    /// MessageNew's fetch-atts (§5.2), sent after EXISTS.
    fetch: Vec<FetchItem>,
}

/// What one event group asks about the mailboxes its filter names.
#[derive(Debug, Clone, Copy, Default)]
struct Wants {
    /// MessageNew and MessageExpunge (§5 makes them one).
    messages: bool,
    flags: bool,
    names: bool,
    subscriptions: bool,
    /// MailboxMetadataChange (§5.6).
    mailbox_metadata: bool,
    /// ServerMetadataChange (§5.7): about no mailbox, so whichever group names it.
    server_metadata: bool,
}

impl Wants {
    fn or(self, other: Wants) -> Wants {
        Wants {
            messages: self.messages || other.messages,
            flags: self.flags || other.flags,
            names: self.names || other.names,
            subscriptions: self.subscriptions || other.subscriptions,
            mailbox_metadata: self.mailbox_metadata || other.mailbox_metadata,
            server_metadata: self.server_metadata || other.server_metadata,
        }
    }
}

/// Which mailboxes a group watches, with names already decoded and normalized.
#[derive(Debug, Clone)]
enum Filter {
    /// `personal` and `inboxes` (§6.3 allows treating inboxes as personal).
    All,
    Subscribed,
    Subtree(Vec<String>),
    Mailboxes(Vec<String>),
}

impl Filter {
    fn matches(&self, name: &str, subscribed: &[String]) -> bool {
        match self {
            Filter::All => true,
            Filter::Subscribed => subscribed.iter().any(|s| s == name),
            Filter::Subtree(roots) => roots
                .iter()
                .any(|r| name == r || (name.starts_with(r.as_str()) && name[r.len()..].starts_with(DELIMITER))),
            Filter::Mailboxes(names) => names.iter().any(|n| n == name),
        }
    }
}

/// The STATUS values last told (or read) for a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Known {
    messages: u64,
    uidnext: u32,
    uidvalidity: u32,
    unseen: u64,
    highestmodseq: u64,
}

impl Known {
    fn of(status: &MailboxStatus) -> Known {
        Known {
            messages: status.messages,
            uidnext: status.mailbox.uidnext,
            uidvalidity: status.mailbox.uidvalidity,
            unseen: status.unseen,
            highestmodseq: status.mailbox.highestmodseq,
        }
    }
}

/// A session's NOTIFY SET, in force until NOTIFY NONE, the next NOTIFY SET or an overflow.
#[derive(Debug)]
pub struct Notify {
    selected: Option<SelectedSpec>,
    groups: Vec<(Filter, Wants)>,
    known: HashMap<i64, Known>,
    /// Events this session's own commands caused, not reported back (§5), with when.
    own: VecDeque<(tokio::time::Instant, Event)>,
}

impl Notify {
    fn wants(&self, name: &str, subscribed: &[String]) -> Wants {
        self.groups
            .iter()
            .filter(|(filter, _)| filter.matches(name, subscribed))
            .fold(Wants::default(), |acc, (_, w)| acc.or(*w))
    }

    /// Whether any group asks for ServerMetadataChange (§5.7: not about a mailbox).
    fn wants_server_metadata(&self) -> bool {
        self.groups.iter().any(|(_, w)| w.server_metadata)
    }

    fn needs_subscriptions(&self) -> bool {
        self.groups.iter().any(|(f, _)| matches!(f, Filter::Subscribed))
    }
}

impl Session {
    /// NOTIFY SET (RFC 5465 §3.1): replace what the session hears of; with STATUS, a STATUS
    /// response for each watched mailbox first. The implicit NOOP (§3.1) is the sync every
    /// command ends with.
    pub(crate) async fn notify_set(&mut self, set: NotifySet) -> Result<Reply, Failure> {
        let user = self.user()?;
        let unsupported = set
            .groups
            .iter()
            .flat_map(|g| g.events.iter())
            .any(|e| matches!(e, NotifyEvent::AnnotationChange | NotifyEvent::Other(_)));
        if unsupported {
            // §3.1: NO (not BAD), naming every event the server does support.
            return Ok(Reply::no("unsupported NOTIFY event").code(Code::BadEvent(SUPPORTED_EVENTS.to_vec())));
        }
        let mut selected = None;
        let mut groups = Vec::new();
        for group in set.groups {
            let mut wants = Wants::default();
            let mut fetch = Vec::new();
            for event in group.events {
                match event {
                    NotifyEvent::MessageNew(atts) => {
                        wants.messages = true;
                        fetch = atts;
                    }
                    NotifyEvent::MessageExpunge => wants.messages = true,
                    NotifyEvent::FlagChange => wants.flags = true,
                    NotifyEvent::MailboxName => wants.names = true,
                    NotifyEvent::SubscriptionChange => wants.subscriptions = true,
                    NotifyEvent::MailboxMetadataChange => wants.mailbox_metadata = true,
                    NotifyEvent::ServerMetadataChange => wants.server_metadata = true,
                    NotifyEvent::AnnotationChange | NotifyEvent::Other(_) => {}
                }
            }
            let names = |session: &Session, raw: Vec<String>| -> Vec<String> {
                // §3.1: a name that cannot refer to a mailbox is ignored.
                raw.iter()
                    .filter_map(|r| session.mailbox_in(r).ok())
                    .map(|n| normalize_mailbox_name(&n))
                    .collect()
            };
            let filter = match group.filter {
                NotifyFilter::Selected | NotifyFilter::SelectedDelayed => {
                    // §3.1: SELECTED NONE is the same as no SELECTED group.
                    if wants.messages {
                        selected = Some(SelectedSpec {
                            delayed: group.filter == NotifyFilter::SelectedDelayed,
                            flags: wants.flags,
                            fetch,
                        });
                    }
                    continue;
                }
                NotifyFilter::Inboxes | NotifyFilter::Personal => Filter::All,
                NotifyFilter::Subscribed => Filter::Subscribed,
                NotifyFilter::Subtree(raw) => Filter::Subtree(names(self, raw)),
                NotifyFilter::Mailboxes(raw) => Filter::Mailboxes(names(self, raw)),
            };
            groups.push((filter, wants));
        }
        // What happened before now is covered by the STATUS responses below and the sync after
        // the command (§3.1's implicit NOOP).
        while !matches!(
            self.events.try_recv(),
            Err(tokio::sync::broadcast::error::TryRecvError::Empty
                | tokio::sync::broadcast::error::TryRecvError::Closed)
        ) {}
        let mut notify = Notify {
            selected,
            groups,
            known: HashMap::new(),
            own: VecDeque::new(),
        };
        // Read the watched mailboxes' counts now: later events are told against them (and
        // with STATUS, they are told now).
        let selected_id = match &self.state {
            State::Selected { selected, .. } => Some(selected.mailbox.id),
            _ => None,
        };
        let subscribed = if notify.needs_subscriptions() {
            self.ctx.mail.subscriptions(user.id).await?
        } else {
            Vec::new()
        };
        let mut out = Vec::new();
        for mailbox in self.ctx.mail.list_mailboxes(user.id).await? {
            // §3.1: only mailboxes other than the selected one get a STATUS.
            if Some(mailbox.id) == selected_id {
                continue;
            }
            let wants = notify.wants(&mailbox.name, &subscribed);
            if !wants.messages && !wants.flags {
                continue;
            }
            let status = match self.ctx.mail.mailbox_status(user.id, &mailbox.name).await {
                Ok(s) => s,
                Err(StoreError::NoSuchMailbox) => continue,
                Err(e) => return Err(e.into()),
            };
            let now = Known::of(&status);
            if set.status {
                // §3.1: MESSAGES, UIDNEXT and UIDVALIDITY for MessageNew; UIDVALIDITY and
                // HIGHESTMODSEQ for FlagChange when the server offers CONDSTORE.
                let modseq = self.condstore || (wants.flags && self.ctx.config.imap.condstore);
                let mut items = vec![
                    (StatusItem::Messages, now.messages),
                    (StatusItem::UidNext, u64::from(now.uidnext)),
                    (StatusItem::UidValidity, u64::from(now.uidvalidity)),
                    (StatusItem::Unseen, now.unseen),
                ];
                if modseq {
                    items.push((StatusItem::HighestModSeq, now.highestmodseq));
                }
                let name = self.mailbox_out(&mailbox.name);
                Response::Status {
                    name: &name,
                    items: &items,
                }
                .write(&mut out);
            }
            if notify.known.len() < MAX_KNOWN {
                notify.known.insert(mailbox.id, now);
            }
        }
        self.conn.send(&out).await?;
        self.notify = Some(notify);
        Ok(Reply::ok("NOTIFY completed"))
    }

    /// The events a command of this session will cause, so their echo is not told back
    /// (RFC 5465 §5: "SHOULD omit notifying the client if the event is caused by this client").
    pub(crate) fn own_events(&self, body: &CommandBody) -> Vec<Event> {
        let (Some(_), Some(user)) = (&self.notify, self.state.user()) else {
            return Vec::new();
        };
        let user_id = user.id;
        let name = |raw: &str| self.mailbox_in(raw).ok().map(|n| normalize_mailbox_name(&n));
        let event = match body {
            CommandBody::Create { mailbox, .. } => name(mailbox).map(|name| Event::MailboxCreated { user_id, name }),
            CommandBody::Delete { mailbox } => name(mailbox).map(|name| Event::MailboxDeleted { user_id, name }),
            CommandBody::Rename { from, to } => match (name(from), name(to)) {
                (Some(from), Some(to)) => Some(Event::MailboxRenamed { user_id, from, to }),
                _ => None,
            },
            CommandBody::Subscribe { mailbox } | CommandBody::Unsubscribe { mailbox } => {
                name(mailbox).map(|name| Event::Subscription {
                    user_id,
                    name,
                    subscribed: matches!(body, CommandBody::Subscribe { .. }),
                })
            }
            _ => None,
        };
        event.into_iter().collect()
    }

    /// Remember the events of a command that succeeded (see [`Session::own_events`]).
    pub(crate) fn remember_own(&mut self, events: Vec<Event>) {
        if let Some(notify) = self.notify.as_mut() {
            for event in events {
                if notify.own.len() >= MAX_OWN {
                    notify.own.pop_front();
                }
                notify.own.push_back((tokio::time::Instant::now(), event));
            }
        }
    }

    /// Between commands in NOTIFY mode (RFC 5465 §3.1: "the client listens for event
    /// notifications all the time"): send notifications as events come, until the client sends
    /// something, the stream ends, `deadline` passes or the server shuts down; the caller then
    /// reads the command (and sees the end, the timeout or the shutdown itself).
    pub(crate) async fn notify_between_commands(&mut self, deadline: tokio::time::Instant) -> Result<(), Failure> {
        let shutdown = self.shutdown.clone();
        while self.notify.is_some() && !self.conn.has_buffered_input() {
            tokio::select! {
                input = self.conn.wait_input() => {
                    input?;
                    return Ok(());
                }
                event = self.events.recv() => {
                    if matches!(event, Err(RecvError::Closed)) {
                        // No more events: wait for the client alone.
                        return Ok(());
                    }
                    self.notify_event(event, false).await?;
                    self.conn.flush().await?;
                }
                _ = tokio::time::sleep_until(deadline) => return Ok(()),
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
        Ok(())
    }

    /// One event in NOTIFY mode; `in_idle`: during IDLE (EXPUNGE is allowed there).
    pub(crate) async fn notify_event(&mut self, event: Result<Event, RecvError>, in_idle: bool) -> Result<(), Failure> {
        let Some(user_id) = self.state.user().map(|u| u.id) else {
            return Ok(());
        };
        let event = match event {
            Ok(event) => event,
            Err(RecvError::Lagged(missed)) => return self.notification_overflow(missed, in_idle).await,
            Err(RecvError::Closed) => return Ok(()),
        };
        // Users never hear of each other's mailboxes.
        if event.user_id() != Some(user_id) {
            return Ok(());
        }
        let Some(notify) = self.notify.as_mut() else {
            return Ok(());
        };
        notify.own.retain(|(at, _)| at.elapsed() < OWN_WINDOW);
        if let Some(i) = notify.own.iter().position(|(_, own)| own == &event) {
            notify.own.remove(i);
            return Ok(());
        }
        match event {
            Event::Mailbox { mailbox_id, .. } => {
                let selected_id = match &self.state {
                    State::Selected { selected, .. } => Some(selected.mailbox.id),
                    _ => None,
                };
                if selected_id == Some(mailbox_id) {
                    self.notify_selected(in_idle).await
                } else {
                    self.notify_status(user_id, mailbox_id).await
                }
            }
            Event::MailboxCreated { name, .. } | Event::MailboxDeleted { name, .. } => {
                // §5.4: the mailbox and its direct parent are affected.
                let parent = name.rsplit_once(DELIMITER).map(|(p, _)| p.to_string());
                self.notify_list(user_id, &name, None, |w| w.names).await?;
                if let Some(parent) = parent {
                    self.notify_list(user_id, &parent, None, |w| w.names).await?;
                }
                Ok(())
            }
            Event::MailboxRenamed { from, to, .. } => {
                // §5.4: one LIST for the new name with OLDNAME, none for the children.
                self.notify_list(user_id, &to, Some(&from), |w| w.names).await
            }
            Event::Subscription { name, .. } => self.notify_list(user_id, &name, None, |w| w.subscriptions).await,
            Event::Metadata {
                mailbox_id, entries, ..
            } => self.notify_metadata(user_id, mailbox_id, &entries).await,
            Event::Queue | Event::QuotaLimit { .. } => Ok(()),
        }
    }

    /// RFC 5465 §5.8: too many events went by unread; NOTIFY is off (as after NOTIFY NONE).
    async fn notification_overflow(&mut self, missed: u64, in_idle: bool) -> Result<(), Failure> {
        if self.notify.take().is_none() {
            return Ok(());
        }
        tracing::info!(peer = %self.peer, missed, "NOTIFY: session fell behind the events, notifications off");
        self.respond(Response::Untagged {
            status: Status::Ok,
            code: Some(&Code::NotificationOverflow),
            text: "too many changes at once: notifications are off, NOTIFY SET again to resume",
        })
        .await?;
        // The selected mailbox may have changed in what was missed: catch up as a command would.
        if matches!(self.state, State::Selected { .. }) {
            self.sync(in_idle).await?;
        }
        Ok(())
    }

    /// IDLE begins in NOTIFY mode: what the selected mailbox's view missed, if a SELECTED
    /// group asks for it (RFC 5465 §4: IDLE sends exactly the events NOTIFY asked for).
    pub(crate) async fn notify_idle_start(&mut self) -> Result<(), Failure> {
        if matches!(self.state, State::Selected { .. }) {
            self.notify_selected(true).await?;
        }
        Ok(())
    }

    /// A change in the selected mailbox (RFC 5465 §5.1-5.3, §6.1): EXISTS with the asked-for
    /// FETCH, flag FETCHes when FlagChange was asked, EXPUNGE / VANISHED at once with SELECTED
    /// and only in IDLE with SELECTED-DELAYED.
    async fn notify_selected(&mut self, in_idle: bool) -> Result<(), Failure> {
        let Some(spec) = self.notify.as_ref().and_then(|n| n.selected.clone()) else {
            // §3.1: no SELECTED group, no message events for the selected mailbox; the next
            // command's end tells them as usual.
            return Ok(());
        };
        if !spec.flags {
            // Only new and expunged messages were asked for: a change that brings no UID past
            // the view's and takes none of the view's away is a flag change; it waits for a
            // command.
            let State::Selected { user, selected } = &self.state else {
                return Ok(());
            };
            let (user_id, mailbox_id) = (user.id, selected.mailbox.id);
            let Some(changes) = super::sync::changes_of_view(&self.ctx.mail, user_id, mailbox_id, selected).await?
            else {
                return Ok(());
            };
            let max_uid = selected.max_uid();
            let arrived = changes.changed.iter().any(|s| s.uid > max_uid);
            let removed = match &changes.expunged {
                Some(uids) => uids
                    .iter()
                    .any(|uid| selected.uids.binary_search(uid).is_ok() && !selected.ghosts.contains(uid)),
                // The removal record does not reach back to the view: the sync compares.
                None => true,
            };
            if !arrived && !removed {
                return Ok(());
            }
        }
        let expunge_ok = in_idle || !spec.delayed;
        self.sync_telling_new(expunge_ok, &spec.fetch, None).await
    }

    /// The sync at the end of a command: as always, and in NOTIFY mode with MessageNew
    /// fetch-atts for the selected mailbox, a FETCH for each message that came from elsewhere
    /// (§5.2: not for this session's own APPEND, COPY or MOVE, named in `reply`'s code).
    pub(crate) async fn sync_after_command(&mut self, expunge_ok: bool, reply: &Reply) -> Result<(), Failure> {
        let fetch = match self.notify.as_ref().and_then(|n| n.selected.as_ref()) {
            Some(spec) if !spec.fetch.is_empty() => spec.fetch.clone(),
            _ => return self.sync(expunge_ok).await,
        };
        let own_uids = match (&reply.code, &self.state) {
            (Some(Code::AppendUid { uidvalidity, uids }), State::Selected { selected, .. })
            | (
                Some(Code::CopyUid {
                    uidvalidity,
                    destination: uids,
                    ..
                }),
                State::Selected { selected, .. },
            ) if *uidvalidity == selected.mailbox.uidvalidity => SequenceSet::parse(uids.as_bytes()),
            _ => None,
        };
        self.sync_telling_new(expunge_ok, &fetch, own_uids.as_ref()).await
    }

    /// Sync the view; then FETCH `fetch` for the messages that joined it, but the UIDs `own`.
    async fn sync_telling_new(
        &mut self,
        expunge_ok: bool,
        fetch: &[FetchItem],
        own: Option<&SequenceSet>,
    ) -> Result<(), Failure> {
        let before = match &self.state {
            State::Selected { selected, .. } => selected.max_uid(),
            _ => return Ok(()),
        };
        self.sync(expunge_ok).await?;
        if fetch.is_empty() {
            return Ok(());
        }
        let seqs: Vec<u32> = match &self.state {
            State::Selected { selected, .. } => selected
                .uids
                .iter()
                .enumerate()
                .filter(|(_, uid)| **uid > before && !own.is_some_and(|set| set.contains(**uid, u32::MAX)))
                .map(|(i, _)| i as u32 + 1)
                .collect(),
            _ => return Ok(()),
        };
        self.fetch_unasked(&seqs, fetch).await
    }

    /// FETCH `fetch` (and UID) for the messages `seqs` unasked: for NOTIFY's MessageNew
    /// (RFC 5465 §5.2) and a live search's `UPDATE (fetch-att)` (§7).
    pub(crate) async fn fetch_unasked(&mut self, seqs: &[u32], fetch: &[FetchItem]) -> Result<(), Failure> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut items = fetch.to_vec();
        // §5.2's example: the FETCH names the message by UID too.
        if !items.contains(&FetchItem::Uid) {
            items.insert(0, FetchItem::Uid);
        }
        // By sequence number: a FETCH by number sends no EXPUNGE (RFC 3501 §7.4.1), so a
        // SELECTED-DELAYED view keeps its numbers. Read as EXAMINE would: a notification never
        // sets \Seen (§5.2: the client SHOULD NOT ask for what does).
        let read_only = match &mut self.state {
            State::Selected { selected, .. } => std::mem::replace(&mut selected.read_only, true),
            _ => return Ok(()),
        };
        let result = self
            .fetch_synced(false, &SequenceSet::from_numbers(seqs), items, None, false)
            .await;
        if let State::Selected { selected, .. } = &mut self.state {
            selected.read_only = read_only;
        }
        match result {
            Ok(reply) if reply.status == Status::Ok => Ok(()),
            Ok(reply) | Err(Failure::Reply(reply)) => {
                tracing::warn!(peer = %self.peer, "NOTIFY fetch of new messages: {}", reply.text);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// A change in another mailbox (RFC 5465 §5.1-5.3): a STATUS response when what the
    /// client asked to hear of changed since it was last told.
    async fn notify_status(&mut self, user_id: i64, mailbox_id: i64) -> Result<(), Failure> {
        let mailbox = match self.ctx.mail.mailbox_by_id(user_id, mailbox_id).await {
            Ok(m) => m,
            Err(StoreError::NoSuchMailbox) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let subscribed = match &self.notify {
            Some(n) if n.needs_subscriptions() => self.ctx.mail.subscriptions(user_id).await?,
            _ => Vec::new(),
        };
        let Some(wants) = self.notify.as_ref().map(|n| n.wants(&mailbox.name, &subscribed)) else {
            return Ok(());
        };
        if !wants.messages && !wants.flags {
            return Ok(());
        }
        let status = match self.ctx.mail.mailbox_status(user_id, &mailbox.name).await {
            Ok(s) => s,
            Err(StoreError::NoSuchMailbox) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let now = Known::of(&status);
        let Some(notify) = self.notify.as_mut() else {
            return Ok(());
        };
        if notify.known.len() >= MAX_KNOWN {
            notify.known.clear();
        }
        let before = notify.known.insert(mailbox_id, now);
        let condstore = self.condstore;
        let messages_changed = before
            .is_none_or(|b| b.messages != now.messages || b.uidnext != now.uidnext || b.uidvalidity != now.uidvalidity);
        let flags_changed =
            before.is_none_or(|b| b.unseen != now.unseen || (condstore && b.highestmodseq != now.highestmodseq));
        let mut items = Vec::new();
        if wants.messages && messages_changed {
            // §5.2, §5.3: STATUS (UIDNEXT MESSAGES), HIGHESTMODSEQ after CONDSTORE; UNSEEN too,
            // as a new message is unseen.
            items.extend([
                (StatusItem::Messages, now.messages),
                (StatusItem::UidNext, u64::from(now.uidnext)),
                (StatusItem::Unseen, now.unseen),
            ]);
            // §5.1: a UIDVALIDITY the client may not know (a re-created mailbox) is told.
            if before.is_none_or(|b| b.uidvalidity != now.uidvalidity) {
                items.push((StatusItem::UidValidity, u64::from(now.uidvalidity)));
            }
        } else if wants.flags && flags_changed {
            // §5.1: UIDVALIDITY with HIGHESTMODSEQ after CONDSTORE, and UNSEEN (without
            // CONDSTORE a change that leaves UNSEEN alone is not told).
            items.extend([
                (StatusItem::UidValidity, u64::from(now.uidvalidity)),
                (StatusItem::Unseen, now.unseen),
            ]);
        }
        if items.is_empty() {
            return Ok(());
        }
        if condstore {
            items.push((StatusItem::HighestModSeq, now.highestmodseq));
        }
        let name = self.mailbox_out(&mailbox.name);
        self.respond(Response::Status {
            name: &name,
            items: &items,
        })
        .await?;
        Ok(())
    }

    /// Changed METADATA entries (RFC 5465 §5.6, §5.7): `* METADATA "" entry...` for the
    /// server's when a group asks for ServerMetadataChange, `* METADATA mailbox entry...` for a
    /// mailbox a MailboxMetadataChange group watches (RFC 5464 §4.4.2: names, no values; a
    /// removed entry is named too, §5.6 MUST).
    async fn notify_metadata(
        &mut self,
        user_id: i64,
        mailbox_id: Option<i64>,
        entries: &[String],
    ) -> Result<(), Failure> {
        if entries.is_empty() {
            return Ok(());
        }
        let mailbox = match mailbox_id {
            None => {
                if !self.notify.as_ref().is_some_and(Notify::wants_server_metadata) {
                    return Ok(());
                }
                b"\"\"".to_vec()
            }
            Some(id) => {
                let mailbox = match self.ctx.mail.mailbox_by_id(user_id, id).await {
                    Ok(m) => m,
                    // Deleted since: its entries went with it (and MailboxName tells that).
                    Err(StoreError::NoSuchMailbox) => return Ok(()),
                    Err(e) => return Err(e.into()),
                };
                let subscribed = match &self.notify {
                    Some(n) if n.needs_subscriptions() => self.ctx.mail.subscriptions(user_id).await?,
                    _ => Vec::new(),
                };
                let wants = self.notify.as_ref().map(|n| n.wants(&mailbox.name, &subscribed));
                if !wants.is_some_and(|w| w.mailbox_metadata) {
                    return Ok(());
                }
                self.mailbox_out(&mailbox.name)
            }
        };
        self.respond(Response::MetadataChanged {
            mailbox: &mailbox,
            entries,
        })
        .await?;
        Ok(())
    }

    /// `* LIST` for `name` as it is now (RFC 5465 §5.4, §5.5: attributes computed as LIST
    /// would, `\NonExistent` when there is no such mailbox, `\Subscribed` when subscribed),
    /// when a group watching it (or `old`) asks for what `asked` picks.
    async fn notify_list(
        &mut self,
        user_id: i64,
        name: &str,
        old: Option<&str>,
        asked: fn(&Wants) -> bool,
    ) -> Result<(), Failure> {
        let subscribed = self.ctx.mail.subscriptions(user_id).await?;
        let Some(notify) = self.notify.as_ref() else {
            return Ok(());
        };
        // An unsubscribed name still matches `subscribed` for the event that unsubscribed it.
        let mut with_name = subscribed.clone();
        with_name.push(name.to_string());
        if let Some(old) = old {
            with_name.push(old.to_string());
        }
        let wants = old
            .map(|o| notify.wants(o, &with_name))
            .unwrap_or_default()
            .or(notify.wants(name, &with_name));
        if !asked(&wants) {
            return Ok(());
        }
        let mailboxes = self.ctx.mail.list_mailboxes(user_id).await?;
        let this = mailboxes.iter().find(|m| m.name == name);
        let below = format!("{name}{DELIMITER}");
        let children = mailboxes.iter().any(|m| m.name.starts_with(&below));
        let mut attributes: Vec<&str> = Vec::new();
        if this.is_none() {
            // RFC 5258 §3: \NonExistent implies \Noselect.
            attributes.push("\\NonExistent");
        }
        attributes.push(if children { "\\HasChildren" } else { "\\HasNoChildren" });
        if let Some(special) = this.and_then(|m| m.special_use) {
            attributes.push(special.as_imap());
        }
        if subscribed.iter().any(|s| s == name) {
            attributes.push("\\Subscribed");
        }
        let mut out = Response::List {
            lsub: false,
            attributes: &attributes,
            delimiter: DELIMITER,
            name: &self.mailbox_out(name),
            childinfo: &[],
        }
        .to_bytes();
        if let Some(old) = old {
            // §5.4: the extended LIST response of RFC 5258 §3 with the OLDNAME data item,
            // `("OLDNAME" ("old"))`, before the line's CRLF.
            out.truncate(out.len().saturating_sub(2));
            out.extend_from_slice(b" (\"OLDNAME\" (");
            out.extend_from_slice(&self.mailbox_out(old));
            out.extend_from_slice(b"))\r\n");
        }
        self.conn.send(&out).await?;
        Ok(())
    }
}
