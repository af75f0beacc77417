//! The `tinydc` command as an admin uses it, against a real private PostgreSQL cluster.

mod common;

use std::time::Duration;

use common::{Suite, TINYDC, data_dir, fails, ok, processes_using, require_daemons};

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
    fails(&data, &["dkim", "show", "example.test"], None, "no DKIM key");
    let dkim = ok(&data, &["dkim", "generate", "example.test"], None);
    assert!(
        dkim.contains("._domainkey.example.test. IN TXT \"v=DKIM1; k=rsa; p="),
        "{dkim}"
    );
    let shown = ok(&data, &["dkim", "show", "example.test"], None);
    let published = shown.trim();
    assert!(
        published.contains("._domainkey.example.test. IN TXT") && dkim.contains(published),
        "{shown} vs {dkim}"
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
    fails(&data, &["queue", "retry", "99"], None, "no queued delivery with id 99");
    fails(&data, &["queue", "delete", "99"], None, "no queued delivery with id 99");
    assert!(ok(&data, &["queue", "retry", "--all"], None).contains("0 deliveries"));

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
    require_daemons();
    let (_dir, data) = data_dir();
    ok(&data, &["init", "--domain", "example.test"], None);
    // Every listener of every daemon accepts connections.
    let suite = Suite::start(&data);
    let running = processes_using(&data);
    for daemon in ["tinydc-smtpd", "tinydc-imapd", "tinydc-davd"] {
        assert!(
            running.iter().any(|p| p.contains(daemon)),
            "{daemon} not running: {running:?}"
        );
        // Each daemon is this very `tinydc` binary under the daemon's name (one copy of the
        // code in memory for all of them, issue #12), named so in `ps` and `top`.
        let pids = shared::process::find_by_data_dir(daemon, &data);
        assert_eq!(pids.len(), 1, "{daemon}: {pids:?} in {running:?}");
        let exe = std::fs::read_link(format!("/proc/{}/exe", pids[0])).unwrap();
        assert_eq!(exe, std::fs::canonicalize(TINYDC).unwrap(), "{daemon} runs {exe:?}");
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", pids[0])).unwrap();
        assert_eq!(comm.trim_end(), daemon);
    }

    // Admin commands work while the suite runs, and leave its PostgreSQL running.
    ok(
        &data,
        &["user", "add", "dave@example.test", "--password-stdin"],
        Some("pw\n"),
    );
    assert!(ok(&data, &["status"], None).contains("running"));

    // Ctrl-C stops everything.
    suite.stop();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        processes_using(&data).is_empty(),
        "left behind: {:?}",
        processes_using(&data)
    );
}

/// `tinydc` is a multi-call binary: under a daemon's name (the links the Debian package installs
/// in /usr/bin) it is that daemon, with the daemon's own arguments; under its own name, or any
/// other, the admin command line.
#[test]
fn the_daemon_names_run_the_daemons() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, args: &[&str]| {
        let link = dir.path().join(name);
        if !link.exists() {
            std::os::unix::fs::symlink(TINYDC, &link).unwrap();
        }
        std::process::Command::new(&link)
            .args(args)
            .env_remove("TINYDC_DATA")
            .output()
            .unwrap()
    };
    let version = env!("CARGO_PKG_VERSION");
    for daemon in ["tinydc-smtpd", "tinydc-imapd", "tinydc-davd"] {
        let out = run(daemon, &["--version"]);
        assert!(out.status.success(), "{daemon} --version: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{daemon} {version}\n"));
        let help = String::from_utf8_lossy(&run(daemon, &["--help"]).stdout).to_string();
        assert!(help.contains(&format!("Usage: {daemon} --data DIR")), "{help}");
        // A daemon's own errors, not the admin command line's.
        let out = run(daemon, &[]);
        assert_eq!(out.status.code(), Some(1), "{daemon} without a data directory: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("no data directory: pass --data DIR"), "{stderr}");
        let out = run(daemon, &["user", "list"]);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("unknown argument \"user\""),
            "{out:?}"
        );
    }
    // Any other name is the admin command line.
    for name in ["tinydc", "tinydc-imapd.old", "tinydc-smtpd2"] {
        let out = run(name, &["--version"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("tinydc {version}\n"),
            "{name}"
        );
    }
}
