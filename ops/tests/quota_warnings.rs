//! `tinydc quota report` marks users at or over 80% and 95% of their limit, and the admin
//! commands that change a limit or a recorded usage (`quota set`, `quota recalc`) send the
//! quota warnings those changes call for (shared::quota::warn), against a real private cluster.

mod common;

use common::{data_dir, ok};

/// The report's line for `address`.
fn line_of<'a>(report: &'a str, address: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.starts_with(address))
        .unwrap_or_else(|| panic!("{address} missing from:\n{report}"))
}

#[test]
fn report_marks_users_near_their_limit_and_admin_changes_warn() {
    let (_dir, data) = data_dir();
    ok(&data, &["init", "--domain", "example.test"], None);
    for (user, quota) in [
        ("alice@example.test", Some("100K")),
        ("bob@example.test", Some("100K")),
        ("carol@example.test", None),
    ] {
        let mut args = vec!["user", "add", user, "--password-stdin"];
        if let Some(q) = quota {
            args.extend(["--quota", q]);
        }
        ok(&data, &args, Some("a long enough password\n"));
    }
    // Files put there behind the database's back, then counted: alice 85%, bob 97%, carol
    // (no limit) 500 KiB.
    for (user, bytes) in [
        ("alice@example.test", 85 << 10),
        ("bob@example.test", 97 << 10),
        ("carol@example.test", 500 << 10),
    ] {
        std::fs::write(data.join("files").join(user).join("big.bin"), vec![1u8; bytes]).unwrap();
    }
    let recalc = ok(&data, &["quota", "recalc"], None);
    assert!(
        recalc.contains("alice@example.test: sent a warning to their INBOX (storage 80% full)"),
        "{recalc}"
    );
    assert!(
        recalc.contains("bob@example.test: sent a warning to their INBOX (storage 95% full)"),
        "{recalc}"
    );
    assert!(!recalc.contains("carol@example.test: sent"), "{recalc}");

    let report = ok(&data, &["quota", "report"], None);
    assert!(line_of(&report, "alice@example.test").ends_with(" >=80%"), "{report}");
    assert!(line_of(&report, "bob@example.test").ends_with(" >=95%"), "{report}");
    assert!(!line_of(&report, "carol@example.test").contains(">="), "{report}");
    // Fullest first.
    let order: Vec<&str> = report.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        order,
        ["bob@example.test", "alice@example.test", "carol@example.test"],
        "{report}"
    );

    // Counting again warns nobody twice.
    let again = ok(&data, &["quota", "recalc"], None);
    assert!(!again.contains("sent a warning"), "{again}");

    // A higher limit re-arms alice's warning; lowering it again warns again.
    let set = ok(&data, &["quota", "set", "alice@example.test", "1M"], None);
    assert!(!set.contains("sent a warning"), "{set}");
    assert!(!line_of(&ok(&data, &["quota", "report"], None), "alice@example.test").contains(">="));
    let set = ok(&data, &["quota", "set", "alice@example.test", "100K"], None);
    assert!(
        set.contains("alice@example.test: sent a warning to their INBOX (storage 80% full)"),
        "{set}"
    );
    let set = ok(&data, &["quota", "set", "alice@example.test", "100K"], None);
    assert!(!set.contains("sent a warning"), "the same limit again: {set}");
}
