//! Change events between processes over PostgreSQL LISTEN/NOTIFY.
//!
//! A writer calls [`notify`] inside its transaction; PostgreSQL delivers the notification only
//! when (and if) that transaction commits. Every process runs one [`Events`] listener and hands
//! out broadcast receivers, so an IMAP IDLE in imapd wakes when smtpd delivers.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;

use crate::quota::{OWNER_LOCK_CLASS, Owner, take_owner_lock};

/// Stop publishing the owner id until the listener has re-taken its lock.
fn owner_lost(owner: &Owner, holds: bool, need_lock: &mut bool) {
    if holds {
        owner.publish(None);
        *need_lock = true;
    }
}

/// The one NOTIFY channel tinydc uses.
pub const CHANNEL: &str = "tinydc";

/// Something changed that other processes may want to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// Messages were added, flagged or expunged in a mailbox.
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
            | Event::Metadata { user_id, .. } => Some(*user_id),
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

/// The process's listener: one database connection, fanned out to any number of receivers.
#[derive(Clone)]
pub struct Events {
    sender: broadcast::Sender<Event>,
}

impl Events {
    /// Start listening. The listener reconnects by itself when the connection drops (a missed
    /// event then only delays a client until its next command or IDLE check).
    ///
    /// The listener's connection also holds this process's quota owner lock (see
    /// [`crate::quota::Owner`]): one persistent backend per daemon instead of two (issue #12).
    /// After a reconnect it takes a fresh owner id on the new connection and publishes it; the
    /// reservations of the old id are stale from the moment its backend ended, exactly as when
    /// a process dies.
    pub async fn start(pool: &PgPool) -> sqlx::Result<Events> {
        let (sender, _) = broadcast::channel(1024);
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        let owner = Owner::for_db(pool);
        // Only the first listener of a database in this process holds the lock.
        let holds = owner.attach_listener();
        let mut held = None;
        if holds {
            match take_owner_lock(&mut listener, None).await {
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
        let tx = sender.clone();
        tokio::spawn(async move {
            // While the database is away, retry with a growing pause (and one log line each).
            let mut pause = Duration::from_millis(500);
            let mut need_lock = false;
            loop {
                if holds && need_lock {
                    // Runs on the listener's connection (reconnecting and re-listening first if
                    // it is gone): the lock lives exactly as long as the listening backend.
                    match take_owner_lock(&mut listener, held).await {
                        Ok(id) => {
                            if held != Some(id) {
                                tracing::info!(owner = id, "event listener took a new quota owner lock");
                            }
                            held = Some(id);
                            owner.publish(Some(id));
                            need_lock = false;
                            pause = Duration::from_millis(500);
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
                    match listener.try_recv().await {
                        Ok(Some(notification)) => {
                            pause = Duration::from_millis(500);
                            match serde_json::from_str::<Event>(notification.payload()) {
                                Ok(event) => {
                                    let _ = tx.send(event);
                                }
                                Err(e) => tracing::warn!("ignoring unreadable event {:?}: {e}", notification.payload()),
                            }
                        }
                        // The connection was lost (and with it the owner lock); PgListener has
                        // reconnected or does on the next call.
                        Ok(None) => {
                            tracing::warn!("event listener reconnecting");
                            owner_lost(&owner, holds, &mut need_lock);
                        }
                        Err(e) => {
                            tracing::warn!("event listener error (next try in {} ms): {e}", pause.as_millis());
                            // The connection may or may not be the same afterwards: re-check.
                            owner_lost(&owner, holds, &mut need_lock);
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(Duration::from_secs(30));
                        }
                    }
                }
                if tx.receiver_count() == 0 && tx.strong_count() <= 1 {
                    // Every Events handle is gone: stop listening.
                    break;
                }
            }
            if holds {
                // Writers fall back to a dedicated connection; the lock must not outlive us on
                // a connection that goes back to the pool.
                owner.detach_listener();
                if let Some(id) = held {
                    let _ = sqlx::query_scalar!(
                        r#"SELECT pg_advisory_unlock($1, $2) AS "unlocked!""#,
                        OWNER_LOCK_CLASS,
                        id
                    )
                    .fetch_one(&mut listener)
                    .await;
                }
            }
        });
        Ok(Events { sender })
    }

    /// A receiver of every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }
}
