//! One storage limit per user over mail bytes + file bytes (DESIGN.md "Quota").
//!
//! A write first [`reserve`]s its expected size, which is refused when usage plus every live
//! reservation plus the request would pass the limit. The check and the insert run under a lock
//! on the user's row, so parallel writers (in any process) can never overshoot. When the write
//! commits, [`commit`] turns the reservation into usage in the writer's own transaction; when it
//! fails, [`release`] gives the space back. A reservation left by a crashed process expires.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use thiserror::Error;

use crate::events::{self, Event};

/// How long a reservation lives if its writer never commits or releases it (a crash).
pub const RESERVATION_LIFETIME: Duration = Duration::from_secs(6 * 3600);

/// What a byte count is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Mail,
    Files,
}

impl Usage {
    fn column(self) -> &'static str {
        match self {
            Usage::Mail => "mail_bytes",
            Usage::Files => "file_bytes",
        }
    }
}

/// Quota refusals and failures.
#[derive(Debug, Error)]
pub enum QuotaError {
    /// The write does not fit. Protocols answer 452/552 (SMTP), NO [OVERQUOTA] (IMAP), 507 (WebDAV).
    #[error("over quota: {requested} bytes requested, {available} available")]
    Exceeded { requested: u64, available: u64 },
    #[error("no such user")]
    UnknownUser,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// A user's quota and usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaInfo {
    /// `None`: unlimited.
    pub limit: Option<u64>,
    pub mail_bytes: u64,
    pub file_bytes: u64,
    /// Space promised to writes in progress.
    pub reserved_bytes: u64,
}

impl QuotaInfo {
    /// Mail plus files.
    pub fn used(&self) -> u64 {
        self.mail_bytes + self.file_bytes
    }

    /// Bytes that can still be written (`u64::MAX` when unlimited).
    pub fn available(&self) -> u64 {
        match self.limit {
            None => u64::MAX,
            Some(limit) => limit.saturating_sub(self.used() + self.reserved_bytes),
        }
    }

    /// Percent of the limit used (`None` when unlimited).
    pub fn percent(&self) -> Option<f64> {
        self.limit.map(|l| {
            if l == 0 {
                100.0
            } else {
                self.used() as f64 * 100.0 / l as f64
            }
        })
    }
}

/// Space promised to one write. Hand it to [`commit`] or [`release`].
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a reservation holds quota until it is committed or released"]
pub struct Reservation {
    pub id: i64,
    pub user_id: i64,
    pub bytes: u64,
}

/// Lock the user's row and read its quota (live reservations included).
async fn locked_info(conn: &mut PgConnection, user_id: i64) -> Result<QuotaInfo, QuotaError> {
    let row: Option<(Option<i64>, i64, i64)> =
        sqlx::query_as("SELECT quota_limit, mail_bytes, file_bytes FROM users WHERE id = $1 FOR UPDATE")
            .bind(user_id)
            .fetch_optional(&mut *conn)
            .await?;
    let (limit, mail, files) = row.ok_or(QuotaError::UnknownUser)?;
    let reserved: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(bytes), 0)::bigint FROM quota_reservations WHERE user_id = $1 AND expires_at > now()",
    )
    .bind(user_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(QuotaInfo {
        limit: limit.map(|l| l.max(0) as u64),
        mail_bytes: mail.max(0) as u64,
        file_bytes: files.max(0) as u64,
        reserved_bytes: reserved.max(0) as u64,
    })
}

/// A user's quota and usage now: a plain read that locks nothing (IMAP GETQUOTAROOT and WebDAV
/// quota properties call this on every request).
pub async fn info(db: &PgPool, user_id: i64) -> Result<QuotaInfo, QuotaError> {
    let row: Option<(Option<i64>, i64, i64, i64)> = sqlx::query_as(
        "SELECT quota_limit, mail_bytes, file_bytes,
                (SELECT coalesce(sum(bytes), 0)::bigint FROM quota_reservations
                 WHERE user_id = users.id AND expires_at > now())
         FROM users WHERE id = $1",
    )
    .bind(user_id)
    .fetch_optional(db)
    .await?;
    let (limit, mail, files, reserved) = row.ok_or(QuotaError::UnknownUser)?;
    Ok(QuotaInfo {
        limit: limit.map(|l| l.max(0) as u64),
        mail_bytes: mail.max(0) as u64,
        file_bytes: files.max(0) as u64,
        reserved_bytes: reserved.max(0) as u64,
    })
}

/// Promise `bytes` to a write that is about to start, or refuse with `Exceeded`.
pub async fn reserve(db: &PgPool, user_id: i64, bytes: u64) -> Result<Reservation, QuotaError> {
    let mut tx = db.begin().await?;
    let info = locked_info(&mut tx, user_id).await?;
    if bytes > info.available() {
        return Err(QuotaError::Exceeded {
            requested: bytes,
            available: info.available(),
        });
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO quota_reservations (user_id, bytes, expires_at)
         VALUES ($1, $2, now() + make_interval(secs => $3)) RETURNING id",
    )
    .bind(user_id)
    .bind(bytes as i64)
    .bind(RESERVATION_LIFETIME.as_secs_f64())
    .fetch_one(&mut *tx)
    .await?;
    // Expired reservations of crashed writers are cleared while we hold the row lock.
    sqlx::query("DELETE FROM quota_reservations WHERE user_id = $1 AND expires_at <= now()")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Reservation { id, user_id, bytes })
}

/// Give a reservation's space back (the write failed or was abandoned).
pub async fn release(db: &PgPool, reservation: Reservation) -> Result<(), QuotaError> {
    sqlx::query("DELETE FROM quota_reservations WHERE id = $1")
        .bind(reservation.id)
        .execute(db)
        .await?;
    Ok(())
}

/// Inside the writer's transaction: turn the reservation into `actual` bytes of usage. When
/// `actual` is more than was reserved, the excess must fit too, else `Exceeded` (and the caller
/// rolls back). Sends a quota event at commit.
pub async fn commit(
    conn: &mut PgConnection,
    reservation: Reservation,
    actual: u64,
    usage: Usage,
) -> Result<(), QuotaError> {
    sqlx::query("DELETE FROM quota_reservations WHERE id = $1")
        .bind(reservation.id)
        .execute(&mut *conn)
        .await?;
    if actual > reservation.bytes {
        charge(conn, reservation.user_id, usage, actual).await
    } else {
        add_usage(conn, reservation.user_id, usage, actual as i64).await
    }
}

/// Inside a transaction: charge `bytes` with no reservation (a copy), refused when it does not fit.
pub async fn charge(conn: &mut PgConnection, user_id: i64, usage: Usage, bytes: u64) -> Result<(), QuotaError> {
    let info = locked_info(conn, user_id).await?;
    if bytes > info.available() {
        return Err(QuotaError::Exceeded {
            requested: bytes,
            available: info.available(),
        });
    }
    add_usage(conn, user_id, usage, bytes as i64).await
}

/// Inside a transaction: give back `bytes` (a delete or an overwrite).
pub async fn refund(conn: &mut PgConnection, user_id: i64, usage: Usage, bytes: u64) -> Result<(), QuotaError> {
    add_usage(conn, user_id, usage, -(bytes as i64)).await
}

async fn add_usage(conn: &mut PgConnection, user_id: i64, usage: Usage, delta: i64) -> Result<(), QuotaError> {
    if delta == 0 {
        return Ok(());
    }
    let column = usage.column();
    sqlx::query(&format!(
        "UPDATE users SET {column} = greatest({column} + $2, 0) WHERE id = $1"
    ))
    .bind(user_id)
    .bind(delta)
    .execute(&mut *conn)
    .await?;
    events::notify(conn, &Event::Quota { user_id }).await?;
    Ok(())
}

/// Set or clear (`None`) a user's limit and tell every process.
pub async fn set_limit(db: &PgPool, user_id: i64, limit: Option<u64>) -> Result<(), QuotaError> {
    let mut tx = db.begin().await?;
    let updated = sqlx::query("UPDATE users SET quota_limit = $2 WHERE id = $1")
        .bind(user_id)
        .bind(limit.map(|l| l.min(i64::MAX as u64) as i64))
        .execute(&mut *tx)
        .await?;
    if updated.rows_affected() == 0 {
        return Err(QuotaError::UnknownUser);
    }
    events::notify(&mut tx, &Event::Quota { user_id }).await?;
    tx.commit().await?;
    Ok(())
}

/// What a recount found for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recount {
    pub user_id: i64,
    pub mail_before: u64,
    pub mail_after: u64,
    pub files_before: u64,
    pub files_after: u64,
}

impl Recount {
    /// Whether the stored usage was wrong.
    pub fn corrected(&self) -> bool {
        self.mail_before != self.mail_after || self.files_before != self.files_after
    }
}

/// Recount a user's usage from what is stored: the sizes of their messages, and the bytes of
/// regular files in their tree `files_root` (DATA/files/<address>; absent counts as empty).
pub async fn recalc(db: &PgPool, user_id: i64, files_root: &std::path::Path) -> Result<Recount, QuotaError> {
    let root = files_root.to_path_buf();
    let files_after = tokio::task::spawn_blocking(move || tree_bytes(&root))
        .await
        .expect("walking the tree does not panic");
    let mut tx = db.begin().await?;
    let before = locked_info(&mut tx, user_id).await?;
    let mail_after: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(m.size), 0)::bigint FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id
         WHERE b.user_id = $1",
    )
    .bind(user_id)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("UPDATE users SET mail_bytes = $2, file_bytes = $3 WHERE id = $1")
        .bind(user_id)
        .bind(mail_after)
        .bind(files_after as i64)
        .execute(&mut *tx)
        .await?;
    events::notify(&mut tx, &Event::Quota { user_id }).await?;
    tx.commit().await?;
    Ok(Recount {
        user_id,
        mail_before: before.mail_bytes,
        mail_after: mail_after as u64,
        files_before: before.file_bytes,
        files_after,
    })
}

/// Bytes of regular files under `root`, not following symlinks; temp files of uploads in
/// progress (`.tinydc-upload-*`) are not counted.
pub fn tree_bytes(root: &std::path::Path) -> u64 {
    let mut total = 0;
    for_each_file(root, |entry, meta| {
        if !entry.file_name().to_string_lossy().starts_with(UPLOAD_TEMP_PREFIX) {
            total += meta.len();
        }
    });
    total
}

/// Visit every regular file under `root` with its metadata. Symbolic links are not followed
/// (a link is neither a file nor a directory here) and a directory that cannot be read is
/// skipped; the walk keeps its own stack, so depth costs no call stack.
pub fn for_each_file(root: &std::path::Path, mut visit: impl FnMut(&std::fs::DirEntry, &std::fs::Metadata)) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                visit(&entry, &meta);
            }
        }
    }
}

/// Name prefix of davd's temporary upload files (not counted as usage until renamed into place).
pub const UPLOAD_TEMP_PREFIX: &str = ".tinydc-upload-";
