//! The blob store: atomic writes, reference counts and the sweep.

use std::time::Duration;

use chrono::Utc;
use shared::blobs::{BlobId, BlobStore};
use shared::testing::TestEnv;

#[tokio::test]
async fn a_write_interrupted_before_rename_leaves_no_blob_and_is_swept() {
    let env = TestEnv::new().await;
    let store = BlobStore::new(env.dir.path().join("blobs"));
    // What a crash between write and rename leaves: a temp file, never a file at the blob's name.
    let body = b"half a message".to_vec();
    let tmp = env.dir.path().join("blobs/tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("blob-crashed"), &body).unwrap();
    let id = BlobId::of(&body);
    assert!(!store.path(&id).exists());
    // A crash after rename but before the metadata commit: a blob nobody references.
    let orphan = store.put(b"never committed").await.unwrap();
    assert!(store.path(&orphan).exists());

    // Within the grace period nothing is touched (a write may still be in progress)...
    let report = store.sweep(&env.context.db, Duration::from_secs(3600)).await.unwrap();
    assert_eq!(report.temp_files_removed + report.blobs_removed, 0);
    // ...after it, both are removed.
    let report = store.sweep(&env.context.db, Duration::ZERO).await.unwrap();
    assert_eq!(report.temp_files_removed, 1);
    assert_eq!(report.blobs_removed, 1);
    assert!(!store.path(&orphan).exists());
    assert!(std::fs::read_dir(&tmp).unwrap().next().is_none());
}

#[tokio::test]
async fn referenced_blobs_survive_and_unreferenced_ones_go() {
    let env = TestEnv::new().await;
    let mail = &env.context.mail;
    let user = env.add_user("alice@example.test", "pw", None).await;
    let inbox = mail.mailbox(user.id, "INBOX").await.unwrap();
    let raw = b"Subject: keep\r\n\r\nme\r\n";
    mail.append(user.id, inbox.id, raw, &[], Utc::now(), None)
        .await
        .unwrap();
    mail.append(user.id, inbox.id, raw, &["\\Deleted".into()], Utc::now(), None)
        .await
        .unwrap();
    let id = BlobId::of(raw);
    let path = mail.blobs().path(&id);
    assert!(path.exists());
    // Same bytes twice: one file, two references.
    mail.expunge(user.id, inbox.id, None).await.unwrap();
    mail.blobs().sweep(&env.context.db, Duration::ZERO).await.unwrap();
    assert!(path.exists(), "still referenced by message 1");
    mail.store_flags(
        user.id,
        inbox.id,
        &[1],
        shared::mailstore::FlagOp::Add,
        &["\\Deleted".into()],
        None,
    )
    .await
    .unwrap();
    mail.expunge(user.id, inbox.id, None).await.unwrap();
    let report = mail.blobs().sweep(&env.context.db, Duration::ZERO).await.unwrap();
    assert_eq!(report.blobs_removed, 1);
    assert!(!path.exists());
}

/// A small body is made durable by its commit (`blob_pending`), its file only later. What an
/// operating-system crash before that can leave of the file (nothing, an empty file, a file cut
/// short) is written back from the database by `settle_all`, which every daemon runs at start.
#[tokio::test]
async fn a_pending_body_whose_file_a_crash_lost_is_written_back() {
    let env = TestEnv::new().await;
    let mail = &env.context.mail;
    let db = &env.context.db;
    let user = env.add_user("alice@example.test", "pw", None).await;
    let inbox = mail.mailbox(user.id, "INBOX").await.unwrap();
    let bodies: Vec<Vec<u8>> = (0..3)
        .map(|i| format!("Subject: pending {i}\r\n\r\nbody number {i}\r\n").into_bytes())
        .collect();
    for raw in &bodies {
        mail.append(user.id, inbox.id, raw, &[], Utc::now(), None)
            .await
            .unwrap();
    }
    // Each appended body was listed; the store's own settling drops the rows shortly after.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pending_count(db).await > 0 {
        assert!(std::time::Instant::now() < deadline, "bodies still pending after 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The state right after the commits, before the files were settled, and a crash that lost
    // what was not fsynced.
    for raw in &bodies {
        sqlx::query("INSERT INTO blob_pending (id, body) VALUES ($1, $2)")
            .bind(BlobId::of(raw).0)
            .bind(raw)
            .execute(db)
            .await
            .unwrap();
    }
    let paths: Vec<_> = bodies.iter().map(|raw| mail.blobs().path(&BlobId::of(raw))).collect();
    std::fs::remove_file(&paths[0]).unwrap();
    std::fs::write(&paths[1], b"").unwrap();
    std::fs::write(&paths[2], &bodies[2][..7]).unwrap();

    let settled = shared::blobs::settle_all(db, mail.blobs()).await.unwrap();
    assert_eq!(settled, 3);
    assert_eq!(pending_count(db).await, 0);
    for (path, raw) in paths.iter().zip(&bodies) {
        assert_eq!(&std::fs::read(path).unwrap(), raw);
    }
    // Nothing is left to do the second time.
    assert_eq!(shared::blobs::settle_all(db, mail.blobs()).await.unwrap(), 0);
}

async fn pending_count(db: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM blob_pending")
        .fetch_one(db)
        .await
        .unwrap()
}

/// The settler of a running process (issue #12): small bodies appended one after another are
/// made durable by their commits; their files are then fsynced in rounds and their rows leave
/// `blob_pending` soon after, each file holding its body.
#[tokio::test]
async fn appended_small_bodies_are_settled_and_leave_blob_pending() {
    let env = TestEnv::new().await;
    let mail = &env.context.mail;
    let user = env.add_user("carol@example.test", "pw", None).await;
    let inbox = mail.mailbox(user.id, "INBOX").await.unwrap();
    let mut bodies = Vec::new();
    for n in 0..40 {
        let raw = format!("Subject: settle {n}\r\n\r\nbody {n}\r\n").into_bytes();
        mail.append(user.id, inbox.id, &raw, &[], Utc::now(), None)
            .await
            .unwrap();
        bodies.push((BlobId::of(&raw), raw));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM blob_pending")
            .fetch_one(&env.context.db)
            .await
            .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left} bodies still pending after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (id, raw) in &bodies {
        assert_eq!(&std::fs::read(mail.blobs().path(id)).unwrap(), raw, "{id}");
    }
}

/// A FETCH reads small bodies by their recorded size (one read, no stat): the bytes are the
/// file's whatever the recorded size says (a wrong one only costs reads), and a store whose
/// folder was replaced since it was first opened (a restore) reads the new folder's files.
#[tokio::test]
async fn bodies_read_by_known_size_are_the_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("blobs");
    let store = BlobStore::new(&root);
    let body: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let id = store.put(&body).await.unwrap();
    for recorded in [5000, 0, 1, 4999, 5001, 1 << 40] {
        assert_eq!(
            store.read_known_size_blocking(&id, recorded).unwrap(),
            body,
            "recorded size {recorded}"
        );
    }
    // A body past the first read's 64 KiB, read on to its end in room its size gives.
    let large: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let large_id = store.put(&large).await.unwrap();
    for recorded in [300_000, 70_000, 5000] {
        let read = store.read_known_size_blocking(&large_id, recorded).unwrap();
        assert!(read == large, "recorded size {recorded}: {} bytes read", read.len());
    }
    let empty = store.put(b"").await.unwrap();
    assert_eq!(store.read_known_size_blocking(&empty, 0).unwrap(), b"");
    assert_eq!(store.read_known_size_blocking(&empty, 7).unwrap(), b"");
    let missing = BlobId::of(b"never stored");
    let e = store.read_known_size_blocking(&missing, 3).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);

    // The folder moved away and a new one in its place: the old handle no longer finds the
    // blob, the whole path does.
    std::fs::rename(&root, dir.path().join("old-blobs")).unwrap();
    let fresh = BlobStore::new(&root);
    let other = fresh.put(b"written after the move").await.unwrap();
    assert_eq!(
        store.read_known_size_blocking(&other, 22).unwrap(),
        b"written after the move"
    );
}
