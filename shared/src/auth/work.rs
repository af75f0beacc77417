//! A process-wide cap on argon2 work in flight. Each check holds 19 MiB (argon2id's default
//! memory cost) for its duration, so the memory of a daemon under a login flood is bounded by
//! `permits` checks, not by the number of connections. Logins beyond a bounded waiting line are
//! refused at once instead of queueing without bound.
//!
//! The checks run on `permits` threads of their own, not on tokio's blocking pool: the allocator
//! keeps a freed 19 MiB block in the arena of the thread that used it, so checks spread over the
//! pool's many threads kept ~460 MiB resident after one flood even with two at a time. With
//! dedicated threads each keeps (and reuses) at most one, and gives it back once it has had no
//! work for [`RELEASE_AFTER_IDLE`] (issue #12: a daemon kept 2 × 19 MiB forever after a few
//! logins).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

type Job = Box<dyn FnOnce() + Send>;

/// How long a checking thread keeps its memory with nothing to check. A burst of logins (a mail
/// client opening its five connections, a flood) reuses it; a quiet daemon does not hold it.
pub const RELEASE_AFTER_IDLE: Duration = Duration::from_secs(5);

pub struct WorkCap {
    permits: Arc<Semaphore>,
    /// To the checking threads; they end when the cap is dropped.
    queue: Arc<Queue>,
    max_waiting: usize,
    waiting: AtomicUsize,
    stats: Arc<Stats>,
}

/// Jobs for the checking threads. A condition variable rather than a shared channel receiver:
/// every idle thread waits (and times out to release its memory) on its own, none waits behind
/// another's lock.
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Job>,
    closed: bool,
}

impl Queue {
    fn push(&self, job: Job) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.closed {
            return false;
        }
        state.jobs.push_back(job);
        drop(state);
        self.ready.notify_one();
        true
    }

    fn close(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).closed = true;
        self.ready.notify_all();
    }

    /// A checking thread: runs jobs until the queue is closed; `release` runs on this thread
    /// after `idle` without work (once per quiet spell).
    fn serve(&self, idle: Duration, release: fn()) {
        let mut holds_memory = false;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(job) = state.jobs.pop_front() {
                drop(state);
                job();
                holds_memory = true;
                state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            if state.closed {
                return;
            }
            if holds_memory {
                let (next, waited) = self
                    .ready
                    .wait_timeout(state, idle)
                    .unwrap_or_else(PoisonError::into_inner);
                state = next;
                if waited.timed_out() && state.jobs.is_empty() {
                    drop(state);
                    release();
                    holds_memory = false;
                    state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                }
            } else {
                state = self.ready.wait(state).unwrap_or_else(PoisonError::into_inner);
            }
        }
    }
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
    /// Checks on `permits` threads, at most `max_waiting` logins waiting for one; each thread
    /// calls `release` after [`RELEASE_AFTER_IDLE`] without work, to give back what its checks
    /// kept.
    pub fn new(permits: usize, max_waiting: usize, release: fn()) -> WorkCap {
        WorkCap::with_idle_release(permits, max_waiting, RELEASE_AFTER_IDLE, release)
    }

    /// As [`WorkCap::new`], releasing after `idle` (tests use a short one).
    pub fn with_idle_release(permits: usize, max_waiting: usize, idle: Duration, release: fn()) -> WorkCap {
        let permits = permits.max(1);
        let queue = Arc::new(Queue::default());
        let mut started = 0;
        for n in 0..permits {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || queue.serve(idle, release));
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::error!("cannot start a password checking thread: {e}"),
            }
        }
        if started == 0 {
            // Nothing would ever take a job: refuse them at once instead of waiting forever.
            queue.close();
        }
        WorkCap {
            permits: Arc::new(Semaphore::new(permits)),
            queue,
            max_waiting,
            waiting: AtomicUsize::new(0),
            stats: Arc::default(),
        }
    }

    /// Run `check` on a checking thread once a permit is free. `None`: the waiting line is full
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
        let (answer, answered) = oneshot::channel();
        // The permit moves into the job: if the login is cancelled meanwhile, the memory stays
        // counted until the check really ends.
        let job: Job = Box::new(move || {
            let _ = answer.send(run_counted(&stats, permit, check));
        });
        let sent = self.queue.push(job);
        // No checking thread (none could be started): nothing is checked.
        Some(sent && answered.await.unwrap_or(false))
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

impl Drop for WorkCap {
    fn drop(&mut self) {
        self.queue.close();
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

#[cfg(test)]
mod tests {
    use super::*;

    static RELEASED: AtomicUsize = AtomicUsize::new(0);

    fn count_release() {
        RELEASED.fetch_add(1, Ordering::AcqRel);
    }

    #[tokio::test]
    async fn an_idle_checking_thread_releases_once_per_quiet_spell() {
        let idle = Duration::from_millis(200);
        let cap = WorkCap::with_idle_release(1, 4, idle, count_release);
        assert_eq!(cap.run(|| true).await, Some(true));
        assert_eq!(cap.run(|| false).await, Some(false));
        // Busy: nothing released yet.
        assert_eq!(RELEASED.load(Ordering::Acquire), 0);
        tokio::time::sleep(idle * 4).await;
        // One quiet spell, one release (not one per timeout).
        assert_eq!(RELEASED.load(Ordering::Acquire), 1);
        assert_eq!(cap.run(|| true).await, Some(true));
        tokio::time::sleep(idle * 4).await;
        assert_eq!(RELEASED.load(Ordering::Acquire), 2);
        assert_eq!(cap.verifications(), 3);
    }
}
