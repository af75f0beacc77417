//! The login gate: one budget of password checks per client address (and per account name),
//! shared by the three daemons through PostgreSQL (table `login_gate`, migration 0007).
//!
//! Every attempt is charged before its password is checked, by one statement that counts it and
//! answers whether it may go on, so parallel attempts cannot all slip past a check made before
//! any of them was counted. A successful login refunds its charge; a failed one marks the address
//! "suspect" for [`SUSPECT_FOR`].
//!
//! Each key is a GCRA bucket (the algorithm governor implements in memory): `tat` is the time up to
//! which the budget is spent; an attempt is allowed while `tat + interval` stays within
//! [`WINDOW`] of now, and then moves `tat` on by `interval = WINDOW / limit`. So a burst of `limit`
//! attempts passes, then one more per `interval`.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::PgPool;

/// The period the per-minute limits are counted over.
const WINDOW: Duration = Duration::from_secs(60);
/// How long an address's failure keeps it "suspect" for an account that is over its budget.
pub const SUSPECT_FOR: Duration = Duration::from_secs(15 * 60);
/// Expired rows are deleted at most this often per process (from a login, so an idle server does
/// no work and a busy one prunes once a minute).
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The answer of [`Gate::charge`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Charge {
    /// The attempt was counted against the address (and the account, when `account` is true) and
    /// may be checked.
    Allowed { account: bool },
    /// Refused without a check: the address is over its budget, or it is suspect and the account
    /// is over its budget. `suspect`: the address has failed recently (otherwise its budget is
    /// held by attempts still being checked, or by successes not yet refunded).
    Refused { retry_after: Duration, suspect: bool },
}

/// The key an address is counted under: IPv4 (also when mapped into IPv6) as it is, IPv6 by its
/// /64 prefix, the smallest block a single site gets (RFC 6177), so one attacker cannot take a
/// fresh budget from each of its 2^64 addresses.
pub fn address_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// The gate over one database, with the limits of the config.
pub struct Gate {
    db: PgPool,
    /// Time between two allowed attempts of one address, once its burst is spent.
    ip_interval: Duration,
    /// The same for one account name.
    account_interval: Duration,
    last_prune: Mutex<Option<Instant>>,
}

impl Gate {
    pub fn new(db: PgPool, failures_per_ip_per_minute: u32, failures_per_account_per_minute: u32) -> Gate {
        Gate {
            db,
            ip_interval: WINDOW / failures_per_ip_per_minute.max(1),
            account_interval: WINDOW / failures_per_account_per_minute.max(1),
            last_prune: Mutex::new(None),
        }
    }

    /// Count an attempt for `account` from `ip` before its password is checked, and say whether it
    /// may be checked. One statement: the address's row is charged (if within budget) under its
    /// row lock, and only then the account's, so concurrent attempts from any daemon are counted
    /// one after the other.
    pub async fn charge(&self, ip: IpAddr, account: &str) -> Result<Charge, sqlx::Error> {
        self.prune_if_due().await;
        // The charge commits without waiting for the WAL flush (`set_config(.., true)` is SET
        // LOCAL for the statement's own transaction; so does the refund): every other attempt
        // sees it at once all the same, and a charge lost in a database crash gives back at
        // most the attempts of the moment before it, while a synchronous one made every LOGIN
        // wait for two WAL flushes (issue #12).
        // Through the CTEs sqlx cannot infer nullability: the ip row always exists (its columns
        // are NOT NULL or coalesced), the account row may be missing (LEFT JOIN).
        let row = sqlx::query!(
            r#"
            WITH ip AS (
                INSERT INTO login_gate AS g (scope, key, tat, allowed, expires)
                VALUES ('ip', $1, now() + make_interval(secs => $3), true, now() + make_interval(secs => $3))
                ON CONFLICT (scope, key) DO UPDATE SET
                    allowed = greatest(g.tat, now()) + make_interval(secs => $3) <= now() + make_interval(secs => $5),
                    tat = CASE
                        WHEN greatest(g.tat, now()) + make_interval(secs => $3) <= now() + make_interval(secs => $5)
                        THEN greatest(g.tat, now()) + make_interval(secs => $3)
                        ELSE g.tat END,
                    expires = greatest(g.expires, greatest(g.tat, now()) + make_interval(secs => $3))
                RETURNING allowed, tat, coalesce(failed_at > now() - make_interval(secs => $6), false) AS suspect
            ),
            account AS (
                INSERT INTO login_gate AS g (scope, key, tat, allowed, expires)
                SELECT 'account', $2, now() + make_interval(secs => $4), true, now() + make_interval(secs => $4)
                FROM ip WHERE ip.allowed
                ON CONFLICT (scope, key) DO UPDATE SET
                    allowed = greatest(g.tat, now()) + make_interval(secs => $4) <= now() + make_interval(secs => $5),
                    tat = CASE
                        WHEN greatest(g.tat, now()) + make_interval(secs => $4) <= now() + make_interval(secs => $5)
                        THEN greatest(g.tat, now()) + make_interval(secs => $4)
                        ELSE g.tat END,
                    expires = greatest(g.expires, greatest(g.tat, now()) + make_interval(secs => $4))
                RETURNING allowed, tat
            )
            SELECT ip.allowed AS "ip_allowed!", ip.suspect AS "suspect!",
                   extract(epoch FROM ip.tat - now())::float8 AS "ip_ahead!",
                   account.allowed AS "account_allowed?",
                   extract(epoch FROM account.tat - now())::float8 AS "account_ahead?"
            FROM ip LEFT JOIN account ON true
            WHERE set_config('synchronous_commit', 'off', true) IS NOT NULL
            "#,
            address_key(ip),
            account,
            self.ip_interval.as_secs_f64(),
            self.account_interval.as_secs_f64(),
            WINDOW.as_secs_f64(),
            SUSPECT_FOR.as_secs_f64(),
        )
        .fetch_one(&self.db)
        .await?;
        let (ip_allowed, suspect, ip_ahead, account_allowed, account_ahead) = (
            row.ip_allowed,
            row.suspect,
            row.ip_ahead,
            row.account_allowed,
            row.account_ahead,
        );
        // Refused: the budget frees up when tat + interval comes back within the window.
        let wait = |ahead: f64, interval: Duration| {
            Duration::from_secs_f64((ahead + interval.as_secs_f64() - WINDOW.as_secs_f64()).max(1.0))
        };
        if !ip_allowed {
            return Ok(Charge::Refused {
                retry_after: wait(ip_ahead, self.ip_interval),
                suspect,
            });
        }
        let account_charged = account_allowed == Some(true);
        if !account_charged && suspect {
            // The account is over its budget and this address has failed recently. Its own charge
            // is given back: a refused attempt was never checked, as before the gate.
            self.refund(ip, None).await;
            return Ok(Charge::Refused {
                retry_after: wait(account_ahead.unwrap_or(0.0), self.account_interval),
                suspect,
            });
        }
        Ok(Charge::Allowed {
            account: account_charged,
        })
    }

    /// Give back an attempt's charge (a success, or an attempt that could not be checked). Best
    /// effort: a lost refund only makes the gate stricter for a while.
    ///
    /// The address's row is locked before the account's, as [`Gate::charge`] locks them: one
    /// UPDATE of both rows locked them in the order its scan met them, so a refund and a
    /// charge of the same address and account could each hold the row the other waited for
    /// (PostgreSQL's deadlock check then failed one of them, and a charge that fails is a login
    /// answered "try again later"). `ip` runs first: the account's UPDATE tests it in a
    /// one-time filter, evaluated before its scan.
    pub async fn refund(&self, ip: IpAddr, account: Option<&str>) {
        let result = sqlx::query!(
            "WITH ip AS (
                 UPDATE login_gate SET tat = tat - make_interval(secs => $3::float8)
                 WHERE scope = 'ip' AND key = $1 AND set_config('synchronous_commit', 'off', true) IS NOT NULL
                 RETURNING 1)
             UPDATE login_gate SET tat = tat - make_interval(secs => $4::float8)
             WHERE scope = 'account' AND key = $2 AND (SELECT count(*) FROM ip) >= 0",
            address_key(ip),
            account,
            self.ip_interval.as_secs_f64(),
            self.account_interval.as_secs_f64(),
        )
        .execute(&self.db)
        .await;
        if let Err(e) = result {
            tracing::warn!(%ip, "login gate: refund failed: {e}");
        }
    }

    /// Mark the address suspect after a failed check (its charge stays spent).
    pub async fn failed(&self, ip: IpAddr) {
        let result = sqlx::query!(
            "UPDATE login_gate SET failed_at = now(),
                 expires = greatest(expires, now() + make_interval(secs => $2))
             WHERE scope = 'ip' AND key = $1",
            address_key(ip),
            SUSPECT_FOR.as_secs_f64(),
        )
        .execute(&self.db)
        .await;
        if let Err(e) = result {
            tracing::warn!(%ip, "login gate: recording a failure failed: {e}");
        }
    }

    /// Delete the rows that no longer matter (budget restored, no longer suspect), through the
    /// `expires` index. Returns how many went.
    ///
    /// Rows locked by a login in progress are skipped (SKIP LOCKED; the next prune takes them):
    /// the prune never waits for a row lock, so it cannot close a lock cycle with a charge, which
    /// locks an address's row and then its account's.
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        let done = sqlx::query!(
            "DELETE FROM login_gate WHERE ctid = ANY(ARRAY(
                 SELECT ctid FROM login_gate WHERE expires < now() FOR UPDATE SKIP LOCKED))"
        )
        .execute(&self.db)
        .await?;
        Ok(done.rows_affected())
    }

    async fn prune_if_due(&self) {
        {
            let mut last = self.last_prune.lock().expect("prune clock lock");
            if last.is_some_and(|t| t.elapsed() < PRUNE_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        match self.prune().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(rows = n, "login gate: pruned expired rows"),
            Err(e) => tracing::warn!("login gate: pruning failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_keyed_v4_whole_and_v6_by_64() {
        assert_eq!(address_key("192.0.2.1".parse().unwrap()), "192.0.2.1");
        assert_eq!(address_key("::ffff:192.0.2.1".parse().unwrap()), "192.0.2.1");
        assert_eq!(
            address_key("2001:db8:1:2:aaaa::1".parse().unwrap()),
            address_key("2001:db8:1:2:bbbb::9".parse().unwrap())
        );
        assert_eq!(address_key("2001:db8:1:2::1".parse().unwrap()), "2001:db8:1:2::/64");
        assert_ne!(
            address_key("2001:db8:1:2::1".parse().unwrap()),
            address_key("2001:db8:1:3::1".parse().unwrap())
        );
    }
}
