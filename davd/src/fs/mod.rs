//! davd's file system backend: a dav-server `GuardedFileSystem` whose credentials are the
//! authenticated user, over `DATA/files/<address>/`.
//!
//! Why not dav-server's LocalFs: it writes in place (an aborted PUT destroys the old file),
//! keeps no dead properties and knows nothing of quotas. Here:
//! - a PUT writes to `.tinydc-upload-<uuid>` next to the target, and only `flush()` (called by
//!   dav-server once the whole body arrived) fsyncs it, charges the quota and renames it over
//!   the target; dropping an unflushed upload removes the temp file and gives the reserved
//!   space back;
//! - every quota change and the rename/unlink it pays for (PUT, COPY, DELETE, MOVE) go through
//!   the intent journal (journal.rs), so a crash between the two is finished at restart;
//! - quota is reserved before the first byte is written (507 when it cannot fit), grown while
//!   a body of unknown length streams in, charged on commit, refunded on delete and overwrite;
//! - dead properties live in PostgreSQL (props.rs) and follow their resource;
//! - every path goes through `paths::resolve` (no symlinks, no escape from the user's root).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::{Buf, Bytes, BytesMut};
use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavMetaData, DavProp, FsError, FsFuture, FsResult, FsStream, GuardedFileSystem, OpenOptions,
    ReadDirMeta,
};
use futures::FutureExt;
use http::StatusCode;
use shared::quota::{self, QuotaError, QuotaInfo, Reservation, UPLOAD_TEMP_PREFIX, Usage};
use sqlx::PgPool;

use self::commit::PlaceCommit;
use crate::journal::{Journal, Step};
use crate::{paths, props};

mod commit;

/// Bytes of an upload buffered before they are written out (bounded memory per upload).
const WRITE_CHUNK: usize = 1 << 20;
/// How much more quota an upload of unknown length reserves each time it outgrows its reservation.
const GROW_STEP: u64 = 64 << 20;

/// Remove upload temp files left by a crash or power cut under `files_dir` (all users' trees):
/// those last written before `started` (when this davd started; its own uploads are newer).
/// Run after the journal's recovery, which has placed every temp file a committed PUT or
/// COPY still needed; the rest were never acknowledged, so no content is lost. Returns how
/// many were removed.
pub fn sweep_stale_uploads(files_dir: &Path, started: SystemTime) -> usize {
    let mut removed = 0;
    let mut stack = vec![files_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file()
                && paths::is_hidden_name(entry.file_name().as_encoded_bytes())
                && meta.modified().is_ok_and(|m| m < started)
            {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => {
                        tracing::info!(path = %entry.path().display(), "removed an upload left by a crash");
                        removed += 1;
                    }
                    Err(e) => tracing::warn!(path = %entry.path().display(), "cannot remove a stale upload: {e}"),
                }
            }
        }
    }
    removed
}

/// The authenticated user, handed by dav-server to every file system call.
#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub address: String,
    /// `DATA/files/<address>`.
    pub root: PathBuf,
}

/// The file system of all users; each call acts in the tree of the user it is given. Made
/// per request: it remembers the dead properties of the last folder listed, so a PROPFIND of
/// a folder costs one query for all its entries' properties.
#[derive(Clone)]
pub struct TinyFs {
    db: PgPool,
    journal: Arc<Journal>,
    listing: Arc<Mutex<Option<Listing>>>,
    /// The account's quota and usage, read once when this request (a PROPFIND asking for
    /// quota) needs them: every collection's quota-used-bytes and `get_quota` answer from it.
    quota: Option<QuotaInfo>,
}

/// Dead properties of one folder's entries, by key.
struct Listing {
    dir: String,
    props: HashMap<String, Vec<DavProp>>,
}

impl TinyFs {
    pub fn new(db: PgPool, journal: Arc<Journal>) -> TinyFs {
        TinyFs {
            db,
            journal,
            listing: Arc::new(Mutex::new(None)),
            quota: None,
        }
    }

    /// Answer this request's RFC 4331 quota properties from `info` (read once per request):
    /// every collection's quota-used-bytes is the account's usage.
    pub fn with_quota(mut self, info: QuotaInfo) -> TinyFs {
        self.quota = Some(info);
        self
    }

    /// The dead properties of `key` if its folder was just listed.
    fn listed_props(&self, key: &str) -> Option<Vec<DavProp>> {
        let listing = self.listing.lock().expect("listing cache lock");
        let listing = listing.as_ref()?;
        (key != "/" && listing.dir == props::parent_key(key))
            .then(|| listing.props.get(key).cloned().unwrap_or_default())
    }
}

fn db_error(e: sqlx::Error) -> FsError {
    if quota::is_db_disk_full(&e) {
        // RFC 4918 §11.5: 507, the server cannot store what the request needs.
        tracing::warn!("database: {e}");
        return FsError::InsufficientStorage;
    }
    tracing::error!("database: {e}");
    FsError::GeneralFailure
}

fn quota_error(e: QuotaError) -> FsError {
    match e {
        QuotaError::Exceeded { requested, available } => {
            tracing::info!(requested, available, "refused: over quota");
            FsError::InsufficientStorage
        }
        // RFC 4918 §11.5: 507 Insufficient Storage, also when the disk (not the quota) is full.
        QuotaError::DiskFull { requested, available } => {
            tracing::warn!(requested, available, "refused: disk nearly full");
            FsError::InsufficientStorage
        }
        QuotaError::UnknownUser => FsError::Forbidden,
        QuotaError::Db(e) => db_error(e),
    }
}

/// Run blocking file work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> FsResult<T> + Send + 'static) -> FsResult<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        tracing::error!("blocking file task failed: {e}");
        Err(FsError::GeneralFailure)
    })
}

fn io(e: std::io::Error) -> FsError {
    paths::fs_error(&e)
}

/// fsync a directory, so a rename or unlink in it survives a power cut.
fn sync_dir(dir: &Path) -> FsResult<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

fn parent_of(path: &Path) -> FsResult<&Path> {
    path.parent().ok_or(FsError::Forbidden)
}

fn temp_path_beside(target: &Path) -> FsResult<PathBuf> {
    Ok(parent_of(target)?.join(format!("{UPLOAD_TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple())))
}

fn create_temp(path: &Path) -> FsResult<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io)
}

fn open_read(path: &Path) -> FsResult<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io)?;
    if !file.metadata().map_err(io)?.is_file() {
        return Err(FsError::Forbidden);
    }
    Ok(file)
}

/// Metadata of a file or directory.
#[derive(Debug, Clone)]
pub struct Meta(std::fs::Metadata, Option<SystemTime>, Option<u64>);

impl DavMetaData for Meta {
    fn len(&self) -> u64 {
        // A directory's st_size means nothing to a client (and would be reported as its usage).
        // For a collection, dav-server reports len() as its RFC 4331 quota-used-bytes; the
        // quota covers the whole account, so that is the account's usage when known.
        if self.0.is_dir() {
            self.2.unwrap_or(0)
        } else {
            self.0.len()
        }
    }
    fn modified(&self) -> FsResult<SystemTime> {
        self.0.modified().map_err(io)
    }
    fn is_dir(&self) -> bool {
        self.0.is_dir()
    }
    fn is_symlink(&self) -> bool {
        self.0.file_type().is_symlink()
    }
    fn accessed(&self) -> FsResult<SystemTime> {
        self.0.accessed().map_err(io)
    }
    /// The creation time Windows set (win32.rs), else the file's birth time.
    fn created(&self) -> FsResult<SystemTime> {
        match self.1 {
            Some(t) => Ok(t),
            None => self.0.created().map_err(io),
        }
    }
    fn status_changed(&self) -> FsResult<SystemTime> {
        Ok(SystemTime::UNIX_EPOCH + std::time::Duration::new(self.0.ctime().max(0) as u64, self.0.ctime_nsec() as u32))
    }
    fn executable(&self) -> FsResult<bool> {
        Ok(self.0.is_file() && self.0.permissions().mode() & 0o100 != 0)
    }
    /// RFC 4918 section 8.6: a strong validator that changes with every new version. Inode,
    /// size and modification time: a rename-over (every PUT) always gives a new inode.
    fn etag(&self) -> Option<String> {
        let m = &self.0;
        Some(format!(
            "{:x}-{:x}-{:x}.{:x}",
            m.ino(),
            m.len(),
            m.mtime(),
            m.mtime_nsec()
        ))
    }
}

fn stat(path: &Path) -> FsResult<Meta> {
    let meta = path.symlink_metadata().map_err(io)?;
    if meta.file_type().is_symlink() {
        return Err(FsError::NotFound);
    }
    Ok(Meta(meta, None, None))
}

struct Entry {
    name: Vec<u8>,
    meta: Meta,
}

impl DavDirEntry for Entry {
    fn name(&self) -> Vec<u8> {
        self.name.clone()
    }
    fn metadata(&'_ self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let meta: Box<dyn DavMetaData> = Box::new(self.meta.clone());
        Box::pin(futures::future::ready(Ok(meta)))
    }
}

/// A file opened for reading (GET, with Range through `seek`).
#[derive(Debug)]
struct ReadFile {
    file: Option<File>,
}

impl ReadFile {
    fn take(&mut self) -> FsResult<File> {
        self.file.take().ok_or(FsError::GeneralFailure)
    }
}

impl DavFile for ReadFile {
    fn metadata(&'_ mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        async move {
            let meta = self
                .file
                .as_ref()
                .ok_or(FsError::GeneralFailure)?
                .metadata()
                .map_err(io)?;
            Ok(Box::new(Meta(meta, None, None)) as Box<dyn DavMetaData>)
        }
        .boxed()
    }
    fn write_buf(&'_ mut self, _buf: Box<dyn Buf + Send>) -> FsFuture<'_, ()> {
        Box::pin(futures::future::ready(Err(FsError::NotImplemented)))
    }
    fn write_bytes(&'_ mut self, _buf: Bytes) -> FsFuture<'_, ()> {
        Box::pin(futures::future::ready(Err(FsError::NotImplemented)))
    }
    fn read_bytes(&'_ mut self, count: usize) -> FsFuture<'_, Bytes> {
        async move {
            let mut file = self.take()?;
            let (file, data) = blocking(move || {
                let mut buf = BytesMut::zeroed(count);
                let n = file.read(&mut buf).map_err(io)?;
                buf.truncate(n);
                Ok((file, buf.freeze()))
            })
            .await?;
            self.file = Some(file);
            Ok(data)
        }
        .boxed()
    }
    fn seek(&'_ mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        async move {
            let mut file = self.take()?;
            let (file, at) = blocking(move || {
                let at = file.seek(pos).map_err(io)?;
                Ok((file, at))
            })
            .await?;
            self.file = Some(file);
            Ok(at)
        }
        .boxed()
    }
    fn flush(&'_ mut self) -> FsFuture<'_, ()> {
        Box::pin(futures::future::ready(Ok(())))
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
    target: PathBuf,
    temp: PathBuf,
    file: Option<File>,
    pending: BytesMut,
    /// Content-Length or X-Expected-Entity-Length, when the client said.
    expected: Option<u64>,
    written: u64,
    /// Size of the file this upload replaces (refunded on commit, so it counts as room now).
    replaces: u64,
    /// Quota reservations held: (id, bytes).
    reservations: Vec<(i64, u64)>,
    committed: bool,
}

impl Upload {
    fn reserved(&self) -> u64 {
        self.reservations.iter().map(|r| r.1).sum()
    }

    /// DESIGN.md "Quota": a body that grows past its reservation must fit too, else 507.
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

    async fn write_pending(&mut self) -> FsResult<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let data = self.pending.split().freeze();
        let mut file = self.file.take().ok_or(FsError::GeneralFailure)?;
        let file = blocking(move || {
            file.write_all(&data).map_err(io)?;
            Ok(file)
        })
        .await?;
        self.file = Some(file);
        Ok(())
    }

    async fn accept(&mut self, data: &[u8]) -> FsResult<()> {
        self.written += data.len() as u64;
        if let Some(expected) = self.expected
            && self.written > expected
        {
            tracing::warn!(expected, written = self.written, "PUT body longer than announced");
            return Err(FsError::TooLarge);
        }
        self.ensure_quota().await?;
        self.pending.extend_from_slice(data);
        if self.pending.len() >= WRITE_CHUNK {
            self.write_pending().await?;
        }
        Ok(())
    }

    /// Everything arrived: make it durable and put it in place (DESIGN.md "Durability").
    async fn commit(&mut self) -> FsResult<()> {
        self.write_pending().await?;
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
        let file = self.file.take().ok_or(FsError::GeneralFailure)?;
        let ino = blocking(move || {
            file.sync_all().map_err(io)?;
            Ok(file.metadata().map_err(io)?.ino())
        })
        .await?;
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
        };
        tokio::spawn(commit.run()).await.unwrap_or_else(|e| {
            tracing::error!("upload commit task failed: {e}");
            Err(FsError::GeneralFailure)
        })
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
                let chunk = buf.chunk().to_vec();
                buf.advance(chunk.len());
                self.accept(&chunk).await?;
            }
            Ok(())
        }
        .boxed()
    }
    fn write_bytes(&'_ mut self, buf: Bytes) -> FsFuture<'_, ()> {
        async move { self.accept(&buf).await }.boxed()
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

impl TinyFs {
    async fn open_for_write(&self, path: &DavPath, options: OpenOptions, user: &User) -> FsResult<Box<dyn DavFile>> {
        let target = paths::resolve(&user.root, path)?;
        let t = target.clone();
        let existing = blocking(move || match t.symlink_metadata() {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        })
        .await?;
        match &existing {
            Some(m) if !m.is_file() => return Err(FsError::Forbidden),
            Some(_) if options.create_new => return Err(FsError::Exists),
            None if !options.create => return Err(FsError::NotFound),
            _ => {}
        }
        let parent = parent_of(&target)?.to_path_buf();
        let p = parent.clone();
        if !blocking(move || Ok(p.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false))).await? {
            return Err(FsError::NotFound);
        }
        if options.append || !options.truncate {
            if existing.is_some() {
                return Err(FsError::NotImplemented);
            }
            // LOCK on an unmapped URL creates an empty resource (RFC 4918 section 7.3). Under
            // the journal lock with its done rows gone: a new file must never be taken for
            // one an earlier DELETE's row names (inode numbers are reused).
            let mut guard = self.journal.lock(user.id, &user.root).await?;
            guard.settle().await?;
            let file = blocking(move || {
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
                Ok(file)
            })
            .await?;
            return Ok(Box::new(ReadFile { file: Some(file) }));
        }
        let replaces = existing.map(|m| m.len()).unwrap_or(0);
        let temp = temp_path_beside(&target)?;
        let t = temp.clone();
        let file = blocking(move || create_temp(&t)).await?;
        // The upload owns its temp file and reservations from here: dropped at any point
        // (a refusal, a client gone), it removes the one and gives the others back.
        let mut upload = Box::new(Upload {
            db: self.db.clone(),
            journal: self.journal.clone(),
            user_id: user.id,
            root: user.root.clone(),
            target,
            temp,
            file: Some(file),
            pending: BytesMut::with_capacity(WRITE_CHUNK),
            expected: options.size,
            written: 0,
            replaces,
            reservations: Vec::new(),
            committed: false,
        });
        // DESIGN.md "Quota": reserve the announced size before the first byte (507 if it cannot fit).
        if let Some(size) = options.size {
            let need = size.saturating_sub(replaces);
            if need > 0 {
                let r = quota::reserve(&self.db, user.id, need).await.map_err(quota_error)?;
                upload.reservations.push((r.id, r.bytes));
            }
        }
        Ok(upload)
    }

    async fn do_copy(&self, from: &DavPath, to: &DavPath, user: &User) -> FsResult<()> {
        let src = paths::resolve(&user.root, from)?;
        let dst = paths::resolve(&user.root, to)?;
        let s = src.clone();
        let len = blocking(move || {
            let m = stat(&s)?;
            if !m.0.is_file() {
                return Err(FsError::Forbidden);
            }
            Ok(m.0.len())
        })
        .await?;
        // COPY charges the new file (DESIGN.md "Quota"); reserve first so a big copy is refused early.
        let reservation = quota::reserve(&self.db, user.id, len).await.map_err(quota_error)?;
        let temp = temp_path_beside(&dst)?;
        let (s, t) = (src.clone(), temp.clone());
        let copied = blocking(move || {
            let mut input = open_read(&s)?;
            let mut output = create_temp(&t)?;
            let n = std::io::copy(&mut input, &mut output).map_err(io)?;
            output.sync_all().map_err(io)?;
            Ok((n, output.metadata().map_err(io)?.ino()))
        })
        .await;
        let (n, ino) = match copied {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                let _ = quota::release(&self.db, reservation).await;
                return Err(e);
            }
        };
        let commit = PlaceCommit {
            journal: self.journal.clone(),
            user_id: user.id,
            root: user.root.clone(),
            temp,
            target: dst,
            ino,
            written: n,
            reservations: vec![(reservation.id, reservation.bytes)],
            props_from: Some((paths::key(from), paths::key(to))),
        };
        tokio::spawn(commit.run()).await.unwrap_or_else(|e| {
            tracing::error!("copy commit task failed: {e}");
            Err(FsError::GeneralFailure)
        })
    }

    /// DELETE of a file: refund and unlink, through the journal (journal.rs).
    async fn do_remove_file(&self, path: &DavPath, user: &User) -> FsResult<()> {
        let target = paths::resolve(&user.root, path)?;
        let (journal, user, key) = (self.journal.clone(), user.clone(), paths::key(path));
        // A task of its own: a dropped request must not cut between commit and unlink.
        let task = async move {
            let mut guard = journal.lock(user.id, &user.root).await?;
            let t = target.clone();
            let (len, ino) = blocking(move || {
                let m = stat(&t)?;
                if !m.0.is_file() {
                    return Err(FsError::Forbidden);
                }
                Ok((m.0.len(), m.0.ino()))
            })
            .await?;
            let mut tx = guard.db().begin().await.map_err(db_error)?;
            // DELETE refunds (DESIGN.md "Quota").
            quota::refund(&mut tx, user.id, Usage::Files, len)
                .await
                .map_err(quota_error)?;
            props::delete_tree(&mut tx, user.id, &key).await.map_err(db_error)?;
            let step = Step::Delete { target, ino };
            let id = guard.record(&mut tx, &step).await?;
            guard.commit_and_apply(tx, id, step).await
        };
        tokio::spawn(task).await.unwrap_or_else(|e| {
            tracing::error!("delete task failed: {e}");
            Err(FsError::GeneralFailure)
        })
    }

    /// MOVE: refund a replaced file, move the dead properties, rename, through the journal.
    async fn do_rename(&self, from: &DavPath, to: &DavPath, user: &User) -> FsResult<()> {
        let src = paths::resolve(&user.root, from)?;
        let dst = paths::resolve(&user.root, to)?;
        if src == user.root || dst == user.root {
            return Err(FsError::Forbidden);
        }
        let (journal, user) = (self.journal.clone(), user.clone());
        let (from_key, to_key) = (paths::key(from), paths::key(to));
        let task = async move {
            let mut guard = journal.lock(user.id, &user.root).await?;
            let (s, d) = (src.clone(), dst.clone());
            // Everything that would make the rename fail is checked before the commit.
            let (ino, replaced) = blocking(move || {
                let m = s.symlink_metadata().map_err(io)?;
                if !m.is_file() && !m.is_dir() {
                    return Err(FsError::NotFound);
                }
                if m.is_dir() && d.starts_with(&s) {
                    return Err(FsError::Forbidden);
                }
                if !parent_of(&d)?.symlink_metadata().is_ok_and(|p| p.is_dir()) {
                    return Err(FsError::NotFound);
                }
                let replaced = match d.symlink_metadata() {
                    Ok(dm) if dm.is_file() && m.is_file() => dm.len(),
                    Ok(dm) if dm.ino() == m.ino() => 0,
                    Ok(_) => return Err(FsError::Exists),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                    Err(e) => return Err(io(e)),
                };
                Ok((m.ino(), replaced))
            })
            .await?;
            let mut tx = guard.db().begin().await.map_err(db_error)?;
            quota::refund(&mut tx, user.id, Usage::Files, replaced)
                .await
                .map_err(quota_error)?;
            props::move_tree(&mut tx, user.id, &from_key, &to_key)
                .await
                .map_err(db_error)?;
            let step = Step::Move {
                from: src,
                to: dst,
                ino,
            };
            let id = guard.record(&mut tx, &step).await?;
            guard.commit_and_apply(tx, id, step).await
        };
        tokio::spawn(task).await.unwrap_or_else(|e| {
            tracing::error!("move task failed: {e}");
            Err(FsError::GeneralFailure)
        })
    }
}

impl TinyFs {
    /// Make Windows' PROPPATCH of its Win32 properties true (see win32.rs): apply the times to
    /// the file and keep all of them as dead properties.
    pub async fn apply_win32(&self, path: &DavPath, user: &User, sets: Vec<DavProp>) -> FsResult<()> {
        let target = paths::resolve(&user.root, path)?;
        let modified = sets
            .iter()
            .find_map(|p| crate::win32::time_of(p, "Win32LastModifiedTime"));
        let accessed = sets
            .iter()
            .find_map(|p| crate::win32::time_of(p, "Win32LastAccessTime"));
        if modified.is_some() || accessed.is_some() {
            blocking(move || {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&target)
                    .map_err(io)?;
                let mut times = std::fs::FileTimes::new();
                if let Some(t) = modified {
                    times = times.set_modified(t);
                }
                if let Some(t) = accessed {
                    times = times.set_accessed(t);
                }
                file.set_times(times).map_err(io)
            })
            .await?;
        }
        let patch = sets.into_iter().map(|p| (true, p)).collect();
        props::patch(&self.db, user.id, &paths::key(path), patch).await?;
        Ok(())
    }
}

impl GuardedFileSystem<User> for TinyFs {
    fn open<'a>(&'a self, path: &'a DavPath, options: OpenOptions, user: &'a User) -> FsFuture<'a, Box<dyn DavFile>> {
        async move {
            if options.write || options.append {
                return self.open_for_write(path, options, user).await;
            }
            let target = paths::resolve(&user.root, path)?;
            let file = blocking(move || open_read(&target)).await?;
            Ok(Box::new(ReadFile { file: Some(file) }) as Box<dyn DavFile>)
        }
        .boxed()
    }

    fn read_dir<'a>(
        &'a self,
        path: &'a DavPath,
        _meta: ReadDirMeta,
        user: &'a User,
    ) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
        async move {
            let dir = paths::resolve(&user.root, path)?;
            let entries = blocking(move || std::fs::read_dir(&dir).map_err(io)).await?;
            let dir_key = paths::key(path);
            let listed = props::list_children(&self.db, user.id, &dir_key).await?;
            let created: HashMap<Vec<u8>, SystemTime> = listed
                .iter()
                .filter_map(|(key, props)| {
                    let p = props
                        .iter()
                        .find(|p| p.name == "Win32CreationTime" && p.namespace.as_deref() == Some(crate::win32::NS))?;
                    let name = key.rsplit('/').next().map(paths::decode_segment)?;
                    Some((name, props::created_from(p.xml.as_deref()?)?))
                })
                .collect();
            *self.listing.lock().expect("listing cache lock") = Some(Listing {
                dir: dir_key,
                props: listed,
            });
            // Streamed: a folder of any size is listed with bounded memory.
            let dir_len = self.quota.as_ref().map(QuotaInfo::used);
            let (tx, rx) = tokio::sync::mpsc::channel::<FsResult<Box<dyn DavDirEntry>>>(64);
            tokio::task::spawn_blocking(move || {
                for entry in entries {
                    let Ok(entry) = entry else { continue };
                    let name = entry.file_name().into_encoded_bytes();
                    if paths::is_hidden_name(&name) {
                        continue;
                    }
                    let Ok(meta) = entry.path().symlink_metadata() else {
                        continue;
                    };
                    // Symlinks, sockets, fifos: not part of the share.
                    if !meta.is_file() && !meta.is_dir() {
                        continue;
                    }
                    let created = created.get(&name).copied();
                    let item: Box<dyn DavDirEntry> = Box::new(Entry {
                        name,
                        meta: Meta(meta, created, dir_len),
                    });
                    if tx.blocking_send(Ok(item)).is_err() {
                        break;
                    }
                }
            });
            let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
            Ok(Box::pin(stream) as FsStream<Box<dyn DavDirEntry>>)
        }
        .boxed()
    }

    fn metadata<'a>(&'a self, path: &'a DavPath, user: &'a User) -> FsFuture<'a, Box<dyn DavMetaData>> {
        async move {
            let target = paths::resolve(&user.root, path)?;
            let mut meta = blocking(move || stat(&target)).await?;
            // Finder's AppleDouble (`._*`) and `.DS_Store` files come in swarms and never get
            // Windows times: keep them to a stat.
            if !paths::is_finder_metadata(path.file_name_bytes()) {
                meta.1 = props::win32_created(&self.db, user.id, &paths::key(path)).await?;
            }
            meta.2 = self.quota.as_ref().map(QuotaInfo::used);
            Ok(Box::new(meta) as Box<dyn DavMetaData>)
        }
        .boxed()
    }

    fn create_dir<'a>(&'a self, path: &'a DavPath, user: &'a User) -> FsFuture<'a, ()> {
        async move {
            let target = paths::resolve(&user.root, path)?;
            // Every change of the tree forgets the journal's done rows first, so a row left
            // at a crash is always the user's last change (journal.rs).
            let mut guard = self.journal.lock(user.id, &user.root).await?;
            guard.settle().await?;
            blocking(move || {
                std::fs::DirBuilder::new().mode(0o750).create(&target).map_err(io)?;
                sync_dir(parent_of(&target)?)
            })
            .await
        }
        .boxed()
    }

    fn remove_dir<'a>(&'a self, path: &'a DavPath, user: &'a User) -> FsFuture<'a, ()> {
        async move {
            let target = paths::resolve(&user.root, path)?;
            if target == user.root {
                return Err(FsError::Forbidden);
            }
            let mut guard = self.journal.lock(user.id, &user.root).await?;
            guard.settle().await?;
            let mut tx = self.db.begin().await.map_err(db_error)?;
            props::delete_tree(&mut tx, user.id, &paths::key(path))
                .await
                .map_err(db_error)?;
            blocking(move || {
                std::fs::remove_dir(&target).map_err(io)?;
                sync_dir(parent_of(&target)?)
            })
            .await?;
            tx.commit().await.map_err(db_error)
        }
        .boxed()
    }

    fn remove_file<'a>(&'a self, path: &'a DavPath, user: &'a User) -> FsFuture<'a, ()> {
        async move { self.do_remove_file(path, user).await }.boxed()
    }

    fn rename<'a>(&'a self, from: &'a DavPath, to: &'a DavPath, user: &'a User) -> FsFuture<'a, ()> {
        async move { self.do_rename(from, to, user).await }.boxed()
    }

    fn copy<'a>(&'a self, from: &'a DavPath, to: &'a DavPath, user: &'a User) -> FsFuture<'a, ()> {
        async move { self.do_copy(from, to, user).await }.boxed()
    }

    fn have_props<'a>(
        &'a self,
        _path: &'a DavPath,
        _user: &'a User,
    ) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(futures::future::ready(true))
    }

    fn patch_props<'a>(
        &'a self,
        path: &'a DavPath,
        patch: Vec<(bool, DavProp)>,
        user: &'a User,
    ) -> FsFuture<'a, Vec<(StatusCode, DavProp)>> {
        async move {
            let target = paths::resolve(&user.root, path)?;
            blocking(move || stat(&target)).await?;
            props::patch(&self.db, user.id, &paths::key(path), patch).await
        }
        .boxed()
    }

    fn get_props<'a>(&'a self, path: &'a DavPath, do_content: bool, user: &'a User) -> FsFuture<'a, Vec<DavProp>> {
        async move {
            let key = paths::key(path);
            if let Some(mut listed) = self.listed_props(&key) {
                if !do_content {
                    listed.iter_mut().for_each(|p| p.xml = None);
                }
                return Ok(listed);
            }
            props::list(&self.db, user.id, &key, do_content).await
        }
        .boxed()
    }

    fn get_prop<'a>(&'a self, path: &'a DavPath, prop: DavProp, user: &'a User) -> FsFuture<'a, Vec<u8>> {
        async move {
            let key = paths::key(path);
            if let Some(listed) = self.listed_props(&key) {
                return listed
                    .into_iter()
                    .find(|p| p.name == prop.name && p.namespace == prop.namespace)
                    .and_then(|p| p.xml)
                    .ok_or(FsError::NotFound);
            }
            props::get(&self.db, user.id, &key, &prop).await
        }
        .boxed()
    }

    /// RFC 4331: used bytes (mail and files: one quota) and used + available.
    fn get_quota<'a>(&'a self, user: &'a User) -> FsFuture<'a, (u64, Option<u64>)> {
        async move {
            let info = match &self.quota {
                Some(info) => info.clone(),
                None => quota::info(&self.db, user.id).await.map_err(quota_error)?,
            };
            let used = info.used();
            Ok((used, info.limit.map(|_| used.saturating_add(info.available()))))
        }
        .boxed()
    }
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
        let started = SystemTime::now() - std::time::Duration::from_secs(60);
        assert_eq!(sweep_stale_uploads(dir.path(), started), 1);
        assert!(!old.exists() && fresh.exists() && kept.exists());
    }
}
