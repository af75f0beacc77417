//! Message bodies: content-addressed, immutable files under `DATA/blobs/ab/abcdef…` (sha256).
//!
//! A blob is written to `DATA/blobs/tmp/<random>`, fsynced, renamed to its name, and the
//! directory fsynced, before any metadata points at it: a crash leaves either no blob or a whole
//! one. References are counted in the `blobs` table inside the same transaction as the message
//! rows; [`BlobStore::sweep`] removes blobs nobody references and temp files left by crashes.
//!
//! A small body (at most [`PENDING_MAX`] bytes, issue #12) takes a shorter way: its file is
//! written and renamed without an fsync ([`BlobStore::write_unsynced_blocking`]) and the body is
//! also inserted into `blob_pending` in the transaction that references it (the mail store's
//! `insert_message`, in the statement that adds its `blobs` reference), so
//! that commit's one WAL flush makes body and rows durable together. After the commit the file
//! is fsynced in batches off the writer's path and the row deleted ([`BlobStore::settle_later`]);
//! after a crash, [`settle_all`] (run by every daemon at start and by the ops commands that read
//! blobs, before any blob is read) writes each body still listed back to its file first.

use std::io::{Read as _, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};

use crate::gather::Gather;

/// A blob's name: the lowercase hex sha256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobId(pub String);

impl BlobId {
    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> BlobId {
        BlobId(hex::encode(Sha256::digest(bytes)))
    }

    /// Whether `text` can be a blob's name (64 lowercase hex digits); only such names are ever
    /// made into paths.
    pub fn is_valid(text: &str) -> bool {
        text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }
}

impl std::fmt::Display for BlobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Bodies up to this many bytes are made durable by the commit of their rows (`blob_pending`)
/// instead of by fsyncs of their file and folder before it: 64 KiB covers most mail while
/// keeping the WAL's share of each body small.
pub const PENDING_MAX: usize = 64 * 1024;

/// At most this many committed bodies wait for their file's fsync per process; a writer that
/// finds the queue full settles its own body before answering (back-pressure, bounded memory).
const SETTLE_QUEUE_MAX: usize = 8192;

/// At most this many bodies are settled per round (one statement reads them, one deletes them).
const SETTLE_BATCH: usize = 256;

/// How long the settler lets bodies gather before each round, so a stream of APPENDs in one
/// session shares a round's journal commit and row deletion instead of paying both per body
/// (issue #12: settled one by one, the file, folder and root fsyncs and the deletion's WAL
/// flush took the disk from the next message's commit).
/// In the paced mixed IMAP load of `tinydc bench imap --compare` (10 sessions, 17-23 cycles/s,
/// an APPEND every 40-60 ms between them) 20 ms gathered one body per round, so every APPEND was
/// followed by a round of fsyncs and statements among the next commands of the sessions (FETCH,
/// STORE, EXPUNGE, whose commits' WAL flushes share the disk's journal with those fsyncs);
/// 100 ms gathers about two there.
const SETTLE_GATHER: Duration = Duration::from_millis(100);

/// What a sweep removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    pub blobs_removed: u64,
    pub bytes_freed: u64,
    pub temp_files_removed: u64,
}

/// The blob folder.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
    /// Bytes a write must leave free on the store's filesystem (`server.min_free_space`).
    min_free: u64,
    /// Committed small bodies whose files are still to be fsynced ([`Self::settle_later`]).
    settling: Arc<Gather<String>>,
    /// The store's folder, kept open once it exists: blobs are opened relative to it
    /// ([`Self::read_known_size_blocking`]), so each open walks two path components instead of
    /// the whole absolute path.
    root_dir: Arc<std::sync::OnceLock<std::fs::File>>,
}

impl BlobStore {
    /// The store at `root` (normally `DATA/blobs`); folders are made on first write.
    pub fn new(root: impl Into<PathBuf>) -> BlobStore {
        BlobStore {
            root: root.into(),
            min_free: 0,
            settling: Arc::new(Gather::new(SETTLE_GATHER, SETTLE_BATCH, SETTLE_QUEUE_MAX)),
            root_dir: Arc::default(),
        }
    }

    /// Refuse (as `ENOSPC`) a new blob that would leave less than `min_free` bytes free on the
    /// store's filesystem, so the database beside it keeps room for its WAL. Checked with the
    /// blob's real size, which the reservation made before it (an estimate) may not know.
    pub fn with_min_free(mut self, min_free: u64) -> BlobStore {
        self.min_free = min_free;
        self
    }

    /// The store's folder (`DATA/blobs`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a blob's file is.
    pub fn path(&self, id: &BlobId) -> PathBuf {
        self.root.join(&id.0[..2]).join(&id.0)
    }

    fn temp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Store `bytes` durably and return their id. Storing the same bytes twice writes once.
    pub async fn put(&self, bytes: &[u8]) -> std::io::Result<BlobId> {
        let id = BlobId::of(bytes);
        let store = self.clone();
        let data = bytes.to_vec();
        let id2 = id.clone();
        tokio::task::spawn_blocking(move || store.put_blocking(&id2, &data))
            .await
            .map_err(std::io::Error::other)??;
        Ok(id)
    }

    /// [`Self::put`] of bytes the caller shares: no copy is made, and the hash is computed on
    /// the blocking pool with the write rather than on an async worker thread.
    pub async fn put_shared(&self, bytes: Arc<Vec<u8>>) -> std::io::Result<BlobId> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let id = BlobId::of(&bytes);
            store.put_blocking(&id, &bytes).map(|()| id)
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Start storing `bytes` (whose id the caller computed, [`BlobId::of`]) on the blocking
    /// pool, for a writer that has other work to do meanwhile (the mail store runs its
    /// transaction's statements while the body is being fsynced). The blob is durable once
    /// [`PendingPut::wait`] returns `Ok`; nothing may point at it in a commit before that.
    /// Must be called inside the tokio runtime (a blocking-pool thread is fine).
    pub fn start_put(&self, id: BlobId, bytes: Arc<Vec<u8>>) -> PendingPut {
        let store = self.clone();
        PendingPut(tokio::task::spawn_blocking(move || store.put_blocking(&id, &bytes)))
    }

    fn put_blocking(&self, id: &BlobId, bytes: &[u8]) -> std::io::Result<()> {
        let target = self.path(id);
        if let Ok(file) = std::fs::File::open(&target) {
            // Stored already (the same body again, or an orphan a crash left).
            refresh_time(id, &file);
            return Ok(());
        }
        self.write_renamed(&target, bytes, true)
    }

    /// Write `bytes` to `target` through a temp file and a rename, so readers (and a process
    /// killed meanwhile) see the whole body or none. `durable`: the free space is checked, the
    /// file is fsynced before the rename and its folder after (a new folder recorded in its
    /// parent, `create_shard_dir`); otherwise the caller checked the space
    /// ([`Self::start_unsynced`]'s, or a committed body's file written again, which must not be
    /// refused) and both fsyncs wait for the settler (`settle_written` fsyncs the root too).
    /// The folders are made only when missing (the first write into each), not looked for on
    /// every write.
    fn write_renamed(&self, target: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
        if durable {
            self.check_space(bytes.len() as u64)?;
        }
        let temp_dir = self.temp_dir();
        let temp_file = || tempfile::Builder::new().prefix("blob-").tempfile_in(&temp_dir);
        let mut temp = match temp_file() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&temp_dir)?;
                temp_file()?
            }
            other => other?,
        };
        temp.write_all(bytes)?;
        if durable {
            temp.as_file().sync_all()?;
        }
        let dir = target.parent().expect("blob paths have a parent");
        match temp.persist(target) {
            Ok(_) => {}
            Err(e) if e.error.kind() == std::io::ErrorKind::NotFound => {
                if durable {
                    create_shard_dir(dir)?;
                } else {
                    std::fs::create_dir_all(dir)?;
                }
                e.file.persist(target).map_err(|e| e.error)?;
            }
            Err(e) => return Err(e.error),
        }
        if durable {
            sync_dir(dir)?;
        }
        Ok(())
    }

    /// Write a small body (at most [`PENDING_MAX`] bytes, hashed by the caller) to its file
    /// WITHOUT making it durable: the caller inserts it into `blob_pending` in the transaction
    /// that references it, and after the commit hands it to [`Self::settle_later`]. A file already there is kept only
    /// if it holds exactly these bytes (an operating-system crash can leave a renamed file
    /// without its data); otherwise it is replaced. The free space is not checked here (see
    /// `write_renamed`). Blocking I/O.
    pub fn write_unsynced_blocking(&self, id: &BlobId, bytes: &[u8]) -> std::io::Result<()> {
        debug_assert!(bytes.len() <= PENDING_MAX);
        let target = self.path(id);
        if same_contents(&target, bytes)? {
            if let Ok(file) = std::fs::File::open(&target) {
                refresh_time(id, &file);
            }
            return Ok(());
        }
        self.write_renamed(&target, bytes, false)
    }

    /// Start [`Self::write_unsynced_blocking`] on the blocking pool for a writer that sends its
    /// statement meanwhile: the commit makes the body durable through `blob_pending` whether
    /// its file is written yet or not, and the writer waits for the file after the commit and
    /// before it answers ([`UnsyncedPut::wait`]), so nobody is told of a message whose file is
    /// not there. The caller checks the free space first ([`Self::check_space`]). Must be
    /// called inside the tokio runtime.
    pub fn start_unsynced(&self, id: BlobId, bytes: Arc<Vec<u8>>) -> UnsyncedPut {
        let store = self.clone();
        UnsyncedPut(tokio::task::spawn_blocking(move || {
            store.write_unsynced_blocking(&id, &bytes)
        }))
    }

    /// After the commit that inserted `id` into `blob_pending`: fsync its file later, in a
    /// batch with others, then delete the row (a task of this process runs while ids wait).
    /// When too many wait already, the body is settled here before returning, so a writer
    /// never outruns the disk by more than [`SETTLE_QUEUE_MAX`] bodies. Errors are logged: the
    /// row stays and [`settle_all`] settles it at the next start.
    pub async fn settle_later(&self, db: &PgPool, id: BlobId) {
        let added = self.settling.add([id.0]);
        if !added.refused.is_empty()
            && let Err(e) = self.settle_written(db, &added.refused).await
        {
            tracing::warn!("making a message body's file durable: {e:#}");
        }
        if added.start {
            let store = self.clone();
            let db = db.clone();
            // In a span of its own, so its statements are told apart from the commands' in
            // logs (and in imapd/tests/round_trips.rs, which counts each command's).
            let span = tracing::debug_span!("settle_bodies");
            tokio::spawn(tracing::Instrument::instrument(
                async move { store.settling.run(|batch| store.settle_batch(&db, batch)).await },
                span,
            ));
        }
    }

    /// [`Self::settle_written`] for the settler's task, logging failures (the rows stay for
    /// [`settle_all`] at the next start).
    async fn settle_batch(&self, db: &PgPool, batch: Vec<String>) {
        if let Err(e) = self.settle_written(db, &batch).await {
            tracing::warn!(bodies = batch.len(), "making message bodies' files durable: {e:#}");
        }
    }

    /// Settle bodies this process wrote itself after their commits ([`Self::settle_later`]):
    /// `write_unsynced_blocking` left each file whole (written, or found holding exactly the
    /// body), so unlike [`Self::settle`] the bodies are not read back. Each row's version is
    /// read before the fsyncs and only that version deleted (as in `settle`); the deletion
    /// commits without waiting for its WAL flush: lost in a crash, it only leaves rows that
    /// [`settle_all`] settles again at the next start. A file found missing keeps its row.
    async fn settle_written(&self, db: &PgPool, ids: &[String]) -> anyhow::Result<u64> {
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT id, xmin::text FROM blob_pending WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(db)
            .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let store = self.clone();
        let synced = tokio::task::spawn_blocking(move || store.sync_written(rows)).await??;
        if synced.is_empty() {
            return Ok(0);
        }
        let (ids, versions): (Vec<String>, Vec<String>) = synced.into_iter().unzip();
        let mut conn = db.acquire().await?;
        Ok(delete_settled(&mut conn, &ids, &versions).await?)
    }

    /// The file side of [`Self::settle_written`]: writeback of every file started first, so the
    /// fsyncs that follow share journal commits, then each file, each folder once and the root
    /// (a shard folder may be new). Returns the rows whose files are now durable. Blocking I/O.
    fn sync_written(&self, rows: Vec<(String, String)>) -> std::io::Result<Vec<(String, String)>> {
        let mut open = Vec::with_capacity(rows.len());
        let mut dirs = std::collections::BTreeSet::new();
        for (id, version) in rows {
            let path = self.path(&BlobId(id.clone()));
            match std::fs::File::open(&path) {
                Ok(file) => {
                    start_writeback(&file, 0, 0);
                    dirs.insert(path.parent().expect("blob paths have a parent").to_path_buf());
                    open.push((id, version, file));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!(blob = %id, "a pending body's file is missing: left for the next start to write back");
                }
                Err(e) => return Err(e),
            }
        }
        for (_, _, file) in &open {
            file.sync_all()?;
        }
        for dir in &dirs {
            sync_dir(dir)?;
        }
        sync_dir(&self.root)?;
        Ok(open.into_iter().map(|(id, version, _)| (id, version)).collect())
    }

    /// Settle the pending bodies among `ids`: each file is checked against the body in its row
    /// (rewritten from it if different or missing), fsynced with its folder and the store's root,
    /// then the row deleted, in the version read here only (a writer that stored the same body
    /// again meanwhile keeps it listed; a row another transaction holds locked is left to that
    /// writer's own settling). Returns how many rows were deleted.
    async fn settle(&self, db: &PgPool, ids: &[String]) -> anyhow::Result<u64> {
        let rows = sqlx::query!(
            r#"SELECT id, xmin::text AS "version!", body FROM blob_pending WHERE id = ANY($1)"#,
            ids
        )
        .fetch_all(db)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let versions: Vec<(String, String)> = rows.iter().map(|r| (r.id.clone(), r.version.clone())).collect();
        let bodies: Vec<(BlobId, Vec<u8>)> = rows.into_iter().map(|r| (BlobId(r.id), r.body)).collect();
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.settle_files(&bodies)).await??;
        let (ids, versions): (Vec<String>, Vec<String>) = versions.into_iter().unzip();
        let mut conn = db.acquire().await?;
        Ok(delete_settled(&mut conn, &ids, &versions).await?)
    }

    /// The file side of [`Self::settle`]: every body whole in its file, fsynced, each folder
    /// holding one fsynced once, and the root (a shard folder may be new). Blocking I/O.
    fn settle_files(&self, bodies: &[(BlobId, Vec<u8>)]) -> std::io::Result<()> {
        let mut dirs = std::collections::BTreeSet::new();
        for (id, body) in bodies {
            if BlobId::of(body) != *id {
                // Never written to a file under a name it does not hash to.
                return Err(std::io::Error::other(format!(
                    "pending body {id} does not match its name"
                )));
            }
            let target = self.path(id);
            if same_contents(&target, body)? {
                std::fs::File::open(&target)?.sync_all()?;
            } else {
                tracing::info!(blob = %id, "rewriting a message body's file from the database");
                let temp_dir = self.temp_dir();
                std::fs::create_dir_all(&temp_dir)?;
                std::fs::create_dir_all(target.parent().expect("blob paths have a parent"))?;
                let mut temp = tempfile::Builder::new().prefix("blob-").tempfile_in(&temp_dir)?;
                temp.write_all(body)?;
                temp.as_file().sync_all()?;
                temp.persist(&target).map_err(|e| e.error)?;
            }
            dirs.insert(target.parent().expect("blob paths have a parent").to_path_buf());
        }
        for dir in &dirs {
            sync_dir(dir)?;
        }
        sync_dir(&self.root)
    }

    /// Start a blob whose bytes arrive piece by piece (an imported message read from a file):
    /// see [`BlobWriter`]. Blocking I/O: call it where blocking is fine.
    pub fn writer_blocking(&self) -> std::io::Result<BlobWriter> {
        self.check_space(0)?;
        let temp_dir = self.temp_dir();
        std::fs::create_dir_all(&temp_dir)?;
        let temp = tempfile::Builder::new().prefix("blob-").tempfile_in(&temp_dir)?;
        Ok(BlobWriter {
            store: self.clone(),
            temp: std::io::BufWriter::with_capacity(64 * 1024, temp),
            hasher: Sha256::new(),
            len: 0,
            checked: 0,
        })
    }

    /// Store everything `reader` yields as a blob, 64 KiB at a time (never the whole in
    /// memory); returns its id and length. Blocking I/O.
    pub fn put_reader_blocking(&self, mut reader: impl std::io::Read) -> std::io::Result<(BlobId, u64)> {
        let mut writer = self.writer_blocking()?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            writer.write(&buf[..n])?;
        }
        writer.finish()
    }

    /// Inside the writer's transaction, right after [`add_ref`] (which holds the blob's row
    /// lock): the file is still there. A sweep removes a file only while it holds that row
    /// (see [`Self::sweep`]), so a body [`Self::put`] found already stored and a sweep removed
    /// just before the reference was added is caught here: the write fails (a temporary error
    /// the client retries, which stores the body again) instead of committing a message whose
    /// body is gone.
    pub fn ensure_present(&self, id: &BlobId) -> std::io::Result<()> {
        match std::fs::metadata(self.path(id)) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(std::io::Error::other(format!(
                "message body {id} was removed by a sweep while being stored; try again"
            ))),
            Err(e) => Err(e),
        }
    }

    /// `ENOSPC` when `len` more bytes would go into the reserve (statvfs of the store, or of
    /// the nearest folder above it that exists).
    pub fn check_space(&self, len: u64) -> std::io::Result<()> {
        let Some(dir) = self.root.ancestors().find(|d| d.exists()) else {
            return Ok(());
        };
        let free = crate::quota::available_space(dir)?;
        if len.saturating_add(self.min_free) > free {
            tracing::warn!(
                free,
                reserve = self.min_free,
                len,
                "blob refused: the disk is nearly full"
            );
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(())
    }

    /// Read a whole blob.
    pub async fn read(&self, id: &BlobId) -> std::io::Result<Vec<u8>> {
        tokio::fs::read(self.path(id)).await
    }

    /// Read a whole blob whose size the caller knows (`messages.size`), on the calling thread
    /// (a blocking task reading a FETCH's small bodies one after another). Three system calls
    /// where `std::fs::read` makes five (open, statx, read, read to see the end, close): the
    /// file is read with one `read` of the known size and one byte more, and a regular file
    /// returns fewer bytes than asked only at its end, so getting exactly the known size is the
    /// whole file. A file of another size is read to its end all the same. `O_NOATIME` (the
    /// files are the daemon's own) keeps the read from dirtying the inode on the first read
    /// after delivery (relatime).
    pub fn read_known_size_blocking(&self, id: &BlobId, size: u64) -> std::io::Result<Vec<u8>> {
        let mut file = self.open_blocking(id)?;
        // The size only sizes the buffer: at most PENDING_MAX up front, so a wrong size read from
        // the database cannot make a large allocation.
        let expected = usize::try_from(size).unwrap_or(usize::MAX).min(PENDING_MAX);
        let mut bytes = vec![0u8; expected + 1];
        let n = loop {
            match file.read(&mut bytes) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                read => break read?,
            }
        };
        bytes.truncate(n);
        if n != expected {
            // Larger than the first read (over PENDING_MAX), or shorter or longer than recorded:
            // read on to the end, as std::fs::read would, into room for the rest as the file's own size says
            // (a body of megabytes is not grown by doubling, copying itself each time).
            if let Ok(meta) = file.metadata() {
                bytes.reserve_exact(usize::try_from(meta.len()).unwrap_or(0).saturating_sub(n));
            }
            file.read_to_end(&mut bytes)?;
        }
        Ok(bytes)
    }

    /// Open a blob for reading (O_NOATIME, see [`Self::read_known_size_blocking`]), relative to
    /// the store's folder held open; by its whole path when that folder cannot be opened or the
    /// blob is not found under it (a folder replaced since it was opened).
    fn open_blocking(&self, id: &BlobId) -> std::io::Result<std::fs::File> {
        let dir = match self.root_dir.get() {
            Some(dir) => Some(dir),
            None => std::fs::File::open(&self.root)
                .ok()
                .map(|dir| self.root_dir.get_or_init(|| dir)),
        };
        if let Some(dir) = dir {
            match open_at(dir, &format!("{}/{}", &id.0[..2], id.0)) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                opened => return opened,
            }
        }
        std::fs::File::open(self.path(id))
    }

    /// Open a blob for streaming.
    pub async fn open(&self, id: &BlobId) -> std::io::Result<tokio::fs::File> {
        tokio::fs::File::open(self.path(id)).await
    }

    /// Remove blobs whose reference count has been zero for longer than `grace`, blob files the
    /// database does not know (a crash between write and commit) older than `grace`, and temp
    /// files older than `grace`. The grace period protects writes in progress.
    pub async fn sweep(&self, db: &PgPool, grace: Duration) -> anyhow::Result<SweepReport> {
        let mut report = SweepReport::default();
        // The files go while the deleted rows are still locked (before COMMIT): a writer that
        // adds a reference to the same body meanwhile waits for this transaction, then finds
        // the file gone in `ensure_present` and fails cleanly instead of committing a message
        // without its body. A commit that fails after the unlinks leaves rows without files,
        // which the next sweep deletes (a missing file is not an error here).
        let mut tx = db.begin().await?;
        let dead = sqlx::query!(
            "DELETE FROM blobs WHERE refcount = 0 AND zero_since < now() - make_interval(secs => $1)
             RETURNING id, size",
            grace.as_secs_f64(),
        )
        .fetch_all(&mut *tx)
        .await?;
        for (id, size) in dead.into_iter().map(|r| (r.id, r.size)) {
            if BlobId::is_valid(&id) {
                match tokio::fs::remove_file(self.path(&BlobId(id))).await {
                    Ok(()) => {
                        report.blobs_removed += 1;
                        report.bytes_freed += size.max(0) as u64;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        tx.commit().await?;
        let known: std::collections::HashSet<String> = sqlx::query_scalar!("SELECT id FROM blobs")
            .fetch_all(db)
            .await?
            .into_iter()
            .collect();
        let store = self.clone();
        let (candidates, temps) = tokio::task::spawn_blocking(move || store.sweep_files(&known, grace)).await??;
        report.temp_files_removed += temps;
        // A file with no row may have gained one since `known` was read (a delivery that found
        // it stored already). Each is removed under a placeholder row this sweep inserts and
        // holds, so such a writer either committed first (the insert conflicts: kept) or waits
        // and then fails in `ensure_present`.
        for (id, size) in candidates {
            let mut tx = db.begin().await?;
            let claimed = sqlx::query_scalar!(
                r#"INSERT INTO blobs (id, size, refcount, zero_since) VALUES ($1, $2, 0, now())
                   ON CONFLICT (id) DO NOTHING RETURNING 1 AS "one!""#,
                id.0,
                size as i64,
            )
            .fetch_optional(&mut *tx)
            .await?;
            if claimed.is_none() {
                continue;
            }
            match tokio::fs::remove_file(self.path(&id)).await {
                Ok(()) => {
                    report.blobs_removed += 1;
                    report.bytes_freed += size;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            sqlx::query!("DELETE FROM blobs WHERE id = $1", id.0)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(report)
    }

    /// Removes old temp files; returns the orphan candidates (blob files with no row, older
    /// than `grace`, with their sizes) for [`Self::sweep`] to remove one by one under a row
    /// lock, and the number of temp files removed.
    fn sweep_files(
        &self,
        known: &std::collections::HashSet<String>,
        grace: Duration,
    ) -> std::io::Result<(Vec<(BlobId, u64)>, u64)> {
        let old_enough = |path: &Path| old_enough(path, grace);
        let mut temps = 0;
        if let Ok(entries) = std::fs::read_dir(self.temp_dir()) {
            for entry in entries.flatten() {
                if old_enough(&entry.path()) && std::fs::remove_file(entry.path()).is_ok() {
                    temps += 1;
                }
            }
        }
        let mut orphans = Vec::new();
        let Ok(shards) = std::fs::read_dir(&self.root) else {
            return Ok((orphans, temps));
        };
        for shard in shards.flatten() {
            if shard.file_name() == "tmp" || !shard.path().is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(shard.path())?.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if BlobId::is_valid(&name) && !known.contains(&name) && old_enough(&entry.path()) {
                    let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                    orphans.push((BlobId(name), size));
                }
            }
        }
        Ok((orphans, temps))
    }
}

/// A blob write in progress ([`BlobStore::start_put`]). Dropped without waiting, the write still
/// completes on its own; a body nothing references is swept later like any orphan.
#[derive(Debug)]
pub struct PendingPut(tokio::task::JoinHandle<std::io::Result<()>>);

impl PendingPut {
    /// Wait until the blob is durable (written, fsynced, renamed, its folder fsynced).
    pub async fn wait(self) -> std::io::Result<()> {
        self.0.await.map_err(std::io::Error::other)?
    }
}

/// A small body's file being written without an fsync ([`BlobStore::start_unsynced`]).
/// Dropped without waiting, the write still completes on its own; a file nothing references
/// is swept later like any orphan.
#[derive(Debug)]
pub struct UnsyncedPut(tokio::task::JoinHandle<std::io::Result<()>>);

impl UnsyncedPut {
    /// Wait until the file is written and renamed to its name (not fsynced).
    pub async fn wait(self) -> std::io::Result<()> {
        self.0.await.map_err(std::io::Error::other)?
    }
}

/// How often (in bytes written) a [`BlobWriter`] checks the free-space reserve again.
const SPACE_CHECK_EVERY: u64 = 8 << 20;

/// A blob written as its bytes arrive: they go to a temp file under `DATA/blobs/tmp` while
/// being hashed (sha256), so a message of any size takes 64 KiB of memory. [`Self::finish`]
/// gives the same durability as [`BlobStore::put`]: fsync, rename to the blob's name, fsync of
/// the folder; or, when the blob exists already, the temp file is dropped and the existing
/// file's time refreshed (the sweep's grace period starts over). Dropped unfinished, the temp
/// file is removed (a crash leaves it for [`BlobStore::sweep`]).
pub struct BlobWriter {
    store: BlobStore,
    temp: std::io::BufWriter<tempfile::NamedTempFile>,
    hasher: Sha256,
    len: u64,
    /// Bytes covered by the last free-space check.
    checked: u64,
}

impl BlobWriter {
    /// Append `bytes`. Every [`SPACE_CHECK_EVERY`] bytes the store's free-space reserve is
    /// checked again (`ENOSPC` when the next stretch would go into it).
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let end = self.len + bytes.len() as u64;
        if end > self.checked {
            self.store.check_space(SPACE_CHECK_EVERY)?;
            self.checked = end + SPACE_CHECK_EVERY;
        }
        self.hasher.update(bytes);
        self.temp.write_all(bytes)?;
        self.len = end;
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Make the blob durable under its name; returns its id and length.
    pub fn finish(self) -> std::io::Result<(BlobId, u64)> {
        let BlobWriter {
            store,
            temp,
            hasher,
            len,
            ..
        } = self;
        let id = BlobId(hex::encode(hasher.finalize()));
        let temp = temp.into_inner().map_err(|e| e.into_error())?;
        let target = store.path(&id);
        if let Ok(file) = std::fs::File::open(&target) {
            // As in `put_blocking`: stored already; make it young, drop the temp file.
            if let Err(e) = file.set_modified(SystemTime::now()) {
                tracing::debug!("refreshing the time of blob {id}: {e}");
            }
            return Ok((id, len));
        }
        temp.as_file().sync_all()?;
        let dir = target.parent().expect("blob paths have a parent");
        create_shard_dir(dir)?;
        temp.persist(&target).map_err(|e| e.error)?;
        sync_dir(dir)?;
        Ok((id, len))
    }
}

/// What a blob's file holds, compared with its name and its recorded size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobHealth {
    Whole,
    Missing,
    /// The file has this many bytes, not the recorded size.
    WrongSize(u64),
    /// The bytes do not hash to the blob's name (the content is damaged).
    WrongHash,
}

/// A blob row with its recorded reference count and the references that exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefCount {
    pub id: String,
    pub size: i64,
    pub recorded: i64,
    /// Message rows and outbound queue rows naming the blob.
    pub actual: i64,
    /// The count has been zero for longer than the grace period asked for.
    pub zero_before_grace: bool,
}

impl BlobStore {
    /// Read a blob through (64 KiB at a time) and compare its sha256 with its name and its
    /// length with `size` (`tinydc check`).
    pub fn verify_blocking(&self, id: &BlobId, size: u64) -> std::io::Result<BlobHealth> {
        let mut file = match std::fs::File::open(self.path(id)) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BlobHealth::Missing),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if len != size {
            return Ok(BlobHealth::WrongSize(len));
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(if hex::encode(hasher.finalize()) == id.0 {
            BlobHealth::Whole
        } else {
            BlobHealth::WrongHash
        })
    }

    /// Blob files whose name the database does not know and that are older than `grace` (a
    /// younger one may be a delivery about to commit): (name, bytes). What [`Self::sweep`]
    /// would remove.
    pub fn unknown_files(
        &self,
        known: &std::collections::HashSet<String>,
        grace: Duration,
    ) -> std::io::Result<Vec<(String, u64)>> {
        let mut found = Vec::new();
        let Ok(shards) = std::fs::read_dir(&self.root) else {
            return Ok(found);
        };
        for shard in shards.flatten() {
            if shard.file_name() == "tmp" || !shard.path().is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(shard.path())?.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if BlobId::is_valid(&name) && !known.contains(&name) && old_enough(&entry.path(), grace) {
                    found.push((name, entry.metadata().map(|m| m.len()).unwrap_or(0)));
                }
            }
        }
        Ok(found)
    }
}

/// Whether the file at `path` holds exactly `bytes` (a missing file does not).
fn same_contents(path: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if file.metadata()?.len() != bytes.len() as u64 {
        return Ok(false);
    }
    let mut existing = Vec::with_capacity(bytes.len());
    file.read_to_end(&mut existing)?;
    Ok(existing == bytes)
}

/// Every body still in `blob_pending` (a crash came before its file was settled) written back
/// to its file if the file is not whole, fsynced, and its row deleted. Run before blobs are read
/// after a start: by every daemon ([`crate::context::Context::new`]) and by the ops commands
/// that read blob files. Safe to run beside writers and other settlers.
pub async fn settle_all(db: &PgPool, store: &BlobStore) -> anyhow::Result<u64> {
    let mut settled = 0;
    let mut after = String::new();
    loop {
        let ids: Vec<String> = sqlx::query_scalar!(
            "SELECT id FROM blob_pending WHERE id > $1 ORDER BY id LIMIT $2",
            after,
            SETTLE_BATCH as i64
        )
        .fetch_all(db)
        .await?;
        let Some(last) = ids.last() else { break };
        after = last.clone();
        settled += store.settle(db, &ids).await?;
    }
    if settled > 0 {
        tracing::info!(bodies = settled, "message bodies left pending by a crash made durable");
    }
    Ok(settled)
}

/// Whether the file at `path` was last modified at least `grace` ago.
fn old_enough(path: &Path, grace: Duration) -> bool {
    path.symlink_metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age >= grace)
}

/// Every blob row with its recorded reference count and the references that exist (message
/// rows and outbound queue rows: each holds one, see `add_ref`). Run it in one snapshot
/// (REPEATABLE READ): writers change a count and its references in one transaction.
pub async fn reference_counts(conn: &mut PgConnection, grace: Duration) -> sqlx::Result<Vec<RefCount>> {
    let rows = sqlx::query!(
        r#"WITH refs AS (
             SELECT blob_id, count(*) AS n FROM
               (SELECT blob_id FROM messages UNION ALL SELECT blob_id FROM smtp_queue) r
             GROUP BY blob_id)
           SELECT b.id, b.size, b.refcount, coalesce(refs.n, 0)::bigint AS "actual!",
                  coalesce(b.zero_since < now() - make_interval(secs => $1), false) AS "old!"
           FROM blobs b LEFT JOIN refs ON refs.blob_id = b.id ORDER BY b.id"#,
        grace.as_secs_f64()
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| RefCount {
            id: r.id,
            size: r.size,
            recorded: r.refcount,
            actual: r.actual,
            zero_before_grace: r.old,
        })
        .collect())
}

/// Set a blob's reference count to the references that exist. Runs under the blob's row lock,
/// the lock every writer of references takes (add_ref, add_refs, drop_refs, and the foreign key
/// check of a new message or queue row), so no change of references is in flight while it
/// counts. Returns (recorded, actual), or `None` when the row is gone.
pub async fn recount(db: &PgPool, id: &str) -> sqlx::Result<Option<(i64, i64)>> {
    let mut tx = db.begin().await?;
    let Some(recorded) = sqlx::query_scalar!("SELECT refcount FROM blobs WHERE id = $1 FOR UPDATE", id)
        .fetch_optional(&mut *tx)
        .await?
    else {
        return Ok(None);
    };
    let actual: i64 = sqlx::query_scalar!(
        r#"SELECT ((SELECT count(*) FROM messages WHERE blob_id = $1)
                 + (SELECT count(*) FROM smtp_queue WHERE blob_id = $1))::bigint AS "n!""#,
        id
    )
    .fetch_one(&mut *tx)
    .await?;
    if actual != recorded {
        sqlx::query!(
            "UPDATE blobs SET refcount = $2::bigint,
               zero_since = CASE WHEN $2::bigint = 0 THEN coalesce(zero_since, now()) ELSE NULL END
             WHERE id = $1",
            id,
            actual
        )
        .execute(&mut *tx)
        .await?;
        tracing::warn!(blob = id, recorded, actual, "blob reference count corrected");
    }
    tx.commit().await?;
    Ok(Some((recorded, actual)))
}

/// Inside a transaction: count one more reference to a stored blob (recording it if new).
pub async fn add_ref(conn: &mut PgConnection, id: &BlobId, size: u64, count: i64) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO blobs (id, size, refcount) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO UPDATE SET refcount = blobs.refcount + $3, zero_since = NULL",
        id.0,
        size as i64,
        count,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Inside a transaction: lock the rows of `ids` in ascending id order (the mail store's lock
/// order, docs/ARCHITECTURE.md; repeats allowed), so concurrent writers cannot deadlock.
pub async fn lock(conn: &mut PgConnection, ids: &[String]) -> sqlx::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query!("SELECT id FROM blobs WHERE id = ANY($1) ORDER BY id FOR UPDATE", ids)
        .fetch_all(&mut *conn)
        .await?;
    Ok(())
}

/// Inside a transaction: one more reference to each of `ids`, already stored (a copy of a
/// message; repeats count once each).
pub async fn add_refs(conn: &mut PgConnection, ids: &[String]) -> sqlx::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "WITH refs AS (SELECT id, count(*) AS n FROM unnest($1::text[]) AS t(id) GROUP BY id)
         UPDATE blobs SET refcount = blobs.refcount + refs.n, zero_since = NULL
         FROM refs WHERE blobs.id = refs.id",
        ids,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Inside a transaction: drop `count` references to each of `ids` (repeats allowed). An
/// EXPUNGE does the same (and the [`lock`] before it) in its one statement
/// (`mailstore::Expunge::run`): keep the two alike.
pub async fn drop_refs(conn: &mut PgConnection, ids: &[String]) -> sqlx::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "WITH refs AS (SELECT id, count(*) AS n FROM unnest($1::text[]) AS t(id) GROUP BY id)
         UPDATE blobs SET refcount = greatest(blobs.refcount - refs.n, 0),
                          zero_since = CASE WHEN blobs.refcount - refs.n <= 0 THEN now() ELSE NULL END
         FROM refs WHERE blobs.id = refs.id",
        ids,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Make a blob's shard folder (`blobs/ab/`) exist durably: a folder this call creates is
/// recorded in its parent with an fsync of the parent, or a crash could lose the folder, and with
/// it the blob renamed into it, although the blob and the shard were fsynced.
fn create_shard_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Make a blob found already stored young again, so a sweep's grace period starts over instead
/// of taking it from under the write that is about to reference it.
fn refresh_time(id: &BlobId, file: &std::fs::File) {
    if let Err(e) = file.set_modified(SystemTime::now()) {
        tracing::debug!("refreshing the time of blob {id}: {e}");
    }
}

/// Delete the `blob_pending` rows of settled bodies, each only in the version (`xmin`) read
/// before its file was fsynced: a writer that stored the same body again meanwhile keeps it
/// listed, and a row another transaction holds locked is left to that writer's own settling.
/// One statement committed on its own without waiting for its WAL flush (`set_config(.., true)`
/// is `SET LOCAL synchronous_commit = off` for the statement's transaction, PostgreSQL
/// documentation 9.28.1): a deletion lost in a database crash only leaves rows that
/// [`settle_all`] settles again at the next start. It was a transaction of its own (BEGIN, SET
/// LOCAL, DELETE, COMMIT: three more round trips to PostgreSQL per round, issue #12).
async fn delete_settled(conn: &mut PgConnection, ids: &[String], versions: &[String]) -> sqlx::Result<u64> {
    Ok(sqlx::query!(
        "DELETE FROM blob_pending p USING (
                 SELECT q.id FROM blob_pending q
                 JOIN unnest($1::text[], $2::text[]) AS u(id, version)
                   ON q.id = u.id AND q.xmin::text = u.version
                 FOR UPDATE OF q SKIP LOCKED) s
             WHERE p.id = s.id AND set_config('synchronous_commit', 'off', true) IS NOT NULL",
        ids,
        versions,
    )
    .execute(conn)
    .await?
    .rows_affected())
}

/// Start writing `len` bytes of `file` from `offset` to disk (`len` 0: to the end) without
/// waiting, so a later fsync finds little left to write (sync_file_range(2),
/// SYNC_FILE_RANGE_WRITE). Only a hint: the fsync is what makes the file durable.
#[allow(unsafe_code)] // sync_file_range(2): a plain libc call with no safe std equivalent.
pub fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a file descriptor `file` keeps open for the call.
    let r = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    if r != 0 {
        tracing::debug!("sync_file_range: {}", std::io::Error::last_os_error());
    }
}

/// fsync a directory so a rename inside it is durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Every blob something refers to (reference count above zero), with its size: what a backup
/// taken in the same transaction as a database dump must copy.
pub async fn referenced(conn: &mut PgConnection) -> sqlx::Result<Vec<(BlobId, u64)>> {
    let rows = sqlx::query!("SELECT id, size FROM blobs WHERE refcount > 0 ORDER BY id")
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(|r| (BlobId(r.id), r.size.max(0) as u64)).collect())
}

/// openat(2) of `relative` under `dir` for reading, with O_NOATIME, without it when the file's
/// owner is another user (EPERM). std opens by whole path only.
fn open_at(dir: &std::fs::File, relative: &str) -> std::io::Result<std::fs::File> {
    use rustix::fs::{Mode, OFlags};
    let open = |flags: OFlags| rustix::fs::openat(dir, relative, flags, Mode::empty());
    let flags = OFlags::RDONLY | OFlags::CLOEXEC;
    let fd = match open(flags | OFlags::NOATIME) {
        Err(rustix::io::Errno::PERM) => open(flags),
        opened => opened,
    }?;
    Ok(std::fs::File::from(fd))
}
