//! The data directory on a small filesystem that fills up (a size-limited tmpfs, mounted by the
//! test: it needs root). Every protocol refuses what does not fit with its own transient
//! refusal (SMTP 452 4.3.1, IMAP NO [OVERQUOTA], WebDAV 507), leaves no temp file, reservation
//! or half-written item behind, keeps the private PostgreSQL (also on the tmpfs) alive, and takes
//! the same writes once space returns, without a restart. Then a davd SIGKILLed in the middle of
//! an upload: its quota reservation is released when `up` restarts it (issue #8 item 9).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Suite, daemons_built, data_dir, ok};

/// A tmpfs of `size` mounted on `dir`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Tmpfs(dir.to_path_buf()),
            other => panic!(
                "the disk-full test needs root to mount a size-limited tmpfs \
                 (`mount -t tmpfs -o size={size} tmpfs DIR`); run it as root: {other:?}"
            ),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-u",
            "alice@example.test:alice-pw",
        ])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// Fill the filesystem of `mnt` until `leave` bytes are available; the filler's path.
fn fill(mnt: &Path, leave: u64) -> PathBuf {
    use std::io::Write as _;
    let free = shared::quota::available_space(mnt).unwrap();
    assert!(free > leave, "tmpfs too small: {free} free");
    let filler = mnt.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut left = free - leave;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    file.sync_all().unwrap();
    filler
}

/// One write of about 1 MiB per mail protocol; the server's answers, one line each.
fn mail_writes(ports: &common::Ports, tag: &str) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/disk_full.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(ports.submission.to_string())
        .arg(ports.imap.to_string())
        .arg(tag)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "disk_full.py failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn line<'a>(answers: &'a str, name: &str) -> &'a str {
    answers
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {answers}"))
}

/// Files left under `dir` whose name starts with one of `prefixes`.
fn leftovers(dir: &Path, prefixes: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if entry.path().is_dir() {
                stack.push(entry.path());
            } else if prefixes.iter().any(|p| name.starts_with(p)) {
                found.push(entry.path());
            }
        }
    }
    found
}

fn quota_show(data: &Path) -> String {
    ok(data, &["quota", "show", "alice@example.test"], None)
}

/// The pid of the running daemon `name` of this data directory.
fn daemon_pid(data: &Path, name: &str) -> Option<u32> {
    let needle = data.to_string_lossy().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let zombie = status.lines().any(|l| l.starts_with("State:") && l.contains('Z'));
        if !zombie && cmdline.contains(name) && cmdline.contains(&needle) && !cmdline.contains(" up") {
            return Some(pid);
        }
    }
    None
}

fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_full_disk_gets_clean_refusals_and_recovers_by_itself() {
    if !daemons_built() {
        return;
    }
    let (dir, _) = data_dir();
    let mnt = dir.path().join("disk");
    // Room for the private PostgreSQL (on this disk too), the reserve and the test's writes.
    let _tmpfs = Tmpfs::mount(&mnt, "256m");
    let data = mnt.join("data");
    ok(&data, &["init", "--domain", "example.test"], None);
    let reserve: u64 = 64 << 20;
    let config = std::fs::read_to_string(data.join("tinydc.toml")).unwrap();
    assert!(config.contains("min_free_space = \"128M\""), "{config}");
    std::fs::write(
        data.join("tinydc.toml"),
        config.replace("min_free_space = \"128M\"", "min_free_space = \"64M\""),
    )
    .unwrap();
    ok(
        &data,
        &["user", "add", "alice@example.test", "--password-stdin"],
        Some("alice-pw\n"),
    );
    // A limit far above the disk: a user without one reserves no row (quota::reserve), and
    // the reservations of writes in progress are what items 8 and 9 watch.
    ok(&data, &["quota", "set", "alice@example.test", "100GiB"], None);
    let suite = Suite::start(&data);
    let ports = suite.ports;
    let https = |path: &str| format!("https://127.0.0.1:{}/{path}", ports.https);

    let one_mib = dir.path().join("one.bin");
    std::fs::write(&one_mib, vec![b'f'; 1 << 20]).unwrap();
    let one_mib = one_mib.to_string_lossy().to_string();
    let small = dir.path().join("small.bin");
    std::fs::write(&small, vec![b's'; 768 << 10]).unwrap();
    let small = small.to_string_lossy().to_string();
    assert_eq!(curl(&["-T", &small, &https("small.bin")]), "201");

    // Half a MiB above the reserve: nothing of 768 KiB or more fits.
    let filler = fill(&mnt, reserve + (512 << 10));
    let answers = mail_writes(&ports, "full");
    // RFC 3463 §3.4 X.3.1 with RFC 5321 §4.2.3 452, before and after the body.
    assert!(
        line(&answers, "smtp-size").starts_with("smtp-size 452 4.3.1 Insufficient system storage"),
        "{answers}"
    );
    assert!(
        line(&answers, "smtp-data").starts_with("smtp-data 452 4.3.1 Insufficient system storage"),
        "{answers}"
    );
    // RFC 5530 §3 OVERQUOTA, as Dovecot answers a full disk.
    assert!(
        line(&answers, "imap-append").contains("NO [OVERQUOTA] Not enough disk space"),
        "{answers}"
    );
    // RFC 4918 §11.5.
    assert_eq!(curl(&["-T", &one_mib, &https("one.bin")]), "507");
    assert_eq!(
        curl(&[
            "-X",
            "COPY",
            "-H",
            &format!("Destination: {}", https("copy.bin")),
            &https("small.bin")
        ]),
        "507"
    );
    // Nothing half-written is visible, nothing is left on the disk, nothing stays reserved.
    assert_eq!(curl(&["-o", "/dev/null", &https("one.bin")]), "404");
    assert_eq!(curl(&["-o", "/dev/null", &https("copy.bin")]), "404");
    let temps = leftovers(&data.join("blobs"), &["blob-"]);
    let uploads = leftovers(&data.join("files"), &[shared::quota::UPLOAD_TEMP_PREFIX]);
    assert!(temps.is_empty() && uploads.is_empty(), "{temps:?} {uploads:?}");
    let show = quota_show(&data);
    assert!(
        show.contains("mail:    0 B") && show.contains("reserved: 0 B"),
        "{show}"
    );

    // Space returns: the same writes succeed, with no restart.
    std::fs::remove_file(&filler).unwrap();
    let answers = mail_writes(&ports, "after");
    assert!(line(&answers, "smtp-size").starts_with("smtp-size 250"), "{answers}");
    assert!(line(&answers, "smtp-data").starts_with("smtp-data 250"), "{answers}");
    assert!(line(&answers, "imap-append").starts_with("imap-append OK"), "{answers}");
    assert_eq!(curl(&["-T", &one_mib, &https("one.bin")]), "201");
    assert_eq!(
        curl(&[
            "-X",
            "COPY",
            "-H",
            &format!("Destination: {}", https("copy.bin")),
            &https("small.bin")
        ]),
        "201"
    );
    let show = quota_show(&data);
    assert!(show.contains("reserved: 0 B"), "{show}");
    assert!(
        show.contains("mail:    3.") && show.contains("files:   2.50 MiB"),
        "{show}"
    );

    // The disk fills up under an upload that already holds its reservation: the write itself
    // meets ENOSPC. 507, the temp file goes, the reservation is given back, the old state stays.
    let three_mib = dir.path().join("three.bin");
    std::fs::write(&three_mib, vec![b't'; 3 << 20]).unwrap();
    let upload = Command::new("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-u",
            "alice@example.test:alice-pw",
        ])
        .args(["--limit-rate", "1M", "-T"])
        .arg(&three_mib)
        .arg(https("three.bin"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the upload's reservation", 20, || {
        !quota_show(&data).contains("reserved: 0 B")
    });
    let filler = fill(&mnt, 3 << 19);
    let out = upload.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "507");
    wait_for("the failed upload's reservation released", 10, || {
        quota_show(&data).contains("reserved: 0 B")
    });
    let uploads = leftovers(&data.join("files"), &[shared::quota::UPLOAD_TEMP_PREFIX]);
    assert!(uploads.is_empty(), "{uploads:?}");
    assert_eq!(curl(&["-o", "/dev/null", &https("three.bin")]), "404");
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(curl(&["-T", &three_mib.to_string_lossy(), &https("three.bin")]), "201");

    // Item 9: davd dies (SIGKILL) in the middle of an upload that holds a reservation.
    let mut upload = Command::new("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-u",
            "alice@example.test:alice-pw",
            "--limit-rate",
            "64K",
        ])
        .args(["-T", "-", "-H", "Content-Type: application/octet-stream"])
        .arg(https("slow.bin"))
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = upload.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        use std::io::Write as _;
        let chunk = vec![b'u'; 64 << 10];
        for _ in 0..200 {
            if input.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    wait_for("the upload's reservation", 20, || {
        !quota_show(&data).contains("reserved: 0 B")
    });
    let pid = daemon_pid(&data, "tinydc-davd").expect("davd runs");
    Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
    let _ = upload.kill();
    let _ = upload.wait();
    let _ = feeder.join();
    // `up` restarts davd; at start it releases what dead writers had reserved.
    wait_for("davd restarted", 30, || {
        daemon_pid(&data, "tinydc-davd").is_some_and(|p| p != pid)
    });
    wait_for("the dead upload's reservation released", 30, || {
        quota_show(&data).contains("reserved: 0 B")
    });
    let uploads = leftovers(&data.join("files"), &[shared::quota::UPLOAD_TEMP_PREFIX]);
    eprintln!("temp files of the killed upload (swept later): {uploads:?}");

    // `tinydc quota recalc` beside a writer in another process (psql here, holding its owner
    // lock on an idle connection as a daemon does): a live owner's reservation stays; once the
    // process is SIGKILLed, recalc releases it.
    let mut holder = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            "tinydc",
            "-d",
            "tinydc",
            "-h",
        ])
        .arg(data.join("pg").join("run"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("psql (PostgreSQL client) is installed");
    {
        use std::io::Write as _;
        let stdin = holder.stdin.as_mut().unwrap();
        writeln!(
            stdin,
            "SELECT pg_advisory_lock({}, 2000000000);
             INSERT INTO quota_reservations (user_id, bytes, expires_at, owner)
             SELECT id, 12345, now() + interval '6 hours', 2000000000 FROM users
             WHERE address = 'alice@example.test';",
            shared::quota::OWNER_LOCK_CLASS
        )
        .unwrap();
        stdin.flush().unwrap();
    }
    wait_for("psql's reservation", 20, || {
        !quota_show(&data).contains("reserved: 0 B")
    });
    let recalc = ok(&data, &["quota", "recalc"], None);
    assert!(recalc.contains("released 0 reservation(s)"), "{recalc}");
    assert!(!quota_show(&data).contains("reserved: 0 B"));
    holder.kill().unwrap();
    holder.wait().unwrap();
    wait_for("recalc to release the dead process's reservation", 20, || {
        ok(&data, &["quota", "recalc"], None).contains("released 1 reservation(s)")
    });
    assert!(quota_show(&data).contains("reserved: 0 B"));
    suite.stop();
}
