//! `tinydc import ADDRESS --imap …` against a real Dovecot on loopback, checked from outside:
//! python's imaplib dumps every folder of Dovecot and of our imapd (names, flags, INTERNALDATE,
//! a hash of the bytes) and the two must agree, with Gmail's virtual folders left out and the
//! special folders mapped to ours. A rerun adds nothing; a run killed (SIGKILL) mid-download
//! and run again leaves no duplicate and loses nothing.

mod common;
#[path = "common/imap_tree.rs"]
mod imap_tree;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::dovecot::Dovecot;
use common::{Suite, TINYDC, data_dir, ok, require_daemons, tinydc};
use imap_tree::{Dump, dump, fill};

const ADDRESS: &str = "alice@example.test";

/// What our account must hold after importing Dovecot's `source`: Gmail's virtual folders and
/// the \All folder left out, the special folders under our names, messages over `max_size`
/// left out.
fn expected(source: &Dump, max_size: u64) -> Dump {
    let mut out = Dump::new();
    for (folder, messages) in source {
        let ours = match folder.as_str() {
            "[Gmail]/All Mail" | "[Gmail]/Starred" | "Alles" => continue,
            "[Gmail]/Sent Mail" => "Sent",
            "Spam-Ordner" => "Junk",
            other => other,
        };
        let kept = messages.iter().filter(|m| m[1].as_u64().unwrap() <= max_size).cloned();
        out.entry(ours.to_string()).or_default().extend(kept);
    }
    for messages in out.values_mut() {
        messages.sort_by_key(|m| m.to_string());
    }
    out
}

/// Our account's non-empty folders.
fn ours(port: u16) -> Dump {
    let mut d = dump(port, ADDRESS, "alice-pw", true);
    d.retain(|_, m| !m.is_empty());
    for messages in d.values_mut() {
        messages.sort_by_key(|m| m.to_string());
    }
    d
}

/// A Dovecot filled through IMAP APPEND, with \Junk and \All folders declared.
fn filled_dovecot(bulk: usize) -> Dovecot {
    let dovecot = Dovecot::start_with(&[("alice", "secret")], &[("Spam-Ordner", "\\Junk"), ("Alles", "\\All")]);
    fill(dovecot.imap_port, "alice", "secret", bulk);
    dovecot
}

/// An initialised data directory with alice, messages above 2 MiB refused.
fn account() -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, data) = data_dir();
    ok(&data, &["init", "--domain", "example.test"], None);
    ok(&data, &["user", "add", ADDRESS, "--password-stdin"], Some("alice-pw\n"));
    let config = std::fs::read_to_string(data.join("tinydc.toml")).unwrap();
    assert!(config.contains("max_message_size = \"50M\""));
    std::fs::write(
        data.join("tinydc.toml"),
        config.replace("max_message_size = \"50M\"", "max_message_size = \"2M\""),
    )
    .unwrap();
    (dir, data)
}

fn import_args<'a>(endpoint: &'a str, security: &'a [&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "import",
        ADDRESS,
        "--imap",
        endpoint,
        "--user",
        "alice",
        "--password-stdin",
    ];
    args.extend_from_slice(security);
    args
}

fn run_ok(data: &Path, args: &[&str]) -> String {
    let out = tinydc(data, args, Some("secret\n"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tinydc {args:?} failed: {}{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap() + &stderr
}

#[test]
fn every_folder_with_flags_and_dates_and_a_rerun_adds_nothing() {
    require_daemons();
    let dovecot = filled_dovecot(0);
    let source = dump(dovecot.imap_port, "alice", "secret", false);
    for virtual_folder in ["[Gmail]/All Mail", "[Gmail]/Starred", "Alles", "Work/Projects/Entwürfe"] {
        assert!(!source[virtual_folder].is_empty(), "the fill made {virtual_folder}");
    }
    let (_dir, data) = account();
    let suite = Suite::start(&data);
    let ca = dovecot.ca_file().to_string_lossy().to_string();

    // IMAPS, the certificate verified with --ca-file.
    let endpoint = format!("127.0.0.1:{}", dovecot.imaps_port);
    let out = run_ok(&data, &import_args(&endpoint, &["--tls", "--ca-file", &ca]));
    // The 3 MB message is over max_message_size: skipped and said so.
    assert!(out.contains("skipped: 1"), "{out}");
    assert!(out.contains("larger than max_message_size"), "{out}");
    let want = expected(&source, 2 << 20);
    let got = ours(suite.ports.imap);
    assert_eq!(got, want, "our account after the import");
    let count: usize = want.values().map(Vec::len).sum();
    assert!(out.contains(&format!("imported {count} message(s)")), "{out}");

    // Again, this time over STARTTLS: the same server and account, nothing new.
    let endpoint = format!("127.0.0.1:{}", dovecot.imap_port);
    let out = run_ok(&data, &import_args(&endpoint, &["--starttls", "--ca-file", &ca]));
    assert!(out.contains("imported 0 message(s)"), "{out}");
    assert!(out.contains(&format!("already there: {count}")), "{out}");
    assert_eq!(ours(suite.ports.imap), want, "the rerun changed nothing");
    suite.stop();
}

#[test]
fn refusals_are_clear() {
    let dovecot = Dovecot::start(&[("alice", "secret")]);
    let (_dir, data) = account();
    let fails = |args: &[&str], password: &str, needle: &str| {
        let out = tinydc(&data, args, Some(password));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "tinydc {args:?} should fail: {stderr}");
        assert!(
            stderr.contains(needle),
            "tinydc {args:?}: expected {needle:?} in {stderr}"
        );
    };
    // A certificate the system does not trust: the error says how to trust it.
    let imaps = format!("127.0.0.1:{}", dovecot.imaps_port);
    fails(&import_args(&imaps, &["--tls"]), "secret\n", "--ca-file");
    // No password over the network in clear; loopback is fine (the wrong password shows it
    // got as far as logging in).
    fails(&import_args("192.0.2.1:143", &[]), "secret\n", "without TLS");
    let plain = format!("127.0.0.1:{}", dovecot.imap_port);
    fails(&import_args(&plain, &[]), "wrong\n", "logging in to 127.0.0.1 as alice");
    fails(&import_args(&plain, &[]), "\n", "the password is empty");

    // More than the quota leaves: refused before any download, naming the numbers.
    fill(dovecot.imap_port, "alice", "secret", 0);
    ok(&data, &["quota", "set", ADDRESS, "20K"], None);
    fails(
        &import_args(&plain, &[]),
        "secret\n",
        "has 20.0 KiB free (0 B used of a 20.0 KiB limit)",
    );
}

/// A TCP relay to `upstream` that passes the server's first `limit` bytes of each connection,
/// then holds the rest back (the connection stays open: an import stuck mid-download).
struct Throttle {
    port: u16,
    passed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Throttle {
    fn start(upstream: u16, limit: u64) -> Throttle {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let passed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (passed.clone(), stop.clone());
        std::thread::spawn(move || {
            let Ok((client, _)) = listener.accept() else { return };
            let server = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
            let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || std::io::copy(&mut c_read, &mut s_write));
            let (mut s_read, mut c_write) = (server, client);
            let mut buf = [0u8; 16 * 1024];
            while !s.load(Ordering::SeqCst) {
                let room = limit - p.load(Ordering::SeqCst);
                if room == 0 {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                let want = buf.len().min(room as usize);
                match s_read.read(&mut buf[..want]) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if c_write.write_all(&buf[..n]).is_err() {
                            return;
                        }
                        p.fetch_add(n as u64, Ordering::SeqCst);
                    }
                }
            }
        });
        Throttle { port, passed, stop }
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn killed_mid_import_then_run_again_no_duplicate_nothing_lost() {
    require_daemons();
    // 300 messages of 20 KB in "Bulk" besides the tree: three fetch batches there.
    let dovecot = filled_dovecot(300);
    let source = dump(dovecot.imap_port, "alice", "secret", false);
    let (_dir, data) = account();
    let suite = Suite::start(&data);

    // The import gets 1 MiB of the server's answers and then waits for more, forever.
    let limit = 1 << 20;
    let throttle = Throttle::start(dovecot.imap_port, limit);
    let endpoint = format!("127.0.0.1:{}", throttle.port);
    let mut child = Command::new(TINYDC)
        .arg("--data")
        .arg(&data)
        .args(import_args(&endpoint, &[]))
        .env_remove("TINYDC_DATA")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"secret\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while throttle.passed.load(Ordering::SeqCst) < limit {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the import ended before it was stuck"
        );
        assert!(Instant::now() < deadline, "the import did not get far enough");
        std::thread::sleep(Duration::from_millis(50));
    }
    // What arrived whole is stored in a moment; then the kill.
    std::thread::sleep(Duration::from_secs(1));
    child.kill().unwrap();
    child.wait().unwrap();
    drop(throttle);

    let partial = ours(suite.ports.imap);
    let stored: usize = partial.values().map(Vec::len).sum();
    let want = expected(&source, 2 << 20);
    let total: usize = want.values().map(Vec::len).sum();
    assert!(
        stored > 0 && stored < total,
        "killed midway: {stored} of {total} stored"
    );

    let endpoint = format!("127.0.0.1:{}", dovecot.imap_port);
    let out = run_ok(&data, &import_args(&endpoint, &[]));
    assert!(
        out.contains(&format!("imported {} message(s)", total - stored)),
        "{out}"
    );
    assert!(out.contains(&format!("already there: {stored}")), "{out}");
    assert_eq!(ours(suite.ports.imap), want, "after the resumed import");
    suite.stop();
}
