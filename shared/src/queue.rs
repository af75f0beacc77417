//! The outbound queue, table `smtp_queue` (one row per remote recipient, the message in the
//! blob store with one reference per row): the one module that reads and writes it.
//! tinydc-smtpd's submission [`enqueue`]s and its worker [`claim`]s, reschedules and
//! [`remove`]s rows (smtpd/src/queue/); `tinydc queue` lists, [`retry`]s and removes them.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::Context;
use crate::events::{self, Event};
use sqlx::PgPool;

/// A claimed row, as the worker delivers it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: i64,
    pub blob_id: String,
    pub sender: String,
    pub recipient: String,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
}

/// One queued delivery, as `tinydc queue list` shows it.
#[derive(Debug, Clone)]
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

/// Which rows [`retry`] acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    One(i64),
    All,
}

/// Put a message in the queue for `recipients`: the blob is durable and the rows committed
/// before this returns, and the worker is woken by an `Event::Queue`.
pub async fn enqueue(
    ctx: &Context,
    sender: &str,
    recipients: &[String],
    message: &[u8],
    user_id: Option<i64>,
) -> anyhow::Result<()> {
    let blob = ctx.blobs.put(message).await?;
    let mut tx = ctx.db.begin().await?;
    // The blob row first: queue rows reference it.
    crate::blobs::add_ref(&mut tx, &blob, message.len() as u64, recipients.len() as i64).await?;
    ctx.blobs.ensure_present(&blob)?;
    // One statement for all recipients, not one round trip each.
    sqlx::query!(
        "INSERT INTO smtp_queue (blob_id, size, sender, recipient, user_id)
         SELECT $1, $2, $3, r, $5 FROM UNNEST($4::text[]) AS r",
        blob.0,
        message.len() as i64,
        sender,
        recipients,
        user_id,
    )
    .execute(&mut *tx)
    .await?;
    events::notify(&mut tx, &Event::Queue).await?;
    tx.commit().await?;
    Ok(())
}

/// Claim up to `batch` due rows for `claim` (several workers or processes never take the same
/// row; a crashed worker's claim runs out). Each claim counts as an attempt.
pub async fn claim(db: &PgPool, batch: i64, claim: Duration) -> sqlx::Result<Vec<Entry>> {
    sqlx::query_as!(
        Entry,
        "UPDATE smtp_queue SET locked_until = now() + make_interval(secs => $2), attempts = attempts + 1
         WHERE id IN (SELECT id FROM smtp_queue
                      WHERE next_attempt <= now() AND (locked_until IS NULL OR locked_until < now())
                      ORDER BY next_attempt LIMIT $1 FOR UPDATE SKIP LOCKED)
         RETURNING id, blob_id, sender, recipient, attempts, created_at",
        batch,
        claim.as_secs_f64(),
    )
    .fetch_all(db)
    .await
}

/// Give claimed rows back unattempted (at shutdown), so a restart retries them at once.
pub async fn unclaim(db: &PgPool, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE smtp_queue SET locked_until = NULL, attempts = greatest(attempts - 1, 0)
         WHERE id = ANY($1) AND locked_until IS NOT NULL",
        ids,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// When the next row becomes due (`None`: the queue is empty).
pub async fn next_due(db: &PgPool) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar!("SELECT min(greatest(next_attempt, coalesce(locked_until, next_attempt))) FROM smtp_queue")
        .fetch_one(db)
        .await
}

/// Record a temporary failure of row `id`: try again after `delay`.
pub async fn retry_later(db: &PgPool, id: i64, delay: Duration, error: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE smtp_queue SET next_attempt = now() + make_interval(secs => $2), last_error = $3,
         locked_until = NULL WHERE id = $1",
        id,
        delay.as_secs_f64(),
        error,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Delete a row and its blob reference (delivered, bounced or dropped by the admin); the sweep
/// removes the blob once unused. `false` when there was no such row.
pub async fn remove(db: &PgPool, id: i64) -> sqlx::Result<bool> {
    let mut tx = db.begin().await?;
    let blob = sqlx::query_scalar!("DELETE FROM smtp_queue WHERE id = $1 RETURNING blob_id", id)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some(blob) = &blob {
        crate::blobs::drop_refs(&mut tx, std::slice::from_ref(blob)).await?;
    }
    tx.commit().await?;
    Ok(blob.is_some())
}

/// Every queued delivery, oldest first.
pub async fn rows(db: &PgPool) -> sqlx::Result<Vec<QueueRow>> {
    sqlx::query_as!(
        QueueRow,
        "SELECT id, sender, recipient, size, created_at, next_attempt, attempts, last_error
         FROM smtp_queue ORDER BY created_at, id",
    )
    .fetch_all(db)
    .await
}

/// Make rows due now and wake the worker. Returns how many (0 when `One` names no row, and
/// then nothing is announced).
pub async fn retry(db: &PgPool, which: Which) -> sqlx::Result<u64> {
    let mut tx = db.begin().await?;
    let done = match which {
        Which::One(id) => {
            sqlx::query!(
                "UPDATE smtp_queue SET next_attempt = now(), locked_until = NULL WHERE id = $1",
                id
            )
            .execute(&mut *tx)
            .await?
        }
        Which::All => {
            sqlx::query!("UPDATE smtp_queue SET next_attempt = now(), locked_until = NULL")
                .execute(&mut *tx)
                .await?
        }
    };
    if let (Which::One(_), 0) = (which, done.rows_affected()) {
        return Ok(0);
    }
    events::notify(&mut tx, &Event::Queue).await?;
    tx.commit().await?;
    Ok(done.rows_affected())
}

/// How many outbound queue rows use each of `blob_ids` (`tinydc check` names them when a body is
/// missing or damaged).
pub async fn count_by_blob(db: &PgPool, blob_ids: &[String]) -> sqlx::Result<Vec<(String, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT blob_id, count(*) AS "n!" FROM smtp_queue WHERE blob_id = ANY($1) GROUP BY blob_id"#,
        blob_ids
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.blob_id, r.n)).collect())
}
