//! A process-wide cap on argon2 work in flight. Each check holds 19 MiB (argon2id's default
//! memory cost) for its duration, so the memory of a daemon under a login flood is bounded by
//! `permits` checks, not by the number of connections. Logins beyond a bounded waiting line are
//! refused at once instead of queueing without bound.
//!
//! The checks run on `permits` threads of their own, not on tokio's blocking pool: the allocator
//! keeps a freed 19 MiB block in the arena of the thread that used it, so checks spread over the
//! pool's many threads kept ~460 MiB resident after one flood even with two at a time. With
//! dedicated threads each keeps (and reuses) at most one.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

type Job = Box<dyn FnOnce() + Send>;

pub struct WorkCap {
    permits: Arc<Semaphore>,
    /// To the checking threads; they end when this is dropped.
    jobs: Mutex<mpsc::Sender<Job>>,
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
        let permits = permits.max(1);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..permits {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new().name(format!("argon2-{n}")).spawn(move || {
                loop {
                    // The lock is held only while taking a job, not while running it.
                    let job = queue.lock().map_err(|_| ()).and_then(|q| q.recv().map_err(|_| ()));
                    match job {
                        Ok(job) => job(),
                        Err(()) => return,
                    }
                }
            });
            if let Err(e) = spawned {
                tracing::error!("cannot start a password checking thread: {e}");
            }
        }
        WorkCap {
            permits: Arc::new(Semaphore::new(permits)),
            jobs: Mutex::new(jobs),
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
        let (answer, answered) = oneshot::channel();
        // The permit moves into the job: if the login is cancelled meanwhile, the memory stays
        // counted until the check really ends.
        let job: Job = Box::new(move || {
            let _ = answer.send(run_counted(&stats, permit, check));
        });
        let sent = self.jobs.lock().map(|jobs| jobs.send(job).is_ok()).unwrap_or(false);
        // No checking thread (none could be started): nothing can be checked.
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

fn run_counted<F: FnOnce() -> bool>(stats: &Stats, permit: OwnedSemaphorePermit, check: F) -> bool {
    let now = stats.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
    stats.high_water.fetch_max(now, Ordering::AcqRel);
    stats.verifications.fetch_add(1, Ordering::AcqRel);
    let result = check();
    stats.in_flight.fetch_sub(1, Ordering::AcqRel);
    drop(permit);
    result
}
