//! Quota: 507 Insufficient Storage before and during an upload, COPY charges, DELETE and
//! overwrite refund, and the RFC 4331 properties.

mod common;

use common::*;

const LIMIT: u64 = 100_000;

fn file(dir: &tempfile::TempDir, name: &str, len: usize) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, vec![b'q'; len]).unwrap();
    path.to_string_lossy().into_owned()
}

const QUOTA_PROPFIND: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:"><D:prop><D:quota-used-bytes/><D:quota-available-bytes/></D:prop></D:propfind>"#;

fn prop_value(xml: &str, name: &str) -> Option<u64> {
    let start = xml.find(&format!("{name}>"))? + name.len() + 1;
    let end = start + xml[start..].find('<')?;
    xml[start..end].trim().parse().ok()
}

async fn quota_props(dav: &Dav, path: &str) -> (Option<u64>, Option<u64>) {
    let r = dav
        .curl(
            ALICE,
            &[
                "-X",
                "PROPFIND",
                "-H",
                "Depth: 0",
                "-H",
                "Content-Type: application/xml",
                "--data-binary",
                QUOTA_PROPFIND,
                &dav.url(path),
            ],
        )
        .await;
    assert_eq!(r.status, 207, "{}", r.text());
    let xml = r.text();
    (
        prop_value(&xml, "quota-used-bytes"),
        prop_value(&xml, "quota-available-bytes"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_is_enforced_and_reported() {
    let dav = Dav::start(Some(LIMIT)).await;
    let tmp = tempfile::tempdir().unwrap();

    // Too big for the quota: refused before a byte is stored.
    let big = file(&tmp, "big", 150_000);
    let r = dav.curl(ALICE, &["-T", &big, &dav.url("/big.bin")]).await;
    assert_eq!(r.status, 507);
    assert!(names_in(&dav.files_dir(ALICE)).is_empty());
    assert_eq!(file_bytes(&dav, ALICE).await, 0);

    let a = file(&tmp, "a", 60_000);
    assert_eq!(dav.curl(ALICE, &["-T", &a, &dav.url("/a.bin")]).await.status, 201);
    assert_eq!(file_bytes(&dav, ALICE).await, 60_000);
    assert_eq!(quota_props(&dav, "/").await, (Some(60_000), Some(40_000)));
    // Also on the /dav/<address>/ root.
    assert_eq!(
        quota_props(&dav, "/dav/alice%40example.test/").await,
        (Some(60_000), Some(40_000))
    );

    // Overwriting with the same size fits: the old file's bytes come back.
    assert_eq!(dav.curl(ALICE, &["-T", &a, &dav.url("/a.bin")]).await.status, 204);
    assert_eq!(file_bytes(&dav, ALICE).await, 60_000);

    // A body of unknown length that grows past what fits is stopped with 507.
    let r = dav
        .curl(
            ALICE,
            &["-T", &a, "-H", "Transfer-Encoding: chunked", &dav.url("/chunked.bin")],
        )
        .await;
    assert_eq!(r.status, 507);
    assert_eq!(names_in(&dav.files_dir(ALICE)), vec!["a.bin".to_string()]);
    assert_eq!(file_bytes(&dav, ALICE).await, 60_000);

    // COPY charges: a second copy does not fit.
    let r = dav
        .curl(
            ALICE,
            &[
                "-X",
                "COPY",
                "-H",
                &format!("Destination: {}", dav.url("/b.bin")),
                &dav.url("/a.bin"),
            ],
        )
        .await;
    assert_eq!(r.status, 507, "{}", r.text());
    assert_eq!(names_in(&dav.files_dir(ALICE)), vec!["a.bin".to_string()]);

    // MOVE is free, DELETE refunds.
    let r = dav
        .curl(
            ALICE,
            &[
                "-X",
                "MOVE",
                "-H",
                &format!("Destination: {}", dav.url("/moved.bin")),
                &dav.url("/a.bin"),
            ],
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(file_bytes(&dav, ALICE).await, 60_000);
    assert_eq!(
        dav.curl(ALICE, &["-X", "DELETE", &dav.url("/moved.bin")]).await.status,
        204
    );
    assert_eq!(file_bytes(&dav, ALICE).await, 0);

    // Now a copy fits, and is charged.
    let small = file(&tmp, "s", 30_000);
    assert_eq!(dav.curl(ALICE, &["-T", &small, &dav.url("/s.bin")]).await.status, 201);
    let r = dav
        .curl(
            ALICE,
            &[
                "-X",
                "COPY",
                "-H",
                &format!("Destination: {}", dav.url("/s2.bin")),
                &dav.url("/s.bin"),
            ],
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(file_bytes(&dav, ALICE).await, 60_000);
    assert_eq!(quota_props(&dav, "/").await, (Some(60_000), Some(40_000)));

    // Every collection reports the account's quota (RFC 4331 section 3: the quota is the
    // account's, shared by all its collections).
    assert_eq!(dav.curl(ALICE, &["-X", "MKCOL", &dav.url("/sub/")]).await.status, 201);
    assert_eq!(quota_props(&dav, "/sub/").await, (Some(60_000), Some(40_000)));
    assert_eq!(dav.curl(ALICE, &["-X", "DELETE", &dav.url("/sub/")]).await.status, 204);

    // Deleting a folder refunds everything in it.
    assert_eq!(dav.curl(ALICE, &["-X", "MKCOL", &dav.url("/dir/")]).await.status, 201);
    assert_eq!(
        dav.curl(ALICE, &["-T", &small, &dav.url("/dir/x.bin")]).await.status,
        201
    );
    assert_eq!(file_bytes(&dav, ALICE).await, 90_000);
    assert_eq!(dav.curl(ALICE, &["-X", "DELETE", &dav.url("/dir/")]).await.status, 204);
    assert_eq!(file_bytes(&dav, ALICE).await, 60_000);

    // What is stored agrees with the recorded usage.
    assert_eq!(shared::quota::tree_bytes(&dav.files_dir(ALICE)), 60_000);
}

/// A body of unknown length grows its reservation in steps (64 MiB); an upload that fits must
/// be committed even when its steps together reserved more than the room left after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_upload_that_fits_is_not_refused_at_commit() {
    let dav = Dav::start(Some(130 << 20)).await;
    let tmp = tempfile::tempdir().unwrap();
    let body = file(&tmp, "hundred", 100 << 20);
    let r = dav
        .curl(
            ALICE,
            &["-T", &body, "-H", "Transfer-Encoding: chunked", &dav.url("/h.bin")],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(file_bytes(&dav, ALICE).await, 100 << 20);
    assert_eq!(shared::quota::tree_bytes(&dav.files_dir(ALICE)), 100 << 20);
    let user = shared::accounts::get_user(&dav.env.context.db, ALICE).await.unwrap();
    let info = shared::quota::info(&dav.env.context.db, user.id).await.unwrap();
    assert_eq!(info.reserved_bytes, 0, "no reservation left");
}
