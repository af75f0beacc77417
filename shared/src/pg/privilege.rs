//! Dropping root for PostgreSQL, which refuses to run as root.

#![allow(unsafe_code)] // getpwnam and geteuid: plain libc calls with no safe std equivalent.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use anyhow::bail;

/// The unprivileged user a root-started cluster runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

impl RunAs {
    /// `None` when not root (PostgreSQL runs as us); the `postgres` user when root.
    pub fn for_postgres() -> anyhow::Result<Option<RunAs>> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(None);
        }
        let name = std::env::var("TINYDC_PG_USER").unwrap_or_else(|_| "postgres".to_string());
        match lookup_user(&name) {
            Some(run_as) => Ok(Some(run_as)),
            None => bail!(
                "running as root, and PostgreSQL refuses to run as root: no `{name}` system user to run it as \
                 (install PostgreSQL's package, or set TINYDC_PG_USER to an unprivileged user)"
            ),
        }
    }

    /// Run `cmd` as this user (std also drops supplementary groups when root).
    pub fn apply(&self, cmd: &mut Command) {
        cmd.uid(self.uid).gid(self.gid);
    }

    /// Give `path` to this user.
    pub fn chown(&self, path: &Path) -> anyhow::Result<()> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .map_err(|e| anyhow::anyhow!("chown {}: {e}", path.display()))
    }
}

fn lookup_user(name: &str) -> Option<RunAs> {
    let cname = CString::new(name).ok()?;
    // SAFETY: getpwnam takes a valid NUL-terminated string and returns a pointer to static
    // storage or null; we copy the two ids out immediately. Only called at start-up.
    let entry = unsafe { libc::getpwnam(cname.as_ptr()) };
    if entry.is_null() {
        return None;
    }
    // SAFETY: entry is non-null and points to a valid passwd struct.
    let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    Some(RunAs { uid, gid })
}
