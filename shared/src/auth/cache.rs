//! Verified credentials, remembered for a few minutes so a client that logs in again (a phone
//! polling every minute, Thunderbird's five connections) does not pay argon2id each time.
//!
//! Why this is safe:
//! - Only successes are remembered, and only a keyed hash of them: HMAC-SHA256 under a random
//!   key made when the process starts, over the user id, the stored password hash and the
//!   password. Neither the password nor the key leaves the process's memory; nothing is written
//!   to disk or the database; a restart forgets everything.
//! - The stored hash is part of the key, so a changed password (a new hash with a new salt) or
//!   a deleted user never matches an old entry: nothing needs to be told about the change.
//! - A wrong password never matches, so failures still run argon2id in full, and the login
//!   gate is charged before the cache is looked at (shared::auth::Auth::login).
//! - Entries expire after `auth.credential_cache_secs` (0 turns the cache off) and there are at
//!   most [`MAX_ENTRIES`], so memory stays bounded whatever clients do.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// The most credentials remembered at once (32 bytes of digest and an instant each).
pub const MAX_ENTRIES: usize = 4096;

type Digest = [u8; 32];

/// One process's verified credentials.
pub struct CredentialCache {
    key: [u8; 32],
    ttl: Duration,
    /// When each credential was verified with argon2id.
    entries: Mutex<HashMap<Digest, Instant>>,
    hits: AtomicU64,
}

impl CredentialCache {
    /// A cache whose entries last `ttl` (zero: nothing is remembered).
    pub fn new(ttl: Duration) -> CredentialCache {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        CredentialCache {
            key,
            ttl,
            entries: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
        }
    }

    fn digest(&self, user_id: i64, stored_hash: &str, password: &str) -> Digest {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(&user_id.to_be_bytes());
        // Length-prefixed, so no two (hash, password) pairs give the same input.
        for part in [stored_hash.as_bytes(), password.as_bytes()] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// Whether this password was verified against this stored hash within the time.
    pub fn verified(&self, user_id: i64, stored_hash: &str, password: &str) -> bool {
        if self.ttl.is_zero() {
            return false;
        }
        let digest = self.digest(user_id, stored_hash, password);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(&digest) {
            Some(at) if at.elapsed() < self.ttl => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                true
            }
            Some(_) => {
                entries.remove(&digest);
                false
            }
            None => false,
        }
    }

    /// Remember a password argon2id has just verified against `stored_hash`.
    pub fn remember(&self, user_id: i64, stored_hash: &str, password: &str) {
        if self.ttl.is_zero() {
            return;
        }
        let digest = self.digest(user_id, stored_hash, password);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&digest) {
            let ttl = self.ttl;
            entries.retain(|_, at| at.elapsed() < ttl);
            if entries.len() >= MAX_ENTRIES
                && let Some(oldest) = entries.iter().min_by_key(|(_, at)| **at).map(|(d, _)| *d)
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(digest, Instant::now());
    }

    /// Logins answered from the cache so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Credentials remembered now (expired ones included until they are looked at or pushed out).
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_user_hash_and_password_match() {
        let cache = CredentialCache::new(Duration::from_secs(60));
        cache.remember(1, "$argon2id$one", "secret");
        assert!(cache.verified(1, "$argon2id$one", "secret"));
        assert!(!cache.verified(1, "$argon2id$one", "Secret"));
        assert!(
            !cache.verified(1, "$argon2id$two", "secret"),
            "a changed hash never matches"
        );
        assert!(!cache.verified(2, "$argon2id$one", "secret"));
        // The length prefix keeps the boundary between hash and password.
        assert!(!cache.verified(1, "$argon2id$on", "esecret"));
        assert_eq!(cache.hits(), 1);
    }

    #[test]
    fn entries_expire_and_zero_turns_it_off() {
        let cache = CredentialCache::new(Duration::from_millis(20));
        cache.remember(1, "h", "p");
        assert!(cache.verified(1, "h", "p"));
        std::thread::sleep(Duration::from_millis(40));
        assert!(!cache.verified(1, "h", "p"));
        assert!(cache.is_empty(), "an expired entry is dropped when looked at");
        let off = CredentialCache::new(Duration::ZERO);
        off.remember(1, "h", "p");
        assert!(!off.verified(1, "h", "p"));
        assert!(off.is_empty());
    }

    #[test]
    fn the_size_is_bounded() {
        let cache = CredentialCache::new(Duration::from_secs(60));
        for i in 0..(MAX_ENTRIES as i64 + 100) {
            cache.remember(i, "h", "p");
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
        // The newest are kept, the oldest pushed out.
        assert!(cache.verified(MAX_ENTRIES as i64 + 99, "h", "p"));
        assert!(!cache.verified(0, "h", "p"));
    }
}
