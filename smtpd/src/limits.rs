//! Rate limits with governor: new connections per IP, messages per authenticated user.
//! (Failed logins are throttled by shared::auth; a session closes after a few failures.)

use std::net::IpAddr;
use std::num::NonZeroU32;

use std::sync::Arc;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use shared::config::SmtpConfig;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes of message data all sessions together may hold in memory (at least one whole message).
pub const MEMORY_BUDGET: u64 = 256 << 20;
const KIB: u64 = 1024;

/// Memory held by one message being received, grown as its bytes arrive.
#[derive(Debug, Default)]
pub struct Held {
    permit: Option<OwnedSemaphorePermit>,
    kib: u64,
}

/// A budget for message bytes held in memory by all sessions: a session that would pass it
/// waits (and stops reading, so TCP pushes back) until others finish.
#[derive(Debug, Clone)]
pub struct Memory {
    semaphore: Arc<Semaphore>,
}

impl Memory {
    pub fn new(max_message_size: u64) -> Memory {
        let kib = MEMORY_BUDGET.max(max_message_size + KIB) / KIB;
        Memory {
            semaphore: Arc::new(Semaphore::new(kib as usize)),
        }
    }

    /// Make `held` cover `bytes`, waiting for the budget when needed.
    pub async fn grow(&self, held: &mut Held, bytes: usize) {
        let want = (bytes as u64).div_ceil(KIB);
        if want <= held.kib {
            return;
        }
        let more = (want - held.kib) as u32;
        let Ok(permit) = self.semaphore.clone().acquire_many_owned(more).await else {
            return;
        };
        match held.permit.as_mut() {
            Some(p) => p.merge(permit),
            None => held.permit = Some(permit),
        }
        held.kib = want;
    }
}

/// Work on a whole message (parsing up to `max_message_size`, hashing the body for DKIM, RSA
/// signing) runs on tokio's blocking pool, never on the async worker threads, so one large
/// message does not stall the other sessions. At most one job per CPU runs at once; the others
/// wait here asynchronously (their memory is already bounded by [`Memory`]).
#[derive(Debug, Clone)]
pub struct Cpu {
    semaphore: Arc<Semaphore>,
}

/// A job on the pool panicked (a bug); the caller answers a temporary failure.
#[derive(Debug, thiserror::Error)]
#[error("message processing failed: {0}")]
pub struct CpuError(String);

impl Cpu {
    pub fn new() -> Cpu {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        Cpu {
            semaphore: Arc::new(Semaphore::new(n)),
        }
    }

    /// Wait for a free slot; the job holding it runs while it lives.
    pub async fn slot(&self) -> Result<OwnedSemaphorePermit, CpuError> {
        self.semaphore
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| CpuError(e.to_string()))
    }

    /// Run `job` on the blocking pool once a slot is free.
    pub async fn run<T, F>(&self, job: F) -> Result<T, CpuError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let slot = self.slot().await?;
        // The slot goes with the job, so it is held until the job ends even if the session
        // waiting for it is dropped.
        tokio::task::spawn_blocking(move || {
            let result = job();
            drop(slot);
            result
        })
        .await
        .map_err(|e| CpuError(e.to_string()))
    }
}

impl Default for Cpu {
    fn default() -> Cpu {
        Cpu::new()
    }
}

pub struct Limits {
    connections: DefaultKeyedRateLimiter<IpAddr>,
    messages: DefaultKeyedRateLimiter<i64>,
}

fn nonzero(n: u64) -> NonZeroU32 {
    NonZeroU32::new(n.clamp(1, u32::MAX as u64) as u32).expect("clamped to at least 1")
}

impl Limits {
    pub fn new(config: &SmtpConfig) -> Limits {
        Limits {
            connections: RateLimiter::keyed(Quota::per_minute(nonzero(config.connections_per_ip_per_minute))),
            messages: RateLimiter::keyed(Quota::per_hour(nonzero(config.messages_per_user_per_hour))),
        }
    }

    /// Whether `ip` may open another connection now.
    pub fn connection_allowed(&self, ip: IpAddr) -> bool {
        let ok = self.connections.check_key(&ip).is_ok();
        if self.connections.len() > 100_000 {
            self.connections.retain_recent();
        }
        ok
    }

    /// Whether the user may start another message now.
    pub fn message_allowed(&self, user_id: i64) -> bool {
        self.messages.check_key(&user_id).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A job on the pool does not hold up the (single-threaded) runtime: while it is blocked,
    /// other tasks run; and no more jobs than slots run at once.
    #[tokio::test]
    async fn cpu_jobs_leave_the_runtime_free_and_are_bounded() {
        let cpu = Cpu {
            semaphore: Arc::new(Semaphore::new(1)),
        };
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let busy = tokio::spawn({
            let cpu = cpu.clone();
            async move {
                cpu.run(move || wait.recv_timeout(Duration::from_secs(10)).is_ok())
                    .await
            }
        });
        // Let the job start. Run inline, it would block this single runtime thread until its
        // 10 s wait ran out, and the `busy` result below would be false.
        for _ in 0..400 {
            if cpu.semaphore.available_permits() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(cpu.semaphore.available_permits(), 0, "the job did not start");
        // A second job waits for the slot.
        let second = tokio::time::timeout(Duration::from_millis(100), cpu.run(|| ())).await;
        assert!(second.is_err(), "a second job ran beside the first");
        release.send(()).unwrap();
        assert!(busy.await.unwrap().unwrap(), "the job was released by this task");
        tokio::time::timeout(Duration::from_secs(5), cpu.run(|| ()))
            .await
            .expect("slot freed")
            .unwrap();
    }

    #[tokio::test]
    async fn memory_budget_makes_sessions_wait() {
        let memory = Memory::new(0);
        let mut first = Held::default();
        memory.grow(&mut first, (MEMORY_BUDGET - 1024) as usize).await;
        memory.grow(&mut first, (MEMORY_BUDGET - 1024) as usize).await; // already covered
        let mut second = Held::default();
        memory.grow(&mut second, 1024).await;
        let mut third = Held::default();
        let waiting = tokio::time::timeout(Duration::from_millis(100), memory.grow(&mut third, 1)).await;
        assert!(waiting.is_err(), "over budget must wait");
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), memory.grow(&mut third, 1))
            .await
            .expect("budget freed");
    }
}
