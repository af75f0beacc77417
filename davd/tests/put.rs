//! PUT: atomic replacement, aborted and short uploads, Finder's chunked uploads, and the HTTP
//! conditionals (ETag, If-Match, If-None-Match, Range).

mod common;

use common::*;

fn write_file(dir: &tempfile::TempDir, name: &str, len: usize, byte: u8) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, vec![byte; len]).unwrap();
    path.to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_put_keeps_the_old_content_and_leaves_no_temp_file() {
    let dav = Dav::start(None).await;
    let url = dav.url("/doc.txt");
    let tmp = tempfile::tempdir().unwrap();
    let old = write_file(&tmp, "old", 1000, b'o');
    assert_eq!(dav.curl(ALICE, &["-T", &old, &url]).await.status, 201);
    let before = file_bytes(&dav, ALICE).await;
    assert_eq!(before, 1000);

    // 20 MB announced, sent at 1 MB/s, cut off after about a second.
    let big = write_file(&tmp, "big", 20 << 20, b'n');
    let r = dav
        .curl(ALICE, &["--limit-rate", "1M", "--max-time", "1", "-T", &big, &url])
        .await;
    // curl reports 0 or the interim 100 Continue: no final answer was received.
    assert!(
        !(200..300).contains(&r.status),
        "the upload was cut off by the client: {}",
        r.status
    );
    // The server notices the broken body, drops the upload and releases its reservation.
    let mut clean = false;
    for _ in 0..50 {
        let names = names_in(&dav.files_dir(ALICE));
        let user = shared::accounts::get_user(&dav.env.context.db, ALICE).await.unwrap();
        let info = shared::quota::info(&dav.env.context.db, user.id).await.unwrap();
        if names == vec!["doc.txt".to_string()] && info.reserved_bytes == 0 {
            clean = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        clean,
        "temp file or reservation left: {:?}",
        names_in(&dav.files_dir(ALICE))
    );
    let got = dav.curl(ALICE, &[&url]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, vec![b'o'; 1000], "old content intact");
    assert_eq!(file_bytes(&dav, ALICE).await, before, "usage unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finder_chunked_put_with_expected_entity_length() {
    let dav = Dav::start(None).await;
    let tmp = tempfile::tempdir().unwrap();
    let body = write_file(&tmp, "f", 300_000, b'f');
    let url = dav.url("/finder.bin");
    // What macOS Finder sends: chunked transfer, the real size in X-Expected-Entity-Length.
    let r = dav
        .curl(
            ALICE,
            &[
                "-T",
                &body,
                "-H",
                "Transfer-Encoding: chunked",
                "-H",
                "X-Expected-Entity-Length: 300000",
                "-A",
                "WebDAVFS/3.0.0 (03008000) Darwin/22.1.0 (x86_64)",
                &url,
            ],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.headers);
    let got = dav.curl(ALICE, &[&url]).await;
    assert_eq!(got.body.len(), 300_000);
    assert_eq!(file_bytes(&dav, ALICE).await, 300_000);

    // A chunked body that ends before the announced size is not committed.
    let short = write_file(&tmp, "s", 1000, b's');
    let r = dav
        .curl(
            ALICE,
            &[
                "-T",
                &short,
                "-H",
                "Transfer-Encoding: chunked",
                "-H",
                "X-Expected-Entity-Length: 300000",
                &url,
            ],
        )
        .await;
    assert!(r.status >= 400, "short body refused, got {}", r.status);
    let got = dav.curl(ALICE, &[&url]).await;
    assert_eq!(got.body, vec![b'f'; 300_000], "previous content kept");
    assert_eq!(names_in(&dav.files_dir(ALICE)), vec!["finder.bin".to_string()]);
    assert_eq!(file_bytes(&dav, ALICE).await, 300_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etag_conditionals_and_ranges() {
    let dav = Dav::start(None).await;
    let url = dav.url("/r.txt");
    let r = dav
        .curl(ALICE, &["-X", "PUT", "--data-binary", "0123456789", &url])
        .await;
    assert_eq!(r.status, 201);
    let etag = r.header("etag").expect("PUT answers an ETag");

    let got = dav.curl(ALICE, &["-H", "Range: bytes=2-5", &url]).await;
    assert_eq!(got.status, 206);
    assert_eq!(got.text(), "2345");
    assert_eq!(got.header("etag").as_deref(), Some(etag.as_str()));

    let got = dav.curl(ALICE, &["-H", &format!("If-None-Match: {etag}"), &url]).await;
    assert_eq!(got.status, 304);

    // A stale If-Match loses (RFC 9110 section 13.1.1) and changes nothing.
    let r = dav
        .curl(
            ALICE,
            &["-X", "PUT", "-H", "If-Match: \"stale\"", "--data-binary", "x", &url],
        )
        .await;
    assert_eq!(r.status, 412);
    let r = dav
        .curl(
            ALICE,
            &[
                "-X",
                "PUT",
                "-H",
                &format!("If-Match: {etag}"),
                "--data-binary",
                "new",
                &url,
            ],
        )
        .await;
    assert_eq!(r.status, 204);
    let new_etag = r.header("etag").unwrap();
    assert_ne!(new_etag, etag, "a new version has a new ETag");
    // If-None-Match: * refuses to overwrite.
    let r = dav
        .curl(
            ALICE,
            &["-X", "PUT", "-H", "If-None-Match: *", "--data-binary", "y", &url],
        )
        .await;
    assert_eq!(r.status, 412);
    assert_eq!(dav.curl(ALICE, &[&url]).await.text(), "new");

    // Partial PUT is not implemented: refused, not half-applied.
    let r = dav
        .curl(
            ALICE,
            &[
                "-X",
                "PUT",
                "-H",
                "Content-Range: bytes 0-1/3",
                "--data-binary",
                "zz",
                &url,
            ],
        )
        .await;
    assert_eq!(r.status, 400);
    let r = dav.curl(ALICE, &["-X", "PATCH", "--data-binary", "zz", &url]).await;
    assert_eq!(r.status, 405);
    assert_eq!(dav.curl(ALICE, &[&url]).await.text(), "new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_into_a_missing_folder_conflicts() {
    let dav = Dav::start(None).await;
    let r = dav
        .curl(ALICE, &["-X", "PUT", "--data-binary", "x", &dav.url("/nope/x.txt")])
        .await;
    assert_eq!(r.status, 409);
    assert!(names_in(&dav.files_dir(ALICE)).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finder_appledouble_and_ds_store_files_work() {
    let dav = Dav::start(None).await;
    let tmp = tempfile::tempdir().unwrap();
    let ad = write_file(&tmp, "ad", 4096, 0);
    let ua = "WebDAVFS/3.0.0 (03008000) Darwin/22.1.0 (x86_64)";
    // Finder probes for the resource fork and the folder settings first: cheap 404s.
    for path in ["/._photo.jpg", "/.DS_Store"] {
        let r = dav
            .curl(ALICE, &["-A", ua, "-X", "PROPFIND", "-H", "Depth: 0", &dav.url(path)])
            .await;
        assert_eq!(r.status, 404, "{path}");
    }
    for path in ["/._photo.jpg", "/.DS_Store", "/photo.jpg"] {
        let r = dav
            .curl(
                ALICE,
                &[
                    "-A",
                    ua,
                    "-T",
                    &ad,
                    "-H",
                    "Transfer-Encoding: chunked",
                    "-H",
                    "X-Expected-Entity-Length: 4096",
                    &dav.url(path),
                ],
            )
            .await;
        assert_eq!(r.status, 201, "{path}");
    }
    let r = dav
        .curl(ALICE, &["-A", ua, "-X", "PROPFIND", "-H", "Depth: 1", &dav.url("/")])
        .await;
    assert_eq!(r.status, 207);
    assert!(r.text().contains("._photo.jpg") && r.text().contains(".DS_Store"));
    assert_eq!(
        dav.curl(ALICE, &["-A", ua, "-X", "DELETE", &dav.url("/._photo.jpg")])
            .await
            .status,
        204
    );
    assert_eq!(file_bytes(&dav, ALICE).await, 8192);
}

/// GET reads ahead of what dav-server asks for (fs/read.rs `READ_AHEAD`): a whole file, a
/// single range and several ranges (each a seek) past read-ahead boundaries come back exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_ranges_across_read_ahead_boundaries_are_exact() {
    let dav = Dav::start(None).await;
    let url = dav.url("/counted.bin");
    // Every 4 bytes name their own offset: a slice from the wrong place cannot match.
    let data: Vec<u8> = (0..300_000u32).flat_map(|i| (i * 4).to_le_bytes()).collect();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("counted.bin");
    std::fs::write(&path, &data).unwrap();
    assert_eq!(
        dav.curl(ALICE, &["-T", &path.to_string_lossy(), &url]).await.status,
        201
    );

    let got = dav.curl(ALICE, &[&url]).await;
    assert_eq!(got.status, 200);
    assert!(got.body == data, "the whole file comes back exact");

    let got = dav.curl(ALICE, &["-H", "Range: bytes=262100-262200", &url]).await;
    assert_eq!(got.status, 206);
    assert!(
        got.body == data[262100..=262200],
        "a range across a read-ahead boundary"
    );

    let ranges = [(10usize, 300_000usize), (700_000, 800_123), (1_100_000, 1_199_999)];
    let spec: Vec<String> = ranges.iter().map(|(a, b)| format!("{a}-{b}")).collect();
    let got = dav
        .curl(ALICE, &["-H", &format!("Range: bytes={}", spec.join(",")), &url])
        .await;
    assert_eq!(got.status, 206);
    for (a, b) in ranges {
        let want = &data[a..=b];
        assert!(
            got.body.windows(want.len()).any(|w| w == want),
            "the part {a}-{b} is in the multipart answer"
        );
    }
}
