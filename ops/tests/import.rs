//! `tinydc import` driven as the admin runs it (the real binary on a real data directory), its
//! results read from outside over IMAP (python's imaplib against the running imapd): folders,
//! flags, INTERNALDATE and the stored bytes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::SystemTime;

use chrono::{DateTime, TimeZone, Utc};
use common::{Suite, TINYDC, data_dir, ok, require_daemons, tinydc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use shared::size::format_size;

fn client(name: &str) -> String {
    format!("{}/tests/clients/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn init(data: &Path, users: &[(&str, &str, Option<&str>)]) {
    ok(data, &["init", "--domain", "example.test"], None);
    for (address, password, quota) in users {
        let mut args = vec!["user", "add", address, "--password-stdin"];
        if let Some(quota) = quota {
            args.extend(["--quota", quota]);
        }
        ok(data, &args, Some(&format!("{password}\n")));
    }
}

/// `tinydc import ARGS...`: its output, whatever the exit status.
fn import(data: &Path, args: &[&str]) -> Output {
    let mut all = vec!["import"];
    all.extend_from_slice(args);
    tinydc(data, &all, None)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The summary line `imported N message(s)` and `already there: N` of a successful import.
fn counts(out: &Output) -> (u64, u64) {
    assert!(out.status.success(), "import failed: {}", text(out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let number_after = |prefix: &str| -> u64 {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {stdout}"));
        line[prefix.len()..].split_whitespace().next().unwrap().parse().unwrap()
    };
    (number_after("imported "), number_after("already there: "))
}

/// Everything the user sees over IMAP (tests/clients/import_dump.py).
fn dump(port: u16, user: &str, password: &str) -> BTreeMap<String, Vec<Value>> {
    let out = Command::new("python3")
        .arg(client("import_dump.py"))
        .args([&port.to_string(), user, password])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "import_dump.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value: Value = serde_json::from_slice(&out.stdout).unwrap();
    value["mailboxes"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_array().unwrap().clone()))
        .collect()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn crlf(lf: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lf.len() + lf.len() / 20);
    for (i, &b) in lf.iter().enumerate() {
        if b == b'\n' && (i == 0 || lf[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

fn internal_date(message: &Value) -> DateTime<Utc> {
    let text = message["internaldate"].as_str().unwrap().trim();
    DateTime::parse_from_str(text, "%d-%b-%Y %H:%M:%S %z")
        .unwrap_or_else(|e| panic!("INTERNALDATE {text:?}: {e}"))
        .with_timezone(&Utc)
}

fn flags(message: &Value) -> Vec<String> {
    message["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect()
}

/// A message expected in a mailbox: its stored bytes, flags (sorted) and internal date.
struct Expect {
    stored: Vec<u8>,
    flags: Vec<&'static str>,
    date: DateTime<Utc>,
}

fn check(mailbox: &[Value], expected: &[&Expect], name: &str) {
    assert_eq!(mailbox.len(), expected.len(), "{name}: {mailbox:?}");
    for (got, want) in mailbox.iter().zip(expected) {
        assert_eq!(got["sha256"].as_str().unwrap(), sha256(&want.stored), "{name}: {got}");
        assert_eq!(got["size"].as_u64().unwrap(), want.stored.len() as u64, "{name}: {got}");
        let mut want_flags: Vec<String> = want.flags.iter().map(|f| f.to_string()).collect();
        want_flags.sort();
        assert_eq!(flags(got), want_flags, "{name}: {got}");
        assert_eq!(internal_date(got), want.date, "{name}: {got}");
    }
}

/// Regular files under `DATA/blobs/xx/` (one per stored body).
fn blob_count(data: &Path) -> usize {
    let mut n = 0;
    for dir in std::fs::read_dir(data.join("blobs")).unwrap().flatten() {
        if dir.file_name().len() == 2 {
            n += std::fs::read_dir(dir.path()).unwrap().count();
        }
    }
    n
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

/// The tricky mbox: (the file, LF line ends, and what each message must become).
struct TrickyMbox {
    file: Vec<u8>,
    m1: Expect,
    m2: Expect,
    m3: Expect,
    m4: Expect,
    m5: Expect,
    m6: Expect,
    m7: Expect,
}

fn tricky_mbox() -> TrickyMbox {
    // 1: two folder labels (one body, two copies); no date on its From_ line (Date: is used);
    // From_ lines in the body: unquoted after a blank line (no date: no separator), mboxrd
    // quoted once and twice, and a dated one that follows no blank line.
    let m1_file: &[u8] = b"X-GM-THRID: 1\nX-Gmail-Labels: Inbox,Work,Opened,Starred,Category Personal\nFrom: J\xc3\xb6rg M\xc3\xbcller <j@example.org>\nSubject: Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln\nDate: Tue, 1 Jul 2003 10:52:37 +0200 (CEST)\n\nFrom here on the body has tricky lines.\n>From quoted once\n>>From quoted twice\na line\nFrom someone@else Mon Jan  1 00:00:00 2024\nThat line had no blank line before it: body text.\n";
    let m1_stored = b"X-GM-THRID: 1\nX-Gmail-Labels: Inbox,Work,Opened,Starred,Category Personal\nFrom: J\xc3\xb6rg M\xc3\xbcller <j@example.org>\nSubject: Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln\nDate: Tue, 1 Jul 2003 10:52:37 +0200 (CEST)\n\nFrom here on the body has tricky lines.\nFrom quoted once\n>From quoted twice\na line\nFrom someone@else Mon Jan  1 00:00:00 2024\nThat line had no blank line before it: body text.\n";
    // 2: Sent, an 8-bit Latin-1 header byte, a From_ date with a zone (Gmail's form).
    let m2: &[u8] = b"X-Gmail-Labels: Sent,Opened\nSubject: Caf\xe9 au lait\nFrom: alice@example.test\n\nsent mail\n";
    // 3: no labels: INBOX, flags from Status/X-Status. It appears twice in the file (two
    // identical messages are two messages).
    let m3: &[u8] = b"Subject: status headers\nStatus: RO\nX-Status: AF\n\nanswered and flagged\n";
    // 4: archived, unread (beats Status: R), important, a category tab.
    let m4: &[u8] = b"X-Gmail-Labels: Archived,Unread,Category Promotions,Important\nStatus: RO\nSubject: archived\n\narchived mail\n";
    let m5: &[u8] = b"X-Gmail-Labels: Drafts\nSubject: a draft\n\nnot sent yet\n";
    let m6: &[u8] = b"X-Gmail-Labels: Spam,Unread\nSubject: spam\n\nbuy now\n";
    // 7: a label with a comma (CSV-quoted) and a nested label.
    let m7: &[u8] = b"X-Gmail-Labels: \"Family, Friends\",Projects/2024,Opened\nSubject: labels\n\nfamily\n";
    let mut file = Vec::new();
    let mut add = |from_line: &str, body: &[u8]| {
        file.extend_from_slice(from_line.as_bytes());
        file.push(b'\n');
        file.extend_from_slice(body);
        file.push(b'\n');
    };
    add("From 1111111111111111111@xxx", m1_file);
    add("From 2222@xxx Wed Jan 03 12:34:56 +0100 2024", m2);
    add("From 3333@xxx Thu Feb  1 08:00:00 2024", m3);
    add("From 4444@xxx Fri Mar  1 09:00:00 2024", m4);
    add("From 5555@xxx Sat Mar  2 10:00:00 2024", m5);
    add("From 6666@xxx Sun Mar  3 11:00:00 2024", m6);
    add("From 7777@xxx Mon Mar  4 12:00:00 2024", m7);
    add("From 3333@xxx Thu Feb  1 08:00:00 2024", m3);
    TrickyMbox {
        file,
        m1: Expect {
            stored: crlf(m1_stored),
            flags: vec!["\\Seen", "\\Flagged"],
            date: utc(2003, 7, 1, 8, 52, 37),
        },
        m2: Expect {
            stored: crlf(m2),
            flags: vec!["\\Seen"],
            date: utc(2024, 1, 3, 11, 34, 56),
        },
        m3: Expect {
            stored: crlf(m3),
            flags: vec!["\\Seen", "\\Answered", "\\Flagged"],
            date: utc(2024, 2, 1, 8, 0, 0),
        },
        m4: Expect {
            stored: crlf(m4),
            flags: vec!["$Important"],
            date: utc(2024, 3, 1, 9, 0, 0),
        },
        m5: Expect {
            stored: crlf(m5),
            flags: vec!["\\Draft"],
            date: utc(2024, 3, 2, 10, 0, 0),
        },
        m6: Expect {
            stored: crlf(m6),
            flags: vec![],
            date: utc(2024, 3, 3, 11, 0, 0),
        },
        m7: Expect {
            stored: crlf(m7),
            flags: vec!["\\Seen"],
            date: utc(2024, 3, 4, 12, 0, 0),
        },
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn mbox_with_tricky_content_gmail_labels_and_a_rerun_seen_over_imap() {
    require_daemons();
    shared::testing::require_tool("python3");
    let (dir, data) = data_dir();
    init(&data, &[("alice@example.test", "alice-pw", None)]);
    let suite = Suite::start(&data);
    let port = suite.ports.imap;
    let mbox = tricky_mbox();
    let lf = write(dir.path(), "takeout.mbox", &mbox.file);
    let crlf_file = write(dir.path(), "takeout-crlf.mbox", &crlf(&mbox.file));

    // An IDLE client in INBOX sees the imported mail arrive (LISTEN/NOTIFY, as for delivery).
    let mut idle = Command::new("python3")
        .arg(client("import_idle.py"))
        .args([&port.to_string(), "alice@example.test", "alice-pw"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut idle_out = std::io::BufReader::new(idle.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut idle_out, &mut line).unwrap();
    assert_eq!(line.trim(), "idling");

    let out = import(&data, &["alice@example.test", "--mbox", arg(&lf)]);
    assert_eq!(counts(&out), (8, 0), "{}", text(&out));
    assert!(text(&out).contains("10 in folders"), "{}", text(&out));
    line.clear();
    std::io::BufRead::read_line(&mut idle_out, &mut line).unwrap();
    assert!(line.starts_with("woke "), "IDLE: {line:?}");
    assert!(idle.wait().unwrap().success());

    let view = dump(port, "alice@example.test", "alice-pw");
    let names: BTreeSet<&str> = view.keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = [
        "INBOX",
        "Sent",
        "Drafts",
        "Trash",
        "Junk",
        "Archive",
        "Work",
        "Family, Friends",
        "Projects",
        "Projects/2024",
    ]
    .into();
    assert_eq!(names, want);
    check(&view["INBOX"], &[&mbox.m1, &mbox.m3, &mbox.m3], "INBOX");
    check(&view["Work"], &[&mbox.m1], "Work");
    check(&view["Sent"], &[&mbox.m2], "Sent");
    check(&view["Archive"], &[&mbox.m4], "Archive");
    check(&view["Drafts"], &[&mbox.m5], "Drafts");
    check(&view["Junk"], &[&mbox.m6], "Junk");
    check(&view["Family, Friends"], &[&mbox.m7], "Family, Friends");
    check(&view["Projects/2024"], &[&mbox.m7], "Projects/2024");
    assert!(view["Projects"].is_empty() && view["Trash"].is_empty());
    assert_eq!(view["INBOX"][0]["subject"], "Grüße aus Köln");
    // One body per distinct message: m1 (two folders) and m3 (twice) are stored once each.
    assert_eq!(blob_count(&data), 7);

    // A rerun adds nothing, nor does the same file with CRLF line ends (the same messages).
    let out = import(&data, &["alice@example.test", "--mbox", arg(&lf)]);
    assert_eq!(counts(&out), (0, 8), "{}", text(&out));
    let out = import(&data, &["alice@example.test", "--mbox", arg(&crlf_file)]);
    assert_eq!(counts(&out), (0, 8), "{}", text(&out));
    assert_eq!(dump(port, "alice@example.test", "alice-pw"), view);

    // A 20 MB message imports whole, streamed in (--folder puts it in a folder of its own).
    let mut big = b"Subject: twenty megabytes\nFrom: alice@example.test\n\n".to_vec();
    let line76 = [b'A'; 76];
    while big.len() < 20 << 20 {
        big.extend_from_slice(&line76);
        big.push(b'\n');
    }
    let mut big_file = b"From big@xxx Tue Mar  5 13:00:00 2024\n".to_vec();
    big_file.extend_from_slice(&big);
    big_file.push(b'\n');
    let big_path = write(dir.path(), "big.mbox", &big_file);
    let out = import(
        &data,
        &["alice@example.test", "--mbox", arg(&big_path), "--folder", "Big/Mail"],
    );
    assert_eq!(counts(&out), (1, 0), "{}", text(&out));
    let view = dump(port, "alice@example.test", "alice-pw");
    check(
        &view["Big/Mail"],
        &[&Expect {
            stored: crlf(&big),
            flags: vec![],
            date: utc(2024, 3, 5, 13, 0, 0),
        }],
        "Big/Mail",
    );
    let show = ok(&data, &["quota", "show", "alice@example.test"], None);
    let stored: u64 = view.values().flatten().map(|m| m["size"].as_u64().unwrap()).sum();
    assert!(show.contains(&format!("mail:    {}", format_size(stored))), "{show}");
    suite.stop();
}

/// Maildir++: folders (nested, modified UTF-7), info flags, dovecot-keywords, new/ unseen,
/// tmp/ ignored, INTERNALDATE from the file time, and a rerun after the old server renamed a
/// file for a flag change adds nothing.
#[test]
fn maildir_tree_with_folders_flags_and_keywords_seen_over_imap() {
    require_daemons();
    shared::testing::require_tool("python3");
    let (dir, data) = data_dir();
    init(&data, &[("bob@example.test", "bob-pw", None)]);
    let suite = Suite::start(&data);
    let port = suite.ports.imap;
    let root = dir.path().join("Maildir");
    let put = |folder: &str, sub: &str, name: &str, body: &[u8], time: DateTime<Utc>| -> Expect {
        let d = if folder.is_empty() {
            root.join(sub)
        } else {
            root.join(folder).join(sub)
        };
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join(name);
        std::fs::write(&path, body).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::from(time)).unwrap();
        Expect {
            stored: crlf(body),
            flags: vec![],
            date: time,
        }
    };
    for folder in ["", ".Sent", ".Work", ".Work.Entw&APw-rfe", ".Trash"] {
        for sub in ["cur", "new", "tmp"] {
            let d = if folder.is_empty() {
                root.join(sub)
            } else {
                root.join(folder).join(sub)
            };
            std::fs::create_dir_all(d).unwrap();
        }
    }
    let mut seen = put(
        "",
        "cur",
        "1700000001.M1P1.host,S=40:2,S",
        b"Subject: seen\n\nread already\n",
        utc(2023, 11, 14, 22, 13, 21),
    );
    seen.flags = vec!["\\Seen"];
    let fresh = put(
        "",
        "new",
        "1700000002.M2P1.host,S=40",
        b"Subject: new\n\nnot read\n",
        utc(2023, 11, 15, 8, 0, 0),
    );
    put(
        "",
        "tmp",
        "1700000009.M9P1.host",
        b"Subject: half delivered\n\n",
        utc(2023, 11, 15, 9, 0, 0),
    );
    let mut sent = put(
        ".Sent",
        "cur",
        "1700000003.M3P1.host,S=30,W=32:2,RS",
        b"Subject: sent\n\nI wrote\n",
        utc(2023, 12, 1, 12, 0, 0),
    );
    sent.flags = vec!["\\Answered", "\\Seen"];
    std::fs::write(
        root.join(".Work.Entw&APw-rfe/dovecot-keywords"),
        "0 $Label1\n1 projectx\n",
    )
    .unwrap();
    let mut draft = put(
        ".Work.Entw&APw-rfe",
        "cur",
        "1700000004.M4P1.host:2,Fab",
        b"Subject: draft with keywords\n\nwork\n",
        utc(2024, 1, 2, 3, 4, 5),
    );
    draft.flags = vec!["\\Flagged", "$Label1", "projectx"];
    let mut trashed = put(
        ".Trash",
        "cur",
        "1700000005.M5P1.host,S=20:2,ST",
        b"Subject: trashed\n\ngone\n",
        utc(2024, 2, 3, 4, 5, 6),
    );
    trashed.flags = vec!["\\Seen", "\\Deleted"];

    // A tree handed over by someone else may hold symbolic links to files of this machine (or
    // to other people's mail): never followed, neither as a message nor as a folder.
    let secret = write(dir.path(), "secret", b"Subject: not yours\n\nsecret\n");
    std::os::unix::fs::symlink(&secret, root.join("cur/1700000006.M6P1.host:2,S")).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(elsewhere.join(sub)).unwrap();
    }
    std::fs::copy(&secret, elsewhere.join("new/1700000007.M7P1.host")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, root.join(".Elsewhere")).unwrap();

    let out = import(&data, &["bob@example.test", "--maildir", arg(&root)]);
    assert_eq!(counts(&out), (5, 0), "{}", text(&out));
    assert!(text(&out).contains("1 not a regular file"), "{}", text(&out));
    let view = dump(port, "bob@example.test", "bob-pw");
    let names: BTreeSet<&str> = view.keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = [
        "INBOX",
        "Sent",
        "Drafts",
        "Trash",
        "Junk",
        "Archive",
        "Work",
        "Work/Entw&APw-rfe",
    ]
    .into();
    assert_eq!(names, want);
    check(&view["INBOX"], &[&seen, &fresh], "INBOX");
    check(&view["Sent"], &[&sent], "Sent");
    check(&view["Work/Entw&APw-rfe"], &[&draft], "Work/Entwürfe");
    check(&view["Trash"], &[&trashed], "Trash");
    assert!(view["Work"].is_empty());
    // Folders the import stored messages in are subscribed (RFC 3501 §6.3.9 LSUB), so clients
    // that show only subscribed folders show them; CREATE alone no longer subscribes.
    let lsub = Command::new("python3")
        .args([
            "-c",
            "import imaplib, sys\nc = imaplib.IMAP4('127.0.0.1', int(sys.argv[1]), timeout=60)\nc.login(sys.argv[2], sys.argv[3])\nprint(c.lsub('\"\"', '*'))",
            &port.to_string(),
            "bob@example.test",
            "bob-pw",
        ])
        .output()
        .unwrap();
    let lsub = String::from_utf8_lossy(&lsub.stdout);
    assert!(lsub.contains("\"Work/Entw&APw-rfe\""), "{lsub}");

    // The old server marks a message flagged (a rename) and delivers one more: a rerun adds
    // only the new one.
    std::fs::rename(
        root.join("cur/1700000001.M1P1.host,S=40:2,S"),
        root.join("cur/1700000001.M1P1.host,S=40:2,FS"),
    )
    .unwrap();
    let late = put(
        "",
        "new",
        "1700000010.M10P1.host,S=40",
        b"Subject: late\n\nlater\n",
        utc(2024, 3, 1, 0, 0, 0),
    );
    let out = import(&data, &["bob@example.test", "--maildir", arg(&root)]);
    assert_eq!(counts(&out), (1, 5), "{}", text(&out));
    let view = dump(port, "bob@example.test", "bob-pw");
    check(&view["INBOX"], &[&seen, &fresh, &late], "INBOX");

    // Not a Maildir: refused with the reason.
    let out = import(&data, &["bob@example.test", "--maildir", arg(dir.path())]);
    assert!(!out.status.success());
    assert!(text(&out).contains("is not a Maildir"), "{}", text(&out));
    suite.stop();
}

/// Messages in the numbered mbox files of the interruption tests.
const N: usize = 1000;

/// `n` messages with the subjects `message 0` ... `message n-1`.
fn numbered_mbox(n: usize) -> Vec<u8> {
    let mut file = Vec::new();
    for i in 0..n {
        file.extend_from_slice(format!("From x@xxx Mon Jan  1 00:00:00 2024\nSubject: message {i}\n\n").as_bytes());
        for _ in 0..20 {
            file.extend_from_slice(format!("line of message {i}\n").as_bytes());
        }
        file.push(b'\n');
    }
    file
}

/// Over IMAP: INBOX holds each of the [`N`] numbered messages exactly once.
fn each_once(port: u16, user: &str, password: &str) {
    let view = dump(port, user, password);
    let subjects: Vec<&str> = view["INBOX"].iter().map(|m| m["subject"].as_str().unwrap()).collect();
    let distinct: BTreeSet<&str> = subjects.iter().copied().collect();
    assert_eq!(subjects.len(), N, "no duplicate");
    assert_eq!(distinct.len(), N, "no loss");
    for i in 0..N {
        assert!(distinct.contains(format!("message {i}").as_str()));
    }
}

/// Wait over IMAP until the user's INBOX holds at least `count` messages.
fn wait_for_messages(port: u16, user: &str, password: &str, count: usize) {
    assert!(
        reached(port, user, password, count),
        "INBOX never held {count} messages"
    );
}

/// Whether the user's INBOX holds at least `count` messages within 60 s (over IMAP).
fn reached(port: u16, user: &str, password: &str, count: usize) -> bool {
    Command::new("python3")
        .arg(client("import_wait.py"))
        .args([&port.to_string(), user, password, "INBOX", &count.to_string()])
        .output()
        .unwrap()
        .status
        .success()
}

/// The import of a numbered mbox, started in the background.
fn spawn_import(data: &Path, user: &str, path: &Path) -> std::process::Child {
    Command::new(TINYDC)
        .arg("--data")
        .arg(data)
        .args(["import", user, "--mbox", arg(path)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// An import killed with SIGKILL in the middle, run again: every message exactly once.
#[test]
fn sigkill_mid_import_then_rerun_gives_no_duplicate_and_no_loss() {
    require_daemons();
    shared::testing::require_tool("python3");
    let (dir, data) = data_dir();
    init(&data, &[("carol@example.test", "carol-pw", None)]);
    let suite = Suite::start(&data);
    let port = suite.ports.imap;
    let path = write(dir.path(), "many.mbox", &numbered_mbox(N));
    let mut child = spawn_import(&data, "carol@example.test", &path);
    // Wait (over IMAP) until part of it is in, then kill it without warning.
    wait_for_messages(port, "carol@example.test", "carol-pw", 20);
    assert!(
        child.try_wait().unwrap().is_none(),
        "the import ended before the kill: make N larger"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = dump(port, "carol@example.test", "carol-pw")["INBOX"].len();
    assert!((20..N).contains(&partial), "{partial} imported before the kill");

    let out = import(&data, &["carol@example.test", "--mbox", arg(&path)]);
    let (imported, already) = counts(&out);
    assert_eq!(imported + already, N as u64, "{}", text(&out));
    assert_eq!(already, partial as u64, "{}", text(&out));
    each_once(port, "carol@example.test", "carol-pw");
    // Usage agrees with what is stored.
    assert!(ok(&data, &["quota", "recalc", "carol@example.test"], None).contains("corrected 0"));

    // Two imports of the same new file at once (an admin who ran it twice): each message is
    // stored by exactly one of them.
    let mut file = Vec::new();
    for i in 0..200 {
        file.extend_from_slice(
            format!("From y@xxx Mon Jan  1 00:00:00 2024\nSubject: twice {i}\n\nbody {i}\n\n").as_bytes(),
        );
    }
    let path = write(dir.path(), "twice.mbox", &file);
    let first = spawn_import(&data, "carol@example.test", &path);
    let second = spawn_import(&data, "carol@example.test", &path);
    let (a, a_already) = counts(&first.wait_with_output().unwrap());
    let (b, b_already) = counts(&second.wait_with_output().unwrap());
    assert_eq!(a + b, 200, "stored once each");
    assert_eq!(a + a_already, 200);
    assert_eq!(b + b_already, 200);
    let view = dump(port, "carol@example.test", "carol-pw");
    let twice: BTreeSet<&str> = view["INBOX"]
        .iter()
        .map(|m| m["subject"].as_str().unwrap())
        .filter(|s| s.starts_with("twice "))
        .collect();
    assert_eq!(twice.len(), 200);
    assert_eq!(view["INBOX"].len(), N + 200);
    suite.stop();
}

fn postmaster_pid(data: &Path) -> u32 {
    let text = std::fs::read_to_string(data.join("pg/data/postmaster.pid")).unwrap();
    text.lines().next().unwrap().trim().parse().unwrap()
}

/// The processes whose parent is `parent` (/proc/PID/stat, field 4).
fn children_of(parent: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`: comm may hold spaces, so split after its ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(parent) {
            found.push(pid);
        }
    }
    found
}

/// PostgreSQL crashing in the middle of an import (while `tinydc up` runs, which restarts it):
/// the import waits for it and carries on; every message ends up stored exactly once.
#[test]
fn a_database_crash_mid_import_is_waited_for_and_nothing_is_lost_or_doubled() {
    require_daemons();
    shared::testing::require_tool("python3");
    let (dir, data) = data_dir();
    init(&data, &[("frank@example.test", "frank-pw", None)]);
    let suite = Suite::start(&data);
    let port = suite.ports.imap;
    let path = write(dir.path(), "many.mbox", &numbered_mbox(N));
    let child = spawn_import(&data, "frank@example.test", &path);
    // Twice: every PostgreSQL backend is killed (a crash: the postmaster resets the cluster,
    // so the import's transaction in flight fails), then the postmaster itself (`up` starts a
    // new one).
    wait_for_messages(port, "frank@example.test", "frank-pw", 20);
    let postmaster = postmaster_pid(&data);
    let backends = children_of(postmaster);
    assert!(!backends.is_empty());
    for pid in backends {
        let _ = shared::process::send_signal(pid, shared::process::Signal::Kill);
    }
    if !reached(port, "frank@example.test", "frank-pw", 150) {
        let out = child.wait_with_output().unwrap();
        panic!("the import did not carry on after the crash: {}", text(&out));
    }
    shared::process::send_signal(postmaster_pid(&data), shared::process::Signal::Kill).unwrap();
    let out = child.wait_with_output().unwrap();
    let (imported, already) = counts(&out);
    assert!(imported + already == N as u64 && imported > 0, "{}", text(&out));
    // The daemons' pools reconnect too (import_dump retries nothing: wait for a login).
    wait_for_messages(port, "frank@example.test", "frank-pw", N);
    each_once(port, "frank@example.test", "frank-pw");
    assert!(ok(&data, &["quota", "recalc", "frank@example.test"], None).contains("corrected 0"));
    suite.stop();
}

fn mbox_of(count: usize, body_bytes: usize, labels: Option<&str>) -> Vec<u8> {
    let mut file = Vec::new();
    for i in 0..count {
        file.extend_from_slice(b"From x@xxx Mon Jan  1 00:00:00 2024\n");
        if let Some(labels) = labels {
            file.extend_from_slice(format!("X-Gmail-Labels: {labels}\n").as_bytes());
        }
        file.extend_from_slice(format!("Subject: message {i}\n\n").as_bytes());
        let mut n = 0;
        while n < body_bytes {
            file.extend_from_slice(b"0123456789012345678901234567890123456789012345678901234567890123456789\n");
            n += 71;
        }
        file.push(b'\n');
    }
    file
}

/// Over quota: a fresh import that cannot fit is refused before it starts, naming the numbers;
/// one that runs out midway (labels make copies) stops with the numbers and resumes once the
/// limit is raised.
#[test]
fn over_quota_is_refused_with_the_numbers_and_resumes_after_a_raise() {
    let (dir, data) = data_dir();
    init(&data, &[("dave@example.test", "dave-pw", Some("100K"))]);
    let file = mbox_of(30, 10_000, None);
    let path = write(dir.path(), "big.mbox", &file);
    let out = import(&data, &["dave@example.test", "--mbox", arg(&path)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("it will not fit"), "{err}");
    let numbers = format!(
        "holds {} but dave@example.test has {} free (0 B used of a {} limit)",
        format_size(file.len() as u64),
        format_size(100 << 10),
        format_size(100 << 10)
    );
    assert!(err.contains(&numbers), "{numbers:?} in {err}");
    assert!(err.contains("Nothing was imported"), "{err}");
    let show = ok(&data, &["quota", "show", "dave@example.test"], None);
    assert!(show.contains("mail:    0 B"), "{show}");

    // 30 messages of ~10 KB with two folder labels each: ~600 KB charged for a ~300 KB file.
    ok(&data, &["quota", "set", "dave@example.test", "400K"], None);
    let path = write(dir.path(), "labels.mbox", &mbox_of(30, 10_000, Some("Inbox,Work")));
    let out = import(&data, &["dave@example.test", "--mbox", arg(&path)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stopped: over quota"), "{err}");
    let limit = format!("of a {} limit", format_size(400 << 10));
    assert!(
        err.contains(&limit) && err.contains("run the same command again"),
        "{err}"
    );
    let first: u64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("imported "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert!((10..30).contains(&first), "{}", text(&out));

    // Another file, fresh, that does not fit in what is left is still refused up front (mail
    // from an earlier mbox import does not make it a resumed one).
    let out = import(
        &data,
        &["dave@example.test", "--mbox", arg(&dir.path().join("big.mbox"))],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("it will not fit"), "{}", text(&out));
    assert!(!text(&out).contains("imported "), "{}", text(&out));

    ok(&data, &["quota", "set", "dave@example.test", "1M"], None);
    let out = import(&data, &["dave@example.test", "--mbox", arg(&path)]);
    assert_eq!(counts(&out), (30 - first, first), "{}", text(&out));
    assert!(ok(&data, &["quota", "recalc", "dave@example.test"], None).contains("corrected 0"));
}

/// A message over `[smtp] max_message_size` is skipped with its reason, without being held
/// whole; the others import; a file that is no mbox is refused.
#[test]
fn oversize_messages_are_skipped_with_the_reason() {
    let (dir, data) = data_dir();
    init(&data, &[("erin@example.test", "erin-pw", None)]);
    let config = std::fs::read_to_string(data.join("tinydc.toml")).unwrap();
    assert!(config.contains("max_message_size = \"50M\""));
    std::fs::write(
        data.join("tinydc.toml"),
        config.replace("max_message_size = \"50M\"", "max_message_size = \"1M\""),
    )
    .unwrap();
    let mut file = mbox_of(1, 1000, None);
    file.extend(mbox_of(1, 3 << 20, None));
    file.extend(mbox_of(1, 1000, None));
    // A last "line" of 3 MB with no line end at all (binary junk): read in bounded pieces.
    file.extend_from_slice(b"From x@xxx Mon Jan  1 00:00:00 2024\nSubject: junk\n\n");
    file.extend(std::iter::repeat_n(b'x', 3 << 20));
    let path = write(dir.path(), "mixed.mbox", &file);
    let out = import(&data, &["erin@example.test", "--mbox", arg(&path)]);
    assert_eq!(counts(&out), (2, 0), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("2 larger than max_message_size ({})", format_size(1 << 20))),
        "{}",
        text(&out)
    );
    let path = write(dir.path(), "not.mbox", b"Subject: x\n\nno From_ line\n");
    let out = import(&data, &["erin@example.test", "--mbox", arg(&path)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("not an mbox file"), "{}", text(&out));
    // An unknown user is refused before anything is read.
    let out = import(&data, &["nobody@example.test", "--mbox", arg(&path)]);
    assert_eq!(out.status.code(), Some(1));
}

/// Peak anonymous resident memory (RssAnon, KiB: the heap and stacks, what the process takes
/// from the machine) of `tinydc ARGS...`, sampled from /proc every 5 ms while it runs; the
/// command must succeed. Not VmHWM: that counts the pages of a mapped blob file too, which are
/// page cache the kernel drops under pressure, not memory the import holds.
fn peak_memory_kib(data: &Path, args: &[&str]) -> u64 {
    let mut child = Command::new(TINYDC)
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("TINYDC_DATA")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status)
            && let Some(line) = text.lines().find(|l| l.starts_with("RssAnon:"))
        {
            let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
            peak = peak.max(kib);
        }
        if let Some(done) = child.try_wait().unwrap() {
            assert!(done.success(), "tinydc {args:?} failed");
            eprintln!("tinydc {args:?}: peak RssAnon {peak} KiB");
            return peak;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// A 50 MB message (issue #11) streams in from an mbox file and from a Maildir: the import
/// peaks within 16 MB of a tiny import's memory (never the message's size), the message reads
/// back byte-exact over IMAP, and its resume key is the one the in-memory path gives (the
/// sha256 of the stored bytes): a rerun finds it, and its body is the blob of that name.
#[test]
fn a_50_mb_message_streams_in_with_bounded_memory() {
    require_daemons();
    shared::testing::require_tool("python3");
    let (dir, data) = data_dir();
    init(&data, &[("fay@example.test", "fay-pw", None)]);
    // The message as the mail client had it (LF line ends, body lines starting with "From ").
    let mut message = b"From: fay@example.test\nSubject: fifty megabytes\n\n".to_vec();
    let line = format!(
        "{}\nFrom a line that mboxrd quotes\n>From one quoted already\n",
        "z".repeat(900)
    );
    while message.len() < 50_000_000 - line.len() {
        message.extend_from_slice(line.as_bytes());
    }
    // In the mbox file: From_ line, quoted lines, a blank line before the next message.
    let mut file = b"From fay@xxx Tue Mar  5 13:00:00 2024\n".to_vec();
    for l in message.split_inclusive(|&b| b == b'\n') {
        if l.iter()
            .position(|&b| b != b'>')
            .is_some_and(|n| l[n..].starts_with(b"From "))
        {
            file.push(b'>');
        }
        file.extend_from_slice(l);
    }
    file.extend_from_slice(b"\nFrom fay@xxx Tue Mar  5 13:00:01 2024\nSubject: small\n\nsmall\n");
    let big_path = write(dir.path(), "big.mbox", &file);
    drop(file);
    let tiny_path = write(
        dir.path(),
        "tiny.mbox",
        b"From fay@xxx Tue Mar  5 12:00:00 2024\nSubject: tiny\n\ntiny\n",
    );
    let maildir = dir.path().join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    std::fs::write(maildir.join("cur/1700000000.M1P1.host:2,S"), &message).unwrap();
    let stored = crlf(&message);
    drop(message);

    let base = peak_memory_kib(&data, &["import", "fay@example.test", "--mbox", arg(&tiny_path)]);
    let peak = peak_memory_kib(&data, &["import", "fay@example.test", "--mbox", arg(&big_path)]);
    assert!(
        peak < base + 16 * 1024,
        "importing a 50 MB message peaked at {peak} KiB, a tiny import at {base} KiB"
    );
    let peak = peak_memory_kib(&data, &["import", "fay@example.test", "--maildir", arg(&maildir)]);
    assert!(
        peak < base + 16 * 1024,
        "importing a 50 MB Maildir message peaked at {peak} KiB, a tiny import at {base} KiB"
    );
    // Stored once (the same bytes from both sources), named by the hash the key is built on.
    let id = sha256(&stored);
    assert!(data.join("blobs").join(&id[..2]).join(&id).is_file());
    let out = import(&data, &["fay@example.test", "--mbox", arg(&big_path)]);
    assert_eq!(counts(&out), (0, 2), "{}", text(&out));
    // The store checks clean (exit status 0): blob sizes, hashes and reference counts.
    ok(&data, &["check"], None);

    let suite = Suite::start(&data);
    let view = dump(suite.ports.imap, "fay@example.test", "fay-pw");
    let inbox = &view["INBOX"];
    assert_eq!(inbox.len(), 4, "{inbox:?}");
    let big: Vec<&Value> = inbox
        .iter()
        .filter(|m| m["size"].as_u64() == Some(stored.len() as u64))
        .collect();
    assert_eq!(big.len(), 2, "{inbox:?}");
    for m in big {
        assert_eq!(m["sha256"].as_str().unwrap(), id);
    }
    suite.stop();
}

/// An import killed (SIGKILL) while a large message streams into the blob store leaves only a
/// temp file: nothing is committed, a rerun stores the message once, and `tinydc sweep` removes
/// the leftover.
#[test]
fn sigkill_while_a_large_message_streams_leaves_nothing_half_done() {
    let (dir, data) = data_dir();
    init(&data, &[("gus@example.test", "gus-pw", None)]);
    let mut file = b"From gus@xxx Tue Mar  5 13:00:00 2024\nSubject: large\n\n".to_vec();
    while file.len() < 45 << 20 {
        file.extend_from_slice(&[b'q'; 200]);
        file.push(b'\n');
    }
    let path = write(dir.path(), "large.mbox", &file);
    drop(file);
    let tmp = data.join("blobs/tmp");
    let mut child = spawn_import(&data, "gus@example.test", &path);
    // Kill it once the streamed temp file has grown past a few megabytes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let growing = loop {
        let big = std::fs::read_dir(&tmp).ok().and_then(|entries| {
            entries
                .flatten()
                .find(|e| e.metadata().is_ok_and(|m| m.len() > 4 << 20))
        });
        if big.is_some() || child.try_wait().unwrap().is_some() || std::time::Instant::now() > deadline {
            break big.is_some();
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    assert!(growing, "no temp file seen growing before the import ended");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(blob_count(&data), 0, "no blob under its name before the write finished");

    let out = import(&data, &["gus@example.test", "--mbox", arg(&path)]);
    assert_eq!(counts(&out), (1, 0), "{}", text(&out));
    assert_eq!(blob_count(&data), 1);
    let out = ok(&data, &["sweep", "--grace-minutes", "0"], None);
    assert!(out.contains("removed 0 unreferenced bodies"), "{out}");
    assert!(out.contains("and 1 temp files"), "{out}");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    ok(&data, &["check"], None);
}
