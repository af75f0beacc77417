//! Windows Explorer's upload sequence: PUT, LOCK, PROPPATCH of the Win32 properties (with the
//! lock token), UNLOCK; the properties are stored and follow the file through MOVE and COPY.

mod common;

use common::*;

const UA: &str = "Microsoft-WebDAV-MiniRedir/10.0.19045";

const LOCK_BODY: &str = r#"<?xml version="1.0" encoding="utf-8" ?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype><D:owner><D:href>WIN10\alice</D:href></D:owner></D:lockinfo>"#;

const WIN32_PROPPATCH: &str = r#"<?xml version="1.0" encoding="utf-8" ?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:schemas-microsoft-com:"><D:set><D:prop><Z:Win32CreationTime>Tue, 24 Nov 2026 02:00:00 GMT</Z:Win32CreationTime><Z:Win32LastAccessTime>Tue, 24 Nov 2026 02:01:00 GMT</Z:Win32LastAccessTime><Z:Win32LastModifiedTime>Tue, 24 Nov 2026 02:02:00 GMT</Z:Win32LastModifiedTime><Z:Win32FileAttributes>00000020</Z:Win32FileAttributes></D:prop></D:set></D:propertyupdate>"#;

const ALLPROP: &str = r#"<?xml version="1.0" encoding="utf-8" ?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>"#;

async fn propfind(dav: &Dav, path: &str) -> String {
    let r = dav
        .curl(
            ALICE,
            &[
                "-A",
                UA,
                "-X",
                "PROPFIND",
                "-H",
                "Depth: 0",
                "--data-binary",
                ALLPROP,
                &dav.url(path),
            ],
        )
        .await;
    assert_eq!(r.status, 207, "{}", r.text());
    r.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_put_lock_proppatch_sequence() {
    let dav = Dav::start(None).await;
    let url = dav.url("/Report.docx");

    // Explorer first creates the file empty, then locks it, writes it, sets its times, unlocks.
    let r = dav
        .curl(ALICE, &["-A", UA, "-X", "PUT", "--data-binary", "", &url])
        .await;
    assert_eq!(r.status, 201);
    let r = dav
        .curl(
            ALICE,
            &[
                "-A",
                UA,
                "-X",
                "LOCK",
                "-H",
                "Timeout: Second-3600",
                "--data-binary",
                LOCK_BODY,
                &url,
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.header("lock-token").expect("Lock-Token header");
    let token = token.trim_matches(|c| c == '<' || c == '>').to_string();
    let if_header = format!("If: (<{token}>)");

    // Without the token the file is protected.
    let r = dav.curl(ALICE, &["-X", "PUT", "--data-binary", "intruder", &url]).await;
    assert_eq!(r.status, 423);
    let r = dav
        .curl(ALICE, &["-X", "PROPPATCH", "--data-binary", WIN32_PROPPATCH, &url])
        .await;
    assert_eq!(r.status, 423);

    let r = dav
        .curl(
            ALICE,
            &[
                "-A",
                UA,
                "-X",
                "PUT",
                "-H",
                &if_header,
                "--data-binary",
                "document body",
                &url,
            ],
        )
        .await;
    assert_eq!(r.status, 204);
    let r = dav
        .curl(
            ALICE,
            &[
                "-A",
                UA,
                "-X",
                "PROPPATCH",
                "-H",
                &if_header,
                "--data-binary",
                WIN32_PROPPATCH,
                &url,
            ],
        )
        .await;
    assert_eq!(r.status, 207, "{}", r.text());
    let text = r.text();
    assert!(
        text.contains("200 OK") && !text.contains("403") && !text.contains("409"),
        "{text}"
    );
    let r = dav
        .curl(
            ALICE,
            &["-A", UA, "-X", "UNLOCK", "-H", &format!("Lock-Token: <{token}>"), &url],
        )
        .await;
    assert_eq!(r.status, 204);

    let props = propfind(&dav, "/Report.docx").await;
    for (name, value) in [
        ("Win32CreationTime", "Tue, 24 Nov 2026 02:00:00 GMT"),
        ("Win32LastAccessTime", "Tue, 24 Nov 2026 02:01:00 GMT"),
        ("Win32LastModifiedTime", "Tue, 24 Nov 2026 02:02:00 GMT"),
        ("getlastmodified", "Tue, 24 Nov 2026 02:02:00 GMT"),
        ("Win32FileAttributes", "00000020"),
    ] {
        assert!(
            props.contains(&format!("{name}>{value}<")),
            "{name} = {value} in {props}"
        );
    }
    // The file itself carries the time Windows gave it.
    let mtime = std::fs::metadata(dav.files_dir(ALICE).join("Report.docx"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(
        mtime.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
        1_795_485_720
    );
    assert_eq!(dav.curl(ALICE, &[&url]).await.text(), "document body");

    // The properties follow the file.
    let r = dav
        .curl(
            ALICE,
            &[
                "-X",
                "MOVE",
                "-H",
                &format!("Destination: {}", dav.url("/Moved.docx")),
                &url,
            ],
        )
        .await;
    assert_eq!(r.status, 201);
    assert!(
        propfind(&dav, "/Moved.docx")
            .await
            .contains("Win32CreationTime>Tue, 24 Nov 2026 02:00:00 GMT<")
    );
    let r = dav
        .curl(
            ALICE,
            &[
                "-X",
                "COPY",
                "-H",
                &format!("Destination: {}", dav.url("/Copy.docx")),
                &dav.url("/Moved.docx"),
            ],
        )
        .await;
    assert_eq!(r.status, 201);
    assert!(
        propfind(&dav, "/Copy.docx")
            .await
            .contains("Win32CreationTime>Tue, 24 Nov 2026 02:00:00 GMT<")
    );

    // Deleted with their file: a new file of the same name starts clean.
    assert_eq!(
        dav.curl(ALICE, &["-X", "DELETE", &dav.url("/Copy.docx")]).await.status,
        204
    );
    let r = dav
        .curl(ALICE, &["-X", "PUT", "--data-binary", "x", &dav.url("/Copy.docx")])
        .await;
    assert_eq!(r.status, 201);
    assert!(
        !propfind(&dav, "/Copy.docx")
            .await
            .contains("Tue, 24 Nov 2026 02:00:00 GMT")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_at_the_root_without_credentials() {
    let dav = Dav::start(None).await;
    let r = curl(&["-X".into(), "OPTIONS".into(), "-A".into(), UA.into(), dav.url("/")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("dav").as_deref(), Some("1, 2"));
    assert_eq!(r.header("ms-author-via").as_deref(), Some("DAV"));
    assert!(r.header("allow").unwrap().contains("PROPFIND"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folder_properties_follow_copy_and_move() {
    let dav = Dav::start(None).await;
    assert_eq!(dav.curl(ALICE, &["-X", "MKCOL", &dav.url("/f/")]).await.status, 201);
    assert_eq!(dav.curl(ALICE, &["-X", "MKCOL", &dav.url("/f/sub/")]).await.status, 201);
    assert_eq!(
        dav.curl(ALICE, &["-X", "PUT", "--data-binary", "x", &dav.url("/f/sub/x.txt")])
            .await
            .status,
        201
    );
    let patch = |v: &str| {
        format!(
            r#"<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:T="urn:tinydc:test"><D:set><D:prop><T:tag>{v}</T:tag></D:prop></D:set></D:propertyupdate>"#
        )
    };
    for (path, v) in [("/f/", "top"), ("/f/sub/", "sub"), ("/f/sub/x.txt", "file")] {
        let r = dav
            .curl(ALICE, &["-X", "PROPPATCH", "--data-binary", &patch(v), &dav.url(path)])
            .await;
        assert_eq!(r.status, 207);
    }
    let r = dav
        .curl(
            ALICE,
            &[
                "-X",
                "COPY",
                "-H",
                &format!("Destination: {}", dav.url("/g/")),
                &dav.url("/f/"),
            ],
        )
        .await;
    assert_eq!(r.status, 201);
    let r = dav
        .curl(
            ALICE,
            &[
                "-X",
                "MOVE",
                "-H",
                &format!("Destination: {}", dav.url("/h/")),
                &dav.url("/g/"),
            ],
        )
        .await;
    assert_eq!(r.status, 201);
    for (path, v) in [
        ("/h/", "top"),
        ("/h/sub/", "sub"),
        ("/h/sub/x.txt", "file"),
        ("/f/sub/", "sub"),
    ] {
        assert!(propfind(&dav, path).await.contains(&format!(">{v}</T:tag>")), "{path}");
    }
    assert_eq!(propfind_status(&dav, "/g/").await, 404);
}

async fn propfind_status(dav: &Dav, path: &str) -> u16 {
    dav.curl(ALICE, &["-X", "PROPFIND", "-H", "Depth: 0", &dav.url(path)])
        .await
        .status
}

/// RFC 4918 section 9.2: a PROPPATCH is all or nothing. When one of its instructions fails (here
/// a protected live property), the multistatus answer says so and davd, reading that answer as
/// a parsed document, applies none of the Win32 times to the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_proppatch_applies_no_win32_time() {
    let dav = Dav::start(None).await;
    let url = dav.url("/Notes.txt");
    let r = dav
        .curl(ALICE, &["-A", UA, "-X", "PUT", "--data-binary", "notes", &url])
        .await;
    assert_eq!(r.status, 201);
    let body = r#"<?xml version="1.0" encoding="utf-8" ?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:schemas-microsoft-com:"><D:set><D:prop><Z:Win32LastModifiedTime>Tue, 24 Nov 2026 02:02:00 GMT</Z:Win32LastModifiedTime><D:getcontentlength>1</D:getcontentlength></D:prop></D:set></D:propertyupdate>"#;
    let r = dav
        .curl(ALICE, &["-A", UA, "-X", "PROPPATCH", "--data-binary", body, &url])
        .await;
    assert_eq!(r.status, 207, "{}", r.text());
    assert!(!r.text().contains("200 OK"), "{}", r.text());
    let mtime = std::fs::metadata(dav.files_dir(ALICE).join("Notes.txt"))
        .unwrap()
        .modified()
        .unwrap();
    assert_ne!(
        mtime.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
        1_795_485_720
    );
    assert!(
        !propfind(&dav, "/Notes.txt")
            .await
            .contains("Tue, 24 Nov 2026 02:02:00 GMT")
    );
}
