//! Helpers shared by the `tinydc` end-to-end tests: a data directory under /tmp, running the
//! command, and running the whole suite with `tinydc up` on free ports.

#![allow(dead_code)] // Each test file uses its own subset.

pub mod dns;
pub mod dovecot;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const TINYDC: &str = env!("CARGO_BIN_EXE_tinydc");

/// A data directory path under /tmp (PostgreSQL, run as another user when we are root, must reach it).
pub fn data_dir() -> (tempfile::TempDir, PathBuf) {
    // `tinydc` starts a private PostgreSQL cluster of its own.
    shared::testing::require_postgres_binaries();
    let dir = tempfile::Builder::new()
        .prefix("tinydc-cli-")
        .tempdir_in("/tmp")
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    (dir, data)
}

/// Run `tinydc --data DATA ARGS...`, feeding `stdin`.
pub fn tinydc(data: &Path, args: &[&str], stdin: Option<&str>) -> Output {
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

/// Run a command that must succeed; its standard output.
pub fn ok(data: &Path, args: &[&str], stdin: Option<&str>) -> String {
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
pub fn fails(data: &Path, args: &[&str], stdin: Option<&str>, needle: &str) {
    let out = tinydc(data, args, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "tinydc {args:?} should fail: {stderr}");
    assert!(
        stderr.contains(needle),
        "tinydc {args:?}: expected {needle:?} in {stderr:?}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr:?}");
}

/// Live (non-zombie) processes whose command line mentions the data directory.
pub fn processes_using(data: &Path) -> Vec<String> {
    let needle = data.to_string_lossy().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let zombie = status.lines().any(|l| l.starts_with("State:") && l.contains('Z'));
        if cmdline.contains(&needle) && !zombie {
            found.push(cmdline);
        }
    }
    found
}

/// [`require_daemons`], kept for callers written as `if !daemons_built() { return; }`: always
/// true (it panics instead of returning false).
#[track_caller]
pub fn daemons_built() -> bool {
    require_daemons();
    true
}

/// Make sure the daemon binaries next to `tinydc` are built and current, so `tinydc up` runs
/// this tree's daemons.
///
/// `cargo test --workspace` has already built them, and then this is a no-op check; a lone
/// `cargo test -p tinydc-ops` builds them here. The packages and features resolve as in a
/// workspace test build (`tinydc` itself, whose dependencies add features to shared crates, and
/// the dev-dependencies' `shared/testing` and davd's `crash-hooks`), so neither build invalidates
/// the other's binaries. Panics (the test fails, it never skips) when that fails.
#[track_caller]
pub fn require_daemons() {
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let outcome = BUILT.get_or_init(|| {
        let bin_dir = Path::new(TINYDC).parent().unwrap();
        let mut cargo = Command::new(env!("CARGO"));
        // Not the variables cargo set for this test process: build scripts watch some of them
        // (ring reruns on CARGO_MANIFEST_DIR), which would make this build redo much of the tree.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            let set_by_cargo_test = name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_BIN_EXE_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_CRATE_NAME",
                    "CARGO_BIN_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "OUT_DIR",
                ]
                .contains(&name.as_ref());
            if set_by_cargo_test {
                cargo.env_remove(name.as_ref());
            }
        }
        cargo
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--quiet", "--bins"])
            .args(["-p", "tinydc-ops", "-p", "tinydc-smtpd"])
            .args(["-p", "tinydc-imapd", "-p", "tinydc-davd"])
            .args(["--features", "shared/testing,crash-hooks"]);
        // The same profile as this test binary (target/debug is the dev profile).
        match bin_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => {}
            Some("release") => {
                cargo.arg("--release");
            }
            Some(profile) => {
                cargo.args(["--profile", profile]);
            }
        }
        let out = cargo.output().map_err(|e| format!("running cargo: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cargo build of the daemons failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let missing: Vec<&str> = up_daemons().into_iter().filter(|d| !bin_dir.join(d).exists()).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{missing:?} are not next to {TINYDC} after building them (a custom target dir \
                 or --target?)"
            ))
        }
    });
    if let Err(e) = outcome {
        panic!("these tests run the daemon binaries: {e}; run `cargo test --workspace`");
    }
}

fn up_daemons() -> [&'static str; 3] {
    ["tinydc-smtpd", "tinydc-imapd", "tinydc-davd"]
}

/// The listeners of a running suite, all on 127.0.0.1.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub mx: u16,
    pub submission: u16,
    pub submissions: u16,
    pub imap: u16,
    pub imaps: u16,
    pub https: u16,
}

impl Ports {
    pub fn all(&self) -> [u16; 6] {
        [
            self.mx,
            self.submission,
            self.submissions,
            self.imap,
            self.imaps,
            self.https,
        ]
    }
}

/// `tinydc up` running on an initialised data directory.
pub struct Suite {
    pub up: Child,
    pub ports: Ports,
    /// What `tinydc up` printed before "tinydc is up" (the listeners).
    pub banner: Vec<String>,
    /// Everything the suite wrote to stderr so far (the daemons' logs), also passed on to the
    /// test's own stderr.
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Suite {
    /// Give every listener of `data` a free port, start `tinydc up`, and wait until every
    /// listener accepts connections.
    pub fn start(data: &Path) -> Suite {
        Suite::start_with_env(data, &[])
    }

    /// [`Suite::start`] with `env` set for `tinydc up` (and so for the daemons it starts).
    pub fn start_with_env(data: &Path, env: &[(&str, &str)]) -> Suite {
        let keys = [
            "mx_listen",
            "submission_listen",
            "submissions_listen",
            "listen",
            "tls_listen",
            "https_listen",
        ];
        let probes: Vec<std::net::TcpListener> = keys
            .iter()
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let numbers: Vec<u16> = probes.iter().map(|l| l.local_addr().unwrap().port()).collect();
        drop(probes);
        let config = std::fs::read_to_string(data.join("tinydc.toml")).unwrap();
        let config = config
            .lines()
            .map(
                |line| match keys.iter().position(|k| line.starts_with(&format!("{k} ="))) {
                    Some(i) => format!("{} = \"127.0.0.1:{}\"", keys[i], numbers[i]),
                    None => line.to_string(),
                },
            )
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(data.join("tinydc.toml"), config).unwrap();
        let ports = Ports {
            mx: numbers[0],
            submission: numbers[1],
            submissions: numbers[2],
            imap: numbers[3],
            imaps: numbers[4],
            https: numbers[5],
        };
        Suite::launch_with_env(data, ports, env)
    }

    /// Start `tinydc up` on `data` whose config already names `ports`, and wait until every
    /// listener accepts connections.
    pub fn launch(data: &Path, ports: Ports) -> Suite {
        Suite::launch_with_env(data, ports, &[])
    }

    /// [`Suite::launch`] with `env` set for `tinydc up`.
    pub fn launch_with_env(data: &Path, ports: Ports, env: &[(&str, &str)]) -> Suite {
        let up = Command::new(TINYDC)
            .envs(env.iter().copied())
            .arg("--data")
            .arg(data)
            .arg("up")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // From here on, a failed assertion stops the suite (Drop) instead of orphaning it.
        let mut suite = Suite {
            up,
            ports,
            banner: Vec::new(),
            log: Default::default(),
        };
        let stderr = BufReader::new(suite.up.stderr.take().unwrap());
        let log = suite.log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                eprintln!("{line}");
                let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                // Bounded: a test's suite logs far less than this.
                if log.len() < 16 << 20 {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
        let mut lines = BufReader::new(suite.up.stdout.take().unwrap()).lines();
        let started = Instant::now();
        loop {
            let line = lines.next().expect("tinydc up ended early").unwrap();
            if line.contains("tinydc is up") {
                break;
            }
            suite.banner.push(line);
            assert!(started.elapsed() < Duration::from_secs(60), "tinydc up did not come up");
        }
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let deadline = Instant::now() + Duration::from_secs(30);
        for port in ports.all() {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "nothing listens on port {port}: {:?}",
                    processes_using(data)
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        suite
    }

    /// Ctrl-C, then wait for a clean exit.
    pub fn stop(mut self) {
        shared::process::send_signal(self.up.id(), shared::process::Signal::Int).unwrap();
        let deadline = Instant::now() + Duration::from_secs(40);
        let status = loop {
            if let Some(status) = self.up.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "tinydc up did not stop");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(status.success(), "tinydc up exited with {status}");
    }
}

impl Drop for Suite {
    fn drop(&mut self) {
        // A failed test must not leave the suite running.
        if let Ok(None) = self.up.try_wait() {
            let _ = shared::process::send_signal(self.up.id(), shared::process::Signal::Int);
            let _ = self.up.wait();
        }
    }
}
