//! Read-only share links: the one owner of the `share_links` table.
//!
//! `tinydc share ADDRESS PATH` makes a link (`create`), `share list` and `share revoke` read and
//! remove them, and davd answers `/s/<token>/...` after `resolve` found the link (davd/src/share.rs).
//!
//! - The token is 32 bytes from the operating system's random source (256 bits), written as
//!   unpadded URL-safe base64 (43 characters, RFC 4648 section 5). Only its SHA-256 is stored,
//!   so a dump or a backup of the database holds no working link; a lookup is by that hash, so
//!   nothing compares a secret byte by byte.
//! - A link names a file or a folder inside its owner's tree `DATA/files/<address>`; the path
//!   must exist when the link is made and is walked without following symlinks. davd checks it
//!   again on every request (it may have changed since).
//! - A link dies with its account (ON DELETE CASCADE), on `share revoke`, and when it expires.
//!   Unknown, revoked and expired tokens look the same from outside.

use std::path::{Component, Path};
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use thiserror::Error;

use crate::accounts::{self, AccountError};
use crate::config::Config;

/// Length of a token as written in a URL: 32 random bytes, unpadded base64url.
pub const TOKEN_LEN: usize = 43;
/// Where davd serves share links: `/s/<token>/`.
pub const URL_PREFIX: &str = "/s/";
/// How long a link lives when `--expires` is not given (README, "Share a file"): a link that
/// was forgotten, or forwarded further than meant, stops working by itself.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest `--expires` accepted (besides `never`).
pub const MAX_EXPIRY: Duration = Duration::from_secs(10 * 366 * 24 * 3600);
/// The most live links one person may have (every list stays bounded).
pub const MAX_LINKS_PER_USER: i64 = 1000;
/// Longest PATH accepted, in bytes (PATH_MAX).
const MAX_PATH_BYTES: usize = 4096;

/// Why a share command was refused; each message is one clear line for the admin.
#[derive(Debug, Error)]
pub enum ShareError {
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error("{path:?}: {why}")]
    BadPath { path: String, why: String },
    #[error("{path:?} does not exist in {address}'s files")]
    NoSuchPath { path: String, address: String },
    #[error("bad duration {0:?}: use a number with s, m, h, d or w (e.g. 30m, 12h, 7d), or `never`")]
    BadDuration(String),
    #[error("{0} already has {MAX_LINKS_PER_USER} share links; revoke some first")]
    TooMany(String),
    #[error("no such share link: {0} (see `tinydc share list`)")]
    UnknownId(i64),
    #[error("reading {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// A link just made: the token is shown once and never stored.
#[derive(Debug, Clone)]
pub struct NewLink {
    pub id: i64,
    pub token: String,
    pub path: String,
    pub is_folder: bool,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A link as `share list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub id: i64,
    pub address: String,
    pub path: String,
    pub is_folder: bool,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub access_count: i64,
    pub last_access: Option<DateTime<Utc>>,
}

/// A live link found by its token: what davd serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub id: i64,
    pub user_id: i64,
    pub address: String,
    /// `/` or `/a/b` inside the owner's tree.
    pub path: String,
    pub is_folder: bool,
}

/// Read `--expires`: `30s`, `30m`, `12h`, `7d`, `2w`, or `never` (`None`).
pub fn parse_expiry(text: &str) -> Result<Option<Duration>, ShareError> {
    let t = text.trim().to_ascii_lowercase();
    if t == "never" {
        return Ok(None);
    }
    let bad = || ShareError::BadDuration(text.to_string());
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = t.split_at(split);
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 24 * 3600,
        "w" => 7 * 24 * 3600,
        _ => return Err(bad()),
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    let secs = n.checked_mul(unit_secs).ok_or_else(bad)?;
    if secs == 0 || secs > MAX_EXPIRY.as_secs() {
        return Err(bad());
    }
    Ok(Some(Duration::from_secs(secs)))
}

/// Check PATH as given on the command line and bring it to the stored form: `/` or `/a/b`
/// (leading slash, no trailing one, no empty, `.` or `..` segment, no NUL, no upload temp name).
pub fn normalize_path(text: &str) -> Result<String, ShareError> {
    let bad = |why: &str| ShareError::BadPath {
        path: text.to_string(),
        why: why.to_string(),
    };
    if text.len() > MAX_PATH_BYTES {
        return Err(bad("too long"));
    }
    if text.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    let mut out = String::new();
    for segment in text.split('/').filter(|s| !s.is_empty()) {
        if segment == "." || segment == ".." {
            return Err(bad(
                "`.` and `..` are not allowed: give the path inside the user's files",
            ));
        }
        if segment.starts_with(crate::quota::UPLOAD_TEMP_PREFIX) {
            return Err(bad("an upload in progress cannot be shared"));
        }
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Walk `path` (stored form) under `root` without following any symlink; whether it is a
/// folder (`true`) or a regular file (`false`). Anything else, or a symlink anywhere on the
/// way, is refused.
pub fn inspect(root: &Path, path: &str, address: &str) -> Result<bool, ShareError> {
    let missing = || ShareError::NoSuchPath {
        path: path.to_string(),
        address: address.to_string(),
    };
    let mut current = root.to_path_buf();
    let mut meta = match current.symlink_metadata() {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
        Err(error) => {
            return Err(ShareError::Io {
                path: current.display().to_string(),
                error,
            });
        }
    };
    for component in Path::new(path.trim_start_matches('/')).components() {
        let Component::Normal(name) = component else {
            return Err(ShareError::BadPath {
                path: path.to_string(),
                why: "not a plain path".into(),
            });
        };
        if !meta.is_dir() {
            return Err(missing());
        }
        current.push(name);
        meta = match current.symlink_metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
            Err(error) => {
                return Err(ShareError::Io {
                    path: current.display().to_string(),
                    error,
                });
            }
        };
        if meta.file_type().is_symlink() {
            return Err(ShareError::BadPath {
                path: path.to_string(),
                why: "a symbolic link is on the way; only plain files and folders can be shared".into(),
            });
        }
    }
    if meta.is_dir() {
        Ok(true)
    } else if meta.is_file() {
        Ok(false)
    } else {
        Err(ShareError::BadPath {
            path: path.to_string(),
            why: "not a regular file or folder".into(),
        })
    }
}

/// A new token: 32 bytes from the OS random source, unpadded base64url.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What is stored for a token.
fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Whether `text` has the shape of a token (43 base64url characters). davd routes only such
/// segments under `/s/` to share links.
pub fn looks_like_token(text: &str) -> bool {
    text.len() == TOKEN_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Make a link to `path` (as given: normalised here) in `address`'s tree, which lives under
/// `files_dir` (`DATA/files`). `expires`: `None` never.
pub async fn create(
    db: &PgPool,
    files_dir: &Path,
    address: &str,
    path: &str,
    expires: Option<Duration>,
) -> Result<NewLink, ShareError> {
    let user = accounts::get_user(db, address).await?;
    let path = normalize_path(path)?;
    let root = files_dir.join(&user.address);
    let (p, a) = (path.clone(), user.address.clone());
    let is_folder = tokio::task::spawn_blocking(move || inspect(&root, &p, &a))
        .await
        .map_err(|e| ShareError::Io {
            path: path.clone(),
            error: std::io::Error::other(e),
        })??;
    let token = new_token();
    let expires_secs = expires.map(|d| d.as_secs() as f64);
    let mut tx = db.begin().await?;
    // Under the user's row lock, so two commands cannot pass the cap together.
    sqlx::query!("SELECT id FROM users WHERE id = $1 FOR UPDATE", user.id)
        .fetch_one(&mut *tx)
        .await?;
    // Links expired for a month are of no more use in `share list`.
    sqlx::query!(
        "DELETE FROM share_links WHERE user_id = $1 AND expires_at < now() - interval '30 days'",
        user.id
    )
    .execute(&mut *tx)
    .await?;
    let live = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM share_links
           WHERE user_id = $1 AND (expires_at IS NULL OR expires_at > now())"#,
        user.id
    )
    .fetch_one(&mut *tx)
    .await?;
    if live >= MAX_LINKS_PER_USER {
        return Err(ShareError::TooMany(user.address));
    }
    let row = sqlx::query!(
        r#"INSERT INTO share_links (user_id, token_sha256, path, is_folder, expires_at)
           VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5::float8))
           RETURNING id, expires_at"#,
        user.id,
        token_hash(&token),
        path,
        is_folder,
        expires_secs,
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(NewLink {
        id: row.id,
        token,
        path,
        is_folder,
        expires_at: row.expires_at,
    })
}

/// Every link (of `address` only, when given), oldest first, expired ones included.
pub async fn list(db: &PgPool, address: Option<&str>) -> Result<Vec<Link>, ShareError> {
    let user_id = match address {
        Some(a) => Some(accounts::get_user(db, a).await?.id),
        None => None,
    };
    Ok(sqlx::query_as!(
        Link,
        r#"SELECT s.id AS "id!", u.address AS "address!", s.path AS "path!", s.is_folder AS "is_folder!",
                  s.created_at AS "created_at!", s.expires_at, s.access_count AS "access_count!",
                  s.last_access
           FROM share_links s JOIN users u ON u.id = s.user_id
           WHERE $1::bigint IS NULL OR s.user_id = $1
           ORDER BY s.id"#,
        user_id,
    )
    .fetch_all(db)
    .await?)
}

/// Remove a link; it stops working at once (davd looks every request up). What was removed.
pub async fn revoke(db: &PgPool, id: i64) -> Result<Link, ShareError> {
    sqlx::query_as!(
        Link,
        r#"WITH gone AS (DELETE FROM share_links WHERE id = $1 RETURNING *)
           SELECT g.id AS "id!", u.address AS "address!", g.path AS "path!", g.is_folder AS "is_folder!",
                  g.created_at AS "created_at!", g.expires_at, g.access_count AS "access_count!",
                  g.last_access
           FROM gone g JOIN users u ON u.id = g.user_id"#,
        id,
    )
    .fetch_optional(db)
    .await?
    .ok_or(ShareError::UnknownId(id))
}

/// Find the live link of `token` and count this access, in one statement. `None` for an
/// unknown, revoked or expired token alike.
pub async fn resolve(db: &PgPool, token: &str) -> Result<Option<Resolved>, sqlx::Error> {
    if !looks_like_token(token) {
        return Ok(None);
    }
    sqlx::query_as!(
        Resolved,
        r#"UPDATE share_links s SET access_count = s.access_count + 1, last_access = now()
           FROM users u
           WHERE s.token_sha256 = $1 AND u.id = s.user_id
             AND (s.expires_at IS NULL OR s.expires_at > now())
           RETURNING s.id AS "id!", s.user_id AS "user_id!", u.address AS "address!", s.path AS "path!",
                     s.is_folder AS "is_folder!""#,
        token_hash(token),
    )
    .fetch_optional(db)
    .await
}

/// Percent-encode a path for a URL (RFC 3986 section 2.1): everything but the unreserved
/// characters and `/`.
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for &b in path.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The public URL of a link: `https://<server.hostname>[:port]/s/<token>/`, the port being
/// `dav.https_listen`'s unless it is 443 (or davd listens only behind a reverse proxy, which
/// serves 443). A file's link ends with its name, so a browser or `curl -O` saves it under it.
pub fn url(config: &Config, link: &NewLink) -> String {
    let port = config.dav.https_listen.map(|a| a.port()).unwrap_or(443);
    let authority = if port == 443 {
        config.server.hostname.clone()
    } else {
        format!("{}:{port}", config.server.hostname)
    };
    let mut url = format!("https://{authority}{URL_PREFIX}{}/", link.token);
    if !link.is_folder
        && let Some(name) = link.path.rsplit('/').next()
    {
        url.push_str(&encode_path(name));
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_durations() {
        let secs = |s: u64| Ok::<_, ()>(Some(Duration::from_secs(s)));
        let p = |t: &str| parse_expiry(t).map_err(|_| ());
        assert_eq!(p("30m"), secs(1800));
        assert_eq!(p("12h"), secs(43200));
        assert_eq!(p("7d"), secs(7 * 86400));
        assert_eq!(p(" 2W "), secs(14 * 86400));
        assert_eq!(p("90s"), secs(90));
        assert_eq!(p("never"), Ok(None));
        for bad in [
            "",
            "7",
            "d",
            "0d",
            "-1d",
            "1.5d",
            "7 d",
            "7y",
            "99999999999999999999d",
            "4000w",
        ] {
            assert!(parse_expiry(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths_are_normalised_and_checked() {
        assert_eq!(normalize_path("Photos/2024/").unwrap(), "/Photos/2024");
        assert_eq!(normalize_path("/a//b").unwrap(), "/a/b");
        assert_eq!(normalize_path("/").unwrap(), "/");
        assert_eq!(normalize_path("").unwrap(), "/");
        for bad in ["../x", "a/../../b", "a/./b", "a\0b", ".tinydc-upload-123"] {
            assert!(normalize_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn inspect_refuses_symlinks_and_missing_paths() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("alice");
        std::fs::create_dir_all(root.join("docs")).unwrap();
        std::fs::write(root.join("docs/a.txt"), b"a").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
        std::os::unix::fs::symlink(root.join("docs"), root.join("link")).unwrap();
        assert!(inspect(&root, "/docs", "alice").unwrap());
        assert!(!inspect(&root, "/docs/a.txt", "alice").unwrap());
        assert!(inspect(&root, "/", "alice").unwrap());
        assert!(matches!(
            inspect(&root, "/docs/b.txt", "alice"),
            Err(ShareError::NoSuchPath { .. })
        ));
        assert!(matches!(
            inspect(&root, "/docs/a.txt/x", "alice"),
            Err(ShareError::NoSuchPath { .. })
        ));
        assert!(matches!(
            inspect(&root, "/etc/passwd", "alice"),
            Err(ShareError::BadPath { .. })
        ));
        assert!(matches!(
            inspect(&root, "/link/a.txt", "alice"),
            Err(ShareError::BadPath { .. })
        ));
    }

    #[test]
    fn tokens_are_long_random_and_url_safe() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert!(looks_like_token(&a), "{a}");
        assert!(!looks_like_token(&a[1..]));
        assert!(!looks_like_token(&format!("{}+", &a[1..])));
        assert_eq!(token_hash(&a).len(), 32);
        assert_eq!(encode_path("/a b/é%"), "/a%20b/%C3%A9%25");
    }
}
