//! The private PostgreSQL cluster in `DATA/pg`, run with the system's PostgreSQL binaries.
//!
//! It listens only on a unix socket in `DATA/pg/run` (no TCP port) and trusts local connections:
//! the socket folder is readable only by the user the cluster runs as. PostgreSQL refuses to run
//! as root, so when tinydc is started as root the cluster runs as the `postgres` system user.
//!
//! Layout: `DATA/pg/data` (the cluster), `DATA/pg/run` (socket), `DATA/pg/postgres.log`.

mod privilege;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use sqlx::postgres::PgConnectOptions;

pub use privilege::RunAs;

/// The database role and database name inside the private cluster.
pub const DB_NAME: &str = "tinydc";
/// The port number in the socket's name (`.s.PGSQL.5432`); nothing listens on TCP.
pub const SOCKET_PORT: u16 = 5432;

/// How a cluster is tuned when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Production: every commit is fsynced (the durability contract).
    Full,
    /// Throwaway test clusters: no fsync at all, for speed.
    Throwaway,
}

/// The private cluster's `max_connections` (in [`SMALL_MACHINE`]): what the pools must fit.
pub const CLUSTER_MAX_CONNECTIONS: u32 = 50;

/// Processes that each hold a pool of `database.max_connections` on the private cluster: the
/// three daemons and `tinydc up`.
pub const POOLED_PROCESSES: u32 = 4;

/// Slots left for everything else: the two superuser-reserved slots, `tinydc` commands run
/// beside the daemons, psql and backups.
pub const SPARE_CONNECTIONS: u32 = 10;

/// The largest `database.max_connections` the private cluster can serve in every process at once.
pub const MAX_POOL_ON_PRIVATE_CLUSTER: u32 = (CLUSTER_MAX_CONNECTIONS - SPARE_CONNECTIONS) / POOLED_PROCESSES;
const _: () = assert!(MAX_POOL_ON_PRIVATE_CLUSTER * POOLED_PROCESSES + SPARE_CONNECTIONS <= CLUSTER_MAX_CONNECTIONS);

/// Sized for a Raspberry Pi serving a family (issue #12: ≤ 16 MiB PSS idle, ≤ 40 MiB after load),
/// written into postgresql.conf by `initdb` (clusters made before keep their own settings).
/// Durability is untouched: fsync, synchronous_commit and full_page_writes stay on.
/// - max_connections: the pools of three daemons and of `tinydc up` (`database.max_connections`, 10
///   each) plus `tinydc` commands; every slot costs shared memory (lock table, PGPROC) even when unused.
/// - shared_buffers 16MB: the metadata of a family fits; the kernel's page cache does the rest.
/// - wal_buffers 256kB: PostgreSQL zeroes all of them at start, so each MiB is a MiB of shared
///   memory resident from the first second (measured: the cluster's touched shared memory went
///   from 3.6 to 2.9 MiB). Every commit flushes the WAL anyway (synchronous_commit), so the
///   buffers only ever hold the few transactions in flight: 32 pages hold dozens of deliveries'
///   records. huge_pages off (a Pi has none; `try` maps a bigger segment first).
/// - no parallel query, no logical replication launcher, one autovacuum worker: each would be
///   one more resident process; jit off (LLVM would add tens of MiB to a backend).
/// - the background writer wakes every 2 s instead of 0.2 s (a Pi sleeps more); the checkpointer
///   still writes everything at each checkpoint.
/// - smaller per-backend work memory: sorts of a family's mailboxes are small.
/// - shared lock tables sized for what tinydc takes (issue #12): PostgreSQL builds and links
///   every entry of its shared hash tables at start, so each slot is resident from the first
///   second whether used or not (measured on an idle cluster, pages of the main shared memory
///   touched: 2876 kB as before, 1660 kB with these four):
///   - no WAL senders or replication slots (tinydc backs up with pg_dump; nothing streams WAL):
///     every WAL sender is one more backend slot in every per-backend table (-300 kB);
///   - max_pred_locks_per_transaction at its minimum of 10: predicate locks serve only
///     SERIALIZABLE transactions, which tinydc never starts; the tables were 64 per backend
///     (-720 kB);
///   - max_locks_per_transaction 32: the lock table is shared, 32 × 54 backend slots = 1728
///     locks at once, where pg_dump of all of tinydc's 19 tables or a migration takes a few dozen
///     and a daemon's statement a handful (-300 kB).
const SMALL_MACHINE: &str = "max_connections = 50\n\
     superuser_reserved_connections = 2\n\
     shared_buffers = 16MB\n\
     wal_buffers = 256kB\n\
     max_wal_senders = 0\n\
     max_replication_slots = 0\n\
     max_pred_locks_per_transaction = 10\n\
     max_locks_per_transaction = 32\n\
     huge_pages = off\n\
     max_worker_processes = 2\n\
     max_parallel_workers = 0\n\
     max_parallel_workers_per_gather = 0\n\
     max_parallel_maintenance_workers = 0\n\
     max_logical_replication_workers = 0\n\
     max_sync_workers_per_subscription = 0\n\
     autovacuum_max_workers = 1\n\
     bgwriter_delay = 2000ms\n\
     jit = off\n\
     work_mem = 2MB\n\
     maintenance_work_mem = 16MB\n\
     temp_buffers = 2MB\n";

/// A private cluster at `DATA/pg`.
#[derive(Debug, Clone)]
pub struct PrivateCluster {
    root: PathBuf,
    bin_dir: PathBuf,
    run_as: Option<RunAs>,
}

impl PrivateCluster {
    /// The cluster at `root` (normally `DATA/pg`). Finds the PostgreSQL binaries and the user to
    /// run them as; fails with an explanation when either is missing.
    pub fn new(root: &Path) -> anyhow::Result<PrivateCluster> {
        let root = std::path::absolute(root)?;
        let socket = root.join("run").join(format!(".s.PGSQL.{SOCKET_PORT}"));
        // sockaddr_un holds 107 bytes of path.
        if socket.as_os_str().len() > 100 {
            bail!(
                "the data directory path is too long for PostgreSQL's unix socket ({}); use a shorter path",
                socket.display()
            );
        }
        Ok(PrivateCluster {
            root,
            bin_dir: find_bin_dir()?,
            run_as: RunAs::for_postgres()?,
        })
    }

    /// `DATA/pg/data`.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// `DATA/pg/run`: the folder holding the unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    /// `DATA/pg/postgres.log`.
    pub fn log_file(&self) -> PathBuf {
        self.root.join("postgres.log")
    }

    /// Whether `initdb` has run here.
    pub fn exists(&self) -> bool {
        self.data_dir().join("PG_VERSION").exists()
    }

    /// Connection options for the `tinydc` database over the socket.
    pub fn connect_options(&self) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(self.socket_dir())
            .port(SOCKET_PORT)
            .username(DB_NAME)
            .database(DB_NAME)
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        // Its own process group: a Ctrl-C meant for `tinydc up` must not reach PostgreSQL directly.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        if let Some(run_as) = &self.run_as {
            run_as.apply(&mut cmd);
        }
        // Never inherit a locale PostgreSQL might not have; the cluster is created with C.
        cmd.env("LC_ALL", "C").env("LANG", "C");
        // Debian's postgres links GnuTLS (through libldap), whose library constructor initializes
        // its crypto backends and p11-kit in every process at load: ~0.9 MiB of the idle
        // cluster's pages (issue #12). Only LDAP authentication would use it, and libldap calls
        // gnutls_global_init itself when it sets up TLS, so the implicit call is not needed.
        cmd.env("GNUTLS_NO_IMPLICIT_INIT", "1");
        cmd
    }

    /// A PostgreSQL client program (`pg_dump`, `pg_restore`, `psql`) of the same install as the
    /// cluster, aimed at the `tinydc` database over the unix socket (libpq's PG* variables). It
    /// runs as the user the cluster runs as (the `postgres` user when we are root), who owns the
    /// socket folder; so callers pipe its input and output through stdin/stdout rather than
    /// naming files that user might not be allowed to read or write.
    pub fn client_command(&self, program: &str) -> Command {
        let mut cmd = self.command(program);
        cmd.env("PGHOST", self.socket_dir())
            .env("PGPORT", SOCKET_PORT.to_string())
            .env("PGUSER", DB_NAME)
            .env("PGDATABASE", DB_NAME)
            .env_remove("PGSERVICEFILE")
            .current_dir("/");
        cmd
    }

    /// The PostgreSQL major version of the cluster (`PG_VERSION`).
    pub fn version(&self) -> anyhow::Result<String> {
        let path = self.data_dir().join("PG_VERSION");
        Ok(std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .to_string())
    }

    /// Create the cluster (initdb) and the `tinydc` database. `Throwaway` skips fsyncs.
    pub fn init(&self, durability: Durability) -> anyhow::Result<()> {
        if self.exists() {
            bail!("a PostgreSQL cluster already exists in {}", self.data_dir().display());
        }
        for dir in [self.root.clone(), self.data_dir(), self.socket_dir()] {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            set_mode(&dir, 0o700)?;
            if let Some(run_as) = &self.run_as {
                run_as.chown(&dir)?;
            }
        }
        let mut cmd = self.command("initdb");
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-U", DB_NAME, "--auth=trust", "--encoding=UTF8", "--locale=C"]);
        if durability == Durability::Throwaway {
            cmd.arg("--no-sync");
        }
        run_quietly(cmd, "initdb")?;

        // Settings for a small machine; the socket is the only way in.
        let settings = format!(
            "\n# tinydc: private cluster settings\n\
             listen_addresses = ''\n\
             unix_socket_directories = '{}'\n\
             unix_socket_permissions = 0700\n\
             {SMALL_MACHINE}\
             dynamic_shared_memory_type = posix\n\
             log_min_messages = warning\n",
            self.socket_dir().display()
        );
        let conf = self.data_dir().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).context("reading postgresql.conf")?;
        text.push_str(&settings);
        std::fs::write(&conf, text).context("writing postgresql.conf")?;

        self.start(durability)?;
        let created = self.create_database();
        if created.is_err() {
            let _ = self.stop();
        }
        created
    }

    fn create_database(&self) -> anyhow::Result<()> {
        let mut cmd = self.command("psql");
        cmd.arg("-h")
            .arg(self.socket_dir())
            .args([
                "-p",
                &SOCKET_PORT.to_string(),
                "-U",
                DB_NAME,
                "-d",
                "postgres",
                "-q",
                "-c",
            ])
            .arg(format!("CREATE DATABASE {DB_NAME}"));
        run_quietly(cmd, "psql CREATE DATABASE")
    }

    /// The pid of the running postmaster of this cluster, if any. A pid file left by a power
    /// cut whose pid now belongs to another process does not count.
    pub fn running_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        let pid: u32 = text.lines().next()?.trim().parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        let data_dir = self.data_dir();
        (cmdline.contains("postgres") && cmdline.contains(&*data_dir.to_string_lossy())).then_some(pid)
    }

    /// Remove the lock files an unclean stop left behind (postmaster.pid, the socket's lock),
    /// which PostgreSQL would otherwise take for a running server: when their pid is dead, a
    /// zombie nobody reaped (a SIGKILLed postmaster), or now an unrelated program (a pid reused
    /// after a power cut). Never while a backend of the dead postmaster is still attached to its
    /// shared memory (they linger briefly after a SIGKILL): the pid file is PostgreSQL's guard
    /// against two sets of processes writing one cluster, so then the start fails and is retried.
    fn clear_stale_files(&self) {
        if self.running_pid().is_some() {
            return;
        }
        let pid_file = self.data_dir().join("postmaster.pid");
        let mut lock_files = vec![pid_file.clone()];
        if let Ok(entries) = std::fs::read_dir(self.socket_dir()) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if name.starts_with(".s.PGSQL.") && name.ends_with(".lock") {
                    lock_files.push(entry.path());
                }
            }
        }
        if let Ok(text) = std::fs::read_to_string(&pid_file)
            && shared_memory_in_use(&text)
        {
            tracing::warn!(
                "processes of the previous PostgreSQL still use its shared memory; not starting beside them"
            );
            return;
        }
        for file in lock_files {
            let Some(pid) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| t.lines().next()?.trim().parse::<u32>().ok())
            else {
                continue;
            };
            let postgres = crate::process::cmdline(pid)
                .and_then(|args| args.first().cloned())
                .is_some_and(|arg0| arg0.contains("postgres"));
            if !crate::process::alive(pid) || !postgres {
                tracing::warn!("removing {} left by an unclean stop (pid {pid})", file.display());
                let _ = std::fs::remove_file(&file);
            }
        }
    }

    /// Start the cluster and wait until it accepts connections. Returns `false` when it was
    /// already running (nothing was started).
    pub fn start(&self, durability: Durability) -> anyhow::Result<bool> {
        if !self.exists() {
            bail!(
                "no PostgreSQL cluster in {} (run `tinydc init`)",
                self.data_dir().display()
            );
        }
        if self.running_pid().is_some() {
            return Ok(false);
        }
        self.clear_stale_files();
        let mut options = format!("-k {}", self.socket_dir().display());
        if durability == Durability::Throwaway {
            options.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", "60", "-o", &options, "start"]);
        if let Err(e) = run_quietly(cmd, "pg_ctl start") {
            let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!("{e}\n{}", tail.join("\n"));
        }
        Ok(true)
    }

    /// Stop the cluster (fast shutdown: sessions are ended, everything committed is kept).
    pub fn stop(&self) -> anyhow::Result<()> {
        if self.running_pid().is_none() {
            return Ok(());
        }
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-m", "fast", "-w", "-t", "60", "stop"]);
        run_quietly(cmd, "pg_ctl stop")
    }

    /// Wait up to `timeout` for the socket to accept connections (a cluster started elsewhere).
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match sqlx::ConnectOptions::connect(&self.connect_options()).await {
                Ok(conn) => {
                    let _ = sqlx::Connection::close(conn).await;
                    return Ok(());
                }
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    bail!(
                        "the private PostgreSQL in {} is not answering: {e}",
                        self.root.display()
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// Whether the System V shared memory segment named on line 7 of a postmaster.pid (`key shmid`)
/// still has processes attached (`nattch` in /proc/sysvipc/shm).
fn shared_memory_in_use(pid_file: &str) -> bool {
    let Some(shmid) = pid_file
        .lines()
        .nth(6)
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|id| id.parse::<u64>().ok())
    else {
        return false;
    };
    let table = std::fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default();
    table.lines().skip(1).any(|row| {
        let cols: Vec<&str> = row.split_whitespace().collect();
        cols.get(1).and_then(|c| c.parse::<u64>().ok()) == Some(shmid)
            && cols.get(6).and_then(|c| c.parse::<u64>().ok()).is_some_and(|n| n > 0)
    })
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting permissions of {}", path.display()))
}

fn run_quietly(mut cmd: Command, what: &str) -> anyhow::Result<()> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    if !output.status.success() {
        let mut text = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if text.is_empty() {
            text = String::from_utf8_lossy(&output.stdout).trim().to_string();
        }
        bail!("{what} failed ({}): {text}", output.status);
    }
    Ok(())
}

/// The folder with `initdb`, `pg_ctl` and `postgres`: `TINYDC_PG_BIN`, else the newest
/// `/usr/lib/postgresql/N/bin` (Debian), else wherever `pg_ctl` is on the PATH.
pub fn find_bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("TINYDC_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if dir.join("pg_ctl").exists() && dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    bail!(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install them (Debian: apt-get install postgresql) \
         or set TINYDC_PG_BIN, or configure [database] url"
    )
}

#[cfg(test)]
mod connection_budget {
    use super::*;

    #[test]
    fn the_pool_limit_matches_the_written_cluster_setting() {
        assert!(SMALL_MACHINE.starts_with(&format!("max_connections = {CLUSTER_MAX_CONNECTIONS}\n")));
    }
}
