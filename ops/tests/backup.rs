//! `tinydc backup` and `tinydc restore` with the real binary on a running suite: a backup taken
//! under load, a second one that copies only what changed, a restore into a new directory whose
//! suite answers clients exactly as the original (every message, flag, folder, UID, UIDVALIDITY,
//! file hash, content hash davd offers and dead property, and quota usage), a restore that refuses to overwrite, and an
//! interrupted backup that restore never offers.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Suite, TINYDC, data_dir, ok, require_daemons, tinydc};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/backup.py");

fn python(args: &[String]) -> String {
    let out = Command::new("python3").arg(SCRIPT).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "backup.py {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn state(suite: &Suite) -> String {
    python(&[
        "state".into(),
        suite.ports.imap.to_string(),
        suite.ports.https.to_string(),
    ])
}

/// `tinydc backup --to DIR` (no --data: TINYDC_DATA, to show both ways work); its stdout.
fn backup(data: &Path, to: &Path) -> String {
    let out = Command::new(TINYDC)
        .arg("backup")
        .arg("--to")
        .arg(to)
        .env("TINYDC_DATA", data)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "backup failed: {stdout}{stderr}");
    assert!(
        stderr.contains("backup: dumping the database"),
        "progress on stderr: {stderr}"
    );
    assert!(stderr.contains("backup: copying files"), "progress on stderr: {stderr}");
    stdout
}

fn restore(from: &Path, to: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(TINYDC)
        .arg("restore")
        .arg("--from")
        .arg(from)
        .arg("--data")
        .arg(to)
        .args(extra)
        .env_remove("TINYDC_DATA")
        .output()
        .unwrap()
}

fn summary_line<'a>(summary: &'a str, what: &str) -> &'a str {
    summary
        .lines()
        .map(str::trim_start)
        .find(|l| l.starts_with(what))
        .unwrap_or_else(|| panic!("no {what:?} line in {summary}"))
}

/// The load: deliveries and PUTs in a loop, until `stop` exists. Returns the child and a
/// channel of completed rounds.
fn start_load(suite: &Suite, stop: &Path) -> (std::process::Child, std::sync::mpsc::Receiver<u32>) {
    let mut child = Command::new("python3")
        .arg(SCRIPT)
        .arg("load")
        .arg(suite.ports.submission.to_string())
        .arg(suite.ports.https.to_string())
        .arg(stop)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("done ").and_then(|n| n.parse().ok()) {
                let _ = tx.send(n);
            }
        }
    });
    (child, rx)
}

fn wait_rounds(rx: &std::sync::mpsc::Receiver<u32>, at_least: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = rx.recv_timeout(left).expect("the load stopped making progress");
        if n >= at_least {
            return n;
        }
    }
}

fn tempdir(prefix: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir_in("/tmp").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().to_path_buf();
    (dir, path)
}

#[test]
fn backup_under_load_then_restore_gives_the_same_mail_files_and_quota() {
    require_daemons();
    shared::testing::require_tool("python3");
    let (_dir, data) = data_dir();
    let (_bdir, backups) = tempdir("tinydc-backup-");
    let to = backups.join("backup");
    ok(&data, &["init", "--domain", "example.test"], None);
    for (user, pw) in [("alice@example.test", "alice-pw"), ("bob@example.test", "bob-pw")] {
        ok(
            &data,
            &["user", "add", user, "--password-stdin"],
            Some(&format!("{pw}\n")),
        );
    }
    ok(&data, &["quota", "set", "bob@example.test", "10MiB"], None);
    let suite = Suite::start(&data);
    let p = suite.ports;
    python(&[
        "make".into(),
        p.submission.to_string(),
        p.imap.to_string(),
        p.https.to_string(),
    ]);

    // 1. A backup while deliveries and uploads go on.
    let stop = backups.join("stop-load");
    let (mut load, rounds) = start_load(&suite, &stop);
    let before = wait_rounds(&rounds, 3);
    let first = backup(&data, &to);
    let during = wait_rounds(&rounds, before + 2);
    std::fs::write(&stop, b"").unwrap();
    assert!(load.wait().unwrap().success(), "the load failed");
    eprintln!("load: {during} rounds, backup 1 after {before}:\n{first}");
    assert!(summary_line(&first, "files:").contains(" copied"), "{first}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&to).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode, 0o700,
            "the backup folder holds keys and everyone's mail: owner only"
        );
    }

    // 2. Quiet now: this backup holds the whole final state. 3. One known change, and the
    // next backup copies just that: one body, one file of 1000 bytes.
    let second = backup(&data, &to);
    python(&["change".into(), p.submission.to_string(), p.https.to_string()]);
    let third = backup(&data, &to);
    eprintln!("{second}{third}");
    let blobs = summary_line(&third, "blobs:");
    assert!(blobs.starts_with("blobs: 1 copied ("), "{third}");
    let files = summary_line(&third, "files:");
    assert!(files.starts_with("files: 1 copied (1000 B), "), "{third}");
    let linked: u64 = files
        .split(", ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(linked >= 10, "unchanged files are linked, not copied: {third}");
    let original = state(&suite);
    let quota_report = ok(&data, &["quota", "report"], None);
    assert!(
        original.contains("backup-test-value") && original.contains("Work/Reports"),
        "{original}"
    );
    for needle in [
        "\"uidvalidity\": \"",
        "\"sha256\": \"",
        "\\\\Flagged",
        "$Important",
        "\"date\": \"01-Mar-2024",
        // davd's content hashes (checked against the content by backup.py); the restored
        // suite must offer the same ones.
        "\"oc_checksum\": \"SHA1:",
    ] {
        assert!(original.contains(needle), "{needle} in {original}");
    }
    assert!(
        original.contains("/docs/changed.bin") && original.contains("/load-"),
        "{original}"
    );

    // The snapshot taken under load restores to a consistent store: every uploaded file in it
    // is whole (never a temp file or a torn one), and usage agrees with what is stored.
    let under_load = backups.join("under-load");
    let name = first.split_whitespace().nth(1).unwrap();
    let out = restore(&to, &under_load, &["--snapshot", name]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let whole: u32 = python(&[
        "checkload".into(),
        under_load
            .join("files/alice@example.test")
            .to_string_lossy()
            .to_string(),
    ])
    .trim()
    .parse()
    .unwrap();
    assert!(
        whole >= before,
        "the {before} uploads done before the backup are in it: {whole}"
    );
    let recalc = ok(&under_load, &["quota", "recalc"], None);
    assert!(recalc.contains("corrected 0"), "{recalc}");

    // Restore refuses a directory that is not empty, and leaves it alone.
    let config_before = std::fs::read(data.join("tinydc.toml")).unwrap();
    let refused = restore(&to, &data, &[]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("is not empty"), "{stderr}");
    assert_eq!(std::fs::read(data.join("tinydc.toml")).unwrap(), config_before);

    // 4. Restore the latest snapshot into a new directory and run a suite on it.
    let restored = backups.join("restored");
    let out = restore(&to, &restored, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "restore failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let latest = third.split_whitespace().nth(1).unwrap();
    assert!(stdout.contains(&format!("restored snapshot {latest}")), "{stdout}");
    assert_eq!(ok(&restored, &["quota", "report"], None), quota_report);
    let copy = Suite::start(&restored);
    let restored_state = state(&copy);
    assert!(
        restored_state == original,
        "the restored suite differs:\n--- original\n{original}\n--- restored\n{restored_state}"
    );
    assert_eq!(ok(&restored, &["quota", "report"], None), quota_report);
    copy.stop();
    suite.stop();
}

#[test]
fn an_interrupted_backup_is_never_offered_and_dead_properties_of_absent_files_are_pruned() {
    require_daemons();
    shared::testing::require_tool("python3");
    let (_dir, data) = data_dir();
    let (_bdir, backups) = tempdir("tinydc-backup-");
    let to = backups.join("backup");
    ok(&data, &["init", "--domain", "example.test"], None);
    for (user, pw) in [("alice@example.test", "alice-pw"), ("bob@example.test", "bob-pw")] {
        ok(
            &data,
            &["user", "add", user, "--password-stdin"],
            Some(&format!("{pw}\n")),
        );
    }
    let suite = Suite::start(&data);
    let p = suite.ports;
    python(&[
        "make".into(),
        p.submission.to_string(),
        p.imap.to_string(),
        p.https.to_string(),
    ]);
    let first = backup(&data, &to);
    let complete = first.split_whitespace().nth(1).unwrap().to_string();

    // A backup killed mid-way: its folder stays `.partial` and has no manifest.
    let mut child = Command::new(TINYDC)
        .arg("--data")
        .arg(&data)
        .arg("backup")
        .arg("--to")
        .arg(&to)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines.next().unwrap().unwrap();
    assert!(line.contains("dumping the database"), "{line}");
    child.kill().unwrap();
    child.wait().unwrap();
    let partial: Vec<String> = std::fs::read_dir(to.join("snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert_eq!(partial.len(), 1, "the killed backup left its folder");

    // Restore picks the complete snapshot, never the interrupted one, and refuses it by name.
    let refused = backups.join("refused");
    let out = restore(&to, &refused, &["--snapshot", &partial[0]]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("incomplete"), "{stderr}");
    assert!(!refused.exists(), "a refused restore leaves nothing behind");
    // Also a snapshot whose manifest is gone (a copy cut short by hand) is not complete.
    let copied = to.join("snapshots").join("29991231T000000Z");
    std::fs::create_dir(&copied).unwrap();
    std::fs::copy(
        to.join("snapshots").join(&complete).join("database.dump"),
        copied.join("database.dump"),
    )
    .unwrap();

    // A property whose file is gone: the dump keeps the row, the tree lacks the file (as when
    // a client deletes a file between the dump and the copy of the tree).
    let restored = backups.join("restored");
    let snap_tree = to
        .join("snapshots")
        .join(&complete)
        .join("data/files/alice@example.test");
    std::fs::remove_file(snap_tree.join("docs/a.txt")).unwrap();
    let out = restore(&to, &restored, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("restored snapshot {complete}")), "{stdout}");
    assert!(stdout.contains("1 dead properties of absent files pruned"), "{stdout}");
    suite.stop();

    let copy = Suite::start(&restored);
    let restored_state = state(&copy);
    assert!(!restored_state.contains("backup-test-value"), "{restored_state}");
    assert!(restored_state.contains("\"/docs/b.bin\""), "{restored_state}");
    // Usage was recounted from the restored tree, so a recount changes nothing.
    let recalc = ok(&restored, &["quota", "recalc"], None);
    assert!(recalc.contains("corrected 0"), "{recalc}");
    copy.stop();
    // With the suite down (backup starts PostgreSQL itself), --keep 1 leaves one complete
    // snapshot and only the bodies it lists; a folder that is not a snapshot is left alone.
    let orphan = "ab".repeat(32);
    std::fs::create_dir_all(to.join("blobs/ab")).unwrap();
    std::fs::write(to.join("blobs/ab").join(&orphan), b"left by a removed snapshot").unwrap();
    let out = Command::new(TINYDC)
        .arg("--data")
        .arg(&data)
        .args(["backup", "--keep", "1", "--to"])
        .arg(&to)
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{summary}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(summary.contains("pruned: 1 older snapshots, 1 bodies"), "{summary}");
    let newest = summary.split_whitespace().nth(1).unwrap().to_string();
    let mut left: Vec<String> = std::fs::read_dir(to.join("snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    left.sort();
    assert_eq!(left, [newest.clone(), "29991231T000000Z".to_string()]);
    assert!(!to.join("blobs/ab").join(&orphan).exists());
    let complete = newest;

    // A damaged body in the backup is caught by its hash; nothing is left behind.
    let list = std::fs::read_to_string(to.join("snapshots").join(&complete).join("blobs.list")).unwrap();
    let id = list.split_whitespace().next().unwrap();
    let blob = to.join("blobs").join(&id[..2]).join(id);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    let damaged = backups.join("damaged");
    let out = restore(&to, &damaged, &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{id} in the backup is damaged")), "{stderr}");
    assert!(!damaged.exists(), "a failed restore leaves nothing behind");
    // Bad requests are refused before anything is written: a second backup into a folder
    // another backup is writing to, a backup folder inside the data directory, a snapshot
    // name that climbs out of the backup folder.
    let held = std::fs::File::create(to.join(".tinydc-backup.lock")).unwrap();
    held.lock().unwrap();
    let out = tinydc(&data, &["backup", "--to", &to.to_string_lossy()], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another `tinydc backup` is writing"));
    drop(held);
    let inside = data.join("files/backup");
    let out = tinydc(&data, &["backup", "--to", &inside.to_string_lossy()], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("inside the data directory"));
    assert!(!inside.exists());
    let out = restore(&to, &damaged, &["--snapshot", "../backup/snapshots"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a snapshot name"));
    // A symbolic link in a user's tree (davd never makes or follows one) is not backed up.
    std::os::unix::fs::symlink("/etc/passwd", data.join("files/alice@example.test/passwd")).unwrap();

    // backup --verify re-reads the bodies already in the backup and copies the damaged one
    // again; then the restore succeeds. A folder of a user the dump does not know (one put
    // there by hand, as a user added after the dump would leave) is moved out of files/.
    std::fs::create_dir_all(data.join("files/carol@example.test")).unwrap();
    std::fs::write(data.join("files/carol@example.test/c.txt"), b"carol").unwrap();
    let out = Command::new(TINYDC)
        .arg("--data")
        .arg(&data)
        .args(["backup", "--verify", "--to"])
        .arg(&to)
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{summary}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(summary.contains("1 damaged ones copied again"), "{summary}");
    let out = restore(&to, &damaged, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("1 folders of users unknown to the dump moved"),
        "{stdout}"
    );
    assert!(damaged.join("unclaimed-files/carol@example.test/c.txt").exists());
    assert!(!damaged.join("files/carol@example.test").exists());
    assert!(damaged.join("files/alice@example.test/docs/b.bin").exists());
    assert!(
        damaged
            .join("files/alice@example.test/passwd")
            .symlink_metadata()
            .is_err()
    );
    let recalc = ok(&damaged, &["quota", "recalc"], None);
    assert!(recalc.contains("corrected 0"), "{recalc}");

    // A restore killed half-way leaves no config: `up` refuses the directory, and restore
    // refuses it too, saying how to start again.
    let cut = backups.join("cut");
    let mut child = Command::new(TINYDC)
        .args(["restore", "--from"])
        .arg(&to)
        .arg("--data")
        .arg(&cut)
        .env_remove("TINYDC_DATA")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // Before the cluster is made (killing later would orphan its postmaster).
    while !lines
        .next()
        .unwrap()
        .unwrap()
        .contains("copying and checking message bodies")
    {}
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(cut.join("files").exists() && !cut.join("tinydc.toml").exists());
    let up = tinydc(&cut, &["up"], None);
    assert!(!up.status.success());
    assert!(String::from_utf8_lossy(&up.stderr).contains("is not a tinydc data directory"));
    let out = restore(&to, &cut, &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("an interrupted restore"));

    // A second restore into the same place is refused (the directory is no longer empty).
    let again = tinydc(&restored, &["restore", "--from", &to.to_string_lossy()], None);
    assert!(!again.status.success());
}
