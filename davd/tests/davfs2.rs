//! davfs2 (the Linux WebDAV mount, `mount -t davfs`), replayed request by request: davfs2
//! 1.7 speaks through neon (src/webdav.c: dav_init_connection, dav_get_collection, dav_quota,
//! dav_lock, dav_put, dav_head, dav_get_file, dav_set_execute, dav_move, dav_unlock,
//! dav_delete), with neon's bodies and headers. davfs2 itself is not installed here (and
//! mounting needs root and FUSE or the coda kernel module), so curl sends what it sends.

mod common;

use common::*;

const UA: &str = "davfs2/1.7.0 neon/0.32.5";

/// dav_get_collection: neon's PROPFIND of the five properties, `Depth: 1`.
const COLLECTION_BODY: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<propfind xmlns=\"DAV:\"><prop>\n<resourcetype xmlns=\"DAV:\"/>\n<getcontentlength xmlns=\"DAV:\"/>\n<getetag xmlns=\"DAV:\"/>\n<getlastmodified xmlns=\"DAV:\"/>\n<executable xmlns=\"http://apache.org/dav/props/\"/>\n</prop></propfind>\n";

/// dav_quota (statfs, `df`): RFC 4331, `Depth: 0`.
const QUOTA_BODY: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<propfind xmlns=\"DAV:\"><prop>\n<quota-available-bytes xmlns=\"DAV:\"/>\n<quota-used-bytes xmlns=\"DAV:\"/>\n</prop></propfind>\n";

/// neon's ne_lock body; davfs2 sends the user name as owner and `Timeout: Second-1800`.
const LOCK_BODY: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<lockinfo xmlns='DAV:'>\n <lockscope><exclusive/></lockscope>\n<locktype><write/></locktype><owner>alice@example.test</owner>\n</lockinfo>\n";

/// dav_set_execute (`chmod +x`): neon's ne_proppatch of Apache's `executable`.
const EXECUTE_BODY: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:propertyupdate xmlns:D=\"DAV:\"><D:set><D:prop><executable xmlns=\"http://apache.org/dav/props/\">T</executable></D:prop></D:set></D:propertyupdate>\n";

async fn davfs2(dav: &Dav, args: &[&str]) -> Reply {
    let mut all = vec!["-A", UA];
    all.extend_from_slice(args);
    dav.curl(ALICE, &all).await
}

async fn propfind(dav: &Dav, path: &str, depth: &str, body: &str) -> Reply {
    davfs2(
        dav,
        &[
            "-X",
            "PROPFIND",
            "-H",
            &format!("Depth: {depth}"),
            "-H",
            "Content-Type: application/xml",
            "--data-binary",
            body,
            &dav.url(path),
        ],
    )
    .await
}

/// The text of property `name` (any namespace) in the response for `href`, with its status.
fn prop(xml: &str, href: &str, name: &str) -> Option<(String, String)> {
    let root = xmltree::Element::parse(xml.as_bytes()).unwrap_or_else(|e| panic!("{e}: {xml}"));
    let elements = |e: &xmltree::Element| -> Vec<xmltree::Element> {
        e.children.iter().filter_map(|n| n.as_element().cloned()).collect()
    };
    let response = elements(&root)
        .into_iter()
        .find(|r| r.get_child("href").and_then(|h| h.get_text()).as_deref() == Some(href))?;
    elements(&response)
        .into_iter()
        .filter(|p| p.name == "propstat")
        .find_map(|p| {
            let status = p.get_child("status")?.get_text()?.to_string();
            let value = p
                .get_child("prop")?
                .get_child(name)?
                .get_text()
                .unwrap_or_default()
                .to_string();
            Some((status, value))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn davfs2_mount_create_edit_rename_delete() {
    let dav = Dav::start(Some(1_000_000)).await;
    let url = dav.url("/notes.txt");

    // Mount: OPTIONS (class 2: davfs2 turns its locks on), the root's listing, `df`.
    let r = davfs2(&dav, &["-X", "OPTIONS", &dav.url("/")]).await;
    assert_eq!(r.header("dav").as_deref(), Some("1, 2"));
    let r = propfind(&dav, "/", "1", COLLECTION_BODY).await;
    assert_eq!(r.status, 207, "{}", r.text());
    assert!(prop(&r.text(), "/", "resourcetype").is_some(), "{}", r.text());
    let r = propfind(&dav, "/", "0", QUOTA_BODY).await;
    assert_eq!(r.status, 207, "{}", r.text());
    assert_eq!(
        prop(&r.text(), "/", "quota-available-bytes"),
        Some(("HTTP/1.1 200 OK".into(), "1000000".into()))
    );

    // `echo ... > notes.txt`: dav_lock of a new file creates it (RFC 4918 section 9.10.4, a
    // lock on an unmapped URL) under If-None-Match: *, then dav_put with the lock (neon's
    // tagged If list), and no If-Match (davfs2 knows no ETag yet).
    let r = davfs2(
        &dav,
        &[
            "-X",
            "LOCK",
            "-H",
            "Depth: 0",
            "-H",
            "Timeout: Second-1800",
            "-H",
            "If-None-Match: *",
            "-H",
            "Content-Type: application/xml",
            "--data-binary",
            LOCK_BODY,
            &url,
        ],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let token = r.header("lock-token").expect("Lock-Token");
    let tagged_if = format!("If: <{url}> ({token})");
    // A second lock of the now existing file under If-None-Match: * fails (davfs2: EEXIST).
    let r = davfs2(
        &dav,
        &["-X", "LOCK", "-H", "If-None-Match: *", "--data-binary", LOCK_BODY, &url],
    )
    .await;
    assert!(r.status == 412 || r.status == 423, "{}", r.status);

    let r = davfs2(&dav, &["-X", "PUT", "-H", &tagged_if, "--data-binary", "first\n", &url]).await;
    assert!(r.status == 201 || r.status == 204, "{}: {}", r.status, r.text());
    let etag = r.header("etag").expect("ETag on PUT (else davfs2 sends a HEAD)");
    let r = davfs2(&dav, &["-I", &url]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag").as_deref(), Some(etag.as_str()));
    assert_eq!(r.header("content-length").as_deref(), Some("6"));
    assert!(r.header("last-modified").is_some());

    // `chmod +x`: Apache's executable property is live in dav-server (the file's execute bit,
    // which davd does not keep): refused as protected inside the 207 (RFC 4918 section 9.2),
    // so davfs2 reports the chmod as failed and nothing else changes.
    let r = davfs2(
        &dav,
        &["-X", "PROPPATCH", "-H", &tagged_if, "--data-binary", EXECUTE_BODY, &url],
    )
    .await;
    assert_eq!(r.status, 207, "{}", r.text());
    assert!(r.text().contains("403 Forbidden"), "{}", r.text());

    // Reading it again from its cache: If-None-Match with the ETag is 304.
    let r = davfs2(&dav, &["-H", &format!("If-None-Match: {etag}"), &url]).await;
    assert_eq!(r.status, 304);

    // An edit: PUT with If-Match (the ETag davfs2 has) and the lock; a stale ETag is 412.
    let r = davfs2(
        &dav,
        &[
            "-X",
            "PUT",
            "-H",
            &tagged_if,
            "-H",
            &format!("If-Match: {etag}"),
            "--data-binary",
            "second\n",
            &url,
        ],
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = davfs2(
        &dav,
        &[
            "-X",
            "PUT",
            "-H",
            &tagged_if,
            "-H",
            &format!("If-Match: {etag}"),
            "--data-binary",
            "lost update\n",
            &url,
        ],
    )
    .await;
    assert_eq!(r.status, 412);
    assert_eq!(davfs2(&dav, &[&url]).await.text(), "second\n");
    // Closing the file releases the lock.
    let r = davfs2(&dav, &["-X", "UNLOCK", "-H", &format!("Lock-Token: {token}"), &url]).await;
    assert_eq!(r.status, 204);

    let r = propfind(&dav, "/", "1", COLLECTION_BODY).await;
    let xml = r.text();
    assert_eq!(
        prop(&xml, "/notes.txt", "executable"),
        Some(("HTTP/1.1 200 OK".into(), "F".into())),
        "{xml}"
    );
    assert_eq!(
        prop(&xml, "/notes.txt", "getcontentlength"),
        Some(("HTTP/1.1 200 OK".into(), "7".into()))
    );
    // A folder has no content length: 404 in its own propstat (RFC 4918 section 9.1).
    assert_eq!(
        prop(&xml, "/", "getcontentlength").map(|p| p.0),
        Some("HTTP/1.1 404 Not Found".into())
    );

    // mkdir (twice: the second 405 is routine), mv into it (MOVE, Overwrite: T), rm, rmdir.
    assert_eq!(davfs2(&dav, &["-X", "MKCOL", &dav.url("/docs/")]).await.status, 201);
    assert_eq!(davfs2(&dav, &["-X", "MKCOL", &dav.url("/docs/")]).await.status, 405);
    let r = davfs2(
        &dav,
        &[
            "-X",
            "MOVE",
            "-H",
            "Overwrite: T",
            "-H",
            &format!("Destination: {}", dav.url("/docs/notes.txt")),
            &url,
        ],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = propfind(&dav, "/docs/", "1", COLLECTION_BODY).await;
    assert_eq!(
        prop(&r.text(), "/docs/notes.txt", "getcontentlength").map(|p| p.1),
        Some("7".into()),
        "{}",
        r.text()
    );
    assert_eq!(file_bytes(&dav, ALICE).await, 7);
    assert_eq!(
        davfs2(&dav, &["-X", "DELETE", &dav.url("/docs/notes.txt")])
            .await
            .status,
        204
    );
    assert_eq!(davfs2(&dav, &["-X", "DELETE", &dav.url("/docs/")]).await.status, 204);
    assert_eq!(file_bytes(&dav, ALICE).await, 0);
    assert!(names_in(&dav.files_dir(ALICE)).is_empty());
}
