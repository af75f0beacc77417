//! A process-wide cap on argon2 work in flight. Each check holds 19 MiB (argon2id's default
//! memory cost) for its duration, so the memory of a daemon under a login flood is bounded by
//! `permits` checks, not by the number of connections. Logins beyond a bounded waiting line are
//! refused at once instead of queueing without bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct WorkCap {
    permits: Arc<Semaphore>,
    max_waiting: usize,
    waiting: AtomicUsize,
    stats: Arc<Stats>,
}

/// Counters a test (or an operator's debugging) can read.
#[derive(Default)]
struct Stats {
    in_flight: AtomicUsize,
    high_water: AtomicUsize,
    verifications: AtomicU64,
}

/// Leaves the waiting line when dropped, also when the waiting login is cancelled (its client
/// went away).
struct InLine<'a>(&'a AtomicUsize);

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl WorkCap {
    pub fn new(permits: usize, max_waiting: usize) -> WorkCap {
        WorkCap {
            permits: Arc::new(Semaphore::new(permits.max(1))),
            max_waiting,
            waiting: AtomicUsize::new(0),
            stats: Arc::default(),
        }
    }

    /// Run `check` on the blocking pool once a permit is free. `None`: the waiting line is full
    /// (the caller refuses the login as busy); nothing was run.
    pub async fn run<F>(&self, check: F) -> Option<bool>
    where
        F: FnOnce() -> bool + Send + 'static,
    {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    return None;
                }
                let _in_line = InLine(&self.waiting);
                self.permits
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed")
            }
        };
        let stats = self.stats.clone();
        // The permit moves into the blocking task: if the login is cancelled meanwhile, the
        // memory stays counted until the check really ends.
        let checked = tokio::task::spawn_blocking(move || run_counted(&stats, permit, check)).await;
        Some(checked.unwrap_or(false))
    }

    /// Password checks run by this process so far.
    pub fn verifications(&self) -> u64 {
        self.stats.verifications.load(Ordering::Acquire)
    }

    /// The most checks that ever ran at once in this process.
    pub fn high_water(&self) -> usize {
        self.stats.high_water.load(Ordering::Acquire)
    }
}

fn run_counted<F: FnOnce() -> bool>(stats: &Stats, permit: OwnedSemaphorePermit, check: F) -> bool {
    let now = stats.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
    stats.high_water.fetch_max(now, Ordering::AcqRel);
    stats.verifications.fetch_add(1, Ordering::AcqRel);
    let result = check();
    stats.in_flight.fetch_sub(1, Ordering::AcqRel);
    drop(permit);
    result
}
