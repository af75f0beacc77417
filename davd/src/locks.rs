//! WebDAV write locks (RFC 4918 section 6, 9.10, 9.11) stored in PostgreSQL, so they survive a
//! restart and are seen by every davd process.
//!
//! dav-server's `DavLockSystem` sees paths, not users; two users' `/notes.txt` are different
//! files. So one `PgLocks` is made per request, for the authenticated user, and every query is
//! scoped by that user's id. The conflict rules follow RFC 4918 section 6.1/7: an exclusive lock
//! conflicts with every other lock on the same resource, shared locks coexist; a depth-infinity
//! lock on a collection covers everything below it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use dav_server::davpath::DavPath;
use dav_server::ls::{DavLock, DavLockSystem, LsFuture};
use futures::FutureExt;
use sqlx::PgPool;
use xmltree::Element;

use crate::paths;

/// Longest lock lifetime granted (RFC 4918 section 10.7 lets the server choose), so an
/// abandoned lock cannot block a file for long; clients refresh their locks. One maximum for
/// every lock and every spelling of the request: it is dav-server's own cap on exclusive locks
/// (it grants no more than 600 s to those whatever davd allows), so shared locks, `Infinite`
/// and numbers too big for dav-server's header parser get the same (see [`requested_timeout`]).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// The lifetime of a lock whose request named none (no more than one that asked for more).
pub const DEFAULT_TIMEOUT: Duration = MAX_TIMEOUT;

/// The lifetime to grant for a LOCK's `Timeout` header (RFC 4918 section 10.7:
/// `Timeout = 1#TimeType`, `TimeType = "Second-" DAVTimeOutVal | "Infinite"`): the first
/// value davd understands, at most [`MAX_TIMEOUT`]. `Infinite` and any number past the maximum
/// (however many digits) are the maximum; values it cannot read are skipped. `None` when the
/// header names nothing usable (the lock then gets [`DEFAULT_TIMEOUT`], a refresh keeps its
/// own).
pub fn requested_timeout(header: &str) -> Option<Duration> {
    header.split(',').map(str::trim).find_map(|word| {
        if word.eq_ignore_ascii_case("Infinite") {
            return Some(MAX_TIMEOUT);
        }
        let (name, digits) = word.split_at_checked(7)?;
        if !name.eq_ignore_ascii_case("Second-") || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Too many digits for a u64 is still just "very long".
        let secs = digits.parse::<u64>().unwrap_or(u64::MAX);
        Some(Duration::from_secs(secs).min(MAX_TIMEOUT))
    })
}

/// The lock system of one user, for one request.
#[derive(Clone)]
pub struct PgLocks {
    db: PgPool,
    user_id: i64,
    /// The URL prefix of this request (`""` or `/dav/<address>`), for lock roots in answers.
    prefix: String,
    /// The user's live locks, loaded by the first `discover` of this request (a PROPFIND of a
    /// big folder asks for every entry) and dropped by any change.
    known: Arc<Mutex<Option<Arc<Vec<Row>>>>>,
}

impl std::fmt::Debug for PgLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLocks").field("user_id", &self.user_id).finish()
    }
}

/// A stored lock.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Row {
    token: String,
    path: String,
    principal: Option<String>,
    owner: Option<String>,
    remaining_secs: Option<f64>,
    timeout_secs: Option<i64>,
    shared: bool,
    deep: bool,
}

const COLUMNS: &str = "token, path, principal, owner, \
    extract(epoch FROM timeout_at - now())::float8 AS remaining_secs, timeout_secs, shared, deep";
const LIVE: &str = "(timeout_at IS NULL OR timeout_at > now())";

impl PgLocks {
    pub fn new(db: PgPool, user_id: i64, prefix: &str) -> PgLocks {
        PgLocks {
            db,
            user_id,
            prefix: prefix.to_string(),
            known: Arc::new(Mutex::new(None)),
        }
    }

    fn forget_known(&self) {
        *self.known.lock().expect("lock cache") = None;
    }

    /// Live locks reaching `key` (as `covering`), from the per-request copy of the user's locks.
    async fn covering_cached(&self, key: &str) -> Result<Vec<Row>, sqlx::Error> {
        let cached = self.known.lock().expect("lock cache").clone();
        let all = match cached {
            Some(all) => all,
            None => {
                // Built at run time (shares COLUMNS and LIVE), so not a checked macro.
                let all: Vec<Row> = sqlx::query_as(&format!(
                    "SELECT {COLUMNS} FROM dav_locks WHERE user_id = $1 AND {LIVE} ORDER BY created_at"
                ))
                .bind(self.user_id)
                .fetch_all(&self.db)
                .await?;
                let all = Arc::new(all);
                *self.known.lock().expect("lock cache") = Some(all.clone());
                all
            }
        };
        // A lock on `key` itself, or a deep one on an ancestor (no copy of the list per call:
        // a PROPFIND asks for every entry of a folder).
        Ok(all
            .iter()
            .filter(|l| l.path == key || (l.deep && paths::is_at_or_below(key, &l.path)))
            .cloned()
            .collect())
    }

    /// The live locks reaching the resource of `key` (paths.rs): RFC 4918 section 15.8
    /// `lockdiscovery`, as `DavLockSystem::discover` and davd's PROPFIND (propfind.rs) list it.
    pub async fn discover_key(&self, key: &str) -> Vec<DavLock> {
        let rows = log_db("discover", self.covering_cached(key).await).unwrap_or_default();
        rows.into_iter().map(|r| self.to_lock(r)).collect()
    }

    fn to_lock(&self, row: Row) -> DavLock {
        let url = format!("{}{}", self.prefix, row.path);
        let mut path = DavPath::new(&url).unwrap_or_else(|_| DavPath::new("/").expect("root is a valid path"));
        if !self.prefix.is_empty() {
            let _ = path.set_prefix(&self.prefix);
        }
        let timeout = row
            .remaining_secs
            .map(|s| Duration::from_secs(s.max(0.0).ceil() as u64));
        DavLock {
            token: row.token,
            path: Box::new(path),
            principal: row.principal,
            owner: row
                .owner
                // Parsed by xmltree, which recurses per level: bounded like every body.
                .filter(|xml| crate::xmlcheck::check(xml.as_bytes(), crate::xmlcheck::MAX_XML_DEPTH).is_ok())
                .and_then(|xml| Element::parse(xml.as_bytes()).ok())
                .map(Box::new),
            timeout_at: timeout.map(|t| SystemTime::now() + t),
            timeout,
            shared: row.shared,
            deep: row.deep,
        }
    }

    /// Live locks on `key`'s ancestors that reach it (deep ones) and on `key` itself.
    async fn covering(&self, key: &str) -> Result<Vec<Row>, sqlx::Error> {
        let chain = paths::ancestors_and_self(key);
        // Built at run time (shares COLUMNS and LIVE), so not a checked macro.
        sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM dav_locks WHERE user_id = $1 AND {LIVE} AND path = ANY($2)
             AND (deep OR path = $3) ORDER BY created_at"
        ))
        .bind(self.user_id)
        .bind(&chain)
        .bind(key)
        .fetch_all(&self.db)
        .await
    }

    /// Live locks strictly below `key`.
    async fn below(&self, key: &str) -> Result<Vec<Row>, sqlx::Error> {
        let pattern = if key == "/" { "/".to_string() } else { format!("{key}/") };
        // Built at run time (shares COLUMNS and LIVE), so not a checked macro.
        sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM dav_locks WHERE user_id = $1 AND {LIVE}
             AND left(path, length($2)) = $2 AND path <> $3 ORDER BY created_at"
        ))
        .bind(self.user_id)
        .bind(&pattern)
        .bind(key)
        .fetch_all(&self.db)
        .await
    }

    /// A lock owned by `token` on `key` or on an ancestor (how a client names the lock it
    /// refreshes or removes: the request URI may be anywhere inside the locked tree).
    async fn find_token(&self, key: &str, token: &str) -> Result<Option<Row>, sqlx::Error> {
        let chain = paths::ancestors_and_self(key);
        // Built at run time (shares COLUMNS and LIVE), so not a checked macro.
        sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM dav_locks WHERE user_id = $1 AND {LIVE} AND token = $2 AND path = ANY($3)"
        ))
        .bind(self.user_id)
        .bind(token)
        .bind(&chain)
        .fetch_optional(&self.db)
        .await
    }

    /// For UNLOCK and refresh, which change the user's locks: forget the request's copy of them,
    /// then find the live lock `token` names on `key` or an ancestor (None when there is none or
    /// the store fails, logged).
    async fn token_for_change(&self, what: &str, key: &str, token: &str) -> Option<Row> {
        self.forget_known();
        log_db(what, self.find_token(key, token).await).flatten()
    }

    #[allow(clippy::too_many_arguments)]
    async fn try_lock(
        &self,
        key: &str,
        path: &DavPath,
        principal: Option<&str>,
        owner: Option<&Element>,
        timeout: Option<Duration>,
        shared: bool,
        deep: bool,
    ) -> Result<Result<DavLock, DavLock>, sqlx::Error> {
        let mut tx = self.db.begin().await?;
        // One locker at a time per user, so two LOCKs cannot both see "no conflict".
        sqlx::query!(
            r#"SELECT pg_advisory_xact_lock(hashtext('tinydc-dav-locks'), $1::int) AS "locked: ()""#,
            (self.user_id % i64::from(i32::MAX)) as i32,
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "DELETE FROM dav_locks WHERE user_id = $1 AND timeout_at <= now()",
            self.user_id
        )
        .execute(&mut *tx)
        .await?;
        let mut existing = self.covering(key).await?;
        if deep {
            existing.extend(self.below(key).await?);
        }
        // RFC 4918 section 6.1: an exclusive lock conflicts with any other; shared with shared is fine.
        if let Some(conflict) = existing.into_iter().find(|l| !l.shared || !shared) {
            tx.rollback().await?;
            return Ok(Err(self.to_lock(conflict)));
        }
        let timeout = Some(timeout.unwrap_or(DEFAULT_TIMEOUT).min(MAX_TIMEOUT));
        let token = format!("urn:uuid:{}", uuid::Uuid::new_v4());
        let owner_xml = owner.and_then(owner_to_xml);
        let secs = timeout.map(|t| t.as_secs() as i64);
        sqlx::query!(
            "INSERT INTO dav_locks (token, user_id, path, principal, owner, timeout_at, timeout_secs, shared, deep)
             VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6::bigint::float8), $6, $7, $8)",
            token,
            self.user_id,
            key,
            principal,
            owner_xml,
            secs,
            shared,
            deep,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(DavLock {
            token,
            path: Box::new(path.clone()),
            principal: principal.map(str::to_string),
            owner: owner.map(|o| Box::new(o.clone())),
            timeout_at: timeout.map(|t| SystemTime::now() + t),
            timeout,
            shared,
            deep,
        }))
    }

    async fn do_check(
        &self,
        key: &str,
        principal: Option<&str>,
        ignore_principal: bool,
        deep: bool,
        tokens: &[String],
    ) -> Result<Result<(), DavLock>, sqlx::Error> {
        let held = |l: &Row| tokens.contains(&l.token) && (ignore_principal || principal == l.principal.as_deref());
        // RFC 4918 section 7.1: the request must carry the token of every lock on the resource
        // (for shared locks, one of them is enough).
        let mut holds_any = false;
        let mut first_shared = None;
        for l in self.covering(key).await? {
            if held(&l) {
                holds_any = true;
            } else if !l.shared {
                return Ok(Err(self.to_lock(l)));
            } else if first_shared.is_none() {
                first_shared = Some(l);
            }
        }
        if !holds_any && let Some(l) = first_shared {
            return Ok(Err(self.to_lock(l)));
        }
        if deep {
            for l in self.below(key).await? {
                if !held(&l) {
                    return Ok(Err(self.to_lock(l)));
                }
            }
        }
        Ok(Ok(()))
    }
}

/// The DAV:owner element as a standalone XML document (its prefix bound to `DAV:`).
fn owner_to_xml(owner: &Element) -> Option<String> {
    let mut o = owner.clone();
    o.prefix = Some("D".into());
    o.namespace = Some("DAV:".into());
    let mut ns = o.namespaces.take().unwrap_or_else(xmltree::Namespace::empty);
    ns.put("D", "DAV:");
    o.namespaces = Some(ns);
    let mut buf = Vec::new();
    match o.write(&mut buf) {
        Ok(()) => String::from_utf8(buf).ok(),
        Err(e) => {
            tracing::warn!("lock owner not stored: {e}");
            None
        }
    }
}

fn log_db<T>(what: &str, r: Result<T, sqlx::Error>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!("lock store ({what}): {e}");
            None
        }
    }
}

/// A stand-in conflicting lock, returned when the database fails: refusing is safer than granting.
fn unavailable(path: &DavPath) -> DavLock {
    DavLock {
        token: "urn:tinydc:lock-store-unavailable".into(),
        path: Box::new(path.clone()),
        principal: None,
        owner: None,
        timeout_at: None,
        timeout: None,
        shared: false,
        deep: false,
    }
}

impl DavLockSystem for PgLocks {
    fn lock(
        &'_ self,
        path: &DavPath,
        principal: Option<&str>,
        owner: Option<&Element>,
        timeout: Option<Duration>,
        shared: bool,
        deep: bool,
    ) -> LsFuture<'_, Result<DavLock, DavLock>> {
        let path = path.clone();
        let principal = principal.map(str::to_string);
        let owner = owner.cloned();
        async move {
            self.forget_known();
            let key = paths::key(&path);
            let r = self
                .try_lock(&key, &path, principal.as_deref(), owner.as_ref(), timeout, shared, deep)
                .await;
            log_db("lock", r).unwrap_or_else(|| Err(unavailable(&path)))
        }
        .boxed()
    }

    fn unlock(&'_ self, path: &DavPath, token: &str) -> LsFuture<'_, Result<(), ()>> {
        let key = paths::key(path);
        let token = token.to_string();
        async move {
            let Some(row) = self.token_for_change("unlock", &key, &token).await else {
                return Err(());
            };
            let r = sqlx::query!(
                "DELETE FROM dav_locks WHERE user_id = $1 AND token = $2",
                self.user_id,
                row.token
            )
            .execute(&self.db)
            .await;
            log_db("unlock", r).map(|_| ()).ok_or(())
        }
        .boxed()
    }

    fn refresh(&'_ self, path: &DavPath, token: &str, timeout: Option<Duration>) -> LsFuture<'_, Result<DavLock, ()>> {
        let key = paths::key(path);
        let token = token.to_string();
        async move {
            let Some(row) = self.token_for_change("refresh", &key, &token).await else {
                return Err(());
            };
            // RFC 4918 section 9.10.2: a refresh restarts the timeout (the same one, unless
            // the client asks for another).
            let secs = match timeout {
                Some(t) => t.min(MAX_TIMEOUT).as_secs() as i64,
                // (A lock granted under an older, longer maximum is brought under this one.)
                None => row
                    .timeout_secs
                    .unwrap_or(DEFAULT_TIMEOUT.as_secs() as i64)
                    .clamp(0, MAX_TIMEOUT.as_secs() as i64),
            };
            let r = sqlx::query!(
                "UPDATE dav_locks SET timeout_at = now() + make_interval(secs => $3::bigint::float8), timeout_secs = $3
                 WHERE user_id = $1 AND token = $2",
                self.user_id,
                row.token,
                secs,
            )
            .execute(&self.db)
            .await;
            log_db("refresh", r).ok_or(())?;
            let mut lock = self.to_lock(row);
            let t = Duration::from_secs(secs as u64);
            lock.timeout = Some(t);
            lock.timeout_at = Some(SystemTime::now() + t);
            Ok(lock)
        }
        .boxed()
    }

    fn check(
        &'_ self,
        path: &DavPath,
        principal: Option<&str>,
        ignore_principal: bool,
        deep: bool,
        submitted_tokens: &[String],
    ) -> LsFuture<'_, Result<(), DavLock>> {
        let path = path.clone();
        let principal = principal.map(str::to_string);
        let tokens = submitted_tokens.to_vec();
        async move {
            let key = paths::key(&path);
            let r = self
                .do_check(&key, principal.as_deref(), ignore_principal, deep, &tokens)
                .await;
            log_db("check", r).unwrap_or_else(|| Err(unavailable(&path)))
        }
        .boxed()
    }

    fn discover(&'_ self, path: &DavPath) -> LsFuture<'_, Vec<DavLock>> {
        let key = paths::key(path);
        async move { self.discover_key(&key).await }.boxed()
    }

    fn delete(&'_ self, path: &DavPath) -> LsFuture<'_, Result<(), ()>> {
        let key = paths::key(path);
        async move {
            self.forget_known();
            let r = sqlx::query!(
                "DELETE FROM dav_locks WHERE user_id = $1
                 AND (path = $2 OR $2 = '/' OR left(path, length($2) + 1) = $2 || '/')",
                self.user_id,
                key,
            )
            .execute(&self.db)
            .await;
            log_db("delete", r).map(|_| ()).ok_or(())
        }
        .boxed()
    }
}

/// Forget every lock of every user (`tinydc restore`: a lock is a client's session state on the
/// machine that granted it; its holder re-locks when it sees its token refused).
pub async fn clear_all(db: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!("DELETE FROM dav_locks").execute(db).await?.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_read_robustly_and_capped() {
        let max = Some(MAX_TIMEOUT);
        assert_eq!(requested_timeout("Second-60"), Some(Duration::from_secs(60)));
        assert_eq!(requested_timeout("Second-3600"), max);
        assert_eq!(requested_timeout("Second-99999999999999"), max);
        assert_eq!(requested_timeout("Second-999999999999999999999999999999"), max);
        assert_eq!(requested_timeout("Infinite"), max);
        assert_eq!(requested_timeout("infinite"), max);
        assert_eq!(requested_timeout("Infinite, Second-4100000000"), max);
        assert_eq!(requested_timeout("Second-30, Infinite"), Some(Duration::from_secs(30)));
        assert_eq!(requested_timeout("bogus, Second-20"), Some(Duration::from_secs(20)));
        assert_eq!(requested_timeout("Second--5"), None);
        assert_eq!(requested_timeout("Second-"), None);
        assert_eq!(requested_timeout("Second-1e9"), None);
        assert_eq!(requested_timeout(""), None);
        assert_eq!(requested_timeout("Secönd-5"), None);
    }
}

/// A stored lock as `tinydc check` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLock {
    pub token: String,
    pub user_id: i64,
    pub path: String,
    /// Its timeout passed (it no longer counts; removed by the user's next LOCK).
    pub expired: bool,
    /// Made longer ago than the grace period asked for.
    pub old: bool,
}

/// Every stored lock; `old` tells those made more than `grace` ago.
pub async fn all_locks(db: &PgPool, grace: Duration) -> Result<Vec<StoredLock>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT token, user_id, path, coalesce(timeout_at <= now(), false) AS "expired!",
                created_at < now() - make_interval(secs => $1) AS "old!"
         FROM dav_locks ORDER BY user_id, path"#,
        grace.as_secs_f64()
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| StoredLock {
            token: r.token,
            user_id: r.user_id,
            path: r.path,
            expired: r.expired,
            old: r.old,
        })
        .collect())
}

/// Remove one lock of a user (an expired one, or one whose resource is gone).
pub async fn remove(db: &PgPool, user_id: i64, token: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM dav_locks WHERE user_id = $1 AND token = $2",
        user_id,
        token
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() > 0)
}
