//! Passwords (argon2id) and login throttling (governor).
//!
//! Throttling counts failures only. An IP address that fails too often is refused for a while,
//! whatever account it tries. An account that fails too often (from anywhere) is refused for a
//! while, but only to addresses that have themselves failed recently: the real user, logging in
//! from an address with a clean record, is not locked out by an attacker elsewhere.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sqlx::PgPool;
use thiserror::Error;

use crate::config::AuthConfig;

/// How long an address's failure keeps it "suspect" for a throttled account.
const SUSPECT_FOR: Duration = Duration::from_secs(15 * 60);
/// Above this many remembered entries, old ones are pruned.
const PRUNE_ABOVE: usize = 10_000;

/// Why a login did not succeed. `Invalid` is the same for an unknown user and a wrong password.
#[derive(Debug, Error)]
pub enum AuthError {
    #[error("invalid credentials")]
    Invalid,
    #[error("too many failed logins; try again in {} s", retry_after.as_secs().max(1))]
    Throttled { retry_after: Duration },
    #[error("authentication unavailable: {0}")]
    Internal(#[from] sqlx::Error),
}

/// The authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthedUser {
    pub id: i64,
    pub address: String,
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

fn verify_blocking(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// A hash of nothing anyone knows, verified for unknown users so they cost the same work.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password_blocking("tinydc decoy: no account has this password"))
}

/// Logins for one process: password checks against the database, throttled.
pub struct Auth {
    db: PgPool,
    by_ip: DefaultKeyedRateLimiter<IpAddr>,
    by_account: DefaultKeyedRateLimiter<String>,
    state: Mutex<ThrottleState>,
}

#[derive(Default)]
struct ThrottleState {
    ip_blocked_until: HashMap<IpAddr, Instant>,
    account_blocked_until: HashMap<String, Instant>,
    ip_last_failure: HashMap<IpAddr, Instant>,
}

impl ThrottleState {
    fn prune(&mut self, now: Instant) {
        if self.ip_last_failure.len() > PRUNE_ABOVE {
            self.ip_last_failure.retain(|_, t| now.duration_since(*t) < SUSPECT_FOR);
        }
        if self.ip_blocked_until.len() > PRUNE_ABOVE {
            self.ip_blocked_until.retain(|_, t| *t > now);
        }
        if self.account_blocked_until.len() > PRUNE_ABOVE {
            self.account_blocked_until.retain(|_, t| *t > now);
        }
    }
}

impl Auth {
    /// Logins against `db`, throttled as `config` says.
    pub fn new(db: PgPool, config: &AuthConfig) -> Auth {
        let per_minute = |n: u32| Quota::per_minute(NonZeroU32::new(n.max(1)).expect("max(1) is non-zero"));
        Auth {
            db,
            by_ip: RateLimiter::keyed(per_minute(config.failures_per_ip_per_minute)),
            by_account: RateLimiter::keyed(per_minute(config.failures_per_account_per_minute)),
            state: Mutex::new(ThrottleState::default()),
        }
    }

    fn throttled(&self, account: &str, ip: IpAddr, now: Instant) -> Option<Duration> {
        let state = self.state.lock().expect("throttle state lock");
        if let Some(until) = state.ip_blocked_until.get(&ip).filter(|t| **t > now) {
            return Some(*until - now);
        }
        let suspect = state
            .ip_last_failure
            .get(&ip)
            .is_some_and(|t| now.duration_since(*t) < SUSPECT_FOR);
        if let Some(until) = state
            .account_blocked_until
            .get(account)
            .filter(|t| suspect && **t > now)
        {
            return Some(*until - now);
        }
        None
    }

    fn record_failure(&self, account: &str, ip: IpAddr, now: Instant) {
        let clock = DefaultClock::default();
        let ip_wait = self.by_ip.check_key(&ip).err().map(|nu| nu.wait_time_from(clock.now()));
        let account_key = account.to_string();
        let account_wait = self
            .by_account
            .check_key(&account_key)
            .err()
            .map(|nu| nu.wait_time_from(clock.now()));
        let mut state = self.state.lock().expect("throttle state lock");
        state.prune(now);
        state.ip_last_failure.insert(ip, now);
        if let Some(wait) = ip_wait {
            state.ip_blocked_until.insert(ip, now + wait);
        }
        if let Some(wait) = account_wait {
            state.account_blocked_until.insert(account_key, now + wait);
        }
    }

    /// Check a password. Unknown users and wrong passwords take the same work and give the same
    /// answer; failures are logged with the address and counted for throttling.
    pub async fn login(&self, address: &str, password: &str, ip: IpAddr) -> Result<AuthedUser, AuthError> {
        let account = address.trim().to_lowercase();
        let now = Instant::now();
        if let Some(retry_after) = self.throttled(&account, ip, now) {
            tracing::warn!(%ip, account, "login throttled");
            return Err(AuthError::Throttled { retry_after });
        }
        let row: Option<(i64, String, String)> =
            sqlx::query_as("SELECT id, address, password_hash FROM users WHERE address = $1")
                .bind(&account)
                .fetch_optional(&self.db)
                .await?;
        let hash = row
            .as_ref()
            .map(|r| r.2.clone())
            .unwrap_or_else(|| decoy_hash().to_string());
        let password = password.to_string();
        let matches = tokio::task::spawn_blocking(move || verify_blocking(&hash, &password))
            .await
            .unwrap_or(false);
        match row {
            Some((id, address, _)) if matches => Ok(AuthedUser { id, address }),
            _ => {
                tracing::warn!(%ip, account, "login failed");
                self.record_failure(&account, ip, now);
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
    fn hashes_verify_only_their_password() {
        let hash = hash_password_blocking("correct horse");
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_blocking(&hash, "correct horse"));
        assert!(!verify_blocking(&hash, "battery staple"));
        assert!(!verify_blocking("not a hash", "x"));
    }
}
