//! Work that many writers of one process hand over after their answers and that one task does in
//! batches, a moment later (issue #12: one statement or one fsync for many writes instead of one
//! each). The owners of such work keep what the work is; this module keeps how it is gathered:
//! `BlobStore::settle_later` (fsyncs of committed small bodies) and `quota::FoldQueue` (usage
//! deltas folded into the users' rows).

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

/// Items waiting (each once), and whether a task is running to take them.
#[derive(Debug)]
pub struct Gather<T: Ord> {
    state: Mutex<(BTreeSet<T>, bool)>,
    /// How long items gather before each batch.
    wait: Duration,
    /// Items per batch at most.
    batch: usize,
    /// Items waiting at most: beyond, [`Gather::add`] hands them back (the caller does the work
    /// itself, so writers never outrun it by more than this and memory stays bounded).
    max_waiting: usize,
}

/// What [`Gather::add`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct Added<T> {
    /// No task was running: the caller starts one that calls [`Gather::run`].
    pub start: bool,
    /// The items refused because `max_waiting` were waiting already.
    pub refused: Vec<T>,
}

impl<T: Ord> Gather<T> {
    pub const fn new(wait: Duration, batch: usize, max_waiting: usize) -> Gather<T> {
        Gather {
            state: Mutex::new((BTreeSet::new(), false)),
            wait,
            batch,
            max_waiting,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (BTreeSet<T>, bool)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue `items` for the task.
    pub fn add(&self, items: impl IntoIterator<Item = T>) -> Added<T> {
        let mut state = self.lock();
        let mut refused = Vec::new();
        for item in items {
            if state.0.len() >= self.max_waiting && !state.0.contains(&item) {
                refused.push(item);
            } else {
                state.0.insert(item);
            }
        }
        let start = !state.1 && !state.0.is_empty();
        state.1 |= start;
        Added { start, refused }
    }

    /// The task's loop: after each wait, `work` on up to `batch` waiting items; returns once a
    /// wait ends with none waiting.
    pub async fn run<F, Fut>(&self, mut work: F)
    where
        F: FnMut(Vec<T>) -> Fut,
        Fut: Future<Output = ()>,
    {
        loop {
            tokio::time::sleep(self.wait).await;
            let batch: Vec<T> = {
                let mut state = self.lock();
                if state.0.is_empty() {
                    // Under the lock: the next `add` finds no task running and starts one.
                    state.1 = false;
                    return;
                }
                (0..self.batch).map_while(|_| state.0.pop_first()).collect()
            };
            work(batch).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gathers_batches_and_refuses_beyond_the_bound() {
        let gather = std::sync::Arc::new(Gather::new(Duration::from_millis(10), 2, 3));
        assert!(gather.add([5, 1]).start);
        // Already waiting or a task running: no second task, a repeated item counted once.
        let added = gather.add([1, 3, 4]);
        assert!(!added.start);
        assert_eq!(added.refused, [4]);
        let done = std::sync::Arc::new(Mutex::new(Vec::new()));
        let (g, d) = (gather.clone(), done.clone());
        let task = tokio::spawn(async move {
            g.run(|batch| {
                d.lock().unwrap().push(batch);
                std::future::ready(())
            })
            .await
        });
        task.await.unwrap();
        assert_eq!(*done.lock().unwrap(), [vec![1, 3], vec![5]]);
        // The task ended: the next item starts another.
        assert!(gather.add([7]).start);
    }
}
