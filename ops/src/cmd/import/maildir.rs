//! `--maildir DIR`: a Maildir++ tree (Dovecot, Courier).
//!
//! Layout: `DIR/{cur,new,tmp}` is INBOX; each `DIR/.Name.Sub/{cur,new,tmp}` is the folder
//! `Name/Sub` (levels separated by `.`, each in modified UTF-7 as Dovecot and Courier write
//! them). `tmp/` holds deliveries in progress and is not read.
//!
//! File names: `<unique>[,S=<size>][,W=<vsize>]...[:2,<flags>]` (Dovecot adds `,S=` and `,W=`;
//! `:2,` starts the info). Info flags (cur/ only): `P` → `$Forwarded`, `R` → `\Answered`,
//! `S` → `\Seen`, `T` → `\Deleted`, `D` → `\Draft`, `F` → `\Flagged`; `a`-`z` → the keyword
//! on that line number (0-25) of the folder's `dovecot-keywords` file. Mail in new/ is unseen.
//!
//! Internal date: the file's modification time (Dovecot and Courier set it to the delivery
//! time). Line ends are stored as CRLF (Maildir files usually have LF).
//!
//! Resume key: source `maildir`, key = `<folder>/<unique>` (the name before `:` and before the
//! first `,`), so a message renamed by a flag change on the old server between two runs is not
//! imported twice.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use super::{Importer, Incoming, to_crlf};
use shared::mutf7;

/// The resume log's source name of Maildir imports.
pub const SOURCE: &str = "maildir";

/// One message file found in the tree.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The folder's IMAP name (INBOX for the root).
    pub folder: String,
    pub path: PathBuf,
    /// The file name.
    pub name: String,
    pub size: u64,
    pub mtime: Option<DateTime<Utc>>,
    /// From cur/ (has info flags) rather than new/.
    pub in_cur: bool,
}

/// The unique part of a Maildir file name (before the info and before `,S=`-style fields).
pub fn unique_part(name: &str) -> &str {
    let base = match name.find(":2,").or_else(|| name.find(";2,")) {
        Some(i) => &name[..i],
        None => name.split(':').next().unwrap_or(name),
    };
    base.split(',').next().unwrap_or(base)
}

/// The flags of a file name's info (`:2,FRS` and keyword letters).
pub fn info_flags(name: &str, keywords: &HashMap<u8, String>) -> Vec<String> {
    let Some(i) = name.find(":2,").or_else(|| name.find(";2,")) else {
        return Vec::new();
    };
    let mut flags = Vec::new();
    for c in name[i + 3..].bytes() {
        let flag = match c {
            b'P' => Some("$Forwarded".to_string()),
            b'R' => Some("\\Answered".to_string()),
            b'S' => Some("\\Seen".to_string()),
            b'T' => Some("\\Deleted".to_string()),
            b'D' => Some("\\Draft".to_string()),
            b'F' => Some("\\Flagged".to_string()),
            b'a'..=b'z' => keywords.get(&(c - b'a')).cloned(),
            _ => None,
        };
        if let Some(flag) = flag
            && !flags.contains(&flag)
        {
            flags.push(flag);
        }
    }
    flags
}

/// A folder's `dovecot-keywords` file: `<number> <keyword>` per line (numbers 0-25 map to the
/// letters `a`-`z`).
pub fn read_keywords(dir: &Path) -> HashMap<u8, String> {
    let mut map = HashMap::new();
    let Ok(text) = std::fs::read_to_string(dir.join("dovecot-keywords")) else {
        return map;
    };
    for line in text.lines() {
        if let Some((n, word)) = line.trim().split_once(' ')
            && let Ok(n) = n.parse::<u8>()
            && n < 26
        {
            map.insert(n, word.trim().to_string());
        }
    }
    map
}

/// The folder name of a Maildir++ subfolder directory (`.Work.Entw&APw-rfe` → `Work/Entwürfe`).
pub fn folder_name(dir_name: &str) -> String {
    let levels: Vec<String> = dir_name
        .trim_start_matches('.')
        .split('.')
        .map(|level| mutf7::decode(level).unwrap_or_else(|| level.to_string()))
        .collect();
    levels.join("/")
}

fn is_maildir(dir: &Path) -> bool {
    dir.join("cur").is_dir() || dir.join("new").is_dir()
}

/// Every folder of the tree: (IMAP name, directory), INBOX first, then by name.
pub fn folders(root: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    if !is_maildir(root) {
        anyhow::bail!("{} is not a Maildir: it has no cur/ or new/ folder", root.display());
    }
    let mut out = vec![("INBOX".to_string(), root.to_path_buf())];
    let mut subs = Vec::new();
    for entry in std::fs::read_dir(root).with_context(|| format!("reading {}", root.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.len() > 1
            && name.starts_with('.')
            && name != ".."
            && entry.file_type()?.is_dir()
            && is_maildir(&entry.path())
        {
            subs.push((folder_name(&name), entry.path()));
        }
    }
    subs.sort();
    out.extend(subs);
    Ok(out)
}

/// The message files of one folder (new/ and cur/), oldest first.
pub fn entries(folder: &str, dir: &Path, skipped: &mut Vec<(String, String)>) -> anyhow::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for (sub, in_cur) in [("new", false), ("cur", true)] {
        let path = dir.join(sub);
        let Ok(list) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in list {
            let entry = entry.with_context(|| format!("reading {}", path.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let file_type = entry.file_type()?;
            if !file_type.is_file() {
                // Symbolic links and devices are not mail a Maildir writer makes.
                skipped.push((entry.path().display().to_string(), "not a regular file".into()));
                continue;
            }
            let meta = entry.metadata()?;
            out.push(Entry {
                folder: folder.to_string(),
                path: entry.path(),
                name,
                size: meta.len(),
                mtime: meta.modified().ok().map(DateTime::<Utc>::from),
                in_cur,
            });
        }
    }
    out.sort_by(|a, b| a.mtime.cmp(&b.mtime).then_with(|| a.name.cmp(&b.name)));
    Ok(out)
}

/// The resume key of a message file (module docs).
fn key_of(entry: &Entry) -> String {
    format!("{}/{}", entry.folder, unique_part(&entry.name))
}

/// Import a Maildir++ tree.
pub async fn import(importer: &mut Importer, root: &Path) -> anyhow::Result<()> {
    let mut all = Vec::new();
    let mut keywords = HashMap::new();
    let mut skipped = Vec::new();
    for (folder, dir) in folders(root)? {
        keywords.insert(folder.clone(), read_keywords(&dir));
        all.extend(entries(&folder, &dir, &mut skipped)?);
    }
    let total: u64 = all.iter().map(|e| e.size).sum();
    // Resumed when its first message was imported before.
    let resumed = match all.first() {
        Some(first) => importer.is_imported(SOURCE, &key_of(first)).await?,
        None => false,
    };
    importer
        .check_quota_of(&root.display().to_string(), total, resumed)
        .await?;
    importer.set_total(Some(total), Some(all.len() as u64 + skipped.len() as u64));
    for (what, reason) in skipped {
        importer.skip(&what, &reason, 0);
    }
    let max = importer.max_message_size();
    for entry in all {
        if importer.stopped().is_some() {
            break;
        }
        let key = key_of(&entry);
        if importer.already_imported(SOURCE, &key, entry.size).await? {
            continue;
        }
        let what = entry.path.display().to_string();
        if entry.size > max {
            importer.skip(
                &what,
                &format!("larger than max_message_size ({})", shared::size::format_size(max)),
                entry.size,
            );
            continue;
        }
        let flags = if entry.in_cur {
            info_flags(&entry.name, &keywords[&entry.folder])
        } else {
            Vec::new()
        };
        if entry.size > super::mbox::SPILL_AT {
            // Large: streamed to the blob store as it is read (CRLF added on the way), never
            // held whole. At most max + 1 bytes are read, as below.
            let blobs = importer.blobs();
            let streamed = std::fs::File::open(&entry.path).and_then(|f| super::stream_crlf(&blobs, f.take(max + 1)));
            let stored = match streamed {
                Ok(stored) => stored,
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => return Err(e.into()),
                Err(e) => {
                    importer.skip(&what, &format!("cannot read: {e}"), entry.size);
                    continue;
                }
            };
            let incoming = Incoming {
                source: SOURCE.into(),
                key,
                folders: vec![entry.folder.clone()],
                flags,
                internal_date: entry.mtime,
                raw: Vec::new(),
                stored: Some(stored),
            };
            importer.add(incoming, entry.size).await?;
            continue;
        }
        // Read at most max + 1 bytes: a file growing meanwhile cannot take more memory.
        let mut raw = Vec::with_capacity(entry.size as usize);
        let read = std::fs::File::open(&entry.path).and_then(|f| f.take(max + 1).read_to_end(&mut raw));
        if let Err(e) = read {
            // Gone meanwhile (moved by the old server), or unreadable.
            importer.skip(&what, &format!("cannot read: {e}"), entry.size);
            continue;
        }
        let incoming = Incoming {
            source: SOURCE.into(),
            key,
            folders: vec![entry.folder.clone()],
            flags,
            internal_date: entry.mtime,
            raw: to_crlf(raw),
            stored: None,
        };
        importer.add(incoming, entry.size).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            unique_part("1700000000.M1P2.host,S=1234,W=1260:2,FS"),
            "1700000000.M1P2.host"
        );
        assert_eq!(unique_part("1700000000.M1P2.host:2,"), "1700000000.M1P2.host");
        assert_eq!(unique_part("1700000000.M1P2.host"), "1700000000.M1P2.host");
        assert_eq!(folder_name(".Work.Entw&APw-rfe"), "Work/Entwürfe");
        let keywords = HashMap::from([(0u8, "$Label1".to_string()), (2u8, "Junk".to_string())]);
        assert_eq!(
            info_flags("x,S=1:2,FRSTac", &keywords),
            vec!["\\Flagged", "\\Answered", "\\Seen", "\\Deleted", "$Label1", "Junk"]
        );
        assert!(info_flags("x,S=1", &keywords).is_empty());
    }
}
