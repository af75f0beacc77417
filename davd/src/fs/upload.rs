//! A PUT's body on its way in: the temp file `.tinydc-upload-<uuid>` beside the target (never
//! the target itself, so an aborted PUT leaves the old content), the quota reserved before the
//! first byte (507 when it cannot fit) and grown while a body of unknown length streams in,
//! and bounded buffering. A body that outgrows one 1 MiB buffer is a pipeline: the request
//! task gathers it into 1 MiB buffers and hands each to a writer thread and, when the client
//! sent `OC-Checksum`, to the two hashing threads (checksum.rs `StreamHash`), each a bounded
//! stage (stage.rs), so receiving, writing and hashing overlap (a smaller body is written and
//! hashed in one blocking call at the end); without `OC-Checksum` the large file is hashed
//! after the answer (checksum.rs `Pending`). The writer starts the disk writeback as it goes,
//! so the final fsync has little left to do. A body that does not match the client's
//! `OC-Checksum` is not committed. `flush()` starts the temp file's fsync and hands it, with
//! the reservations, to the journaled commit (commit.rs), which waits for it before its
//! COMMIT; an upload dropped before that removes its temp file and gives its reservations
//! back. Also the sweep of temp files a crash left behind.

use std::fs::File;
use std::io::{SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Buf, Bytes, BytesMut};
use dav_server::davpath::DavPath;
use dav_server::fs::{DavFile, DavMetaData, FsError, FsFuture, FsResult, OpenOptions};
use futures::FutureExt;
use shared::quota::{self, QuotaError, Reservation, UPLOAD_TEMP_PREFIX};
use sqlx::PgPool;

use super::commit::PlaceCommit;
use super::read::{Meta, ReadFile, stat};
use super::{TinyFs, User, blocking, db_error, io, parent_of, quota_error, sync_dir};
use crate::checksum::{self, HashingWriter, Note, Outcome, Pending, Stamp, Stored, StreamHash};
use crate::journal::Journal;
use crate::stage::Stage;
use crate::{paths, props};

/// Bytes of an upload gathered before they go to the writer and hashing threads (memory per
/// upload: about (stage::DEPTH + 2) of these).
const WRITE_CHUNK: usize = 1 << 20;
/// A piece of the body at least this large, arriving when nothing is gathered, goes to the
/// threads as it is (hyper reads a fast body in pieces of up to about 400 KiB).
const PASS_ON: usize = 64 << 10;
/// Written bytes after which the writer asks the kernel to start writing them to disk.
const WRITEBACK_STEP: u64 = 8 << 20;
/// How much more quota an upload of unknown length reserves each time it outgrows its reservation.
const GROW_STEP: u64 = 64 << 20;

impl TinyFs {
    /// The writer of the file a chunked upload assembles (chunked.rs): the same temp file,
    /// quota growth and journaled commit as a PUT of `size` bytes, paid for first by the
    /// chunks' reservations `prepaid` (id, bytes), which it owns from here (committed with the
    /// file, or given back when it is dropped unfinished).
    pub(crate) async fn open_assembly(
        &self,
        path: &DavPath,
        user: &User,
        size: u64,
        prepaid: Vec<(i64, u64)>,
    ) -> FsResult<Box<dyn DavFile>> {
        let options = OpenOptions {
            read: false,
            write: true,
            append: false,
            truncate: true,
            create: true,
            create_new: false,
            size: Some(size),
            checksum: None,
        };
        self.open_for_write(path, options, user, prepaid).await
    }

    pub(super) async fn open_for_write(
        &self,
        path: &DavPath,
        options: OpenOptions,
        user: &User,
        prepaid: Vec<(i64, u64)>,
    ) -> FsResult<Box<dyn DavFile>> {
        let target = paths::resolve(&user.root, path)?;
        let parent = parent_of(&target)?.to_path_buf();
        let create_empty = options.append || !options.truncate;
        let temp = temp_path_beside(&target)?;
        let (t, p, tp) = (target.clone(), parent.clone(), temp.clone());
        let (create, create_new) = (options.create, options.create_new);
        // One trip to the blocking pool for the checks and the temp file (issue #12: a small
        // PUT paid three in a row).
        let (replaces, file) = blocking(move || {
            let existing = match t.symlink_metadata() {
                Ok(m) => Some(m),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(io(e)),
            };
            match &existing {
                Some(m) if !m.is_file() => return Err(FsError::Forbidden),
                Some(_) if create_new => return Err(FsError::Exists),
                None if !create => return Err(FsError::NotFound),
                _ => {}
            }
            if !p.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false) {
                return Err(FsError::NotFound);
            }
            if create_empty {
                if existing.is_some() {
                    return Err(FsError::NotImplemented);
                }
                return Ok((0, None));
            }
            Ok((existing.map(|m| m.len()).unwrap_or(0), Some(create_temp(&tp)?)))
        })
        .await?;
        if create_empty {
            // LOCK on an unmapped URL creates an empty resource (RFC 4918 section 7.3). Under
            // the journal lock with its done rows gone: a new file must never be taken for
            // one an earlier DELETE's row names (inode numbers are reused).
            let mut guard = self.journal.lock(user.id, &user.root).await?;
            guard.settle().await?;
            let (file, stamp) = blocking(move || {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&target)
                    .map_err(io)?;
                file.sync_all().map_err(io)?;
                sync_dir(&parent)?;
                let stamp = Stamp::of(&file.metadata().map_err(io)?);
                Ok((file, stamp))
            })
            .await?;
            // Its content hash (of nothing), so no earlier value under this key can stay.
            let empty = Stored {
                hash: HashingWriter::new(std::io::sink()).finish().1,
                stamp,
            };
            let mut tx = guard.db().begin().await.map_err(db_error)?;
            props::set_own(&mut tx, user.id, &paths::key(path), &empty.to_prop())
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            return Ok(Box::new(ReadFile::new(file)));
        }
        let file = file.ok_or(FsError::GeneralFailure)?;
        // The upload owns its temp file and reservations from here: dropped at any point
        // (a refusal, a client gone), it removes the one and gives the others back.
        let mut upload = Box::new(Upload {
            db: self.db.clone(),
            journal: self.journal.clone(),
            user_id: user.id,
            root: user.root.clone(),
            key: paths::key(path),
            target,
            temp,
            file: Some(file),
            sink: None,
            pending: BytesMut::with_capacity(WRITE_CHUNK),
            expected: options.size,
            written: 0,
            replaces,
            reservations: prepaid,
            committed: false,
            placed: None,
            mtime: self.mtime,
            checksum: self.checksum.clone(),
        });
        // docs/ARCHITECTURE.md "Quota": reserve the announced size before the first byte (507 if it cannot fit).
        if let Some(size) = options.size {
            let need = size.saturating_sub(replaces).saturating_sub(upload.reserved());
            if size <= WRITE_CHUNK as u64 && upload.reservations.is_empty() {
                // issue #12: a body of at most one buffer is held in memory until its end
                // anyway; it reserves nothing (one round trip less per small PUT) and is
                // charged by the commit, which checks the limit under the user's row lock
                // (`quota::commit` with no reservation held), so it is refused with 507 at its
                // end, before anything is placed. The disk's reserve is checked now.
                quota::check_disk(&self.db, need).map_err(quota_error)?;
                upload.reservations.push((Reservation::UNLIMITED, need));
            } else if need > 0 {
                let r = quota::reserve(&self.db, user.id, need).await.map_err(quota_error)?;
                upload.reservations.push((r.id, r.bytes));
            }
        }
        Ok(upload)
    }
}

/// A PUT in progress: a temp file beside the target, committed by `flush`.
#[derive(Debug)]
struct Upload {
    db: PgPool,
    journal: Arc<Journal>,
    user_id: i64,
    /// The user's root.
    root: PathBuf,
    /// The target's key (paths::key), under which its content hash is stored.
    key: String,
    target: PathBuf,
    temp: PathBuf,
    /// The temp file, until the body outgrows one buffer: a body that fits in one is written
    /// and hashed in one go by `commit` (no threads to start for a small file).
    file: Option<File>,
    /// The threads writing the temp file and hashing what goes into it, once the body
    /// outgrew one buffer.
    sink: Option<Sink>,
    pending: BytesMut,
    /// Content-Length or X-Expected-Entity-Length, when the client said.
    expected: Option<u64>,
    written: u64,
    /// Size of the file this upload replaces (refunded on commit, so it counts as room now).
    replaces: u64,
    /// Quota reservations held: (id, bytes).
    reservations: Vec<(i64, u64)>,
    committed: bool,
    /// The placed file's metadata, once committed (as the rename left it).
    placed: Option<std::fs::Metadata>,
    /// The modification time the client gave (`X-OC-Mtime`).
    mtime: Option<std::time::SystemTime>,
    /// The client's `OC-Checksum` to check, and where the hash is told to server.rs.
    checksum: Arc<Note>,
}

impl Upload {
    fn reserved(&self) -> u64 {
        self.reservations.iter().map(|r| r.1).sum()
    }

    /// docs/ARCHITECTURE.md "Quota": a body that grows past its reservation must fit too, else 507.
    async fn ensure_quota(&mut self) -> FsResult<()> {
        let allowed = self.reserved() + self.replaces;
        if self.written <= allowed {
            return Ok(());
        }
        let short = self.written - allowed;
        let r = match quota::reserve(&self.db, self.user_id, short.max(GROW_STEP)).await {
            Ok(r) => r,
            // A step that does not fit (quota or disk) falls back to what is really needed.
            Err(QuotaError::Exceeded { .. } | QuotaError::DiskFull { .. }) if short < GROW_STEP => {
                quota::reserve(&self.db, self.user_id, short)
                    .await
                    .map_err(quota_error)?
            }
            Err(e) => return Err(quota_error(e)),
        };
        self.reservations.push((r.id, r.bytes));
        Ok(())
    }

    /// Hand what is gathered to the writer and the hashing threads (waits while they are
    /// behind).
    async fn write_pending(&mut self) -> FsResult<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let data = self.pending.split().freeze();
        self.write_piece(data).await
    }

    /// Hand `data` to the writer and the hashing threads (shared, not copied).
    async fn write_piece(&mut self, data: Bytes) -> FsResult<()> {
        if let Some(file) = self.file.take() {
            // issue #12: hashed on the way in only when the client's OC-Checksum is to be
            // checked before the answer; else after it (checksum.rs `Pending`).
            self.sink = Some(Sink::start(file, self.checksum.has_claims()));
        }
        let sink = self.sink.as_ref().ok_or(FsError::GeneralFailure)?;
        if let Some(hash) = &sink.hash
            && let Err(e) = hash.update(&data).await
        {
            tracing::error!("upload: {e}");
            return Err(FsError::GeneralFailure);
        }
        if !sink.writer.push(data).await {
            // The writer stopped on an error: take it, for the log and the answer.
            let sink = self.sink.take().ok_or(FsError::GeneralFailure)?;
            return Err(sink.finish().await.err().unwrap_or(FsError::GeneralFailure));
        }
        Ok(())
    }

    async fn accept(&mut self, data: Bytes) -> FsResult<()> {
        self.written += data.len() as u64;
        if let Some(expected) = self.expected
            && self.written > expected
        {
            tracing::warn!(expected, written = self.written, "PUT body longer than announced");
            return Err(FsError::TooLarge);
        }
        self.ensure_quota().await?;
        // A body that fits one buffer is written in one go at the end (`commit`).
        let large = self.sink.is_some() || self.expected.is_none_or(|n| n > WRITE_CHUNK as u64);
        if large && self.pending.is_empty() && data.len() >= PASS_ON {
            // A large piece of a large body as hyper read it: on to the threads as it is,
            // not copied into the gathering buffer first.
            return self.write_piece(data).await;
        }
        self.pending.extend_from_slice(&data);
        if self.pending.len() >= WRITE_CHUNK {
            self.write_pending().await?;
        }
        Ok(())
    }

    /// Everything arrived: make it durable and put it in place (docs/ARCHITECTURE.md "Durability").
    async fn commit(&mut self) -> FsResult<()> {
        if self.sink.is_some() {
            self.write_pending().await?;
        }
        if let Some(expected) = self.expected
            && self.written != expected
        {
            tracing::warn!(
                expected,
                written = self.written,
                "PUT body shorter than announced: not committed"
            );
            return Err(FsError::GeneralFailure);
        }
        let mtime = self.mtime;
        let (file, hash, meta) = match (self.sink.take(), self.file.take()) {
            (Some(sink), _) => {
                let (file, hash) = sink.finish().await?;
                let (file, meta) = blocking(move || stamp_temp(file, mtime)).await?;
                (file, hash, meta)
            }
            (None, Some(file)) => {
                // The whole body is in one buffer: written, hashed and stamped in one blocking
                // call.
                let data = self.pending.split().freeze();
                blocking(move || {
                    let mut writer = HashingWriter::new(file);
                    writer.write_all(&data).map_err(io)?;
                    let (file, hash) = writer.finish();
                    let (file, meta) = stamp_temp(file, mtime)?;
                    Ok((file, Some(hash), meta))
                })
                .await?
            }
            (None, None) => return Err(FsError::GeneralFailure),
        };
        if let Some(hash) = &hash
            && !self.checksum.claims_match(hash)
        {
            // The body is not what the client sent: nothing is stored (dropping the upload
            // removes the temp file and gives the reservations back); server.rs answers 400.
            tracing::warn!(
                path = %self.target.display(),
                written = self.written,
                sha1 = hex::encode(hash.sha1),
                "PUT body does not match its OC-Checksum: not committed"
            );
            self.checksum.set(Outcome::Mismatch);
            return Err(FsError::GeneralFailure);
        }
        let (ino, stamp) = (meta.ino(), Stamp::of(&meta));
        // issue #12: the file's fsync runs while the commit takes the journal lock and sends
        // its statements; the commit waits for it before its COMMIT (fs/commit.rs).
        let synced = tokio::task::spawn_blocking(move || file.sync_all());
        // From here the temp file and the reservations belong to the commit task, which runs
        // to its end even if this request is dropped (a client hanging up must not cut a
        // commit between the database and the rename).
        self.committed = true;
        let commit = PlaceCommit {
            journal: self.journal.clone(),
            user_id: self.user_id,
            root: self.root.clone(),
            temp: self.temp.clone(),
            target: self.target.clone(),
            ino,
            written: self.written,
            reservations: std::mem::take(&mut self.reservations),
            props_from: None,
            synced: Some(synced),
            key: self.key.clone(),
            content_hash: match hash {
                Some(hash) => Stored { hash, stamp }.to_prop(),
                None => Pending { stamp, ino }.to_prop(),
            },
        };
        tokio::spawn(commit.run()).await.unwrap_or_else(|e| {
            tracing::error!("upload commit task failed: {e}");
            Err(FsError::GeneralFailure)
        })?;
        // The rename kept inode, size and times: what the answer's ETag and Last-Modified
        // are made of, without another stat.
        self.placed = Some(meta);
        match hash {
            Some(hash) => self.checksum.set(Outcome::Known(hash)),
            // Placed and answered without its hash, which is computed now (checksum.rs).
            None => checksum::hash_later(
                self.db.clone(),
                self.user_id,
                self.key.clone(),
                self.target.clone(),
                Pending { stamp, ino },
            ),
        }
        Ok(())
    }
}

/// The written temp file's modification time set to the client's (`X-OC-Mtime`), before its
/// fsync so the time is made durable with the content (the rename keeps it); its inode and
/// stamp, which the rename keeps too: what the hash is stored with (checksum.rs).
fn stamp_temp(file: File, mtime: Option<SystemTime>) -> FsResult<(File, std::fs::Metadata)> {
    if let Some(t) = mtime {
        file.set_times(std::fs::FileTimes::new().set_modified(t)).map_err(io)?;
    }
    let meta = file.metadata().map_err(io)?;
    Ok((file, meta))
}

/// Where an upload's body goes: the temp file, written on one thread, and its hash, computed
/// on two others when the client's `OC-Checksum` is to be checked before the answer.
#[derive(Debug)]
struct Sink {
    writer: Stage<TempWriter>,
    hash: Option<StreamHash>,
}

#[derive(Debug)]
struct TempWriter {
    file: File,
    written: u64,
    /// Bytes from the start whose writeback has been started.
    started: u64,
}

impl Sink {
    fn start(file: File, hashed: bool) -> Sink {
        let writer = TempWriter {
            file,
            written: 0,
            started: 0,
        };
        Sink {
            writer: Stage::spawn(writer, TempWriter::write),
            hash: hashed.then(StreamHash::start),
        }
    }

    /// Wait for the threads: the file, written in full, and the hash of its content.
    async fn finish(self) -> FsResult<(File, Option<crate::checksum::ContentHash>)> {
        let hash = async {
            match self.hash {
                Some(hash) => hash.finish().await.map(Some),
                None => Ok(None),
            }
        };
        let writer = self.writer.finish();
        let (hash, writer) = futures::join!(hash, writer);
        let writer = writer.map_err(|e| {
            tracing::error!("writing an upload: {e}");
            io(e)
        })?;
        let hash = hash.map_err(|e| {
            tracing::error!("hashing an upload: {e}");
            FsError::GeneralFailure
        })?;
        Ok((writer.file, hash))
    }
}

impl TempWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.file.write_all(buf)?;
        self.written += buf.len() as u64;
        let unstarted = self.written - self.started;
        if unstarted >= WRITEBACK_STEP {
            // Start writing these pages to disk now (not waiting for it), so the fsync before
            // the commit finds most of a large file already written: the disk works while the
            // body still arrives. Only a hint: the fsync is what makes the file durable.
            shared::blobs::start_writeback(&self.file, self.started, unstarted);
            self.started = self.written;
        }
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        // An aborted or refused upload: the old file is untouched; remove our temp file.
        if let Err(e) = std::fs::remove_file(&self.temp)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::error!(path = %self.temp.display(), "cannot remove an abandoned upload: {e}");
        } else {
            tracing::info!(path = %self.target.display(), written = self.written, "upload abandoned; previous content kept");
        }
        let reservations = std::mem::take(&mut self.reservations);
        if !reservations.is_empty()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let (db, user_id) = (self.db.clone(), self.user_id);
            rt.spawn(async move {
                for (id, bytes) in reservations {
                    if let Err(e) = quota::release(&db, Reservation { id, user_id, bytes }).await {
                        tracing::warn!("releasing a reservation: {e} (it expires by itself)");
                    }
                }
            });
        }
    }
}

impl DavFile for Upload {
    fn metadata(&'_ mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        if let Some(meta) = &self.placed {
            let meta: Box<dyn DavMetaData> = Box::new(Meta(meta.clone(), None, None));
            return Box::pin(futures::future::ready(Ok(meta)));
        }
        let path = if self.committed {
            self.target.clone()
        } else {
            self.temp.clone()
        };
        async move { Ok(Box::new(blocking(move || stat(&path)).await?) as Box<dyn DavMetaData>) }.boxed()
    }
    fn write_buf(&'_ mut self, mut buf: Box<dyn Buf + Send>) -> FsFuture<'_, ()> {
        async move {
            while buf.has_remaining() {
                let chunk = buf.copy_to_bytes(buf.chunk().len());
                self.accept(chunk).await?;
            }
            Ok(())
        }
        .boxed()
    }
    fn write_bytes(&'_ mut self, buf: Bytes) -> FsFuture<'_, ()> {
        async move { self.accept(buf).await }.boxed()
    }
    fn read_bytes(&'_ mut self, _count: usize) -> FsFuture<'_, Bytes> {
        Box::pin(futures::future::ready(Err(FsError::NotImplemented)))
    }
    fn seek(&'_ mut self, _pos: SeekFrom) -> FsFuture<'_, u64> {
        // Partial PUT (Content-Range, PATCH) is refused before it gets here.
        Box::pin(futures::future::ready(Err(FsError::NotImplemented)))
    }
    fn flush(&'_ mut self) -> FsFuture<'_, ()> {
        async move {
            if self.committed {
                return Ok(());
            }
            self.commit().await
        }
        .boxed()
    }
}

pub(super) fn temp_path_beside(target: &Path) -> FsResult<PathBuf> {
    Ok(parent_of(target)?.join(format!("{UPLOAD_TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple())))
}

pub(super) fn create_temp(path: &Path) -> FsResult<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io)
}

/// Remove upload temp files left by a crash or power cut under `files_dir` (all users' trees):
/// those last written before `started` (when this davd started; its own uploads are newer).
/// Run after the journal's recovery, which has placed every temp file a committed PUT or
/// COPY still needed; the rest were never acknowledged, so no content is lost. Also the
/// folders a DELETE set aside (journal.rs) that a crash left before their removal: their
/// DELETE was committed and answered. Returns how many were removed.
pub fn sweep_stale_uploads(files_dir: &Path, started: SystemTime) -> usize {
    let mut removed = 0;
    let mut set_aside = Vec::new();
    shared::quota::for_each_file_and_set_aside(
        files_dir,
        |entry, meta| {
            if paths::is_hidden_name(entry.file_name().as_encoded_bytes()) && meta.modified().is_ok_and(|m| m < started)
            {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => {
                        tracing::info!(path = %entry.path().display(), "removed an upload left by a crash");
                        removed += 1;
                    }
                    Err(e) => tracing::warn!(path = %entry.path().display(), "cannot remove a stale upload: {e}"),
                }
            }
        },
        |dir| set_aside.push(dir.to_path_buf()),
    );
    for dir in set_aside {
        tracing::info!(path = %dir.display(), "removing a deleted folder left by a crash");
        crate::journal::remove_set_aside(&dir);
        removed += 1;
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_removes_only_temp_files_older_than_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("alice@example.test/sub");
        std::fs::create_dir_all(&user).unwrap();
        let old = user.join(format!("{UPLOAD_TEMP_PREFIX}old"));
        let fresh = user.join(format!("{UPLOAD_TEMP_PREFIX}fresh"));
        let kept = user.join("notes.txt");
        for f in [&old, &fresh, &kept] {
            std::fs::write(f, b"x").unwrap();
        }
        let two_hours_ago = SystemTime::now() - std::time::Duration::from_secs(7200);
        for f in [&old, &kept] {
            File::options()
                .write(true)
                .open(f)
                .unwrap()
                .set_modified(two_hours_ago)
                .unwrap();
        }
        // A folder a DELETE set aside (journal.rs), its contents not removed yet by a crash.
        let aside = user.join(format!("{UPLOAD_TEMP_PREFIX}deleted-0123"));
        std::fs::create_dir_all(aside.join("deep")).unwrap();
        std::fs::write(aside.join("deep/a.txt"), b"x").unwrap();
        assert_eq!(
            shared::quota::tree_bytes(dir.path()),
            1,
            "only notes.txt: the folder set aside is not counted"
        );
        let started = SystemTime::now() - std::time::Duration::from_secs(60);
        assert_eq!(sweep_stale_uploads(dir.path(), started), 2);
        assert!(!old.exists() && fresh.exists() && kept.exists());
        assert!(!aside.exists());
    }
}
