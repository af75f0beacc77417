//! Properties: PROPFIND's dead properties (props.rs, answered from the listing cache of
//! read.rs when their folder was just listed), PROPPATCH, Windows' Win32 times made true on the
//! file (win32.rs), and the RFC 4331 quota properties.

use std::os::unix::fs::OpenOptionsExt;

use dav_server::davpath::DavPath;
use dav_server::fs::{DavProp, FsError, FsResult};
use http::StatusCode;
use shared::quota;

use super::read::stat;
use super::{TinyFs, User, blocking, io, quota_error};
use crate::{paths, props};

impl TinyFs {
    /// Make Windows' PROPPATCH of its Win32 properties true (see win32.rs): apply the times to
    /// the file and keep all of them as dead properties.
    pub async fn apply_win32(&self, path: &DavPath, user: &User, sets: Vec<DavProp>) -> FsResult<()> {
        let target = paths::resolve(&user.root, path)?;
        let modified = sets
            .iter()
            .find_map(|p| crate::win32::time_of(p, "Win32LastModifiedTime"));
        let accessed = sets
            .iter()
            .find_map(|p| crate::win32::time_of(p, "Win32LastAccessTime"));
        if modified.is_some() || accessed.is_some() {
            blocking(move || {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&target)
                    .map_err(io)?;
                let mut times = std::fs::FileTimes::new();
                if let Some(t) = modified {
                    times = times.set_modified(t);
                }
                if let Some(t) = accessed {
                    times = times.set_accessed(t);
                }
                file.set_times(times).map_err(io)?;
                // The answer says the times are set: they must survive a crash.
                file.sync_all().map_err(io)
            })
            .await?;
        }
        let patch = sets.into_iter().map(|p| (true, p)).collect();
        props::patch(&self.db, user.id, &paths::key(path), patch).await?;
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

    /// PROPFIND allprop/propname: a resource's dead properties, from the listing cache when its
    /// folder was just listed.
    pub(super) async fn do_get_props(&self, path: &DavPath, do_content: bool, user: &User) -> FsResult<Vec<DavProp>> {
        let key = paths::key(path);
        if let Some(mut listed) = self.listed_props(&key) {
            if !do_content {
                listed.iter_mut().for_each(|p| p.xml = None);
            }
            return Ok(listed);
        }
        props::list(&self.db, user.id, &key, do_content).await
    }

    /// PROPFIND prop: one dead property, from the listing cache when its folder was just listed.
    pub(super) async fn do_get_prop(&self, path: &DavPath, prop: DavProp, user: &User) -> FsResult<Vec<u8>> {
        let key = paths::key(path);
        if let Some(listed) = self.listed_props(&key) {
            return listed
                .into_iter()
                .find(|p| p.name == prop.name && p.namespace == prop.namespace)
                .and_then(|p| p.xml)
                .ok_or(FsError::NotFound);
        }
        props::get(&self.db, user.id, &key, &prop).await
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
