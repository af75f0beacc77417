//! Moving out and in again (issue #11 item 3): an account filled over IMAP (nested and 8-bit
//! folder names, flags, keywords, varied INTERNALDATEs, 8-bit headers, a 3 MB message) is
//! exported by the real binary and
//! - its Maildir export is imported into a second account: every folder, message (bytes),
//!   flag and INTERNALDATE is the same, compared from outside over IMAP;
//! - the same Maildir export is served by a real Dovecot: it lists and reads the same;
//! - its mbox export (one file per folder) is imported into a third account folder by folder:
//!   the same folders, dates and flags (the bytes differ by the flag headers the export adds).

mod common;
#[path = "common/imap_tree.rs"]
mod imap_tree;

use std::path::Path;

use common::dovecot::Dovecot;
use common::{Suite, data_dir, ok, require_daemons};
use imap_tree::Dump;

const USERS: [(&str, &str); 3] = [
    ("alice@example.test", "alice-pw"),
    ("bob@example.test", "bob-pw"),
    ("carol@example.test", "carol-pw"),
];

/// Our imapd's dump of `user` (STARTTLS: the plain port refuses LOGIN without TLS otherwise).
fn ours(suite: &Suite, user: usize) -> Dump {
    imap_tree::dump(suite.ports.imap, USERS[user].0, USERS[user].1, true)
}

/// `(internaldate, flags)` of each message, the bytes left out.
fn dates_and_flags(dump: &Dump) -> std::collections::BTreeMap<String, Vec<String>> {
    dump.iter()
        .map(|(folder, messages)| {
            let mut kept: Vec<String> = messages.iter().map(|m| format!("{} {}", m[2], m[3])).collect();
            kept.sort();
            (folder.clone(), kept)
        })
        .collect()
}

/// The folder an mbox export file holds: `Work.a%2Eb.mbox` → `Work/a.b`.
fn folder_of(file: &Path) -> String {
    let stem = file
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .strip_suffix(".mbox")
        .unwrap();
    stem.split('.')
        .map(|level| {
            let bytes = level.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'%' && i + 2 < bytes.len() {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 3;
                } else {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            String::from_utf8(out).unwrap()
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[test]
fn an_export_comes_back_whole_through_import_and_dovecot_reads_it() {
    require_daemons();
    let (dir, data) = data_dir();
    ok(&data, &["init", "--domain", "example.test"], None);
    for (user, password) in USERS {
        ok(
            &data,
            &["user", "add", user, "--password-stdin"],
            Some(&format!("{password}\n")),
        );
    }
    let suite = Suite::start(&data);
    imap_tree::fill(suite.ports.imap, USERS[0].0, USERS[0].1, 0);
    let original = ours(&suite, 0);
    assert!(original["Work/Projects/Entwürfe"].len() >= 2, "{original:?}");

    // Maildir: out of alice, into bob.
    let maildir = dir.path().join("maildir");
    let out = ok(
        &data,
        &["export", USERS[0].0, "--maildir", maildir.to_str().unwrap()],
        None,
    );
    let count: usize = original.values().map(Vec::len).sum();
    assert!(out.contains(&format!("exported {count} message(s)")), "{out}");
    ok(
        &data,
        &["import", USERS[1].0, "--maildir", maildir.to_str().unwrap()],
        None,
    );
    assert_eq!(ours(&suite, 1), original, "bob after importing alice's Maildir export");
    // A second import adds nothing.
    let again = ok(
        &data,
        &["import", USERS[1].0, "--maildir", maildir.to_str().unwrap()],
        None,
    );
    assert!(again.contains("imported 0 message(s)"), "{again}");

    // The same export, served by Dovecot.
    let dovecot = Dovecot::start(&[("alice", "secret")]);
    let home = dovecot.maildir("alice");
    copy_tree(&maildir, &home);
    let owner = std::fs::metadata(home.parent().unwrap()).unwrap();
    chown_tree(
        &home,
        std::os::unix::fs::MetadataExt::uid(&owner),
        std::os::unix::fs::MetadataExt::gid(&owner),
    );
    let served = imap_tree::dump(dovecot.imap_port, "alice", "secret", false);
    assert_eq!(
        served,
        original,
        "Dovecot serving the Maildir export\n{}",
        dovecot.log()
    );

    // mbox: one file per folder, each imported into carol's folder of that name. Messages
    // marked \Deleted are exported as deleted for Thunderbird (X-Mozilla-Status 0x8), which
    // an import skips.
    let mbox = dir.path().join("mbox");
    ok(&data, &["export", USERS[0].0, "--mbox", mbox.to_str().unwrap()], None);
    for entry in std::fs::read_dir(&mbox).unwrap() {
        let file = entry.unwrap().path();
        let folder = folder_of(&file);
        ok(
            &data,
            &[
                "import",
                USERS[2].0,
                "--mbox",
                file.to_str().unwrap(),
                "--folder",
                &folder,
            ],
            None,
        );
    }
    let mut want = dates_and_flags(&original);
    for messages in want.values_mut() {
        messages.retain(|m| !m.contains("\\\\Deleted"));
    }
    assert_eq!(
        dates_and_flags(&ours(&suite, 2)),
        want,
        "carol after importing the mbox files"
    );
    suite.stop();
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
            let mtime = entry.metadata().unwrap().modified().unwrap();
            std::fs::File::options()
                .write(true)
                .open(&target)
                .unwrap()
                .set_modified(mtime)
                .unwrap();
        }
    }
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path(), uid, gid);
        }
    }
}
