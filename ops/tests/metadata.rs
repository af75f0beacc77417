//! IMAP METADATA entries (RFC 5464, shared/src/metadata.rs) are part of a user's mail usage:
//! `tinydc quota recalc` counts them, `tinydc check` compares them, and a backup restored
//! elsewhere keeps them.

mod common;
#[path = "common/store.rs"]
mod store;

use std::process::Command;

use common::{TINYDC, data_dir, ok, tinydc};
use shared::metadata::{self, Depth, Scope};
use store::Store;

const ALICE: &str = "alice@example.test";

#[test]
fn quota_recalc_check_and_backup_count_metadata_entries() {
    let (dir, data) = data_dir();
    ok(&data, &["init", "--domain", "example.test"], None);
    ok(&data, &["user", "add", ALICE, "--password-stdin"], Some("pw\n"));
    let store = Store::open(&data);
    let alice = store.user_id(ALICE);
    let inbox = store.rt.block_on(store.mail.mailbox(alice, "INBOX")).unwrap();
    let limits = store.config.imap.metadata_limits();
    let entries = [
        ("/private/comment".to_string(), Some(vec![b'x'; 1000])),
        ("/shared/comment".to_string(), Some(b"shared".to_vec())),
    ];
    store
        .rt
        .block_on(metadata::set(
            &store.db,
            alice,
            Scope::Mailbox(inbox.id),
            &entries,
            limits,
        ))
        .unwrap();
    store
        .rt
        .block_on(metadata::set(
            &store.db,
            alice,
            Scope::Server,
            &[("/private/theme".to_string(), Some(b"dark".to_vec()))],
            limits,
        ))
        .unwrap();
    let charged = ("/private/comment".len() + 1000 + "/shared/comment".len() + 6 + "/private/theme".len() + 4) as u64;
    let mail = |store: &Store| store.number(&format!("SELECT mail_bytes FROM users WHERE id = {alice}")) as u64;
    assert_eq!(mail(&store), charged);

    // What was charged is what a recount finds, and the check agrees.
    let recalc = ok(&data, &["quota", "recalc"], None);
    assert!(recalc.contains("corrected 0"), "{recalc}");
    let checked = tinydc(&data, &["check"], None);
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stdout));

    // Usage that lost the entries is found by the check and recounted from them.
    store.sql(&format!("UPDATE users SET mail_bytes = 0 WHERE id = {alice}"));
    let checked = tinydc(&data, &["check"], None);
    assert!(!checked.status.success());
    assert!(
        String::from_utf8_lossy(&checked.stdout).contains(&format!("stored: mail {charged} B")),
        "{}",
        String::from_utf8_lossy(&checked.stdout)
    );
    let recalc = ok(&data, &["quota", "recalc"], None);
    assert!(recalc.contains("corrected 1"), "{recalc}");
    assert_eq!(mail(&store), charged);

    // A backup restored into a new data directory keeps the entries, and their usage.
    let to = dir.path().join("backup");
    let out = Command::new(TINYDC)
        .args(["backup", "--to"])
        .arg(&to)
        .env("TINYDC_DATA", &data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    drop(store);
    let restored = dir.path().join("restored");
    let out = Command::new(TINYDC)
        .args(["restore", "--from"])
        .arg(&to)
        .arg("--data")
        .arg(&restored)
        .env_remove("TINYDC_DATA")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let recalc = ok(&restored, &["quota", "recalc"], None);
    assert!(recalc.contains("corrected 0"), "{recalc}");
    let store = Store::open(&restored);
    let inbox = store.rt.block_on(store.mail.mailbox(alice, "INBOX")).unwrap();
    let got = store
        .rt
        .block_on(metadata::get(
            &store.db,
            alice,
            Scope::Mailbox(inbox.id),
            &["/private".to_string(), "/shared".to_string()],
            Depth::Infinity,
            &[],
        ))
        .unwrap();
    assert_eq!(got, entries.to_vec());
    assert_eq!(mail(&store), charged);
}
