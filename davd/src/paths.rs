//! Confining client paths to a user's tree (docs/ARCHITECTURE.md, "Contracts": isolation).
//!
//! dav-server has already percent-decoded and normalised the request path (`.` and `..`
//! resolved, `..` above the root refused with 403, NUL and `/` inside a segment refused). Here
//! we map it under the user's root and walk it component by component without following
//! symbolic links: a symlink anywhere on the way (put there by an admin, or by a restore) is
//! treated as if it did not exist, so nothing outside `DATA/files/<address>/` is ever reached.
//! Upload temp files (`.tinydc-upload-*`) are invisible to clients too.

use std::path::{Component, Path, PathBuf};

use dav_server::davpath::DavPath;
use dav_server::fs::FsError;
use shared::quota::UPLOAD_TEMP_PREFIX;

/// The key under which properties and locks of `path` are stored: the URL-encoded path
/// inside the user's tree, without a trailing slash (`/` for the root).
pub fn key(path: &DavPath) -> String {
    let mut s = path.as_url_string();
    while s.len() > 1 && s.ends_with('/') {
        s.pop();
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

/// Decode a percent-encoded key segment to the raw name bytes (RFC 3986 section 2.1): `%`
/// and two hex digits is one byte; anything else, a lone `%` included, stays as it is. davd's
/// one percent-decoder (keys are written by dav-server's encoder, `DavPath::as_url_string`).
pub fn decode_segment(segment: &str) -> Vec<u8> {
    let b = segment.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some((high, low)) = b
                .get(i + 1)
                .and_then(|&h| hex(h))
                .zip(b.get(i + 2).and_then(|&l| hex(l)))
        {
            out.push((high * 16 + low) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// What a path segment keeps unescaped in an href or key: RFC 3986's unreserved characters
/// (section 2.3), as dav-server's `DavPath::as_url_string` writes paths.
const SEGMENT_KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encode a raw name as one segment of an href or key (RFC 3986 section 2.1): the
/// inverse of [`decode_segment`], and what `DavPath::as_url_string` makes of the same name.
pub fn encode_segment(name: &[u8]) -> String {
    percent_encoding::percent_encode(name, SEGMENT_KEEP).to_string()
}

/// Whether `key` is `ancestor` itself or below it.
pub fn is_at_or_below(key: &str, ancestor: &str) -> bool {
    ancestor == "/" || key == ancestor || (key.starts_with(ancestor) && key.as_bytes()[ancestor.len()] == b'/')
}

/// The keys of `key` and every ancestor, root first.
pub fn ancestors_and_self(key: &str) -> Vec<String> {
    let mut out = vec!["/".to_string()];
    let mut acc = String::new();
    for seg in key.split('/').filter(|s| !s.is_empty()) {
        acc.push('/');
        acc.push_str(seg);
        out.push(acc.clone());
    }
    out
}

/// A name a client may not use or see.
pub fn is_hidden_name(name: &[u8]) -> bool {
    name.starts_with(UPLOAD_TEMP_PREFIX.as_bytes())
}

/// Finder's side files: AppleDouble resource forks (`._name`) and folder settings (`.DS_Store`).
pub fn is_finder_metadata(name: &[u8]) -> bool {
    name.starts_with(b"._") || name == b".DS_Store"
}

/// Map `path` under `root`, refusing symlinks and hidden names on the way. A component that
/// does not exist ends the walk (the caller gets the would-be path, for creating it).
pub fn resolve(root: &Path, path: &DavPath) -> Result<PathBuf, FsError> {
    let rel = path.as_rel_ospath();
    let mut current = root.to_path_buf();
    let mut exists = true;
    for component in rel.components() {
        let Component::Normal(name) = component else {
            // dav-server never hands us `..`, `.` or a root here; refuse rather than trust it.
            tracing::warn!(path = %path, "refusing a path with a non-normal component");
            return Err(FsError::Forbidden);
        };
        if is_hidden_name(name.as_encoded_bytes()) {
            return Err(FsError::NotFound);
        }
        current.push(name);
        if exists {
            match current.symlink_metadata() {
                Ok(meta) if meta.file_type().is_symlink() => {
                    tracing::warn!(path = %path, "refusing to follow a symbolic link");
                    return Err(FsError::NotFound);
                }
                Ok(_) => {}
                Err(_) => exists = false,
            }
        }
    }
    Ok(current)
}

/// Map an I/O error to the dav-server result code (and so to its HTTP status).
pub fn fs_error(e: &std::io::Error) -> FsError {
    if let Some(errno) = e.raw_os_error() {
        match errno {
            libc::ENOSPC | libc::EDQUOT | libc::EMLINK => return FsError::InsufficientStorage,
            libc::EFBIG => return FsError::TooLarge,
            libc::EACCES | libc::EPERM | libc::EROFS | libc::ENOTDIR | libc::EISDIR => return FsError::Forbidden,
            libc::ENOTEMPTY | libc::EEXIST => return FsError::Exists,
            libc::ELOOP => return FsError::LoopDetected,
            libc::ENAMETOOLONG => return FsError::PathTooLong,
            libc::ENOENT => return FsError::NotFound,
            libc::EXDEV => return FsError::IsRemote,
            _ => {}
        }
    }
    match e.kind() {
        std::io::ErrorKind::NotFound => FsError::NotFound,
        std::io::ErrorKind::PermissionDenied => FsError::Forbidden,
        _ => {
            tracing::error!("file system error: {e}");
            FsError::GeneralFailure
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_one_form() {
        assert_eq!(key(&DavPath::new("/").unwrap()), "/");
        assert_eq!(key(&DavPath::new("/a/b/").unwrap()), "/a/b");
        assert_eq!(
            key(&DavPath::new("/a%20b/c").unwrap()),
            key(&DavPath::new("/a%20b/./c").unwrap())
        );
        assert!(DavPath::new("/%2e%2e/x").is_err());
        assert!(DavPath::new("/a/../../x").is_err());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(decode_segment("alice%40example.test"), b"alice@example.test");
        assert_eq!(decode_segment("caf%C3%a9%20x"), "café x".as_bytes());
        assert_eq!(decode_segment("%2F%00"), b"/\0");
        // Not an escape: kept as written (a sign is not a hex digit).
        for kept in ["100%", "%4", "%zz", "%+4", "%-1", "a+b", "%%41"] {
            let want = if kept == "%%41" {
                b"%A".to_vec()
            } else {
                kept.as_bytes().to_vec()
            };
            assert_eq!(decode_segment(kept), want, "{kept}");
        }
        // What dav-server encodes decodes back to the name.
        let path = DavPath::new("/a%20b%25c%40d").unwrap();
        assert_eq!(decode_segment(key(&path).trim_start_matches('/')), b"a b%c@d");
    }

    #[test]
    fn segments_encode_as_dav_server_writes_paths() {
        for name in [
            &b"plain.txt"[..],
            b"a b&c<d>\"e'f",
            b"100% sure?#",
            "caf\u{e9} \u{1f600}".as_bytes(),
            b"~tilde_-.x",
            b"\xff\xfe raw",
            b"semi;colon+plus=eq@at",
        ] {
            let encoded = encode_segment(name);
            let path = DavPath::new(&format!("/dir/{encoded}")).unwrap();
            assert_eq!(path.as_url_string(), format!("/dir/{encoded}"), "{name:?}");
            assert_eq!(path.file_name_bytes(), name);
            assert_eq!(decode_segment(&encoded), name);
        }
    }

    #[test]
    fn ancestry() {
        assert!(is_at_or_below("/a/b", "/a"));
        assert!(is_at_or_below("/a", "/a"));
        assert!(!is_at_or_below("/ab", "/a"));
        assert!(is_at_or_below("/x", "/"));
        assert_eq!(ancestors_and_self("/a/b"), vec!["/", "/a", "/a/b"]);
        assert_eq!(ancestors_and_self("/"), vec!["/"]);
    }

    #[test]
    fn symlinks_and_temp_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("u");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("evil")).unwrap();
        assert_eq!(
            resolve(&root, &DavPath::new("/evil/passwd").unwrap()),
            Err(FsError::NotFound)
        );
        assert_eq!(
            resolve(&root, &DavPath::new("/.tinydc-upload-x").unwrap()),
            Err(FsError::NotFound)
        );
        assert_eq!(
            resolve(&root, &DavPath::new("/new/file").unwrap()).unwrap(),
            root.join("new/file")
        );
    }
}
