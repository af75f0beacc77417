//! One memory budget for the literals (APPENDed messages) all connections hold, like smtpd's
//! (smtpd/src/limits.rs): 500 connections each sending a 50 MiB literal must not make imapd
//! hold 25 GB. A literal takes its size from the budget when it is announced, before any of its
//! bytes are read, and gives it back when its command has run.
//!
//! When the budget is spent, a synchronizing literal is refused before the `+` continuation
//! (RFC 3501 §7.5) with `NO [UNAVAILABLE]` (RFC 5530: a temporary shortage; the client may try
//! again), and a non-synchronizing one (LITERAL+, RFC 7888 §4) is read and discarded, never
//! stored, and its command refused the same way.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

const KIB: u64 = 1024;

/// How long a literal may wait for others to give memory back before it is refused.
const WAIT: Duration = Duration::from_secs(2);

/// The shared budget, counted in KiB.
#[derive(Debug, Clone)]
pub struct LiteralBudget {
    semaphore: Arc<Semaphore>,
}

impl LiteralBudget {
    /// A budget of `bytes`, never less than one largest literal.
    pub fn new(bytes: u64, max_literal: u64) -> LiteralBudget {
        let kib = bytes.max(max_literal + KIB).div_ceil(KIB);
        let kib = kib.min(Semaphore::MAX_PERMITS as u64).min(u32::MAX as u64) as usize;
        LiteralBudget {
            semaphore: Arc::new(Semaphore::new(kib)),
        }
    }

    /// Take `bytes` from the budget, waiting a little for others to finish; `None` when it
    /// stays spent.
    pub async fn take(&self, bytes: u64) -> Option<OwnedSemaphorePermit> {
        let kib = bytes.div_ceil(KIB).max(1);
        let kib = u32::try_from(kib).ok()?;
        match self.semaphore.clone().try_acquire_many_owned(kib) {
            Ok(permit) => Some(permit),
            Err(_) => tokio::time::timeout(WAIT, self.semaphore.clone().acquire_many_owned(kib))
                .await
                .ok()?
                .ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_spent_budget_refuses_until_given_back() {
        let budget = LiteralBudget::new(4 * KIB, 0);
        let first = budget.take(3 * KIB).await.expect("fits");
        assert!(budget.take(2 * KIB).await.is_none(), "over budget is refused");
        drop(first);
        assert!(budget.take(4 * KIB).await.is_some());
    }
}
