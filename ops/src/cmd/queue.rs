//! `tinydc queue list | retry ID|--all | delete ID`: inspect and act on tinydc-smtpd's outbound
//! queue (table `smtp_queue`, one row per remote recipient; see smtpd/src/queue/).

use chrono::{DateTime, Utc};
use shared::events::{self, Event};
use sqlx::PgPool;

/// One queued delivery.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QueueRow {
    pub id: i64,
    pub sender: String,
    pub recipient: String,
    pub size: i64,
    pub created_at: DateTime<Utc>,
    pub next_attempt: DateTime<Utc>,
    pub attempts: i32,
    pub last_error: Option<String>,
}

/// Which rows `retry` acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    One(i64),
    All,
}

/// Every queued delivery, oldest first.
pub async fn rows(db: &PgPool) -> anyhow::Result<Vec<QueueRow>> {
    Ok(sqlx::query_as(
        "SELECT id, sender, recipient, size, created_at, next_attempt, attempts, last_error
         FROM smtp_queue ORDER BY created_at, id",
    )
    .fetch_all(db)
    .await?)
}

/// `tinydc queue list`: print the queue.
pub async fn list(db: &PgPool) -> anyhow::Result<()> {
    let rows = rows(db).await?;
    if rows.is_empty() {
        println!("The outbound queue is empty.");
        return Ok(());
    }
    println!(
        "{:>6}  {:<30}  {:<30}  {:>9}  {:<20}  {:>8}  {:<20}  last error",
        "id", "from", "to", "bytes", "queued (UTC)", "attempts", "next attempt (UTC)"
    );
    for r in &rows {
        let sender = if r.sender.is_empty() { "<>" } else { r.sender.as_str() };
        println!(
            "{:>6}  {:<30}  {:<30}  {:>9}  {:<20}  {:>8}  {:<20}  {}",
            r.id,
            sender,
            r.recipient,
            r.size,
            r.created_at.format("%Y-%m-%d %H:%M:%S"),
            r.attempts,
            r.next_attempt.format("%Y-%m-%d %H:%M:%S"),
            r.last_error.as_deref().unwrap_or("-")
        );
    }
    println!("{} queued deliveries", rows.len());
    Ok(())
}

/// `tinydc queue retry ID|--all`: make rows due now and wake tinydc-smtpd. Returns how many.
pub async fn retry(db: &PgPool, which: Which) -> anyhow::Result<u64> {
    let mut tx = db.begin().await?;
    let done = match which {
        Which::One(id) => {
            sqlx::query("UPDATE smtp_queue SET next_attempt = now(), locked_until = NULL WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
        }
        Which::All => {
            sqlx::query("UPDATE smtp_queue SET next_attempt = now(), locked_until = NULL")
                .execute(&mut *tx)
                .await?
        }
    };
    if let (Which::One(id), 0) = (which, done.rows_affected()) {
        anyhow::bail!("no queued delivery with id {id} (see `tinydc queue list`)");
    }
    events::notify(&mut tx, &Event::Queue).await?;
    tx.commit().await?;
    println!("{} deliveries will be retried now", done.rows_affected());
    Ok(done.rows_affected())
}

/// `tinydc queue delete ID`: drop a delivery without a bounce.
pub async fn delete(db: &PgPool, id: i64) -> anyhow::Result<()> {
    let mut tx = db.begin().await?;
    let blob: Option<String> = sqlx::query_scalar("DELETE FROM smtp_queue WHERE id = $1 RETURNING blob_id")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(blob) = blob else {
        anyhow::bail!("no queued delivery with id {id} (see `tinydc queue list`)");
    };
    // The row held one reference to the message blob; the sweep removes it once unused.
    shared::blobs::drop_refs(&mut tx, &[blob]).await?;
    tx.commit().await?;
    println!("deleted queued delivery {id}");
    Ok(())
}
