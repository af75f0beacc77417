//! Change events between processes over PostgreSQL LISTEN/NOTIFY.
//!
//! A writer calls [`notify`] inside its transaction; PostgreSQL delivers the notification only
//! when (and if) that transaction commits. Every process runs one [`Events`] listener and hands
//! out broadcast receivers, so an IMAP IDLE in imapd wakes when smtpd delivers.
//!
//! The listener's connection is held only while something needs it (issue #12: an idle backend
//! costs PostgreSQL several MiB): an [`Interest`] (an IMAP session, an SMTP session, a queue with
//! rows in it, a quota reservation being made) keeps it; [`LISTENER_IDLE_RELEASE`] after the last
//! one is gone, and with no reservation of this process outstanding, the connection is closed
//! (and the quota owner lock with it), and opened again by the next interest. Events sent while
//! it is closed are missed by design: whoever needs them holds an interest, and every (re)connect
//! is counted in [`Events::reconnects`] so a waiter can re-read what it watches.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::{Notify, broadcast, watch};
use tokio::time::Instant;

use crate::quota::{OWNER_LOCK_CLASS, Owner, take_owner_lock};

/// The one NOTIFY channel tinydc uses.
pub const CHANNEL: &str = "tinydc";

/// Something changed that other processes may want to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// Messages were added, flagged or expunged in a mailbox. (The mail store's one-statement
    /// delivery builds this payload in SQL, `mailstore::insert_unlimited`: keep the two alike.)
    Mailbox { user_id: i64, mailbox_id: i64 },
    /// A mailbox was created (CREATE, or a superior name that CREATE or RENAME made).
    MailboxCreated { user_id: i64, name: String },
    /// A mailbox was deleted (its inferiors stay).
    MailboxDeleted { user_id: i64, name: String },
    /// A mailbox was renamed; its inferiors moved with it (one event for all: RFC 5465 §5.4
    /// sends no further MailboxName events for the children).
    MailboxRenamed { user_id: i64, from: String, to: String },
    /// A name was subscribed (`subscribed`) or unsubscribed.
    Subscription {
        user_id: i64,
        name: String,
        subscribed: bool,
    },
    /// METADATA entries (RFC 5464) were set, changed or removed by SETMETADATA: on the server
    /// (`mailbox_id` None) or on a mailbox. `entries` names the changed entries (a long list
    /// travels as several events, each under the payload limit: `metadata::set`).
    Metadata {
        user_id: i64,
        mailbox_id: Option<i64>,
        entries: Vec<String>,
    },
    /// A message was queued for outbound delivery.
    Queue,
    /// A user's quota limit was set or cleared (`quota::set_limit`): what a process knows of it
    /// is stale ([`Events::limits_epoch`]).
    QuotaLimit { user_id: i64 },
}

/// PostgreSQL refuses a NOTIFY payload of 8000 bytes or more (and with it the transaction).
pub const MAX_PAYLOAD: usize = 7900;

impl Event {
    /// The user whose data the event is about (`None`: not one user's, e.g. the queue).
    pub fn user_id(&self) -> Option<i64> {
        match self {
            Event::Mailbox { user_id, .. }
            | Event::MailboxCreated { user_id, .. }
            | Event::MailboxDeleted { user_id, .. }
            | Event::MailboxRenamed { user_id, .. }
            | Event::Subscription { user_id, .. }
            | Event::Metadata { user_id, .. }
            | Event::QuotaLimit { user_id } => Some(*user_id),
            Event::Queue => None,
        }
    }
}

/// Send `event` when the transaction `conn` is in commits (or at once outside a transaction).
/// An event too large for a NOTIFY payload (mailbox names near a raised name length limit) is
/// dropped with a log line rather than failing the writer's transaction: listeners only miss
/// a notification, as after a listener reconnect.
pub async fn notify(conn: &mut sqlx::PgConnection, event: &Event) -> sqlx::Result<()> {
    let payload = payload(event);
    if payload.len() > MAX_PAYLOAD {
        tracing::warn!(len = payload.len(), "event too large for NOTIFY, not sent");
        return Ok(());
    }
    sqlx::query!("SELECT pg_notify($1, $2)", CHANNEL, payload)
        .execute(conn)
        .await?;
    Ok(())
}

/// The text an event travels as on [`CHANNEL`], for a writer that sends it inside a statement of
/// its own (`pg_notify(CHANNEL, payload)`) instead of through [`notify`].
pub fn payload(event: &Event) -> String {
    // A plain enum of integers, strings and booleans: serializing it cannot fail.
    serde_json::to_string(event).expect("events serialize")
}

/// How long the listener's connection stays open after the last [`Interest`] in it ended (and
/// after it connected). A reconnect over the unix socket costs a few ms, once per burst of work,
/// like the pool's own connections (`shared::db::POOL_IDLE_TIMEOUT`).
pub const LISTENER_IDLE_RELEASE: Duration = Duration::from_secs(15);

/// Events a receiver may fall behind by before its next `recv` says `Lagged` (an IMAP session
/// with NOTIFY then turns notifications off, RFC 5465 §5.8). The broadcast ring holds this many
/// slots from the start, written in full (about 80 bytes each: 80 KiB at 1024), whether or not
/// anything ever subscribes: a daemon whose receivers tolerate lagging passes a smaller one to
/// [`Events::start_with_backlog`] (issue #12, idle memory).
pub const BACKLOG: usize = 1024;

/// How long a caller of [`Events::listening`] waits for the listener to be (re)connected before
/// it goes on without (as while the database restarts: it may then miss events).
const LISTENING_WAIT: Duration = Duration::from_secs(10);

/// The listener's backend in `pg_stat_activity.application_name`.
pub const APPLICATION_NAME: &str = "tinydc events";

/// Who needs the listener's connection, shared by the listener task, every [`Interest`] and the
/// quota owner (which takes one while it makes a reservation).
pub(crate) struct Demand {
    state: Mutex<DemandState>,
    wake: Notify,
    /// How many times the listener has (re)connected and is listening; `listening` is false
    /// while it is closed or reconnecting.
    connected: watch::Sender<Connected>,
    /// How many [`Event::QuotaLimit`] the listener has passed on ([`Events::limits_epoch`]).
    limits_changed: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Connected {
    generation: u64,
    listening: bool,
}

struct DemandState {
    holders: usize,
    /// The connection is closed for want of interest; the next interest wakes the listener.
    asleep: bool,
    /// When the last holder went (or the listener connected), for the idle release.
    idle_since: Instant,
}

impl Demand {
    fn new() -> Arc<Demand> {
        Arc::new(Demand {
            state: Mutex::new(DemandState {
                holders: 0,
                asleep: false,
                idle_since: Instant::now(),
            }),
            wake: Notify::new(),
            connected: watch::Sender::new(Connected::default()),
            limits_changed: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DemandState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keep the listener connected (and connect it if it is asleep) until the guard drops.
    pub(crate) fn take(self: &Arc<Demand>) -> Interest {
        let mut state = self.lock();
        state.holders += 1;
        if state.asleep {
            self.wake.notify_one();
        }
        Interest { demand: self.clone() }
    }

    /// Wait (bounded) until the listener is connected and listening.
    async fn wait_listening(&self) {
        let mut rx = self.connected.subscribe();
        if tokio::time::timeout(LISTENING_WAIT, rx.wait_for(|c| c.listening))
            .await
            .is_err()
        {
            tracing::warn!("event listener not connected after {LISTENING_WAIT:?}; going on without it");
        }
    }
}

/// A need for the process's event listener: while any is held, its connection stays open.
pub struct Interest {
    demand: Arc<Demand>,
}

impl Drop for Interest {
    fn drop(&mut self) {
        let mut state = self.demand.lock();
        state.holders = state.holders.saturating_sub(1);
        if state.holders == 0 {
            state.idle_since = Instant::now();
        }
    }
}

/// The process's listener: one database connection while anyone needs it, fanned out to any
/// number of receivers.
#[derive(Clone)]
pub struct Events {
    sender: broadcast::Sender<Event>,
    demand: Arc<Demand>,
}

/// The listener's own connection: a pool of one, apart from the process's pool, so that closing
/// it really ends the backend (a connection given back to a shared pool would live on, LISTENing
/// and holding the owner lock) and so that it never takes one of the shared pool's slots.
struct Connection {
    pool: PgPool,
    listener: PgListener,
}

impl Connection {
    async fn open(pool: &PgPool) -> sqlx::Result<Connection> {
        let options = (*pool.connect_options()).clone().application_name(APPLICATION_NAME);
        let own = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(LISTENING_WAIT)
            .connect_lazy_with(options);
        let mut listener = PgListener::connect_with(&own).await?;
        listener.listen(CHANNEL).await?;
        Ok(Connection { pool: own, listener })
    }

    /// End the backend (and with it LISTEN and every session lock it held).
    async fn close(self) {
        drop(self.listener);
        // Waits for the dropped listener's UNLISTEN and return, then closes the connection.
        self.pool.close().await;
    }
}

impl Events {
    /// Start listening, with the connection given up [`LISTENER_IDLE_RELEASE`] after the last
    /// interest. The listener reconnects by itself when the connection drops (a missed event
    /// then only delays a client until its next command or IDLE check).
    pub async fn start(pool: &PgPool) -> sqlx::Result<Events> {
        Events::start_with(pool, LISTENER_IDLE_RELEASE).await
    }

    /// [`Events::start`] with another idle release (tests).
    ///
    /// The listener's connection also holds this process's quota owner lock (see
    /// [`crate::quota::Owner`]): one backend per daemon instead of two, and none when idle (issue
    /// #12). After each (re)connect it takes a fresh owner id on the new connection and
    /// publishes it; the reservations of the old id are stale from the moment its backend
    /// ended, exactly as when a process dies, which is why the connection is only given up with
    /// no reservation of this owner outstanding.
    pub async fn start_with(pool: &PgPool, idle_release: Duration) -> sqlx::Result<Events> {
        Events::start_with_backlog(pool, idle_release, BACKLOG).await
    }

    /// [`Events::start_with`] with a broadcast ring of `backlog` events (at least 1; see
    /// [`BACKLOG`]).
    pub async fn start_with_backlog(pool: &PgPool, idle_release: Duration, backlog: usize) -> sqlx::Result<Events> {
        let (sender, _) = broadcast::channel(backlog.max(1));
        let demand = Demand::new();
        let mut conn = Connection::open(pool).await?;
        let owner = Owner::for_db(pool);
        // Only the first listener of a database in this process holds the lock.
        let holds = owner.attach_listener(demand.clone());
        let mut held = None;
        if holds {
            match take_owner_lock(&mut conn.listener, None).await {
                Ok(id) => {
                    owner.publish(Some(id));
                    held = Some(id);
                }
                Err(e) => {
                    owner.detach_listener();
                    return Err(e);
                }
            }
        }
        demand.connected.send_modify(|c| {
            c.generation += 1;
            c.listening = true;
        });
        let events = Events {
            sender: sender.clone(),
            demand: demand.clone(),
        };
        let task = Listener {
            pool: pool.clone(),
            tx: sender,
            demand,
            owner,
            holds,
            held,
            idle_release,
        };
        tokio::spawn(task.run(conn));
        Ok(events)
    }

    /// A receiver of every event from now on (while the listener is connected: hold an
    /// [`Interest`] to keep it so).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }

    /// Keep the listener connected while the guard lives, connecting it if it was given up;
    /// does not wait for the connection (see [`Events::listening`]).
    pub fn interest(&self) -> Interest {
        self.demand.take()
    }

    /// [`Events::interest`], returned once the listener is connected and listening (waiting a
    /// bounded time): every event committed from then on reaches this process's receivers.
    pub async fn listening(&self) -> Interest {
        let interest = self.demand.take();
        self.demand.wait_listening().await;
        interest
    }

    /// Counts the listener's (re)connects: a change means events may have been missed before
    /// it (while the connection was given up or lost).
    pub fn reconnects(&self) -> watch::Receiver<u64> {
        let mut rx = self.demand.connected.subscribe();
        let (tx, out) = watch::channel(rx.borrow().generation);
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let generation = rx.borrow_and_update().generation;
                // Only a (re)connect counts, not the connection being given up.
                tx.send_if_modified(|seen| std::mem::replace(seen, generation) != generation);
                if tx.is_closed() {
                    break;
                }
            }
        });
        out
    }

    /// Whether the listener's connection is open now.
    pub fn is_listening(&self) -> bool {
        self.demand.connected.borrow().listening
    }

    /// What a process may remember of quota limits holds while this stays the same: it changes
    /// with every [`Event::QuotaLimit`] and every (re)connect of the listener (events may have
    /// been missed before it). `None` while the listener is not connected: nothing can be
    /// remembered then. Read it before reading a limit; the limit read is good while it is
    /// unchanged (a change committed after the read comes with a later event).
    pub fn limits_epoch(&self) -> Option<(u64, u64)> {
        let connected = *self.demand.connected.borrow();
        connected
            .listening
            .then(|| (connected.generation, self.demand.limits_changed.load(Ordering::Acquire)))
    }
}

/// The listener task's state.
struct Listener {
    pool: PgPool,
    tx: broadcast::Sender<Event>,
    demand: Arc<Demand>,
    owner: Arc<Owner>,
    holds: bool,
    held: Option<i32>,
    idle_release: Duration,
}

impl Listener {
    /// Every Events handle is gone: stop.
    fn abandoned(&self) -> bool {
        self.tx.receiver_count() == 0 && self.tx.strong_count() <= 1
    }

    async fn run(mut self, first: Connection) {
        let mut conn = Some(first);
        loop {
            let open = match conn.take() {
                Some(open) => open,
                None => match self.wake().await {
                    Some(open) => open,
                    None => break,
                },
            };
            match self.serve(open).await {
                Some(open) => {
                    // Stopping with the connection still open.
                    self.stop(open).await;
                    return;
                }
                None => continue,
            }
        }
        if self.holds {
            self.owner.detach_listener();
        }
    }

    /// Asleep: wait until someone needs the listener, then connect (retrying with a growing
    /// pause while the database is away). None: every handle is gone.
    async fn wake(&mut self) -> Option<Connection> {
        let mut pause = Duration::from_millis(500);
        loop {
            loop {
                if self.demand.lock().holders > 0 {
                    break;
                }
                if self.abandoned() {
                    return None;
                }
                // The periodic look notices abandonment; an interest wakes us at once.
                let _ = tokio::time::timeout(Duration::from_secs(5), self.demand.wake.notified()).await;
            }
            let opened = async {
                let mut open = Connection::open(&self.pool).await?;
                let id = if self.holds {
                    Some(take_owner_lock(&mut open.listener, None).await?)
                } else {
                    None
                };
                Ok::<_, sqlx::Error>((open, id))
            }
            .await;
            match opened {
                Ok((open, id)) => {
                    if let Some(id) = id {
                        tracing::debug!(
                            owner = id,
                            "event listener connected again, with a new quota owner lock"
                        );
                        self.held = Some(id);
                        self.owner.publish(Some(id));
                    }
                    let mut state = self.demand.lock();
                    state.asleep = false;
                    state.idle_since = Instant::now();
                    drop(state);
                    self.demand.connected.send_modify(|c| {
                        c.generation += 1;
                        c.listening = true;
                    });
                    return Some(open);
                }
                Err(e) => {
                    tracing::warn!("event listener connect (next try in {} ms): {e}", pause.as_millis());
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Connected: pass events on until the connection is given up for want of interest (None,
    /// closed) or every handle is gone (Some: the caller closes it).
    async fn serve(&mut self, mut open: Connection) -> Option<Connection> {
        // While the database is away, retry with a growing pause (and one log line each).
        let mut pause = Duration::from_millis(500);
        let mut need_lock = false;
        loop {
            if self.holds && need_lock {
                // Runs on the listener's connection (reconnecting and re-listening first if
                // it is gone): the lock lives exactly as long as the listening backend.
                match take_owner_lock(&mut open.listener, self.held).await {
                    Ok(id) => {
                        if self.held != Some(id) {
                            tracing::info!(owner = id, "event listener took a new quota owner lock");
                        }
                        self.held = Some(id);
                        self.owner.publish(Some(id));
                        need_lock = false;
                        pause = Duration::from_millis(500);
                        // Reconnected: events in between were missed.
                        self.demand.connected.send_modify(|c| c.generation += 1);
                    }
                    Err(e) => {
                        tracing::warn!(
                            "quota owner lock on the event listener (next try in {} ms): {e}",
                            pause.as_millis()
                        );
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(30));
                    }
                }
            } else {
                let idle_check = tokio::time::sleep(self.idle_release.min(Duration::from_secs(5)));
                tokio::select! {
                    // try_recv is cancel-safe: a notification is only taken off the connection's
                    // buffer when it is returned.
                    received = open.listener.try_recv() => match received {
                        Ok(Some(notification)) => {
                            pause = Duration::from_millis(500);
                            match serde_json::from_str::<Event>(notification.payload()) {
                                Ok(event) => {
                                    if matches!(event, Event::QuotaLimit { .. }) {
                                        self.demand.limits_changed.fetch_add(1, Ordering::AcqRel);
                                    }
                                    let _ = self.tx.send(event);
                                }
                                Err(e) => tracing::warn!("ignoring unreadable event {:?}: {e}", notification.payload()),
                            }
                        }
                        // The connection was lost (and with it the owner lock); PgListener has
                        // reconnected or does on the next call.
                        Ok(None) => {
                            tracing::warn!("event listener reconnecting");
                            self.owner_lost(&mut need_lock);
                            self.demand.connected.send_modify(|c| c.generation += 1);
                        }
                        Err(e) => {
                            tracing::warn!("event listener error (next try in {} ms): {e}", pause.as_millis());
                            // The connection may or may not be the same afterwards: re-check.
                            self.owner_lost(&mut need_lock);
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(Duration::from_secs(30));
                        }
                    },
                    _ = idle_check => {
                        if self.may_release(&mut open).await {
                            open.close().await;
                            tracing::debug!("event listener connection given up: nothing needs it");
                            return None;
                        }
                    }
                }
            }
            if self.abandoned() {
                return Some(open);
            }
        }
    }

    /// Stop publishing the owner id until the listener has re-taken its lock.
    fn owner_lost(&self, need_lock: &mut bool) {
        if self.holds {
            self.owner.publish(None);
            *need_lock = true;
        }
    }

    /// Whether the connection may be given up now; if so, marks the listener asleep (under the
    /// demand lock, so an interest taken after this wakes it and a writer waiting for the owner
    /// id waits for the next one).
    async fn may_release(&self, open: &mut Connection) -> bool {
        {
            let state = self.demand.lock();
            if state.holders > 0 || state.idle_since.elapsed() < self.idle_release {
                return false;
            }
        }
        if self.holds
            && let Some(id) = self.held
        {
            // A reservation made under our lock and neither committed nor released: giving the
            // lock up would make it stale (other writers could take its space back).
            let outstanding: sqlx::Result<bool> = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM quota_reservations WHERE owner = $1 AND charged IS NULL)",
            )
            .bind(id)
            .fetch_one(&mut open.listener)
            .await;
            match outstanding {
                Ok(false) => {}
                Ok(true) => return false,
                Err(e) => {
                    tracing::warn!("event listener: reading outstanding reservations: {e}");
                    return false;
                }
            }
        }
        let mut state = self.demand.lock();
        if state.holders > 0 {
            return false;
        }
        state.asleep = true;
        if self.holds {
            self.owner.publish(None);
        }
        self.demand.connected.send_modify(|c| c.listening = false);
        true
    }

    /// Every handle is gone: give the lock back and close.
    async fn stop(&mut self, mut open: Connection) {
        if self.holds {
            // Writers fall back to a dedicated connection.
            self.owner.detach_listener();
            if let Some(id) = self.held {
                let _ = sqlx::query_scalar!(
                    r#"SELECT pg_advisory_unlock($1, $2) AS "unlocked!""#,
                    OWNER_LOCK_CLASS,
                    id
                )
                .fetch_one(&mut open.listener)
                .await;
            }
        }
        open.close().await;
    }
}
