//! Real clients from outside the project: Python's imaplib running a Thunderbird-like session,
//! and mbsync (isync) syncing a mailbox both ways and again with no changes.

mod common;

use std::time::Duration;

use common::*;
use tokio::process::Command;

/// A missing tool fails the test, naming how to install it (`shared::testing::require_tool`).
#[track_caller]
fn require(tool: &str) {
    shared::testing::require_tool(tool);
}

async fn run(cmd: &mut Command) -> (bool, String) {
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("client finished in time")
        .expect("client started");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn imaplib_thunderbird_like_session() {
    require("python3");
    let server = Server::start_with(|c| c.auth.allow_plaintext_on_loopback = false, Some(50 << 20)).await;
    for i in 0..5 {
        server
            .deliver(&message(&format!("hello{i}"), &format!("message number {i}")))
            .await;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/thunderbird_like.py");
    let (ok, text) = run(Command::new("python3")
        .arg(script)
        .arg("localhost")
        .arg(server.plain.port().to_string())
        .arg(USER)
        .arg(PASS)
        .arg(&server.ctx.config.tls.cert_file))
    .await;
    assert!(ok && text.contains("ALL OK"), "{text}");
}

/// MULTIAPPEND (RFC 3502) with synchronizing literals over Python imaplib's connection.
#[tokio::test]
async fn imaplib_multiappend() {
    require("python3");
    let server = Server::start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/multiappend.py");
    let (ok, text) = run(Command::new("python3")
        .arg(script)
        .arg("127.0.0.1")
        .arg(server.plain.port().to_string())
        .arg(USER)
        .arg(PASS))
    .await;
    assert!(ok && text.contains("ALL OK"), "{text}");
}

fn count_files(dir: &std::path::Path) -> usize {
    ["cur", "new"]
        .iter()
        .map(|sub| std::fs::read_dir(dir.join(sub)).map(|d| d.count()).unwrap_or(0))
        .sum()
}

#[tokio::test]
async fn mbsync_both_ways_then_no_changes() {
    require("mbsync");
    // mbsync uses STARTTLS (SSLType); plaintext stays allowed on loopback for the checks below.
    let server = Server::start().await;
    for i in 0..3 {
        server.deliver(&message(&format!("remote{i}"), "from the server")).await;
    }
    let home = tempfile::tempdir().unwrap();
    let maildir = home.path().join("mail");
    std::fs::create_dir_all(&maildir).unwrap();
    let config = home.path().join("mbsyncrc");
    std::fs::write(
        &config,
        format!(
            "IMAPAccount tinydc\nHost localhost\nPort {port}\nUser {USER}\nPass \"{PASS}\"\nSSLType STARTTLS\n\
CertificateFile {cert}\n\nIMAPStore remote\nAccount tinydc\n\nMaildirStore local\nPath {md}/\nInbox {md}/INBOX\n\
SubFolders Verbatim\n\nChannel sync\nFar :remote:\nNear :local:\nPatterns INBOX Archive\nCreate Both\n\
SyncState *\nSync All\nExpunge Both\n",
            port = server.plain.port(),
            cert = server.ctx.config.tls.cert_file.display(),
            md = maildir.display()
        ),
    )
    .unwrap();
    let mbsync = || {
        let mut cmd = Command::new("mbsync");
        cmd.arg("-c")
            .arg(&config)
            .arg("-V")
            .arg("sync")
            .env("HOME", home.path());
        cmd
    };
    // 1. Server to local.
    let (ok, text) = run(&mut mbsync()).await;
    assert!(ok, "first sync: {text}");
    assert_eq!(count_files(&maildir.join("INBOX")), 3, "{text}");

    // 2. Local to server: a new message, and a flag change (mark the first one seen).
    let new = maildir.join("INBOX/new/1700000000.1_1.localhost");
    std::fs::write(&new, message("local", "written by the local side")).unwrap();
    let (ok, text) = run(&mut mbsync()).await;
    assert!(ok, "second sync: {text}");
    let mut c = server.login().await;
    let r = c.ok("STATUS INBOX (MESSAGES)").await;
    assert!(r.has("MESSAGES 4"), "{r:#?}\n{text}");
    c.ok("SELECT INBOX").await;
    let r = c.ok("SEARCH SUBJECT local").await;
    assert_eq!(r.find("* SEARCH"), "* SEARCH 4");
    // A server-side change: flag message 1 and delete message 2.
    c.ok("STORE 1 +FLAGS (\\Flagged)").await;
    c.ok("STORE 2 +FLAGS (\\Deleted)").await;
    c.ok("EXPUNGE").await;
    c.ok("LOGOUT").await;
    let (ok, text) = run(&mut mbsync()).await;
    assert!(ok, "third sync: {text}");
    assert_eq!(count_files(&maildir.join("INBOX")), 3, "{text}");
    let flagged = std::fs::read_dir(maildir.join("INBOX/cur"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(":2,F"))
        .count();
    assert_eq!(flagged, 1, "{text}");

    // 4. Again with no changes: nothing moves either way.
    let (ok, text) = run(&mut mbsync()).await;
    assert!(ok, "fourth sync: {text}");
    assert_eq!(count_files(&maildir.join("INBOX")), 3);
    let mut c = server.login().await;
    let r = c.ok("STATUS INBOX (MESSAGES)").await;
    assert!(r.has("MESSAGES 3"), "{r:#?}");
}
