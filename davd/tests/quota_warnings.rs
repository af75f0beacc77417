//! Quota warnings caused by file uploads: the real davd over HTTPS (curl), the warning read
//! from the user's INBOX in the mail store (shared::quota::warn).

mod common;

use common::*;

const LIMIT: u64 = 1_000_000;

fn file(dir: &tempfile::TempDir, name: &str, len: usize) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, vec![b'w'; len]).unwrap();
    path.to_string_lossy().into_owned()
}

/// Subjects of the quota warnings in alice's INBOX, in order.
async fn warnings(dav: &Dav) -> Vec<String> {
    let mail = &dav.env.context.mail;
    let user = shared::accounts::get_user(&dav.env.context.db, ALICE).await.unwrap();
    let inbox = mail.mailbox(user.id, "INBOX").await.unwrap();
    let uids: Vec<u32> = mail
        .message_states(user.id, inbox.id)
        .await
        .unwrap()
        .iter()
        .map(|m| m.uid)
        .collect();
    mail.fetch(user.id, inbox.id, &uids)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| m.envelope.subject)
        .filter(|s| s.starts_with("Your storage is"))
        .collect()
}

async fn put(dav: &Dav, local: &str, path: &str) -> u16 {
    dav.curl(ALICE, &["-T", local, &dav.url(path)]).await.status
}

async fn copy(dav: &Dav, from: &str, to: &str) -> u16 {
    let destination = format!("Destination: {}", dav.url(to));
    dav.curl(ALICE, &["-X", "COPY", "-H", &destination, &dav.url(from)])
        .await
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_crossing_80_and_95_percent_warn_once_each() {
    let dav = Dav::start(Some(LIMIT)).await;
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c, d, e) = (
        file(&tmp, "a", 500_000),
        file(&tmp, "b", 310_000),
        file(&tmp, "c", 10_000),
        file(&tmp, "d", 140_000),
        file(&tmp, "e", 40_000),
    );

    assert_eq!(put(&dav, &a, "/a.bin").await, 201);
    assert!(warnings(&dav).await.is_empty(), "50%: no warning");
    assert_eq!(put(&dav, &b, "/b.bin").await, 201);
    assert_eq!(warnings(&dav).await, ["Your storage is 80% full"], "81%");

    // More writes above 80%, among them an overwrite (its old bytes are refunded and the new
    // ones charged in one transaction: no dip below 80% that anyone could see): nothing new.
    assert_eq!(put(&dav, &c, "/c.bin").await, 201);
    assert_eq!(put(&dav, &b, "/b.bin").await, 204);
    assert_eq!(warnings(&dav).await.len(), 1);

    assert_eq!(put(&dav, &d, "/d.bin").await, 201);
    assert_eq!(
        warnings(&dav).await,
        ["Your storage is 80% full", "Your storage is 95% full"],
        "96%"
    );

    // DELETE brings usage under 80%; a COPY crosses it again: a new warning.
    let deleted = dav.curl(ALICE, &["-X", "DELETE", &dav.url("/a.bin")]).await;
    assert_eq!(deleted.status, 204);
    assert_eq!(put(&dav, &e, "/e.bin").await, 201);
    assert_eq!(warnings(&dav).await.len(), 2, "50%: nothing");
    assert_eq!(copy(&dav, "/b.bin", "/b2.bin").await, 201);
    assert_eq!(
        warnings(&dav).await,
        [
            "Your storage is 80% full",
            "Your storage is 95% full",
            "Your storage is 80% full"
        ],
        "81% again"
    );

    // Bob has no limit: his uploads never warn.
    let r = dav.curl(BOB, &["-T", &a, &dav.url("/a.bin")]).await;
    assert_eq!(r.status, 201);
    let bob = shared::accounts::get_user(&dav.env.context.db, BOB).await.unwrap();
    let inbox = dav.env.context.mail.mailbox(bob.id, "INBOX").await.unwrap();
    assert!(
        dav.env
            .context
            .mail
            .message_states(bob.id, inbox.id)
            .await
            .unwrap()
            .is_empty()
    );
    dav.stop().await;
}

/// davd dies after an upload's commit, before its warning check: the restarted davd sends
/// the warning once its recovery ran (and only once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crossing_cut_short_by_a_crash_is_warned_after_restart() {
    use davd::journal::{CrashPoint, crash_at};
    let dav = Dav::start(Some(100_000)).await;
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(put(&dav, &file(&tmp, "a", 50_000), "/a.bin").await, 201);
    crash_at(&dav.files_dir(ALICE), CrashPoint::AfterCommit);
    assert_eq!(put(&dav, &file(&tmp, "b", 40_000), "/b.bin").await, 500);
    assert_eq!(file_bytes(&dav, ALICE).await, 90_000, "the upload's usage committed");
    assert!(warnings(&dav).await.is_empty(), "the crash came before the check");

    let dav = Dav::serve(dav.stop().await).await;
    // The first answer comes after recovery and the sweep.
    let r = dav
        .curl(ALICE, &["-X", "PROPFIND", "-H", "Depth: 0", &dav.url("/")])
        .await;
    assert_eq!(r.status, 207);
    assert_eq!(warnings(&dav).await, ["Your storage is 80% full"]);
    let dav = Dav::serve(dav.stop().await).await;
    let r = dav
        .curl(ALICE, &["-X", "PROPFIND", "-H", "Depth: 0", &dav.url("/")])
        .await;
    assert_eq!(r.status, 207);
    assert_eq!(warnings(&dav).await.len(), 1, "a second restart sends nothing");
    dav.stop().await;
}
