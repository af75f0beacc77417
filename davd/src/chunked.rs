//! Resumable uploads of large files: Nextcloud's chunked upload v2
//! (https://docs.nextcloud.com/server/latest/developer_manual/client_apis/WebDAV/chunking.html),
//! as the Nextcloud clients and rclone's nextcloud vendor speak it.
//!
//! - `MKCOL /remote.php/dav/uploads/<address>/<id>` with a `Destination` in the user's own tree
//!   starts an upload (`OC-Total-Length`, when given, must fit the quota: else 507);
//! - `PUT …/<id>/<n>` stores chunk `n` (1 to 10000, zero-padded or not), at most 5 GiB, with a
//!   Content-Length; its bytes are reserved on the user's quota before the first byte
//!   (shared::quota, 507 when they do not fit) and it is fsynced before its 201;
//! - `PROPFIND …/<id>` (Depth 0 or 1) lists the chunks that arrived: how a client resumes;
//! - `MOVE …/<id>/.file` to the `Destination` given at MKCOL writes the chunks, in the order of
//!   their numbers, through the PUT writer (fs/upload.rs, the chunks' reservations paying for
//!   it) and the journaled commit (fs/commit.rs): the whole file appears at once or not at all.
//!   `OC-Total-Length` that is not the chunks' total is 400 and places nothing; `X-OC-Mtime`
//!   sets the file's time;
//! - `DELETE …/<id>` abandons the upload.
//!
//! Chunks live in `DATA/uploads/<user id>/<id>/` (outside every user's tree: never listed, and
//! not counted as usage, only as reservations, until the MOVE turns them into the file's
//! usage), with the destination in `.destination`. An upload whose last chunk is older than
//! `[dav] upload_expiry` is removed by [`Chunked::start`]'s periodic task, which gives its
//! reservations back. Reservations die with the process that made them (shared::quota), so at
//! start davd reserves again for every upload still within its time (one that no longer fits
//! the quota is removed), and a reservation older than half its lifetime is renewed.
//! Only the logged-in user's own uploads are reachable: the `<address>` in the path must be
//! theirs (else 403), and the folders are looked up under their id.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use dav_server::body::Body;
use dav_server::davpath::DavPath;
use dav_server::fs::FsError;
use dav_server::ls::DavLockSystem;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body::Body as HttpBody;
use shared::net::Shutdown;
use shared::quota::{self, QuotaError, RESERVATION_LIFETIME};
use sqlx::PgPool;

use crate::fs::{TinyFs, User};
use crate::journal::Journal;
use crate::server::{dav_prefix, oc_mtime, simple};

/// Where Nextcloud's uploads live; `/remote.php/dav/files/<address>/` is an alias of the
/// user's tree (server::dav_prefix).
pub const UPLOADS_ROOT: &str = "/remote.php/dav/uploads";
/// Chunk numbers (the protocol's range); so also the most chunks of one upload.
const MAX_CHUNK_NUMBER: u32 = 10_000;
/// Longest chunk name accepted (a number, zero-padded as some clients send it).
const MAX_CHUNK_NAME: usize = 16;
/// The largest chunk (the protocol's limit).
const MAX_CHUNK_BYTES: u64 = 5 << 30;
/// Uploads one user may have open at once.
pub const MAX_OPEN_UPLOADS: usize = 20;
/// Longest upload id.
const MAX_ID_LEN: usize = 128;
/// In an upload's folder: its destination (a key of the user's tree, paths::key).
const DESTINATION_FILE: &str = ".destination";
/// In an upload's folder: a chunk being received (renamed to its number once fsynced).
const PART_PREFIX: &str = ".part-";
/// Bytes of a chunk buffered before they are written out.
const WRITE_CHUNK: usize = 1 << 20;
/// The name of the assembled file in the protocol (`MOVE …/<id>/.file`).
const ASSEMBLED: &str = ".file";

/// What a path under [`UPLOADS_ROOT`] names.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    /// `uploads/<address>`: the user's uploads.
    Home,
    /// `uploads/<address>/<id>`: one upload's folder.
    Upload(String),
    /// `uploads/<address>/<id>/<n>`: a chunk.
    Chunk(String, String),
    /// `uploads/<address>/<id>/.file`: the file the chunks make.
    Assembled(String),
}

/// Where `path` (as sent, percent-encoded) goes: `None` outside [`UPLOADS_ROOT`]; else the
/// target, or the status that refuses it (another user's uploads: 403; too deep: 404).
pub fn target(path: &str, address: &str) -> Option<Result<Target, StatusCode>> {
    let rest = path.strip_prefix(UPLOADS_ROOT)?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let Some(user) = segments.first() else {
        return Some(Err(StatusCode::NOT_FOUND));
    };
    let user = String::from_utf8(crate::paths::decode_segment(user)).unwrap_or_default();
    if !user.eq_ignore_ascii_case(address) {
        return Some(Err(StatusCode::FORBIDDEN));
    }
    let decoded = |s: &str| String::from_utf8(crate::paths::decode_segment(s)).unwrap_or_default();
    Some(Ok(match segments[1..] {
        [] => Target::Home,
        [id] => Target::Upload(decoded(id)),
        [id, name] if name == ASSEMBLED => Target::Assembled(decoded(id)),
        [id, name] => Target::Chunk(decoded(id), decoded(name)),
        _ => return Some(Err(StatusCode::NOT_FOUND)),
    }))
}

/// An upload id as clients make them (`rclone-chunked-upload-<md5>`, `web-file-upload-<hex>`):
/// letters, digits, `-`, `_`, `.`, not starting with a dot.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.starts_with('.')
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The number of a chunk name: digits (zero-padding allowed), 1 to 10000.
fn chunk_number(name: &str) -> Option<u32> {
    if name.is_empty() || name.len() > MAX_CHUNK_NAME || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok().filter(|n| (1..=MAX_CHUNK_NUMBER).contains(n))
}

/// A quota reservation an upload holds: for one chunk, or (after a restart or a failed
/// assembly) for all the chunks it had then.
#[derive(Debug)]
struct Held {
    chunk: Option<String>,
    id: i64,
    bytes: u64,
    since: Instant,
}

#[derive(Debug)]
struct Chunk {
    name: String,
    len: u64,
    modified: SystemTime,
}

/// One open upload.
#[derive(Debug)]
struct Session {
    dir: PathBuf,
    /// The destination given at MKCOL (paths::key of the user's tree).
    destination: String,
    chunks: BTreeMap<u32, Chunk>,
    held: Vec<Held>,
    /// When the last chunk arrived (or the upload started): the expiry counts from here.
    last_activity: SystemTime,
    /// Removed (abandoned, expired or assembled): requests that waited for it find nothing.
    gone: bool,
    /// Chunk PUTs streaming now (not under the session lock): the upload is not expired and
    /// not assembled meanwhile.
    writers: Arc<AtomicUsize>,
}

type SessionRef = Arc<tokio::sync::Mutex<Session>>;

/// All open chunked uploads of this davd.
pub struct Chunked {
    db: PgPool,
    journal: Arc<Journal>,
    /// `DATA/uploads`.
    dir: PathBuf,
    expiry: Duration,
    sessions: Mutex<HashMap<(i64, String), SessionRef>>,
}

/// Counts a chunk PUT in progress for as long as it lives (however its request ends).
struct Writing(Arc<AtomicUsize>);

impl Drop for Writing {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A chunk on its way in: the part file and its reservation, removed and given back unless
/// the chunk was stored.
struct Part {
    db: PgPool,
    user_id: i64,
    path: PathBuf,
    reservation: Option<(i64, u64)>,
    stored: bool,
}

impl Drop for Part {
    fn drop(&mut self) {
        if !self.stored
            && let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::error!(path = %self.path.display(), "cannot remove an unfinished chunk: {e}");
        }
        if let Some((id, bytes)) = self.reservation.take() {
            release_later(&self.db, self.user_id, vec![(id, bytes)]);
        }
    }
}

/// Give reservations back from a context that cannot wait (a Drop).
fn release_later(db: &PgPool, user_id: i64, held: Vec<(i64, u64)>) {
    if held.is_empty() {
        return;
    }
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        let db = db.clone();
        rt.spawn(async move {
            let ids: Vec<i64> = held.iter().map(|h| h.0).collect();
            if let Err(e) = quota::release_ids(&db, &ids).await {
                tracing::warn!(user_id, "releasing chunk reservations: {e} (they expire by themselves)");
            }
        });
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(format!("blocking task: {e}"))))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn quota_status(e: &QuotaError) -> StatusCode {
    match e {
        // RFC 4918 section 11.5.
        QuotaError::Exceeded { .. } | QuotaError::DiskFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
        QuotaError::UnknownUser => StatusCode::FORBIDDEN,
        QuotaError::Db(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn fs_status(e: FsError) -> StatusCode {
    match e {
        // RFC 4918 section 9.9.4: the destination's parent folder is missing.
        FsError::NotFound => StatusCode::CONFLICT,
        FsError::Forbidden => StatusCode::FORBIDDEN,
        FsError::Exists => StatusCode::PRECONDITION_FAILED,
        FsError::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
        FsError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The size in `OC-Total-Length`: `Ok(None)` when absent, `Err` when not a number.
fn total_length(headers: &HeaderMap) -> Result<Option<u64>, ()> {
    match headers.get("oc-total-length") {
        None => Ok(None),
        Some(v) => v.to_str().ok().and_then(|s| s.trim().parse().ok()).map(Some).ok_or(()),
    }
}

impl Chunked {
    /// Take over the uploads left in `DATA/uploads` (remove the expired and the unfinished
    /// chunks, reserve again for the rest), then expire and renew them every so often until
    /// `shutdown`. Runs before davd serves.
    pub async fn start(
        db: PgPool,
        journal: Arc<Journal>,
        dir: PathBuf,
        expiry: Duration,
        shutdown: Shutdown,
    ) -> anyhow::Result<Arc<Chunked>> {
        let chunked = Arc::new(Chunked {
            db,
            journal,
            dir,
            expiry,
            sessions: Mutex::new(HashMap::new()),
        });
        chunked.recover().await?;
        let period = (expiry / 4).clamp(Duration::from_secs(1), Duration::from_secs(300));
        let c = chunked.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(period) => c.sweep().await,
                }
            }
        });
        Ok(chunked)
    }

    fn user_dir(&self, user_id: i64) -> PathBuf {
        self.dir.join(user_id.to_string())
    }

    fn session(&self, user_id: i64, id: &str) -> Option<SessionRef> {
        self.sessions
            .lock()
            .expect("sessions lock")
            .get(&(user_id, id.to_string()))
            .cloned()
    }

    fn forget(&self, user_id: i64, id: &str) {
        self.sessions
            .lock()
            .expect("sessions lock")
            .remove(&(user_id, id.to_string()));
    }

    async fn recover(&self) -> anyhow::Result<()> {
        let dir = self.dir.clone();
        let expiry = self.expiry;
        let found = blocking(move || scan(&dir, expiry)).await?;
        for (user_id, id, mut session) in found {
            let total: u64 = session.chunks.values().map(|c| c.len).sum();
            if total > 0 {
                match quota::reserve(&self.db, user_id, total).await {
                    Ok(r) => session.held.push(Held {
                        chunk: None,
                        id: r.id,
                        bytes: r.bytes,
                        since: Instant::now(),
                    }),
                    // The quota was lowered, or the account deleted, while davd was down.
                    Err(e @ (QuotaError::Exceeded { .. } | QuotaError::UnknownUser)) => {
                        tracing::warn!(user_id, upload = id, total, "chunked upload dropped at start: {e}");
                        let d = session.dir.clone();
                        blocking(move || std::fs::remove_dir_all(&d)).await.ok();
                        continue;
                    }
                    // A passing fault (database, disk nearly full) does not cost the user their
                    // chunks: kept unreserved, the MOVE charges them with the limit check.
                    Err(e) => tracing::warn!(user_id, upload = id, total, "chunked upload kept unreserved: {e}"),
                }
            }
            tracing::info!(
                user_id,
                upload = id,
                chunks = session.chunks.len(),
                total,
                "chunked upload kept"
            );
            self.sessions
                .lock()
                .expect("sessions lock")
                .insert((user_id, id), Arc::new(tokio::sync::Mutex::new(session)));
        }
        Ok(())
    }

    /// Remove the uploads idle past the expiry; renew reservations before they lapse.
    async fn sweep(&self) {
        let all: Vec<((i64, String), SessionRef)> = self
            .sessions
            .lock()
            .expect("sessions lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for ((user_id, id), session) in all {
            // Busy (a chunk being stored, an assembly): in use, so not abandoned.
            let Ok(mut s) = session.try_lock() else { continue };
            if s.gone || s.writers.load(Ordering::SeqCst) > 0 {
                continue;
            }
            let idle = SystemTime::now().duration_since(s.last_activity).unwrap_or_default();
            if idle >= self.expiry {
                let bytes: u64 = s.chunks.values().map(|c| c.len).sum();
                tracing::info!(user_id, upload = id, bytes, "chunked upload expired; removed");
                self.remove(&mut s, user_id).await;
                self.forget(user_id, &id);
                continue;
            }
            // A reservation lives RESERVATION_LIFETIME; an upload may stay open longer.
            for held in s.held.iter_mut() {
                if held.since.elapsed() < RESERVATION_LIFETIME / 2 {
                    continue;
                }
                let old = quota::Reservation {
                    id: held.id,
                    user_id,
                    bytes: held.bytes,
                };
                if let Err(e) = quota::release(&self.db, old).await {
                    tracing::warn!(user_id, upload = id, "renewing a chunk reservation: {e}");
                    continue;
                }
                match quota::reserve(&self.db, user_id, held.bytes).await {
                    Ok(r) => {
                        held.id = r.id;
                        held.since = Instant::now();
                    }
                    Err(e) => {
                        // The chunks stay; the MOVE charges them with the limit check.
                        tracing::warn!(user_id, upload = id, "chunk reservation not renewed: {e}");
                        held.bytes = 0;
                    }
                }
            }
            s.held.retain(|h| h.bytes > 0);
        }
    }

    /// Remove an upload's chunks and give its reservations back (the caller forgets it).
    async fn remove(&self, s: &mut Session, user_id: i64) {
        s.gone = true;
        let d = s.dir.clone();
        if let Err(e) = blocking(move || std::fs::remove_dir_all(&d)).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::error!(path = %s.dir.display(), "cannot remove a chunked upload: {e}");
        }
        let ids: Vec<i64> = s.held.drain(..).map(|h| h.id).collect();
        if let Err(e) = quota::release_ids(&self.db, &ids).await {
            tracing::warn!(user_id, "releasing chunk reservations: {e} (they expire by themselves)");
        }
    }

    /// The user-tree path a `Destination` names (an absolute path or URI whose authority
    /// server.rs checked), in tinydc's space (`/…`, `/dav/<address>/…`) or Nextcloud's
    /// (`/remote.php/dav/files/<address>/…`); never another user's, never the root.
    fn destination(headers: &HeaderMap, user: &User) -> Result<DavPath, (StatusCode, String)> {
        let bad = |why: &str| Err((StatusCode::BAD_REQUEST, why.to_string()));
        let Some(value) = headers.get("destination") else {
            return bad("Destination is required");
        };
        let Ok(text) = value.to_str() else {
            return bad("Destination is not ASCII");
        };
        let text = text.trim();
        let path = if text.starts_with('/') {
            text.to_string()
        } else {
            match text.parse::<http::Uri>() {
                Ok(uri) => uri.path().to_string(),
                Err(_) => return bad("Destination is not a URI"),
            }
        };
        let prefix = dav_prefix(&path, &user.address).unwrap_or_default();
        if prefix.is_empty() && path.starts_with("/remote.php/") {
            return Err((StatusCode::FORBIDDEN, format!("Destination {path} is not yours")));
        }
        let mut dav = DavPath::new(&path).map_err(|_| (StatusCode::BAD_REQUEST, "bad Destination path".into()))?;
        if !prefix.is_empty() {
            dav.set_prefix(&prefix)
                .map_err(|_| (StatusCode::BAD_REQUEST, "bad Destination path".to_string()))?;
        }
        if crate::paths::key(&dav) == "/" || dav.is_collection() {
            return Err((StatusCode::FORBIDDEN, "Destination is a folder".into()));
        }
        Ok(dav)
    }

    /// Every request under [`UPLOADS_ROOT`] but a chunk's PUT; `body` was read and checked by
    /// server.rs (and the Destination's authority).
    pub async fn handle(
        &self,
        parts: http::request::Parts,
        target: Target,
        user: &User,
        peer: std::net::SocketAddr,
    ) -> Response<Body> {
        let method = parts.method.clone();
        let refused = |status: StatusCode, why: &str| {
            tracing::info!(%peer, user = user.address, %method, path = parts.uri.path(), "chunked upload: {why}");
            simple(status, &format!("{why}\n"))
        };
        match (method.as_str(), target) {
            ("PROPFIND", Target::Home) => self.propfind_home(&parts, user),
            ("PROPFIND", Target::Upload(id)) => match self.session(user.id, &id) {
                Some(s) => propfind_upload(&parts, &*s.lock().await),
                None => refused(StatusCode::NOT_FOUND, "no such upload"),
            },
            ("MKCOL", Target::Upload(id)) => match self.create(&parts, &id, user).await {
                Ok(()) => simple(StatusCode::CREATED, ""),
                Err((status, why)) => refused(status, &why),
            },
            ("DELETE", Target::Upload(id)) => {
                let Some(session) = self.session(user.id, &id) else {
                    return refused(StatusCode::NOT_FOUND, "no such upload");
                };
                let mut s = session.lock().await;
                if s.gone {
                    return refused(StatusCode::NOT_FOUND, "no such upload");
                }
                self.remove(&mut s, user.id).await;
                self.forget(user.id, &id);
                tracing::info!(%peer, user = user.address, upload = id, "chunked upload abandoned by the client");
                let mut res = simple(StatusCode::NO_CONTENT, "");
                res.headers_mut().remove(header::CONTENT_TYPE);
                res
            }
            ("MOVE", Target::Assembled(id)) => match self.assemble(&parts, &id, user).await {
                Ok(res) => res,
                Err((status, why)) => refused(status, &why),
            },
            ("GET" | "HEAD", Target::Chunk(..) | Target::Assembled(_)) => {
                // The protocol: chunks cannot be downloaded from the upload folder.
                refused(StatusCode::FORBIDDEN, "chunks cannot be downloaded")
            }
            (_, _) => {
                let mut res = refused(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here");
                res.headers_mut().insert(
                    header::ALLOW,
                    HeaderValue::from_static("PROPFIND, MKCOL, PUT, MOVE, DELETE"),
                );
                res
            }
        }
    }

    /// MKCOL of an upload folder.
    async fn create(&self, parts: &http::request::Parts, id: &str, user: &User) -> Result<(), (StatusCode, String)> {
        if !valid_id(id) {
            return Err((StatusCode::BAD_REQUEST, "bad upload id".into()));
        }
        let destination = Chunked::destination(&parts.headers, user)?;
        let total =
            total_length(&parts.headers).map_err(|()| (StatusCode::BAD_REQUEST, "bad OC-Total-Length".into()))?;
        if let Some(total) = total {
            // Refused now rather than after gigabytes of chunks.
            let info = quota::info(&self.db, user.id)
                .await
                .map_err(|e| (quota_status(&e), format!("quota: {e}")))?;
            if total > info.available() {
                return Err((
                    StatusCode::INSUFFICIENT_STORAGE,
                    format!("{total} bytes do not fit the quota"),
                ));
            }
        }
        let dir = self.user_dir(user.id).join(id);
        let session = Arc::new(tokio::sync::Mutex::new(Session {
            dir: dir.clone(),
            destination: crate::paths::key(&destination),
            chunks: BTreeMap::new(),
            held: Vec::new(),
            last_activity: SystemTime::now(),
            gone: false,
            writers: Arc::new(AtomicUsize::new(0)),
        }));
        // Held before it is visible: a chunk PUT into it waits until the folder exists.
        let mut guard = session.clone().lock_owned().await;
        {
            let mut all = self.sessions.lock().expect("sessions lock");
            let key = (user.id, id.to_string());
            if all.contains_key(&key) {
                // RFC 4918 section 9.3.1: MKCOL of something that exists.
                return Err((StatusCode::METHOD_NOT_ALLOWED, "the upload exists".into()));
            }
            if all.keys().filter(|(u, _)| *u == user.id).count() >= MAX_OPEN_UPLOADS {
                return Err((
                    StatusCode::INSUFFICIENT_STORAGE,
                    format!("{MAX_OPEN_UPLOADS} uploads are open already"),
                ));
            }
            all.insert(key, session.clone());
        }
        let (user_dir, key) = (self.user_dir(user.id), guard.destination.clone());
        let made = blocking(move || {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&user_dir)?;
            std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(dir.join(DESTINATION_FILE))?;
            f.write_all(key.as_bytes())?;
            f.sync_all()?;
            sync_dir(&dir)?;
            sync_dir(&user_dir)?;
            if let Some(uploads) = user_dir.parent() {
                sync_dir(uploads)?;
            }
            Ok(())
        })
        .await;
        if let Err(e) = made {
            tracing::error!(user = user.address, upload = id, "cannot create a chunked upload: {e}");
            // A chunk PUT that found it meanwhile waits on the lock, then finds it gone.
            guard.gone = true;
            self.forget(user.id, id);
            let d = guard.dir.clone();
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                blocking(move || std::fs::remove_dir_all(&d)).await.ok();
            }
            return Err((StatusCode::INTERNAL_SERVER_ERROR, "storage error".into()));
        }
        tracing::info!(
            user = user.address,
            upload = id,
            destination = guard.destination,
            "chunked upload started"
        );
        Ok(())
    }

    /// PUT of chunk `name` of upload `id`: reserved, streamed to a part file, fsynced, renamed
    /// to its name. `body` is bounded by server.rs (announced length, stall timeout).
    pub async fn put_chunk<B>(
        &self,
        headers: &HeaderMap,
        mut body: B,
        expected: Option<u64>,
        (id, name): (String, String),
        user: &User,
        peer: std::net::SocketAddr,
    ) -> Response<Body>
    where
        B: HttpBody<Data = Bytes, Error = std::io::Error> + Unpin + Send,
    {
        let refused = |status: StatusCode, why: &str| {
            tracing::info!(%peer, user = user.address, upload = id, chunk = name, "chunk refused: {why}");
            simple(status, &format!("{why}\n"))
        };
        let Some(number) = chunk_number(&name) else {
            return refused(StatusCode::BAD_REQUEST, "a chunk is named by a number from 1 to 10000");
        };
        let Some(len) = expected else {
            return refused(StatusCode::LENGTH_REQUIRED, "a chunk needs a Content-Length");
        };
        if len > MAX_CHUNK_BYTES {
            return refused(StatusCode::PAYLOAD_TOO_LARGE, "a chunk is at most 5 GiB");
        }
        let Some(session) = self.session(user.id, &id) else {
            // RFC 4918 section 9.7.1: the collection is missing.
            return refused(StatusCode::CONFLICT, "no such upload (MKCOL it first)");
        };
        let (dir, writing) = {
            let s = session.lock().await;
            if s.gone {
                return refused(StatusCode::CONFLICT, "no such upload");
            }
            if headers.contains_key("destination") {
                match Chunked::destination(headers, user) {
                    Ok(d) if crate::paths::key(&d) == s.destination => {}
                    Ok(_) => return refused(StatusCode::BAD_REQUEST, "Destination is not the upload's"),
                    Err((status, why)) => return refused(status, &why),
                }
            }
            if s.chunks.get(&number).is_some_and(|c| c.name != name) {
                return refused(StatusCode::BAD_REQUEST, "this chunk number was sent under another name");
            }
            s.writers.fetch_add(1, Ordering::SeqCst);
            (s.dir.clone(), Writing(s.writers.clone()))
        };
        let mut part = Part {
            db: self.db.clone(),
            user_id: user.id,
            path: dir.join(format!("{PART_PREFIX}{}", uuid::Uuid::new_v4().simple())),
            reservation: None,
            stored: false,
        };
        // docs/ARCHITECTURE.md "Quota": reserved before the first byte, 507 when it cannot fit.
        if len > 0 {
            match quota::reserve(&self.db, user.id, len).await {
                Ok(r) => part.reservation = Some((r.id, r.bytes)),
                Err(e) => return refused(quota_status(&e), &format!("{e}")),
            }
        }
        let p = part.path.clone();
        let file = blocking(move || {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&p)
        })
        .await;
        let mut file = match file {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::error!(path = %part.path.display(), "cannot create a chunk: {e}");
                return refused(StatusCode::INTERNAL_SERVER_ERROR, "storage error");
            }
        };
        let mut pending = BytesMut::with_capacity(WRITE_CHUNK);
        let mut written = 0u64;
        loop {
            let frame = http_body_util::BodyExt::frame(&mut body).await;
            let end = match frame {
                None => true,
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        written += data.len() as u64;
                        if written > len {
                            return refused(StatusCode::BAD_REQUEST, "body longer than Content-Length");
                        }
                        pending.extend_from_slice(data);
                    }
                    false
                }
                Some(Err(e)) => return refused(StatusCode::BAD_REQUEST, &format!("chunk body: {e}")),
            };
            if pending.len() >= WRITE_CHUNK || (end && !pending.is_empty()) {
                let data = pending.split().freeze();
                let Some(mut f) = file.take() else {
                    return refused(StatusCode::INTERNAL_SERVER_ERROR, "storage error");
                };
                match blocking(move || f.write_all(&data).map(|()| f)).await {
                    Ok(f) => file = Some(f),
                    Err(e) => {
                        tracing::error!(path = %part.path.display(), "writing a chunk: {e}");
                        let status = if quota::is_no_space(&e) {
                            StatusCode::INSUFFICIENT_STORAGE
                        } else {
                            StatusCode::INTERNAL_SERVER_ERROR
                        };
                        return refused(status, "storage error");
                    }
                }
            }
            if end {
                break;
            }
        }
        if written != len {
            return refused(StatusCode::BAD_REQUEST, "body shorter than Content-Length");
        }
        let Some(f) = file.take() else {
            return refused(StatusCode::INTERNAL_SERVER_ERROR, "storage error");
        };
        // Durable before it is named (and so before its 201).
        if let Err(e) = blocking(move || f.sync_all()).await {
            tracing::error!(path = %part.path.display(), "fsync of a chunk: {e}");
            return refused(StatusCode::INTERNAL_SERVER_ERROR, "storage error");
        }
        let mut s = session.lock().await;
        if s.gone {
            return refused(StatusCode::CONFLICT, "the upload was removed meanwhile");
        }
        let (from, to, d) = (part.path.clone(), dir.join(&name), dir.clone());
        let renamed = blocking(move || {
            std::fs::rename(&from, &to)?;
            sync_dir(&d)?;
            Ok(std::fs::metadata(&to)
                .and_then(|m| m.modified())
                .unwrap_or_else(|_| SystemTime::now()))
        })
        .await;
        let modified = match renamed {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(path = %dir.display(), "storing a chunk: {e}");
                return refused(StatusCode::INTERNAL_SERVER_ERROR, "storage error");
            }
        };
        part.stored = true;
        let replaced = s
            .chunks
            .insert(
                number,
                Chunk {
                    name: name.clone(),
                    len,
                    modified,
                },
            )
            .is_some();
        // The chunk's bytes are now held by the upload; a chunk sent again gives its old
        // reservation back.
        let old: Vec<(i64, u64)> = s
            .held
            .iter()
            .filter(|h| h.chunk.as_deref() == Some(name.as_str()))
            .map(|h| (h.id, h.bytes))
            .collect();
        s.held.retain(|h| h.chunk.as_deref() != Some(name.as_str()));
        if let Some((id, bytes)) = part.reservation.take() {
            s.held.push(Held {
                chunk: Some(name.clone()),
                id,
                bytes,
                since: Instant::now(),
            });
        }
        s.last_activity = SystemTime::now();
        drop(s);
        drop(writing);
        release_later(&self.db, user.id, old);
        let mut res = simple(
            if replaced {
                StatusCode::NO_CONTENT
            } else {
                StatusCode::CREATED
            },
            "",
        );
        res.headers_mut().remove(header::CONTENT_TYPE);
        res
    }

    /// MOVE of `.file`: the chunks, in order, become the destination file at once.
    async fn assemble(
        &self,
        parts: &http::request::Parts,
        id: &str,
        user: &User,
    ) -> Result<Response<Body>, (StatusCode, String)> {
        let Some(session) = self.session(user.id, id) else {
            return Err((StatusCode::NOT_FOUND, "no such upload".into()));
        };
        let destination = Chunked::destination(&parts.headers, user)?;
        let total =
            total_length(&parts.headers).map_err(|()| (StatusCode::BAD_REQUEST, "bad OC-Total-Length".into()))?;
        let mtime = match parts.headers.get("x-oc-mtime").map(oc_mtime) {
            None => None,
            Some(Some(t)) => Some(t),
            Some(None) => return Err((StatusCode::BAD_REQUEST, "bad X-OC-Mtime".into())),
        };
        let overwrite = parts
            .headers
            .get("overwrite")
            .is_none_or(|v| !v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"F"));
        // Held through the whole assembly: chunk PUTs and DELETEs wait, and then find it gone.
        let mut s = session.clone().lock_owned().await;
        if s.gone {
            return Err((StatusCode::NOT_FOUND, "no such upload".into()));
        }
        if crate::paths::key(&destination) != s.destination {
            return Err((
                StatusCode::BAD_REQUEST,
                "Destination is not the one given at MKCOL".into(),
            ));
        }
        if s.writers.load(Ordering::SeqCst) > 0 {
            return Err((StatusCode::CONFLICT, "chunks are still being sent".into()));
        }
        let size: u64 = s.chunks.values().map(|c| c.len).sum();
        if let Some(total) = total
            && total != size
        {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("OC-Total-Length {total} is not the chunks' {size} bytes"),
            ));
        }
        // RFC 4918 section 7: a locked destination is written only with its lock token in If.
        let locks = crate::locks::PgLocks::new(self.db.clone(), user.id, destination.prefix());
        let tokens = if_tokens(&parts.headers);
        if locks
            .check(&destination, Some(&user.address), false, false, &tokens)
            .await
            .is_err()
        {
            return Err((StatusCode::LOCKED, "the destination is locked".into()));
        }
        let target =
            crate::paths::resolve(&user.root, &destination).map_err(|e| (fs_status(e), "bad Destination".into()))?;
        let t = target.clone();
        let existed = blocking(move || Ok(t.symlink_metadata().is_ok()))
            .await
            .unwrap_or(false);
        if existed && !overwrite {
            // RFC 4918 section 10.6.
            return Err((
                StatusCode::PRECONDITION_FAILED,
                "the destination exists (Overwrite: F)".into(),
            ));
        }
        let files: Vec<PathBuf> = s.chunks.values().map(|c| s.dir.join(&c.name)).collect();
        let prepaid: Vec<(i64, u64)> = s.held.drain(..).map(|h| (h.id, h.bytes)).collect();
        let ids: Vec<i64> = prepaid.iter().map(|h| h.0).collect();
        let fs = TinyFs::new(self.db.clone(), self.journal.clone()).with_mtime(mtime);
        let (u, d) = (user.clone(), destination.clone());
        // A task of its own: a client hanging up does not cut an assembly in the middle.
        let written = tokio::spawn(async move {
            let mut file = fs.open_assembly(&d, &u, size, prepaid).await?;
            for path in files {
                let mut reader = blocking(move || std::fs::File::open(&path))
                    .await
                    .map_err(|e| crate::paths::fs_error(&e))?;
                loop {
                    let (r, data) = blocking(move || {
                        use std::io::Read;
                        let mut buf = vec![0u8; WRITE_CHUNK];
                        let n = reader.read(&mut buf)?;
                        buf.truncate(n);
                        Ok((reader, buf))
                    })
                    .await
                    .map_err(|e| crate::paths::fs_error(&e))?;
                    if data.is_empty() {
                        break;
                    }
                    reader = r;
                    file.write_bytes(Bytes::from(data)).await?;
                }
            }
            file.flush().await?;
            file.metadata().await.map(|m| m.etag())
        })
        .await
        .unwrap_or_else(|e| {
            tracing::error!("chunk assembly task failed: {e}");
            Err(FsError::GeneralFailure)
        });
        let etag = match written {
            Ok(etag) => etag,
            Err(e) => {
                // The destination is untouched and the chunks stay (the client may try again);
                // the writer gave the reservations back: hold the chunks' bytes again.
                tracing::warn!(user = user.address, upload = id, "chunked upload not assembled: {e:?}");
                quota::release_ids(&self.db, &ids).await.ok();
                if size > 0 {
                    match quota::reserve(&self.db, user.id, size).await {
                        Ok(r) => s.held.push(Held {
                            chunk: None,
                            id: r.id,
                            bytes: r.bytes,
                            since: Instant::now(),
                        }),
                        Err(e) => tracing::warn!(upload = id, "chunks no longer reserved: {e}"),
                    }
                }
                return Err((fs_status(e), "not assembled".into()));
            }
        };
        tracing::info!(
            user = user.address,
            upload = id,
            destination = s.destination,
            bytes = size,
            chunks = s.chunks.len(),
            "chunked upload assembled"
        );
        // The file is in place and charged: the chunks go (a crash before this leaves them
        // to the expiry, reserved but never charged twice).
        self.remove(&mut s, user.id).await;
        self.forget(user.id, id);
        let mut res = simple(
            if existed {
                StatusCode::NO_CONTENT
            } else {
                StatusCode::CREATED
            },
            "",
        );
        let h = res.headers_mut();
        h.remove(header::CONTENT_TYPE);
        if let Some(etag) = etag
            && let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\""))
        {
            h.insert(header::ETAG, v.clone());
            h.insert("OC-ETag", v);
        }
        if mtime.is_some() {
            h.insert("X-OC-MTime", HeaderValue::from_static("accepted"));
        }
        Ok(res)
    }

    /// PROPFIND of `uploads/<address>`: the user's open uploads (Depth 1).
    fn propfind_home(&self, parts: &http::request::Parts, user: &User) -> Response<Body> {
        let base = collection_href(parts.uri.path());
        let mut out = multistatus_start();
        push_collection(&mut out, &base, None);
        if depth_one(&parts.headers) {
            let mut ids: Vec<String> = self
                .sessions
                .lock()
                .expect("sessions lock")
                .keys()
                .filter(|(u, _)| *u == user.id)
                .map(|(_, id)| id.clone())
                .collect();
            ids.sort();
            for id in ids {
                push_collection(&mut out, &format!("{base}{id}/"), None);
            }
        }
        multistatus_end(out)
    }
}

/// The state tokens of an `If` header (RFC 4918 section 10.4): every `<…>` inside a list's
/// parentheses (a `<…>` outside them tags a resource). Bounded by the header's size.
fn if_tokens(headers: &HeaderMap) -> Vec<String> {
    let Some(text) = headers.get("if").and_then(|v| v.to_str().ok()) else {
        return Vec::new();
    };
    let mut tokens = Vec::new();
    let mut in_list = false;
    let mut rest = text;
    while let Some(i) = rest.find(['(', ')', '<']) {
        let c = rest.as_bytes()[i];
        rest = &rest[i + 1..];
        match c {
            b'(' => in_list = true,
            b')' => in_list = false,
            _ => {
                let Some(end) = rest.find('>') else { break };
                if in_list {
                    tokens.push(rest[..end].to_string());
                }
                rest = &rest[end + 1..];
            }
        }
    }
    tokens
}

/// PROPFIND of one upload's folder: its chunks (Depth 1), with their sizes.
fn propfind_upload(parts: &http::request::Parts, s: &Session) -> Response<Body> {
    let base = collection_href(parts.uri.path());
    let mut out = multistatus_start();
    push_collection(&mut out, &base, Some(s.last_activity));
    if depth_one(&parts.headers) {
        for chunk in s.chunks.values() {
            let nanos = chunk
                .modified
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            out.push_str(&format!(
                "<d:response><d:href>{base}{name}</d:href><d:propstat><d:prop><d:resourcetype/>\
                 <d:getcontentlength>{len}</d:getcontentlength><d:getlastmodified>{modified}</d:getlastmodified>\
                 <d:getetag>\"{len:x}-{nanos:x}\"</d:getetag></d:prop><d:status>HTTP/1.1 200 OK</d:status>\
                 </d:propstat></d:response>\n",
                name = chunk.name,
                len = chunk.len,
                modified = http_date(chunk.modified),
            ));
        }
    }
    multistatus_end(out)
}

/// Depth 0 or 1 (RFC 4918 section 10.2); anything but 0 is answered as 1 (an upload folder
/// holds no folders, and at most 10000 chunks).
fn depth_one(headers: &HeaderMap) -> bool {
    headers.get("depth").is_none_or(|d| d.as_bytes().trim_ascii() != b"0")
}

/// The request path as a collection's href (with a trailing slash). Only the path's own
/// characters are echoed, and they are percent-encoded by http::Uri already; `&` and `<` are
/// escaped for the XML.
fn collection_href(path: &str) -> String {
    let mut href = path.replace('&', "&amp;").replace('<', "&lt;");
    if !href.ends_with('/') {
        href.push('/');
    }
    href
}

fn http_date(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

fn multistatus_start() -> String {
    "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<d:multistatus xmlns:d=\"DAV:\">\n".to_string()
}

fn push_collection(out: &mut String, href: &str, modified: Option<SystemTime>) {
    let modified = modified
        .map(|t| format!("<d:getlastmodified>{}</d:getlastmodified>", http_date(t)))
        .unwrap_or_default();
    out.push_str(&format!(
        "<d:response><d:href>{href}</d:href><d:propstat><d:prop><d:resourcetype><d:collection/></d:resourcetype>\
         {modified}</d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>\n"
    ));
}

fn multistatus_end(mut out: String) -> Response<Body> {
    out.push_str("</d:multistatus>\n");
    let mut res = Response::new(Body::from(out));
    *res.status_mut() = StatusCode::MULTI_STATUS;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    res
}

/// The uploads found in `dir` at start: unfinished chunks removed, expired uploads and
/// unreadable ones removed, the rest read (their chunks and last activity).
fn scan(dir: &Path, expiry: Duration) -> std::io::Result<Vec<(i64, String, Session)>> {
    let mut found = Vec::new();
    let users = match std::fs::read_dir(dir) {
        Ok(it) => it,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for user in users.flatten() {
        let Some(user_id) = user.file_name().to_str().and_then(|s| s.parse::<i64>().ok()) else {
            tracing::warn!(path = %user.path().display(), "not an upload folder; left alone");
            continue;
        };
        let uploads = match std::fs::read_dir(user.path()) {
            Ok(it) => it,
            Err(e) => {
                tracing::warn!(path = %user.path().display(), "not an upload folder; left alone: {e}");
                continue;
            }
        };
        for upload in uploads.flatten() {
            let id = upload.file_name().to_string_lossy().into_owned();
            let path = upload.path();
            let why = match read_upload(&path, expiry) {
                Ok(Some(session)) => {
                    found.push((user_id, id, session));
                    continue;
                }
                Ok(None) => "expired while davd was down".to_string(),
                Err(e) => format!("unreadable ({e})"),
            };
            tracing::info!(user_id, upload = id, "chunked upload removed at start: {why}");
            let removed = if path.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            if let Err(e) = removed {
                tracing::error!(path = %path.display(), "cannot remove a chunked upload: {e}");
            }
        }
    }
    Ok(found)
}

/// One upload's folder at start: `None` when expired.
fn read_upload(dir: &Path, expiry: Duration) -> std::io::Result<Option<Session>> {
    if !dir.symlink_metadata()?.is_dir() || !valid_id(&dir.file_name().unwrap_or_default().to_string_lossy()) {
        return Err(std::io::Error::other("not an upload folder"));
    }
    let destination_file = dir.join(DESTINATION_FILE);
    let destination = std::fs::read_to_string(&destination_file)?;
    let mut last_activity = std::fs::metadata(&destination_file)?.modified()?;
    let mut chunks = BTreeMap::new();
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == DESTINATION_FILE {
            continue;
        }
        if name.starts_with(PART_PREFIX) {
            // A chunk that never got its 201.
            std::fs::remove_file(entry.path())?;
            continue;
        }
        let meta = entry.metadata()?;
        match chunk_number(&name) {
            Some(n) if meta.is_file() && !chunks.contains_key(&n) => {
                let modified = meta.modified()?;
                last_activity = last_activity.max(modified);
                chunks.insert(
                    n,
                    Chunk {
                        name,
                        len: meta.len(),
                        modified,
                    },
                );
            }
            _ => return Err(std::io::Error::other(format!("unexpected entry {name:?}"))),
        }
    }
    if SystemTime::now().duration_since(last_activity).unwrap_or_default() >= expiry {
        return Ok(None);
    }
    Ok(Some(Session {
        dir: dir.to_path_buf(),
        destination,
        chunks,
        held: Vec::new(),
        last_activity,
        gone: false,
        writers: Arc::new(AtomicUsize::new(0)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_paths_are_the_users_own() {
        let me = "alice@example.test";
        let t = |p: &str| target(p, me);
        assert_eq!(t("/remote.php/dav/files/alice@example.test/x"), None);
        assert_eq!(t("/remote.php/dav/uploadsX"), None);
        assert_eq!(
            t("/remote.php/dav/uploads/alice%40example.test/"),
            Some(Ok(Target::Home))
        );
        assert_eq!(
            t("/remote.php/dav/uploads/Alice@example.test/u1"),
            Some(Ok(Target::Upload("u1".into())))
        );
        assert_eq!(
            t("/remote.php/dav/uploads/alice@example.test/u1/00042"),
            Some(Ok(Target::Chunk("u1".into(), "00042".into())))
        );
        assert_eq!(
            t("/remote.php/dav/uploads/alice@example.test/u1/.file"),
            Some(Ok(Target::Assembled("u1".into())))
        );
        assert_eq!(
            t("/remote.php/dav/uploads/bob@example.test/u1"),
            Some(Err(StatusCode::FORBIDDEN))
        );
        assert_eq!(
            t("/remote.php/dav/uploads/alice@example.test/u1/2/3"),
            Some(Err(StatusCode::NOT_FOUND))
        );
        assert_eq!(t("/remote.php/dav/uploads"), Some(Err(StatusCode::NOT_FOUND)));
    }

    #[test]
    fn if_header_state_tokens() {
        let mut h = HeaderMap::new();
        h.insert(
            "if",
            HeaderValue::from_static("<https://x/a> (<opaquelocktoken:1> [\"e\"]) (Not <urn:uuid:2>)"),
        );
        assert_eq!(if_tokens(&h), ["opaquelocktoken:1", "urn:uuid:2"]);
        assert!(if_tokens(&HeaderMap::new()).is_empty());
    }

    #[test]
    fn chunk_names_and_upload_ids() {
        assert_eq!(chunk_number("1"), Some(1));
        assert_eq!(chunk_number("00001"), Some(1));
        assert_eq!(chunk_number("10000"), Some(10000));
        for bad in ["0", "10001", "", "1a", "-1", "+1", "00000000000000001"] {
            assert_eq!(chunk_number(bad), None, "{bad:?}");
        }
        assert!(valid_id("rclone-chunked-upload-0123abcd"));
        assert!(valid_id("web-file-upload-a.b_c"));
        for bad in ["", ".destination", "..", "a/b", "a b", &"x".repeat(129)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }
}
