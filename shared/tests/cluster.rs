//! The private cluster with the system's PostgreSQL binaries: create, start, stop, and start
//! again after an unclean stop whose pid file names a process that is not PostgreSQL.

use std::time::Duration;

use shared::pg::{Durability, PrivateCluster};
use sqlx::ConnectOptions;

fn cluster_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("tinydc-cluster-")
        .tempdir_in("/tmp")
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Stops the cluster when a test ends, passed or failed.
struct StopOnDrop(PrivateCluster);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.stop();
    }
}

async fn answers(cluster: &PrivateCluster) -> i32 {
    let mut conn = cluster.connect_options().connect().await.unwrap();
    sqlx::query_scalar("SELECT 40 + 2").fetch_one(&mut conn).await.unwrap()
}

#[tokio::test]
async fn starts_after_an_unclean_stop_with_a_reused_pid() {
    let dir = cluster_dir();
    let guard = StopOnDrop(PrivateCluster::new(&dir.path().join("pg")).unwrap());
    let cluster = &guard.0;
    cluster.init(Durability::Throwaway).unwrap();
    assert_eq!(answers(cluster).await, 42);
    assert!(
        !cluster.start(Durability::Throwaway).unwrap(),
        "already running: nothing to start"
    );

    // A power cut: the postmaster dies without cleaning up...
    let pid = cluster.running_pid().expect("running");
    shared::process::send_signal(pid, shared::process::Signal::Kill).unwrap();
    for _ in 0..100 {
        if cluster.running_pid().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Children may linger for a moment after the postmaster is killed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // ...and after the reboot its pid belongs to some other process (here: this test).
    let pid_file = cluster.data_dir().join("postmaster.pid");
    let text = std::fs::read_to_string(&pid_file).expect("the pid file is left behind");
    let rest: Vec<&str> = text.lines().skip(1).collect();
    std::fs::write(&pid_file, format!("{}\n{}\n", std::process::id(), rest.join("\n"))).unwrap();
    assert_eq!(
        cluster.running_pid(),
        None,
        "a pid that is not this cluster's postmaster is stale"
    );

    assert!(cluster.start(Durability::Throwaway).unwrap());
    assert_eq!(answers(cluster).await, 42);
    cluster.stop().unwrap();
    assert_eq!(cluster.running_pid(), None);
}

#[tokio::test]
async fn init_refuses_an_existing_cluster() {
    let dir = cluster_dir();
    let guard = StopOnDrop(PrivateCluster::new(&dir.path().join("pg")).unwrap());
    let cluster = &guard.0;
    cluster.init(Durability::Throwaway).unwrap();
    assert!(cluster.init(Durability::Throwaway).is_err());
    cluster.stop().unwrap();
}

/// PSS in KiB of `pid` and its direct children (/proc/PID/smaps_rollup).
/// PSS in KiB of `pid` and its children, split as (anonymous + shared memory, file-backed),
/// with the number of processes. File-backed pages are `postgres` and the ~40 libraries Debian
/// links it with: their PSS depends on which other processes on the machine map the same files
/// (12.7 to 19.8 MiB in all for one idle cluster here, alone or beside other clusters), so only
/// the first part is what the cluster's own configuration sizes.
fn pss_with_children(pid: u32) -> (u64, u64, usize) {
    let pss = |p: u32| -> (u64, u64) {
        let text = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).unwrap_or_default();
        let field = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        (field("Pss_Anon:") + field("Pss_Shmem:"), field("Pss_File:"))
    };
    let mut pids = vec![pid];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1));
        if ppid == Some(&pid.to_string()) {
            pids.push(child);
        }
    }
    let (own, file) = pids
        .iter()
        .map(|&p| pss(p))
        .fold((0, 0), |(a, f), (pa, pf)| (a + pa, f + pf));
    (own, file, pids.len())
}

/// Resident KiB of `pid`'s main shared memory segment: PostgreSQL maps it as shared anonymous
/// memory (`/dev/zero (deleted)` in /proc/PID/smaps; System V only with
/// shared_memory_type = sysv).
fn shared_memory_touched_kib(pid: u32) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut in_segment = false;
    let mut kib = 0;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            let perms = fields.next().unwrap_or_default();
            in_segment = perms == "rw-s" && line.contains("/dev/zero");
        } else if in_segment && first == "Rss:" {
            kib += fields.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    kib
}

/// What `tinydc init` writes is sized for a Pi (issue #12: ≤ 16 MiB PSS idle, as `tinydc bench`
/// measures it) and keeps the durability contract: fsync, synchronous commit and full page
/// writes stay on.
#[tokio::test]
async fn a_new_cluster_is_small_and_still_durable() {
    let dir = cluster_dir();
    let guard = StopOnDrop(PrivateCluster::new(&dir.path().join("pg")).unwrap());
    let cluster = &guard.0;
    cluster.init(Durability::Full).unwrap();
    let mut conn = cluster.connect_options().connect().await.unwrap();
    for (setting, wanted) in [
        ("shared_buffers", "16MB"),
        // Zeroed at start, so resident from the first second: 256 kB, not the 1 MB it was.
        ("wal_buffers", "256kB"),
        ("max_connections", "50"),
        ("autovacuum_max_workers", "1"),
        ("max_parallel_workers", "0"),
        ("max_logical_replication_workers", "0"),
        ("jit", "off"),
        ("huge_pages", "off"),
        // The shared lock tables, built whole at start (issue #12).
        ("max_wal_senders", "0"),
        ("max_replication_slots", "0"),
        ("max_pred_locks_per_transaction", "10"),
        ("max_locks_per_transaction", "32"),
        ("fsync", "on"),
        ("synchronous_commit", "on"),
        ("full_page_writes", "on"),
    ] {
        let value: String = sqlx::query_scalar(&format!("SHOW {setting}"))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(value, wanted, "{setting}");
    }
    sqlx::Connection::close(conn).await.unwrap();
    // Until the backend of that connection has gone.
    let postmaster = cluster.running_pid().expect("running");
    let mut waited = 0;
    let (own, file, processes) = loop {
        let measured = pss_with_children(postmaster);
        if measured.2 <= 5 || waited >= 50 {
            break measured;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    };
    eprintln!(
        "idle cluster: {own} KiB anonymous and shared memory + {file} KiB file pages (PSS) in \
         {processes} processes"
    );
    // Measured 5.2 MiB here: the touched part of shared_buffers and the lock tables, each
    // process's heap and stack.
    assert!(
        own <= 8 * 1024,
        "the idle cluster's anonymous and shared memory is {own} KiB PSS in {processes} processes"
    );
    // No logical replication launcher: postmaster, checkpointer, background writer, walwriter,
    // autovacuum launcher.
    assert!(processes <= 5, "{processes} processes");
    // The postmaster has initialized all of the main shared memory it will ever touch when idle:
    // 2.8 MiB with PostgreSQL's lock table sizes, 1.6 MiB with ours (PostgreSQL 15).
    let touched = shared_memory_touched_kib(postmaster);
    assert!(
        touched > 0 && touched <= 2048,
        "the postmaster touched {touched} KiB of its main shared memory"
    );
    // GnuTLS's implicit initialization is skipped in every PostgreSQL process (the pg module).
    let environ = std::fs::read(format!("/proc/{postmaster}/environ")).unwrap();
    assert!(
        environ.split(|&b| b == 0).any(|v| v == b"GNUTLS_NO_IMPLICIT_INIT=1"),
        "the postmaster's environment lacks GNUTLS_NO_IMPLICIT_INIT=1"
    );
    cluster.stop().unwrap();
}
