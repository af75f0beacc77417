//! Content hashes of files (ownCloud's checksums, as rclone's `owncloud` and `nextcloud`
//! vendors read them): SHA-1 and MD5 of every file davd writes, computed while the bytes are
//! written: beside the writer, each on its own thread, for an upload whose `OC-Checksum` is to
//! be checked ([`StreamHash`]); by the writer itself for a COPY and a body of at most 1 MiB
//! ([`HashingWriter`]). A larger upload without `OC-Checksum` is hashed after its answer, by
//! reading the file back on a background thread ([`Pending`], [`hash_later`]; issue #12).
//!
//! Where they live: a dead property of the file in davd's reserved namespace [`NS`]
//! (props.rs), so it follows the file through MOVE, COPY, DELETE, the journal and
//! backup/restore exactly like the other properties. Clients can neither see nor set it
//! (props.rs refuses PROPPATCH in that namespace; allprop leaves it out). It is written in the
//! transaction that places the file (fs/commit.rs), so a PUT that overwrites replaces it.
//!
//! Never a wrong hash: the stored value carries the size and modification time of the file it
//! was computed for ([`Stamp`]), and is offered only while the file still has both. A file
//! changed behind davd's back, a restore of a file newer than its dump, or a file written
//! before hashes existed is simply offered without one. davd's own changes of a file's time
//! (Windows' Win32 times, PROPPATCH of getlastmodified) move the stamp along (fs/properties.rs).
//!
//! Offered as ownCloud does: `OC-Checksum: SHA1:<hex>` on the PUT answer and on GET/HEAD, and
//! `oc:checksums` (`SHA1:<hex> MD5:<hex>`) in PROPFIND when asked for by name. A PUT carrying
//! `OC-Checksum` is checked against the body it brought and refused with 400 if it differs.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

use bytes::Bytes;
use dav_server::fs::DavProp;
use md5::{Digest, Md5};
use sha1::Sha1;

use crate::stage::Stage;

/// davd's reserved namespace for the stored hash (a dead property clients never see or set).
pub const NS: &str = "urn:x-tinydc:content-hash";
/// The stored hash's property name in [`NS`].
pub const NAME: &str = "sha1-md5";
/// ownCloud's namespace, of `oc:checksums`.
pub const OC_NS: &str = "http://owncloud.org/ns";

/// SHA-1 and MD5 of a file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentHash {
    pub sha1: [u8; 20],
    pub md5: [u8; 16],
}

impl ContentHash {
    /// The value of an `OC-Checksum` header: one checksum, as ownCloud sends it (clients
    /// read the header as one `TYPE:value`).
    pub fn header_value(&self) -> String {
        format!("SHA1:{}", hex::encode(self.sha1))
    }

    /// The text of `oc:checksum`: every algorithm, space separated (ownCloud's form).
    pub fn checksums_text(&self) -> String {
        format!("SHA1:{} MD5:{}", hex::encode(self.sha1), hex::encode(self.md5))
    }

    /// The live property `oc:checksums`, as PROPFIND shows it.
    pub fn oc_checksums_xml(&self) -> Vec<u8> {
        format!(
            "<oc:checksums xmlns:oc=\"{OC_NS}\"><oc:checksum>{}</oc:checksum></oc:checksums>",
            self.checksums_text()
        )
        .into_bytes()
    }
}

/// A writer that hashes everything it writes on to `inner`: the one way a file's hash is made.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    sha1: Sha1,
    md5: Md5,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> HashingWriter<W> {
        HashingWriter {
            inner,
            sha1: Sha1::new(),
            md5: Md5::new(),
        }
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The writer and the hash of what went through it.
    pub fn finish(self) -> (W, ContentHash) {
        let hash = ContentHash {
            sha1: self.sha1.finalize().into(),
            md5: self.md5.finalize().into(),
        };
        (self.inner, hash)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // Only what the inner writer took is hashed.
        let n = self.inner.write(buf)?;
        self.sha1.update(&buf[..n]);
        self.md5.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// SHA-1 and MD5 of a stream (an upload's body), each on its own thread ([`Stage`]) beside
/// the thread writing the file: together on the writer they cost a PUT two thirds of its
/// speed, since MD5 alone runs at about the speed a large PUT arrives over loopback.
#[derive(Debug)]
pub struct StreamHash {
    sha1: Stage<Sha1>,
    md5: Stage<Md5>,
}

impl StreamHash {
    pub fn start() -> StreamHash {
        StreamHash {
            sha1: Stage::spawn(Sha1::new(), |h: &mut Sha1, buf| {
                h.update(buf);
                Ok(())
            }),
            md5: Stage::spawn(Md5::new(), |h: &mut Md5, buf| {
                h.update(buf);
                Ok(())
            }),
        }
    }

    /// Hash `buf` next (shared, not copied). Waits while both threads are [`crate::stage::DEPTH`]
    /// buffers behind.
    pub async fn update(&self, buf: &Bytes) -> std::io::Result<()> {
        if self.sha1.push(buf.clone()).await && self.md5.push(buf.clone()).await {
            Ok(())
        } else {
            Err(std::io::Error::other("a hashing thread stopped"))
        }
    }

    /// The hash of everything given to [`StreamHash::update`].
    pub async fn finish(self) -> std::io::Result<ContentHash> {
        let sha1 = self.sha1.finish().await?;
        let md5 = self.md5.finish().await?;
        Ok(ContentHash {
            sha1: sha1.finalize().into(),
            md5: md5.finalize().into(),
        })
    }
}

/// What identifies the content a hash was computed for: the file's size and modification time
/// (to the nanosecond). A rename keeps both; a restore from backup keeps both (snapshot.rs
/// copies the time); any rewrite of the content changes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
}

impl Stamp {
    pub fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            size: meta.len(),
            mtime_sec: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }
}

/// A hash as stored: the hash and the stamp of the file it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub hash: ContentHash,
    pub stamp: Stamp,
}

impl Stored {
    /// The dead property that keeps it (namespace [`NS`]).
    pub fn to_prop(&self) -> DavProp {
        let xml = format!(
            "<h:{NAME} xmlns:h=\"{NS}\" size=\"{}\" mtime=\"{}.{:09}\">{}</h:{NAME}>",
            self.stamp.size,
            self.stamp.mtime_sec,
            self.stamp.mtime_nsec,
            self.hash.checksums_text()
        );
        own_prop(xml)
    }

    /// Read back what [`Stored::to_prop`] wrote; `None` for anything else.
    pub fn from_xml(xml: &[u8]) -> Option<Stored> {
        let text = std::str::from_utf8(xml).ok()?;
        let attr = |name: &str| attribute(text, name);
        let size = attr("size")?.parse().ok()?;
        let (sec, nsec) = attr("mtime")?.split_once('.')?;
        let open_end = text.find('>')? + 1;
        let close = text[open_end..].find('<')? + open_end;
        let mut sha1 = None;
        let mut md5 = None;
        for part in text[open_end..close].split(' ') {
            match parse_claim(part) {
                Some(Claim::Sha1(h)) => sha1 = Some(h),
                Some(Claim::Md5(h)) => md5 = Some(h),
                _ => {}
            }
        }
        Some(Stored {
            hash: ContentHash { sha1: sha1?, md5: md5? },
            stamp: Stamp {
                size,
                mtime_sec: sec.parse().ok()?,
                mtime_nsec: nsec.parse().ok()?,
            },
        })
    }

    /// The hash, if it belongs to the file whose metadata is `meta`.
    pub fn for_file(&self, meta: &std::fs::Metadata) -> Option<ContentHash> {
        (meta.is_file() && Stamp::of(meta) == self.stamp).then_some(self.hash)
    }
}

/// The place of a hash not computed yet (issue #12): a large PUT without `OC-Checksum` is
/// answered once its file is durable and placed, and its hash is computed afterwards by the
/// background hasher ([`hash_later`]), which reads the file back. The commit stores this marker
/// under the stored hash's name in the transaction that places the file, so the previous
/// file's hash goes at once (never offered for the new content), and a crash before the hash
/// is stored leaves the marker, which davd's next start queues again ([`requeue_pending`]).
/// Until then the file is offered without a hash (what rclone does with a missing hash: it
/// skips that comparison; rclone itself always sends `OC-Checksum`, so its uploads are hashed
/// before the answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// The file the hash is to be computed for.
    pub stamp: Stamp,
    pub ino: u64,
}

impl Pending {
    /// The marker as a dead property (namespace [`NS`], the stored hash's name).
    pub fn to_prop(&self) -> DavProp {
        let xml = format!(
            "<h:{NAME} xmlns:h=\"{NS}\" size=\"{}\" mtime=\"{}.{:09}\" ino=\"{}\" pending=\"1\"></h:{NAME}>",
            self.stamp.size, self.stamp.mtime_sec, self.stamp.mtime_nsec, self.ino
        );
        own_prop(xml)
    }

    /// Read back what [`Pending::to_prop`] wrote; `None` for anything else (a stored hash).
    pub fn from_xml(xml: &[u8]) -> Option<Pending> {
        let text = std::str::from_utf8(xml).ok()?;
        let attr = |name: &str| attribute(text, name);
        if attr("pending")? != "1" {
            return None;
        }
        let (sec, nsec) = attr("mtime")?.split_once('.')?;
        Some(Pending {
            stamp: Stamp {
                size: attr("size")?.parse().ok()?,
                mtime_sec: sec.parse().ok()?,
                mtime_nsec: nsec.parse().ok()?,
            },
            ino: attr("ino")?.parse().ok()?,
        })
    }
}

/// Files queued for the background hasher at most; a file that finds the queue full keeps its
/// marker, and the markers are read again once the hasher has caught up (memory stays bounded
/// whatever the load; [`requeue_pending`]).
const BACKGROUND_QUEUE: usize = 64;
/// Files that found the background queue full, ever (in this process).
static SKIPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Files in the background queue now (a std channel does not tell its length).
static QUEUED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// Signalled by the hasher when its queue ran empty after files were skipped.
static CAUGHT_UP: tokio::sync::Notify = tokio::sync::Notify::const_new();
/// Bytes read at a time by the background hasher.
const READ_BACK: usize = 1 << 20;
/// The background hasher's niceness: foreground requests come first on a Pi's few cores.
const BACKGROUND_NICE: libc::c_int = 10;

/// A file for the background hasher, and where its hash goes (None: not the file the marker
/// names any more, or unreadable).
struct HashJob {
    path: std::path::PathBuf,
    pending: Pending,
    done: tokio::sync::oneshot::Sender<Option<ContentHash>>,
}

/// The background hasher's queue: one thread of its own for the whole process, started on
/// first use, reading files back one at a time.
fn background_queue() -> &'static std::sync::mpsc::SyncSender<HashJob> {
    static QUEUE: std::sync::OnceLock<std::sync::mpsc::SyncSender<HashJob>> = std::sync::OnceLock::new();
    QUEUE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<HashJob>(BACKGROUND_QUEUE);
        let spawned = std::thread::Builder::new().name("davd-hash".into()).spawn(move || {
            lower_own_priority();
            let mut announced = 0;
            while let Ok(job) = rx.recv() {
                QUEUED.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                let hash = match hash_file(&job.path, &job.pending) {
                    Ok(hash) => hash,
                    Err(e) => {
                        tracing::warn!(path = %job.path.display(), "hashing a file after its upload: {e}");
                        None
                    }
                };
                // The waiting task may be gone with its runtime: nothing to store then.
                let _ = job.done.send(hash);
                // Every job that was queued is done: files skipped meanwhile are read again.
                let skipped = SKIPPED.load(std::sync::atomic::Ordering::Relaxed);
                if skipped != announced && QUEUED.load(std::sync::atomic::Ordering::Acquire) == 0 {
                    announced = skipped;
                    CAUGHT_UP.notify_waiters();
                }
            }
        });
        if let Err(e) = spawned {
            // Without the thread every send fails: files stay marked, hashed at the next start.
            tracing::error!("cannot start the background hasher: {e}");
        }
        tx
    })
}

/// Hand `job` to the background hasher, waiting for room in its queue (`wait`) or not;
/// `Err(job)` when it was not taken. Blocking when `wait`.
fn enqueue(job: HashJob, wait: bool) -> Result<(), HashJob> {
    use std::sync::atomic::Ordering;
    use std::sync::mpsc::TrySendError;
    // Counted before the send, so the hasher never sees the job taken before it was counted.
    QUEUED.fetch_add(1, Ordering::AcqRel);
    let sent = if wait {
        background_queue().send(job).map_err(|e| e.0)
    } else {
        background_queue().try_send(job).map_err(|e| match e {
            TrySendError::Full(job) | TrySendError::Disconnected(job) => job,
        })
    };
    if sent.is_err() {
        QUEUED.fetch_sub(1, Ordering::AcqRel);
    }
    sent
}

/// Lower the calling thread's priority to [`BACKGROUND_NICE`] (Linux: niceness is per thread).
#[allow(unsafe_code)] // gettid(2), setpriority(2): plain libc calls with no safe std equivalent.
fn lower_own_priority() {
    // SAFETY: no memory is passed; the id is this thread's own.
    let tid = unsafe { libc::gettid() };
    // SAFETY: as above.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, BACKGROUND_NICE) } != 0 {
        tracing::debug!(
            "background hasher: cannot lower its priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The hash of the file at `path` if it is still the one `pending` names (same inode, size
/// and modification time before and after the read); `None` otherwise.
fn hash_file(path: &std::path::Path, pending: &Pending) -> std::io::Result<Option<ContentHash>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        // Replaced, moved or deleted since: its own commit took care of the marker.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let is_it =
        |meta: &std::fs::Metadata| meta.is_file() && meta.ino() == pending.ino && Stamp::of(meta) == pending.stamp;
    if !is_it(&file.metadata()?) {
        return Ok(None);
    }
    let mut writer = HashingWriter::new(std::io::sink());
    std::io::copy(&mut std::io::BufReader::with_capacity(READ_BACK, &file), &mut writer)?;
    // Changed while it was read (behind davd's back): its hash is not known.
    if !is_it(&file.metadata()?) {
        return Ok(None);
    }
    Ok(Some(writer.finish().1))
}

/// After the answer to the PUT that placed the file `path` (key `key` of `user_id`) with the
/// marker `pending` ([`Pending`]): compute its hash in the background and store it in the
/// marker's place, only if the marker is still there (a later PUT, MOVE or DELETE of the key
/// wins). Never waits: when the queue is full the marker stays, and is read again once the
/// hasher has caught up ([`requeue_pending`]).
pub fn hash_later(db: sqlx::PgPool, user_id: i64, key: String, path: std::path::PathBuf, pending: Pending) {
    let (done, hashed) = tokio::sync::oneshot::channel();
    let job = HashJob { path, pending, done };
    if let Err(job) = enqueue(job, false) {
        SKIPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(path = %job.path.display(), "background hasher busy: the file is hashed once it has caught up");
        return;
    }
    tokio::spawn(store_when_hashed(db, user_id, key, pending, hashed));
}

/// Store the background hasher's result in the place of the marker `pending`, if it is still there.
async fn store_when_hashed(
    db: sqlx::PgPool,
    user_id: i64,
    key: String,
    pending: Pending,
    hashed: tokio::sync::oneshot::Receiver<Option<ContentHash>>,
) {
    let Ok(Some(hash)) = hashed.await else {
        return;
    };
    let old = pending.to_prop().xml.unwrap_or_default();
    let stored = Stored {
        hash,
        stamp: pending.stamp,
    };
    match crate::props::replace_own(&db, user_id, &key, &old, &stored.to_prop()).await {
        Ok(true) => tracing::debug!(user_id, key, "content hash stored after the upload"),
        Ok(false) => tracing::debug!(user_id, key, "file changed meanwhile: its hash is not stored"),
        // Logged by props; the marker stays and the next start hashes the file again.
        Err(_) => {}
    }
}

/// At davd's start: queue every file whose hash a crash left uncomputed, in a task of its own
/// that waits for room in the queue (the daemon serves meanwhile; those files are offered
/// without a hash until theirs is stored); then, until `shutdown`, again each time the hasher
/// has caught up after uploads found its queue full ([`hash_later`]). Returns how many markers
/// it found at the start.
pub async fn requeue_pending(
    db: &sqlx::PgPool,
    files_dir: &std::path::Path,
    shutdown: shared::net::Shutdown,
) -> Result<usize, sqlx::Error> {
    let rows = crate::props::own_values(db, NS, NAME, PENDING_MARK).await?;
    let found = rows.len();
    let (db, files_dir) = (db.clone(), files_dir.to_path_buf());
    tokio::spawn(async move {
        // Registered before anything is read, so no catching up is missed.
        let mut caught_up = std::pin::pin!(CAUGHT_UP.notified());
        caught_up.as_mut().enable();
        let mut seen = SKIPPED.load(std::sync::atomic::Ordering::Relaxed);
        feed(&db, &files_dir, rows).await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = &mut caught_up => {}
            }
            caught_up.set(CAUGHT_UP.notified());
            caught_up.as_mut().enable();
            let skipped = SKIPPED.load(std::sync::atomic::Ordering::Relaxed);
            if skipped == seen {
                continue;
            }
            seen = skipped;
            match crate::props::own_values(&db, NS, NAME, PENDING_MARK).await {
                Ok(rows) => feed(&db, &files_dir, rows).await,
                Err(e) => tracing::warn!("reading pending content hashes: {e} (tried again at the next start)"),
            }
        }
    });
    Ok(found)
}

/// Queue the files of the markers `rows` (user, address, key, marker) for the hasher, waiting
/// for room.
async fn feed(db: &sqlx::PgPool, files_dir: &std::path::Path, rows: Vec<(i64, String, String, Vec<u8>)>) {
    for (user_id, address, key, xml) in rows {
        let Some(pending) = Pending::from_xml(&xml) else {
            continue;
        };
        let Ok(path) = dav_server::davpath::DavPath::new(&key) else {
            tracing::warn!(user_id, key, "pending content hash of an unreadable key: left");
            continue;
        };
        let Ok(path) = crate::paths::resolve(&files_dir.join(&address), &path) else {
            continue;
        };
        let (done, hashed) = tokio::sync::oneshot::channel();
        let job = HashJob { path, pending, done };
        let sent = tokio::task::spawn_blocking(move || enqueue(job, true).is_ok()).await;
        if !matches!(sent, Ok(true)) {
            return;
        }
        tokio::spawn(store_when_hashed(db.clone(), user_id, key, pending, hashed));
    }
}

/// davd's own dead property (namespace [`NS`], name [`NAME`]) holding `xml`: a stored hash or a
/// [`Pending`] marker.
fn own_prop(xml: String) -> DavProp {
    DavProp {
        name: NAME.to_string(),
        prefix: Some("h".to_string()),
        namespace: Some(NS.to_string()),
        xml: Some(xml.into_bytes()),
    }
}

/// The value of attribute `name` in the element text davd wrote ([`Stored::to_prop`],
/// [`Pending::to_prop`]).
fn attribute<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let start = text.find(&format!(" {name}=\""))? + name.len() + 3;
    let len = text[start..].find('"')?;
    Some(&text[start..start + len])
}

/// What every [`Pending`] marker's text contains (and no stored hash's).
const PENDING_MARK: &str = " pending=\"1\"";

/// Whether `xml` is a [`Pending`] marker (not an unreadable stored hash).
pub fn is_pending(xml: &[u8]) -> bool {
    Pending::from_xml(xml).is_some()
}

/// Whether `prop` is in davd's reserved namespace.
pub fn is_reserved(prop: &DavProp) -> bool {
    prop.namespace.as_deref() == Some(NS)
}

/// Whether `prop` is ownCloud's `oc:checksums`.
pub fn is_oc_checksums(prop: &DavProp) -> bool {
    prop.namespace.as_deref() == Some(OC_NS) && prop.name == "checksums"
}

/// The stored-hash property to look up (no value).
pub fn stored_prop_name() -> DavProp {
    DavProp {
        name: NAME.to_string(),
        prefix: None,
        namespace: Some(NS.to_string()),
        xml: None,
    }
}

/// One checksum a client claims for a body (`OC-Checksum: TYPE:hex`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Sha1([u8; 20]),
    Md5([u8; 16]),
    /// A type davd does not compute (ownCloud's ADLER32, ...): not checked.
    Other(String),
}

impl Claim {
    /// Whether `hash` agrees with this claim (an unchecked type always does).
    pub fn matches(&self, hash: &ContentHash) -> bool {
        match self {
            Claim::Sha1(h) => *h == hash.sha1,
            Claim::Md5(h) => *h == hash.md5,
            Claim::Other(_) => true,
        }
    }
}

fn parse_claim(text: &str) -> Option<Claim> {
    let (kind, value) = text.split_once(':')?;
    let kind = kind.trim();
    let value = value.trim();
    let decode = |n: usize| {
        let bytes = hex::decode(value).ok()?;
        (bytes.len() == n).then_some(bytes)
    };
    if kind.eq_ignore_ascii_case("SHA1") {
        decode(20).and_then(|b| b.try_into().ok()).map(Claim::Sha1)
    } else if kind.eq_ignore_ascii_case("MD5") {
        decode(16).and_then(|b| b.try_into().ok()).map(Claim::Md5)
    } else if !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_alphanumeric()) && !value.is_empty() {
        Some(Claim::Other(kind.to_ascii_uppercase()))
    } else {
        None
    }
}

/// Most checksums one `OC-Checksum` header may carry.
const MAX_CLAIMS: usize = 8;

/// The checksums of a PUT's `OC-Checksum` header (`TYPE:hex`, several separated by spaces).
/// `None` when the header is not of that form (the PUT is refused with 400).
pub fn parse_header(value: &[u8]) -> Option<Vec<Claim>> {
    let text = std::str::from_utf8(value).ok()?;
    let claims: Vec<Claim> = text.split_ascii_whitespace().map(parse_claim).collect::<Option<_>>()?;
    (!claims.is_empty() && claims.len() <= MAX_CLAIMS).then_some(claims)
}

/// What happened to content hashes during one request, for server.rs to answer with: set by
/// the file system (fs/), read after dav-server answered.
#[derive(Debug, Default)]
pub struct Note {
    /// The checksums the client sent with its PUT.
    claims: Vec<Claim>,
    outcome: Mutex<Outcome>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No hash to tell (not a file, or none stored for it).
    #[default]
    Unknown,
    /// The hash of the file written (PUT) or read (GET/HEAD).
    Known(ContentHash),
    /// The PUT's body did not match the client's `OC-Checksum`: nothing was stored.
    Mismatch,
}

impl Note {
    pub fn with_claims(claims: Vec<Claim>) -> Note {
        Note {
            claims,
            outcome: Mutex::new(Outcome::Unknown),
        }
    }

    /// Whether the client sent checksums to check the body against.
    pub fn has_claims(&self) -> bool {
        !self.claims.is_empty()
    }

    /// Whether `hash` agrees with every checksum the client claimed.
    pub fn claims_match(&self, hash: &ContentHash) -> bool {
        self.claims.iter().all(|c| c.matches(hash))
    }

    pub fn set(&self, outcome: Outcome) {
        *self.outcome.lock().expect("checksum note lock") = outcome;
    }

    pub fn outcome(&self) -> Outcome {
        *self.outcome.lock().expect("checksum note lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_of(data: &[u8]) -> ContentHash {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(data).unwrap();
        let (out, hash) = w.finish();
        assert_eq!(out, data);
        hash
    }

    #[test]
    fn the_writer_hashes_what_it_writes() {
        let h = hash_of(b"abc");
        assert_eq!(hex::encode(h.sha1), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(hex::encode(h.md5), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(h.header_value(), "SHA1:a9993e364706816aba3e25717850c26c9cd0d89d");
    }

    #[tokio::test]
    async fn the_threaded_hash_equals_the_writer_s() {
        // Pieces of uneven sizes, as a body arrives.
        let data: Vec<u8> = (0..3_000_017u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let stream = StreamHash::start();
        for piece in data.chunks(65_521) {
            stream.update(&Bytes::copy_from_slice(piece)).await.unwrap();
        }
        assert_eq!(stream.finish().await.unwrap(), hash_of(&data));
        assert_eq!(StreamHash::start().finish().await.unwrap(), hash_of(b""));
    }

    #[test]
    fn a_stored_hash_reads_back_and_nothing_else_does() {
        let stored = Stored {
            hash: hash_of(b"hello"),
            stamp: Stamp {
                size: 5,
                mtime_sec: 1_700_000_000,
                mtime_nsec: 42,
            },
        };
        let prop = stored.to_prop();
        assert!(is_reserved(&prop));
        assert_eq!(Stored::from_xml(prop.xml.as_deref().unwrap()), Some(stored));
        assert_eq!(Stored::from_xml(b"<h:sha1-md5 size=\"5\">SHA1:00</h:sha1-md5>"), None);
        assert_eq!(Stored::from_xml(b"\xff"), None);
    }

    #[test]
    fn a_pending_marker_reads_back_and_is_never_taken_for_a_hash() {
        let pending = Pending {
            stamp: Stamp {
                size: 300 << 20,
                mtime_sec: 1_700_000_000,
                mtime_nsec: 7,
            },
            ino: 123_456,
        };
        let xml = pending.to_prop().xml.unwrap();
        assert!(is_reserved(&pending.to_prop()));
        assert_eq!(Pending::from_xml(&xml), Some(pending));
        assert!(is_pending(&xml));
        assert_eq!(Stored::from_xml(&xml), None);
        let stored = Stored {
            hash: hash_of(b"x"),
            stamp: pending.stamp,
        };
        assert!(!is_pending(&stored.to_prop().xml.unwrap()));
        assert_eq!(Pending::from_xml(b"\xff"), None);
    }

    #[test]
    fn oc_checksum_headers_are_read_strictly() {
        let sha1 = "SHA1:a9993e364706816aba3e25717850c26c9cd0d89d";
        let h = hash_of(b"abc");
        let claims = parse_header(sha1.as_bytes()).unwrap();
        assert!(claims.iter().all(|c| c.matches(&h)));
        let both = parse_header(b"md5:900150983CD24FB0D6963F7D28E17F72 SHA1:a9993e364706816aba3e25717850c26c9cd0d89d")
            .unwrap();
        assert_eq!(both.len(), 2);
        assert!(both.iter().all(|c| c.matches(&h)));
        assert!(!parse_header(b"SHA1:a9993e364706816aba3e25717850c26c9cd0d89e").unwrap()[0].matches(&h));
        assert_eq!(
            parse_header(b"ADLER32:024d0127").unwrap(),
            vec![Claim::Other("ADLER32".into())]
        );
        for bad in [
            "",
            "SHA1",
            "SHA1:zz",
            "SHA1:a999",
            "MD5:",
            ":abc",
            "SHA1:a9993e364706816aba3e25717850c26c9cd0d89d00",
        ] {
            assert_eq!(parse_header(bad.as_bytes()), None, "{bad:?}");
        }
        let many = ["MD5:900150983cd24fb0d6963f7d28e17f72"; MAX_CLAIMS + 1].join(" ");
        assert_eq!(parse_header(many.as_bytes()), None);
    }
}
