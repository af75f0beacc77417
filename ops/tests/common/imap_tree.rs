//! ops/tests/clients/imap_tree.py from the tests: fill an IMAP account with a varied tree, or
//! dump every folder of one (names, and per message sha256, size, INTERNALDATE, flags) to
//! compare two servers or two accounts from outside.

use std::collections::BTreeMap;
use std::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/imap_tree.py");

/// folder → sorted [sha256, size, internaldate, flags].
pub type Dump = BTreeMap<String, Vec<serde_json::Value>>;

/// Run imap_tree.py with `args`; its stdout.
pub fn python(args: &[&str]) -> String {
    shared::testing::require_tool("python3");
    let out = Command::new("python3").arg(SCRIPT).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "imap_tree.py {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Fill `user`'s account on the plain IMAP port `port` (LOGIN on loopback).
pub fn fill(port: u16, user: &str, password: &str, bulk: usize) {
    python(&["fill", &port.to_string(), user, password, &bulk.to_string()]);
}

/// Every selectable folder of `user`, each folder's messages sorted.
pub fn dump(port: u16, user: &str, password: &str, starttls: bool) -> Dump {
    let port = port.to_string();
    let mut args = vec!["dump", &port, user, password];
    if starttls {
        args.push("--starttls");
    }
    let mut dump: Dump = serde_json::from_str(&python(&args)).unwrap();
    for messages in dump.values_mut() {
        messages.sort_by_key(|m| m.to_string());
    }
    dump
}
