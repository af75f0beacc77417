//! WebDAV protocol edges (issue #14 item 4), each from outside with curl or a raw TLS socket
//! against the real davd: quoted getetag, 404 propstats, Depth infinity, oversized bodies and
//! headers, the DAV header on a 401, and what a routine MKCOL 405 logs.

mod common;

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use xmltree::{Element, XMLNode};

fn propfind_body(props: &str) -> String {
    format!(r#"<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop>{props}</D:prop></D:propfind>"#)
}

/// For each response of a multistatus: its href, and per status the properties as
/// `{namespace}local` with their text.
type Props = Vec<(String, Vec<(String, Vec<(String, String)>)>)>;

fn responses(xml: &str) -> Props {
    let root = Element::parse(xml.as_bytes()).unwrap_or_else(|e| panic!("{e}: {xml}"));
    assert_eq!(
        (root.name.as_str(), root.namespace.as_deref()),
        ("multistatus", Some("DAV:"))
    );
    let children = |e: &Element| -> Vec<Element> {
        e.children
            .iter()
            .filter_map(|n| match n {
                XMLNode::Element(e) => Some(e.clone()),
                _ => None,
            })
            .collect()
    };
    let mut out = Vec::new();
    for response in children(&root) {
        let href = response
            .get_child("href")
            .and_then(|h| h.get_text())
            .unwrap()
            .to_string();
        let mut stats = Vec::new();
        for propstat in children(&response).into_iter().filter(|e| e.name == "propstat") {
            let status = propstat
                .get_child("status")
                .and_then(|s| s.get_text())
                .unwrap()
                .to_string();
            let props = children(propstat.get_child("prop").unwrap())
                .into_iter()
                .map(|p| {
                    (
                        format!("{{{}}}{}", p.namespace.clone().unwrap_or_default(), p.name),
                        p.get_text().map(|t| t.to_string()).unwrap_or_default(),
                    )
                })
                .collect();
            stats.push((status, props));
        }
        out.push((href, stats));
    }
    out
}

fn prop_of<'a>(stats: &'a [(String, Vec<(String, String)>)], name: &str) -> Option<(&'a str, &'a str)> {
    stats.iter().find_map(|(status, props)| {
        props
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| (status.as_str(), v.as_str()))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn getetag_in_propfind_is_the_etag_header_and_if_match_takes_it() {
    let dav = Dav::start(None).await;
    let put = dav
        .curl(ALICE, &["-X", "PUT", "--data-binary", "v1", &dav.url("/f.txt")])
        .await;
    assert_eq!(put.status, 201);
    let head = dav.curl(ALICE, &["-I", &dav.url("/f.txt")]).await;
    let header = head.header("etag").expect("ETag header");
    assert!(header.starts_with('"') && header.ends_with('"'), "{header}");

    // Asked by name, and with allprop (and a folder's too).
    for body in [propfind_body("<D:getetag/>"), String::new()] {
        let r = propfind(&dav, "/f.txt", "0", &body).await;
        assert_eq!(r.status, 207, "{}", r.text());
        let got = responses(&r.text());
        assert_eq!(
            prop_of(&got[0].1, "{DAV:}getetag"),
            Some(("HTTP/1.1 200 OK", header.as_str())),
            "{}",
            r.text()
        );
    }
    let r = propfind(&dav, "/", "1", &propfind_body("<D:getetag/>")).await;
    for (href, stats) in responses(&r.text()) {
        let (_, etag) = prop_of(&stats, "{DAV:}getetag").unwrap();
        assert!(etag.starts_with('"') && etag.ends_with('"'), "{href}: {etag}");
    }

    // The PROPFIND value sent back in If-Match: the PUT goes through; a stale one is 412.
    let r = propfind(&dav, "/f.txt", "0", &propfind_body("<D:getetag/>")).await;
    let etag = prop_of(&responses(&r.text())[0].1, "{DAV:}getetag")
        .unwrap()
        .1
        .to_string();
    let r = dav
        .curl(
            ALICE,
            &[
                "-X",
                "PUT",
                "-H",
                &format!("If-Match: {etag}"),
                "--data-binary",
                "v2",
                &dav.url("/f.txt"),
            ],
        )
        .await;
    assert_eq!(r.status, 204, "If-Match {etag}: {}", r.text());
    let r = dav
        .curl(
            ALICE,
            &[
                "-X",
                "PUT",
                "-H",
                &format!("If-Match: {etag}"),
                "--data-binary",
                "v3",
                &dav.url("/f.txt"),
            ],
        )
        .await;
    assert_eq!(r.status, 412, "a stale ETag");
    assert_eq!(dav.curl(ALICE, &[&dav.url("/f.txt")]).await.text(), "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_that_do_not_exist_are_reported_404() {
    let dav = Dav::start(None).await;
    assert_eq!(dav.curl(ALICE, &["-X", "MKCOL", &dav.url("/d/")]).await.status, 201);
    assert_eq!(
        dav.curl(ALICE, &["-X", "PUT", "--data-binary", "12345", &dav.url("/d/f.txt")])
            .await
            .status,
        201
    );
    // Dead properties on both: one asked for, one not.
    for path in ["/d/", "/d/f.txt"] {
        let r = dav
            .curl(
                ALICE,
                &[
                    "-X",
                    "PROPPATCH",
                    "--data-binary",
                    r#"<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:x="urn:x"><D:set><D:prop><x:color>red</x:color><x:other>secret</x:other></D:prop></D:set></D:propertyupdate>"#,
                    &dav.url(path),
                ],
            )
            .await;
        assert_eq!(r.status, 207, "{}", r.text());
    }
    let body = propfind_body(
        r#"<D:getcontentlength/><D:resourcetype/><x:color xmlns:x="urn:x"/><y:nothere xmlns:y="urn:y"/>"#,
    );
    let r = propfind(&dav, "/d/", "1", &body).await;
    assert_eq!(r.status, 207, "{}", r.text());
    let got = responses(&r.text());
    assert_eq!(got.len(), 2, "{}", r.text());
    for (href, stats) in &got {
        let folder = href.ends_with('/');
        // RFC 4918 section 9.1: each property asked for is in exactly one propstat.
        let named: Vec<&String> = stats.iter().flat_map(|(_, p)| p.iter().map(|(n, _)| n)).collect();
        assert_eq!(named.len(), 4, "{href}: {named:?}");
        assert_eq!(
            prop_of(stats, "{urn:x}color"),
            Some(("HTTP/1.1 200 OK", "red")),
            "{href}"
        );
        assert_eq!(prop_of(stats, "{urn:x}other"), None, "{href}: not asked for");
        assert_eq!(
            prop_of(stats, "{urn:y}nothere"),
            Some(("HTTP/1.1 404 Not Found", "")),
            "{href}"
        );
        assert_eq!(prop_of(stats, "{DAV:}resourcetype").unwrap().0, "HTTP/1.1 200 OK");
        let length = prop_of(stats, "{DAV:}getcontentlength").unwrap();
        if folder {
            assert_eq!(length, ("HTTP/1.1 404 Not Found", ""), "{href}");
        } else {
            assert_eq!(length, ("HTTP/1.1 200 OK", "5"), "{href}");
        }
    }
    // propname: names only, the dead properties' values left out.
    let r = propfind(
        &dav,
        "/d/f.txt",
        "0",
        r#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:propname/></D:propfind>"#,
    )
    .await;
    assert_eq!(r.status, 207);
    assert!(
        !r.text().contains("secret") && r.text().contains("other"),
        "{}",
        r.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propfind_depth_infinity_is_403_propfind_finite_depth() {
    let dav = Dav::start(None).await;
    for depth in ["infinity", "Infinity"] {
        let r = propfind(&dav, "/", depth, &propfind_body("<D:getetag/>")).await;
        assert_eq!(r.status, 403, "{}", r.text());
        let root = Element::parse(r.body.as_slice()).unwrap();
        assert_eq!((root.name.as_str(), root.namespace.as_deref()), ("error", Some("DAV:")));
        let pre = root.get_child("propfind-finite-depth").expect("the precondition");
        assert_eq!(pre.namespace.as_deref(), Some("DAV:"));
        assert!(r.header("content-type").unwrap().contains("xml"));
    }
    assert_eq!(
        propfind(&dav, "/", "1", &propfind_body("<D:getetag/>")).await.status,
        207
    );
}

async fn tls(dav: &Dav) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&dav.env.context.config.tls.cert_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(dav.addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

/// Read one answer (headers and a Content-Length body) off `stream`: its status line and body.
async fn read_answer<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> (String, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if got.len() >= end + 4 + len {
                    let body = String::from_utf8_lossy(&got[end + 4..end + 4 + len]).to_string();
                    return (head.lines().next().unwrap().to_string(), body);
                }
            }
            let n = stream.read(&mut buf).await.expect("read the answer");
            assert!(
                n > 0,
                "connection closed before a whole answer: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("an answer within 10 s")
}

fn basic() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{ALICE}:{PW}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_xml_body_over_the_limit_is_413_and_the_connection_goes_on() {
    let dav = Dav::start(None).await;
    let limit = dav
        .env
        .context
        .config
        .dav
        .max_xml_body
        .min(davd::server::DAV_SERVER_BODY_MAX) as usize;
    let auth = basic();
    // With a length and chunked, a little and far over the limit: each 413, and the same
    // connection answers the next request.
    for (size, chunked) in [
        (limit + 1, false),
        (limit + 1, true),
        (4 * limit, true),
        (3 * limit, false),
    ] {
        let mut conn = tls(&dav).await;
        let body = vec![b' '; size];
        let head = if chunked {
            format!(
                "PROPFIND / HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {auth}\r\nDepth: 0\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
        } else {
            format!(
                "PROPFIND / HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {auth}\r\nDepth: 0\r\nContent-Length: {size}\r\n\r\n"
            )
        };
        conn.write_all(head.as_bytes()).await.unwrap();
        if chunked {
            for piece in body.chunks(10_000) {
                conn.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                    .await
                    .unwrap();
                conn.write_all(piece).await.unwrap();
                conn.write_all(b"\r\n").await.unwrap();
            }
            conn.write_all(b"0\r\n\r\n").await.unwrap();
        } else {
            conn.write_all(&body).await.unwrap();
        }
        let (status, _) = read_answer(&mut conn).await;
        assert!(status.starts_with("HTTP/1.1 413"), "{size} chunked={chunked}: {status}");
        conn.write_all(b"OPTIONS / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let (status, _) = read_answer(&mut conn).await;
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "after {size} chunked={chunked}: {status}"
        );
    }
    // Far past anything worth reading (16 MiB): curl still reads the 413, not a reset.
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("big.xml");
    std::fs::File::create(&big)
        .unwrap()
        .write_all(&vec![b' '; 16 << 20])
        .unwrap();
    let r = dav
        .curl(
            ALICE,
            &[
                "-X",
                "PROPFIND",
                "-H",
                "Depth: 0",
                "-H",
                "Expect:",
                "--data-binary",
                &format!("@{}", big.display()),
                &dav.url("/"),
            ],
        )
        .await;
    assert_eq!(r.status, 413, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_head_is_431() {
    let dav = Dav::start(None).await;
    let big = format!("X-Big: {}", "a".repeat(100 * 1024));
    let r = dav
        .curl(ALICE, &["-H", &big, "-X", "PROPFIND", "-H", "Depth: 0", &dav.url("/")])
        .await;
    assert_eq!(r.status, 431, "{r:?}");
    // Many small fields past the limit on their number.
    let mut args: Vec<String> = (0..150)
        .map(|i| format!("X-F{i}: v"))
        .flat_map(|h| ["-H".to_string(), h])
        .collect();
    args.extend(["-X".into(), "OPTIONS".into(), dav.url("/")]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(dav.curl(ALICE, &refs).await.status, 431);
    // Just under the size limit: answered.
    let fine = format!("X-Big: {}", "a".repeat(davd::server::MAX_HEADER_BYTES - 1024));
    let r = dav
        .curl(ALICE, &["-H", &fine, "-X", "PROPFIND", "-H", "Depth: 0", &dav.url("/")])
        .await;
    assert_eq!(r.status, 207);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_carries_the_dav_classes() {
    let dav = Dav::start(None).await;
    // What Finder and the Windows redirector send before credentials.
    let r = curl(&["-X".into(), "OPTIONS".into(), dav.url("/")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("dav").as_deref(), Some("1, 2"));
    for args in [
        vec![
            "-X".to_string(),
            "PROPFIND".into(),
            "-H".into(),
            "Depth: 0".into(),
            dav.url("/"),
        ],
        vec![
            "-u".to_string(),
            format!("{ALICE}:wrong"),
            "-X".into(),
            "PROPFIND".into(),
            dav.url("/"),
        ],
        vec![dav.url("/f.txt")],
    ] {
        let r = curl(&args).await;
        assert_eq!(r.status, 401, "{args:?}");
        assert_eq!(r.header("dav").as_deref(), Some("1, 2"), "{args:?}");
        assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mkcol_of_an_existing_folder_is_405_logged_at_debug() {
    let logs = logs();
    let dav = Dav::start(None).await;
    let url = dav.url("/made-twice-7f3a/");
    assert_eq!(dav.curl(ALICE, &["-X", "MKCOL", &url]).await.status, 201);
    for _ in 0..3 {
        assert_eq!(dav.curl(ALICE, &["-X", "MKCOL", &url]).await.status, 405);
    }
    // Other refusals stay at INFO.
    let r = dav.curl(ALICE, &["-X", "MKCOL", &dav.url("/no-parent-7f3a/x/")]).await;
    assert_eq!(r.status, 409);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("made-twice-7f3a")).collect();
    assert_eq!(
        lines.iter().filter(|l| l.contains("status=405")).count(),
        3,
        "{lines:#?}"
    );
    assert!(lines.iter().all(|l| !l.contains(" INFO ")), "{lines:#?}");
    assert!(
        text.lines()
            .any(|l| l.contains(" INFO ") && l.contains("no-parent-7f3a") && l.contains("status=409")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_oc_mtime_on_put_is_kept_and_shown() {
    let dav = Dav::start(None).await;
    // 2020-09-13T12:26:40Z.
    let r = dav
        .curl(
            ALICE,
            &[
                "-X",
                "PUT",
                "-H",
                "X-OC-Mtime: 1600000000",
                "--data-binary",
                "old photo",
                &dav.url("/p.jpg"),
            ],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("x-oc-mtime").as_deref(), Some("accepted"));
    let stored = std::fs::metadata(dav.files_dir(ALICE).join("p.jpg")).unwrap();
    assert_eq!(
        stored.modified().unwrap(),
        std::time::UNIX_EPOCH + Duration::from_secs(1_600_000_000)
    );
    let r = dav.curl(ALICE, &["-I", &dav.url("/p.jpg")]).await;
    assert_eq!(
        r.header("last-modified").as_deref(),
        Some("Sun, 13 Sep 2020 12:26:40 GMT")
    );
    let r = propfind(&dav, "/p.jpg", "0", &propfind_body("<D:getlastmodified/>")).await;
    assert_eq!(
        prop_of(&responses(&r.text())[0].1, "{DAV:}getlastmodified"),
        Some(("HTTP/1.1 200 OK", "Sun, 13 Sep 2020 12:26:40 GMT"))
    );
    // Overwritten with another time; a fraction is kept too.
    let r = dav
        .curl(
            ALICE,
            &[
                "-X",
                "PUT",
                "-H",
                "X-OC-Mtime: 1600000100.25",
                "--data-binary",
                "newer",
                &dav.url("/p.jpg"),
            ],
        )
        .await;
    assert_eq!(r.status, 204);
    let stored = std::fs::metadata(dav.files_dir(ALICE).join("p.jpg")).unwrap();
    assert_eq!(
        stored.modified().unwrap(),
        std::time::UNIX_EPOCH + Duration::new(1_600_000_100, 250_000_000)
    );
    // Not a time: 400, and nothing written.
    let r = dav
        .curl(
            ALICE,
            &[
                "-X",
                "PUT",
                "-H",
                "X-OC-Mtime: yesterday",
                "--data-binary",
                "x",
                &dav.url("/q.jpg"),
            ],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(!dav.files_dir(ALICE).join("q.jpg").exists());
    // Without the header: no claim, the time is the upload's.
    let r = dav
        .curl(ALICE, &["-X", "PUT", "--data-binary", "x", &dav.url("/r.jpg")])
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header("x-oc-mtime"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rclone_owncloud_sync_twice_transfers_nothing_the_second_time() {
    let dav = Dav::start(None).await;
    let tmp = tempfile::tempdir().unwrap();
    let up = tmp.path().join("photos");
    std::fs::create_dir_all(up.join("2020")).unwrap();
    for (i, name) in ["a.jpg", "b.jpg", "2020/c.jpg"].iter().enumerate() {
        let path = up.join(name);
        std::fs::write(&path, vec![b'a' + i as u8; 1000 + i]).unwrap();
        // Taken years ago.
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_500_000_000 + i as u64 * 86_400))
            .unwrap();
    }
    let remote = rclone_remote(&dav, "owncloud", "photos").await;
    let up_s = up.to_string_lossy().into_owned();
    let first = rclone(&["sync".into(), "-v".into(), up_s.clone(), remote.clone()]).await;
    assert!(first.status.success());
    assert_eq!(String::from_utf8_lossy(&first.stderr).matches(": Copied").count(), 3);
    // The times arrived: the stored files and the listing carry them.
    let stored = std::fs::metadata(dav.files_dir(ALICE).join("photos/2020/c.jpg")).unwrap();
    assert_eq!(
        stored.modified().unwrap(),
        std::time::UNIX_EPOCH + Duration::from_secs(1_500_000_000 + 2 * 86_400)
    );
    let second = rclone(&["sync".into(), "-v".into(), up_s.clone(), remote.clone()]).await;
    assert!(second.status.success());
    let said = String::from_utf8_lossy(&second.stderr).to_string();
    assert!(!said.contains("Copied"), "the second sync transferred: {said}");
    assert!(said.contains("There was nothing to transfer"), "{said}");
    // A changed file (same size, new time) is sent again, and only it.
    std::fs::write(up.join("a.jpg"), vec![b'z'; 1000]).unwrap();
    let third = rclone(&["sync".into(), "-v".into(), up_s, remote]).await;
    assert!(third.status.success());
    assert_eq!(String::from_utf8_lossy(&third.stderr).matches(": Copied").count(), 1);
    assert_eq!(
        std::fs::read(dav.files_dir(ALICE).join("photos/a.jpg")).unwrap(),
        vec![b'z'; 1000]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proppatch_of_getlastmodified_sets_the_files_time() {
    let dav = Dav::start(None).await;
    assert_eq!(
        dav.curl(ALICE, &["-X", "PUT", "--data-binary", "x", &dav.url("/f.txt")])
            .await
            .status,
        201
    );
    let set = |date: &str| {
        format!(
            r#"<?xml version="1.0"?><d:propertyupdate xmlns:d="DAV:"><d:set><d:prop><d:getlastmodified>{date}</d:getlastmodified><x:note xmlns:x="urn:x">kept</x:note></d:prop></d:set></d:propertyupdate>"#
        )
    };
    let r = dav
        .curl(
            ALICE,
            &[
                "-X",
                "PROPPATCH",
                "--data-binary",
                &set("Sun, 13 Sep 2020 12:26:40 GMT"),
                &dav.url("/f.txt"),
            ],
        )
        .await;
    assert_eq!(r.status, 207, "{}", r.text());
    let got = responses(&r.text());
    assert_eq!(
        prop_of(&got[0].1, "{DAV:}getlastmodified"),
        Some(("HTTP/1.1 200 OK", "")),
        "{}",
        r.text()
    );
    assert_eq!(prop_of(&got[0].1, "{urn:x}note").unwrap().0, "HTTP/1.1 200 OK");
    let stored = std::fs::metadata(dav.files_dir(ALICE).join("f.txt")).unwrap();
    assert_eq!(
        stored.modified().unwrap(),
        std::time::UNIX_EPOCH + Duration::from_secs(1_600_000_000)
    );
    let r = propfind(&dav, "/f.txt", "0", &propfind_body("<D:getlastmodified/>")).await;
    assert_eq!(
        prop_of(&responses(&r.text())[0].1, "{DAV:}getlastmodified"),
        Some(("HTTP/1.1 200 OK", "Sun, 13 Sep 2020 12:26:40 GMT"))
    );

    // Locked by another client: 423, the time stays (dav-server's lock check still applies).
    let lock = dav
        .curl(
            ALICE,
            &[
                "-X",
                "LOCK",
                "--data-binary",
                r#"<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>"#,
                &dav.url("/f.txt"),
            ],
        )
        .await;
    assert_eq!(lock.status, 200);
    let r = dav
        .curl(
            ALICE,
            &[
                "-X",
                "PROPPATCH",
                "--data-binary",
                &set("Mon, 14 Sep 2020 12:26:40 GMT"),
                &dav.url("/f.txt"),
            ],
        )
        .await;
    assert_eq!(r.status, 423, "{}", r.text());
    let stored = std::fs::metadata(dav.files_dir(ALICE).join("f.txt")).unwrap();
    assert_eq!(
        stored.modified().unwrap(),
        std::time::UNIX_EPOCH + Duration::from_secs(1_600_000_000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_properties_of_every_shape_come_back_whole() {
    let dav = Dav::start(None).await;
    assert_eq!(
        dav.curl(ALICE, &["-X", "PUT", "--data-binary", "x", &dav.url("/f.txt")])
            .await
            .status,
        201
    );
    let r = dav
        .curl(
            ALICE,
            &[
                "-X",
                "PROPPATCH",
                "--data-binary",
                r#"<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><tree xmlns="urn:t"><leaf a="1">a &lt; b &amp; c ]]&gt;</leaf><![CDATA[<raw>]]></tree><p:plain xmlns:p="urn:p">x</p:plain></D:prop></D:set></D:propertyupdate>"#,
                &dav.url("/f.txt"),
            ],
        )
        .await;
    assert_eq!(r.status, 207, "{}", r.text());
    for body in [propfind_body(r#"<t:tree xmlns:t="urn:t"/><D:getetag/>"#), String::new()] {
        let r = propfind(&dav, "/f.txt", "0", &body).await;
        assert_eq!(r.status, 207, "{}", r.text());
        let root = Element::parse(r.body.as_slice()).unwrap_or_else(|e| panic!("{e}: {}", r.text()));
        let prop = root
            .get_child("response")
            .and_then(|r| r.get_child("propstat"))
            .and_then(|p| p.get_child("prop"))
            .unwrap();
        let tree = prop
            .get_child(("tree", "urn:t"))
            .unwrap_or_else(|| panic!("{}", r.text()));
        let leaf = tree.get_child(("leaf", "urn:t")).unwrap();
        assert_eq!(leaf.get_text().as_deref(), Some("a < b & c ]]>"));
        assert_eq!(leaf.attributes.get("a").map(String::as_str), Some("1"));
        assert!(
            r.text().contains("&lt;raw>") || r.text().contains("<![CDATA[<raw>]]>") || r.text().contains("&lt;raw&gt;"),
            "{}",
            r.text()
        );
    }
}
