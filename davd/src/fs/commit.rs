//! The commit of a finished temp file (PUT, COPY) through the intent journal (journal.rs):
//! under the user's journal lock, one transaction refunds the file it replaces, turns the
//! quota reservations into usage (or charges it), copies dead properties for COPY, stores the
//! new content's hash (checksum.rs, replacing the old file's) and records the rename, which is then applied (docs/ARCHITECTURE.md "Durability"). Callers run it as a
//! task of its own, so a client hanging up cannot cut it between the database and the rename;
//! when it fails, the temp file is removed and the reservations are given back.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dav_server::fs::{DavProp, FsError, FsResult};
use shared::quota::{self, Committed, Reservation, Usage};

use super::{blocking, db_error, io, quota_error};
use crate::journal::{Journal, Step, UsageAfter};
use crate::props;

/// Putting a finished temp file in place (PUT, COPY), through the journal (journal.rs).
pub(super) struct PlaceCommit {
    pub(super) journal: Arc<Journal>,
    pub(super) user_id: i64,
    pub(super) root: PathBuf,
    pub(super) temp: PathBuf,
    pub(super) target: PathBuf,
    pub(super) ino: u64,
    /// Bytes in the temp file: the usage charged.
    pub(super) written: u64,
    /// Quota reservations held: (id, bytes).
    pub(super) reservations: Vec<(i64, u64)>,
    /// COPY: the dead properties of this key go to the target's key (from, to).
    pub(super) props_from: Option<(String, String)>,
    /// The temp file's fsync when it is still running (PUT): it overlaps the journal lock and
    /// the statements, and is waited for before the COMMIT, so nothing is committed (and no
    /// rename recorded) before the file's bytes are durable.
    pub(super) synced: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// The target's key (paths::key).
    pub(super) key: String,
    /// The stored-hash property for the new content (checksum.rs): its hash, computed as it
    /// was written, or the marker of a hash computed after the answer (`Pending`).
    pub(super) content_hash: DavProp,
}

impl PlaceCommit {
    pub(super) async fn run(mut self) -> FsResult<()> {
        // Once committed, the file's bytes are charged: against a limit it may cross a quota
        // warning threshold (checked by `UserGuard::commit_and_apply` while the rename is done).
        let result = self.commit().await;
        if result.is_err() {
            // Given back whatever happened: a committed reservation is already gone.
            for &(id, bytes) in &self.reservations {
                let r = Reservation {
                    id,
                    user_id: self.user_id,
                    bytes,
                };
                if let Err(e) = quota::release(self.journal.db(), r).await {
                    tracing::warn!("releasing a reservation: {e} (it expires by itself)");
                }
            }
        }
        result
    }

    async fn commit(&mut self) -> FsResult<()> {
        let synced = self.synced.take();
        let mut guard = match self.journal.lock(self.user_id, &self.root).await {
            Ok(g) => g,
            Err(e) => {
                if let Some(s) = synced {
                    // Not cut off: its file is removed below, after it.
                    let _ = s.await;
                }
                let _ = std::fs::remove_file(&self.temp);
                return Err(e);
            }
        };
        let prepared: FsResult<_> = async {
            let mut tx = guard.db().begin().await.map_err(db_error)?;
            // Under the user's journal lock: the file replaced cannot change until our rename.
            let (temp, target, ino) = (self.temp.clone(), self.target.clone(), self.ino);
            let old = blocking(move || {
                // Its folder may have been moved or deleted while the body streamed in.
                if !temp.symlink_metadata().is_ok_and(|m| m.ino() == ino) {
                    tracing::info!(path = %target.display(), "the upload's folder went away");
                    return Err(FsError::NotFound);
                }
                existing_file_len(&target)
            })
            .await?;
            // A refund can re-arm a warning only for a user who was warned (`quota::refund`).
            let mut check = quota::refund(&mut tx, self.user_id, Usage::Files, old)
                .await
                .map_err(quota_error)?;
            // The whole size is charged on the first reservation, after the others are gone:
            // while they are live they count against the room the charge is checked with.
            for (i, &(id, bytes)) in self.reservations.iter().enumerate().rev() {
                let r = Reservation {
                    id,
                    user_id: self.user_id,
                    bytes,
                };
                let actual = if i == 0 { self.written } else { 0 };
                let committed = quota::commit(&mut tx, r, actual, Usage::Files)
                    .await
                    .map_err(quota_error)?;
                check |= committed == Committed::AgainstLimit;
            }
            if self.reservations.is_empty() {
                quota::charge(&mut tx, self.user_id, Usage::Files, self.written)
                    .await
                    .map_err(quota_error)?;
                check = true;
            }
            let after = if check {
                UsageAfter::Check
            } else {
                UsageAfter::FoldLater
            };
            if let Some((from, to)) = &self.props_from {
                props::copy_one(&mut tx, self.user_id, from, to)
                    .await
                    .map_err(db_error)?;
            }
            // In the transaction of the rename: the old file's hash goes with it, and a crash
            // before the rename (finished by the journal) leaves the hash of what is placed.
            props::set_own(&mut tx, self.user_id, &self.key, &self.content_hash)
                .await
                .map_err(db_error)?;
            let step = Step::Place {
                temp: self.temp.clone(),
                target: self.target.clone(),
                ino: self.ino,
            };
            let id = guard.record(&mut tx, &step).await?;
            if let Some(synced) = synced {
                synced
                    .await
                    .map_err(|e| {
                        tracing::error!("fsync task failed: {e}");
                        FsError::GeneralFailure
                    })?
                    .map_err(|e| {
                        tracing::error!(path = %self.temp.display(), "fsync of an upload: {e}");
                        io(e)
                    })?;
            }
            Ok((tx, id, step, after))
        }
        .await;
        match prepared {
            Ok((tx, id, step, after)) => guard.commit_and_apply(tx, id, step, after).await,
            Err(e) => {
                // Nothing committed: the old file stays, the temp file goes.
                let _ = std::fs::remove_file(&self.temp);
                Err(e)
            }
        }
    }
}

/// Size of the regular file at `path` (0 when absent); a directory there is refused.
fn existing_file_len(path: &Path) -> FsResult<u64> {
    match path.symlink_metadata() {
        Ok(m) if m.is_file() => Ok(m.len()),
        Ok(_) => Err(FsError::Forbidden),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io(e)),
    }
}
