//! The whole suite as people use it, through `tinydc up`: mail sent with python's smtplib to
//! submission wakes an IMAP IDLE in python's imaplib, and one quota covers mail and WebDAV files.

mod common;

use std::process::Command;

use common::{Suite, data_dir, ok, require_daemons};

fn curl(args: &[&str]) -> String {
    shared::testing::require_tool("curl");
    let out = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn mail_and_files_share_one_suite_and_one_quota() {
    require_daemons();
    shared::testing::require_tool("python3");
    let (dir, data) = data_dir();
    ok(&data, &["init", "--domain", "example.test"], None);
    ok(
        &data,
        &[
            "user",
            "add",
            "alice@example.test",
            "--password-stdin",
            "--quota",
            "1MiB",
        ],
        Some("alice-pw\n"),
    );
    ok(
        &data,
        &["user", "add", "bob@example.test", "--password-stdin"],
        Some("bob-pw\n"),
    );
    let suite = Suite::start(&data);
    let ports = suite.ports;

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/e2e.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(ports.submission.to_string())
        .arg(ports.imap.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "e2e.py failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("{}", String::from_utf8_lossy(&out.stdout));

    // Files over WebDAV count against the same quota as the mail.
    let url = format!("https://127.0.0.1:{}/notes.bin", ports.https);
    let file = dir.path().join("notes.bin");
    std::fs::write(&file, vec![b'n'; 600 * 1024]).unwrap();
    let file_arg = file.to_string_lossy().to_string();
    assert_eq!(
        curl(&["-u", "alice@example.test:alice-pw", "-T", &file_arg, &url]),
        "201"
    );
    let show = ok(&data, &["quota", "show", "alice@example.test"], None);
    assert!(show.contains("files:   600 KiB"), "{show}");
    assert!(!show.contains("mail:    0 B"), "the delivered mail is counted: {show}");
    // 600 KiB more does not fit in what is left of 1 MiB: 507 Insufficient Storage.
    let url2 = format!("https://127.0.0.1:{}/more.bin", ports.https);
    assert_eq!(
        curl(&["-u", "alice@example.test:alice-pw", "-T", &file_arg, &url2]),
        "507"
    );
    // And the admin's view agrees after a recount.
    assert!(ok(&data, &["quota", "recalc", "alice@example.test"], None).contains("corrected 0"));
    suite.stop();
}
