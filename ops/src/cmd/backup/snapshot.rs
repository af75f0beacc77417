//! The backup folder's layout, shared by `tinydc backup` and `tinydc restore`:
//!
//! ```text
//! DIR/blobs/ab/abcd…                 message bodies by sha256, shared by every snapshot
//! DIR/blobs/tmp/                      blobs being copied (never a whole blob's name)
//! DIR/snapshots/<UTC time>/           one complete snapshot:
//!     database.dump                   pg_dump, custom format, one transaction
//!     blobs.list                      "<sha256> <size>" of every blob the dump refers to
//!     data/                           tinydc.toml, tls/, acme/, files/<address>/ as they were
//!     MANIFEST                        written last, fsynced: the snapshot is complete
//! DIR/snapshots/<UTC time>.partial/   a backup in progress, or one that was interrupted
//! DIR/.tinydc-backup.lock             flock(2) held by the backup writing here
//! ```
//!
//! A snapshot is complete only when it has its final name and a MANIFEST that reads back:
//! the manifest is fsynced, then the folder is renamed from `.partial` and the parent fsynced,
//! so an interrupted backup (SIGKILL, power cut) never looks complete to `restore`.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use sha2::{Digest, Sha256};

pub const SNAPSHOTS: &str = "snapshots";
pub const BLOBS: &str = "blobs";
pub const MANIFEST: &str = "MANIFEST";
pub const DUMP: &str = "database.dump";
pub const BLOB_LIST: &str = "blobs.list";
pub const TREE: &str = "data";
pub const PARTIAL: &str = ".partial";
pub const LOCK: &str = ".tinydc-backup.lock";
/// Name prefix of the temp files a copy writes before renaming them into place.
pub const TEMP_PREFIX: &str = ".tinydc-backup-";
const FORMAT: &str = "tinydc-backup 1";

/// What the data directory's tree holds that a backup copies (besides the database and blobs).
pub const TREE_ROOTS: [&str; 4] = [shared::config::CONFIG_FILE, "tls", "acme", "files"];

/// The contents of a MANIFEST.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    pub name: String,
    pub created: String,
    pub tinydc: String,
    pub postgresql: String,
    pub dump_bytes: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    pub files: u64,
    pub file_bytes: u64,
}

impl Manifest {
    pub fn to_text(&self) -> String {
        format!(
            "{FORMAT}\nname {}\ncreated {}\ntinydc {}\npostgresql {}\ndump_bytes {}\nblobs {}\nblob_bytes {}\nfiles {}\nfile_bytes {}\n",
            self.name,
            self.created,
            self.tinydc,
            self.postgresql,
            self.dump_bytes,
            self.blobs,
            self.blob_bytes,
            self.files,
            self.file_bytes
        )
    }

    /// Parse a MANIFEST; `None` for anything that is not a whole one.
    pub fn parse(text: &str) -> Option<Manifest> {
        let mut lines = text.lines();
        if lines.next()? != FORMAT {
            return None;
        }
        let mut m = Manifest::default();
        let mut seen = 0;
        for line in lines {
            let (key, value) = line.split_once(' ')?;
            let number = || value.parse::<u64>().ok();
            match key {
                "name" => m.name = value.to_string(),
                "created" => m.created = value.to_string(),
                "tinydc" => m.tinydc = value.to_string(),
                "postgresql" => m.postgresql = value.to_string(),
                "dump_bytes" => m.dump_bytes = number()?,
                "blobs" => m.blobs = number()?,
                "blob_bytes" => m.blob_bytes = number()?,
                "files" => m.files = number()?,
                "file_bytes" => m.file_bytes = number()?,
                _ => continue,
            }
            seen += 1;
        }
        (seen == 9 && !m.name.is_empty()).then_some(m)
    }
}

/// A complete snapshot: its folder and manifest.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

/// Read the snapshot in `dir` if it is complete: a final name, a manifest naming it, and a
/// dump of the size the manifest records. Anything else is `None` (an interrupted backup).
pub fn read_complete(dir: &Path) -> Option<Snapshot> {
    let name = dir.file_name()?.to_str()?;
    if name.ends_with(PARTIAL) || name.starts_with('.') {
        return None;
    }
    let manifest = Manifest::parse(&std::fs::read_to_string(dir.join(MANIFEST)).ok()?)?;
    if manifest.name != name {
        return None;
    }
    let dump = std::fs::metadata(dir.join(DUMP)).ok()?;
    if dump.len() != manifest.dump_bytes || !dir.join(BLOB_LIST).is_file() {
        return None;
    }
    Some(Snapshot {
        dir: dir.to_path_buf(),
        manifest,
    })
}

/// Every complete snapshot in the backup folder `backup`, oldest first (names are UTC times).
pub fn complete_snapshots(backup: &Path) -> Vec<Snapshot> {
    let mut out: Vec<Snapshot> = std::fs::read_dir(backup.join(SNAPSHOTS))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| read_complete(&e.path()))
        .collect();
    out.sort_by(|a, b| a.manifest.name.cmp(&b.manifest.name));
    out
}

/// The path of a blob under a blob folder (the same sharding as `shared::blobs`).
pub fn blob_path(root: &Path, id: &str) -> PathBuf {
    root.join(&id[..2]).join(id)
}

/// Parse a `blobs.list`.
pub fn read_blob_list(path: &Path) -> anyhow::Result<Vec<(String, u64)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let parsed = line
            .split_once(' ')
            .and_then(|(id, size)| Some((id.to_string(), size.parse::<u64>().ok()?)))
            .filter(|(id, _)| shared::blobs::BlobId::is_valid(id));
        match parsed {
            Some(entry) => out.push(entry),
            None => bail!("{} has a bad line: {line:?}", path.display()),
        }
    }
    Ok(out)
}

/// How a copy ended.
pub struct Copied {
    pub bytes: u64,
    /// Lowercase hex sha256 of what was copied.
    pub sha256: String,
}

/// Copy the open file `src` to `dst`: into a temp file beside `dst`, fsynced, with `src`'s
/// permission bits and modification time, then renamed over `dst`. A crash leaves `dst`
/// absent or whole, never partial. `dst`'s folder must be fsynced by the caller.
pub fn copy_file(src: &mut File, meta: &std::fs::Metadata, dst: &Path) -> anyhow::Result<Copied> {
    let dir = dst.parent().context("a copy target has a folder")?;
    let mut temp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut bytes = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading"),
        };
        hasher.update(&buf[..n]);
        temp.write_all(&buf[..n])
            .with_context(|| format!("writing beside {}", dst.display()))?;
        bytes += n as u64;
    }
    let file = temp.as_file();
    // Best effort: a backup disk without Unix permissions (exFAT) refuses chmod; the copy then
    // keeps the temp file's 0600, never more open than the original. Without the same mtime,
    // the next backup copies the file again instead of linking it.
    if let Err(e) = file.set_permissions(meta.permissions()) {
        tracing::debug!("keeping mode 0600 for {}: {e}", dst.display());
    }
    if let Ok(mtime) = meta.modified()
        && let Err(e) = file.set_modified(mtime)
    {
        tracing::debug!("no modification time for {}: {e}", dst.display());
    }
    file.sync_all()
        .with_context(|| format!("fsync beside {}", dst.display()))?;
    temp.persist(dst)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming into {}", dst.display()))?;
    Ok(Copied {
        bytes,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// The lowercase hex sha256 of a file's bytes.
pub fn sha256_of(path: &Path) -> anyhow::Result<String> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(hasher.finalize()))
}

/// fsync a folder, so the names made in it are durable.
pub fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    shared::blobs::sync_dir(dir).with_context(|| format!("fsync {}", dir.display()))
}

/// fsync every folder under `root` (itself included), deepest first.
pub fn sync_tree_dirs(root: &Path) -> anyhow::Result<()> {
    let mut dirs = vec![root.to_path_buf()];
    let mut i = 0;
    while i < dirs.len() {
        if let Ok(entries) = std::fs::read_dir(&dirs[i]) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(entry.path());
                }
            }
        }
        i += 1;
    }
    for dir in dirs.iter().rev() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Counts shown on stderr while a long phase runs, at most once a second.
pub struct Progress {
    what: &'static str,
    phase: String,
    pub files: u64,
    pub bytes: u64,
    pub linked: u64,
    last: std::time::Instant,
}

impl Progress {
    pub fn new(what: &'static str) -> Progress {
        Progress {
            what,
            phase: String::new(),
            files: 0,
            bytes: 0,
            linked: 0,
            last: std::time::Instant::now(),
        }
    }

    /// Start a phase: say so, and count from zero.
    pub fn phase(&mut self, phase: &str) {
        self.phase = phase.to_string();
        self.files = 0;
        self.bytes = 0;
        self.linked = 0;
        eprintln!("{}: {phase}", self.what);
        self.last = std::time::Instant::now();
    }

    /// Report the counts if a second has passed since the last report.
    pub fn tick(&mut self) {
        if self.last.elapsed() >= std::time::Duration::from_secs(1) {
            self.report();
        }
    }

    /// Report the counts now.
    pub fn report(&mut self) {
        eprintln!(
            "{}: {}: {} copied ({}), {} unchanged",
            self.what,
            self.phase,
            self.files,
            shared::size::format_size(self.bytes),
            self.linked
        );
        self.last = std::time::Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_reads_back_and_a_truncated_one_does_not() {
        let m = Manifest {
            name: "20261205T013000Z".into(),
            created: "2026-12-05T01:30:00Z".into(),
            tinydc: "0.1.0".into(),
            postgresql: "15".into(),
            dump_bytes: 10,
            blobs: 2,
            blob_bytes: 30,
            files: 4,
            file_bytes: 50,
        };
        let text = m.to_text();
        assert_eq!(Manifest::parse(&text), Some(m));
        let cut = &text[..text.len() - 5];
        assert_eq!(Manifest::parse(cut), None);
        assert_eq!(Manifest::parse(""), None);
    }
}
