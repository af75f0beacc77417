//! Content hashes (ownCloud checksums): `OC-Checksum` on PUT, GET and HEAD, `oc:checksums` in
//! PROPFIND, kept through MOVE, COPY, overwrite, a crash and a time change, never offered for
//! content they were not computed for; a PUT whose body does not match its `OC-Checksum` is
//! refused. rclone (vendor nextcloud and owncloud) compares hashes with `check` and
//! `sync --checksum`.

mod common;

use common::*;
use davd::journal::{CrashPoint, crash_at};

/// `sha1sum` or `md5sum` of `data`, as the tool prints it.
async fn digest(tool: &str, data: &[u8]) -> String {
    shared::testing::require_tool(tool);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    std::fs::write(&path, data).unwrap();
    let out = tokio::process::Command::new(tool).arg(&path).output().await.unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

async fn put(dav: &Dav, path: &str, data: &[u8], extra: &[&str]) -> Reply {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body");
    std::fs::write(&file, data).unwrap();
    let file = file.to_string_lossy().into_owned();
    let url = dav.url(path);
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(["-T", &file, &url]);
    dav.curl(ALICE, &args).await
}

/// The `OC-Checksum` of a HEAD and of a GET of `path` (which must agree), and the body.
async fn offered(dav: &Dav, path: &str) -> (Option<String>, Vec<u8>) {
    let head = dav.curl(ALICE, &["-I", &dav.url(path)]).await;
    assert_eq!(head.status, 200, "HEAD {path}");
    let get = dav.curl(ALICE, &[&dav.url(path)]).await;
    assert_eq!(get.status, 200, "GET {path}");
    assert_eq!(
        head.header("oc-checksum"),
        get.header("oc-checksum"),
        "HEAD and GET agree"
    );
    (get.header("oc-checksum"), get.body)
}

/// The `OC-Checksum` of a HEAD of `path` (to wait for a hash computed after the answer).
async fn head_checksum(dav: &Dav, path: &str) -> Option<String> {
    let head = dav.curl(ALICE, &["-I", &dav.url(path)]).await;
    assert_eq!(head.status, 200, "HEAD {path}");
    head.header("oc-checksum")
}

const ASK_CHECKSUMS: &str = r#"<?xml version="1.0"?>
<d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns">
 <d:prop><d:getcontentlength/><oc:checksums/></d:prop>
</d:propfind>"#;

/// The multistatus of a PROPFIND of `path`, which must be 207.
async fn multistatus(dav: &Dav, path: &str, depth: &str, body: &str) -> String {
    let r = propfind(dav, path, depth, body).await;
    assert_eq!(r.status, 207, "PROPFIND {path}: {}", r.text());
    r.text()
}

/// The text of the `checksum` element in the `response` for `href`, if any.
fn checksum_in(multistatus: &str, href: &str) -> Option<String> {
    let start = multistatus.find(&format!("<D:href>{href}</D:href>"))?;
    let rest = &multistatus[start..];
    let response = &rest[..rest.find("</D:response>")?];
    let open = response.find(":checksum>")? + ":checksum>".len();
    let len = response[open..].find('<')?;
    Some(response[open..open + len].to_string())
}

async fn expected(data: &[u8]) -> (String, String) {
    let sha1 = digest("sha1sum", data).await;
    let md5 = digest("md5sum", data).await;
    (format!("SHA1:{sha1}"), format!("SHA1:{sha1} MD5:{md5}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_and_head_carry_the_sha1_of_the_content() {
    let dav = Dav::start(None).await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (header, _) = expected(&data).await;
    let r = put(&dav, "/photo.jpg", &data, &[]).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header("oc-checksum"), Some(header.clone()), "the PUT answer");
    let (got, body) = offered(&dav, "/photo.jpg").await;
    assert_eq!(got, Some(header));
    assert_eq!(body, data);

    // A range is a part of the file: no whole-file checksum on the 206.
    let part = dav.curl(ALICE, &["-r", "0-99", &dav.url("/photo.jpg")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.header("oc-checksum"), None);

    // An empty file has a hash too.
    let r = put(&dav, "/empty.txt", b"", &[]).await;
    assert_eq!(r.status, 201);
    assert_eq!(offered(&dav, "/empty.txt").await.0, Some(expected(b"").await.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propfind_shows_oc_checksums_by_name_only() {
    let dav = Dav::start(None).await;
    assert_eq!(dav.curl(ALICE, &["-X", "MKCOL", &dav.url("/docs")]).await.status, 201);
    assert_eq!(
        dav.curl(ALICE, &["-X", "MKCOL", &dav.url("/docs/sub")]).await.status,
        201
    );
    let a = b"first file".to_vec();
    let b = vec![b'x'; 100_000];
    assert_eq!(put(&dav, "/docs/a.txt", &a, &[]).await.status, 201);
    assert_eq!(put(&dav, "/docs/b%20c.bin", &b, &[]).await.status, 201);

    // Depth 1 (the listing) and Depth 0 (one file) both answer it.
    let listing = multistatus(&dav, "/docs/", "1", ASK_CHECKSUMS).await;
    assert_eq!(
        checksum_in(&listing, "/docs/a.txt"),
        Some(expected(&a).await.1),
        "{listing}"
    );
    assert_eq!(
        checksum_in(&listing, "/docs/b%20c.bin"),
        Some(expected(&b).await.1),
        "{listing}"
    );
    // A folder has none: a 404 propstat for it, not an empty value.
    assert_eq!(checksum_in(&listing, "/docs/sub/"), None, "{listing}");
    assert!(listing.contains("404"), "{listing}");
    let one = multistatus(&dav, "/docs/a.txt", "0", ASK_CHECKSUMS).await;
    assert_eq!(checksum_in(&one, "/docs/a.txt"), Some(expected(&a).await.1), "{one}");

    // allprop and propname show neither the checksums nor davd's stored form of them.
    for body in [
        r#"<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:allprop/></d:propfind>"#,
        r#"<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:propname/></d:propfind>"#,
    ] {
        let all = multistatus(&dav, "/docs/", "1", body).await;
        assert!(!all.contains("checksum") && !all.contains("content-hash"), "{all}");
    }
    // Nor by its name.
    let own = multistatus(
        &dav,
        "/docs/a.txt",
        "0",
        r#"<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:h="urn:x-tinydc:content-hash"><d:prop><h:sha1-md5/></d:prop></d:propfind>"#,
    )
    .await;
    assert!(!own.contains("SHA1:"), "{own}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hash_follows_move_and_copy_and_an_overwrite_replaces_it() {
    let dav = Dav::start(None).await;
    let data = b"the original content".to_vec();
    let (header, both) = expected(&data).await;
    assert_eq!(put(&dav, "/a.txt", &data, &[]).await.status, 201);
    assert_eq!(dav.curl(ALICE, &["-X", "MKCOL", &dav.url("/dir")]).await.status, 201);

    let copy = transfer(&dav, "COPY", "/a.txt", "/dir/b.txt").await;
    assert_eq!(copy.status, 201);
    let moved = transfer(&dav, "MOVE", "/dir/b.txt", "/dir/c.txt").await;
    assert_eq!(moved.status, 201);
    // The folder moves with its files' hashes.
    let moved = transfer(&dav, "MOVE", "/dir", "/dir2").await;
    assert_eq!(moved.status, 201);
    assert_eq!(offered(&dav, "/dir2/c.txt").await.0, Some(header.clone()));
    let listing = multistatus(&dav, "/dir2/", "1", ASK_CHECKSUMS).await;
    assert_eq!(checksum_in(&listing, "/dir2/c.txt"), Some(both));
    // A folder COPY: each file copied gets its hash.
    let copied = transfer(&dav, "COPY", "/dir2", "/dir3").await;
    assert_eq!(copied.status, 201);
    assert_eq!(offered(&dav, "/dir3/c.txt").await.0, Some(header.clone()));

    // Overwriting changes it, at once and on every copy only where written.
    let new = b"new content, longer than before".to_vec();
    let r = put(&dav, "/a.txt", &new, &[]).await;
    assert_eq!(r.status, 204);
    let (new_header, new_both) = expected(&new).await;
    assert_eq!(r.header("oc-checksum"), Some(new_header.clone()));
    assert_eq!(offered(&dav, "/a.txt").await, (Some(new_header), new.clone()));
    assert_eq!(
        checksum_in(&multistatus(&dav, "/a.txt", "0", ASK_CHECKSUMS).await, "/a.txt"),
        Some(new_both)
    );
    assert_eq!(offered(&dav, "/dir2/c.txt").await.0, Some(header.clone()));

    // A MOVE over an existing file: the target shows the moved file's hash.
    let moved = transfer(&dav, "MOVE", "/dir3/c.txt", "/a.txt").await;
    assert_eq!(moved.status, 204);
    assert_eq!(offered(&dav, "/a.txt").await, (Some(header.clone()), data.clone()));

    // DELETE forgets it: a file put there behind davd's back has no hash, never the old one.
    assert_eq!(dav.curl(ALICE, &["-X", "DELETE", &dav.url("/dir2")]).await.status, 204);
    let root = dav.files_dir(ALICE);
    std::fs::create_dir(root.join("dir2")).unwrap();
    std::fs::write(root.join("dir2/c.txt"), &data).unwrap();
    assert_eq!(offered(&dav, "/dir2/c.txt").await.0, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_whose_body_does_not_match_its_oc_checksum_changes_nothing() {
    let dav = Dav::start(Some(10 << 20)).await;
    let old = b"kept".to_vec();
    let (old_header, _) = expected(&old).await;
    assert_eq!(put(&dav, "/doc.txt", &old, &[]).await.status, 201);
    let usage = file_bytes(&dav, ALICE).await;

    let body = vec![b'n'; 200_000];
    let wrong_sha1 = format!("OC-Checksum: SHA1:{}", digest("sha1sum", b"something else").await);
    let wrong_md5 = format!("OC-Checksum: MD5:{}", digest("md5sum", b"something else").await);
    for header in [&wrong_sha1, &wrong_md5] {
        for path in ["/doc.txt", "/new.txt"] {
            let r = put(&dav, path, &body, &["-H", header]).await;
            assert_eq!(r.status, 400, "{header} {path}: {}", r.text());
        }
    }
    // Nothing stored, the old file and its hash intact, no temp file, no reservation held.
    assert_eq!(offered(&dav, "/doc.txt").await, (Some(old_header), old.clone()));
    assert_eq!(dav.curl(ALICE, &["-I", &dav.url("/new.txt")]).await.status, 404);
    assert_eq!(names_in(&dav.files_dir(ALICE)), vec!["doc.txt".to_string()]);
    assert_eq!(file_bytes(&dav, ALICE).await, usage);
    let user = shared::accounts::get_user(&dav.env.context.db, ALICE).await.unwrap();
    let mut released = false;
    for _ in 0..50 {
        if shared::quota::info(&dav.env.context.db, user.id)
            .await
            .unwrap()
            .reserved_bytes
            == 0
        {
            released = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(released, "the reservation is given back");

    // A header that is no checksum is refused before the body is stored.
    for bad in ["OC-Checksum: SHA1", "OC-Checksum: SHA1:xyz", "OC-Checksum: MD5:00"] {
        assert_eq!(put(&dav, "/doc.txt", &body, &["-H", bad]).await.status, 400, "{bad}");
    }
    // The right checksums (either algorithm, any case) are accepted; a type davd does not
    // compute is not checked.
    let (header, _) = expected(&body).await;
    let md5 = format!("OC-Checksum: md5:{}", digest("md5sum", &body).await.to_uppercase());
    for claim in [
        format!("OC-Checksum: {header}"),
        md5,
        "OC-Checksum: ADLER32:01234567".to_string(),
    ] {
        let r = put(&dav, "/doc.txt", &body, &["-H", &claim]).await;
        assert_eq!(r.status, 204, "{claim}");
        assert_eq!(r.header("oc-checksum"), Some(header.clone()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_set_the_stored_hash() {
    let dav = Dav::start(None).await;
    let data = b"content".to_vec();
    assert_eq!(put(&dav, "/a.txt", &data, &[]).await.status, 201);
    let forged = format!(
        r#"<?xml version="1.0"?><d:propertyupdate xmlns:d="DAV:" xmlns:h="urn:x-tinydc:content-hash" xmlns:z="urn:z"><d:set><d:prop><h:sha1-md5 size="3" mtime="1.000000000">SHA1:{} MD5:{}</h:sha1-md5><z:other>x</z:other></d:prop></d:set></d:propertyupdate>"#,
        "0".repeat(40),
        "0".repeat(32)
    );
    let r = dav
        .curl(
            ALICE,
            &["-X", "PROPPATCH", "--data-binary", &forged, &dav.url("/a.txt")],
        )
        .await;
    assert_eq!(r.status, 207);
    assert!(r.text().contains("403") && r.text().contains("424"), "{}", r.text());
    assert_eq!(offered(&dav, "/a.txt").await.0, Some(expected(&data).await.0));
    // Removing it is refused the same way.
    let remove = r#"<?xml version="1.0"?><d:propertyupdate xmlns:d="DAV:" xmlns:h="urn:x-tinydc:content-hash"><d:remove><d:prop><h:sha1-md5/></d:prop></d:remove></d:propertyupdate>"#;
    let r = dav
        .curl(ALICE, &["-X", "PROPPATCH", "--data-binary", remove, &dav.url("/a.txt")])
        .await;
    assert!(r.text().contains("403"), "{}", r.text());
    assert_eq!(offered(&dav, "/a.txt").await.0, Some(expected(&data).await.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_is_offered_only_for_the_content_it_was_computed_for() {
    let dav = Dav::start(None).await;
    let data = b"computed for this".to_vec();
    let (header, _) = expected(&data).await;
    assert_eq!(put(&dav, "/a.txt", &data, &[]).await.status, 201);

    // A new modification time through davd (PROPPATCH getlastmodified, Windows' Win32 time):
    // the content is the same, the hash stays.
    let touch = r#"<?xml version="1.0"?><d:propertyupdate xmlns:d="DAV:"><d:set><d:prop><d:getlastmodified>Tue, 01 Jan 2019 10:00:00 GMT</d:getlastmodified></d:prop></d:set></d:propertyupdate>"#;
    let r = dav
        .curl(ALICE, &["-X", "PROPPATCH", "--data-binary", touch, &dav.url("/a.txt")])
        .await;
    assert_eq!(r.status, 207);
    assert!(r.text().contains("200 OK"), "{}", r.text());
    let head = dav.curl(ALICE, &["-I", &dav.url("/a.txt")]).await;
    assert_eq!(
        head.header("last-modified").as_deref(),
        Some("Tue, 01 Jan 2019 10:00:00 GMT")
    );
    assert_eq!(head.header("oc-checksum"), Some(header.clone()));

    // The file rewritten behind davd's back (same size): no hash rather than a wrong one.
    let path = dav.files_dir(ALICE).join("a.txt");
    std::fs::write(&path, b"COMPUTED FOR THIS").unwrap();
    assert_eq!(offered(&dav, "/a.txt").await.0, None);
    let listing = multistatus(&dav, "/", "1", ASK_CHECKSUMS).await;
    assert_eq!(checksum_in(&listing, "/a.txt"), None, "{listing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_interrupted_by_a_crash_offers_the_new_hash_only_once_the_file_is_there() {
    let dav = Dav::start(None).await;
    let old = vec![b'o'; 1000];
    let new = vec![b'n'; 3000];
    assert_eq!(put(&dav, "/doc.txt", &old, &[]).await.status, 201);
    crash_at(&dav.files_dir(ALICE), CrashPoint::AfterCommit);
    assert_eq!(put(&dav, "/doc.txt", &new, &[]).await.status, 500);
    // Committed, not yet renamed: the stored hash is the new file's; the old one is served
    // without a hash.
    let head = dav.curl(ALICE, &["-I", &dav.url("/doc.txt")]).await;
    assert_eq!(head.header("content-length").as_deref(), Some("1000"));
    assert_eq!(head.header("oc-checksum"), None);

    let env = dav.stop().await;
    let dav = Dav::serve(env).await;
    assert_eq!(offered(&dav, "/doc.txt").await, (Some(expected(&new).await.0), new));
}

/// The state a crash leaves between the answer to a large PUT without `OC-Checksum` and the
/// background hasher storing its hash (checksum.rs `Pending`): the marker, no hash. The file
/// is offered without one, and the next start computes it; a file changed behind davd's back
/// meanwhile gets none, never a wrong one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_left_pending_by_a_crash_is_computed_at_the_next_start() {
    use std::os::unix::fs::MetadataExt;
    let dav = Dav::start(None).await;
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 31 % 253) as u8).collect();
    let (header, both) = expected(&data).await;
    let root = dav.files_dir(ALICE);
    let user = shared::accounts::get_user(&dav.env.context.db, ALICE).await.unwrap();
    for path in ["/a-changed.bin", "/big.bin"] {
        assert_eq!(put(&dav, path, &data, &[]).await.status, 201);
        // Its hash stored after the answer first (so it cannot land after the marker below).
        for _ in 0..100 {
            if head_checksum(&dav, path).await.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(offered(&dav, path).await.0, Some(header.clone()));
        // As a crash before the hash was stored leaves it.
        let meta = std::fs::metadata(root.join(&path[1..])).unwrap();
        let marker = davd::checksum::Pending {
            stamp: davd::checksum::Stamp::of(&meta),
            ino: meta.ino(),
        };
        let mut conn = dav.env.context.db.acquire().await.unwrap();
        davd::props::set_own(&mut conn, user.id, path, &marker.to_prop())
            .await
            .unwrap();
        assert_eq!(offered(&dav, path).await.0, None, "{path}: no hash while it is pending");
    }
    // Rewritten behind davd's back (same size, another time) while davd was down.
    let changed = root.join("a-changed.bin");
    let mut other = data.clone();
    other[0] ^= 1;
    std::fs::write(&changed, &other).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&changed)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3600))
        .unwrap();

    let env = dav.stop().await;
    let dav = Dav::serve(env).await;
    let mut got = None;
    for _ in 0..100 {
        got = head_checksum(&dav, "/big.bin").await;
        if got.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(got, Some(header), "computed after the restart");
    let listing = multistatus(&dav, "/big.bin", "0", ASK_CHECKSUMS).await;
    assert_eq!(checksum_in(&listing, "/big.bin"), Some(both));
    // Queued before /big.bin (one hasher, in key order): its turn has passed, and it has none.
    assert_eq!(offered(&dav, "/a-changed.bin").await, (None, other));
}

/// Uploads that find the background hasher's queue full (a burst of large PUTs without
/// OC-Checksum) keep their marker; once the hasher has caught up they are queued again, without
/// waiting for a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashes_skipped_by_a_busy_hasher_are_computed_once_it_has_caught_up() {
    use std::os::unix::fs::MetadataExt;
    let dav = Dav::start(None).await;
    let db = dav.env.context.db.clone();
    let root = dav.files_dir(ALICE);
    let user = shared::accounts::get_user(&db, ALICE).await.unwrap();
    // The first upload makes the user's folder.
    assert_eq!(put(&dav, "/first.txt", b"first", &[]).await.status, 201);
    // More files than the queue holds (64), handed over at once: most find it full.
    let files = 120;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut conn = db.acquire().await.unwrap();
    let mut jobs = Vec::new();
    for i in 0..files {
        let key = format!("/burst-{i}.bin");
        let path = root.join(&key[1..]);
        std::fs::write(&path, &data).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let marker = davd::checksum::Pending {
            stamp: davd::checksum::Stamp::of(&meta),
            ino: meta.ino(),
        };
        davd::props::set_own(&mut conn, user.id, &key, &marker.to_prop())
            .await
            .unwrap();
        jobs.push((key, path, marker));
    }
    drop(conn);
    for (key, path, marker) in jobs {
        davd::checksum::hash_later(db.clone(), user.id, key, path, marker);
    }
    let pending = || async {
        let rows = davd::props::own_values(&db, davd::checksum::NS, davd::checksum::NAME, "")
            .await
            .unwrap();
        rows.iter()
            .filter(|(id, _, key, xml)| *id == user.id && key.starts_with("/burst-") && davd::checksum::is_pending(xml))
            .count()
    };
    let mut left = pending().await;
    for _ in 0..300 {
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        left = pending().await;
    }
    assert_eq!(left, 0, "files still without their hash 30 s after the burst");
    let (header, _) = expected(&data).await;
    assert_eq!(
        head_checksum(&dav, &format!("/burst-{}.bin", files - 1)).await,
        Some(header)
    );
}

// ---- rclone ----

/// Whether rclone succeeded, and what it printed (stdout then stderr).
async fn rclone_text(args: &[&str]) -> (bool, String) {
    let out = rclone(args).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// How many files rclone's final stats say it transferred: its `Transferred: N / M` line for
/// files, absent when nothing was (then the bytes line must say `0 B`).
fn files_transferred(stats: &str) -> Option<u64> {
    let lines: Vec<&str> = stats
        .lines()
        .filter_map(|l| l.split("Transferred:").nth(1))
        .map(str::trim)
        .collect();
    let files = lines
        .iter()
        .filter(|rest| !rest.contains("B/s"))
        .filter_map(|rest| rest.split('/').next()?.trim().parse().ok())
        .next_back();
    match files {
        Some(n) => Some(n),
        None => lines
            .iter()
            .rfind(|rest| rest.contains("B/s"))
            .filter(|rest| rest.starts_with("0 B /"))
            .map(|_| 0),
    }
}

fn local_tree(dir: &std::path::Path) {
    for (i, sub) in ["", "docs", "docs/deep", "ünï cödé"].iter().enumerate() {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).unwrap();
        for j in 0..3 {
            let len = (i * 7919 + j * 104_729) % 200_000;
            let data: Vec<u8> = (0..len).map(|k| ((k * 13 + i + j) % 251) as u8).collect();
            std::fs::write(d.join(format!("file {j}.bin")), data).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rclone_check_and_sync_checksum_compare_hashes() {
    shared::testing::require_tool("rclone");
    let dav = Dav::start(None).await;
    let tmp = tempfile::tempdir().unwrap();
    let up = tmp.path().join("up");
    local_tree(&up);
    let up_s = up.to_string_lossy().into_owned();

    // nextcloud: SHA-1 (rclone sends it as OC-Checksum with each upload, davd checks it).
    let nextcloud = rclone_remote(&dav, "nextcloud", "tree").await;
    let (ok, out) = rclone_text(&[
        "sync",
        "--checksum",
        "-v",
        "--stats",
        "1h",
        "--dump",
        "headers",
        &up_s,
        &nextcloud,
    ])
    .await;
    assert!(ok, "{out}");
    assert_eq!(files_transferred(&out), Some(12), "{out}");
    // Each upload carried its checksum, which davd checked, and was answered with its own.
    // (Go writes the header name as `Oc-Checksum`.)
    let carried = out.to_ascii_lowercase().matches("oc-checksum: sha1:").count();
    assert_eq!(carried, 24, "12 requests and 12 answers: {out}");
    let (ok, out) = rclone_text(&["check", "-v", &up_s, &nextcloud]).await;
    assert!(ok, "{out}");
    assert!(!out.contains("No common hash"), "rclone compared hashes: {out}");
    assert!(out.contains("Using sha1 for hash comparisons"), "{out}");
    assert!(
        out.contains("0 differences found") && out.contains("12 matching files"),
        "{out}"
    );
    // The second sync finds every file equal by its hash and transfers nothing.
    let (ok, out) = rclone_text(&["sync", "--checksum", "-v", "--stats", "1h", &up_s, &nextcloud]).await;
    assert!(ok, "{out}");
    assert_eq!(files_transferred(&out), Some(0), "{out}");

    // A file changed on one side but not in size: the hash finds it.
    let changed = up.join("docs/file 1.bin");
    let mut data = std::fs::read(&changed).unwrap();
    data[0] ^= 0xff;
    std::fs::write(&changed, &data).unwrap();
    let (ok, out) = rclone_text(&["check", &up_s, &nextcloud]).await;
    assert!(!ok, "the difference is found: {out}");
    assert!(out.contains("1 differences found"), "{out}");
    let (ok, out) = rclone_text(&["sync", "--checksum", "-v", "--stats", "1h", &up_s, &nextcloud]).await;
    assert!(ok, "{out}");
    assert_eq!(files_transferred(&out), Some(1), "{out}");

    // owncloud: MD5 and SHA-1 (rclone's check uses the first common one).
    let owncloud = rclone_remote(&dav, "owncloud", "tree").await;
    let (ok, out) = rclone_text(&["check", "-v", &up_s, &owncloud]).await;
    assert!(ok, "{out}");
    assert!(
        !out.contains("No common hash") && out.contains("for hash comparisons"),
        "{out}"
    );
    assert!(out.contains("0 differences found"), "{out}");
    let (ok, out) = rclone_text(&["sync", "--checksum", "-v", "--stats", "1h", &up_s, &owncloud]).await;
    assert!(ok, "{out}");
    assert_eq!(files_transferred(&out), Some(0), "{out}");
}
