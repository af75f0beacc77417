//! Two users never see or touch each other's files; traversal and symlinks lead nowhere.

mod common;

use common::*;

const PROPFIND_NAMES: &str =
    r#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/></D:prop></D:propfind>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_are_isolated() {
    let dav = Dav::start(None).await;
    let r = dav
        .curl(
            ALICE,
            &["-X", "PUT", "--data-binary", "alice's secret", &dav.url("/secret.txt")],
        )
        .await;
    assert_eq!(r.status, 201);
    // Alice finds it at / and at /dav/<her address>/.
    assert_eq!(
        dav.curl(ALICE, &[&dav.url("/secret.txt")]).await.text(),
        "alice's secret"
    );
    assert_eq!(
        dav.curl(ALICE, &[&dav.url("/dav/alice@example.test/secret.txt")])
            .await
            .text(),
        "alice's secret"
    );

    // Bob sees nothing of it, by any path.
    for path in [
        "/secret.txt",
        "/dav/alice@example.test/secret.txt",
        "/dav/alice%40example.test/secret.txt",
        "/../alice@example.test/secret.txt",
        "/%2e%2e/alice@example.test/secret.txt",
        "/x/%2e%2e/%2e%2e/alice@example.test/secret.txt",
    ] {
        let r = dav.curl(BOB, &["--path-as-is", &dav.url(path)]).await;
        assert!(
            r.status == 404 || r.status == 403 || r.status == 400,
            "bob GET {path}: {} {}",
            r.status,
            r.text()
        );
        assert!(!r.text().contains("secret"), "bob GET {path} leaked");
    }
    let r = dav
        .curl(
            BOB,
            &[
                "-X",
                "PROPFIND",
                "-H",
                "Depth: 1",
                "--data-binary",
                PROPFIND_NAMES,
                &dav.url("/"),
            ],
        )
        .await;
    assert_eq!(r.status, 207);
    assert!(!r.text().contains("secret"), "{}", r.text());
    let r = dav
        .curl(
            BOB,
            &[
                "-X",
                "PROPFIND",
                "-H",
                "Depth: 1",
                "--data-binary",
                PROPFIND_NAMES,
                &dav.url("/dav/alice@example.test/"),
            ],
        )
        .await;
    assert_eq!(r.status, 404);

    // Nor can he delete, overwrite or move it.
    let r = dav
        .curl(BOB, &["-X", "DELETE", &dav.url("/dav/alice@example.test/secret.txt")])
        .await;
    assert_eq!(r.status, 404);
    let r = dav
        .curl(
            BOB,
            &[
                "-X",
                "PUT",
                "--data-binary",
                "bob",
                &dav.url("/dav/alice@example.test/secret.txt"),
            ],
        )
        .await;
    assert!(r.status == 409 || r.status == 404, "{}", r.status);
    // A MOVE whose destination names alice's tree stays inside bob's (or is refused).
    assert_eq!(
        dav.curl(BOB, &["-X", "PUT", "--data-binary", "mine", &dav.url("/b.txt")])
            .await
            .status,
        201
    );
    let _ = dav
        .curl(
            BOB,
            &[
                "-X",
                "MOVE",
                "-H",
                &format!("Destination: {}", dav.url("/../alice@example.test/secret.txt")),
                &dav.url("/b.txt"),
            ],
        )
        .await;
    let _ = dav
        .curl(
            BOB,
            &[
                "-X",
                "COPY",
                "-H",
                &format!("Destination: {}", dav.url("/dav/alice@example.test/secret.txt")),
                &dav.url("/b.txt"),
            ],
        )
        .await;
    assert_eq!(
        dav.curl(ALICE, &[&dav.url("/secret.txt")]).await.text(),
        "alice's secret"
    );
    assert_eq!(
        std::fs::read_to_string(dav.files_dir(ALICE).join("secret.txt")).unwrap(),
        "alice's secret"
    );
    assert_eq!(names_in(&dav.files_dir(ALICE)), vec!["secret.txt".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_are_not_followed() {
    let dav = Dav::start(None).await;
    // Make both trees exist, then plant links in bob's tree (as an admin or a restore might).
    assert_eq!(
        dav.curl(ALICE, &["-X", "PUT", "--data-binary", "a", &dav.url("/a.txt")])
            .await
            .status,
        201
    );
    assert_eq!(
        dav.curl(BOB, &["-X", "PUT", "--data-binary", "b", &dav.url("/b.txt")])
            .await
            .status,
        201
    );
    let bob = dav.files_dir(BOB);
    std::os::unix::fs::symlink(dav.files_dir(ALICE), bob.join("alice")).unwrap();
    std::os::unix::fs::symlink(dav.files_dir(ALICE).join("a.txt"), bob.join("a-link.txt")).unwrap();
    std::os::unix::fs::symlink("/etc", bob.join("etc")).unwrap();

    for path in ["/alice/a.txt", "/a-link.txt", "/etc/passwd", "/alice/"] {
        let r = dav.curl(BOB, &[&dav.url(path)]).await;
        assert_eq!(r.status, 404, "GET {path}");
    }
    let r = dav
        .curl(BOB, &["-X", "PUT", "--data-binary", "x", &dav.url("/alice/new.txt")])
        .await;
    assert!(r.status >= 400, "PUT through a symlink: {}", r.status);
    assert!(!dav.files_dir(ALICE).join("new.txt").exists());
    let r = dav.curl(BOB, &["-X", "DELETE", &dav.url("/a-link.txt")]).await;
    assert_eq!(r.status, 404);
    assert!(dav.files_dir(ALICE).join("a.txt").exists());
    let r = dav
        .curl(
            BOB,
            &[
                "-X",
                "PROPFIND",
                "-H",
                "Depth: 1",
                "--data-binary",
                PROPFIND_NAMES,
                &dav.url("/"),
            ],
        )
        .await;
    assert_eq!(r.status, 207);
    let listing = r.text();
    assert!(listing.contains("b.txt"));
    assert!(
        !listing.contains("alice") && !listing.contains("etc") && !listing.contains("a-link"),
        "{listing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_is_required_and_throttled() {
    let dav = Dav::start(None).await;
    let r = curl(&[dav.url("/")]).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some("Basic realm=\"tinydc\", charset=\"UTF-8\"")
    );

    let wrong = |n: usize| vec!["-u".to_string(), format!("{ALICE}:wrong{n}"), dav.url("/")];
    let mut statuses = Vec::new();
    for n in 0..15 {
        statuses.push(curl(&wrong(n)).await.status);
    }
    assert_eq!(statuses[0], 401);
    assert!(statuses.iter().all(|s| *s == 401 || *s == 429), "{statuses:?}");
    assert_eq!(
        *statuses.last().unwrap(),
        429,
        "throttled after many failures: {statuses:?}"
    );
    let r = curl(&wrong(99)).await;
    assert!(r.header("retry-after").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoconfig_needs_no_login() {
    let dav = Dav::start(None).await;
    let config = &dav.env.context.config;
    for path in [
        "/.well-known/autoconfig/mail/config-v1.1.xml",
        "/mail/config-v1.1.xml?emailaddress=alice%40example.test",
    ] {
        let r = curl(&[dav.url(path)]).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("content-type").unwrap().contains("xml"));
        let xml = r.text();
        assert!(xml.contains("<clientConfig version=\"1.1\">"), "{xml}");
        assert!(xml.contains("<domain>example.test</domain>"));
        assert!(xml.contains("<hostname>localhost</hostname>"));
        assert!(xml.contains("<username>%EMAILADDRESS%</username>"));
        let imaps = config.imap.tls_listen.unwrap().port();
        assert!(xml.contains(&format!("<port>{imaps}</port>\n      <socketType>SSL</socketType>")));
        assert!(xml.contains("<incomingServer type=\"imap\">"));
        assert!(xml.contains("<outgoingServer type=\"smtp\">"));
        assert!(xml.contains("STARTTLS"));
    }
}
