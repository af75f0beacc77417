//! `tinydc queue list | retry ID|--all | delete ID`: inspect and act on tinydc-smtpd's outbound
//! queue (table `smtp_queue`, one row per remote recipient, owned by `shared::queue`).

use shared::queue::{self as outbound, QueueRow};
use sqlx::PgPool;

pub use shared::queue::Which;

/// Every queued delivery, oldest first.
pub async fn rows(db: &PgPool) -> anyhow::Result<Vec<QueueRow>> {
    Ok(outbound::rows(db).await?)
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
    let n = outbound::retry(db, which).await?;
    if let (Which::One(id), 0) = (which, n) {
        anyhow::bail!("no queued delivery with id {id} (see `tinydc queue list`)");
    }
    println!("{n} deliveries will be retried now");
    Ok(n)
}

/// `tinydc queue delete ID`: drop a delivery without a bounce (its message blob reference goes
/// with it; the sweep removes the blob once unused).
pub async fn delete(db: &PgPool, id: i64) -> anyhow::Result<()> {
    if !outbound::remove(db, id).await? {
        anyhow::bail!("no queued delivery with id {id} (see `tinydc queue list`)");
    }
    println!("deleted queued delivery {id}");
    Ok(())
}
