//! The change clock: one counter per mailbox (by id, hashed into [`SLOTS`]) in a small file
//! every process of the install maps (`DATA/mailbox-clock`). Each committed change to a
//! mailbox's messages ticks its counter before the change is answered to anyone, so a session
//! that read the mailbox when the counter stood at `n` and finds it at `n` still knows that no
//! change answered since has touched it, without asking PostgreSQL (issue #12: the sync round
//! trip before each command's answer). Changes committed but not yet answered are concurrent
//! with the command and reported by the next one (RFC 3501 §5.2). Two mailboxes sharing a slot
//! only cost each other a sync.
//!
//! A writer that could not map the file (or died between its commit and its tick) does not
//! tick: readers trust the clock only for [`TRUST_FOR`] after they last read the mailbox, so
//! such a change is seen within that time at the latest.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counters in the file (8 bytes each: 32 KiB).
pub const SLOTS: usize = 4096;

/// How long a view verified against the database may be trusted on the clock alone.
pub const TRUST_FOR: Duration = Duration::from_secs(2);

/// The name of the clock's file in the data directory.
pub const FILE_NAME: &str = "mailbox-clock";

#[derive(Debug)]
pub struct ChangeClock {
    map: Option<memmap2::MmapMut>,
}

impl ChangeClock {
    /// The clock in `path`, made if missing. Without it (`None` map: a read-only data directory,
    /// a file of another owner) nothing ticks and nothing is trusted: every command syncs.
    pub fn open(path: &Path) -> ChangeClock {
        let map = (|| -> std::io::Result<memmap2::MmapMut> {
            use std::os::unix::fs::OpenOptionsExt;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)?;
            let len = (SLOTS * 8) as u64;
            if file.metadata()?.len() < len {
                file.set_len(len)?;
            }
            // SAFETY: the file is this install's own, only ever accessed as atomic counters
            // (below) by tinydc processes; its length was set to SLOTS * 8 above and is never
            // shrunk.
            #[allow(unsafe_code)] // mmap(2) of the shared counters: see SAFETY above.
            let map = unsafe { memmap2::MmapOptions::new().len(SLOTS * 8).map_mut(&file) };
            map
        })();
        match map {
            Ok(map) => ChangeClock { map: Some(map) },
            Err(e) => {
                tracing::warn!(path = %path.display(), "mailbox change clock unavailable, every command syncs: {e}");
                ChangeClock { map: None }
            }
        }
    }

    fn slot(&self, mailbox_id: i64) -> Option<&AtomicU64> {
        let map = self.map.as_ref()?;
        let i = (mailbox_id as u64 % SLOTS as u64) as usize;
        // SAFETY: the mapping is SLOTS * 8 bytes and page-aligned, so slot i is in bounds and
        // 8-byte aligned; AtomicU64 has the layout of u64, and every process touches the
        // counters only through atomics.
        #[allow(unsafe_code)] // A counter of the shared mapping: see SAFETY above.
        let slot = unsafe { &*(map.as_ptr().add(i * 8) as *const AtomicU64) };
        Some(slot)
    }

    /// The counter of `mailbox_id`'s slot; `None` without a clock.
    pub fn read(&self, mailbox_id: i64) -> Option<u64> {
        self.slot(mailbox_id).map(|s| s.load(Ordering::SeqCst))
    }

    /// After a committed change to `mailbox_id`, before it is answered.
    pub fn tick(&self, mailbox_id: i64) {
        if let Some(s) = self.slot(mailbox_id) {
            s.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_processes_mapping_the_file_see_each_others_ticks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let (a, b) = (ChangeClock::open(&path), ChangeClock::open(&path));
        let before = b.read(7).unwrap();
        a.tick(7);
        assert_eq!(b.read(7), Some(before + 1));
        // Another mailbox's slot did not move; one sharing the slot did (a sync, nothing worse).
        assert_eq!(b.read(8), Some(0));
        assert_eq!(b.read(7 + SLOTS as i64), Some(before + 1));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), (SLOTS * 8) as u64);
    }

    #[test]
    fn without_the_file_nothing_ticks_and_nothing_is_read() {
        let clock = ChangeClock::open(Path::new("/nonexistent/dir/mailbox-clock"));
        clock.tick(1);
        assert_eq!(clock.read(1), None);
    }
}
