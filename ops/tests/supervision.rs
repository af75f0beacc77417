//! `tinydc up` as a supervisor, driven from outside as bad luck would: the postmaster is
//! SIGKILLed under a running suite, `up` itself is SIGKILLed, and a second `up` is started on
//! the same data directory.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Suite, TINYDC, daemons_built, data_dir, ok, processes_using};
use shared::process::{Signal, alive, find_by_data_dir, send_signal};

const USER: &str = "alice@example.test";
const PASSWORD: &str = "alice-pw";
const DAEMONS: [&str; 3] = ["tinydc-smtpd", "tinydc-imapd", "tinydc-davd"];

/// A data directory with one user.
fn prepared() -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, data) = data_dir();
    ok(&data, &["init", "--domain", "example.test"], None);
    ok(
        &data,
        &["user", "add", USER, "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    );
    (dir, data)
}

/// One IMAP LOGIN over a real socket: the tagged reply line, or what went wrong.
fn imap_login(port: u16) -> Result<String, String> {
    let addr = ("127.0.0.1", port);
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(40)))
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| format!("greeting: {e}"))?;
    if !line.starts_with("* OK") {
        return Err(format!("greeting {line:?}"));
    }
    (&stream)
        .write_all(format!("a1 LOGIN {USER} \"{PASSWORD}\"\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(|e| format!("reply: {e}"))?;
        if n == 0 {
            return Err("connection closed".into());
        }
        if line.starts_with("a1 ") {
            return if line.starts_with("a1 OK") { Ok(line) } else { Err(line) };
        }
    }
}

/// The daemons `up` started on `data`, by pid (each exactly once).
fn daemon_pids(data: &Path) -> Vec<u32> {
    let data = std::path::absolute(data).unwrap();
    let pids: Vec<u32> = DAEMONS.iter().flat_map(|d| find_by_data_dir(d, &data)).collect();
    assert_eq!(pids.len(), 3, "three daemons: {:?}", processes_using(&data));
    pids
}

fn postmaster_pid(data: &Path) -> u32 {
    let text = std::fs::read_to_string(data.join("pg/data/postmaster.pid")).unwrap();
    text.lines().next().unwrap().trim().parse().unwrap()
}

#[test]
fn a_killed_postmaster_is_restarted_by_up_and_logins_work_again() {
    if !daemons_built() {
        return;
    }
    let (_dir, data) = prepared();
    let suite = Suite::start(&data);
    imap_login(suite.ports.imap).expect("login before the kill");

    let old = postmaster_pid(&data);
    send_signal(old, Signal::Kill).unwrap();
    let killed = Instant::now();
    // Nobody restarts `up`: it must notice by itself and start a new postmaster...
    let new = loop {
        let now = std::fs::read_to_string(data.join("pg/data/postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse::<u32>().ok());
        if let Some(pid) = now.filter(|&p| p != old && alive(p)) {
            break pid;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no new postmaster 30 s after the old one was killed: {:?}",
            processes_using(&data)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!alive(old));
    // ...and the daemons' pools reconnect to it: a login (a database query) works again.
    loop {
        let last = match imap_login(suite.ports.imap) {
            Ok(_) => break,
            Err(e) => e,
        };
        assert!(
            killed.elapsed() < Duration::from_secs(45),
            "no successful IMAP login 45 s after the postmaster was killed: {last}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(postmaster_pid(&data), new, "one restart, then stable");
    // Admin commands reach the restarted cluster too, and never start one of their own.
    assert!(ok(&data, &["user", "list"], None).contains(USER));
    suite.stop();
    assert!(processes_using(&data).is_empty(), "{:?}", processes_using(&data));
}

#[test]
fn sigkill_of_up_leaves_no_daemon_behind_and_a_new_up_serves() {
    if !daemons_built() {
        return;
    }
    let (_dir, data) = prepared();
    let mut suite = Suite::start(&data);
    let ports = suite.ports;
    let daemons = daemon_pids(&data);
    suite.up.kill().unwrap(); // SIGKILL
    suite.up.wait().unwrap();

    // The daemons notice their supervisor is gone and exit by themselves.
    let killed = Instant::now();
    while daemons.iter().any(|&p| alive(p)) {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "daemons still running 10 s after `up` was killed: {:?}",
            processes_using(&data)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // PostgreSQL is still there (nothing stops it) until the next `up` takes it over.
    let postmaster = postmaster_pid(&data);
    assert!(alive(postmaster));

    // A new `up` on the same ports: it starts cleanly and serves.
    let suite = Suite::launch(&data, ports);
    imap_login(ports.imap).expect("login through the new up");
    let pg: Vec<String> = processes_using(&data)
        .into_iter()
        .filter(|c| c.contains("postgres") && c.contains("-D"))
        .collect();
    assert_eq!(pg.len(), 1, "one postmaster, never two: {pg:?}");
    daemon_pids(&data);
    suite.stop();
    assert!(processes_using(&data).is_empty(), "{:?}", processes_using(&data));
}

/// Issue #12: each daemon runs at most `shared::daemon::MAX_WORKER_THREADS` tokio workers
/// (each keeps about 100 KiB resident while idle), whatever the cores or TOKIO_WORKER_THREADS
/// (which tokio's default runtime obeys) say.
#[test]
fn each_daemon_runs_at_most_two_runtime_workers() {
    if !daemons_built() {
        return;
    }
    let (_dir, data) = prepared();
    let suite = Suite::start_with_env(&data, &[("TOKIO_WORKER_THREADS", "8")]);
    imap_login(suite.ports.imap).expect("the daemons serve");
    for pid in daemon_pids(&data) {
        let names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
            .map(|name| name.trim().to_string())
            .collect();
        let workers = names.iter().filter(|n| *n == "tokio-worker").count();
        assert!(
            (1..=shared::daemon::MAX_WORKER_THREADS).contains(&workers),
            "pid {pid} runs {workers} workers: {names:?}"
        );
    }
    suite.stop();
}

#[test]
fn a_second_up_on_the_same_data_is_refused_naming_the_first() {
    if !daemons_built() {
        return;
    }
    let (_dir, data) = prepared();
    let suite = Suite::start(&data);
    let daemons = daemon_pids(&data);

    let mut second = Command::new(TINYDC)
        .arg("--data")
        .arg(&data)
        .arg("up")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = send_signal(second.id(), Signal::Kill);
            let _ = second.wait();
            panic!("a second `tinydc up` kept running beside the first");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = second.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("pid {}", suite.up.id())),
        "names the running up: {stderr}"
    );
    // The first one's daemons were left alone.
    assert!(daemons.iter().all(|&p| alive(p)));
    imap_login(suite.ports.imap).expect("the first up still serves");
    suite.stop();
}
