//! Idle memory: the proportional set size (PSS, /proc/PID/smaps_rollup) of each daemon after it
//! has been left alone a few seconds. PSS splits shared pages between the processes sharing
//! them, so the three figures add up honestly. The private PostgreSQL is shown on its own line:
//! the classic stack has no database to compare it with.

use std::time::Duration;

use super::suite::Suite;
use super::{SuiteArgs, figure};

pub async fn run(suite: &Suite, args: &SuiteArgs, fresh: bool) -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let when = if fresh { "after start" } else { "after the load above" };
    let mut total = 0;
    let mut parts = Vec::new();
    for d in &suite.daemons {
        let kib = pss_kib(d.pid).unwrap_or(0);
        total += kib;
        parts.push(format!(
            "{} {:.1}",
            d.name.trim_start_matches("tinydc-"),
            kib as f64 / 1024.0
        ));
    }
    figure(
        &format!("idle   PSS of the three daemons, {when}"),
        format!("{:.1} MiB", total as f64 / 1024.0),
    );
    println!("       ({} MiB)", parts.join(", "));
    if let Some(postmaster) = suite.postgres_pid() {
        let pids = with_children(postmaster);
        let kib: u64 = pids.iter().filter_map(|&p| pss_kib(p)).sum();
        figure(
            &format!("idle   PSS of the private PostgreSQL ({} processes)", pids.len()),
            format!("{:.1} MiB", kib as f64 / 1024.0),
        );
    }
    Ok(())
}

/// `Pss:` of /proc/PID/smaps_rollup, in KiB.
pub fn pss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix("Pss:")
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    })
}

/// `pid` and every process below it (a master and the workers it forked, and theirs).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(ppid) = parent(child) {
                parents.push((child, ppid));
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

/// The parent pid of `pid` (/proc/PID/stat).
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)`, which may itself hold spaces: state, then ppid.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .and_then(|p| p.parse::<u32>().ok())
}

/// `pid` and its direct children (a postmaster's backends and helpers).
pub fn with_children(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // Fields after the `(comm)`, which may itself hold spaces: state, then ppid.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_pss_is_readable() {
        assert!(pss_kib(std::process::id()).is_some_and(|k| k > 0));
        assert_eq!(with_children(std::process::id())[0], std::process::id());
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let below = descendants(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(below.contains(&child.id()), "{below:?} lacks {}", child.id());
    }
}
