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
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
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
use shared::quota::{self, QuotaError, QuotaInfo};
use sqlx::PgPool;

use self::commit::PlaceCommit;
use self::upload::{create_temp, temp_path_beside};
use crate::journal::Journal;
use crate::{paths, props};

mod commit;
mod tree;
mod upload;

pub use self::upload::sweep_stale_uploads;

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
        async move { self.do_create_dir(path, user).await }.boxed()
    }

    fn remove_dir<'a>(&'a self, path: &'a DavPath, user: &'a User) -> FsFuture<'a, ()> {
        async move { self.do_remove_dir(path, user).await }.boxed()
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
