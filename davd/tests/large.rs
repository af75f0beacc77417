//! Large files through the fast paths (issue #12): a PUT's body goes through the pipeline of a
//! writer thread and, when the client sent `OC-Checksum`, two hashing threads (fs/upload.rs,
//! checksum.rs `StreamHash`; else the hash is computed after the answer), a GET reads
//! and sends 1 MiB pieces (fs/read.rs), over plain HTTP the file's mapped pages. The hashes, the bytes, ranges across the pieces'
//! boundaries and the conditional headers stay exactly right, and a davd killed during a large
//! PUT keeps the old file.

mod common;

use std::time::Duration;

use common::*;

/// A body of `len` bytes that repeats nowhere near a 1 MiB period.
fn body(len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8 ^ (i >> 20) as u8)
        .collect()
}

/// `sha1sum`'s or `md5sum`'s hex digest of `file`.
async fn digest(tool: &str, file: &std::path::Path) -> String {
    shared::testing::require_tool(tool);
    let out = tokio::process::Command::new(tool).arg(file).output().await.unwrap();
    assert!(out.status.success(), "{tool}");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

const ASK_CHECKSUMS: &str = r#"<?xml version="1.0"?>
<d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns">
 <d:prop><d:getcontentlength/><oc:checksums/></d:prop>
</d:propfind>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_put_keeps_its_bytes_and_both_hashes() {
    let dav = Dav::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    // Not a multiple of the 1 MiB pieces, and past the 8 MiB writeback step.
    let data = body((9 << 20) + 12_345);
    let local = dir.path().join("big.bin");
    std::fs::write(&local, &data).unwrap();
    let sha1 = digest("sha1sum", &local).await;
    let md5 = digest("md5sum", &local).await;
    let file = local.to_string_lossy().into_owned();

    // With a Content-Length, and chunked (no length: the quota grows as it arrives).
    for (path, extra) in [
        ("/sized.bin", None),
        ("/chunked.bin", Some("Transfer-Encoding: chunked")),
    ] {
        let url = dav.url(path);
        let mut args = vec!["-T", &file];
        if let Some(h) = extra {
            args.extend(["-H", h]);
        }
        args.push(&url);
        let r = dav.curl(ALICE, &args).await;
        assert_eq!(r.status, 201, "PUT {path}: {}", r.text());
        // No OC-Checksum to check: answered before the hash is computed (issue #12), which
        // the background hasher stores shortly after (checksum.rs `Pending`).
        assert_eq!(r.header("oc-checksum"), None, "PUT {path}");
        assert!(
            std::fs::read(dav.files_dir(ALICE).join(&path[1..])).unwrap() == data,
            "{path} on disk"
        );
        let both = format!("SHA1:{sha1} MD5:{md5}");
        let mut listing = String::new();
        for _ in 0..100 {
            let r = propfind(&dav, path, "0", ASK_CHECKSUMS).await;
            assert_eq!(r.status, 207);
            listing = r.text();
            assert!(
                !listing.contains("SHA1:") || listing.contains(&both),
                "never a wrong hash: {listing}"
            );
            if listing.contains(&both) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(listing.contains(&both), "{path}: {listing}");
        let get = dav.curl(ALICE, &[&dav.url(path)]).await;
        assert_eq!(get.status, 200);
        assert!(get.body == data, "GET {path} gives the bytes back");
        assert_eq!(get.header("oc-checksum"), Some(format!("SHA1:{sha1}")));
    }
    // With the client's OC-Checksum the body is hashed on its way in and checked before the
    // answer, which carries the hash, stored at once.
    let url = dav.url("/claimed.bin");
    let claim = format!("OC-Checksum: SHA1:{sha1}");
    let r = dav.curl(ALICE, &["-T", &file, "-H", &claim, &url]).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("oc-checksum"), Some(format!("SHA1:{sha1}")));
    let listing = propfind(&dav, "/claimed.bin", "0", ASK_CHECKSUMS).await;
    assert!(
        listing.text().contains(&format!("SHA1:{sha1} MD5:{md5}")),
        "{}",
        listing.text()
    );

    // A wrong OC-Checksum on a large body: nothing stored, the old file stays.
    let url = dav.url("/sized.bin");
    let wrong = format!("OC-Checksum: MD5:{}", "0".repeat(32));
    let r = dav.curl(ALICE, &["-T", &file, "-H", &wrong, &url]).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(std::fs::read(dav.files_dir(ALICE).join("sized.bin")).unwrap() == data);
    assert!(
        names_in(&dav.files_dir(ALICE))
            .iter()
            .all(|n| !n.starts_with(".tinydc-upload-"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_and_conditions_on_a_file_read_in_large_pieces() {
    let dav = Dav::start(None).await;
    let data = body((3 << 20) + 777);
    let len = data.len();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("movie.bin");
    std::fs::write(&local, &data).unwrap();
    let url = dav.url("/movie.bin");
    let put = dav.curl(ALICE, &["-T", &local.to_string_lossy(), &url]).await;
    assert_eq!(put.status, 201);

    let whole = dav.curl(ALICE, &[&url]).await;
    assert_eq!(whole.status, 200);
    assert!(whole.body == data);
    assert_eq!(whole.header("content-length"), Some(len.to_string()));
    let etag = whole.header("etag").expect("an ETag");
    let modified = whole.header("last-modified").expect("a Last-Modified");

    // Single ranges: across the 1 MiB boundaries, open-ended, a suffix, the last byte.
    let mib = 1usize << 20;
    for (spec, from, to) in [
        (format!("{}-{}", mib - 10, mib + 10), mib - 10, mib + 10),
        (format!("{}-{}", mib - 1, 2 * mib + 1), mib - 1, 2 * mib + 1),
        (format!("{}-", 3 * mib - 5), 3 * mib - 5, len - 1),
        ("-1000".to_string(), len - 1000, len - 1),
        (format!("{}-{}", len - 1, len - 1), len - 1, len - 1),
        ("0-0".to_string(), 0, 0),
    ] {
        let r = dav.curl(ALICE, &["-r", &spec, &url]).await;
        assert_eq!(r.status, 206, "range {spec}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {from}-{to}/{len}")),
            "range {spec}"
        );
        assert!(r.body == data[from..=to], "range {spec}: the bytes");
    }
    // Several ranges: a multipart answer carrying each part.
    let r = dav
        .curl(ALICE, &["-r", &format!("5-9,{}-{}", mib + 3, mib + 7), &url])
        .await;
    assert_eq!(r.status, 206);
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("multipart/byteranges")
    );
    let text = r.body;
    for part in [&data[5..=9], &data[mib + 3..=mib + 7]] {
        assert!(
            text.windows(part.len()).any(|w| w == part),
            "a part is in the multipart answer"
        );
    }
    // Past the end: 416.
    let r = dav.curl(ALICE, &["-r", &format!("{}-", len + 10), &url]).await;
    assert_eq!(r.status, 416);

    // Conditional GETs (RFC 9110 section 13).
    let r = dav.curl(ALICE, &["-H", &format!("If-None-Match: {etag}"), &url]).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let r = dav
        .curl(ALICE, &["-H", &format!("If-Modified-Since: {modified}"), &url])
        .await;
    assert_eq!(r.status, 304);
    let r = dav.curl(ALICE, &["-H", "If-Match: \"not-this-one\"", &url]).await;
    assert_eq!(r.status, 412);
    let r = dav.curl(ALICE, &["-H", &format!("If-Match: {etag}"), &url]).await;
    assert_eq!(r.status, 200);
    assert!(r.body == data);
    // If-Range: the range only while the validator still matches.
    let r = dav
        .curl(ALICE, &["-r", "100-199", "-H", &format!("If-Range: {etag}"), &url])
        .await;
    assert_eq!(r.status, 206);
    assert!(r.body == data[100..200]);
    let r = dav
        .curl(ALICE, &["-r", "100-199", "-H", "If-Range: \"old\"", &url])
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body == data);
    // HEAD: the length, no body.
    let r = dav.curl(ALICE, &["-I", &url]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(len.to_string()));
    // (curl -I writes the header block where the body would go: no file bytes in it.)
    assert!(r.body.len() < 4096);
}

/// davd with its loopback plain-HTTP listener (a reverse proxy's side, where a GET sends the
/// file's mapped pages, fs/read.rs): its base URL, and what stops it.
async fn plain_listener(
    env: &shared::testing::TestEnv,
) -> (String, shared::net::Shutdown, tokio::task::JoinHandle<()>) {
    let path = env.dir.path().join(shared::config::CONFIG_FILE);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("[dav]\n", "[dav]\nhttp_listen = \"127.0.0.1:0\"\n");
    std::fs::write(&path, text).unwrap();
    let config = shared::Config::load(env.dir.path()).unwrap();
    let context = shared::Context::new(config, env.context.db.clone()).await.unwrap();
    let server = davd::Server::bind(context).await.unwrap();
    let base = format!(
        "http://127.0.0.1:{}",
        server.http_addr().expect("plain listener").port()
    );
    let shutdown = shared::net::Shutdown::new();
    let s = shutdown.clone();
    let task = tokio::spawn(async move { server.run(s).await.expect("davd runs") });
    (base, shutdown, task)
}

/// Over plain HTTP a GET hands hyper the file's mapped pages: whole files, ranges across
/// the pieces' boundaries, several ranges, conditions and HEAD are exactly as under TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_over_plain_http_sends_exact_bytes_from_mapped_pieces() {
    let env = shared::testing::TestEnv::new().await;
    env.add_user(ALICE, PW, None).await;
    let (base, shutdown, task) = plain_listener(&env).await;
    let auth = format!("{ALICE}:{PW}");
    let get = |args: &[&str]| {
        let mut all = vec!["-u".to_string(), auth.clone()];
        all.extend(args.iter().map(|a| a.to_string()));
        async move { curl(&all).await }
    };
    let data = body((5 << 20) + 333);
    let len = data.len();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("video.bin");
    std::fs::write(&local, &data).unwrap();
    let url = format!("{base}/video.bin");
    assert_eq!(get(&["-T", &local.to_string_lossy(), &url]).await.status, 201);

    let whole = get(&[&url]).await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.header("content-length"), Some(len.to_string()));
    assert!(whole.body == data, "the whole file");
    let etag = whole.header("etag").expect("an ETag");
    let mib = 1usize << 20;
    for (from, to) in [(mib - 1, 3 * mib + 1), (4095, 4097), (len - 5, len - 1), (0, len - 1)] {
        let r = get(&["-r", &format!("{from}-{to}"), &url]).await;
        assert_eq!(r.status, 206, "range {from}-{to}");
        assert!(r.body == data[from..=to], "range {from}-{to}: the bytes");
    }
    let r = get(&["-r", &format!("7-9,{}-{}", 2 * mib - 2, 2 * mib + 2), &url]).await;
    assert_eq!(r.status, 206);
    for part in [&data[7..=9], &data[2 * mib - 2..=2 * mib + 2]] {
        assert!(
            r.body.windows(part.len()).any(|w| w == part),
            "a part of the multipart answer"
        );
    }
    assert_eq!(get(&["-H", &format!("If-None-Match: {etag}"), &url]).await.status, 304);
    let head = get(&["-I", &url]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some(len.to_string()));
    // A small file and an empty one.
    for content in [&b"tiny"[..], b""] {
        let f = dir.path().join("small");
        std::fs::write(&f, content).unwrap();
        let u = format!("{base}/small-{}.txt", content.len());
        assert_eq!(get(&["-T", &f.to_string_lossy(), &u]).await.status, 201);
        let r = get(&[&u]).await;
        assert_eq!(r.status, 200);
        assert!(r.body == content);
    }
    shutdown.cancel();
    task.await.unwrap();
}

/// A file shrunk in place behind davd's back (by hand on the server: davd itself only ever
/// renames new files over old ones) while a GET over plain HTTP sends its mapped pages: that
/// answer breaks off, and davd (this very process) lives on and serves the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_cut_short_during_a_plain_get_breaks_only_that_answer() {
    let env = shared::testing::TestEnv::new().await;
    env.add_user(ALICE, PW, None).await;
    let (base, shutdown, task) = plain_listener(&env).await;
    let auth = format!("{ALICE}:{PW}");
    let data = body(48 << 20);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("big.bin");
    std::fs::write(&local, &data).unwrap();
    let url = format!("{base}/big.bin");
    let put = curl(&[
        "-u".into(),
        auth.clone(),
        "-T".into(),
        local.to_string_lossy().into(),
        url.clone(),
    ])
    .await;
    assert_eq!(put.status, 201);

    // Read slowly, so the pieces in flight are mapped when the file shrinks.
    let args: Vec<String> = vec![
        "-u".into(),
        auth.clone(),
        "--limit-rate".into(),
        "8M".into(),
        "--max-time".into(),
        "8".into(),
        url.clone(),
    ];
    let download = tokio::spawn(async move { curl(&args).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stored = env.context.user_files_dir(ALICE).join("big.bin");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&stored)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let r = download.await.unwrap();
    assert!(
        r.body.len() < data.len(),
        "the answer broke off ({} bytes)",
        r.body.len()
    );
    let n = r.body.len().min(1 << 20);
    assert!(r.body[..n] == data[..n], "what was sent before the cut is the file's");

    let again = curl(&["-u".into(), auth, url]).await;
    assert_eq!(again.status, 200, "davd still serves");
    assert!(again.body == data[..1 << 20]);
    shutdown.cancel();
    task.await.unwrap();
}

/// davd killed (SIGKILL) while a large PUT is being written: the old file is served after the
/// restart, whole, and the half-written temp file is swept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_large_put_keeps_the_old_file() {
    let env = binary_env("").await;
    let (mut child, port) = spawn_davd(&env).await;
    let url = format!("https://localhost:{port}/doc.bin");
    let auth = format!("{ALICE}:{PW}");
    let old = body(200_000);
    let dir = tempfile::tempdir().unwrap();
    let (old_file, new_file) = (dir.path().join("old"), dir.path().join("new"));
    std::fs::write(&old_file, &old).unwrap();
    std::fs::write(&new_file, body(64 << 20)).unwrap();
    let r = curl(&[
        "-u".into(),
        auth.clone(),
        "-T".into(),
        old_file.to_string_lossy().into(),
        url.clone(),
    ])
    .await;
    assert_eq!(r.status, 201);

    // The new version trickles in: 64 MiB at 8 MiB/s.
    let args: Vec<String> = vec![
        "-u".into(),
        auth.clone(),
        "--limit-rate".into(),
        "8M".into(),
        "-T".into(),
        new_file.to_string_lossy().into(),
        url.clone(),
    ];
    let upload = tokio::spawn(async move { curl(&args).await });
    let root = env.context.user_files_dir(ALICE);
    let temp_size = || {
        names_in(&root)
            .iter()
            .filter(|n| n.starts_with(".tinydc-upload-"))
            .filter_map(|n| std::fs::metadata(root.join(n)).ok())
            .map(|m| m.len())
            .max()
    };
    let mut written = None;
    for _ in 0..200 {
        if let Some(n) = temp_size()
            && n >= 4 << 20
        {
            written = Some(n);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(written.is_some(), "the upload is being written to a temp file");
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let r = upload.await.unwrap();
    assert_ne!(r.status, 201, "a killed davd acknowledged nothing");
    assert_eq!(
        std::fs::read(root.join("doc.bin")).unwrap(),
        old,
        "the old file is in place"
    );

    let (_child, port) = spawn_davd(&env).await;
    let url = format!("https://localhost:{port}/doc.bin");
    let r = curl(&["-u".into(), auth, url]).await;
    assert_eq!(r.status, 200);
    assert!(r.body == old, "the old content is served after the restart");
    let mut swept = false;
    for _ in 0..100 {
        if temp_size().is_none() {
            swept = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(swept, "the cut upload's temp file is swept at the restart");
}

/// issue #12: davd killed (SIGKILL) while small and large PUTs (no `OC-Checksum`, so a large
/// file's hash is computed after its answer) are being acknowledged one after another. After
/// the restart every acknowledged file is whole, usage equals the tree, and each large file's
/// hash, perhaps cut off by the kill, is offered right or not at all, and is there in the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_acknowledged_puts_loses_none_and_offers_no_wrong_hash() {
    let env = binary_env("").await;
    let (mut child, port) = spawn_davd(&env).await;
    let base = format!("https://localhost:{port}");
    let auth = format!("{ALICE}:{PW}");
    let dir = tempfile::tempdir().unwrap();
    let write = |name: String, data: &[u8]| {
        let local = dir.path().join(&name[1..]);
        std::fs::write(&local, data).unwrap();
        (name, local)
    };
    let small: Vec<_> = (0..60)
        .map(|i| write(format!("/s{i:03}.txt"), &body(4096 + 97 * i)))
        .collect();
    let large: Vec<_> = (0..3)
        .map(|i| write(format!("/l{i}.bin"), &body((24 << 20) + 1000 * i)))
        .collect();

    let put = |base: String, auth: String, name: String, local: std::path::PathBuf| async move {
        curl(&[
            "-u".into(),
            auth,
            "-T".into(),
            local.to_string_lossy().into(),
            format!("{base}{name}"),
        ])
        .await
        .status
    };
    // Small PUTs one after another, until the kill.
    let smalls = {
        let (base, auth, small) = (base.clone(), auth.clone(), small.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for (name, local) in small {
                if put(base.clone(), auth.clone(), name.clone(), local.clone()).await == 201 {
                    acked.push((name, local));
                } else {
                    break;
                }
            }
            acked
        })
    };
    // Large PUTs; the kill comes right after the second one is answered, while its hash is
    // (most likely) still being computed.
    let (killing, kill_now) = tokio::sync::oneshot::channel();
    let larges = {
        let (base, auth, large) = (base.clone(), auth.clone(), large.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut killing = Some(killing);
            for (name, local) in large {
                if put(base.clone(), auth.clone(), name.clone(), local.clone()).await != 201 {
                    break;
                }
                acked.push((name, local));
                if acked.len() == 2
                    && let Some(k) = killing.take()
                {
                    let _ = k.send(());
                }
            }
            acked
        })
    };
    tokio::time::timeout(Duration::from_secs(60), kill_now)
        .await
        .expect("two large PUTs answered within 60 s")
        .unwrap();
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let acked_small = smalls.await.unwrap();
    let acked_large = larges.await.unwrap();
    assert!(acked_small.len() >= 2, "small PUTs were answered before the kill");
    assert!(acked_large.len() >= 2);

    // Recovery runs before the restarted davd listens.
    let (_child, port) = spawn_davd(&env).await;
    let base = format!("https://localhost:{port}");
    let root = env.context.user_files_dir(ALICE);
    for (name, local) in acked_small.iter().chain(&acked_large) {
        assert!(
            std::fs::read(root.join(&name[1..])).unwrap() == std::fs::read(local).unwrap(),
            "{name} acknowledged, and whole after the restart"
        );
    }
    let user = shared::accounts::get_user(&env.context.db, ALICE).await.unwrap();
    let usage = shared::quota::info(&env.context.db, user.id).await.unwrap().file_bytes;
    assert_eq!(usage, shared::quota::tree_bytes(&root), "usage == the tree's bytes");

    for (name, local) in &acked_large {
        let right = format!("SHA1:{}", digest("sha1sum", local).await);
        let mut offered = None;
        for _ in 0..200 {
            let r = curl(&["-u".into(), auth.clone(), "-I".into(), format!("{base}{name}")]).await;
            assert_eq!(r.status, 200);
            offered = r.header("oc-checksum");
            if let Some(h) = &offered {
                assert_eq!(h, &right, "{name}: never a wrong hash");
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(offered, Some(right), "{name}: its hash is computed after the restart");
    }
}
