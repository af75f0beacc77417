//! The intent journal: file usage and the file tree agree across a crash (docs/ARCHITECTURE.md,
//! "Contracts": durability: "never ... usage that disagrees with what is stored").
//!
//! A quota change and the file system step it pays for cannot be one atomic act: the step
//! (rename or unlink) is not in the database. So every PUT, COPY, DELETE and MOVE:
//! 1. takes the user's journal lock (davd's file writes of one user run one at a time, so the
//!    size of a file being replaced cannot change under it);
//! 2. in one transaction charges/refunds the quota and inserts a `dav_journal` row naming the
//!    step (and removes the rows of earlier steps of this user, which are known to be done);
//! 3. commits, does the step and fsyncs the folder.
//!
//! The row is deleted lazily, by the user's next journaled transaction (no extra database
//! commit, so no extra fsync, on the normal path); davd's other changes of the tree (MKCOL,
//! removing a folder, LOCK creating an empty file) delete it first too. So a crash leaves at
//! most one row per user, naming the user's last change of the tree, and
//! [`Journal::recover_all`] (at start, before serving) finishes it: a temp file still there is
//! renamed into place, a file still there is unlinked or moved; a step that already happened
//! (told by the inode number it recorded) just loses its row. If a step can be neither found
//! done nor redone (e.g. a temp file lost by a power cut before its folder entry reached the
//! disk), the user's file usage is recounted from the tree; so it is after a step finished by
//! recovery (a crash is rare; the walk makes usage exact whatever happened in between, such as
//! a `tinydc quota recalc` while davd was down). Either way, once recovery has run, usage
//! equals `shared::quota::tree_bytes` of the tree.
//!
//! Assumes one davd per data directory (the lock is in this process; two davds of one data
//! directory cannot both bind its configured ports anyway).

use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use dav_server::fs::{FsError, FsResult};
use shared::mailstore::MailStore;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use tokio::sync::OwnedMutexGuard;

/// The one file system step a journaled operation does after its transaction commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Rename the fsynced temp file `temp` (inode `ino`) over `target` (PUT, COPY).
    Place { temp: PathBuf, target: PathBuf, ino: u64 },
    /// Unlink the file `target` (inode `ino`), or remove the folder `target` with everything
    /// in it (DELETE; a whole tree is one step, so one transaction and one refund; the folder
    /// is renamed aside and emptied after the answer, see [`Step::apply`]).
    Delete { target: PathBuf, ino: u64 },
    /// Rename `from` (inode `ino`, a file or a folder) to `to` (MOVE).
    Move { from: PathBuf, to: PathBuf, ino: u64 },
}

/// What replaying a leftover step found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replayed {
    /// The step had happened before the crash.
    AlreadyDone,
    /// The step had not happened; it has been done now.
    Finished,
    /// Neither: what the step needed is gone. Usage is recounted from the tree.
    Lost,
}

impl Step {
    fn op(&self) -> &'static str {
        match self {
            Step::Place { .. } => "place",
            Step::Delete { .. } => "delete",
            Step::Move { .. } => "move",
        }
    }

    fn ino(&self) -> u64 {
        match self {
            Step::Place { ino, .. } | Step::Delete { ino, .. } | Step::Move { ino, .. } => *ino,
        }
    }

    /// (path, source) as stored: relative to the user's root.
    fn stored(&self, root: &Path) -> FsResult<(Vec<u8>, Option<Vec<u8>>)> {
        let rel = |p: &Path| -> FsResult<Vec<u8>> {
            let r = p.strip_prefix(root).map_err(|_| FsError::Forbidden)?;
            Ok(r.as_os_str().as_bytes().to_vec())
        };
        Ok(match self {
            Step::Place { temp, target, .. } => (rel(target)?, Some(rel(temp)?)),
            Step::Delete { target, .. } => (rel(target)?, None),
            Step::Move { from, to, .. } => (rel(to)?, Some(rel(from)?)),
        })
    }

    fn from_stored(root: &Path, op: &str, path: &[u8], source: Option<&[u8]>, ino: i64) -> Option<Step> {
        let abs = |b: &[u8]| {
            let rel = Path::new(std::ffi::OsStr::from_bytes(b));
            // Stored by us, but a row is still input: nothing absolute or with `..`.
            rel.components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
                .then(|| root.join(rel))
        };
        let ino = ino as u64;
        match (op, source) {
            ("place", Some(s)) => Some(Step::Place {
                temp: abs(s)?,
                target: abs(path)?,
                ino,
            }),
            ("delete", None) => Some(Step::Delete {
                target: abs(path)?,
                ino,
            }),
            ("move", Some(s)) => Some(Step::Move {
                from: abs(s)?,
                to: abs(path)?,
                ino,
            }),
            _ => None,
        }
    }

    /// Do the step and make it durable. A folder a DELETE removes is renamed aside (a hidden
    /// name in the same folder) and only that rename is made durable before the answer; its
    /// contents are removed after it, in the background when `background` (a live request) and
    /// else at once (recovery).
    fn apply(&self, background: bool) -> std::io::Result<()> {
        match self {
            Step::Place { temp, target, .. } => {
                std::fs::rename(temp, target)?;
                sync_dir(target)
            }
            Step::Delete { target, .. } => {
                // remove_dir_all does not follow symbolic links.
                if target.symlink_metadata()?.is_dir() {
                    // issue #12: a DELETE of a folder of 1000 files waited for 1000 unlinks.
                    // Once the rename is durable the folder is gone for every client, the
                    // refund of all of it is committed, and what is inside is unreachable: a
                    // crash before its removal leaves a hidden folder that no listing shows, no
                    // usage count includes, and davd's start sweep removes
                    // (fs/upload.rs `sweep_stale_uploads`). A crash before the rename leaves the
                    // folder with its inode: recovery finishes the step.
                    let aside = target.with_file_name(format!(
                        "{}deleted-{}",
                        shared::quota::UPLOAD_TEMP_PREFIX,
                        uuid::Uuid::new_v4().simple()
                    ));
                    std::fs::rename(target, &aside)?;
                    sync_dir(target)?;
                    match tokio::runtime::Handle::try_current() {
                        Ok(runtime) if background => {
                            runtime.spawn_blocking(move || remove_set_aside(&aside));
                        }
                        _ => remove_set_aside(&aside),
                    }
                    Ok(())
                } else {
                    std::fs::remove_file(target)?;
                    // Only the file's entry in its folder needs to be durable.
                    sync_dir(target)
                }
            }
            Step::Move { from, to, .. } => {
                std::fs::rename(from, to)?;
                sync_dir(to)?;
                if from.parent() != to.parent() {
                    sync_dir(from)?;
                }
                Ok(())
            }
        }
    }

    /// Whether the step has not happened yet (what [`Step::replay`] would still do).
    pub fn pending(&self) -> bool {
        let has = |p: &Path, file_only: bool| {
            p.symlink_metadata()
                .is_ok_and(|m| m.ino() == self.ino() && (m.is_file() || (!file_only && m.is_dir())))
        };
        match self {
            Step::Place { temp, .. } => temp.symlink_metadata().is_ok_and(|m| m.is_file()),
            Step::Delete { target, .. } => has(target, false),
            Step::Move { from, .. } => has(from, false),
        }
    }

    /// Finish the step if it had not happened (idempotent).
    pub fn replay(&self) -> std::io::Result<Replayed> {
        let has = |p: &Path, file_only: bool| {
            p.symlink_metadata()
                .is_ok_and(|m| m.ino() == self.ino() && (m.is_file() || (!file_only && m.is_dir())))
        };
        match self {
            Step::Place { temp, target, .. } => {
                if temp.symlink_metadata().is_ok_and(|m| m.is_file()) {
                    self.apply(false)?;
                    Ok(Replayed::Finished)
                } else if has(target, true) {
                    // Renamed, but davd may have stopped before the folder's fsync: made
                    // durable here before the row is forgotten.
                    sync_dir(target)?;
                    Ok(Replayed::AlreadyDone)
                } else {
                    Ok(Replayed::Lost)
                }
            }
            Step::Delete { target, .. } => {
                if has(target, false) {
                    self.apply(false)?;
                    Ok(Replayed::Finished)
                } else {
                    Ok(Replayed::AlreadyDone)
                }
            }
            Step::Move { from, to, .. } => {
                if has(from, false) {
                    self.apply(false)?;
                    Ok(Replayed::Finished)
                } else if has(to, false) {
                    Ok(Replayed::AlreadyDone)
                } else {
                    Ok(Replayed::Lost)
                }
            }
        }
    }
}

/// Remove a folder a DELETE set aside, with everything in it (what is already gone, by a
/// concurrent sweep, is no error). A failure is logged; davd's next start removes the rest.
pub fn remove_set_aside(aside: &Path) {
    match std::fs::remove_dir_all(aside) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %aside.display(), "removing a deleted folder: {e} (removed at the next start)"),
    }
}

/// fsync the folder holding `path`, so a rename or unlink in it survives a power cut.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = path.parent().ok_or(std::io::ErrorKind::InvalidInput)?;
    std::fs::File::open(dir)?.sync_all()
}

/// A `dav_journal` row: id, op, path, source, ino.
type Row = (i64, String, Vec<u8>, Option<Vec<u8>>, i64);

/// Per-user journal state, behind the user's lock.
#[derive(Debug, Default)]
struct UserLog {
    /// Rows whose step is done; deleted by the user's next journaled transaction.
    done: Vec<i64>,
}

/// The journal of all users of this davd.
#[derive(Debug)]
pub struct Journal {
    db: PgPool,
    files_dir: PathBuf,
    /// The mail store, where quota warnings go (shared::quota::warn) after a change of usage.
    mail: MailStore,
    users: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<UserLog>>>>,
    /// Users with a row whose step may not be done: replayed before their next request.
    dirty: Mutex<HashSet<i64>>,
}

/// Test hook: simulate a crash at a point of an operation (see [`crash_at`]). Compiled only
/// with the `crash-hooks` feature, which only davd's own tests enable.
#[cfg(feature = "crash-hooks")]
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// The transaction (quota + journal row) committed; the file system step is not done.
    AfterCommit,
    /// The file system step fails once (an I/O error); davd itself has to recover at once.
    StepFails,
}

#[cfg(feature = "crash-hooks")]
static CRASH_ARMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
#[cfg(feature = "crash-hooks")]
static CRASHES: Mutex<Vec<(PathBuf, CrashPoint)>> = Mutex::new(Vec::new());

/// Test hook: the next journaled operation in the user tree `root` stops dead at `point`, as
/// if the process had died there (its client gets an error; nothing is cleaned up). A restart
/// of davd then has to recover. (Keyed by the tree, which is unique per test environment.)
#[cfg(feature = "crash-hooks")]
#[doc(hidden)]
pub fn crash_at(root: &Path, point: CrashPoint) {
    CRASHES
        .lock()
        .expect("crash hook lock")
        .push((root.to_path_buf(), point));
    CRASH_ARMED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Whether a test armed a crash at `point` for `root` (consumes it).
#[cfg(feature = "crash-hooks")]
fn crashes_here(root: &Path, point: CrashPoint) -> bool {
    if !CRASH_ARMED.load(std::sync::atomic::Ordering::Relaxed) {
        return false;
    }
    let mut crashes = CRASHES.lock().expect("crash hook lock");
    match crashes.iter().position(|c| c.0 == root && c.1 == point) {
        Some(i) => {
            crashes.remove(i);
            true
        }
        None => false,
    }
}

fn db_error(e: sqlx::Error) -> FsError {
    tracing::error!("database: {e}");
    FsError::GeneralFailure
}

impl Journal {
    pub fn new(db: PgPool, files_dir: PathBuf, mail: MailStore) -> Journal {
        Journal {
            db,
            files_dir,
            mail,
            users: Mutex::new(HashMap::new()),
            dirty: Mutex::new(HashSet::new()),
        }
    }

    pub fn db(&self) -> &PgPool {
        &self.db
    }

    /// After a committed change of `user_id`'s file usage: send or re-arm their quota warning
    /// (shared::quota::warn; failures are logged, the change stands).
    pub async fn usage_changed(&self, user_id: i64) {
        shared::quota::warn::after_write(&self.mail, &[user_id]).await;
    }

    fn root_of(&self, address: &str) -> PathBuf {
        self.files_dir.join(address)
    }

    fn is_dirty(&self, user_id: i64) -> bool {
        self.dirty.lock().expect("journal dirty lock").contains(&user_id)
    }

    fn set_dirty(&self, user_id: i64, dirty: bool) {
        let mut set = self.dirty.lock().expect("journal dirty lock");
        if dirty {
            set.insert(user_id);
        } else {
            set.remove(&user_id);
        }
    }

    /// Take `user_id`'s journal lock, finishing leftover steps first when there may be any.
    pub async fn lock(self: &Arc<Self>, user_id: i64, root: &Path) -> FsResult<UserGuard> {
        let log = self
            .users
            .lock()
            .expect("journal users lock")
            .entry(user_id)
            .or_default()
            .clone();
        let mut guard = UserGuard {
            journal: self.clone(),
            user_id,
            root: root.to_path_buf(),
            log: log.lock_owned().await,
            clearing: 0,
        };
        if self.is_dirty(user_id) {
            guard.recover().await.map_err(|e| {
                tracing::error!(user_id, "journal recovery: {e}");
                FsError::GeneralFailure
            })?;
        }
        Ok(guard)
    }

    /// Before serving `user_id`: make sure no step of theirs is left unfinished.
    pub async fn ready(self: &Arc<Self>, user_id: i64, root: &Path) -> FsResult<()> {
        if self.is_dirty(user_id) {
            self.lock(user_id, root).await?;
        }
        Ok(())
    }

    /// At start, before serving: finish every user's leftover steps. A user whose recovery
    /// fails is retried before their next request.
    pub async fn recover_all(self: &Arc<Self>) -> anyhow::Result<()> {
        let users = sqlx::query!("SELECT DISTINCT u.id, u.address FROM dav_journal j JOIN users u ON u.id = j.user_id")
            .fetch_all(&self.db)
            .await?;
        for u in users {
            let (user_id, address) = (u.id, u.address);
            self.set_dirty(user_id, true);
            let root = self.root_of(&address);
            if let Err(e) = self.lock(user_id, &root).await {
                tracing::error!(address, "cannot finish interrupted file operations yet: {e:?}");
            }
        }
        Ok(())
    }
}

/// What follows a committed change of a user's file usage (fs/commit.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageAfter {
    /// No usage changed.
    Unchanged,
    /// The quota warning check of the committed usage (`shared::quota::warn::after_write`),
    /// while the step is done (issue #12: its round trip overlaps the rename instead of
    /// following it); done before the answer.
    Check,
    /// Charged without a limit (`shared::quota::Committed::WithoutLimit`): no warning level can
    /// have been crossed; the usage delta is folded a moment later, nothing is read before the
    /// answer (`shared::quota::warn::after_unlimited_write`).
    FoldLater,
}

/// A user's journal lock: held from before the transaction until the step is done.
pub struct UserGuard {
    journal: Arc<Journal>,
    user_id: i64,
    root: PathBuf,
    log: OwnedMutexGuard<UserLog>,
    /// How many of `log.done` the open transaction deletes.
    clearing: usize,
}

impl UserGuard {
    pub fn db(&self) -> &PgPool {
        &self.journal.db
    }

    /// In the operation's transaction: record `step` (and forget rows known done). Returns
    /// the row id for [`UserGuard::commit_and_apply`].
    pub async fn record(&mut self, conn: &mut PgConnection, step: &Step) -> FsResult<i64> {
        let (path, source) = step.stored(&self.root)?;
        self.clearing = self.log.done.len();
        // A data-modifying WITH runs whether or not it is referenced: one round trip.
        let id: i64 = sqlx::query_scalar!(
            "WITH done AS (DELETE FROM dav_journal WHERE id = ANY($1))
             INSERT INTO dav_journal (user_id, op, path, source, ino) VALUES ($2, $3, $4, $5, $6) RETURNING id",
            &self.log.done,
            self.user_id,
            step.op(),
            path,
            source,
            step.ino() as i64,
        )
        .fetch_one(conn)
        .await
        .map_err(db_error)?;
        Ok(id)
    }

    /// Forget the rows known done (before a file system change that is not journaled).
    pub async fn settle(&mut self) -> FsResult<()> {
        if self.log.done.is_empty() {
            return Ok(());
        }
        sqlx::query!("DELETE FROM dav_journal WHERE id = ANY($1)", &self.log.done)
            .execute(&self.journal.db)
            .await
            .map_err(db_error)?;
        self.log.done.clear();
        Ok(())
    }

    /// Commit the operation's transaction, then do its step, with what follows the change of
    /// usage as `after` says (`UsageAfter::Unchanged` for none). On failure the user is marked
    /// for recovery, which is tried at once (so usage matches the tree again).
    pub async fn commit_and_apply(
        mut self,
        tx: Transaction<'static, Postgres>,
        id: i64,
        step: Step,
        after: UsageAfter,
    ) -> FsResult<()> {
        if let Err(e) = tx.commit().await {
            // Committed or not? The recovery reads the journal and knows.
            tracing::error!(?step, "journaled commit failed: {e}");
            self.journal.set_dirty(self.user_id, true);
            if self.recover().await.is_ok()
                && let Step::Place { temp, .. } = &step
            {
                // The row was not there (else the temp would have been placed): not committed.
                let _ = std::fs::remove_file(temp);
            }
            return Err(FsError::GeneralFailure);
        }
        let cleared = self.clearing;
        self.log.done.drain(..cleared);
        self.clearing = 0;
        #[cfg(feature = "crash-hooks")]
        if crashes_here(&self.root, CrashPoint::AfterCommit) {
            tracing::warn!(?step, "test hook: crash after commit");
            return Err(FsError::GeneralFailure);
        }
        let warning = match after {
            UsageAfter::Check => {
                let (journal, user_id) = (self.journal.clone(), self.user_id);
                Some(tokio::spawn(async move { journal.usage_changed(user_id).await }))
            }
            UsageAfter::FoldLater => {
                shared::quota::warn::after_unlimited_write(&self.journal.mail, &[self.user_id]);
                None
            }
            UsageAfter::Unchanged => None,
        };
        let s = step.clone();
        #[cfg(feature = "crash-hooks")]
        let fail = crashes_here(&self.root, CrashPoint::StepFails);
        #[cfg(not(feature = "crash-hooks"))]
        let fail = false;
        // The folder's fsync is part of the step, before the answer: it also makes durable
        // the temp file's own entry in that folder, which nothing fsynced before.
        let applied = tokio::task::spawn_blocking(move || {
            if fail {
                return Err(std::io::Error::other("test hook: the step fails"));
            }
            s.apply(true)
        });
        let result = match applied.await {
            Ok(Ok(())) => {
                self.log.done.push(id);
                Ok(())
            }
            outcome => {
                tracing::error!(?step, "file step after commit failed: {outcome:?}");
                self.journal.set_dirty(self.user_id, true);
                if let Err(e) = self.recover().await {
                    tracing::error!(user_id = self.user_id, "journal recovery: {e}");
                }
                Err(FsError::GeneralFailure)
            }
        };
        // The user's lock is not held for the warning check.
        drop(self);
        if let Some(warning) = warning
            && let Err(e) = warning.await
        {
            tracing::warn!("quota warning check task: {e}");
        }
        result
    }

    /// Finish or settle every row of this user; recount usage if a step was lost.
    async fn recover(&mut self) -> anyhow::Result<()> {
        let db = self.journal.db.clone();
        let rows: Vec<Row> = sqlx::query!(
            "SELECT id, op, path, source, ino FROM dav_journal WHERE user_id = $1 ORDER BY id",
            self.user_id,
        )
        .fetch_all(&db)
        .await?
        .into_iter()
        .map(|r| (r.id, r.op, r.path, r.source, r.ino))
        .collect();
        let mut recount = false;
        let mut ids = Vec::with_capacity(rows.len());
        for (id, op, path, source, ino) in rows {
            ids.push(id);
            let Some(step) = Step::from_stored(&self.root, &op, &path, source.as_deref(), ino) else {
                tracing::error!(id, op, "unreadable journal row; recounting usage");
                recount = true;
                continue;
            };
            let s = step.clone();
            let outcome = tokio::task::spawn_blocking(move || s.replay()).await?;
            match outcome {
                Ok(Replayed::AlreadyDone) => tracing::debug!(?step, "journal: step was done"),
                Ok(Replayed::Finished) => {
                    tracing::info!(?step, "journal: finished an interrupted step");
                    // The committed usage already counts the step, unless it was changed in
                    // between (`tinydc quota recalc` while davd was down): recount to be sure.
                    recount = true;
                }
                Ok(Replayed::Lost) => {
                    tracing::warn!(?step, "journal: interrupted step cannot be finished; recounting usage");
                    recount = true;
                }
                Err(e) => {
                    // Give up on it (it is retried forever otherwise): drop a temp file, recount.
                    tracing::error!(
                        ?step,
                        "journal: cannot finish an interrupted step ({e}); recounting usage"
                    );
                    if let Step::Place { temp, .. } = &step {
                        let _ = std::fs::remove_file(temp);
                    }
                    recount = true;
                }
            }
        }
        let mut tx = db.begin().await?;
        sqlx::query!("DELETE FROM dav_journal WHERE id = ANY($1)", &ids)
            .execute(&mut *tx)
            .await?;
        if recount {
            let root = self.root.clone();
            let bytes = tokio::task::spawn_blocking(move || shared::quota::tree_bytes(&root)).await?;
            shared::quota::set_file_bytes(&mut tx, self.user_id, bytes).await?;
            tracing::info!(user_id = self.user_id, bytes, "file usage recounted");
        }
        tx.commit().await?;
        self.log.done.clear();
        self.journal.set_dirty(self.user_id, false);
        Ok(())
    }
}

/// Forget every journal row (`tinydc restore`: the rows name temp files and inode numbers of
/// the disk the backup was taken from; the restored tree is whole as copied, and its usage is
/// recounted from it).
pub async fn forget_all(db: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!("DELETE FROM dav_journal")
        .execute(db)
        .await?
        .rows_affected())
}

/// Every path a journal row names (its `path` and `source`), by user id: a file step there may
/// not have happened yet, so `tinydc check` leaves the properties of those paths alone.
pub async fn journal_paths(db: &PgPool) -> Result<Vec<(i64, Vec<u8>)>, sqlx::Error> {
    let rows = sqlx::query!("SELECT user_id, path, source FROM dav_journal")
        .fetch_all(db)
        .await?;
    let mut out = Vec::new();
    for r in rows {
        out.push((r.user_id, r.path));
        if let Some(source) = r.source {
            out.push((r.user_id, source));
        }
    }
    Ok(out)
}

/// Users with a journaled step that has not happened yet (a WebDAV write between its commit and
/// its rename or unlink, or one a crash left for davd's recovery): their recorded file usage
/// already counts a change the tree does not show yet, so `tinydc check` neither reports nor
/// repairs a difference for them. `files_dir` is DATA/files. An unreadable row counts as pending.
pub async fn users_with_pending_steps(db: &PgPool, files_dir: &Path) -> Result<HashSet<i64>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT j.user_id, u.address, j.op, j.path, j.source, j.ino FROM dav_journal j JOIN users u ON u.id = j.user_id"
    )
    .fetch_all(db)
    .await?;
    let mut pending = HashSet::new();
    for r in rows {
        let root = files_dir.join(&r.address);
        let step = Step::from_stored(&root, &r.op, &r.path, r.source.as_deref(), r.ino);
        if step.is_none_or(|s| s.pending()) {
            pending.insert(r.user_id);
        }
    }
    Ok(pending)
}
