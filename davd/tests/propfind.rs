//! davd's own PROPFIND (propfind.rs) against hostile and large input, over real HTTPS with
//! curl: bodies it cannot read, thousands of named properties, a folder of 20,000 entries
//! (streamed, bounded memory), and another user's paths.

mod common;

use common::*;

/// The number of `<D:response>` elements of an answer.
fn responses(body: &[u8]) -> usize {
    body.windows(12).filter(|w| w == b"<D:response>").count()
}

/// The peak resident memory of this process so far (VmHWM), in KiB.
/// The peak memory measured below is this whole test process's: the tests that build large
/// requests or answers take this lock, so none of them runs beside the measurement.
static MEMORY_HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_davd_cannot_read_get_dav_server_s_400_and_davd_keeps_serving() {
    let _heavy = MEMORY_HEAVY.lock().await;
    let dav = Dav::start(None).await;
    assert_eq!(
        dav.curl(ALICE, &["-X", "PUT", "--data-binary", "x", &dav.url("/f.txt")])
            .await
            .status,
        201
    );
    for body in [
        "<D:propfind xmlns:D=\"DAV:\"><D:prop><D:getetag/></D:prop>",
        "not xml at all",
        r#"<x:propfind xmlns:x="urn:unknown"><x:prop><x:getetag/></x:prop></x:propfind>"#,
        r#"<D:propfind xmlns:D="DAV:"><D:prop><y:a xmlns:y="urn:y"/></D:prop></D:propfind"#,
        r#"<D:propfind xmlns:D="DAV:"><D:prop><u:a/></D:prop></D:propfind>"#,
    ] {
        for depth in ["0", "1"] {
            let r = propfind(&dav, "/", depth, body).await;
            assert_eq!(r.status, 400, "{body}: {}", r.text());
            assert!(!r.text().contains("f.txt"), "{body}");
        }
    }
    // Nested deeper than xmlcheck.rs allows: refused before anything reads it.
    let deep = format!(
        r#"<D:propfind xmlns:D="DAV:"><D:prop><x:a xmlns:x="urn:x">{}{}</x:a></D:prop></D:propfind>"#,
        "<x:b>".repeat(5000),
        "</x:b>".repeat(5000)
    );
    assert_eq!(propfind(&dav, "/", "1", &deep).await.status, 400);
    // An unknown namespace on the properties is a property like any other: 404 for each.
    let r = propfind(
        &dav,
        "/f.txt",
        "0",
        r#"<D:propfind xmlns:D="DAV:"><D:prop><q:thing xmlns:q="urn:never:seen"/><D:getetag/></D:prop></D:propfind>"#,
    )
    .await;
    assert_eq!(r.status, 207);
    let t = r.text();
    assert!(
        t.contains(r#"<thing xmlns="urn:never:seen"/>"#) && t.contains("404 Not Found"),
        "{t}"
    );
    // And davd still answers.
    assert_eq!(propfind(&dav, "/", "1", "").await.status, 207);
    dav.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_named_properties_each_answered_once() {
    let _heavy = MEMORY_HEAVY.lock().await;
    let dav = Dav::start(None).await;
    for i in 0..5 {
        let r = dav
            .curl(ALICE, &["-X", "PUT", "--data-binary", "x", &dav.url(&format!("/f{i}"))])
            .await;
        assert_eq!(r.status, 201);
    }
    // 10,000 distinct names (three letters, in the DAV: namespace) and each of them again:
    // about 60 KiB, under the 64 KiB body limit.
    let names: Vec<String> = (0..10_000u32)
        .map(|i| {
            let l = |n: u32| char::from(b'a' + (n % 26) as u8);
            format!("{}{}{}", l(i / 676), l(i / 26), l(i))
        })
        .collect();
    let mut body = String::from(r#"<propfind xmlns="DAV:"><prop><getetag/>"#);
    for n in &names {
        body.push_str(&format!("<{n}/>"));
    }
    body.push_str("<getetag/></prop></propfind>");
    assert!(body.len() < 64 << 10, "{}", body.len());
    let started = std::time::Instant::now();
    let r = propfind(&dav, "/", "1", &body).await;
    assert_eq!(r.status, 207, "{}", r.text());
    let t = r.text();
    assert_eq!(responses(&r.body), 6);
    // Each name once per response: in the 404 propstat, under the DAV: prefix.
    for n in ["aaa", "abc", &names[9_999]] {
        assert_eq!(t.matches(&format!("<D:{n}/>")).count(), 6, "{n}");
    }
    assert_eq!(t.matches("<D:getetag>").count(), 6, "one in each response");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    dav.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_of_twenty_thousand_entries_is_streamed() {
    let _heavy = MEMORY_HEAVY.lock().await;
    let dav = Dav::start(None).await;
    assert_eq!(dav.curl(ALICE, &["-X", "MKCOL", &dav.url("/big/")]).await.status, 201);
    let dir = dav.files_dir(ALICE).join("big");
    for i in 0..20_000 {
        std::fs::write(dir.join(format!("entry-{i:05}.txt")), b"").unwrap();
    }
    // Written by curl to a file: the test process holds none of the answer while it runs.
    shared::testing::require_tool("curl");
    let out = tempfile::tempdir().unwrap();
    let (file, headers) = (out.path().join("answer.xml"), out.path().join("headers"));
    let before = peak_rss_kib();
    let curl = tokio::process::Command::new("curl")
        .args([
            "-k",
            "-s",
            "-S",
            "-u",
            &format!("{ALICE}:{PW}"),
            "-X",
            "PROPFIND",
            "-H",
            "Depth: 1",
            "-D",
        ])
        .arg(&headers)
        .arg("-o")
        .arg(&file)
        .args(["-w", "%{http_code}", &dav.url("/big/")])
        .output()
        .await
        .expect("run curl");
    let grown = peak_rss_kib().saturating_sub(before);
    assert_eq!(String::from_utf8_lossy(&curl.stdout), "207");
    let headers = std::fs::read_to_string(&headers).unwrap().to_ascii_lowercase();
    let answer = std::fs::read(&file).unwrap();
    assert_eq!(responses(&answer), 20_001);
    // Streamed: no length known before, and davd never held the answer (over 10 MiB of
    // allprop XML) nor the listing at once.
    assert!(!headers.contains("content-length:"), "{headers}");
    assert!(answer.len() > 10 << 20, "{}", answer.len());
    assert!(
        grown < (answer.len() as u64 / 1024) / 3,
        "the peak memory grew by {grown} KiB for a {} KiB answer",
        answer.len() / 1024
    );
    dav.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bob_s_propfind_never_shows_alice_s_files() {
    let dav = Dav::start(None).await;
    for path in ["/alice-secret.txt", "/folder/inner-secret.txt"] {
        if path.starts_with("/folder") {
            dav.curl(ALICE, &["-X", "MKCOL", &dav.url("/folder/")]).await;
        }
        let r = dav
            .curl(ALICE, &["-X", "PUT", "--data-binary", "secret", &dav.url(path)])
            .await;
        assert_eq!(r.status, 201);
    }
    let named = r#"<D:propfind xmlns:D="DAV:"><D:prop><D:getetag/><D:displayname/></D:prop></D:propfind>"#;
    for path in [
        "/dav/alice@example.test/",
        "/dav/alice%40example.test/folder/",
        "/dav/alice@example.test/alice-secret.txt",
        "/remote.php/dav/files/alice@example.test/",
        "/../alice@example.test/",
        "/%2e%2e/alice@example.test/folder/",
    ] {
        for depth in ["0", "1"] {
            for body in ["", named] {
                let r = dav
                    .curl(
                        BOB,
                        &[
                            "--path-as-is",
                            "-X",
                            "PROPFIND",
                            "-H",
                            &format!("Depth: {depth}"),
                            "--data-binary",
                            body,
                            &dav.url(path),
                        ],
                    )
                    .await;
                let t = r.text();
                assert!(
                    !t.contains("secret") && !t.contains("folder"),
                    "bob PROPFIND {path} Depth {depth}: {} {t}",
                    r.status
                );
                assert_ne!(r.status, 207, "bob PROPFIND {path}: {t}");
            }
        }
    }
    // Bob's own root lists only his (empty) tree.
    let r = dav
        .curl(BOB, &["-X", "PROPFIND", "-H", "Depth: 1", &dav.url("/")])
        .await;
    assert_eq!(r.status, 207);
    assert_eq!(responses(&r.body), 1, "{}", r.text());
    dav.stop().await;
}
