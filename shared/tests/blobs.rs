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
