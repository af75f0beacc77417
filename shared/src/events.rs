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

/// The one NOTIFY channel tinydc uses.
pub const CHANNEL: &str = "tinydc";

/// Something changed that other processes may want to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// Messages were added, flagged or expunged in a mailbox.
    Mailbox { user_id: i64, mailbox_id: i64 },
    /// A message was queued for outbound delivery.
    Queue,
}

/// Send `event` when the transaction `conn` is in commits (or at once outside a transaction).
pub async fn notify(conn: &mut sqlx::PgConnection, event: &Event) -> sqlx::Result<()> {
    let payload = serde_json::to_string(event).expect("events serialize");
    sqlx::query!("SELECT pg_notify($1, $2)", CHANNEL, payload)
        .execute(conn)
        .await?;
    Ok(())
}

/// The process's listener: one database connection, fanned out to any number of receivers.
#[derive(Clone)]
pub struct Events {
    sender: broadcast::Sender<Event>,
}

impl Events {
    /// Start listening. The listener reconnects by itself when the connection drops (a missed
    /// event then only delays a client until its next command or IDLE check).
    pub async fn start(pool: &PgPool) -> sqlx::Result<Events> {
        let (sender, _) = broadcast::channel(1024);
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        let tx = sender.clone();
        tokio::spawn(async move {
            // While the database is away, retry with a growing pause (and one log line each).
            let mut pause = Duration::from_millis(500);
            loop {
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
                    // The connection was lost; PgListener reconnects on the next call.
                    Ok(None) => tracing::warn!("event listener reconnecting"),
                    Err(e) => {
                        tracing::warn!("event listener error (next try in {} ms): {e}", pause.as_millis());
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(30));
                    }
                }
                if tx.receiver_count() == 0 && tx.strong_count() <= 1 {
                    // Every Events handle is gone: stop listening.
                    break;
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
