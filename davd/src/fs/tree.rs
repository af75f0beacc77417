//! Changes of a user's tree: MKCOL, DELETE, COPY and MOVE, each applied under the user's
//! journal lock. DELETE of a file and MOVE (refund, dead properties, unlink or rename) and
//! COPY of a file (through commit.rs) go through the intent journal (journal.rs), so the usage
//! and the tree agree across a crash.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};

use dav_server::davpath::DavPath;
use dav_server::fs::{FsError, FsResult};
use shared::quota::{self, Usage};

use super::commit::PlaceCommit;
use super::read::{open_read, stat};
use super::upload::{create_temp, temp_path_beside};
use super::{TinyFs, User, blocking, db_error, io, parent_of, quota_error, sync_dir};
use crate::checksum::{HashingWriter, Stamp, Stored};
use crate::journal::{Step, UsageAfter};
use crate::{paths, props};

impl TinyFs {
    /// MKCOL.
    pub(super) async fn do_create_dir(&self, path: &DavPath, user: &User) -> FsResult<()> {
        let target = paths::resolve(&user.root, path)?;
        // Every change of the tree forgets the journal's done rows first, so a row left
        // at a crash is always the user's last change (journal.rs).
        let mut guard = self.journal.lock(user.id, &user.root).await?;
        guard.settle().await?;
        blocking(move || {
            std::fs::DirBuilder::new().mode(0o750).create(&target).map_err(io)?;
            sync_dir(parent_of(&target)?)
        })
        .await
    }

    /// DELETE of a collection (empty by now: std::fs::remove_dir) and its dead properties.
    pub(super) async fn do_remove_dir(&self, path: &DavPath, user: &User) -> FsResult<()> {
        let target = paths::resolve(&user.root, path)?;
        if target == user.root {
            return Err(FsError::Forbidden);
        }
        if self.deleted_tree.lock().expect("deleted tree lock").as_ref() == Some(&target) {
            // Removed whole by this DELETE already (do_remove_tree).
            return Ok(());
        }
        let mut guard = self.journal.lock(user.id, &user.root).await?;
        guard.settle().await?;
        let mut tx = self.db.begin().await.map_err(db_error)?;
        props::delete_tree(&mut tx, user.id, &paths::key(path))
            .await
            .map_err(db_error)?;
        blocking(move || {
            std::fs::remove_dir(&target).map_err(io)?;
            sync_dir(parent_of(&target)?)
        })
        .await?;
        tx.commit().await.map_err(db_error)
    }

    /// COPY of a file: copied into a temp file beside the target, then placed by commit.rs.
    pub(super) async fn do_copy(&self, from: &DavPath, to: &DavPath, user: &User) -> FsResult<()> {
        let src = paths::resolve(&user.root, from)?;
        let dst = paths::resolve(&user.root, to)?;
        let s = src.clone();
        let len = blocking(move || {
            let m = stat(&s)?;
            if !m.0.is_file() {
                return Err(FsError::Forbidden);
            }
            Ok(m.0.len())
        })
        .await?;
        // COPY charges the new file (docs/ARCHITECTURE.md "Quota"); reserve first so a big copy is refused early.
        let reservation = quota::reserve(&self.db, user.id, len).await.map_err(quota_error)?;
        let temp = temp_path_beside(&dst)?;
        let (s, t) = (src.clone(), temp.clone());
        let copied = blocking(move || {
            let mut input = open_read(&s)?;
            // The copy gets its own hash, computed as it is written (checksum.rs).
            let mut output = HashingWriter::new(create_temp(&t)?);
            let n = std::io::copy(&mut input, &mut output).map_err(io)?;
            let (output, hash) = output.finish();
            output.sync_all().map_err(io)?;
            let meta = output.metadata().map_err(io)?;
            Ok((
                n,
                meta.ino(),
                Stored {
                    hash,
                    stamp: Stamp::of(&meta),
                },
            ))
        })
        .await;
        let (n, ino, hash) = match copied {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                let _ = quota::release(&self.db, reservation).await;
                return Err(e);
            }
        };
        let commit = PlaceCommit {
            journal: self.journal.clone(),
            user_id: user.id,
            root: user.root.clone(),
            temp,
            target: dst,
            ino,
            written: n,
            reservations: vec![(reservation.id, reservation.bytes)],
            props_from: Some((paths::key(from), paths::key(to))),
            // Fsynced above, with the copy.
            synced: None,
            key: paths::key(to),
            content_hash: hash.to_prop(),
        };
        tokio::spawn(commit.run()).await.unwrap_or_else(|e| {
            tracing::error!("copy commit task failed: {e}");
            Err(FsError::GeneralFailure)
        })
    }

    /// DELETE of a folder (RFC 4918 section 9.6.1), called in place of its listing (see
    /// `TinyFs::for_delete`): one journaled step for the whole tree: one transaction refunds
    /// every file in it and drops the dead properties at or below it, then the folder goes
    /// (journal.rs `Step::Delete`: renamed aside, its contents removed after the answer; a
    /// crash half way is finished at restart). `None` for the
    /// user's root, which is never removed: its members are deleted one by one as before.
    pub(super) async fn do_remove_tree(
        &self,
        path: &DavPath,
        user: &User,
    ) -> FsResult<Option<dav_server::fs::FsStream<Box<dyn dav_server::fs::DavDirEntry>>>> {
        let target = paths::resolve(&user.root, path)?;
        if target == user.root {
            return Ok(None);
        }
        let (journal, user, key) = (self.journal.clone(), user.clone(), paths::key(path));
        let (t, done) = (target.clone(), target.clone());
        // A task of its own: a dropped request must not cut between commit and removal.
        let task = async move {
            let mut guard = journal.lock(user.id, &user.root).await?;
            // Under the journal lock: no commit of this user changes the sizes meanwhile.
            let (bytes, ino) = blocking(move || {
                let m = stat(&t)?;
                if !m.0.is_dir() {
                    return Err(FsError::Forbidden);
                }
                // The bytes charged for it: what a recount would find (temp files excluded).
                Ok((quota::tree_bytes(&t), m.0.ino()))
            })
            .await?;
            let mut tx = guard.db().begin().await.map_err(db_error)?;
            // DELETE refunds (docs/ARCHITECTURE.md "Quota").
            let warned = quota::refund(&mut tx, user.id, Usage::Files, bytes)
                .await
                .map_err(quota_error)?;
            props::delete_tree(&mut tx, user.id, &key).await.map_err(db_error)?;
            let step = Step::Delete { target, ino };
            let id = guard.record(&mut tx, &step).await?;
            guard.commit_and_apply(tx, id, step, UsageAfter::Unchanged).await?;
            // Usage fell: a warning given may be armed again (none given, none to re-arm).
            if warned {
                journal.usage_changed(user.id).await;
            }
            Ok(())
        };
        tokio::spawn(task).await.unwrap_or_else(|e| {
            tracing::error!("delete task failed: {e}");
            Err(FsError::GeneralFailure)
        })?;
        *self.deleted_tree.lock().expect("deleted tree lock") = Some(done);
        Ok(Some(Box::pin(futures::stream::empty())))
    }

    /// DELETE of a file: refund and unlink, through the journal (journal.rs).
    pub(super) async fn do_remove_file(&self, path: &DavPath, user: &User) -> FsResult<()> {
        let target = paths::resolve(&user.root, path)?;
        let (journal, user, key) = (self.journal.clone(), user.clone(), paths::key(path));
        // A task of its own: a dropped request must not cut between commit and unlink.
        let task = async move {
            let mut guard = journal.lock(user.id, &user.root).await?;
            let t = target.clone();
            let (len, ino) = blocking(move || {
                let m = stat(&t)?;
                if !m.0.is_file() {
                    return Err(FsError::Forbidden);
                }
                Ok((m.0.len(), m.0.ino()))
            })
            .await?;
            let mut tx = guard.db().begin().await.map_err(db_error)?;
            // DELETE refunds (docs/ARCHITECTURE.md "Quota").
            let warned = quota::refund(&mut tx, user.id, Usage::Files, len)
                .await
                .map_err(quota_error)?;
            props::delete_tree(&mut tx, user.id, &key).await.map_err(db_error)?;
            let step = Step::Delete { target, ino };
            let id = guard.record(&mut tx, &step).await?;
            guard.commit_and_apply(tx, id, step, UsageAfter::Unchanged).await?;
            // Usage fell: a warning given may be armed again (none given, none to re-arm).
            if warned {
                journal.usage_changed(user.id).await;
            }
            Ok(())
        };
        tokio::spawn(task).await.unwrap_or_else(|e| {
            tracing::error!("delete task failed: {e}");
            Err(FsError::GeneralFailure)
        })
    }

    /// MOVE: refund a replaced file, move the dead properties, rename, through the journal.
    pub(super) async fn do_rename(&self, from: &DavPath, to: &DavPath, user: &User) -> FsResult<()> {
        let src = paths::resolve(&user.root, from)?;
        let dst = paths::resolve(&user.root, to)?;
        if src == user.root || dst == user.root {
            return Err(FsError::Forbidden);
        }
        let (journal, user) = (self.journal.clone(), user.clone());
        let (from_key, to_key) = (paths::key(from), paths::key(to));
        let task = async move {
            let mut guard = journal.lock(user.id, &user.root).await?;
            let (s, d) = (src.clone(), dst.clone());
            // Everything that would make the rename fail is checked before the commit.
            let (ino, replaced) = blocking(move || {
                let m = s.symlink_metadata().map_err(io)?;
                if !m.is_file() && !m.is_dir() {
                    return Err(FsError::NotFound);
                }
                if m.is_dir() && d.starts_with(&s) {
                    return Err(FsError::Forbidden);
                }
                if !parent_of(&d)?.symlink_metadata().is_ok_and(|p| p.is_dir()) {
                    return Err(FsError::NotFound);
                }
                let replaced = match d.symlink_metadata() {
                    Ok(dm) if dm.is_file() && m.is_file() => dm.len(),
                    Ok(dm) if dm.ino() == m.ino() => 0,
                    Ok(_) => return Err(FsError::Exists),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                    Err(e) => return Err(io(e)),
                };
                Ok((m.ino(), replaced))
            })
            .await?;
            let mut tx = guard.db().begin().await.map_err(db_error)?;
            let warned = quota::refund(&mut tx, user.id, Usage::Files, replaced)
                .await
                .map_err(quota_error)?;
            props::move_tree(&mut tx, user.id, &from_key, &to_key)
                .await
                .map_err(db_error)?;
            let step = Step::Move {
                from: src,
                to: dst,
                ino,
            };
            let id = guard.record(&mut tx, &step).await?;
            guard.commit_and_apply(tx, id, step, UsageAfter::Unchanged).await?;
            // Usage fell by the replaced file: a warning given may be armed again.
            if warned {
                journal.usage_changed(user.id).await;
            }
            Ok(())
        };
        tokio::spawn(task).await.unwrap_or_else(|e| {
            tracing::error!("move task failed: {e}");
            Err(FsError::GeneralFailure)
        })
    }
}
