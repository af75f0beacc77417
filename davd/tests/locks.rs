//! Locks live in PostgreSQL: they survive a restart of davd, and they belong to one user.

mod common;

use common::*;

const LOCK_BODY: &str = r#"<?xml version="1.0" encoding="utf-8" ?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype><D:owner>tester</D:owner></D:lockinfo>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_survive_a_restart() {
    let dav = Dav::start(None).await;
    assert_eq!(dav.curl(ALICE, &["-X", "MKCOL", &dav.url("/dir/")]).await.status, 201);
    let r = dav
        .curl(ALICE, &["-X", "PUT", "--data-binary", "v1", &dav.url("/dir/f.txt")])
        .await;
    assert_eq!(r.status, 201);
    // A depth-infinity lock on the folder covers the file.
    let r = dav
        .curl(
            ALICE,
            &[
                "-X",
                "LOCK",
                "-H",
                "Depth: infinity",
                "-H",
                "Timeout: Second-600",
                "--data-binary",
                LOCK_BODY,
                &dav.url("/dir/"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.header("lock-token").unwrap();
    let token = token.trim_matches(|c| c == '<' || c == '>').to_string();

    let env = dav.stop().await;
    let dav = Dav::serve(env).await;

    let r = dav
        .curl(ALICE, &["-X", "PUT", "--data-binary", "v2", &dav.url("/dir/f.txt")])
        .await;
    assert_eq!(r.status, 423, "still locked after the restart");
    let r = dav.curl(ALICE, &["-X", "DELETE", &dav.url("/dir/f.txt")]).await;
    assert_eq!(r.status, 423);
    let r = dav
        .curl(
            ALICE,
            &[
                "-X",
                "PROPFIND",
                "-H",
                "Depth: 0",
                "--data-binary",
                r#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:lockdiscovery/></D:prop></D:propfind>"#,
                &dav.url("/dir/f.txt"),
            ],
        )
        .await;
    assert!(r.text().contains(&token), "lockdiscovery shows the lock: {}", r.text());

    // Bob has his own /dir/: alice's lock is not his business.
    assert_eq!(dav.curl(BOB, &["-X", "MKCOL", &dav.url("/dir/")]).await.status, 201);
    let r = dav
        .curl(BOB, &["-X", "PUT", "--data-binary", "bob", &dav.url("/dir/f.txt")])
        .await;
    assert_eq!(r.status, 201);
    // And bob cannot use or remove alice's token.
    let r = dav
        .curl(
            BOB,
            &[
                "-X",
                "UNLOCK",
                "-H",
                &format!("Lock-Token: <{token}>"),
                &dav.url("/dir/"),
            ],
        )
        .await;
    assert!(r.status >= 400, "bob cannot unlock alice's lock: {}", r.status);

    let r = dav
        .curl(
            ALICE,
            &[
                "-X",
                "PUT",
                "-H",
                &format!("If: (<{token}>)"),
                "--data-binary",
                "v2",
                &dav.url("/dir/f.txt"),
            ],
        )
        .await;
    assert_eq!(r.status, 204);
    // Refresh restarts the timeout.
    let r = dav
        .curl(
            ALICE,
            &[
                "-X",
                "LOCK",
                "-H",
                &format!("If: (<{token}>)"),
                "-H",
                "Timeout: Second-300",
                &dav.url("/dir/"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("Second-300"), "{}", r.text());
    let r = dav
        .curl(
            ALICE,
            &[
                "-X",
                "UNLOCK",
                "-H",
                &format!("Lock-Token: <{token}>"),
                &dav.url("/dir/"),
            ],
        )
        .await;
    assert_eq!(r.status, 204);
    let r = dav
        .curl(ALICE, &["-X", "PUT", "--data-binary", "v3", &dav.url("/dir/f.txt")])
        .await;
    assert_eq!(r.status, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lock_no_longer_blocks() {
    let dav = Dav::start(None).await;
    let url = dav.url("/e.txt");
    assert_eq!(
        dav.curl(ALICE, &["-X", "PUT", "--data-binary", "x", &url]).await.status,
        201
    );
    let r = dav
        .curl(
            ALICE,
            &[
                "-X",
                "LOCK",
                "-H",
                "Timeout: Second-1",
                "--data-binary",
                LOCK_BODY,
                &url,
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        dav.curl(ALICE, &["-X", "PUT", "--data-binary", "y", &url]).await.status,
        423
    );
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        dav.curl(ALICE, &["-X", "PUT", "--data-binary", "y", &url]).await.status,
        204
    );
}

/// RFC 4918 section 9.6.1: a DELETE of a folder with a locked member, without the token,
/// fails as a whole (423) and removes nothing: the whole-tree delete (fs/tree.rs
/// `do_remove_tree`) runs only after dav-server checked the locks of the tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_member_keeps_its_folder_from_being_deleted() {
    let dav = Dav::start(None).await;
    assert_eq!(dav.curl(ALICE, &["-X", "MKCOL", &dav.url("/dir/")]).await.status, 201);
    for name in ["a.txt", "locked.txt"] {
        let url = dav.url(&format!("/dir/{name}"));
        assert_eq!(
            dav.curl(ALICE, &["-X", "PUT", "--data-binary", "x", &url]).await.status,
            201
        );
    }
    let r = dav
        .curl(
            ALICE,
            &["-X", "LOCK", "--data-binary", LOCK_BODY, &dav.url("/dir/locked.txt")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.header("lock-token").unwrap();

    let r = dav.curl(ALICE, &["-X", "DELETE", &dav.url("/dir/")]).await;
    assert_eq!(r.status, 423);
    let root = dav.files_dir(ALICE);
    assert!(root.join("dir/a.txt").exists() && root.join("dir/locked.txt").exists());
    assert_eq!(file_bytes(&dav, ALICE).await, 2, "nothing refunded");

    // With the token it goes, whole.
    let r = dav
        .curl(
            ALICE,
            &["-X", "DELETE", "-H", &format!("If: ({token})"), &dav.url("/dir/")],
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(!root.join("dir").exists());
    assert_eq!(file_bytes(&dav, ALICE).await, 0);
}
