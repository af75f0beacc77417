//! A stage of an upload's pipeline: one blocking thread that consumes buffers in order, fed
//! through a bounded channel, so the request task keeps reading the body while the file is
//! written (fs/upload.rs) and hashed (checksum.rs `StreamHash`) on other threads. At most
//! [`DEPTH`] buffers wait per stage: memory stays bounded, and a slow disk slows the client
//! down (the channel is full, the body is not read) instead of piling up.

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Buffers queued per stage before the sender waits.
pub const DEPTH: usize = 4;

/// One consumer thread with its state `S`.
#[derive(Debug)]
pub struct Stage<S> {
    tx: mpsc::Sender<Bytes>,
    done: JoinHandle<(S, std::io::Result<()>)>,
}

impl<S: Send + 'static> Stage<S> {
    /// Start a thread that calls `step` on `state` with each buffer pushed, in order; it stops
    /// at the first error (kept for [`Stage::finish`]).
    pub fn spawn(state: S, mut step: impl FnMut(&mut S, &[u8]) -> std::io::Result<()> + Send + 'static) -> Stage<S> {
        let (tx, mut rx) = mpsc::channel::<Bytes>(DEPTH);
        let done = tokio::task::spawn_blocking(move || {
            let mut state = state;
            while let Some(buf) = rx.blocking_recv() {
                if let Err(e) = step(&mut state, &buf) {
                    return (state, Err(e));
                }
            }
            (state, Ok(()))
        });
        Stage { tx, done }
    }

    /// Queue `buf` (waits while [`DEPTH`] buffers are queued). `false` when the stage has
    /// stopped on an error, which [`Stage::finish`] returns.
    pub async fn push(&self, buf: Bytes) -> bool {
        self.tx.send(buf).await.is_ok()
    }

    /// Wait for everything queued to be consumed; the state, or the stage's first error.
    /// Dropping a stage instead lets its thread finish what is queued and end by itself.
    pub async fn finish(self) -> std::io::Result<S> {
        drop(self.tx);
        let (state, result) = self.done.await.map_err(std::io::Error::other)?;
        result.map(|()| state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stage_consumes_in_order_and_reports_its_error() {
        let stage = Stage::spawn(Vec::new(), |all: &mut Vec<u8>, buf| {
            all.extend_from_slice(buf);
            Ok(())
        });
        for part in [&b"ab"[..], b"cd", b"e"] {
            assert!(stage.push(Bytes::copy_from_slice(part)).await);
        }
        assert_eq!(stage.finish().await.unwrap(), b"abcde");

        let failing = Stage::spawn(0usize, |seen: &mut usize, _buf| {
            *seen += 1;
            Err(std::io::Error::other("disk on fire"))
        });
        // The first push is taken; later ones fail once the thread has stopped.
        let mut refused = false;
        for _ in 0..(DEPTH + 8) {
            if !failing.push(Bytes::from_static(b"x")).await {
                refused = true;
                break;
            }
        }
        assert!(refused);
        assert_eq!(failing.finish().await.unwrap_err().to_string(), "disk on fire");
    }
}
