//! `tinydc check [--repair]` against a store damaged on purpose: each kind of damage is found
//! (exit 1, named), what is repairable is repaired by `--repair` (then the check is clean),
//! and what is not (a missing or corrupted body, files of no user) is named with the messages
//! it hurts.

mod common;
#[path = "common/store.rs"]
mod store;

use std::fs::FileTimes;
use std::time::{Duration, SystemTime};

use chrono::Utc;
use common::{data_dir, ok, tinydc};
use shared::mailstore::DeliveryTarget;
use store::Store;

/// Run `tinydc check ARGS`: (exit code, stdout, stderr).
fn check(data: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["check"];
    all.extend_from_slice(args);
    let out = tinydc(data, &all, None);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn has_all(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "expected {needle:?} in:\n{text}");
    }
}

fn make_old(path: &std::path::Path) {
    let then = SystemTime::now() - Duration::from_secs(2 * 3600);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_times(FileTimes::new().set_modified(then).set_accessed(then))
        .unwrap();
}

#[test]
fn damage_is_found_and_what_is_safe_repaired() {
    let (_dir, data) = data_dir();
    ok(&data, &["init", "--domain", "example.test"], None);
    for user in ["alice@example.test", "bob@example.test"] {
        ok(&data, &["user", "add", user, "--password-stdin"], Some("pw\n"));
    }
    let store = Store::open(&data);
    let alice = store.user_id("alice@example.test");
    let bob = store.user_id("bob@example.test");
    // One body shared by both (delivered to two people), one of Alice's own.
    let (shared_blob, own_blob) = store.rt.block_on(async {
        let targets = [alice, bob]
            .into_iter()
            .map(|user_id| DeliveryTarget {
                user_id,
                mailbox_id: None,
                reservation: None,
            })
            .collect();
        store
            .mail
            .deliver(targets, b"Subject: to both\n\nhello\n", &[], Utc::now())
            .await
            .unwrap();
        let inbox = store.mail.mailbox(alice, "INBOX").await.unwrap();
        store
            .mail
            .append(alice, inbox.id, b"Subject: own\n\nmine\n", &[], Utc::now(), None)
            .await
            .unwrap();
        let m = store.mail.fetch_light(alice, inbox.id, &[1, 2]).await.unwrap();
        (m[0].blob.clone(), m[1].blob.clone())
    });
    // Alice's files, with dead properties and a live lock on them.
    let files = data.join("files").join("alice@example.test");
    std::fs::create_dir_all(files.join("docs")).unwrap();
    std::fs::write(files.join("docs/my doc.txt"), b"some text").unwrap();
    ok(&data, &["quota", "recalc"], None);
    let prop = |user: i64, path: &str| {
        store.sql(&format!(
            "INSERT INTO dav_props (user_id, path, namespace, name, xml)
             VALUES ({user}, '{path}', 'urn:x', 'color', '\\x3c782f3e')"
        ))
    };
    prop(alice, "/docs/my%20doc.txt");
    prop(alice, "/docs");
    store.sql(&format!(
        "INSERT INTO dav_locks (token, user_id, path, timeout_at, shared, deep, created_at)
         VALUES ('opaquelocktoken:live', {alice}, '/docs/my%20doc.txt', now() + interval '10 minutes',
                 false, false, now() - interval '2 hours')"
    ));

    let (code, out, err) = check(&data, &[]);
    assert_eq!(code, 0, "a healthy store checks clean:\n{out}{err}");
    has_all(&out, &["checked 2 bodies", "2 users: 0 problem(s)"]);

    // Damage that can be repaired.
    store.sql(&format!(
        "UPDATE users SET mail_bytes = mail_bytes + 12345 WHERE id = {alice}"
    ));
    std::fs::create_dir_all(data.join("files/bob@example.test")).unwrap();
    std::fs::write(data.join("files/bob@example.test/extra.bin"), vec![7u8; 1000]).unwrap();
    prop(alice, "/gone.txt");
    store.sql(&format!(
        "INSERT INTO dav_locks (token, user_id, path, timeout_at, shared, deep, created_at)
         VALUES ('opaquelocktoken:orphan', {alice}, '/gone-too.txt', now() + interval '10 minutes',
                 false, false, now() - interval '2 hours'),
                ('opaquelocktoken:expired', {bob}, '/x', now() - interval '1 minute',
                 false, false, now() - interval '20 minutes')"
    ));
    store.sql(&format!(
        "UPDATE blobs SET refcount = refcount + 3 WHERE id = '{shared_blob}'"
    ));
    // The dangerous one: a referenced body counted as unreferenced long ago, which a sweep
    // would take if the count were not fixed first.
    store.sql(&format!(
        "UPDATE blobs SET refcount = 0, zero_since = now() - interval '1 day' WHERE id = '{own_blob}'"
    ));
    store.sql(&format!(
        "UPDATE mailboxes SET uidnext = 1, highestmodseq = 1 WHERE user_id = {alice} AND name = 'INBOX'"
    ));
    store.sql(&format!(
        "INSERT INTO quota_reservations (user_id, bytes, expires_at, owner)
         VALUES ({alice}, 5000, now() + interval '1 hour', 2000000000)"
    ));
    let blobs = data.join("blobs");
    let orphan = blobs.join("ab").join(format!("ab{}", "0".repeat(62)));
    let young = blobs.join("cd").join(format!("cd{}", "1".repeat(62)));
    for path in [&orphan, &young] {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"left by a crash").unwrap();
    }
    make_old(&orphan);

    let (code, out, err) = check(&data, &[]);
    assert_eq!(code, 1, "{out}{err}");
    has_all(
        &out,
        &[
            "alice@example.test: usage recorded as mail",
            "bob@example.test: usage recorded as mail 24 B, files 0 B; stored: mail 24 B, files 1000 B",
            "properties of /gone.txt, which does not exist",
            "lock opaquelocktoken:orphan on /gone-too.txt of a path that does not exist",
            "lock opaquelocktoken:expired on /x expired",
            &format!("body {shared_blob}: reference count 5 but 2 reference(s) exist"),
            &format!("body {own_blob}: reference count 0 but 1 reference(s) exist"),
            "alice@example.test INBOX: UIDNEXT 1 with UIDs up to 2",
            "1 quota reservation(s) of writers no longer running",
            &format!("body file ab{} (15 B) is referenced by nothing", "0".repeat(62)),
            "10 problem(s)",
        ],
    );
    assert!(
        !out.contains(&"1".repeat(62)),
        "a young file is a write in progress:\n{out}"
    );
    assert!(!out.contains("my%20doc") && !out.contains("/docs,"), "{out}");
    has_all(&err, &["10 problem(s) found", "--repair"]);
    // Read-only: nothing changed.
    assert!(orphan.exists());
    assert_eq!(
        store.number(&format!("SELECT refcount FROM blobs WHERE id = '{own_blob}'")),
        0
    );

    let (code, out, err) = check(&data, &["--repair"]);
    assert_eq!(code, 0, "{out}{err}");
    has_all(
        &out,
        &[
            "repaired: released 1 stale reservation(s)",
            &format!("repaired: body {shared_blob}: reference count 5 -> 2"),
            &format!("repaired: body {own_blob}: reference count 0 -> 1"),
            "repaired: alice@example.test INBOX: counters moved past the messages",
            "repaired: alice@example.test: usage recounted",
            "repaired: bob@example.test: usage recounted: mail 24 B, files 1000 B",
            "repaired: alice@example.test: properties of /gone.txt removed",
            "repaired: alice@example.test: lock opaquelocktoken:orphan removed",
            "repaired: bob@example.test: lock opaquelocktoken:expired removed",
            "repaired: removed 1 unreferenced bodies",
        ],
    );
    let (code, out, err) = check(&data, &[]);
    assert_eq!(code, 0, "clean after the repair:\n{out}{err}");
    has_all(&out, &["0 problem(s)"]);
    assert!(!orphan.exists() && young.exists());
    assert!(store.mail.blobs().path(&own_blob).exists());
    assert_eq!(
        store.number(&format!(
            "SELECT uidnext FROM mailboxes WHERE user_id = {alice} AND name = 'INBOX'"
        )),
        3
    );
    // Live locks and the properties of files that exist were kept.
    assert_eq!(store.number("SELECT count(*) FROM dav_props"), 2);
    assert_eq!(store.number("SELECT count(*) FROM dav_locks"), 1);

    // Damage that cannot be repaired: named with the messages it hurts.
    store.settled();
    std::fs::remove_file(store.mail.blobs().path(&own_blob)).unwrap();
    let shared_path = store.mail.blobs().path(&shared_blob);
    let len = std::fs::metadata(&shared_path).unwrap().len() as usize;
    std::fs::write(&shared_path, vec![b'x'; len]).unwrap();
    std::fs::create_dir_all(data.join("files/ghost@example.test")).unwrap();
    let (code, out, err) = check(&data, &[]);
    assert_eq!(code, 1, "{out}{err}");
    has_all(
        &out,
        &[
            &format!("body {own_blob} missing; cannot be repaired"),
            "belongs to: alice@example.test INBOX uid 2",
            &format!("body {shared_blob} damaged"),
            "alice@example.test INBOX uid 1, bob@example.test INBOX uid 1",
            "ghost@example.test belongs to no user",
            "3 problem(s)",
        ],
    );
    let (code, out, err) = check(&data, &["--repair"]);
    assert_eq!(code, 1, "{out}{err}");
    has_all(&err, &["3 problem(s) cannot be repaired"]);
    assert!(shared_path.exists(), "a damaged body is evidence, never removed");
    drop(store);
}

/// Run while mail arrives and goes: the read-only check sees one consistent snapshot (no
/// false alarm from a delivery half done), and `--repair` finds nothing to change.
#[test]
fn check_while_mail_arrives_and_goes() {
    let (_dir, data) = data_dir();
    ok(&data, &["init", "--domain", "example.test"], None);
    for user in ["alice@example.test", "bob@example.test"] {
        ok(&data, &["user", "add", user, "--password-stdin"], Some("pw\n"));
    }
    let store = Store::open(&data);
    let alice = store.user_id("alice@example.test");
    let bob = store.user_id("bob@example.test");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let mail = store.mail.clone();
        let stop = stop.clone();
        store.rt.spawn(async move {
            let inbox = mail.mailbox(alice, "INBOX").await.unwrap();
            let mut n = 0u64;
            let mut expunged = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let targets = [alice, bob]
                    .into_iter()
                    .map(|user_id| DeliveryTarget {
                        user_id,
                        mailbox_id: None,
                        reservation: None,
                    })
                    .collect();
                let body = format!("Subject: {n}\n\n{}\n", "x".repeat((n % 50) as usize * 100));
                let flags = if n.is_multiple_of(3) {
                    vec!["\\Deleted".to_string()]
                } else {
                    vec![]
                };
                let done = mail
                    .deliver(targets, body.as_bytes(), &flags, Utc::now())
                    .await
                    .unwrap();
                if n.is_multiple_of(3) {
                    // Drop Alice's copy again: references and usage go down meanwhile.
                    let uid = done[0].uid;
                    let gone = mail.expunge(alice, inbox.id, Some(&[uid])).await.unwrap();
                    assert_eq!(gone, vec![uid]);
                    expunged += 1;
                }
            }
            (n, expunged)
        })
    };
    // Checks (every third one repairing) until the writer has done a fair amount meanwhile.
    for i in 0.. {
        let args: &[&str] = if i % 3 == 2 { &["--repair"] } else { &[] };
        let (code, out, err) = check(&data, args);
        assert_eq!(code, 0, "check {args:?} during writes:\n{out}{err}");
        assert!(!out.contains("problem:") && !out.contains("repaired:"), "{out}");
        let delivered = store.number(
            "SELECT count(*) FROM messages WHERE mailbox_id IN (SELECT id FROM mailboxes WHERE name = 'INBOX')",
        );
        if (i >= 8 && delivered >= 40) || i >= 100 {
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (written, expunged) = store.rt.block_on(writer).unwrap();
    assert!(
        expunged > 1,
        "the writer ran ({written} deliveries, {expunged} expunged)"
    );
    let (code, out, err) = check(&data, &[]);
    assert_eq!(code, 0, "{out}{err}");
    drop(store);
}

/// A WebDAV upload between its commit (usage charged, journal row written) and its rename is
/// no usage problem, and --repair leaves that usage alone: once the rename happens it is right.
#[test]
fn an_upload_between_commit_and_rename_is_left_alone() {
    use std::os::unix::fs::MetadataExt as _;
    let (_dir, data) = data_dir();
    ok(&data, &["init", "--domain", "example.test"], None);
    ok(
        &data,
        &["user", "add", "alice@example.test", "--password-stdin"],
        Some("pw\n"),
    );
    let store = Store::open(&data);
    let alice = store.user_id("alice@example.test");
    let files = data.join("files/alice@example.test");
    std::fs::create_dir_all(&files).unwrap();
    // davd's PUT: the temp file, then one transaction charging it and journaling the rename.
    let temp = files.join(".tinydc-upload-test");
    std::fs::write(&temp, vec![1u8; 500]).unwrap();
    let ino = std::fs::metadata(&temp).unwrap().ino();
    store.sql(&format!("UPDATE users SET file_bytes = 500 WHERE id = {alice}"));
    store.sql(&format!(
        "INSERT INTO dav_journal (user_id, op, path, source, ino)
         VALUES ({alice}, 'place', 'new.txt', '.tinydc-upload-test', {ino})"
    ));
    for args in [&[][..], &["--repair"]] {
        let (code, out, err) = check(&data, args);
        assert_eq!(code, 0, "{out}{err}");
        has_all(&out, &["a WebDAV write is in progress", "0 problem(s)"]);
    }
    assert_eq!(
        store.number(&format!("SELECT file_bytes FROM users WHERE id = {alice}")),
        500
    );
    // The rename happens; the journal row stays until davd's next write, and is done.
    std::fs::rename(&temp, files.join("new.txt")).unwrap();
    let (code, out, err) = check(&data, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("in progress"), "{out}");
    // Usage that disagrees with a finished step is a problem again.
    store.sql(&format!("UPDATE users SET file_bytes = 400 WHERE id = {alice}"));
    let (code, out, _) = check(&data, &[]);
    assert_eq!(code, 1, "{out}");
    has_all(&out, &["files 400 B; stored: mail 0 B, files 500 B"]);
    drop(store);
}
