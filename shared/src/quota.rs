//! One storage limit per user over mail bytes + file bytes (docs/ARCHITECTURE.md, "Contracts": quota).
//!
//! A write first [`reserve`]s its expected size, which is refused when usage plus every live
//! reservation plus the request would pass the limit. The check and the insert run under a lock
//! on the user's row, so parallel writers (in any process) can never overshoot. When the write
//! commits, [`commit`] turns the reservation into usage in the writer's own transaction; when it
//! fails, [`release`] gives the space back.
//!
//! Usage is `users.mail_bytes` / `file_bytes` plus the user's *charged deltas* (migration 0016,
//! issue #12). [`commit`] turns a reservation that covers the write into a delta in place,
//! touching only that row: the writer's transaction, which holds its mailbox row through its
//! commit and WAL flush, no longer holds the user's row too, so reservations (SMTP RCPT, IMAP
//! APPEND, WebDAV PUT) and the other writes of the same account do not queue behind it. The
//! limit is still exact (no overshoot, not even one message): a delta is never more than the
//! reservation it replaces, and every check, made under the user's row lock, counts the row
//! either way. Deltas are folded into the `users` row under its lock right after the write, in
//! one round trip with the quota warnings' read ([`fold_and_read`], through
//! [`warn::after_write`]); for a user without a limit, a moment later in a batch off the
//! writer's path ([`FoldQueue`]); by the next [`reserve`] of the user, and at daemon start;
//! every reader here adds the ones not folded yet.
//!
//! A reservation left by a crashed process is released by its owner's death: every process that
//! reserves holds a session-level advisory lock on its own owner id on one connection while it has
//! reservations outstanding (a daemon's event listener connection, see [`Owner`]), and its
//! reservations carry that id. PostgreSQL drops the lock
//! when the process (so its connection) dies; a reservation whose owner no longer holds its lock
//! in `pg_locks` is stale. [`release_stale`] clears those (daemon start, `tinydc quota recalc`),
//! and [`reserve`] clears a user's own stale ones before refusing. A live writer's lock is held
//! as long as its process runs, so its reservations are never taken, in any process. The time
//! limit [`RESERVATION_LIFETIME`] stays as the last resort.
//!
//! Writes are also refused while the data directory's filesystem is nearly full (see
//! [`guard_disk`]), so the private PostgreSQL in `DATA/pg` always keeps room for its WAL.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::{Connection as _, PgConnection, PgPool};
use thiserror::Error;
use tokio::sync::watch;

use crate::mailstore;

/// Warnings to the user at 80% and 95% of their limit (the one owner of those thresholds).
pub mod warn;

/// How long a reservation lives if its writer never commits or releases it and its owner's death
/// goes unnoticed (a last resort: normally a dead owner's reservations go at once).
pub const RESERVATION_LIFETIME: Duration = Duration::from_secs(6 * 3600);

/// First key of the owners' advisory locks (`pg_advisory_lock(OWNER_LOCK_CLASS, owner)`): 'quot',
/// apart from every other advisory lock of tinydc.
pub const OWNER_LOCK_CLASS: i32 = 0x71756f74;

// OWNER_ALIVE spells the class out as an oid literal.
const _: () = assert!(OWNER_LOCK_CLASS == 1903521652);

/// How long taking the owner connection may wait for the database.
const OWNER_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// SQL: the owner of reservation row `r` still holds its lock (its process is alive).
const OWNER_ALIVE: &str = "EXISTS (SELECT 1 FROM pg_locks l
     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
       AND l.classid = 1903521652::oid AND l.objid = r.owner::oid)";

/// What a byte count is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Mail,
    Files,
}

impl Usage {
    /// `quota_reservations.charged` of a delta of this kind (migration 0016).
    fn column_tag(self) -> &'static str {
        match self {
            Usage::Mail => "mail",
            Usage::Files => "files",
        }
    }
}

/// Quota refusals and failures.
#[derive(Debug, Error)]
pub enum QuotaError {
    /// The write does not fit. Protocols answer 452/552 (SMTP), NO [OVERQUOTA] (IMAP), 507 (WebDAV).
    #[error("over quota: {requested} bytes requested, {available} available")]
    Exceeded { requested: u64, available: u64 },
    /// The data directory's filesystem is (nearly) full. Protocols answer SMTP 452 4.3.1, IMAP
    /// NO [OVERQUOTA], WebDAV 507. Transient: the same write succeeds once space returns.
    #[error("insufficient storage: {requested} bytes requested, {available} free above the reserve")]
    DiskFull { requested: u64, available: u64 },
    #[error("no such user")]
    UnknownUser,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl QuotaError {
    /// Whether this is a full disk rather than a full quota (also PostgreSQL's own `disk_full`).
    pub fn is_disk_full(&self) -> bool {
        match self {
            QuotaError::DiskFull { .. } => true,
            QuotaError::Db(e) => is_db_disk_full(e),
            _ => false,
        }
    }
}

/// Whether PostgreSQL failed for want of disk space (SQLSTATE 53100 `disk_full`).
pub fn is_db_disk_full(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d.code().as_deref() == Some("53100"),
        sqlx::Error::Io(io) => is_no_space(io),
        _ => false,
    }
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

impl Reservation {
    /// The id of a reservation made for a user without a limit: no row stands behind it.
    pub const UNLIMITED: i64 = 0;
}

/// Lock the user's row and read its quota (live reservations and unfolded charges included).
///
/// Two statements, not one: the sums must be read with a snapshot taken after the lock was
/// granted (READ COMMITTED takes one per statement), or a reservation committed by the
/// transaction we waited for would be missed and two writers could both pass the limit.
pub(crate) async fn locked_info(conn: &mut PgConnection, user_id: i64) -> Result<QuotaInfo, QuotaError> {
    let row = sqlx::query!(
        "SELECT quota_limit, mail_bytes, file_bytes FROM users WHERE id = $1 FOR NO KEY UPDATE",
        user_id
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(QuotaError::UnknownUser)?;
    let rows = sqlx::query!(
        r#"SELECT coalesce(sum(bytes) FILTER (WHERE charged IS NULL AND expires_at > now()), 0)::bigint AS "reserved!",
                  coalesce(sum(bytes) FILTER (WHERE charged = 'mail'), 0)::bigint AS "mail!",
                  coalesce(sum(bytes) FILTER (WHERE charged = 'files'), 0)::bigint AS "files!"
           FROM quota_reservations WHERE user_id = $1"#,
        user_id
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(QuotaInfo {
        limit: row.quota_limit.map(|l| l.max(0) as u64),
        mail_bytes: (row.mail_bytes.max(0) as u64).saturating_add(rows.mail.max(0) as u64),
        file_bytes: (row.file_bytes.max(0) as u64).saturating_add(rows.files.max(0) as u64),
        reserved_bytes: rows.reserved.max(0) as u64,
    })
}

/// A user's quota and usage now: a plain read that locks nothing (IMAP GETQUOTAROOT and WebDAV
/// quota properties call this on every request).
pub async fn info(db: &PgPool, user_id: i64) -> Result<QuotaInfo, QuotaError> {
    let row = sqlx::query!(
        r#"SELECT u.quota_limit, u.mail_bytes, u.file_bytes,
                coalesce(sum(q.bytes) FILTER (WHERE q.charged IS NULL AND q.expires_at > now()), 0)::bigint AS "reserved!",
                coalesce(sum(q.bytes) FILTER (WHERE q.charged = 'mail'), 0)::bigint AS "mail_delta!",
                coalesce(sum(q.bytes) FILTER (WHERE q.charged = 'files'), 0)::bigint AS "files_delta!"
         FROM users u LEFT JOIN quota_reservations q ON q.user_id = u.id
         WHERE u.id = $1 GROUP BY u.id"#,
        user_id
    )
    .fetch_optional(db)
    .await?
    .ok_or(QuotaError::UnknownUser)?;
    Ok(QuotaInfo {
        limit: row.quota_limit.map(|l| l.max(0) as u64),
        mail_bytes: (row.mail_bytes.max(0) as u64).saturating_add(row.mail_delta.max(0) as u64),
        file_bytes: (row.file_bytes.max(0) as u64).saturating_add(row.files_delta.max(0) as u64),
        reserved_bytes: row.reserved.max(0) as u64,
    })
}

/// Promise `bytes` to a write that is about to start, or refuse with `Exceeded` (over the user's
/// limit) or `DiskFull` (the data directory's filesystem would drop below its reserve).
pub async fn reserve(db: &PgPool, user_id: i64, bytes: u64) -> Result<Reservation, QuotaError> {
    check_disk(db, bytes)?;
    // A user without a limit has nothing to promise: one plain read, no row, no lock (issue #12:
    // the common case of a family server pays no reservation transaction per message). Should a
    // limit be set before the write commits, `commit` finds no reservation and checks the
    // whole write against it under the user's row lock.
    let limit = sqlx::query_scalar!("SELECT quota_limit FROM users WHERE id = $1", user_id)
        .fetch_optional(db)
        .await?
        .ok_or(QuotaError::UnknownUser)?;
    reserve_under(db, user_id, limit, bytes).await
}

/// Users a process has seen without a limit, each as of the [`crate::events::Events::limits_epoch`]
/// before the read that saw it ([`reserve_known`]). At most [`KNOWN_LIMITS_MAX`] users: when
/// full, it starts over (each is read again once).
#[derive(Debug, Default)]
pub struct KnownLimits {
    no_limit: Mutex<HashMap<i64, (u64, u64)>>,
}

/// Users a [`KnownLimits`] remembers at most.
const KNOWN_LIMITS_MAX: usize = 10_000;

impl KnownLimits {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, (u64, u64)>> {
        self.no_limit.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// [`reserve`] that does not read the limit of a user seen without one since no limit changed
/// (issue #12: one statement less per IMAP APPEND of the common family server). `epoch`: the
/// process's [`crate::events::Events::limits_epoch`], read by the caller now; `None` (the
/// listener is not connected, so a change could go unheard) reads the limit as `reserve` does.
///
/// A limit set in the moment before its event reaches this process still binds: the write is
/// reserved as without a limit ([`Reservation::UNLIMITED`]), and [`commit`] finds the limit and
/// checks the whole write under the user's row lock; only the refusal comes later (after the
/// bytes, not before), as for a limit set between any reservation and its commit.
pub async fn reserve_known(
    db: &PgPool,
    known: &KnownLimits,
    epoch: Option<(u64, u64)>,
    user_id: i64,
    bytes: u64,
) -> Result<Reservation, QuotaError> {
    if epoch.is_some() && known.lock().get(&user_id).copied() == epoch {
        return reserve_read(db, user_id, None, bytes).await;
    }
    let reservation = reserve(db, user_id, bytes).await?;
    let mut no_limit = known.lock();
    match epoch {
        Some(epoch) if reservation.id == Reservation::UNLIMITED => {
            if no_limit.len() >= KNOWN_LIMITS_MAX {
                no_limit.clear();
            }
            no_limit.insert(user_id, epoch);
        }
        _ => {
            no_limit.remove(&user_id);
        }
    }
    Ok(reservation)
}

/// [`reserve`] for a user whose row the caller has just read (SMTP RCPT looks the recipient
/// up): `limit` is its `quota_limit`, which is not read again. A limit set since is found as
/// by `reserve` itself: under the user's row lock by the reservation, or by `commit`.
pub async fn reserve_read(
    db: &PgPool,
    user_id: i64,
    limit: Option<i64>,
    bytes: u64,
) -> Result<Reservation, QuotaError> {
    check_disk(db, bytes)?;
    reserve_under(db, user_id, limit, bytes).await
}

/// The part of [`reserve`] after the limit is known (the disk already checked).
async fn reserve_under(db: &PgPool, user_id: i64, limit: Option<i64>, bytes: u64) -> Result<Reservation, QuotaError> {
    if limit.is_none() {
        return Ok(Reservation {
            id: Reservation::UNLIMITED,
            user_id,
            bytes,
        });
    }
    let owner = Owner::of(db).await?;
    // Held until the reservation row is committed: the listener holding our owner lock does
    // not give it up meanwhile (it checks for outstanding reservations before it does).
    let _listener = owner.interest();
    // Twice at most: a first attempt can find that our own owner lock was lost (the database
    // restarted under us); the owner is then renewed and the reservation made under the new id.
    for _ in 0..2 {
        let id = owner.id(db).await?;
        let mut tx = db.begin().await?;
        // A reservation is a promise to a write in progress, not an acknowledged write: its
        // commit need not wait for the WAL flush (one fsync less per SMTP RCPT, APPEND and PUT).
        // It is visible to every other writer at once all the same, and the writer's own
        // synchronous commit later flushes it with everything before it. One lost in a database
        // crash promises nothing: `commit` then charges the whole write with the limit check.
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
        let mut info = locked_info(&mut tx, user_id).await?;
        if bytes > info.available() && release_stale_of(&mut tx, user_id).await? > 0 {
            // Dead writers' reservations were counted; give their space back before refusing.
            info = locked_info(&mut tx, user_id).await?;
        }
        if bytes > info.available() {
            return Err(QuotaError::Exceeded {
                requested: bytes,
                available: info.available(),
            });
        }
        // Inserted only while our owner lock is held, so a reservation never carries the id of
        // an owner that is already gone (release_stale would take it at once).
        // Stays dynamic (here and in the two release_stale queries): they share the one
        // OWNER_ALIVE predicate, and query! takes a single string literal.
        let inserted: Option<i64> = sqlx::query_scalar(&format!(
            "INSERT INTO quota_reservations (user_id, bytes, expires_at, owner)
             SELECT $1, $2, now() + make_interval(secs => $3), $4
             FROM (SELECT $4::integer AS owner) r WHERE {OWNER_ALIVE} RETURNING id"
        ))
        .bind(user_id)
        .bind(bytes as i64)
        .bind(RESERVATION_LIFETIME.as_secs_f64())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(reservation_id) = inserted else {
            tx.rollback().await?;
            tracing::warn!(owner = id, "quota owner lock lost (database restarted?): renewing it");
            owner.lost(id).await;
            continue;
        };
        // While we hold the row lock, in one round trip: expired reservations are cleared and
        // the user's charged deltas folded into their row (see `fold`; usually none are left).
        // Delta rows another transaction holds (a refund folding them itself) are skipped,
        // never waited for: that transaction waits for our row lock.
        sqlx::query(
            "WITH gone AS (
                 DELETE FROM quota_reservations
                 WHERE user_id = $1 AND charged IS NULL AND expires_at <= now()),
             f AS (
                 DELETE FROM quota_reservations WHERE id IN (
                     SELECT id FROM quota_reservations WHERE user_id = $1 AND charged IS NOT NULL
                     FOR UPDATE SKIP LOCKED)
                 RETURNING bytes, charged)
             UPDATE users
             SET mail_bytes = mail_bytes + (SELECT coalesce(sum(bytes) FILTER (WHERE charged = 'mail'), 0) FROM f),
                 file_bytes = file_bytes + (SELECT coalesce(sum(bytes) FILTER (WHERE charged = 'files'), 0) FROM f)
             WHERE id = $1 AND EXISTS (SELECT 1 FROM f)",
        )
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        return Ok(Reservation {
            id: reservation_id,
            user_id,
            bytes,
        });
    }
    Err(QuotaError::Db(sqlx::Error::Protocol(
        "the quota owner lock cannot be held".into(),
    )))
}

/// Inside a transaction holding the user's row lock: delete the user's reservations whose owner
/// is dead (or that expired). Returns how many went.
async fn release_stale_of(conn: &mut PgConnection, user_id: i64) -> Result<u64, QuotaError> {
    let done = sqlx::query(&format!(
        "DELETE FROM quota_reservations r WHERE r.user_id = $1
           AND r.charged IS NULL
           AND (r.expires_at <= now() OR (r.owner IS NOT NULL AND NOT {OWNER_ALIVE}))"
    ))
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() > 0 {
        tracing::info!(
            user_id,
            released = done.rows_affected(),
            "released reservations of dead writers"
        );
    }
    Ok(done.rows_affected())
}

/// Release every reservation whose owner process is dead (its advisory lock is gone) or that
/// expired, for every user; returns how many. Never touches a live process's reservations.
/// Run at daemon start and by `tinydc quota recalc`.
pub async fn release_stale(db: &PgPool) -> Result<u64, QuotaError> {
    let mut tx = db.begin().await?;
    let users: Vec<(i64, i64)> = sqlx::query_as(&format!(
        "WITH gone AS (
             DELETE FROM quota_reservations r
             WHERE r.charged IS NULL
               AND (r.expires_at <= now() OR (r.owner IS NOT NULL AND NOT {OWNER_ALIVE}))
             RETURNING user_id)
         SELECT user_id, count(*) FROM gone GROUP BY user_id ORDER BY user_id"
    ))
    .fetch_all(&mut *tx)
    .await?;
    let total: u64 = users.iter().map(|(_, n)| *n as u64).sum();
    tx.commit().await?;
    if total > 0 {
        tracing::info!(
            released = total,
            users = users.len(),
            "released reservations of dead writers"
        );
    }
    Ok(total)
}

/// How many reservations [`release_stale`] would release now (owner dead, or expired).
pub async fn count_stale(db: &PgPool) -> Result<u64, QuotaError> {
    let (n,): (i64,) = sqlx::query_as(&format!(
        "SELECT count(*) FROM quota_reservations r
         WHERE r.charged IS NULL
           AND (r.expires_at <= now() OR (r.owner IS NOT NULL AND NOT {OWNER_ALIVE}))"
    ))
    .fetch_one(db)
    .await?;
    Ok(n.max(0) as u64)
}

/// Every user's recorded usage: (id, address, mail bytes, file bytes), by address.
pub async fn recorded_usage(conn: &mut PgConnection) -> Result<Vec<(i64, String, u64, u64)>, QuotaError> {
    let rows = sqlx::query!(
        r#"SELECT u.id, u.address,
                u.mail_bytes + coalesce(sum(q.bytes) FILTER (WHERE q.charged = 'mail'), 0)::bigint AS "mail_bytes!",
                u.file_bytes + coalesce(sum(q.bytes) FILTER (WHERE q.charged = 'files'), 0)::bigint AS "file_bytes!"
         FROM users u LEFT JOIN quota_reservations q ON q.user_id = u.id AND q.charged IS NOT NULL
         GROUP BY u.id ORDER BY u.address"#
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.id, r.address, r.mail_bytes.max(0) as u64, r.file_bytes.max(0) as u64))
        .collect())
}

/// Give a reservation's space back (the write failed or was abandoned).
pub async fn release(db: &PgPool, reservation: Reservation) -> Result<(), QuotaError> {
    if reservation.id == Reservation::UNLIMITED {
        return Ok(());
    }
    // Never a charged delta: a write that did commit keeps its usage.
    sqlx::query!(
        "DELETE FROM quota_reservations WHERE id = $1 AND charged IS NULL",
        reservation.id
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Give back several reservations at once, by id (a delivery whose transaction rolled back:
/// its reservations were left in place).
pub async fn release_ids(db: &PgPool, ids: &[i64]) -> Result<(), QuotaError> {
    if ids.iter().all(|&id| id == Reservation::UNLIMITED) {
        return Ok(());
    }
    sqlx::query!(
        "DELETE FROM quota_reservations WHERE id = ANY($1) AND charged IS NULL",
        ids
    )
    .execute(db)
    .await?;
    Ok(())
}

/// How [`commit`] charged a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// Reserved without a limit and still without one at the commit: a charged delta, no
    /// warning level can have been crossed ([`warn::after_unlimited_write`] is enough).
    WithoutLimit,
    /// Against a limit (or one found set since the reservation): [`warn::after_write`] is due.
    AgainstLimit,
}

/// Inside the writer's transaction: turn the reservation into `actual` bytes of usage. When
/// `actual` is more than was reserved, the excess must fit too, else `Exceeded` (and the caller
/// rolls back).
///
/// Call it before the transaction locks any mailbox or blob row (lock order in
/// `mailstore`'s module docs: users, then reservations, then mailboxes).
pub async fn commit(
    conn: &mut PgConnection,
    reservation: Reservation,
    actual: u64,
    usage: Usage,
) -> Result<Committed, QuotaError> {
    // The common case touches the reservation's own row only, not the user's: the reservation
    // becomes a charged delta of `actual` bytes in place (migration 0016). Every other writer's
    // check counts that row either way (as the reservation before our commit, as usage after),
    // and never less than we write, so the limit holds with no overshoot, and this
    // transaction holds no lock another writer of the account waits for through its commit.
    if reservation.id == Reservation::UNLIMITED {
        if actual == 0 {
            return Ok(Committed::WithoutLimit);
        }
        // Reserved without a limit: the write is a delta as long as there is still none (the
        // mail store's one-statement delivery, `mailstore::insert_unlimited`, writes the same
        // delta under the same condition: keep the two alike). The
        // insert's foreign key check only share-locks the user's row (FOR KEY SHARE), which the
        // quota's own locks (FOR NO KEY UPDATE) do not wait for.
        let inserted = sqlx::query_scalar!(
            "INSERT INTO quota_reservations (user_id, bytes, expires_at, charged)
             SELECT id, $2, 'infinity', $3 FROM users WHERE id = $1 AND quota_limit IS NULL
             RETURNING id",
            reservation.user_id,
            actual.min(i64::MAX as u64) as i64,
            usage.column_tag(),
        )
        .fetch_optional(&mut *conn)
        .await?;
        if inserted.is_some() {
            return Ok(Committed::WithoutLimit);
        }
        charge(conn, reservation.user_id, usage, actual).await?;
        return Ok(Committed::AgainstLimit);
    }
    let converted = sqlx::query!(
        "UPDATE quota_reservations SET bytes = $3, charged = $4, owner = NULL, expires_at = 'infinity'
         WHERE id = $1 AND user_id = $2 AND charged IS NULL AND bytes >= $3 AND expires_at > now()
         RETURNING id",
        reservation.id,
        reservation.user_id,
        actual.min(i64::MAX as u64) as i64,
        usage.column_tag(),
    )
    .fetch_optional(&mut *conn)
    .await?;
    if converted.is_some() {
        return Ok(Committed::AgainstLimit);
    }
    // The write outgrew its reservation, or the reservation is gone (its owner's lock was lost,
    // or it expired): under the user's row lock, the whole write must fit now, counting the
    // reservation's own space if it is still there.
    let info = locked_info(conn, reservation.user_id).await?;
    let held = sqlx::query!(
        r#"DELETE FROM quota_reservations WHERE id = $1 AND charged IS NULL
           RETURNING bytes, expires_at > now() AS "live!""#,
        reservation.id
    )
    .fetch_optional(&mut *conn)
    .await?;
    let own = held.filter(|h| h.live).map_or(0, |h| h.bytes.max(0) as u64);
    let available = info.available().saturating_add(own);
    if actual > available {
        return Err(QuotaError::Exceeded {
            requested: actual,
            available,
        });
    }
    add_usage(conn, reservation.user_id, usage, actual).await?;
    Ok(Committed::AgainstLimit)
}

/// How long the deltas of writes without a limit wait to be folded together ([`FoldQueue`]).
const FOLD_GATHER: Duration = Duration::from_secs(1);

/// Users of this process whose charged deltas are to be folded in a batch ([`FoldQueue::fold_later`]).
///
/// A write by a user without a limit needs no warning check ([`warn::after_unlimited_write`]),
/// so its delta need not be folded before the answer: a task folds every user's deltas queued
/// within [`FOLD_GATHER`] in one statement. `info` and every check count deltas not folded
/// yet, so usage is exact meanwhile; a process that dies first leaves deltas that the next
/// write's fold or the daemon start fold (issue #12: the fold and read after each write was a
/// third of PostgreSQL's time per APPEND and SMTP delivery).
#[derive(Debug)]
pub struct FoldQueue {
    /// The users waiting; no bound beyond the number of users.
    users: crate::gather::Gather<i64>,
}

impl Default for FoldQueue {
    fn default() -> FoldQueue {
        FoldQueue {
            users: crate::gather::Gather::new(FOLD_GATHER, usize::MAX, usize::MAX),
        }
    }
}

impl FoldQueue {
    /// Fold the deltas of `user_ids` within [`FOLD_GATHER`], on a task of this process.
    pub fn fold_later(self: &Arc<Self>, db: &PgPool, user_ids: &[i64]) {
        if self.users.add(user_ids.iter().copied()).start {
            let queue = self.clone();
            let db = db.clone();
            // A span of its own, so its statement is not counted as the cost of whichever
            // command it overlaps (imapd/tests/round_trips.rs).
            let span = tracing::debug_span!("fold_usage");
            tokio::spawn(tracing::Instrument::instrument(
                async move { queue.users.run(|users| fold_batch(&db, users)).await },
                span,
            ));
        }
    }
}

/// [`fold`] for any number of users, logging failures (the deltas stay for a later fold).
async fn fold_batch(db: &PgPool, users: Vec<i64>) {
    // In slices, so one statement never carries an unbounded id list.
    for chunk in users.chunks(500) {
        if let Err(e) = fold(db, chunk).await {
            tracing::warn!(
                users = chunk.len(),
                "folding usage deltas (done again on a later write): {e}"
            );
        }
    }
}

/// Fold the charged deltas of `user_ids` into their `users` rows (after their writers
/// committed; [`warn::after_write`] calls this), so the row's counters are current for every
/// reader. One round trip, committed without waiting for the WAL flush: the fold moves bytes
/// from one committed place to another in one transaction, so losing it in a crash leaves the
/// deltas where they were (folded on the next write, or at daemon start). A user whose row is
/// locked by another transaction just now is skipped, not waited for: their deltas are counted
/// wherever usage is read here, and folded next time; so is a delta row another transaction
/// holds (a refund folding it itself, [`refund`]), so no two folds wait on each other.
pub async fn fold(db: &PgPool, user_ids: &[i64]) -> Result<(), QuotaError> {
    if user_ids.is_empty() {
        return Ok(());
    }
    sqlx::query(concat!(
        fold_ctes!(),
        " UPDATE users SET mail_bytes = users.mail_bytes + s.mail, file_bytes = users.file_bytes + s.files
          FROM s WHERE users.id = s.user_id"
    ))
    .bind(user_ids)
    .execute(db)
    .await?;
    Ok(())
}

/// The common part of [`fold`] and [`fold_and_read`], for the users in `$1` (a bigint array),
/// one prepared statement each (its plan is kept, issue #12; the text used to be built per call
/// and planned every time): `cfg` makes the statement's own implicit transaction commit without
/// waiting for the WAL flush (`set_config(name, value, true)` is `SET LOCAL`, in force until
/// that commit); `locked` takes the users' rows that are free (after `cfg`, through its
/// `EXISTS`); `f` deletes their delta rows that no other transaction holds; `s` sums them per
/// user.
macro_rules! fold_ctes {
    () => {
        "WITH cfg AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true)),
         locked AS (SELECT id FROM users WHERE id = ANY($1) AND EXISTS (SELECT 1 FROM cfg)
                    ORDER BY id FOR NO KEY UPDATE SKIP LOCKED),
         f AS (DELETE FROM quota_reservations WHERE id IN (
                   SELECT q.id FROM quota_reservations q JOIN locked ON q.user_id = locked.id
                   WHERE q.charged IS NOT NULL FOR UPDATE OF q SKIP LOCKED)
               RETURNING user_id, bytes, charged),
         s AS (SELECT user_id,
                      coalesce(sum(bytes) FILTER (WHERE charged = 'mail'), 0) AS mail,
                      coalesce(sum(bytes) FILTER (WHERE charged = 'files'), 0) AS files
               FROM f GROUP BY user_id)"
    };
}
use fold_ctes;

/// [`fold`], and in the same round trip the committed usage of each of `user_ids` (limit, level
/// warned about, mail and file bytes with every delta counted), for [`warn::after_write`]: one
/// round trip after each write instead of two (issue #12). The usage is read from the
/// statement's snapshot, in which the deltas being folded are still rows and the `users` row
/// does not have them yet, so the sum is the same either way; a user skipped by the fold (row
/// locked) is read all the same.
pub(crate) async fn fold_and_read(db: &PgPool, user_ids: &[i64]) -> Result<Vec<warn::Committed>, QuotaError> {
    if user_ids.is_empty() {
        return Ok(Vec::new());
    }
    use sqlx::Row as _;
    let rows = sqlx::query(concat!(
        fold_ctes!(),
        ", fold_done AS (UPDATE users SET mail_bytes = users.mail_bytes + s.mail, file_bytes = users.file_bytes + s.files
                         FROM s WHERE users.id = s.user_id RETURNING 1)
         SELECT u.id, u.address, d.name AS domain, u.quota_limit, u.quota_warned,
                (u.mail_bytes + (SELECT coalesce(sum(bytes), 0) FROM quota_reservations
                                 WHERE user_id = u.id AND charged = 'mail'))::bigint AS mail_bytes,
                (u.file_bytes + (SELECT coalesce(sum(bytes), 0) FROM quota_reservations
                                 WHERE user_id = u.id AND charged = 'files'))::bigint AS file_bytes
         FROM users u JOIN domains d ON d.id = u.domain_id WHERE u.id = ANY($1)"
    ))
    .bind(user_ids)
    .fetch_all(db)
    .await?;
    let mut read = Vec::with_capacity(rows.len());
    for row in rows {
        read.push(warn::Committed {
            id: row.try_get("id")?,
            address: row.try_get("address")?,
            domain: row.try_get("domain")?,
            quota_limit: row.try_get("quota_limit")?,
            quota_warned: row.try_get("quota_warned")?,
            mail_bytes: row.try_get("mail_bytes")?,
            file_bytes: row.try_get("file_bytes")?,
        });
    }
    Ok(read)
}

/// Fold every user's charged deltas (daemon start, `tinydc quota recalc`).
pub async fn fold_all(db: &PgPool) -> Result<(), QuotaError> {
    let users: Vec<i64> = sqlx::query_scalar!(
        "SELECT DISTINCT user_id FROM quota_reservations WHERE charged IS NOT NULL ORDER BY user_id"
    )
    .fetch_all(db)
    .await?;
    for chunk in users.chunks(500) {
        fold(db, chunk).await?;
    }
    Ok(())
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
    add_usage(conn, user_id, usage, bytes).await
}

/// Inside a transaction: give back `bytes` (a delete or an overwrite). An EXPUNGE does the
/// same in its one statement (`mailstore::Expunge::run`): keep the two alike. Returns whether the user
/// has been warned of a level (`users.quota_warned`): only then can the usage that fell re-arm
/// a warning, so only then is [`warn::after_write`] due after the commit.
pub async fn refund(conn: &mut PgConnection, user_id: i64, usage: Usage, bytes: u64) -> Result<bool, QuotaError> {
    if bytes == 0 {
        return Ok(false);
    }
    // A refund is clamped at zero against the whole usage, so the user's deltas of that kind are
    // folded into the row in the same statement first: clamped against the row alone, a refund
    // of bytes still held in a delta would be lost (and usage overcounted). Dynamic: the column
    // differs by kind and only integers are bound.
    let column = match usage {
        Usage::Mail => "mail_bytes",
        Usage::Files => "file_bytes",
    };
    let warned: Option<bool> = sqlx::query_scalar(&format!(
        "WITH f AS (DELETE FROM quota_reservations WHERE user_id = $1 AND charged = $3 RETURNING bytes)
         UPDATE users SET {column} = greatest({column} + (SELECT coalesce(sum(bytes), 0) FROM f)::bigint - $2, 0)
         WHERE id = $1 RETURNING quota_warned > 0"
    ))
    .bind(user_id)
    .bind(bytes.min(i64::MAX as u64) as i64)
    .bind(usage.column_tag())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(warned.unwrap_or(false))
}

/// Inside a transaction holding the user's row: add `bytes` to the user's usage (a refund is
/// [`refund`], which folds the user's deltas first).
async fn add_usage(conn: &mut PgConnection, user_id: i64, usage: Usage, bytes: u64) -> Result<(), QuotaError> {
    if bytes == 0 {
        return Ok(());
    }
    let delta = bytes.min(i64::MAX as u64) as i64;
    match usage {
        Usage::Mail => {
            sqlx::query!(
                "UPDATE users SET mail_bytes = greatest(mail_bytes + $2, 0) WHERE id = $1",
                user_id,
                delta
            )
            .execute(&mut *conn)
            .await?
        }
        Usage::Files => {
            sqlx::query!(
                "UPDATE users SET file_bytes = greatest(file_bytes + $2, 0) WHERE id = $1",
                user_id,
                delta
            )
            .execute(&mut *conn)
            .await?
        }
    };
    Ok(())
}

/// Inside a transaction: set a user's file usage to `bytes` counted from their tree (davd's
/// recovery after a crash, when a journaled step could not be told done or redone).
pub async fn set_file_bytes(conn: &mut PgConnection, user_id: i64, bytes: u64) -> Result<(), QuotaError> {
    // The count replaces the file deltas charged so far too.
    sqlx::query!(
        "WITH d AS (DELETE FROM quota_reservations WHERE user_id = $1 AND charged = 'files')
         UPDATE users SET file_bytes = $2 WHERE id = $1",
        user_id,
        bytes.min(i64::MAX as u64) as i64
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Set or clear (`None`) a user's limit.
pub async fn set_limit(db: &PgPool, user_id: i64, limit: Option<u64>) -> Result<(), QuotaError> {
    let mut tx = db.begin().await?;
    let updated = sqlx::query!(
        "UPDATE users SET quota_limit = $2 WHERE id = $1",
        user_id,
        limit.map(|l| l.min(i64::MAX as u64) as i64)
    )
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(QuotaError::UnknownUser);
    }
    // Sent at commit: a session that remembers the user had no limit forgets it
    // (`Events::limits_epoch`); until it hears, `commit` still checks the limit under the
    // user's row lock.
    crate::events::notify(&mut tx, &crate::events::Event::QuotaLimit { user_id }).await?;
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
    // Writes in progress commit their reservations without the user's row (`commit`): wait for
    // those that already did so, and hold the others back until the recount is in, so every
    // message is counted once (by the sum below, or by its delta after we commit). FOR UPDATE
    // (not the quota's usual NO KEY UPDATE) also waits for, and holds back, the deltas that
    // writers of a user without a limit insert.
    sqlx::query!("SELECT id FROM users WHERE id = $1 FOR UPDATE", user_id)
        .fetch_optional(&mut *tx)
        .await?;
    let before = locked_info(&mut tx, user_id).await?;
    sqlx::query!(
        "SELECT id FROM quota_reservations WHERE user_id = $1 FOR UPDATE",
        user_id
    )
    .fetch_all(&mut *tx)
    .await?;
    // The mail store owns mailboxes and messages; it sums them. IMAP METADATA entries are
    // charged as mail too (shared/src/metadata.rs).
    let mail_after =
        mailstore::user_mail_bytes(&mut tx, user_id).await? + crate::metadata::user_bytes(&mut tx, user_id).await?;
    sqlx::query!(
        "WITH d AS (DELETE FROM quota_reservations WHERE user_id = $1 AND charged IS NOT NULL)
         UPDATE users SET mail_bytes = $2, file_bytes = $3 WHERE id = $1",
        user_id,
        mail_after.min(i64::MAX as u64) as i64,
        files_after.min(i64::MAX as u64) as i64
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Recount {
        user_id,
        mail_before: before.mail_bytes,
        mail_after,
        files_before: before.file_bytes,
        files_after,
    })
}

/// Bytes of regular files under `root`, not following symlinks; temp files of uploads in
/// progress (`.tinydc-upload-*`) and folders set aside by a DELETE are not counted.
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
/// skipped; the walk keeps its own stack, so depth costs no call stack. A folder named with
/// [`UPLOAD_TEMP_PREFIX`] (one a DELETE set aside, davd's journal.rs) is not entered.
pub fn for_each_file(root: &std::path::Path, visit: impl FnMut(&std::fs::DirEntry, &std::fs::Metadata)) {
    for_each_file_and_set_aside(root, visit, |_| {});
}

/// [`for_each_file`], and `set_aside` for each folder named with [`UPLOAD_TEMP_PREFIX`] it
/// meets (not entered): a deleted folder whose contents are still being removed, or were not
/// by a crash (davd's start sweep removes them).
pub fn for_each_file_and_set_aside(
    root: &std::path::Path,
    mut visit: impl FnMut(&std::fs::DirEntry, &std::fs::Metadata),
    mut set_aside: impl FnMut(&std::path::Path),
) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                if entry
                    .file_name()
                    .as_encoded_bytes()
                    .starts_with(UPLOAD_TEMP_PREFIX.as_bytes())
                {
                    set_aside(&entry.path());
                } else {
                    stack.push(entry.path());
                }
            } else if meta.is_file() {
                visit(&entry, &meta);
            }
        }
    }
}

/// Name prefix of davd's temporary upload files (not counted as usage until renamed into place),
/// and of the folders a DELETE set aside while their contents are removed (never counted).
pub const UPLOAD_TEMP_PREFIX: &str = ".tinydc-upload-";

/// This process's owner identity for one database: the id its reservations carry, and the
/// connection that holds the session advisory lock on that id for the life of the process. When
/// the process dies the kernel closes that connection, PostgreSQL ends its backend and the lock
/// goes with it.
///
/// In a daemon the lock is held on the event listener's connection (see
/// [`crate::events::Events::start_with`]), so a daemon keeps one backend besides its pool, not
/// two, and none while idle (issue #12: each idle backend costs a few MiB): the listener gives its
/// connection (and with it this lock) up only when no reservation under the id is outstanding,
/// and a writer takes an [`Owner::interest`] so it is connected again with a new id. The listener publishes the id it holds; when its
/// connection is lost (a database restart) it publishes nothing until it has reconnected and
/// taken a fresh id, and writers wait (bounded) for it. A process without a listener (the
/// `tinydc` CLI, some tests) takes a dedicated connection on first use, on which nothing is sent
/// again.
pub struct Owner {
    slot: tokio::sync::Mutex<Option<(i32, PgConnection)>>,
    /// Whether an event listener holds this owner's lock (then `slot` stays empty).
    listened: AtomicBool,
    /// That listener's demand: a writer that needs the owner id takes an interest in it, which
    /// connects the listener if it had given its connection up.
    demand: Mutex<Option<Arc<crate::events::Demand>>>,
    /// The id whose lock the listener holds now (None while it reconnects).
    listener_id: watch::Sender<Option<i32>>,
}

/// One owner per database per process (tests run many databases in one process).
fn owners() -> &'static Mutex<HashMap<String, Arc<Owner>>> {
    static OWNERS: std::sync::OnceLock<Mutex<HashMap<String, Arc<Owner>>>> = std::sync::OnceLock::new();
    OWNERS.get_or_init(Default::default)
}

/// Which database a pool reaches (the key of the per-database registries here).
fn db_key(db: &PgPool) -> String {
    let o = db.connect_options();
    format!(
        "{}|{}|{:?}|{}",
        o.get_host(),
        o.get_port(),
        o.get_socket(),
        o.get_database().unwrap_or("")
    )
}

impl Owner {
    /// The owner of this process for `db`'s database (made on first use, locked on first `id`).
    pub async fn of(db: &PgPool) -> Result<Arc<Owner>, QuotaError> {
        Ok(Owner::for_db(db))
    }

    pub(crate) fn for_db(db: &PgPool) -> Arc<Owner> {
        let mut map = owners().lock().unwrap_or_else(|e| e.into_inner());
        map.entry(db_key(db))
            .or_insert_with(|| {
                Arc::new(Owner {
                    slot: tokio::sync::Mutex::new(None),
                    listened: AtomicBool::new(false),
                    demand: Mutex::new(None),
                    listener_id: watch::Sender::new(None),
                })
            })
            .clone()
    }

    /// Keep the event listener that holds this owner's lock connected (connecting it if it
    /// had given its connection up) while the guard lives: taken by a writer before it reads
    /// [`Owner::id`] and until its reservation is committed to the database, so the lock cannot
    /// be given up in between (the listener gives it up only with none outstanding). None
    /// without a listener (the dedicated connection is held for the process's life).
    pub fn interest(&self) -> Option<crate::events::Interest> {
        let demand = self.demand.lock().unwrap_or_else(|e| e.into_inner());
        demand.as_ref().map(|d| d.take())
    }

    /// The owner id: the one the listener holds (waiting for it while it reconnects), or else
    /// a fresh id and its lock on a new dedicated connection if none is held.
    pub async fn id(&self, db: &PgPool) -> Result<i32, QuotaError> {
        // Bounded: with the database down, writers get an error soon rather than queue here.
        let deadline = tokio::time::Instant::now() + OWNER_CONNECT_TIMEOUT;
        if self.listened.load(Ordering::Acquire) {
            // A listener that gave its connection up connects again for us.
            let _wake = self.interest();
            let mut rx = self.listener_id.subscribe();
            let waited = tokio::time::timeout_at(
                deadline,
                rx.wait_for(|id| id.is_some() || !self.listened.load(Ordering::Acquire)),
            )
            .await;
            match waited {
                Ok(Ok(id)) => {
                    if let Some(id) = *id {
                        return Ok(id);
                    }
                    // The listener stopped: fall through to a dedicated connection.
                }
                Ok(Err(_)) => {} // the sender lives in self: cannot happen
                Err(_) => {
                    tracing::warn!("quota owner: the event listener has not re-taken its lock; refusing the write");
                    return Err(QuotaError::Db(sqlx::Error::PoolTimedOut));
                }
            }
        }
        let mut slot = self.slot.lock().await;
        if let Some((id, _)) = &*slot {
            return Ok(*id);
        }
        let mut conn = tokio::time::timeout_at(deadline, PgConnection::connect_with(&db.connect_options()))
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        let id = take_owner_lock(&mut conn, None).await?;
        *slot = Some((id, conn));
        Ok(id)
    }

    /// Our lock on `id` is gone (its connection broke): the next `id` call takes a new one (or,
    /// with a listener, waits for the one it takes when it reconnects).
    async fn lost(&self, id: i32) {
        self.listener_id.send_if_modified(|held| {
            let gone = *held == Some(id);
            if gone {
                *held = None;
            }
            gone
        });
        let mut slot = self.slot.lock().await;
        if matches!(&*slot, Some((held, _)) if *held == id) {
            *slot = None;
        }
    }

    /// An event listener offers to hold the lock on its connection. True when it now does (the
    /// first listener of this database in the process); it must then [`Owner::publish`] the id
    /// it holds and [`Owner::detach_listener`] when it stops.
    pub(crate) fn attach_listener(&self, demand: Arc<crate::events::Demand>) -> bool {
        let attached = self
            .listened
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if attached {
            *self.demand.lock().unwrap_or_else(|e| e.into_inner()) = Some(demand);
        }
        attached
    }

    /// The listener holds the lock on `id` now (None: its connection was lost).
    pub(crate) fn publish(&self, id: Option<i32>) {
        self.listener_id.send_replace(id);
    }

    /// The listener stops holding the lock: writers fall back to a dedicated connection.
    pub(crate) fn detach_listener(&self) {
        self.demand.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.listened.store(false, Ordering::Release);
        self.listener_id.send_replace(None);
    }
}

/// Take the owner lock on `conn`'s session: `keep` again when this session still holds it (a
/// listener error that did not break its connection), or else a fresh id from the sequence.
/// A lost id is never taken again, so a reservation released as stale stays released.
pub(crate) async fn take_owner_lock<C>(conn: &mut C, keep: Option<i32>) -> sqlx::Result<i32>
where
    for<'e> &'e mut C: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    if let Some(id) = keep {
        let held = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM pg_locks
                WHERE pid = pg_backend_pid() AND locktype = 'advisory' AND granted AND objsubid = 2
                  AND classid = $1::integer::oid AND objid = $2::integer::oid) AS "held!""#,
            OWNER_LOCK_CLASS,
            id
        )
        .fetch_one(&mut *conn)
        .await?;
        if held {
            return Ok(id);
        }
    }
    // Ids come from a sequence, so a live owner's id is only met again after 2^31 owners;
    // the try-lock skips such an id rather than share it.
    let id = loop {
        let id = sqlx::query_scalar!(r#"SELECT nextval('quota_owner_seq')::integer AS "id!""#)
            .fetch_one(&mut *conn)
            .await?;
        let locked = sqlx::query_scalar!(
            r#"SELECT pg_try_advisory_lock($1, $2) AS "locked!""#,
            OWNER_LOCK_CLASS,
            id
        )
        .fetch_one(&mut *conn)
        .await?;
        if locked {
            break id;
        }
    };
    tracing::debug!(owner = id, "quota reservation owner lock taken");
    Ok(id)
}

/// At daemon start: take this process's owner lock now and release the reservations of every
/// dead process. Returns how many were released.
pub async fn start_owner(db: &PgPool) -> Result<u64, QuotaError> {
    Owner::of(db).await?.id(db).await?;
    // Deltas whose fold was lost in a crash (or skipped) are folded now.
    fold_all(db).await?;
    release_stale(db).await
}

/// Refuse writes that would leave less than `min_free` bytes free on the filesystems of `dirs`.
#[derive(Debug, Clone)]
struct DiskGuard {
    dirs: Vec<PathBuf>,
    min_free: u64,
}

fn disk_guards() -> &'static Mutex<HashMap<String, DiskGuard>> {
    static GUARDS: std::sync::OnceLock<Mutex<HashMap<String, DiskGuard>>> = std::sync::OnceLock::new();
    GUARDS.get_or_init(Default::default)
}

/// Guard the storage of `db`'s data directory: from now on [`reserve`] refuses (`DiskFull`) a
/// write that would leave less than `min_free` bytes available on the filesystem of any of
/// `dirs` (the data directory and its blob and file folders, which may be mounts of their own).
/// The reserve keeps room for PostgreSQL's WAL in `DATA/pg`: a disk filled by uploads must not
/// stop the database. Checked on every reservation, so writes resume by themselves when space
/// returns.
pub fn guard_disk(db: &PgPool, dirs: Vec<PathBuf>, min_free: u64) {
    let mut map = disk_guards().lock().unwrap_or_else(|e| e.into_inner());
    map.insert(db_key(db), DiskGuard { dirs, min_free });
}

/// Bytes available to unprivileged writers on the filesystem holding `dir` (statvfs `f_bavail`).
#[allow(unsafe_code)] // statvfs(3): a plain libc call with no safe std equivalent.
pub fn available_space(dir: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `st` a writable statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Refuse (`DiskFull`) a write of `bytes` that would go into the reserve of `db`'s data
/// directory (see [`guard_disk`]); always `Ok` when no guard is set. [`reserve`] calls this;
/// writes without a reservation (outgoing mail) call it themselves.
pub fn check_disk(db: &PgPool, bytes: u64) -> Result<(), QuotaError> {
    let guard = {
        let map = disk_guards().lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&db_key(db)) {
            Some(g) => g.clone(),
            None => return Ok(()),
        }
    };
    for dir in &guard.dirs {
        // A folder not made yet lives on its parent's filesystem, which is checked too.
        let Ok(free) = available_space(dir) else { continue };
        let available = free.saturating_sub(guard.min_free);
        if bytes > available {
            tracing::warn!(dir = %dir.display(), free, reserve = guard.min_free, requested = bytes,
                "write refused: the disk is nearly full");
            return Err(QuotaError::DiskFull {
                requested: bytes,
                available,
            });
        }
    }
    Ok(())
}

/// Whether an I/O error means the disk (or the filesystem's own quota) is full: such a write is
/// refused as `DiskFull` (SMTP 452 4.3.1, IMAP NO [OVERQUOTA], WebDAV 507), never as a bug.
pub fn is_no_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}
