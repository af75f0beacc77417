//! docs/ARCHITECTURE.md, "Contracts", durability: a crash at any moment leaves either the old state or the new one,
//! never usage that disagrees with the tree. Each test stops a PUT, COPY, DELETE or MOVE at a
//! point of its commit (the journal's test hook, or by building the leftover state by hand),
//! restarts davd on the same database and data directory, and checks the content, that
//! usage == `shared::quota::tree_bytes` of the tree, and that no temp file or journal row is left.
//! Also: parallel PUTs of one path by one user leave usage == tree bytes.

mod common;

use std::os::unix::fs::MetadataExt;

use common::*;
use davd::journal::{CrashPoint, crash_at};
use shared::quota::{UPLOAD_TEMP_PREFIX, tree_bytes};

async fn user_id(dav: &Dav, address: &str) -> i64 {
    shared::accounts::get_user(&dav.env.context.db, address)
        .await
        .unwrap()
        .id
}

async fn journal_rows(dav: &Dav) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM dav_journal")
        .fetch_one(&dav.env.context.db)
        .await
        .unwrap()
}

/// Temp files anywhere in `dir`.
fn temp_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let hidden = e.file_name().to_string_lossy().starts_with(UPLOAD_TEMP_PREFIX);
            if e.path().is_dir() {
                // A folder a DELETE set aside is being removed in the background (journal.rs);
                // one a crash left is tested by a_deleted_folder_set_aside_is_removed_at_restart.
                if !hidden {
                    stack.push(e.path());
                }
            } else if hidden {
                found.push(e.path());
            }
        }
    }
    found
}

/// Stop davd and start a new one on the same database and data directory. The first request
/// is answered only after the new davd's recovery ran.
async fn restart(dav: Dav) -> Dav {
    serve_again(dav.stop().await).await
}

/// Start davd on a stopped environment; return once it answers (its recovery has run).
async fn serve_again(env: shared::testing::TestEnv) -> Dav {
    let dav = Dav::serve(env).await;
    let r = dav
        .curl(ALICE, &["-X", "PROPFIND", "-H", "Depth: 0", &dav.url("/")])
        .await;
    assert_eq!(r.status, 207);
    dav
}

/// After recovery: usage is the tree's bytes, no temp files, no journal rows.
async fn assert_consistent(dav: &Dav) {
    let root = dav.files_dir(ALICE);
    assert_eq!(file_bytes(dav, ALICE).await, tree_bytes(&root), "usage == tree bytes");
    assert!(temp_files(&root).is_empty(), "temp files left: {:?}", temp_files(&root));
    assert_eq!(journal_rows(dav).await, 0, "journal rows left");
}

async fn put(dav: &Dav, path: &str, body: &str) -> u16 {
    dav.curl(ALICE, &["-X", "PUT", "--data-binary", body, &dav.url(path)])
        .await
        .status
}

async fn get(dav: &Dav, path: &str) -> (u16, String) {
    let r = dav.curl(ALICE, &[&dav.url(path)]).await;
    (r.status, r.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_interrupted_after_the_commit_is_finished_at_restart() {
    let dav = Dav::start(None).await;
    assert_eq!(put(&dav, "/doc.txt", &"o".repeat(1000)).await, 201);

    crash_at(&dav.files_dir(ALICE), CrashPoint::AfterCommit);
    assert_eq!(put(&dav, "/doc.txt", &"n".repeat(3000)).await, 500);
    // The crash state: usage says 3000, the tree still holds the old 1000 and a temp file.
    let root = dav.files_dir(ALICE);
    assert_eq!(file_bytes(&dav, ALICE).await, 3000);
    assert_eq!(tree_bytes(&root), 1000);
    assert_eq!(temp_files(&root).len(), 1);

    let dav = restart(dav).await;
    assert_eq!(
        get(&dav, "/doc.txt").await,
        (200, "n".repeat(3000)),
        "the committed upload is in place"
    );
    assert_consistent(&dav).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_interrupted_after_the_commit_is_finished_at_restart() {
    let dav = Dav::start(None).await;
    assert_eq!(put(&dav, "/gone.txt", &"g".repeat(500)).await, 201);
    assert_eq!(put(&dav, "/kept.txt", &"k".repeat(700)).await, 201);

    crash_at(&dav.files_dir(ALICE), CrashPoint::AfterCommit);
    let r = dav.curl(ALICE, &["-X", "DELETE", &dav.url("/gone.txt")]).await;
    assert_eq!(r.status, 500);
    assert_eq!(file_bytes(&dav, ALICE).await, 700, "refunded");
    assert_eq!(tree_bytes(&dav.files_dir(ALICE)), 1200, "not yet unlinked");

    let dav = restart(dav).await;
    assert_eq!(get(&dav, "/gone.txt").await.0, 404);
    assert_eq!(get(&dav, "/kept.txt").await, (200, "k".repeat(700)));
    assert_consistent(&dav).await;
}

/// DELETE of a folder is one journaled step for the whole tree (one transaction refunds all
/// of it). A crash after its commit, with part of the tree already removed, is finished at
/// restart: the whole folder is gone and usage equals the tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folder_delete_interrupted_half_way_is_finished_at_restart() {
    let dav = Dav::start(None).await;
    for dir in ["/d/", "/d/sub/"] {
        assert_eq!(dav.curl(ALICE, &["-X", "MKCOL", &dav.url(dir)]).await.status, 201);
    }
    assert_eq!(put(&dav, "/d/a.txt", &"a".repeat(300)).await, 201);
    assert_eq!(put(&dav, "/d/sub/b.txt", &"b".repeat(200)).await, 201);
    assert_eq!(put(&dav, "/kept.txt", &"k".repeat(700)).await, 201);

    crash_at(&dav.files_dir(ALICE), CrashPoint::AfterCommit);
    let r = dav.curl(ALICE, &["-X", "DELETE", &dav.url("/d/")]).await;
    assert!(
        !(200..300).contains(&r.status),
        "the delete did not finish: {}",
        r.status
    );
    let root = dav.files_dir(ALICE);
    assert_eq!(file_bytes(&dav, ALICE).await, 700, "the whole tree refunded at once");
    assert_eq!(tree_bytes(&root), 1200, "nothing removed yet");
    // Half way through removing the tree.
    std::fs::remove_file(root.join("d/a.txt")).unwrap();

    let dav = restart(dav).await;
    assert!(!dav.files_dir(ALICE).join("d").exists(), "the folder is gone");
    assert_eq!(get(&dav, "/d/sub/b.txt").await.0, 404);
    assert_eq!(get(&dav, "/kept.txt").await, (200, "k".repeat(700)));
    assert_consistent(&dav).await;
}

/// A folder DELETE without a crash: 204, the members' usage and dead properties go with it,
/// and a folder of the same name made afterwards starts empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folder_delete_refunds_the_tree_and_drops_its_properties() {
    let dav = Dav::start(None).await;
    assert_eq!(dav.curl(ALICE, &["-X", "MKCOL", &dav.url("/d/")]).await.status, 201);
    assert_eq!(dav.curl(ALICE, &["-X", "MKCOL", &dav.url("/d/e/")]).await.status, 201);
    for i in 0..20 {
        assert_eq!(put(&dav, &format!("/d/e/f{i}.txt"), &"x".repeat(100)).await, 201);
    }
    assert_eq!(put(&dav, "/d/top.txt", &"t".repeat(50)).await, 201);
    assert_eq!(put(&dav, "/kept.txt", &"k".repeat(30)).await, 201);
    let body = r#"<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set><D:prop><Z:tag>v</Z:tag></D:prop></D:set></D:propertyupdate>"#;
    let r = dav
        .curl(
            ALICE,
            &["-X", "PROPPATCH", "--data-binary", body, &dav.url("/d/e/f3.txt")],
        )
        .await;
    assert_eq!(r.status, 207);
    assert_eq!(file_bytes(&dav, ALICE).await, 2080);

    assert_eq!(dav.curl(ALICE, &["-X", "DELETE", &dav.url("/d/")]).await.status, 204);
    assert!(!dav.files_dir(ALICE).join("d").exists());
    assert_eq!(file_bytes(&dav, ALICE).await, 30);
    // kept.txt keeps its own (its content hash).
    let props: i64 = sqlx::query_scalar("SELECT count(*) FROM dav_props WHERE path = '/d' OR path LIKE '/d/%'")
        .fetch_one(&dav.env.context.db)
        .await
        .unwrap();
    assert_eq!(props, 0, "the members' dead properties are gone");
    assert_eq!(dav.curl(ALICE, &["-X", "MKCOL", &dav.url("/d/")]).await.status, 201);
    assert_eq!(get(&dav, "/d/top.txt").await.0, 404);
    assert_eq!(put(&dav, "/kept.txt", "k").await, 204);
    assert_eq!(file_bytes(&dav, ALICE).await, tree_bytes(&dav.files_dir(ALICE)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_interrupted_after_the_commit_is_finished_at_restart() {
    let dav = Dav::start(None).await;
    assert_eq!(dav.curl(ALICE, &["-X", "MKCOL", &dav.url("/d/")]).await.status, 201);
    assert_eq!(put(&dav, "/a.txt", &"a".repeat(400)).await, 201);

    crash_at(&dav.files_dir(ALICE), CrashPoint::AfterCommit);
    let r = dav
        .curl(
            ALICE,
            &[
                "-X",
                "MOVE",
                "-H",
                &format!("Destination: {}", dav.url("/d/b.txt")),
                &dav.url("/a.txt"),
            ],
        )
        .await;
    assert!(!(200..300).contains(&r.status), "the move did not finish: {}", r.status);
    assert!(dav.files_dir(ALICE).join("a.txt").exists());

    let dav = restart(dav).await;
    assert_eq!(get(&dav, "/a.txt").await.0, 404);
    assert_eq!(get(&dav, "/d/b.txt").await, (200, "a".repeat(400)));
    assert_consistent(&dav).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_interrupted_after_the_commit_is_finished_at_restart() {
    let dav = Dav::start(None).await;
    assert_eq!(put(&dav, "/a.txt", &"c".repeat(600)).await, 201);

    crash_at(&dav.files_dir(ALICE), CrashPoint::AfterCommit);
    let r = dav
        .curl(
            ALICE,
            &[
                "-X",
                "COPY",
                "-H",
                &format!("Destination: {}", dav.url("/b.txt")),
                &dav.url("/a.txt"),
            ],
        )
        .await;
    assert!(!(200..300).contains(&r.status), "the copy did not finish: {}", r.status);
    assert_eq!(file_bytes(&dav, ALICE).await, 1200, "the copy is charged");
    assert_eq!(tree_bytes(&dav.files_dir(ALICE)), 600, "not yet in place");

    let dav = restart(dav).await;
    assert_eq!(get(&dav, "/a.txt").await, (200, "c".repeat(600)));
    assert_eq!(get(&dav, "/b.txt").await, (200, "c".repeat(600)));
    assert_consistent(&dav).await;
}

/// A leftover row whose step did happen (the normal case: rows are deleted lazily) only loses
/// its row; the file is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_finished_steps_are_just_dropped() {
    let dav = Dav::start(None).await;
    assert_eq!(put(&dav, "/one.txt", "first").await, 201);
    assert_eq!(put(&dav, "/two.txt", "second").await, 201);
    assert_eq!(
        dav.curl(ALICE, &["-X", "DELETE", &dav.url("/one.txt")]).await.status,
        204
    );
    assert!(journal_rows(&dav).await >= 1, "the last step's row is deleted lazily");
    let dav = restart(dav).await;
    assert_eq!(get(&dav, "/two.txt").await, (200, "second".to_string()));
    assert_eq!(get(&dav, "/one.txt").await.0, 404);
    assert_consistent(&dav).await;
}

/// Built by hand: a committed PUT whose temp file a power cut lost (its folder entry never
/// reached the disk). Nothing can be placed; usage is recounted from the tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_temp_file_makes_recovery_recount_usage() {
    let dav = Dav::start(None).await;
    assert_eq!(put(&dav, "/doc.txt", &"o".repeat(1000)).await, 201);
    let id = user_id(&dav, ALICE).await;
    let db = dav.env.context.db.clone();
    let env = dav.stop().await;
    // What the committed transaction left: usage for the new 5000 bytes (old 1000 refunded),
    // a row naming a temp file that is not there.
    sqlx::query("UPDATE users SET file_bytes = 5000 WHERE id = $1")
        .bind(id)
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("INSERT INTO dav_journal (user_id, op, path, source, ino) VALUES ($1, 'place', $2, $3, 123456789)")
        .bind(id)
        .bind(b"doc.txt".to_vec())
        .bind(format!("{UPLOAD_TEMP_PREFIX}lost").into_bytes())
        .execute(&db)
        .await
        .unwrap();
    let dav = serve_again(env).await;
    assert_eq!(
        get(&dav, "/doc.txt").await,
        (200, "o".repeat(1000)),
        "the old content stays"
    );
    assert_consistent(&dav).await;
    assert_eq!(file_bytes(&dav, ALICE).await, 1000);
}

/// Built by hand: a committed PUT into a subfolder whose rename never happened (temp file and
/// row there), and a committed DELETE whose unlink did not reach the disk. Recovery does both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_built_leftover_state_is_finished() {
    let dav = Dav::start(None).await;
    assert_eq!(dav.curl(ALICE, &["-X", "MKCOL", &dav.url("/sub/")]).await.status, 201);
    assert_eq!(put(&dav, "/sub/x.bin", &"x".repeat(2000)).await, 201);
    assert_eq!(put(&dav, "/y.bin", &"y".repeat(300)).await, 201);
    let id = user_id(&dav, ALICE).await;
    let root = dav.files_dir(ALICE);
    let db = dav.env.context.db.clone();
    let env = dav.stop().await;

    let temp = root.join(format!("sub/{UPLOAD_TEMP_PREFIX}abc"));
    std::fs::write(&temp, "z".repeat(50)).unwrap();
    let temp_ino = std::fs::metadata(&temp).unwrap().ino();
    let y_ino = std::fs::metadata(root.join("y.bin")).unwrap().ino();
    // Usage as the two committed transactions left it: x 2000 -> 50, y refunded.
    sqlx::query("UPDATE users SET file_bytes = 50 WHERE id = $1")
        .bind(id)
        .execute(&db)
        .await
        .unwrap();
    for (op, path, source, ino) in [
        (
            "place",
            "sub/x.bin",
            Some(format!("sub/{UPLOAD_TEMP_PREFIX}abc")),
            temp_ino,
        ),
        ("delete", "y.bin", None, y_ino),
    ] {
        sqlx::query("INSERT INTO dav_journal (user_id, op, path, source, ino) VALUES ($1, $2, $3, $4, $5)")
            .bind(id)
            .bind(op)
            .bind(path.as_bytes().to_vec())
            .bind(source.map(String::into_bytes))
            .bind(ino as i64)
            .execute(&db)
            .await
            .unwrap();
    }
    let dav = serve_again(env).await;
    assert_eq!(get(&dav, "/sub/x.bin").await, (200, "z".repeat(50)));
    assert_eq!(get(&dav, "/y.bin").await.0, 404);
    assert_consistent(&dav).await;
    assert_eq!(file_bytes(&dav, ALICE).await, 50);
}

/// A temp file of an upload cut by a crash before its commit (no row): removed at the next
/// start, usage untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncommitted_temp_file_is_swept_at_restart() {
    let dav = Dav::start(None).await;
    assert_eq!(put(&dav, "/doc.txt", "kept").await, 201);
    let root = dav.files_dir(ALICE);
    let env = dav.stop().await;
    std::fs::write(root.join(format!("{UPLOAD_TEMP_PREFIX}cut")), "half an upload").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let dav = serve_again(env).await;
    let mut clean = false;
    for _ in 0..50 {
        if temp_files(&root).is_empty() {
            clean = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(clean, "the temp file of a cut upload is swept");
    assert_eq!(get(&dav, "/doc.txt").await, (200, "kept".to_string()));
    assert_consistent(&dav).await;
}

/// A folder DELETE renames the folder aside (a hidden name) and removes its contents after
/// the answer. Built by hand: a crash cut that removal. The folder set aside counts for no
/// usage, shows in no listing, and the next start removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_folder_set_aside_is_removed_at_restart() {
    let dav = Dav::start(None).await;
    assert_eq!(put(&dav, "/doc.txt", "kept").await, 201);
    let root = dav.files_dir(ALICE);
    let env = dav.stop().await;
    let aside = root.join(format!("{UPLOAD_TEMP_PREFIX}deleted-cut"));
    std::fs::create_dir_all(aside.join("sub")).unwrap();
    for i in 0..50 {
        std::fs::write(aside.join(format!("sub/f{i}.txt")), "gone already").unwrap();
    }
    assert_eq!(tree_bytes(&root), 4, "a folder set aside is not counted");
    let dav = serve_again(env).await;
    let listing = dav
        .curl(ALICE, &["-X", "PROPFIND", "-H", "Depth: 1", &dav.url("/")])
        .await;
    assert!(!listing.text().contains("deleted-cut"), "{}", listing.text());
    let mut gone = false;
    for _ in 0..50 {
        if !aside.exists() {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "the folder set aside is removed at start");
    assert_eq!(get(&dav, "/doc.txt").await, (200, "kept".to_string()));
    assert_consistent(&dav).await;
}

/// A folder of many files deleted: 204 at once, the folder gone for every client before the
/// answer, and its contents removed after it (no hidden folder left for long).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_folder_is_gone_at_once_and_its_contents_follow() {
    let dav = Dav::start(None).await;
    assert_eq!(dav.curl(ALICE, &["-X", "MKCOL", &dav.url("/big/")]).await.status, 201);
    for i in 0..100 {
        assert_eq!(put(&dav, &format!("/big/f{i}.txt"), "0123456789").await, 201);
    }
    assert_eq!(put(&dav, "/kept.txt", "k").await, 201);
    assert_eq!(dav.curl(ALICE, &["-X", "DELETE", &dav.url("/big/")]).await.status, 204);
    let root = dav.files_dir(ALICE);
    assert!(!root.join("big").exists());
    assert_eq!(get(&dav, "/big/f1.txt").await.0, 404);
    assert_eq!(file_bytes(&dav, ALICE).await, 1);
    let mut clean = false;
    for _ in 0..50 {
        let left: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(UPLOAD_TEMP_PREFIX))
            .collect();
        if left.is_empty() {
            clean = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(clean, "the deleted folder's contents are removed after the answer");
    // No restart here: the DELETE's own journal row stays until this user's next change.
    assert_eq!(file_bytes(&dav, ALICE).await, tree_bytes(&root));
}

/// Several PUTs of different sizes to one path at once, by one user: the file is one of them
/// whole, and usage equals the tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_puts_of_one_path_keep_usage_equal_to_the_tree() {
    let dav = Dav::start(Some(10 << 20)).await;
    let tmp = tempfile::tempdir().unwrap();
    let sizes = [1usize, 1000, 70_000, 333_333, 5, 120_000, 0, 2_000_000];
    let files: Vec<String> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let p = tmp.path().join(format!("f{i}"));
            std::fs::write(&p, vec![b'a' + i as u8; n]).unwrap();
            p.to_string_lossy().into_owned()
        })
        .collect();
    let url = dav.url("/same.bin");
    for round in 0..3 {
        let puts = files.iter().map(|f| {
            let (f, url, dav) = (f.clone(), url.clone(), &dav);
            async move { dav.curl(ALICE, &["-T", &f, &url]).await }
        });
        let statuses: Vec<u16> = futures::future::join_all(puts).await.iter().map(|r| r.status).collect();
        assert!(
            statuses.iter().all(|s| *s == 201 || *s == 204),
            "round {round}: {statuses:?}"
        );
        let root = dav.files_dir(ALICE);
        let body = std::fs::read(root.join("same.bin")).unwrap();
        assert!(
            sizes
                .iter()
                .enumerate()
                .any(|(i, &n)| body.len() == n && body.iter().all(|&b| b == b'a' + i as u8)),
            "the file is one of the uploads, whole"
        );
        assert_eq!(file_bytes(&dav, ALICE).await, tree_bytes(&root), "round {round}");
        assert_eq!(file_bytes(&dav, ALICE).await, body.len() as u64);
        assert!(temp_files(&root).is_empty());
        let info = shared::quota::info(&dav.env.context.db, user_id(&dav, ALICE).await)
            .await
            .unwrap();
        assert_eq!(info.reserved_bytes, 0, "no reservation left");
    }
}

/// PUTs, DELETEs, COPYs and MOVEs of the same few paths at once: usage equals the tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_writes_of_every_kind_keep_usage_equal_to_the_tree() {
    let dav = Dav::start(None).await;
    let tmp = tempfile::tempdir().unwrap();
    let files: Vec<String> = [10usize, 50_000, 300_000, 7]
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let p = tmp.path().join(format!("f{i}"));
            std::fs::write(&p, vec![b'a' + i as u8; n]).unwrap();
            p.to_string_lossy().into_owned()
        })
        .collect();
    let (a, b) = (dav.url("/a.bin"), dav.url("/b.bin"));
    let dest_a = format!("Destination: {a}");
    let dest_b = format!("Destination: {b}");
    for round in 0..4 {
        let mut requests: Vec<Vec<String>> = files
            .iter()
            .flat_map(|f| {
                [
                    vec!["-T".into(), f.clone(), a.clone()],
                    vec!["-T".into(), f.clone(), b.clone()],
                ]
            })
            .collect();
        requests.push(vec!["-X".into(), "DELETE".into(), a.clone()]);
        requests.push(vec!["-X".into(), "COPY".into(), "-H".into(), dest_b.clone(), a.clone()]);
        requests.push(vec!["-X".into(), "MOVE".into(), "-H".into(), dest_a.clone(), b.clone()]);
        requests.push(vec!["-X".into(), "DELETE".into(), b.clone()]);
        let replies = futures::future::join_all(requests.iter().map(|args| {
            let dav = &dav;
            async move {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                dav.curl(ALICE, &args).await
            }
        }))
        .await;
        for r in &replies {
            assert!(r.status < 500, "round {round}: {} {}", r.status, r.text());
        }
        let root = dav.files_dir(ALICE);
        assert_eq!(file_bytes(&dav, ALICE).await, tree_bytes(&root), "round {round}");
        assert!(temp_files(&root).is_empty());
    }
}

/// A folder moved away while an upload into it streams: the upload fails, nothing is charged
/// for it, and usage still equals the tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_moved_during_an_upload_into_it() {
    let dav = Dav::start(None).await;
    assert_eq!(dav.curl(ALICE, &["-X", "MKCOL", &dav.url("/d/")]).await.status, 201);
    assert_eq!(put(&dav, "/d/small.txt", "small").await, 201);
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("big");
    std::fs::write(&big, vec![b'b'; 3 << 20]).unwrap();
    let big = big.to_string_lossy().into_owned();
    let url = dav.url("/d/big.bin");
    let upload_args = ["--limit-rate", "2M", "-T", &big, &url];
    let upload = dav.curl(ALICE, &upload_args);
    let mv = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        dav.curl(
            ALICE,
            &[
                "-X",
                "MOVE",
                "-H",
                &format!("Destination: {}", dav.url("/e/")),
                &dav.url("/d/"),
            ],
        )
        .await
    };
    let (up, mv) = tokio::join!(upload, mv);
    assert_eq!(mv.status, 201);
    assert!(
        !(200..300).contains(&up.status),
        "the upload lost its folder: {}",
        up.status
    );
    let root = dav.files_dir(ALICE);
    assert_eq!(file_bytes(&dav, ALICE).await, tree_bytes(&root));
    assert_eq!(file_bytes(&dav, ALICE).await, 5);
    assert_eq!(get(&dav, "/e/small.txt").await, (200, "small".to_string()));
    // The temp file moved with the folder; the next start sweeps it.
    let dav = restart(dav).await;
    let mut clean = false;
    for _ in 0..50 {
        if temp_files(&root).is_empty() {
            clean = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(clean);
    assert_consistent(&dav).await;
}

/// The rename after a committed PUT fails (an I/O error): davd recovers at once, so the
/// upload's bytes and the usage agree without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_is_recovered_without_a_restart() {
    let dav = Dav::start(None).await;
    assert_eq!(put(&dav, "/doc.txt", &"o".repeat(100)).await, 201);
    crash_at(&dav.files_dir(ALICE), CrashPoint::StepFails);
    assert_eq!(put(&dav, "/doc.txt", &"n".repeat(250)).await, 500);
    // Committed, so recovery finished the rename.
    assert_eq!(get(&dav, "/doc.txt").await, (200, "n".repeat(250)));
    assert_consistent(&dav).await;
    // And the user goes on as usual.
    assert_eq!(put(&dav, "/doc.txt", "again").await, 204);
    assert_eq!(file_bytes(&dav, ALICE).await, 5);
    assert_eq!(tree_bytes(&dav.files_dir(ALICE)), 5);
}

/// `tinydc quota recalc` while davd is down after a crash counts the tree without the step the
/// crash interrupted; finishing it at start must not leave usage off by that step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recalc_between_the_crash_and_the_restart() {
    let dav = Dav::start(None).await;
    assert_eq!(put(&dav, "/doc.txt", &"o".repeat(100)).await, 201);
    crash_at(&dav.files_dir(ALICE), CrashPoint::AfterCommit);
    assert_eq!(put(&dav, "/doc.txt", &"n".repeat(900)).await, 500);
    let root = dav.files_dir(ALICE);
    let id = user_id(&dav, ALICE).await;
    let env = dav.stop().await;
    shared::quota::recalc(&env.context.db, id, &root).await.unwrap();
    let dav = serve_again(env).await;
    assert_eq!(get(&dav, "/doc.txt").await, (200, "n".repeat(900)));
    assert_consistent(&dav).await;
}
