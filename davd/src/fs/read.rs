//! Reading a user's tree: opening a file for GET, listing a folder (streamed), what a PROPFIND
//! reads (metadata, one query for the dead properties of a folder and its entries), and the
//! metadata live properties are made of (size, times, strong ETag, the collection's RFC 4331
//! quota-used-bytes).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::SystemTime;

use bytes::{Buf, Bytes};
use dav_server::davpath::DavPath;
use dav_server::fs::{DavDirEntry, DavFile, DavMetaData, DavProp, FsError, FsFuture, FsResult, FsStream};
use futures::FutureExt;
use shared::quota::QuotaInfo;

use super::{TinyFs, User, blocking, io};
use crate::checksum::{self, Outcome, Stored};
use crate::{paths, props};

impl TinyFs {
    /// GET (with Range through `seek`): the file itself, never a symlink or a folder. Its
    /// content hash, if one is stored for exactly the file opened, goes to the request's note
    /// (server.rs sends it as `OC-Checksum`).
    pub(super) async fn open_for_read(&self, path: &DavPath, user: &User) -> FsResult<Box<dyn DavFile>> {
        let target = paths::resolve(&user.root, path)?;
        let (file, meta) = blocking(move || {
            let file = open_read(&target)?;
            let meta = file.metadata().map_err(io)?;
            Ok((file, meta))
        })
        .await?;
        if let Some(hash) = self
            .stored_hash(user, &paths::key(path))
            .await?
            .and_then(|s| s.for_file(&meta))
        {
            self.checksum.set(Outcome::Known(hash));
        }
        let file = ReadFile::new(file);
        let file = if self.mapped_reads { file.mapped() } else { file };
        Ok(Box::new(file) as Box<dyn DavFile>)
    }

    /// The content hash stored for `key` (checksum.rs).
    pub(super) async fn stored_hash(&self, user: &User, key: &str) -> FsResult<Option<Stored>> {
        match props::get(&self.db, user.id, key, &checksum::stored_prop_name()).await {
            Ok(xml) => Ok(stored_from(&xml, user.id, key)),
            Err(FsError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A folder's entries (what dav-server's COPY and MOVE of a folder walk), streamed.
    pub(super) async fn do_read_dir(&self, path: &DavPath, user: &User) -> FsResult<FsStream<Box<dyn DavDirEntry>>> {
        let dir = paths::resolve(&user.root, path)?;
        let mut batches = list_entries(dir).await?;
        let (tx, rx) = tokio::sync::mpsc::channel::<FsResult<Box<dyn DavDirEntry>>>(64);
        tokio::spawn(async move {
            while let Some(batch) = batches.recv().await {
                for (name, meta) in batch {
                    let item: Box<dyn DavDirEntry> = Box::new(Entry { name, meta });
                    if tx.send(Ok(item)).await.is_err() {
                        return;
                    }
                }
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        Ok(Box::pin(stream) as FsStream<Box<dyn DavDirEntry>>)
    }

    /// What a PROPFIND (propfind.rs) reads, Depth 0 or 1: the resource's metadata, the dead
    /// properties of it and of its entries in one query (props.rs `list_folder`; davd's own
    /// content hashes among them with `hashes`), and, for Depth 1 of a folder, its entries,
    /// streamed in batches while the query runs. An error here is the resource's (not found,
    /// forbidden): nothing of the answer is written yet.
    pub async fn for_propfind(&self, path: &DavPath, user: &User, depth_one: bool, hashes: bool) -> FsResult<Found> {
        let target = paths::resolve(&user.root, path)?;
        let meta = blocking(move || stat(&target)).await?;
        let entries = if depth_one && meta.0.is_dir() {
            Some(list_entries(paths::resolve(&user.root, path)?).await?)
        } else {
            None
        };
        let props = props::list_folder(&self.db, user.id, &paths::key(path), entries.is_some(), hashes).await?;
        Ok(Found { meta, props, entries })
    }

    /// A file's or folder's metadata, with its Windows creation time and the account's usage.
    pub(super) async fn do_metadata(&self, path: &DavPath, user: &User) -> FsResult<Box<dyn DavMetaData>> {
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
}

/// The content hash among a resource's dead properties as props.rs lists them (checksum.rs).
pub fn stored_hash_in(listed: &[DavProp], user_id: i64, key: &str) -> Option<Stored> {
    let prop = listed
        .iter()
        .find(|p| checksum::is_reserved(p) && p.name == checksum::NAME)?;
    stored_from(prop.xml.as_deref()?, user_id, key)
}

fn stored_from(xml: &[u8], user_id: i64, key: &str) -> Option<Stored> {
    let stored = Stored::from_xml(xml);
    // A hash still being computed after its upload (checksum.rs `Pending`) is no error.
    if stored.is_none() && !checksum::is_pending(xml) {
        tracing::warn!(user_id, key, "unreadable stored content hash: ignored");
    }
    stored
}

/// What a PROPFIND reads of a resource ([`TinyFs::for_propfind`]).
pub struct Found {
    pub meta: Meta,
    /// Dead properties by key (paths.rs `key`): the resource's and its entries'.
    pub props: HashMap<String, Vec<DavProp>>,
    /// The entries of a folder listed with Depth 1.
    pub entries: Option<Entries>,
}

/// A folder's entries, name and metadata, in batches as they are read.
pub type Entries = tokio::sync::mpsc::Receiver<Vec<(Vec<u8>, Meta)>>;

/// Entries of a listing handed on at once, and batches read ahead: a folder of any size is
/// listed with bounded memory (about `BATCH * (READ_AHEAD_BATCHES + 2)` entries at a time).
const BATCH: usize = 64;
const READ_AHEAD_BATCHES: usize = 4;

/// The entries of folder `dir` with their metadata, read (and stat'ed) on the blocking pool
/// and streamed in batches; upload temp files, symlinks and anything neither file nor folder
/// are left out (not part of the share, paths.rs).
async fn list_entries(dir: std::path::PathBuf) -> FsResult<Entries> {
    let entries = blocking(move || std::fs::read_dir(&dir).map_err(io)).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD_BATCHES);
    tokio::task::spawn_blocking(move || {
        let mut batch = Vec::with_capacity(BATCH);
        for entry in entries {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name().into_encoded_bytes();
            if paths::is_hidden_name(&name) {
                continue;
            }
            // read_dir's DirEntry::metadata is an lstat (fstatat without following).
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if !meta.is_file() && !meta.is_dir() {
                continue;
            }
            batch.push((name, Meta(meta, None, None)));
            if batch.len() == BATCH
                && tx
                    .blocking_send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))
                    .is_err()
            {
                return;
            }
        }
        if !batch.is_empty() {
            let _ = tx.blocking_send(batch);
        }
    });
    Ok(rx)
}

pub(super) fn open_read(path: &Path) -> FsResult<File> {
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
pub struct Meta(
    pub(super) std::fs::Metadata,
    pub(super) Option<SystemTime>,
    pub(super) Option<u64>,
);

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

impl Meta {
    /// The file's own metadata.
    pub fn metadata(&self) -> &std::fs::Metadata {
        &self.0
    }

    /// With the creation time Windows stored for it (win32.rs), if any.
    pub fn with_created(mut self, created: Option<SystemTime>) -> Meta {
        self.1 = created;
        self
    }
}

pub(super) fn stat(path: &Path) -> FsResult<Meta> {
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

/// Bytes read from the file at once, and the most dav-server asks for at a time (the
/// handler's `read_buf_size`, [`READ_CHUNK`]): each read is a trip to the blocking pool and
/// each piece handed out is one frame hyper writes, so a GET of a large file moves 1 MiB per
/// read and per socket write (dav-server's default is 16 KiB). Bounded by what is left of the
/// file, so a small file costs no more than its size.
const READ_AHEAD: usize = 1 << 20;

/// What dav-server reads per `read_bytes` of a GET (server.rs and share.rs set it).
pub const READ_CHUNK: usize = READ_AHEAD;

/// A file opened for reading (GET, with Range through `seek`).
#[derive(Debug)]
pub(super) struct ReadFile {
    file: Option<File>,
    /// Read from the file but not handed out yet: it starts at the file's position `cursor`
    /// minus its length.
    ahead: Bytes,
    /// The position of the open file.
    cursor: u64,
    /// The file's size when opened (files are replaced by rename, so an open one keeps it).
    size: u64,
    /// Hand out the file's own pages (mapped, [`map_piece`]) instead of copies of them: only
    /// where nothing in davd reads the pieces, see [`TinyFs::with_mapped_reads`].
    mapped: bool,
}

impl ReadFile {
    pub(super) fn new(file: File) -> ReadFile {
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        ReadFile {
            file: Some(file),
            ahead: Bytes::new(),
            cursor: 0,
            size,
            mapped: false,
        }
    }

    /// Pieces of this file are its mapped pages ([`map_piece`]).
    pub(super) fn mapped(mut self) -> ReadFile {
        self.mapped = true;
        self
    }

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
        if !self.ahead.is_empty() {
            let n = count.min(self.ahead.len());
            return Box::pin(futures::future::ready(Ok(self.ahead.split_to(n))));
        }
        async move {
            let file = self.take()?;
            let left = usize::try_from(self.size.saturating_sub(self.cursor)).unwrap_or(usize::MAX);
            let want = count.max(left.min(READ_AHEAD));
            let (mapped, at) = (self.mapped, self.cursor);
            let (file, mut data) = blocking(move || {
                if mapped && let Some(piece) = map_piece(&file, at, want.min(left)) {
                    // The file's position follows what was handed out, as after a read.
                    (&file).seek(SeekFrom::Current(piece.len() as i64)).map_err(io)?;
                    return Ok((file, piece));
                }
                // Into spare capacity: no zero-filling of a buffer the read overwrites.
                let mut buf = Vec::with_capacity(want);
                (&file).take(want as u64).read_to_end(&mut buf).map_err(io)?;
                Ok((file, Bytes::from(buf)))
            })
            .await?;
            self.file = Some(file);
            self.cursor += data.len() as u64;
            // Never more than asked: dav-server counts what it got against the range it sends.
            let first = data.split_to(count.min(data.len()));
            self.ahead = data;
            Ok(first)
        }
        .boxed()
    }
    fn seek(&'_ mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        async move {
            // Relative to what was handed out, not to what was read ahead.
            let pos = match pos {
                SeekFrom::Current(off) => SeekFrom::Current(off - self.ahead.len() as i64),
                other => other,
            };
            self.ahead = Bytes::new();
            let mut file = self.take()?;
            let (file, at) = blocking(move || {
                let at = file.seek(pos).map_err(io)?;
                Ok((file, at))
            })
            .await?;
            self.file = Some(file);
            self.cursor = at;
            Ok(at)
        }
        .boxed()
    }
    fn flush(&'_ mut self) -> FsFuture<'_, ()> {
        Box::pin(futures::future::ready(Ok(())))
    }
}

/// `len` bytes of `file` from `offset` as the file's own pages: mapped, and read in here
/// (MADV_POPULATE_READ, Linux 5.14) on the blocking pool, so the async thread that sends them
/// never waits for the disk, and the socket write copies straight from the page cache (one
/// copy fewer than a read into a buffer). Unmapped when hyper drops the piece, so only the
/// pieces in flight are mapped. `None` when the kernel cannot (an older kernel, a file shrunk
/// behind davd's back): the caller reads a copy instead.
#[allow(unsafe_code)] // mmap(2): see SAFETY below.
fn map_piece(file: &File, offset: u64, len: usize) -> Option<Bytes> {
    if len == 0 {
        return None;
    }
    // SAFETY: davd never changes a file in place: every PUT, COPY and chunked assembly writes
    // a temp file and renames it over the old one (fs/upload.rs, fs/tree.rs, chunked.rs), so
    // the mapped file keeps its bytes, and an unlinked one stays readable until unmapped. A
    // file truncated behind davd's back (by hand, on the server) would make a read of the
    // missing pages fault; the pieces are handed only to hyper writing a plain socket with
    // writev (server.rs: `writev(true)`, never copied in this process), where that fault is
    // the kernel's and comes back as EFAULT on the write, not as SIGBUS.
    let map = unsafe { memmap2::MmapOptions::new().offset(offset).len(len).map(file) };
    let map = match map {
        Ok(map) => map,
        Err(e) => {
            tracing::debug!("mapping a piece of a file: {e}");
            return None;
        }
    };
    // Read ahead generously behind this piece, then fault its pages in here.
    if let Err(e) = map.advise(memmap2::Advice::Sequential) {
        tracing::debug!("madvise(SEQUENTIAL): {e}");
    }
    if let Err(e) = map.advise(memmap2::Advice::PopulateRead) {
        tracing::debug!("madvise(POPULATE_READ): {e}");
        return None;
    }
    Some(Bytes::from_owner(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(len: usize) -> Vec<u8> {
        (0..len as u64)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8)
            .collect()
    }

    /// Whether `ptr` lies in a mapping of `path` (/proc/self/maps).
    fn mapped_from(ptr: *const u8, path: &Path) -> bool {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let path = path.canonicalize().unwrap();
        let name = path.to_str().unwrap();
        maps.lines().filter(|l| l.ends_with(name)).any(|l| {
            let range = l.split(' ').next().unwrap();
            let (from, to) = range.split_once('-').unwrap();
            let (from, to) = (
                usize::from_str_radix(from, 16).unwrap(),
                usize::from_str_radix(to, 16).unwrap(),
            );
            (from..to).contains(&(ptr as usize))
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mapped_pieces_are_the_file_s_pages_at_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        let data = content(READ_AHEAD * 2 + 4321);
        std::fs::write(&path, &data).unwrap();

        let mut file = ReadFile::new(File::open(&path).unwrap()).mapped();
        let first = file.read_bytes(READ_CHUNK).await.unwrap();
        assert!(first[..] == data[..READ_CHUNK]);
        assert!(mapped_from(first.as_ptr(), &path), "a piece is the file's mapped pages");
        // Small reads come out of the piece read ahead; a seek to an offset that is not a
        // page's start maps from there.
        let at = READ_AHEAD as u64 + 1234;
        assert_eq!(file.seek(SeekFrom::Start(at)).await.unwrap(), at);
        let small = file.read_bytes(10).await.unwrap();
        assert!(small[..] == data[at as usize..at as usize + 10]);
        assert!(mapped_from(small.as_ptr(), &path));
        assert_eq!(file.seek(SeekFrom::Current(5)).await.unwrap(), at + 15);
        let mut rest = Vec::new();
        loop {
            let piece = file.read_bytes(READ_CHUNK).await.unwrap();
            if piece.is_empty() {
                break;
            }
            rest.extend_from_slice(&piece);
        }
        assert!(rest[..] == data[at as usize + 15..]);
        // Unmapped once the pieces are dropped.
        let ptr = first.as_ptr();
        drop((first, small, file));
        assert!(!mapped_from(ptr, &path));

        // Without `mapped`: copies, as under TLS.
        let mut plain = ReadFile::new(File::open(&path).unwrap());
        let copy = plain.read_bytes(READ_CHUNK).await.unwrap();
        assert!(copy[..] == data[..READ_CHUNK]);
        assert!(!mapped_from(copy.as_ptr(), &path));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_cut_short_behind_davd_is_read_not_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        let data = content(READ_AHEAD * 3);
        std::fs::write(&path, &data).unwrap();
        let mut file = ReadFile::new(File::open(&path).unwrap()).mapped();
        let first = file.read_bytes(READ_CHUNK).await.unwrap();
        assert!(first[..] == data[..READ_CHUNK]);
        // Shrunk in place (never by davd itself): the pages past the new end cannot be
        // faulted in, so the piece is read instead, short, and no SIGBUS ever happens.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(READ_AHEAD as u64 + 100)
            .unwrap();
        let next = file.read_bytes(READ_CHUNK).await.unwrap();
        assert!(next[..] == data[READ_AHEAD..READ_AHEAD + 100]);
        assert!(!mapped_from(next.as_ptr(), &path));
        assert!(file.read_bytes(READ_CHUNK).await.unwrap().is_empty());
        assert!(map_piece(&File::open(&path).unwrap(), 0, 0).is_none());
    }
}
