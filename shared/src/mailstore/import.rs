//! Import of old mail (`tinydc import`): the normal delivery path plus a resume log.
//!
//! Each imported message is recorded in `import_log` (user, source, key) in the SAME
//! transaction that adds its message rows. A rerun, or a run resumed after the importer was
//! killed at any moment, therefore skips exactly the messages that were committed: the log row
//! and the messages exist together or not at all. This module is the one writer of `import_log`.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{Appended, DeliveryTarget, MailStore, StoreError, deliver_in, lock_user};
use crate::quota;

/// What [`MailStore::import`] did with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    /// Stored: one message row per target mailbox, one body.
    Imported(Imported),
    /// The log already holds (user, source, key): nothing was added.
    AlreadyImported,
}

/// Where an imported message landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// One entry per target mailbox, in ascending mailbox id order.
    pub appended: Vec<Appended>,
    /// Bytes charged to the quota (the message size once per copy).
    pub charged: u64,
}

impl MailStore {
    /// Whether (user, source, key) was imported already: a cheap look-up so a rerun does not
    /// parse and write bodies it will not store. [`MailStore::import`] checks again inside its
    /// transaction, which is what guarantees no duplicate.
    pub async fn is_imported(&self, user_id: i64, source: &str, key: &str) -> Result<bool, StoreError> {
        let found: Option<i32> = sqlx::query_scalar!(
            r#"SELECT 1 AS "one!" FROM import_log WHERE user_id = $1 AND source = $2 AND key = $3"#,
            user_id,
            source,
            key
        )
        .fetch_optional(&self.db)
        .await?;
        Ok(found.is_some())
    }

    /// How many messages of `source` the user has imported so far (a resumed import is told
    /// apart from a fresh one by this).
    pub async fn imported_count(&self, user_id: i64, source: &str) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar!(
            r#"SELECT count(*) AS "count!" FROM import_log WHERE user_id = $1 AND source = $2"#,
            user_id,
            source
        )
        .fetch_one(&self.db)
        .await?;
        Ok(count.max(0) as u64)
    }

    /// Store one imported message in each of `targets` (the user's mailbox ids; several for a
    /// message with several Gmail labels: one body, one message row each), with `flags` and
    /// `internal_date`, unless (user, source, key) was imported before. The log row is inserted
    /// first in the delivering transaction (`ON CONFLICT DO NOTHING`); when it was already
    /// there, the transaction is rolled back and nothing changes. Each copy is charged to the
    /// quota like any delivery; a copy that does not fit refuses the whole message with
    /// [`StoreError::Quota`] (`QuotaError::Exceeded`) and nothing is logged.
    #[allow(clippy::too_many_arguments)]
    pub async fn import(
        &self,
        user_id: i64,
        targets: &[i64],
        raw: Arc<Vec<u8>>,
        flags: &[String],
        internal_date: DateTime<Utc>,
        source: &str,
        key: &str,
    ) -> Result<ImportOutcome, StoreError> {
        let mut mailboxes = targets.to_vec();
        mailboxes.sort_unstable();
        mailboxes.dedup();
        if mailboxes.is_empty() {
            return Err(StoreError::Invalid("an imported message needs a target mailbox".into()));
        }
        if self.is_imported(user_id, source, key).await? {
            return Ok(ImportOutcome::AlreadyImported);
        }
        let size = raw.len() as u64;
        // The same free-space reserve as a reserved write (no reservation here: the charge in
        // the transaction is the quota check).
        quota::check_disk(&self.db, size.saturating_mul(mailboxes.len() as u64))?;
        let prepared = self.prepare(raw).await?;
        let mut tx = self.db.begin().await?;
        // Lock order step 1 (module docs): the user row, before the log row and the mailboxes.
        // It also serialises two imports of the same user, so the log insert never waits long.
        lock_user(&mut tx, user_id).await?;
        let fresh: Option<i32> = sqlx::query_scalar!(
            r#"INSERT INTO import_log (user_id, source, key) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING RETURNING 1 AS "one!""#,
            user_id,
            source,
            key
        )
        .fetch_optional(&mut *tx)
        .await?;
        if fresh.is_none() {
            // Imported meanwhile by another run: roll back (the body written above is
            // unreferenced and `tinydc sweep` removes it).
            tx.rollback().await?;
            return Ok(ImportOutcome::AlreadyImported);
        }
        let targets: Vec<DeliveryTarget> = mailboxes
            .iter()
            .map(|&mailbox_id| DeliveryTarget {
                user_id,
                mailbox_id: Some(mailbox_id),
                reservation: None,
            })
            .collect();
        let appended = deliver_in(&mut tx, targets, &prepared, flags, internal_date).await?;
        tx.commit().await?;
        Ok(ImportOutcome::Imported(Imported {
            charged: size * appended.len() as u64,
            appended,
        }))
    }
}
