//! `tinydc export`: a varied account (nested and 8-bit folder names, flags, keywords, From_
//! lines in bodies, CRLF and LF, a long message with lines longer than the export's buffer)
//! exported as Maildir++ and as mbox by the real binary, and read back with Python's `mailbox`
//! module (ops/tests/clients/export_check.py) comparing bytes, flags, keywords and dates.

mod common;
#[path = "common/store.rs"]
mod store;

use std::io::Write as _;
use std::process::Command;

use chrono::{DateTime, TimeZone, Utc};
use common::{data_dir, fails, ok};
use store::Store;

struct Sample {
    imap_folder: &'static str,
    maildir_folder: &'static str,
    mbox_file: &'static str,
    bytes: Vec<u8>,
    flags: Vec<&'static str>,
    date: DateTime<Utc>,
    maildir_letters: &'static str,
    mbox_flags: &'static str,
    keywords: &'static str,
}

fn samples() -> Vec<Sample> {
    // A long message: a line of '>' longer than the export's 64 KiB pieces ending in "From ",
    // and 2 MB of ordinary lines after it.
    let mut long = b"From: d@example.test\nSubject: long\n\n".to_vec();
    long.extend(std::iter::repeat_n(b'>', 70_000));
    long.extend_from_slice(b"From the deep\n");
    for i in 0..40_000 {
        long.extend_from_slice(format!("line {i} of a long message, and From in the middle\n").as_bytes());
    }
    vec![
        Sample {
            imap_folder: "INBOX",
            maildir_folder: "",
            mbox_file: "INBOX.mbox",
            bytes: b"From: Ann <ann@example.test>\r\nTo: alice@example.test\r\nSubject: hello\r\n\
                Message-ID: <m1@example.test>\r\n\r\nFrom the start of a line.\r\n>From quoted already\r\n\
                >>From twice\r\nnot From here\r\n"
                .to_vec(),
            flags: vec!["\\Seen", "\\Flagged", "$Label1"],
            date: Utc.with_ymd_and_hms(2020, 1, 2, 3, 4, 5).unwrap(),
            maildir_letters: "FSa",
            mbox_flags: "ROF",
            keywords: "$Label1",
        },
        Sample {
            imap_folder: "INBOX",
            maildir_folder: "",
            mbox_file: "INBOX.mbox",
            bytes: b"From: b@example.test\nSubject: plain\n\nbody\n".to_vec(),
            flags: vec![],
            date: Utc.with_ymd_and_hms(2021, 6, 7, 8, 9, 10).unwrap(),
            maildir_letters: "",
            mbox_flags: "O",
            keywords: "",
        },
        Sample {
            imap_folder: "Work/Projekte Ü",
            maildir_folder: "Work.Projekte &ANw-",
            mbox_file: "Work.Projekte Ü.mbox",
            bytes: "From: c@example.test\nSubject: Grüße aus Köln\n\nFrom here too\n"
                .as_bytes()
                .to_vec(),
            flags: vec!["\\Answered", "\\Draft", "Work"],
            date: Utc.with_ymd_and_hms(2019, 12, 31, 23, 59, 59).unwrap(),
            maildir_letters: "DRa",
            mbox_flags: "OAT",
            keywords: "Work",
        },
        Sample {
            imap_folder: "Ärger & Co",
            maildir_folder: "&AMQ-rger &- Co",
            mbox_file: "Ärger & Co.mbox",
            bytes: long,
            flags: vec!["\\Deleted", "\\Seen"],
            date: Utc.with_ymd_and_hms(2022, 2, 2, 2, 2, 2).unwrap(),
            maildir_letters: "ST",
            mbox_flags: "ROD",
            keywords: "",
        },
        Sample {
            imap_folder: "a.b",
            maildir_folder: "a_b",
            mbox_file: "a%2Eb.mbox",
            bytes: b"Subject: dots\n\nx\n".to_vec(),
            flags: vec![],
            date: Utc.with_ymd_and_hms(2023, 3, 3, 3, 3, 3).unwrap(),
            maildir_letters: "",
            mbox_flags: "O",
            keywords: "",
        },
    ]
}

#[test]
fn export_reads_back_with_python_mailbox() {
    shared::testing::require_tool("python3");
    let (dir, data) = data_dir();
    ok(&data, &["init", "--domain", "example.test"], None);
    ok(
        &data,
        &["user", "add", "alice@example.test", "--password-stdin"],
        Some("pw\n"),
    );
    ok(
        &data,
        &["user", "add", "bob@example.test", "--password-stdin"],
        Some("pw\n"),
    );
    let store = Store::open(&data);
    let alice = store.user_id("alice@example.test");
    let samples = samples();
    store.rt.block_on(async {
        for name in ["Work/Projekte Ü", "Ärger & Co", "a.b"] {
            store.mail.create_mailbox(alice, name, None).await.unwrap();
        }
        for s in &samples {
            let mailbox = store.mail.mailbox(alice, s.imap_folder).await.unwrap();
            let flags: Vec<String> = s.flags.iter().map(|f| f.to_string()).collect();
            store
                .mail
                .append(alice, mailbox.id, &s.bytes, &flags, s.date, None)
                .await
                .unwrap();
        }
        // Bob's mail must not appear in Alice's export.
        let bob = shared::accounts::get_user(&store.db, "bob@example.test")
            .await
            .unwrap()
            .id;
        let inbox = store.mail.mailbox(bob, "INBOX").await.unwrap();
        store
            .mail
            .append(bob, inbox.id, b"Subject: bob's\n\nsecret\n", &[], Utc::now(), None)
            .await
            .unwrap();
    });

    let maildir = dir.path().join("maildir");
    let mbox = dir.path().join("mbox");
    let out = ok(
        &data,
        &["export", "alice@example.test", "--maildir", maildir.to_str().unwrap()],
        None,
    );
    assert!(out.contains("exported 5 message(s)"), "{out}");
    let out = ok(
        &data,
        &["export", "alice@example.test", "--mbox", mbox.to_str().unwrap()],
        None,
    );
    assert!(out.contains("exported 5 message(s)"), "{out}");

    // Dovecot's control files: UIDVALIDITY and UIDs kept, keywords by letter.
    let uidlist = std::fs::read_to_string(maildir.join("dovecot-uidlist")).unwrap();
    let inbox = store.rt.block_on(store.mail.mailbox(alice, "INBOX")).unwrap();
    assert!(
        uidlist.starts_with(&format!("3 V{} N3\n1 :", inbox.uidvalidity)),
        "{uidlist}"
    );
    assert_eq!(
        std::fs::read_to_string(maildir.join(".Work.Projekte &ANw-/dovecot-keywords")).unwrap(),
        "0 Work\n"
    );
    assert!(maildir.join(".Work.Projekte &ANw-/maildirfolder").exists());
    // The parent folder exists too (the store made it), and the empty default folders.
    assert!(maildir.join(".Work/cur").is_dir() && maildir.join(".Sent/cur").is_dir());

    let spec = dir.path().join("expected.tsv");
    let mut f = std::fs::File::create(&spec).unwrap();
    for s in &samples {
        writeln!(
            f,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            s.maildir_folder,
            s.mbox_file,
            hex(&s.bytes),
            s.maildir_letters,
            s.mbox_flags,
            s.keywords,
            s.date.timestamp(),
            s.date.format("%a %b %e %H:%M:%S %Y")
        )
        .unwrap();
    }
    drop(f);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/export_check.py");
    let check = Command::new("python3")
        .arg(script)
        .arg(&maildir)
        .arg(&mbox)
        .arg(&spec)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(check.status.success(), "{report}");
    assert!(report.contains("ok: 5 messages"), "{report}");

    // An export never writes into a directory that holds something, nor for a stranger.
    fails(
        &data,
        &["export", "alice@example.test", "--mbox", mbox.to_str().unwrap()],
        None,
        "not empty",
    );
    let fresh = dir.path().join("fresh");
    fails(
        &data,
        &["export", "nobody@example.test", "--maildir", fresh.to_str().unwrap()],
        None,
        "no such user",
    );
    drop(store);
}

#[test]
fn a_missing_body_is_named_and_the_rest_exported() {
    let (dir, data) = data_dir();
    ok(&data, &["init", "--domain", "example.test"], None);
    ok(
        &data,
        &["user", "add", "alice@example.test", "--password-stdin"],
        Some("pw\n"),
    );
    let store = Store::open(&data);
    let alice = store.user_id("alice@example.test");
    let blob = store.rt.block_on(async {
        let inbox = store.mail.mailbox(alice, "INBOX").await.unwrap();
        for body in ["Subject: one\n\n1\n", "Subject: two\n\n2\n"] {
            store
                .mail
                .append(alice, inbox.id, body.as_bytes(), &[], Utc::now(), None)
                .await
                .unwrap();
        }
        store.mail.fetch_light(alice, inbox.id, &[2]).await.unwrap()[0]
            .blob
            .clone()
    });
    store.settled();
    std::fs::remove_file(store.mail.blobs().path(&blob)).unwrap();
    let out = common::tinydc(
        &data,
        &[
            "export",
            "alice@example.test",
            "--mbox",
            dir.path().join("out").to_str().unwrap(),
        ],
        None,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("INBOX uid 2"), "{stdout}");
    assert!(stdout.contains("exported 1 message(s)"), "{stdout}");
    assert!(stderr.contains("1 message(s) could not be exported"), "{stderr}");
    let mbox = std::fs::read_to_string(dir.path().join("out/INBOX.mbox")).unwrap();
    assert!(
        mbox.contains("Subject: one") && !mbox.contains("Subject: two"),
        "{mbox}"
    );
    drop(store);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The high-water mark of resident memory of `tinydc ARGS` (VmHWM, sampled until it exits).
fn peak_memory_kib(data: &std::path::Path, args: &[&str]) -> u64 {
    let mut child = Command::new(common::TINYDC)
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("TINYDC_DATA")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status)
            && let Some(line) = text.lines().find(|l| l.starts_with("VmHWM:"))
        {
            let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
            peak = peak.max(kib);
        }
        if let Some(done) = child.try_wait().unwrap() {
            assert!(done.success(), "tinydc {args:?} failed");
            return peak;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// A 40 MB message is streamed: exporting it costs no more memory than exporting a tiny one,
/// give or take a few megabytes (never the message's size).
#[test]
fn a_large_message_is_streamed() {
    let (dir, data) = data_dir();
    ok(&data, &["init", "--domain", "example.test"], None);
    for user in ["small@example.test", "large@example.test"] {
        ok(&data, &["user", "add", user, "--password-stdin"], Some("pw\n"));
    }
    let store = Store::open(&data);
    let mut large = b"From: x@example.test\nSubject: large\n\n".to_vec();
    let line = format!("{}\nFrom a line that needs quoting\n", "y".repeat(998));
    while large.len() < 40 << 20 {
        large.extend_from_slice(line.as_bytes());
    }
    store.rt.block_on(async {
        for (address, body) in [
            ("small@example.test", &b"Subject: s\n\nx\n"[..]),
            ("large@example.test", &large),
        ] {
            let id = shared::accounts::get_user(&store.db, address).await.unwrap().id;
            let inbox = store.mail.mailbox(id, "INBOX").await.unwrap();
            store
                .mail
                .append(id, inbox.id, body, &[], Utc::now(), None)
                .await
                .unwrap();
        }
    });
    drop(large);
    for format in ["--maildir", "--mbox"] {
        let small = dir.path().join(format!("small{format}"));
        let big = dir.path().join(format!("large{format}"));
        let base = peak_memory_kib(
            &data,
            &["export", "small@example.test", format, small.to_str().unwrap()],
        );
        let peak = peak_memory_kib(&data, &["export", "large@example.test", format, big.to_str().unwrap()]);
        assert!(
            peak < base + 8 * 1024,
            "{format}: exporting 40 MB peaked at {peak} KiB, a tiny export at {base} KiB"
        );
    }
    let written = std::fs::metadata(dir.path().join("large--mbox/INBOX.mbox"))
        .unwrap()
        .len();
    assert!(written > 40 << 20, "{written}");
    drop(store);
}
