//! The `tinydc` command as an admin uses it, against a real private PostgreSQL cluster.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const TINYDC: &str = env!("CARGO_BIN_EXE_tinydc");

/// A data directory path under /tmp (PostgreSQL, run as another user when we are root, must reach it).
fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("tinydc-cli-")
        .tempdir_in("/tmp")
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    (dir, data)
}

fn tinydc(data: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(TINYDC)
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("TINYDC_DATA")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(data: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = tinydc(data, args, stdin);
    assert!(
        out.status.success(),
        "tinydc {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The command fails with exit code 1 and one clear line containing `needle`.
fn fails(data: &Path, args: &[&str], stdin: Option<&str>, needle: &str) {
    let out = tinydc(data, args, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "tinydc {args:?} should fail: {stderr}");
    assert!(
        stderr.contains(needle),
        "tinydc {args:?}: expected {needle:?} in {stderr:?}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr:?}");
}

/// No process mentions the data directory (daemons, PostgreSQL).
fn processes_using(data: &Path) -> Vec<String> {
    let needle = data.to_string_lossy().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let zombie = status.lines().any(|l| l.starts_with("State:") && l.contains('Z'));
        if cmdline.contains(&needle) && !zombie && !cmdline.contains("tinydc-cli-guard") {
            found.push(cmdline);
        }
    }
    found
}

#[test]
fn a_new_admin_sets_up_users_and_quotas() {
    let (_dir, data) = data_dir();
    let out = ok(&data, &["init", "--domain", "example.test"], None);
    assert!(out.contains("created"), "{out}");
    fails(
        &data,
        &["init", "--domain", "example.test"],
        None,
        "refusing to overwrite",
    );

    let out = ok(
        &data,
        &["user", "add", "alice@example.test", "--password-stdin"],
        Some("pw\n"),
    );
    assert!(out.contains("added alice@example.test"), "{out}");
    ok(&data, &["quota", "set", "alice@example.test", "10MiB"], None);
    let show = ok(&data, &["quota", "show", "alice@example.test"], None);
    assert!(show.contains("total:   0 B"), "{show}");
    assert!(show.contains("limit:   10.0 MiB"), "{show}");
    assert!(show.contains("0.0%"), "{show}");

    ok(
        &data,
        &[
            "user",
            "add",
            "bob@example.test",
            "--password-stdin",
            "--quota",
            "1.5GiB",
        ],
        Some("pw2\n"),
    );
    let report = ok(&data, &["quota", "report"], None);
    assert!(
        report.contains("alice@example.test") && report.contains("bob@example.test"),
        "{report}"
    );
    let list = ok(&data, &["user", "list"], None);
    assert!(list.contains("1.50 GiB"), "{list}");

    // Bad input: one clear line and exit code 1 each.
    fails(&data, &["quota", "set", "alice@example.test", "10Q"], None, "bad size");
    fails(&data, &["quota", "show", "nobody@example.test"], None, "no such user");
    fails(
        &data,
        &["user", "add", "alice@example.test", "--password-stdin"],
        Some("pw\n"),
        "already exists",
    );
    fails(
        &data,
        &["user", "add", "not-an-address", "--password-stdin"],
        Some("pw\n"),
        "not a valid mail address",
    );
    fails(
        &data,
        &["user", "add", "carol@elsewhere.test", "--password-stdin"],
        Some("pw\n"),
        "not served here",
    );
    fails(&data.join("missing"), &["user", "list"], None, "does not exist");

    // Domains and aliases, with a catch-all.
    ok(&data, &["domain", "add", "example.org"], None);
    assert!(ok(&data, &["domain", "list"], None).contains("example.org"));
    ok(
        &data,
        &[
            "alias",
            "add",
            "team@example.test",
            "alice@example.test",
            "bob@example.test",
        ],
        None,
    );
    ok(&data, &["alias", "add", "@example.test", "alice@example.test"], None);
    let aliases = ok(&data, &["alias", "list"], None);
    assert!(
        aliases.contains("team@example.test -> alice@example.test, bob@example.test"),
        "{aliases}"
    );
    assert!(aliases.contains("@example.test -> alice@example.test"), "{aliases}");
    fails(
        &data,
        &["alias", "add", "x@example.test", "ghost@example.test"],
        None,
        "no such user",
    );
    ok(&data, &["alias", "del", "team@example.test"], None);

    // DKIM key, the DNS records to publish, and the (empty) outbound queue.
    let dkim = ok(&data, &["dkim", "generate", "example.test"], None);
    assert!(
        dkim.contains("._domainkey.example.test. IN TXT \"v=DKIM1; k=rsa; p="),
        "{dkim}"
    );
    let dns = ok(&data, &["dns", "example.test"], None);
    for record in [
        "IN MX 10",
        "v=spf1",
        "v=DKIM1",
        "_dmarc.example.test.",
        "autoconfig.example.test.",
    ] {
        assert!(dns.contains(record), "{record} missing from {dns}");
    }
    fails(&data, &["dkim", "generate", "nowhere.test"], None, "not served here");
    assert!(ok(&data, &["queue", "list"], None).contains("empty"));

    // A recount finds files written behind the database's back and corrects the usage.
    std::fs::write(data.join("files/alice@example.test/notes.txt"), vec![b'x'; 1000]).unwrap();
    let recalc = ok(&data, &["quota", "recalc"], None);
    assert!(recalc.contains("corrected 1"), "{recalc}");
    assert!(ok(&data, &["quota", "show", "alice@example.test"], None).contains("files:   1000 B"));

    // Deleting a user with files needs --purge.
    fails(&data, &["user", "del", "alice@example.test"], None, "--purge");
    ok(&data, &["user", "del", "alice@example.test", "--purge"], None);
    assert!(!data.join("files/alice@example.test").exists());
    ok(
        &data,
        &["user", "passwd", "bob@example.test", "--password-stdin"],
        Some("new\n"),
    );

    // Every command started PostgreSQL for itself and stopped it again.
    assert!(processes_using(&data).is_empty(), "{:?}", processes_using(&data));
}

#[test]
fn up_runs_the_suite_and_ctrl_c_leaves_no_process() {
    let bin_dir = Path::new(TINYDC).parent().unwrap();
    let missing: Vec<&str> = ["tinydc-smtpd", "tinydc-imapd", "tinydc-davd"]
        .into_iter()
        .filter(|d| !bin_dir.join(d).exists())
        .collect();
    if !missing.is_empty() {
        // `cargo test --workspace` builds them; a lone `cargo test -p tinydc-ops` may not.
        assert!(
            std::env::var_os("CI").is_none(),
            "daemon binaries not built: {missing:?}"
        );
        eprintln!("skipping: {missing:?} not built (run cargo test --workspace)");
        return;
    }
    let (_dir, data) = data_dir();
    ok(&data, &["init", "--domain", "example.test"], None);
    // Free ports, so the test never collides with anything; every listener must answer.
    let keys = [
        "mx_listen",
        "submission_listen",
        "submissions_listen",
        "listen",
        "tls_listen",
        "https_listen",
    ];
    let ports: Vec<u16> = keys
        .iter()
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect::<Vec<_>>()
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let config = std::fs::read_to_string(data.join("tinydc.toml")).unwrap();
    let config = config
        .lines()
        .map(
            |line| match keys.iter().position(|k| line.starts_with(&format!("{k} ="))) {
                Some(i) => format!("{} = \"127.0.0.1:{}\"", keys[i], ports[i]),
                None => line.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(data.join("tinydc.toml"), config).unwrap();

    let mut up = Command::new(TINYDC)
        .arg("--data")
        .arg(&data)
        .arg("up")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(up.stdout.take().unwrap());
    let mut lines = stdout.lines();
    let started = Instant::now();
    loop {
        let line = lines.next().expect("tinydc up ended early").unwrap();
        if line.contains("tinydc is up") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "tinydc up did not come up");
    }
    // Every listener of every daemon accepts connections.
    let deadline = Instant::now() + Duration::from_secs(30);
    for port in &ports {
        while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nothing listens on port {port}: {:?}",
                processes_using(&data)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let running = processes_using(&data);
    for daemon in ["tinydc-smtpd", "tinydc-imapd", "tinydc-davd"] {
        assert!(
            running.iter().any(|p| p.contains(daemon)),
            "{daemon} not running: {running:?}"
        );
    }

    // Admin commands work while the suite runs, and leave its PostgreSQL running.
    ok(
        &data,
        &["user", "add", "dave@example.test", "--password-stdin"],
        Some("pw\n"),
    );
    assert!(ok(&data, &["status"], None).contains("running"));

    // Ctrl-C.
    Command::new("kill")
        .args(["-INT", &up.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(status) = up.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "tinydc up did not stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "tinydc up exited with {status}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        processes_using(&data).is_empty(),
        "left behind: {:?}",
        processes_using(&data)
    );
}
