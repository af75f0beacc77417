//! Read-only share links, answered without a login at `/s/<token>/...` (the table and the
//! token belong to shared::shares; `tinydc share` makes them).
//!
//! - Only GET, HEAD (Range, ETag and conditional requests as for the owner: dav-server's own
//!   code), PROPFIND (Depth 0 and 1) and OPTIONS; anything else is 405 with `Allow`.
//! - The link is looked up (by the SHA-256 of the token) and counted on every request; an
//!   unknown, revoked or expired token is 404, the same answer for all three.
//! - The files are read through the owner's `TinyFs` (fs/read.rs), with every path mapped
//!   under the shared folder by [`ShareFs`]: dav-server has already decoded and normalised the
//!   path (`%2e%2e`, `..`, `//`), a path that leaves the `/s/<token>` prefix is refused by
//!   dav-server itself, and `paths::resolve` follows no symlink. A file's link serves a folder
//!   holding that one file and nothing else.
//! - Dead properties and quota are not shown: they are the owner's business.
//! - A file whose type a browser would run (HTML, SVG, XML, scripts, anything not plainly
//!   inert) is sent as an attachment, with `nosniff`, so a shared page cannot run script on
//!   this server's origin (where a visitor's browser may hold someone's WebDAV password);
//!   `Referrer-Policy: no-referrer` keeps the token out of the Referer of links inside a
//!   shared document.

use std::net::SocketAddr;

use dav_server::DavHandler;
use dav_server::DavMethodSet;
use dav_server::body::Body;
use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavMetaData, FsError, FsFuture, FsResult, FsStream, GuardedFileSystem, OpenOptions,
    ReadDirMeta,
};
use futures::FutureExt;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use shared::shares::{self, URL_PREFIX, encode_path};

use crate::fs::{TinyFs, User};
use crate::propfind;
use crate::server::{App, refuse_depth_infinity, simple};

/// What a share link allows (RFC 9110 section 15.5.6: a 405 names them in `Allow`).
const SHARE_ALLOW: &str = "OPTIONS, GET, HEAD, PROPFIND";

/// The token of a request path `/s/<token>` or `/s/<token>/...`, as sent (a token is plain
/// base64url, never percent-encoded). Only a segment shaped like a token is a share link, so a
/// person's own folder named `s` stays theirs for every other name.
pub fn token_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix(URL_PREFIX)?;
    let token = rest.split('/').next().unwrap_or("");
    shares::looks_like_token(token).then_some(token)
}

/// `path` fit for a log line: a share link's token replaced by `<token>`.
pub fn loggable(path: &str) -> String {
    match token_of(path) {
        Some(token) => path.replacen(token, "<token>", 1),
        None => path.to_string(),
    }
}

impl App {
    /// Answer one request to a share link (no credentials asked or used) and log it.
    pub(crate) async fn share(&self, req: Request<Incoming>, peer: SocketAddr, token: &str) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let link = match shares::resolve(&self.context.db, token).await {
            Ok(Some(link)) => link,
            Ok(None) => {
                tracing::info!(%peer, %method, "share: unknown, revoked or expired link");
                return simple(StatusCode::NOT_FOUND, "not found\n");
            }
            Err(e) => {
                tracing::error!("share: looking a link up: {e}");
                return simple(StatusCode::SERVICE_UNAVAILABLE, "try again later\n");
            }
        };
        let res = self.serve_link(req, peer, token, &link).await;
        // The path inside the share only: the token is a password and stays out of the log.
        let inside = path.get(URL_PREFIX.len() + shares::TOKEN_LEN..).unwrap_or("");
        let inside = if inside.is_empty() { "/" } else { inside };
        tracing::info!(
            share = link.id,
            owner = link.address,
            %peer,
            %method,
            path = inside,
            status = res.status().as_u16(),
            "share link access"
        );
        res
    }

    async fn serve_link(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        token: &str,
        link: &shares::Resolved,
    ) -> Response<Body> {
        let method = req.method().clone();
        // The path decoded and normalised as dav-server will see it (`..`, `%2e%2e`, `//`):
        // one that leaves this link is not in it (dav-server would answer 502).
        let prefix = format!("{URL_PREFIX}{token}");
        match DavPath::new(req.uri().path()).map(|mut p| p.set_prefix(&prefix)) {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return simple(StatusCode::NOT_FOUND, "not found\n"),
            Err(_) => return simple(StatusCode::BAD_REQUEST, "bad path\n"),
        }
        if method == Method::OPTIONS {
            let mut res = Response::new(Body::empty());
            let h = res.headers_mut();
            h.insert("DAV", HeaderValue::from_static("1"));
            h.insert(header::ALLOW, HeaderValue::from_static(SHARE_ALLOW));
            h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            return res;
        }
        if !matches!(method.as_str(), "GET" | "HEAD" | "PROPFIND") {
            let mut res = simple(StatusCode::METHOD_NOT_ALLOWED, "a share link is read-only\n");
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(SHARE_ALLOW));
            return res;
        }
        let owner = User {
            id: link.user_id,
            address: link.address.clone(),
            root: self.context.user_files_dir(&link.address),
        };
        // As for the owner: an interrupted file operation of theirs is finished first.
        if self.journal.ready(owner.id, &owner.root).await.is_err() {
            return simple(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage unavailable; try again later\n",
            );
        }
        let (parts, body) = match self.read_body(req, peer, &owner).await {
            Ok(r) => r,
            Err(res) => return res,
        };
        let asked = if method.as_str() == "PROPFIND" {
            if let Some(res) = refuse_depth_infinity(&parts.headers) {
                tracing::info!(%peer, share = link.id, "PROPFIND refused: Depth must be 0 or 1");
                return res;
            }
            propfind::asked(&body)
        } else {
            None
        };
        let fs = ShareFs::new(TinyFs::new(self.context.db.clone(), self.journal.clone()), link);
        let handler = DavHandler::builder()
            .filesystem(Box::new(fs))
            .strip_prefix(prefix)
            .methods(DavMethodSet::WEBDAV_RO)
            .hide_symlinks(true)
            // A browser opening a folder's link gets a plain listing (dav-server's, names
            // HTML-escaped, with `referrer: no-referrer`).
            .autoindex(true)
            .read_buf_size(crate::fs::READ_CHUNK)
            .build_handler();
        let req = Request::from_parts(parts, http_body_util::Full::new(body));
        let mut res = handler.handle_guarded(req, owner.address.clone(), owner).await;
        if let Some(asked) = asked {
            // handle() puts dav-server's answer through propfind::Rewrite.
            res.extensions_mut().insert(asked);
        }
        harden(&mut res);
        res
    }
}

/// Content types a browser shows without running anything of the file's own.
fn is_inert(content_type: &str) -> bool {
    let t = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    (t.starts_with("image/") && t != "image/svg+xml")
        || t.starts_with("video/")
        || t.starts_with("audio/")
        || t == "application/pdf"
        || t == "text/plain"
}

/// Headers that keep a shared file from acting on this origin (module comment).
fn harden(res: &mut Response<Body>) {
    let success = res.status().is_success();
    let h = res.headers_mut();
    let content_type = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    // Files have an ETag; dav-server's folder listing has none.
    let is_file = h.contains_key(header::ETAG);
    h.insert("X-Content-Type-Options", HeaderValue::from_static("nosniff"));
    h.insert("Referrer-Policy", HeaderValue::from_static("no-referrer"));
    if content_type.starts_with("text/html") && !is_file {
        // The listing: no script, one inline style sheet.
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
        );
    } else if success && is_file && !is_inert(&content_type) {
        h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment"));
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("sandbox; default-src 'none'"),
        );
    }
}

/// The owner's file system seen through one share link: read-only, and confined to the shared
/// folder, or for a file's link to a folder holding only that file.
#[derive(Clone)]
struct ShareFs {
    inner: TinyFs,
    /// The shared folder (or a shared file's folder) in the owner's tree, percent-encoded:
    /// `""` for the whole tree, else `/a/b`.
    base: String,
    /// For a file's link: the file's name.
    file: Option<Vec<u8>>,
}

impl ShareFs {
    fn new(inner: TinyFs, link: &shares::Resolved) -> ShareFs {
        let path = link.path.trim_end_matches('/');
        let (base, file) = if link.is_folder {
            (encode_path(path), None)
        } else {
            let (folder, name) = path.rsplit_once('/').unwrap_or(("", path));
            (encode_path(folder), Some(name.as_bytes().to_vec()))
        };
        ShareFs { inner, base, file }
    }

    /// The owner's path of a path inside the share (already decoded and normalised by
    /// dav-server, so it has no `..`).
    fn map(&self, path: &DavPath) -> FsResult<DavPath> {
        let inside = path.as_url_string();
        let mapped = match &self.file {
            None => format!("{}{inside}", self.base),
            Some(_) if path.as_bytes() == b"/" => format!("{}/", self.base),
            Some(name) if path.as_bytes().strip_prefix(b"/") == Some(name.as_slice()) => {
                format!("{}{inside}", self.base)
            }
            Some(_) => return Err(FsError::NotFound),
        };
        DavPath::new(&mapped).map_err(|e| {
            tracing::warn!(path = %path, "share: unusable mapped path: {e:?}");
            FsError::NotFound
        })
    }
}

impl GuardedFileSystem<User> for ShareFs {
    fn open<'a>(&'a self, path: &'a DavPath, options: OpenOptions, user: &'a User) -> FsFuture<'a, Box<dyn DavFile>> {
        async move {
            if options.write || options.append || options.create || options.create_new || options.truncate {
                return Err(FsError::Forbidden);
            }
            let mapped = self.map(path)?;
            self.inner.open(&mapped, options, user).await
        }
        .boxed()
    }

    fn read_dir<'a>(
        &'a self,
        path: &'a DavPath,
        meta: ReadDirMeta,
        user: &'a User,
    ) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
        async move {
            let mapped = self.map(path)?;
            let Some(name) = &self.file else {
                return self.inner.read_dir(&mapped, meta, user).await;
            };
            if path.as_bytes() != b"/" {
                return Err(FsError::NotFound);
            }
            // A file's link: its folder lists the file alone (if it is still there).
            let file_path = DavPath::new(&format!(
                "{}/{}",
                self.base,
                encode_path(&String::from_utf8_lossy(name))
            ))
            .map_err(|_| FsError::NotFound)?;
            let entries: Vec<FsResult<Box<dyn DavDirEntry>>> = match self.inner.metadata(&file_path, user).await {
                Ok(meta) => vec![Ok(Box::new(OneEntry {
                    name: name.clone(),
                    meta,
                }))],
                Err(FsError::NotFound) => Vec::new(),
                Err(e) => return Err(e),
            };
            Ok(Box::pin(futures::stream::iter(entries)) as FsStream<Box<dyn DavDirEntry>>)
        }
        .boxed()
    }

    fn metadata<'a>(&'a self, path: &'a DavPath, user: &'a User) -> FsFuture<'a, Box<dyn DavMetaData>> {
        async move {
            let mapped = self.map(path)?;
            self.inner.metadata(&mapped, user).await
        }
        .boxed()
    }
}

/// The one entry of a file link's folder.
struct OneEntry {
    name: Vec<u8>,
    meta: Box<dyn DavMetaData>,
}

impl DavDirEntry for OneEntry {
    fn name(&self) -> Vec<u8> {
        self.name.clone()
    }

    fn metadata(&self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let meta = self.meta.clone();
        async move { Ok(meta) }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_token_shaped_segments_are_links() {
        let token = "a".repeat(shares::TOKEN_LEN);
        assert_eq!(token_of(&format!("/s/{token}")), Some(token.as_str()));
        assert_eq!(token_of(&format!("/s/{token}/x/y")), Some(token.as_str()));
        assert_eq!(token_of("/s/notes.txt"), None);
        assert_eq!(token_of(&format!("/s/{token}x/")), None);
        assert_eq!(token_of(&format!("/S/{token}/")), None);
        assert_eq!(token_of(&format!("/x/s/{token}/")), None);
        assert_eq!(loggable(&format!("/s/{token}/a")), "/s/<token>/a");
        assert_eq!(loggable("/s/a"), "/s/a");
    }

    #[test]
    fn inert_types() {
        assert!(is_inert("image/jpeg"));
        assert!(is_inert("application/pdf"));
        assert!(is_inert("text/plain; charset=utf-8"));
        assert!(!is_inert("image/svg+xml"));
        assert!(!is_inert("text/html"));
        assert!(!is_inert("application/octet-stream"));
        assert!(!is_inert(""));
    }
}
