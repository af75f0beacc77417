//! `tinydc up`: run the whole suite in the foreground.
//!
//! Starts the private PostgreSQL (when used), brings the schema up to date, starts the three
//! daemons as child processes (each in its own process group, so a terminal's Ctrl-C reaches only
//! us), restarts a daemon that dies, and on Ctrl-C or SIGTERM stops the daemons, then PostgreSQL,
//! leaving no process behind.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use shared::Config;
use shared::config::CONFIG_FILE;
use shared::pg::{Durability, PrivateCluster};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The daemons, by binary name.
pub const DAEMONS: [&str; 3] = ["tinydc-smtpd", "tinydc-imapd", "tinydc-davd"];
/// How long daemons get to finish after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

pub async fn run(data: &Path, explicit_data: bool) -> anyhow::Result<()> {
    if !data.join(CONFIG_FILE).exists() {
        if explicit_data {
            bail!(
                "{} is not a tinydc data directory (create one with `tinydc init --data {} --domain DOMAIN`)",
                data.display(),
                data.display()
            );
        }
        println!(
            "no data directory yet: creating {} for domain localhost",
            data.display()
        );
        let args = super::init::InitArgs {
            domain: "localhost".into(),
            database_url: None,
            hostname: None,
        };
        super::init::run(data, args).await?;
    }
    let config = Config::load(data)?;
    let binaries = find_daemons()?;

    let cluster = if config.uses_private_cluster() {
        let cluster = PrivateCluster::new(&config.pg_dir())?;
        cluster.start(Durability::Full)?;
        println!(
            "postgres   private cluster in {} (unix socket only)",
            config.pg_dir().display()
        );
        Some(cluster)
    } else {
        None
    };
    let result = supervise(&config, &binaries).await;
    if let Some(cluster) = cluster {
        match cluster.stop() {
            Ok(()) => println!("postgres   stopped"),
            Err(e) => eprintln!("tinydc: stopping PostgreSQL: {e:#}"),
        }
    }
    result
}

/// The daemon binaries, next to this `tinydc` binary.
pub fn find_daemons() -> anyhow::Result<Vec<PathBuf>> {
    let exe = std::env::current_exe().context("locating the tinydc binary")?;
    let dir = exe.parent().context("the tinydc binary has no folder")?;
    DAEMONS
        .iter()
        .map(|name| {
            let path = dir.join(name);
            if path.exists() {
                Ok(path)
            } else {
                bail!(
                    "{name} not found next to {} (build the whole workspace: cargo build --release)",
                    exe.display()
                )
            }
        })
        .collect()
}

fn print_listeners(config: &Config) {
    let show = |what: &str, addr: Option<std::net::SocketAddr>| {
        if let Some(a) = addr {
            println!("{what:<10} {a}");
        }
    };
    show("smtp (MX)", config.smtp.mx_listen);
    show("submission", config.smtp.submission_listen);
    show("smtps", config.smtp.submissions_listen);
    show("imap", config.imap.listen);
    show("imaps", config.imap.tls_listen);
    if let Some(a) = config.dav.https_listen {
        println!("webdav     https://{}:{}/", config.server.hostname, a.port());
    }
    show("webdav", config.dav.http_listen);
}

async fn supervise(config: &Config, binaries: &[PathBuf]) -> anyhow::Result<()> {
    // Schema first, so three daemons do not race to migrate an empty database.
    let db = shared::db::connect(config, Duration::from_secs(30)).await?;
    db.close().await;

    let stop = CancellationToken::new();
    shared::net::cancel_on_signals(stop.clone());
    print_listeners(config);
    println!("tinydc is up; Ctrl-C stops everything");

    let mut tasks = JoinSet::new();
    for binary in binaries {
        tasks.spawn(keep_running(binary.clone(), config.data_dir.clone(), stop.clone()));
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            eprintln!("tinydc: supervisor task failed: {e}");
        }
    }
    Ok(())
}

fn spawn(binary: &Path, data: &Path) -> std::io::Result<Child> {
    Command::new(binary)
        .arg("--data")
        .arg(data)
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
}

/// Run one daemon until `stop`, restarting it with a growing delay when it dies.
async fn keep_running(binary: PathBuf, data: PathBuf, stop: CancellationToken) {
    let name = binary
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let mut delay = Duration::from_secs(1);
    loop {
        let started = Instant::now();
        let mut child = match spawn(&binary, &data) {
            Ok(child) => child,
            Err(e) => {
                eprintln!("tinydc: cannot start {name}: {e}");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        let status = tokio::select! {
            _ = stop.cancelled() => {
                terminate(&name, &mut child).await;
                return;
            }
            status = child.wait() => status,
        };
        if stop.is_cancelled() {
            return;
        }
        if started.elapsed() > Duration::from_secs(60) {
            delay = Duration::from_secs(1);
        }
        eprintln!(
            "tinydc: {name} exited ({}); restarting in {} s",
            describe(status),
            delay.as_secs()
        );
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

fn describe(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => e.to_string(),
    }
}

/// SIGTERM, then SIGKILL after the grace period.
async fn terminate(name: &str, child: &mut Child) {
    if let Some(pid) = child.id() {
        send_sigterm(pid);
    }
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(status) => println!("{name:<10} stopped ({})", describe(status)),
        Err(_) => {
            eprintln!("tinydc: {name} did not stop in {} s; killing it", STOP_GRACE.as_secs());
            let _ = child.kill().await;
        }
    }
}

#[allow(unsafe_code)] // kill(2): std offers only SIGKILL for children.
fn send_sigterm(pid: u32) {
    // SAFETY: kill has no memory-safety preconditions; pid is our own child's.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
}
