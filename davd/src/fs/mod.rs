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
//! - dead properties live in PostgreSQL (props.rs) and follow their resource, and so does
//!   each file's content hash, computed while an upload or COPY writes it (checksum.rs);
//! - every path goes through `paths::resolve` (no symlinks, no escape from the user's root).
//!
//! This file holds the types (`User`, `TinyFs`), the helpers every part shares (errors,
//! blocking file work, directory fsync) and the `GuardedFileSystem` impl, which only hands
//! each call to the part that owns it:
//! - `read.rs`: GET, folder listings (streamed), what a PROPFIND reads (propfind.rs), metadata
//!   and the ETag;
//! - `upload.rs`: a PUT's temp file, its quota reservation and growth, the cleanup of an
//!   abandoned upload, and the sweep of temp files a crash left;
//! - `commit.rs`: putting a finished temp file (PUT, COPY) in place through the journal;
//! - `tree.rs`: MKCOL, DELETE, COPY and MOVE;
//! - `properties.rs`: dead properties (PROPFIND, PROPPATCH), Windows' Win32 times, RFC 4331
//!   quota.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavMetaData, DavProp, FsError, FsFuture, FsResult, FsStream, GuardedFileSystem, OpenOptions,
    ReadDirMeta,
};
use futures::FutureExt;
use http::StatusCode;
use shared::quota::{self, QuotaError, QuotaInfo};
use sqlx::PgPool;

use crate::journal::Journal;
use crate::paths;

mod commit;
mod properties;
mod read;
mod tree;
mod upload;

pub use self::read::{Found, Meta, READ_CHUNK, stored_hash_in};
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
/// per request.
#[derive(Clone)]
pub struct TinyFs {
    db: PgPool,
    journal: Arc<Journal>,
    /// The account's quota and usage, read once when this request (a PROPFIND asking for
    /// quota) needs them: every collection's quota-used-bytes and `get_quota` answer from it.
    quota: Option<QuotaInfo>,
    /// For a PUT: the modification time the client gave the file (`X-OC-Mtime`), set on the
    /// temp file before its fsync, so it is as durable as the content.
    mtime: Option<std::time::SystemTime>,
    /// The content hashes of this request: the PUT's `OC-Checksum` to check, and the hash of
    /// the file written or read, for server.rs's answer (checksum.rs).
    checksum: Arc<crate::checksum::Note>,
    /// This request is a DELETE (see [`TinyFs::for_delete`]).
    deleting: bool,
    /// The folder this DELETE removed whole, for the `remove_dir` dav-server calls after.
    deleted_tree: Arc<Mutex<Option<PathBuf>>>,
    /// A GET hands out the file's mapped pages instead of copies (see [`TinyFs::with_mapped_reads`]).
    mapped_reads: bool,
}

impl TinyFs {
    pub fn new(db: PgPool, journal: Arc<Journal>) -> TinyFs {
        TinyFs {
            db,
            journal,
            quota: None,
            mtime: None,
            checksum: Arc::default(),
            deleting: false,
            deleted_tree: Arc::new(Mutex::new(None)),
            mapped_reads: false,
        }
    }

    /// A GET of this request sends the file's own pages, mapped (fs/read.rs `map_piece`),
    /// instead of a copy read into a buffer: one copy of every byte fewer. Only for a response
    /// nothing in davd reads: hyper writing the pieces with writev to a plain socket (the
    /// loopback HTTP listener, server.rs); under TLS, rustls reads every byte to encrypt it.
    pub fn with_mapped_reads(mut self) -> TinyFs {
        self.mapped_reads = true;
        self
    }

    /// Give the file this PUT writes the modification time `mtime`.
    pub fn with_mtime(mut self, mtime: Option<std::time::SystemTime>) -> TinyFs {
        self.mtime = mtime;
        self
    }

    /// Share `note` with this request's file system: it checks the PUT's body against the
    /// note's claims and tells the hash of the file written or read (checksum.rs).
    pub fn with_checksum(mut self, note: Arc<crate::checksum::Note>) -> TinyFs {
        self.checksum = note;
        self
    }

    /// For a DELETE request: dav-server deletes a folder by listing it and removing each
    /// member, which would be one journaled transaction (and fsyncs) per file. Here the listing
    /// of the folder being deleted removes the whole tree in one journaled step (tree.rs) and
    /// lists nothing; the `remove_dir` of that folder that follows is then already done.
    /// dav-server has checked the If headers and locks of the whole tree before.
    pub fn for_delete(mut self) -> TinyFs {
        self.deleting = true;
        self
    }

    /// Answer this request's RFC 4331 quota properties from `info` (read once per request):
    /// every collection's quota-used-bytes is the account's usage.
    pub fn with_quota(mut self, info: QuotaInfo) -> TinyFs {
        self.quota = Some(info);
        self
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

impl GuardedFileSystem<User> for TinyFs {
    fn open<'a>(&'a self, path: &'a DavPath, options: OpenOptions, user: &'a User) -> FsFuture<'a, Box<dyn DavFile>> {
        async move {
            if options.write || options.append {
                return self.open_for_write(path, options, user, Vec::new()).await;
            }
            self.open_for_read(path, user).await
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
            if self.deleting
                && let Some(empty) = self.do_remove_tree(path, user).await?
            {
                return Ok(empty);
            }
            self.do_read_dir(path, user).await
        }
        .boxed()
    }

    fn metadata<'a>(&'a self, path: &'a DavPath, user: &'a User) -> FsFuture<'a, Box<dyn DavMetaData>> {
        async move { self.do_metadata(path, user).await }.boxed()
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
        async move { self.do_patch_props(path, patch, user).await }.boxed()
    }

    fn get_props<'a>(&'a self, path: &'a DavPath, do_content: bool, user: &'a User) -> FsFuture<'a, Vec<DavProp>> {
        async move { self.do_get_props(path, do_content, user).await }.boxed()
    }

    fn get_prop<'a>(&'a self, path: &'a DavPath, prop: DavProp, user: &'a User) -> FsFuture<'a, Vec<u8>> {
        async move { self.do_get_prop(path, prop, user).await }.boxed()
    }

    /// RFC 4331: used bytes (mail and files: one quota) and used + available.
    fn get_quota<'a>(&'a self, user: &'a User) -> FsFuture<'a, (u64, Option<u64>)> {
        async move { self.do_get_quota(user).await }.boxed()
    }
}
