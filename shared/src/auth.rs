//! Passwords (argon2id), the login gate and the one rule for sending a password in clear.
//!
//! A login goes: name length check (no database work for a name no address can have) → the
//! shared gate in PostgreSQL charges the attempt ([`gate`]) → the user's hash is read → the
//! argon2 check runs under the process-wide cap ([`work`]) → a success refunds its charge, a
//! failure marks the address suspect.
//!
//! Throttling counts attempts per client address and per account name, for all three daemons
//! together. An address over its budget is refused whatever account it tries. An account over
//! its budget is refused only to addresses that have themselves failed recently: the real user,
//! logging in from an address with a clean record, is not locked out by an attacker elsewhere.

pub mod cache;
pub mod gate;
pub mod work;

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use sqlx::PgPool;
use thiserror::Error;

use crate::config::AuthConfig;
use cache::CredentialCache;
use gate::{Charge, Gate};
use work::WorkCap;

/// The longest login name looked at: more than any address can be (RFC 5321 §4.5.3.1.3: a path,
/// address and brackets, is at most 256 octets; 320 allows for a 64-octet local part and a
/// 255-octet domain). Longer names are refused before any database work and never stored.
pub const MAX_NAME_LEN: usize = 320;

/// How long a login from an address with a clean record waits for its budget (see `login`).
const WAIT_FOR_BUDGET: Duration = Duration::from_secs(5);
const RECHECK_EVERY: Duration = Duration::from_millis(200);

/// Why a login did not succeed. `Invalid` is the same for an unknown user and a wrong password.
#[derive(Debug, Error)]
pub enum AuthError {
    #[error("invalid credentials")]
    Invalid,
    #[error("too many failed logins; try again in {} s", retry_after.as_secs().max(1))]
    Throttled { retry_after: Duration },
    /// Too many password checks are running or waiting in this process; nothing was checked.
    #[error("too many logins at once; try again shortly")]
    Busy,
    #[error("authentication unavailable: {0}")]
    Internal(#[from] sqlx::Error),
}

/// The authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthedUser {
    pub id: i64,
    pub address: String,
}

/// How a connection reaches the daemon, for [`password_may_cross`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// TLS from the client to this daemon (implicit TLS or after STARTTLS).
    Tls,
    /// Plain TCP from the client.
    Plain,
    /// davd's plain HTTP listener for a reverse proxy on this machine, which terminates the
    /// client's TLS itself (`dav.http_listen`; the config accepts only a loopback address there).
    LocalProxy,
}

/// The one rule for "may a password be sent in clear here", used by imapd (LOGINDISABLED, LOGIN,
/// AUTHENTICATE), smtpd (AUTH advertised and accepted) and davd (Basic auth): over TLS always;
/// over plain TCP only from a loopback peer (127.0.0.0/8, ::1) and only when
/// `auth.allow_plaintext_on_loopback` is on; from the local reverse proxy when it connects from
/// loopback (it carried the password over its own TLS).
pub fn password_may_cross(channel: Channel, peer: IpAddr, config: &AuthConfig) -> bool {
    // As before the rule was shared: an IPv4-mapped loopback address (a dual-stack listener)
    // does not count as loopback.
    let loopback = peer.is_loopback();
    match channel {
        Channel::Tls => true,
        Channel::Plain => config.allow_plaintext_on_loopback && loopback,
        Channel::LocalProxy => loopback,
    }
}

/// Hash a password with argon2id and a random salt (PHC string).
pub async fn hash_password(password: &str) -> String {
    let password = password.to_string();
    tokio::task::spawn_blocking(move || hash_password_blocking(&password))
        .await
        .expect("hashing does not panic")
}

fn hash_password_blocking(password: &str) -> String {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters cannot fail")
        .to_string()
}

/// The most argon2 memory a stored hash may ask for (64 MiB; tinydc's hashes use 19 MiB).
const MAX_HASH_BLOCKS: usize = 64 * 1024;

thread_local! {
    /// A checking thread's argon2 memory (see [`verify_blocking`]).
    static CHECK_MEMORY: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Give back this thread's argon2 memory; the checking threads call it once idle
/// ([`work::RELEASE_AFTER_IDLE`]). A block this large is mmapped (see
/// `daemon::return_large_buffers_to_the_system`), so freeing it unmaps it.
fn release_check_memory() {
    CHECK_MEMORY.with_borrow_mut(|memory| *memory = Vec::new());
}

/// Verify `password` against a PHC string. The argon2 memory is this thread's own buffer, kept
/// and reused while logins keep coming: allocating 19 MiB per check left the allocator holding a
/// fresh block after every check (RSS grew by 19 MiB per login up to ~220 MiB with only two
/// checks at a time).
fn verify_blocking(hash: &str, password: &str) -> bool {
    use argon2::{Algorithm, Block, Params, Version};
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params), Some(expected), Some(salt)) = (
        Algorithm::try_from(parsed.algorithm),
        Params::try_from(&parsed),
        parsed.hash,
        parsed.salt,
    ) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let blocks = params.block_count();
    if blocks > MAX_HASH_BLOCKS {
        tracing::error!(blocks, "a stored password hash asks for too much memory; not checked");
        return false;
    }
    let mut out = vec![0u8; expected.len()];
    let hashed = CHECK_MEMORY.with_borrow_mut(|memory| {
        if memory.len() != blocks {
            *memory = vec![Block::default(); blocks];
        }
        Argon2::new(algorithm, version, params).hash_password_into_with_memory(
            password.as_bytes(),
            salt,
            &mut out,
            &mut memory[..],
        )
    });
    // password_hash::Output compares in constant time.
    hashed.is_ok() && argon2::password_hash::Output::new(&out).is_ok_and(|out| out == expected)
}

/// A hash of nothing anyone knows, verified for unknown users so they cost the same work.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password_blocking("tinydc decoy: no account has this password"))
}

/// Logins for one process: password checks against the database, behind the shared gate and the
/// process's cap on argon2 work.
pub struct Auth {
    db: PgPool,
    gate: Gate,
    work: WorkCap,
    cache: CredentialCache,
}

impl Auth {
    /// Logins against `db`, throttled and capped as `config` says.
    pub fn new(db: PgPool, config: &AuthConfig) -> Auth {
        Auth {
            gate: Gate::new(
                db.clone(),
                config.failures_per_ip_per_minute,
                config.failures_per_account_per_minute,
            ),
            work: WorkCap::new(
                config.max_concurrent_checks as usize,
                config.max_waiting_checks as usize,
                release_check_memory,
            ),
            cache: CredentialCache::new(Duration::from_secs(config.credential_cache_secs)),
            db,
        }
    }

    /// Password checks (argon2 verifications) this process has run.
    pub fn verifications(&self) -> u64 {
        self.work.verifications()
    }

    /// Logins answered from the verified-credential cache (no argon2 run).
    pub fn cache_hits(&self) -> u64 {
        self.cache.hits()
    }

    /// The most password checks this process ever ran at once (never above
    /// `auth.max_concurrent_checks`).
    pub fn checks_high_water(&self) -> usize {
        self.work.high_water()
    }

    /// Delete expired login gate rows now (logins also do it, at most once a minute).
    pub async fn prune_gate(&self) -> Result<u64, sqlx::Error> {
        self.gate.prune().await
    }

    /// Check a password. Unknown users and wrong passwords take the same work and give the same
    /// answer; failures are logged with the address and counted for throttling.
    pub async fn login(&self, address: &str, password: &str, ip: IpAddr) -> Result<AuthedUser, AuthError> {
        let trimmed = address.trim();
        if trimmed.len() > MAX_NAME_LEN {
            tracing::warn!(%ip, len = trimmed.len(), "login failed: name longer than any address");
            return Err(AuthError::Invalid);
        }
        // No address has a NUL, and PostgreSQL's text cannot hold one: the gate's statement
        // failed, so the attempt was answered UNAVAILABLE and logged as an error.
        if trimmed.contains('\0') {
            tracing::warn!(%ip, "login failed: name with a NUL, which no address has");
            return Err(AuthError::Invalid);
        }
        let account = trimmed.to_lowercase();
        let waited_since = Instant::now();
        let charged_account = loop {
            match self.gate.charge(ip, &account).await? {
                Charge::Allowed { account } => break account,
                // An address with no recent failure is over its budget only while its attempts
                // are being checked (many devices behind one address logging in at once): wait
                // for their outcome, a success gives its charge back. A failure makes the address
                // suspect and ends the wait; so does the time limit. Every check still needs a
                // charge, so waiting lets nothing past the budget.
                Charge::Refused { suspect: false, .. } if waited_since.elapsed() < WAIT_FOR_BUDGET => {
                    tokio::time::sleep(RECHECK_EVERY).await;
                }
                Charge::Refused { retry_after, .. } => {
                    tracing::warn!(%ip, account, "login throttled");
                    return Err(AuthError::Throttled { retry_after });
                }
            }
        };
        let refund = || self.gate.refund(ip, charged_account.then_some(account.as_str()));
        let row: Option<(i64, String, String)> = match sqlx::query!(
            "SELECT id, address, password_hash FROM users WHERE address = $1",
            account
        )
        .fetch_optional(&self.db)
        .await
        {
            Ok(row) => row.map(|r| (r.id, r.address, r.password_hash)),
            Err(e) => {
                refund().await;
                return Err(e.into());
            }
        };
        // The same password verified against this very hash minutes ago (auth/cache.rs): no
        // argon2 run. The gate was charged above like any attempt; the success refunds it.
        if let Some((id, address, hash)) = &row
            && self.cache.verified(*id, hash, password)
        {
            refund().await;
            return Ok(AuthedUser {
                id: *id,
                address: address.clone(),
            });
        }
        let hash = row.as_ref().map(|r| r.2.clone());
        let password_for_cache = password;
        let password = password.to_string();
        // The decoy is made (once) inside the capped work too: it is an argon2 run like any other.
        let check = move || verify_blocking(hash.as_deref().unwrap_or_else(|| decoy_hash()), &password);
        let Some(matches) = self.work.run(check).await else {
            tracing::warn!(%ip, account, "login refused: too many password checks at once");
            refund().await;
            return Err(AuthError::Busy);
        };
        match row {
            Some((id, address, hash)) if matches => {
                self.cache.remember(id, &hash, password_for_cache);
                // Successes do not count against anyone's budget.
                refund().await;
                Ok(AuthedUser { id, address })
            }
            _ => {
                tracing::warn!(%ip, account, "login failed");
                self.gate.failed(ip).await;
                Err(AuthError::Invalid)
            }
        }
    }
}

/// Decode SASL PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd`, already base64-decoded.
/// Returns (authcid, password); an authzid other than empty or the authcid is refused.
pub fn parse_sasl_plain(decoded: &[u8]) -> Option<(String, String)> {
    let mut parts = decoded.split(|&b| b == 0);
    let authzid = parts.next()?;
    let authcid = std::str::from_utf8(parts.next()?).ok()?;
    let password = std::str::from_utf8(parts.next()?).ok()?;
    if parts.next().is_some() || authcid.is_empty() {
        return None;
    }
    if !authzid.is_empty() && !authzid.eq_ignore_ascii_case(authcid.as_bytes()) {
        return None;
    }
    Some((authcid.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sasl_plain_forms() {
        assert_eq!(
            parse_sasl_plain(b"\0alice@x.y\0pw"),
            Some(("alice@x.y".into(), "pw".into()))
        );
        assert_eq!(
            parse_sasl_plain(b"alice@x.y\0alice@x.y\0pw"),
            Some(("alice@x.y".into(), "pw".into()))
        );
        assert_eq!(parse_sasl_plain(b"bob@x.y\0alice@x.y\0pw"), None);
        assert_eq!(parse_sasl_plain(b"\0alice@x.y"), None);
        assert_eq!(parse_sasl_plain(b"\0\0pw"), None);
        assert_eq!(parse_sasl_plain(b"\0a\0b\0c"), None);
    }

    #[test]
    fn one_rule_for_passwords_in_clear() {
        let on = crate::Config::defaults(std::path::Path::new("/d")).auth;
        let off = AuthConfig {
            allow_plaintext_on_loopback: false,
            ..on.clone()
        };
        let (lo4, lo6, mapped, far): (IpAddr, IpAddr, IpAddr, IpAddr) = (
            "127.0.0.2".parse().unwrap(),
            "::1".parse().unwrap(),
            "::ffff:127.0.0.1".parse().unwrap(),
            "192.0.2.1".parse().unwrap(),
        );
        for peer in [lo4, lo6, mapped, far] {
            assert!(password_may_cross(Channel::Tls, peer, &on));
            assert!(password_may_cross(Channel::Tls, peer, &off));
            assert!(!password_may_cross(Channel::Plain, peer, &off));
        }
        for peer in [lo4, lo6] {
            assert!(password_may_cross(Channel::Plain, peer, &on));
            assert!(password_may_cross(Channel::LocalProxy, peer, &off));
        }
        for peer in [mapped, far] {
            assert!(!password_may_cross(Channel::Plain, peer, &on));
            assert!(!password_may_cross(Channel::LocalProxy, peer, &on));
        }
    }

    #[test]
    fn hashes_verify_only_their_password() {
        let hash = hash_password_blocking("correct horse");
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_blocking(&hash, "correct horse"));
        assert!(!verify_blocking(&hash, "battery staple"));
        assert!(!verify_blocking("not a hash", "x"));
    }
}
