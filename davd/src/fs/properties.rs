//! Properties: dead properties as dav-server asks for them (props.rs; davd answers PROPFIND
//! itself, propfind.rs), PROPPATCH, Windows' Win32 times made true on the
//! file (win32.rs), and the RFC 4331 quota properties.

use std::os::unix::fs::OpenOptionsExt;

use dav_server::davpath::DavPath;
use dav_server::fs::{DavProp, FsError, FsResult};
use http::StatusCode;
use shared::quota;

use super::read::stat;
use super::{TinyFs, User, blocking, io, quota_error};
use crate::checksum::{Stamp, Stored};
use crate::{checksum, paths, props};

impl TinyFs {
    /// Make Windows' PROPPATCH of its Win32 properties true (see win32.rs): apply the times to
    /// the file and keep all of them as dead properties.
    pub async fn apply_win32(&self, path: &DavPath, user: &User, sets: Vec<DavProp>) -> FsResult<()> {
        let target = paths::resolve(&user.root, path)?;
        let modified = sets
            .iter()
            .find_map(|p| crate::win32::time_of(p, crate::win32::LAST_MODIFIED_TIME));
        let accessed = sets
            .iter()
            .find_map(|p| crate::win32::time_of(p, crate::win32::LAST_ACCESS_TIME));
        if modified.is_some() || accessed.is_some() {
            let stamps = blocking(move || {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&target)
                    .map_err(io)?;
                let before = Stamp::of(&file.metadata().map_err(io)?);
                let mut times = std::fs::FileTimes::new();
                if let Some(t) = modified {
                    times = times.set_modified(t);
                }
                if let Some(t) = accessed {
                    times = times.set_accessed(t);
                }
                file.set_times(times).map_err(io)?;
                // The answer says the times are set: they must survive a crash.
                file.sync_all().map_err(io)?;
                Ok((before, Stamp::of(&file.metadata().map_err(io)?)))
            })
            .await?;
            self.restamp_hash(path, user, stamps).await?;
        }
        let patch = sets.into_iter().map(|p| (true, p)).collect();
        props::patch(&self.db, user.id, &paths::key(path), patch).await?;
        Ok(())
    }

    /// The content did not change with its time: the stored hash (checksum.rs) moves to the
    /// new stamp, if it was the hash of this file (`before`). A crash before this leaves the
    /// hash unoffered, never wrong.
    async fn restamp_hash(&self, path: &DavPath, user: &User, (before, after): (Stamp, Stamp)) -> FsResult<()> {
        let key = paths::key(path);
        if before == after {
            return Ok(());
        }
        let Some(stored) = self.stored_hash(user, &key).await? else {
            return Ok(());
        };
        if stored.stamp != before {
            return Ok(());
        }
        let old = stored.to_prop().xml.unwrap_or_default();
        let moved = Stored { stamp: after, ..stored };
        if !props::replace_own(&self.db, user.id, &key, &old, &moved.to_prop()).await? {
            tracing::debug!(user_id = user.id, key, "content hash changed meanwhile: not restamped");
        }
        Ok(())
    }

    /// PROPPATCH: dead properties of an existing resource.
    pub(super) async fn do_patch_props(
        &self,
        path: &DavPath,
        patch: Vec<(bool, DavProp)>,
        user: &User,
    ) -> FsResult<Vec<(StatusCode, DavProp)>> {
        let target = paths::resolve(&user.root, path)?;
        blocking(move || stat(&target)).await?;
        props::patch(&self.db, user.id, &paths::key(path), patch).await
    }

    /// dav-server's allprop/propname: a resource's dead properties.
    pub(super) async fn do_get_props(&self, path: &DavPath, do_content: bool, user: &User) -> FsResult<Vec<DavProp>> {
        let key = paths::key(path);
        let mut all = props::list(&self.db, user.id, &key, do_content).await?;
        // davd's own (the content hash) are not the client's dead properties.
        all.retain(|p| !checksum::is_reserved(p));
        Ok(all)
    }

    /// dav-server's prop: one dead property.
    pub(super) async fn do_get_prop(&self, path: &DavPath, prop: DavProp, user: &User) -> FsResult<Vec<u8>> {
        let key = paths::key(path);
        if checksum::is_reserved(&prop) {
            return Err(FsError::NotFound);
        }
        if checksum::is_oc_checksums(&prop) {
            return self.oc_checksums(path, &key, user).await;
        }
        props::get(&self.db, user.id, &key, &prop).await
    }

    /// ownCloud's live property `oc:checksums`: the stored content hash of a file, if it was
    /// computed for the file that is there now (checksum.rs); else not found (a 404 propstat).
    async fn oc_checksums(&self, path: &DavPath, key: &str, user: &User) -> FsResult<Vec<u8>> {
        let Some(stored) = self.stored_hash(user, key).await? else {
            return Err(FsError::NotFound);
        };
        let target = paths::resolve(&user.root, path)?;
        let meta = blocking(move || stat(&target)).await?;
        match stored.for_file(&meta.0) {
            Some(hash) => Ok(hash.oc_checksums_xml()),
            None => {
                tracing::debug!(
                    user_id = user.id,
                    key,
                    "stored content hash is of another version: not offered"
                );
                Err(FsError::NotFound)
            }
        }
    }

    /// RFC 4331: used bytes (mail and files: one quota) and used + available.
    pub(super) async fn do_get_quota(&self, user: &User) -> FsResult<(u64, Option<u64>)> {
        let info = match &self.quota {
            Some(info) => info.clone(),
            None => quota::info(&self.db, user.id).await.map_err(quota_error)?,
        };
        let used = info.used();
        Ok((used, info.limit.map(|_| used.saturating_add(info.available()))))
    }
}
