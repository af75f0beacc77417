//! Import of old mail (`tinydc import`): the normal delivery path plus a resume log.
//!
//! Each imported message is recorded in `import_log` (user, source, key) in the SAME
//! transaction that adds its message rows. A rerun, or a run resumed after the importer was
//! killed at any moment, therefore skips exactly the messages that were committed: the log row
//! and the messages exist together or not at all. This module is the one writer of `import_log`.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use sqlx::PgConnection;

use super::{Appended, DeliveryKind, DeliveryTarget, MailStore, Prepared, StoreError, lock_user};
use crate::blobs::BlobId;
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
    /// `internal_date`, unless (user, source, key) was imported before: [`Self::prepare_import`]
    /// then [`Self::import_prepared`].
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
        if self.is_imported(user_id, source, key).await? {
            return Ok(ImportOutcome::AlreadyImported);
        }
        let prepared = self.prepare_import(raw).await?;
        self.import_prepared(user_id, targets, &prepared, flags, internal_date, source, key)
            .await
    }

    /// The part of an import that needs no transaction: parse the message and write its body
    /// durably to the blob store. An importer runs it for the next message while the previous
    /// one's transaction commits. A body whose import is then not committed stays unreferenced
    /// until `tinydc sweep` removes it.
    pub async fn prepare_import(&self, raw: Arc<Vec<u8>>) -> Result<PreparedImport, StoreError> {
        // The same free-space reserve as a reserved write.
        quota::check_disk(&self.db, raw.len() as u64)?;
        Ok(PreparedImport(self.prepare(raw).await?))
    }

    /// [`Self::prepare_import`] of a message whose body is stored already (streamed to the
    /// blob store by a [`crate::blobs::BlobWriter`]): only the parse is left, from the file,
    /// without holding the message in memory. A 50 MB message in an mbox file takes this path.
    pub async fn prepare_import_stored(&self, blob: BlobId, size: u64) -> Result<PreparedImport, StoreError> {
        Ok(PreparedImport(self.prepare_stored(blob, size).await?))
    }

    /// The transaction of an import: the log row is inserted first (`ON CONFLICT DO NOTHING`);
    /// when it was already there, the transaction is rolled back and nothing changes
    /// ([`ImportOutcome::AlreadyImported`]). Otherwise one message row per target mailbox, each
    /// charged to the quota like any delivery; a copy that does not fit refuses the whole
    /// message with [`StoreError::Quota`] (`QuotaError::Exceeded`) and nothing is logged.
    #[allow(clippy::too_many_arguments)]
    pub async fn import_prepared(
        &self,
        user_id: i64,
        targets: &[i64],
        message: &PreparedImport,
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
        let size = message.size();
        quota::check_disk(&self.db, size.saturating_mul(mailboxes.len() as u64 - 1))?;
        let targets: Vec<DeliveryTarget> = mailboxes
            .iter()
            .map(|&mailbox_id| DeliveryTarget {
                user_id,
                mailbox_id: Some(mailbox_id),
                reservation: None,
            })
            .collect();
        let log = LogKey { user_id, source, key };
        let delivered = self
            .deliver_prepared(
                targets,
                message.0.clone(),
                flags,
                internal_date,
                DeliveryKind::Import(log),
            )
            .await?;
        if delivered.is_some() {
            // Charged like a delivery: it may cross a quota warning threshold.
            quota::warn::after_write(self, &[user_id]).await;
        }
        Ok(match delivered {
            Some(appended) => ImportOutcome::Imported(Imported {
                charged: size * appended.len() as u64,
                appended,
            }),
            None => ImportOutcome::AlreadyImported,
        })
    }
}

/// The resume log's identity of an imported message.
#[derive(Debug, Clone, Copy)]
pub(super) struct LogKey<'a> {
    pub user_id: i64,
    pub source: &'a str,
    pub key: &'a str,
}

/// Inside the delivering transaction, before anything else: insert the log row of `log`.
/// False when it was there already (the caller rolls back: imported by an earlier run, or by
/// another run meanwhile; a body written for it alone stays unreferenced until `tinydc sweep`).
pub(super) async fn log(conn: &mut PgConnection, log: LogKey<'_>) -> Result<bool, StoreError> {
    // Lock order step 1 (module docs): the user row, before the log row and the mailboxes.
    // It also serialises two imports of the same user, so the log insert never waits long.
    lock_user(conn, log.user_id).await?;
    let fresh: Option<i32> = sqlx::query_scalar!(
        r#"INSERT INTO import_log (user_id, source, key) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING RETURNING 1 AS "one!""#,
        log.user_id,
        log.source,
        log.key
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(fresh.is_some())
}

/// A message parsed and its body stored, ready for [`MailStore::import_prepared`].
pub struct PreparedImport(Prepared);

impl PreparedImport {
    /// The message's size in bytes.
    pub fn size(&self) -> u64 {
        self.0.size
    }
}
