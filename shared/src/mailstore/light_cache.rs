//! What a header FETCH needs of a message that never changes once stored (its date, size, body
//! file and header block), kept in memory by (mailbox id, UID) for a while: an APPEND's own
//! message and the rows of FETCH's small reads, so a FETCH of a view the change clock says is current
//! is answered without a round trip to PostgreSQL (issue #12). Mailbox ids are never reused and
//! a UID names one message forever (RFC 3501 §2.3.1.1), so an entry is never wrong; the oldest
//! go first once the headers pass [`BUDGET`] bytes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use super::StoredMessage;
use crate::blobs::BlobId;

/// Bytes kept per process: the headers and [`ENTRY_OVERHEAD`] per row. Only imapd fills it
/// (smtpd's deliveries are not kept); 8 MiB hold the header blocks of some 2,500 real messages
/// (about 3 KiB each with their Received and DKIM lines), some 13,000 of the bench's (370 bytes).
pub const BUDGET: usize = 8 << 20;

/// What a kept row costs besides its header, counted against [`BUDGET`]: the map's slot (key,
/// date, size, body file name and header handles: 80 bytes, at the map's load ~120), the queue's
/// (16, ~21), the body file name's own allocation (64 hex digits, 80 with malloc's header), the
/// header's allocation header and rounding (~24).
const ENTRY_OVERHEAD: usize = 256;

struct Light {
    internal_date: DateTime<Utc>,
    size: u64,
    blob: BlobId,
    header: Arc<[u8]>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<(i64, u32), Light>,
    order: VecDeque<(i64, u32)>,
    bytes: usize,
}

#[derive(Default)]
pub struct LightCache {
    inner: Mutex<Inner>,
}

impl LightCache {
    /// Keep the rows of a read from the database (a header copied only if its row is not kept
    /// yet), under one lock for the whole read.
    pub fn insert_all(&self, mailbox_id: i64, rows: &[StoredMessage]) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for m in rows {
            inner.insert_with(mailbox_id, m.uid, m.header.len(), || Light {
                internal_date: m.internal_date,
                size: m.size,
                blob: m.blob.clone(),
                header: m.header.as_slice().into(),
            });
        }
    }

    /// Keep the row of a message this process just stored.
    pub fn insert_parts(
        &self,
        mailbox_id: i64,
        uid: u32,
        internal_date: DateTime<Utc>,
        size: u64,
        blob: &BlobId,
        header: Arc<[u8]>,
    ) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.insert_with(mailbox_id, uid, header.len(), || Light {
            internal_date,
            size,
            blob: blob.clone(),
            header,
        });
    }

    /// The rows of `uids` (ascending) in `mailbox_id`, when every one of them is kept; as
    /// `MailStore::fetch_light` gives them (no flags: the session's view has them).
    pub fn get_all(&self, mailbox_id: i64, uids: &[u32]) -> Option<Vec<StoredMessage>> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        uids.iter()
            .map(|&uid| {
                inner.entries.get(&(mailbox_id, uid)).map(|l| {
                    StoredMessage::light(
                        i64::from(uid),
                        0,
                        Vec::new(),
                        l.internal_date,
                        l.size as i64,
                        l.blob.0.clone(),
                        l.header.to_vec(),
                    )
                })
            })
            .collect()
    }
}

impl Inner {
    /// Nothing when the row is kept already (or its header alone is past a 16th of the
    /// budget), else the oldest out until the new one fits.
    fn insert_with(&mut self, mailbox_id: i64, uid: u32, header_len: usize, light: impl FnOnce() -> Light) {
        let cost = header_len + ENTRY_OVERHEAD;
        if cost > BUDGET / 16 || self.entries.contains_key(&(mailbox_id, uid)) {
            return;
        }
        while self.bytes + cost > BUDGET {
            let Some(oldest) = self.order.pop_front() else { break };
            if let Some(gone) = self.entries.remove(&oldest) {
                self.bytes -= gone.header.len() + ENTRY_OVERHEAD;
            }
        }
        self.entries.insert((mailbox_id, uid), light());
        self.order.push_back((mailbox_id, uid));
        self.bytes += cost;
    }
}

impl std::fmt::Debug for LightCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("LightCache")
            .field("entries", &inner.entries.len())
            .field("bytes", &inner.bytes)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(n: usize) -> Vec<u8> {
        vec![b'h'; n]
    }

    #[test]
    fn rows_come_back_only_all_together_and_the_oldest_go_past_the_budget() {
        let cache = LightCache::default();
        let blob = BlobId("0".repeat(64));
        for uid in 1..=3 {
            cache.insert_parts(5, uid, Utc::now(), 100, &blob, header(10).into());
        }
        let rows = cache.get_all(5, &[1, 2, 3]).unwrap();
        assert_eq!(rows.iter().map(|r| r.uid).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(rows[0].header, header(10));
        assert!(cache.get_all(5, &[1, 4]).is_none(), "one missing: none");
        assert!(
            cache.get_all(6, &[1]).is_none(),
            "another mailbox's UID 1 is another message"
        );
        // Past the budget the first ones go.
        let big = BUDGET / 32;
        for uid in 10..(10 + 40) {
            cache.insert_parts(5, uid, Utc::now(), 100, &blob, header(big).into());
        }
        assert!(cache.get_all(5, &[1]).is_none());
        assert!(cache.get_all(5, &[49]).is_some());
        let bytes = cache.inner.lock().unwrap().bytes;
        assert!(bytes <= BUDGET, "{bytes}");
    }

    #[test]
    fn a_read_is_kept_whole_and_a_kept_row_is_not_counted_twice() {
        let cache = LightCache::default();
        let row = |uid: i64| StoredMessage::light(uid, 0, Vec::new(), Utc::now(), 100, "0".repeat(64), header(10));
        let rows: Vec<StoredMessage> = (1..=3).map(row).collect();
        cache.insert_all(7, &rows);
        let once = cache.inner.lock().unwrap().bytes;
        cache.insert_all(7, &rows);
        assert_eq!(cache.inner.lock().unwrap().bytes, once, "kept rows are not added again");
        assert_eq!(once, 3 * (10 + ENTRY_OVERHEAD));
        let back = cache.get_all(7, &[1, 2, 3]).unwrap();
        assert_eq!(
            back.iter().map(|r| (r.uid, r.size)).collect::<Vec<_>>(),
            [(1, 100), (2, 100), (3, 100)]
        );
    }
}
