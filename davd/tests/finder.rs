//! macOS Finder (its WebDAV file system, `WebDAVFS/3.0.0 (03008000) Darwin/...`), replayed
//! request by request as Apple's webdavfs sends them (webdavfs' mount.tproj/webdav_network.c:
//! network_lookup, network_create, network_lock, network_fsync, network_unlock,
//! network_readdir, network_rename, network_rmdir).
//!
//! Finder never sends a file's modification time: webdavfs has no PROPPATCH and no time header;
//! a `setattr` of the times only touches its local cache file ("we don't actually save
//! va_flags, va_mode, va_uid, va_gid, va_atime or va_mtime on the server",
//! webdav_fs.kmodproj/webdav_vnops.c, webdav_vnop_setattr). What it does send besides the data
//! is the AppleDouble side file `._name` (Finder info, extended attributes, resource fork) and
//! the folder's `.DS_Store`: these must come back byte for byte, count in the quota, and never
//! get in the way of a folder's MOVE, COPY or DELETE.

mod common;

use std::time::Duration;

use common::*;

const UA: &str = "WebDAVFS/3.0.0 (03008000) Darwin/23.6.0 (x86_64)";

/// network_lock's body (webdav_network.c), sent with `Depth: 0` and `Timeout: Second-600`.
const LOCK_BODY: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:lockinfo xmlns:D=\"DAV:\">\n<D:lockscope><D:exclusive/></D:lockscope>\n<D:locktype><D:write/></D:locktype>\n<D:owner>\n<D:href>http://www.apple.com/webdav_fs/</D:href>\n</D:owner>\n</D:lockinfo>\n";

/// network_stat's body (a lookup: `Depth: 0`).
const STAT_BODY: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:propfind xmlns:D=\"DAV:\">\n<D:prop>\n<D:getlastmodified/>\n<D:getcontentlength/>\n<D:creationdate/>\n<D:resourcetype/>\n</D:prop>\n</D:propfind>\n";

/// network_readdir's body with caching on (`Depth: 1`): Apple's own `appledoubleheader`
/// property, which davd does not have (404 propstat: webdavfs then GETs the `._` file).
const READDIR_BODY: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:propfind xmlns:D=\"DAV:\">\n<D:prop xmlns:A=\"http://www.apple.com/webdav_fs/props/\">\n<D:getlastmodified/>\n<D:getcontentlength/>\n<D:creationdate/>\n<D:resourcetype/>\n<A:appledoubleheader/>\n</D:prop>\n</D:propfind>\n";

/// network_dir_is_empty's body (`Depth: 1`), before removing a folder.
const IS_EMPTY_BODY: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:propfind xmlns:D=\"DAV:\">\n<D:prop>\n<D:resourcetype/>\n</D:prop>\n</D:propfind>\n";

/// An AppleDouble file as macOS writes it for a file with Finder info and a quarantine
/// attribute: the header (magic 0x00051607, version 2, two entries: Finder info at 0x32 and
/// the resource fork), then binary data with NULs and high bytes, 4096 bytes in all.
fn apple_double() -> Vec<u8> {
    let mut v = vec![0x00, 0x05, 0x16, 0x07, 0x00, 0x02, 0x00, 0x00];
    v.extend_from_slice(b"Mac OS X        ");
    v.extend_from_slice(&[0x00, 0x02]);
    v.extend_from_slice(&[0, 0, 0, 9, 0, 0, 0, 0x32, 0, 0, 0x0e, 0xb0]);
    v.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0x0e, 0xe2, 0, 0, 0x01, 0x1e]);
    v.extend_from_slice(b"ATTR\x00\x00\x00\x00com.apple.quarantine\x000083;6750a1b2;Safari;");
    let mut i = 0u32;
    while v.len() < 4096 {
        v.push((i.wrapping_mul(2_654_435_761) >> 24) as u8);
        i += 1;
    }
    v
}

/// A `.DS_Store` (6148 bytes is the size Finder writes for a small folder).
fn ds_store() -> Vec<u8> {
    let mut v = b"\x00\x00\x00\x01Bud1\x00\x00\x10\x00".to_vec();
    v.resize(6148, 0);
    v[4000] = 0xff;
    v
}

async fn finder(dav: &Dav, args: &[&str]) -> Reply {
    let mut all = vec!["-A", UA, "-H", "Accept: */*"];
    all.extend_from_slice(args);
    dav.curl(ALICE, &all).await
}

/// A MOVE or COPY (`method`) of `from` to `to` as Finder sends it, with `headers` before the
/// Destination.
async fn finder_to(dav: &Dav, method: &str, headers: &[&str], from: &str, to: &str) -> Reply {
    let destination = format!("Destination: {}", dav.url(to));
    let from = dav.url(from);
    let mut args = vec!["-X", method];
    args.extend_from_slice(headers);
    args.extend(["-H", &destination, &from]);
    finder(dav, &args).await
}

async fn propfind(dav: &Dav, path: &str, depth: &str, body: &str) -> Reply {
    finder(
        dav,
        &[
            "-X",
            "PROPFIND",
            "-H",
            "Content-Type: text/xml",
            "-H",
            &format!("Depth: {depth}"),
            "--data-binary",
            body,
            &dav.url(path),
        ],
    )
    .await
}

/// How webdavfs writes a new file: a lookup (404), create it empty, LOCK it, refresh the lock,
/// PUT the whole file with the lock token, UNLOCK.
async fn finder_writes(dav: &Dav, path: &str, data: &[u8]) {
    let url = dav.url(path);
    assert_eq!(propfind(dav, path, "0", STAT_BODY).await.status, 404, "{path}");
    let r = finder(dav, &["-X", "PUT", "-H", "Content-Type:", "--data-binary", "", &url]).await;
    assert_eq!(r.status, 201, "{path}: {}", r.text());
    let r = finder(
        dav,
        &[
            "-X",
            "LOCK",
            "-H",
            "Depth: 0",
            "-H",
            "Timeout: Second-600",
            "-H",
            "Content-Type: text/xml; charset=\"utf-8\"",
            "--data-binary",
            LOCK_BODY,
            &url,
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    let token = r.header("lock-token").expect("Lock-Token");
    let token = token.trim_matches(|c| c == '<' || c == '>').to_string();
    let if_header = format!("If: (<{token}>)");
    // The refresh webdavfs sends every few minutes: no body, the token in If.
    let r = finder(
        dav,
        &[
            "-X",
            "LOCK",
            "-H",
            "Depth: 0",
            "-H",
            "Timeout: Second-600",
            "-H",
            "Content-Type: text/xml",
            "-H",
            &if_header,
            &url,
        ],
    )
    .await;
    assert_eq!(r.status, 200, "refresh {path}: {}", r.text());
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("data");
    std::fs::write(&local, data).unwrap();
    let r = finder(
        dav,
        &[
            "-X",
            "PUT",
            "-H",
            &if_header,
            "--data-binary",
            &format!("@{}", local.display()),
            &url,
        ],
    )
    .await;
    assert_eq!(r.status, 204, "{path}: {}", r.text());
    // network_fsync reads the new Last-Modified and ETag from the PUT answer (a PROPFIND
    // otherwise).
    assert!(r.header("etag").is_some(), "{path}: {}", r.headers);
    let r = finder(dav, &["-X", "UNLOCK", "-H", &format!("Lock-Token: <{token}>"), &url]).await;
    assert_eq!(r.status, 204, "{path}");
}

async fn get(dav: &Dav, path: &str) -> Reply {
    finder(dav, &[&dav.url(path)]).await
}

/// Each `D:response` of a multistatus: its href and the text of the property `name` if the
/// response reports it found (in a 200 propstat).
fn listed(xml: &str, name: &str) -> Vec<(String, Option<String>)> {
    let root = xmltree::Element::parse(xml.as_bytes()).unwrap_or_else(|e| panic!("{e}: {xml}"));
    let elements = |e: &xmltree::Element| -> Vec<xmltree::Element> {
        e.children.iter().filter_map(|n| n.as_element().cloned()).collect()
    };
    elements(&root)
        .iter()
        .map(|response| {
            let href = response
                .get_child("href")
                .and_then(|h| h.get_text())
                .unwrap()
                .to_string();
            let value = elements(response)
                .iter()
                .filter(|p| p.name == "propstat")
                .find(|p| {
                    p.get_child("status")
                        .and_then(|s| s.get_text())
                        .is_some_and(|s| s.contains(" 200 "))
                })
                .and_then(|p| p.get_child("prop")?.get_child(name).cloned())
                .map(|e| e.get_text().map(|t| t.to_string()).unwrap_or_default());
            (href, value)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finder_copy_keeps_the_appledouble_and_ds_store_byte_for_byte() {
    let dav = Dav::start(None).await;
    let photo: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let (double, store) = (apple_double(), ds_store());

    // Finder opens the folder: OPTIONS, a lookup, the listing.
    let r = finder(&dav, &["-X", "OPTIONS", &dav.url("/")]).await;
    assert_eq!(r.header("dav").as_deref(), Some("1, 2"));
    assert_eq!(finder(&dav, &["-X", "MKCOL", &dav.url("/Trip/")]).await.status, 201);
    finder_writes(&dav, "/Trip/Photo.jpg", &photo).await;
    finder_writes(&dav, "/Trip/._Photo.jpg", &double).await;
    finder_writes(&dav, "/Trip/.DS_Store", &store).await;

    for (path, data) in [
        ("/Trip/Photo.jpg", &photo),
        ("/Trip/._Photo.jpg", &double),
        ("/Trip/.DS_Store", &store),
    ] {
        let r = get(&dav, path).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.body == *data, "{path} came back changed");
    }
    assert_eq!(
        std::fs::read(dav.files_dir(ALICE).join("Trip/._Photo.jpg")).unwrap(),
        double
    );

    // The listing shows the side files with their sizes; Apple's appledoubleheader property
    // is reported missing (webdavfs then reads the `._` file itself).
    let r = propfind(&dav, "/Trip/", "1", READDIR_BODY).await;
    assert_eq!(r.status, 207, "{}", r.text());
    let sizes = listed(&r.text(), "getcontentlength");
    for (name, len) in [
        ("/Trip/Photo.jpg", photo.len()),
        ("/Trip/._Photo.jpg", 4096),
        ("/Trip/.DS_Store", 6148),
    ] {
        assert!(
            sizes.contains(&(name.to_string(), Some(len.to_string()))),
            "{name} {len} in {sizes:?}"
        );
    }
    assert!(listed(&r.text(), "appledoubleheader").iter().all(|(_, v)| v.is_none()));
    assert!(r.text().contains("404 Not Found"), "{}", r.text());

    // All three count in the quota.
    assert_eq!(
        file_bytes(&dav, ALICE).await,
        (photo.len() + double.len() + store.len()) as u64
    );
}

/// A folder holding Finder's side files: renamed (MOVE without Depth, as network_rename sends
/// it), copied (COPY), and deleted the way webdavfs removes a tree (each file with DELETE, the
/// emptiness check, then the folder), and in one DELETE as other clients do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_with_side_files_moves_copies_and_deletes() {
    let dav = Dav::start(None).await;
    let (double, store) = (apple_double(), ds_store());
    for dir in ["/Trip/", "/Trip/Day%201/"] {
        assert_eq!(finder(&dav, &["-X", "MKCOL", &dav.url(dir)]).await.status, 201);
    }
    finder_writes(&dav, "/Trip/Photo.jpg", b"jpeg").await;
    finder_writes(&dav, "/Trip/._Photo.jpg", &double).await;
    finder_writes(&dav, "/Trip/.DS_Store", &store).await;
    finder_writes(&dav, "/Trip/Day%201/._Day%201", &double).await;
    finder_writes(&dav, "/Trip/Day%201/.DS_Store", &store).await;
    let total = (4 + 2 * double.len() + 2 * store.len()) as u64;
    assert_eq!(file_bytes(&dav, ALICE).await, total);

    // Rename: one MOVE, no Depth header (RFC 4918 section 9.9.2: the whole tree).
    let r = finder_to(&dav, "MOVE", &[], "/Trip/", "/Trip%202026/").await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(get(&dav, "/Trip%202026/Day%201/._Day%201").await.body, double);
    assert_eq!(get(&dav, "/Trip/.DS_Store").await.status, 404);
    assert_eq!(file_bytes(&dav, ALICE).await, total);

    // Copy: the side files are copied and charged too.
    let r = finder_to(&dav, "COPY", &["-H", "Depth: infinity"], "/Trip%202026/", "/Copy/").await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(get(&dav, "/Copy/.DS_Store").await.body, store);
    assert_eq!(get(&dav, "/Copy/._Photo.jpg").await.body, double);
    assert_eq!(file_bytes(&dav, ALICE).await, 2 * total);

    // Finder deletes a tree bottom-up: the listing, each file (a locked `.DS_Store` with its
    // token, as network_delete sends it), the emptiness check, the folder.
    let r = propfind(&dav, "/Trip%202026/Day%201/", "1", READDIR_BODY).await;
    assert_eq!(listed(&r.text(), "resourcetype").len(), 3, "{}", r.text());
    let ds = dav.url("/Trip%202026/Day%201/.DS_Store");
    let r = finder(
        &dav,
        &[
            "-X",
            "LOCK",
            "-H",
            "Depth: 0",
            "-H",
            "Timeout: Second-600",
            "--data-binary",
            LOCK_BODY,
            &ds,
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    let token = r.header("lock-token").unwrap();
    assert_eq!(finder(&dav, &["-X", "DELETE", &ds]).await.status, 423);
    let r = finder(&dav, &["-X", "DELETE", "-H", &format!("If: ({token})"), &ds]).await;
    assert_eq!(r.status, 204);
    let r = finder(&dav, &["-X", "DELETE", &dav.url("/Trip%202026/Day%201/._Day%201")]).await;
    assert_eq!(r.status, 204);
    let r = propfind(&dav, "/Trip%202026/Day%201/", "1", IS_EMPTY_BODY).await;
    assert_eq!(listed(&r.text(), "resourcetype").len(), 1, "{}", r.text());
    for path in [
        "/Trip%202026/Day%201/",
        "/Trip%202026/Photo.jpg",
        "/Trip%202026/._Photo.jpg",
        "/Trip%202026/.DS_Store",
        "/Trip%202026/",
    ] {
        let r = finder(&dav, &["-X", "DELETE", &dav.url(path)]).await;
        assert_eq!(r.status, 204, "{path}: {}", r.text());
    }
    assert_eq!(file_bytes(&dav, ALICE).await, total);

    // One DELETE of a folder full of side files (Explorer, rclone purge).
    let r = dav.curl(ALICE, &["-X", "DELETE", &dav.url("/Copy/")]).await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(file_bytes(&dav, ALICE).await, 0);
    assert!(names_in(&dav.files_dir(ALICE)).is_empty());
}

/// Finder looks up names that do not exist in every folder it opens: routine, so at debug.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finder_probes_are_404_and_logged_at_debug() {
    let logs = logs();
    let dav = Dav::start(None).await;
    for name in [
        "._.",
        ".hidden",
        ".metadata_never_index",
        ".Spotlight-V100",
        "._probe-4c1e",
    ] {
        let path = format!("/probe-4c1e/{name}");
        assert_eq!(propfind(&dav, &path, "0", STAT_BODY).await.status, 404);
        assert_eq!(get(&dav, &path).await.status, 404);
        assert_eq!(finder(&dav, &["-I", &dav.url(&path)]).await.status, 404);
    }
    // A refusal that is not a look-up stays at INFO.
    let r = finder(&dav, &["-X", "PUT", "--data-binary", "x", &dav.url("/probe-4c1e/x")]).await;
    assert_eq!(r.status, 409);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("probe-4c1e/")).collect();
    assert_eq!(
        lines.iter().filter(|l| l.contains("status=404")).count(),
        15,
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .filter(|l| l.contains("status=404"))
            .all(|l| l.contains("DEBUG") && !l.contains(" INFO ")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains(" INFO ") && l.contains("status=409")),
        "{lines:#?}"
    );
}

/// RFC 4918 section 9.1: a PROPFIND without Depth is Depth infinity, refused with 403 and
/// `propfind-finite-depth` (Finder, Explorer, davfs2 and rclone all send 0 or 1); a Depth that
/// is none of 0, 1, infinity is 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propfind_without_depth_is_refused_like_infinity() {
    let dav = Dav::start(None).await;
    assert_eq!(finder(&dav, &["-X", "MKCOL", &dav.url("/d/")]).await.status, 201);
    let r = finder(&dav, &["-X", "PROPFIND", "--data-binary", STAT_BODY, &dav.url("/d/")]).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("<D:propfind-finite-depth/>"), "{}", r.text());
    let r = propfind(&dav, "/d/", "2", STAT_BODY).await;
    assert_eq!(r.status, 400, "{}", r.text());
    for depth in ["0", "1"] {
        assert_eq!(propfind(&dav, "/d/", depth, STAT_BODY).await.status, 207, "{depth:?}");
    }
}
