//! `tinydc up`: run the whole suite in the foreground.
//!
//! Takes the data directory's single-instance lock (`DATA/tinydc.lock`, held for our lifetime),
//! stops daemons a killed `up` left behind, starts the private PostgreSQL (or adopts the one a
//! killed `up` left running), brings the schema up to date, and starts the three daemons as
//! child processes (each in its own process group, so a terminal's Ctrl-C reaches only us). The
//! daemons are this very binary started under their names (see [`daemon_called_as`]), so the
//! four processes share one copy of the machine code in memory (issue #12). It
//! restarts a daemon that dies, and restarts PostgreSQL when its postmaster dies (crash
//! recovery), logging how long that took. Each daemon's standard input is a pipe whose write end
//! only we hold: if we are SIGKILLed, the daemons read end of file and shut down by themselves.
//! On Ctrl-C or SIGTERM it stops the daemons, then PostgreSQL, leaving no process behind.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use shared::Config;
use shared::config::CONFIG_FILE;
use shared::pg::{Durability, PrivateCluster};
use shared::process::{DataLock, SUPERVISOR_ENV, Signal, alive, find_by_data_dir, send_signal};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The daemons, by the name they run under (argv[0], and the links in /usr/bin).
pub const DAEMONS: [&str; 3] = ["tinydc-smtpd", "tinydc-imapd", "tinydc-davd"];
/// How long daemons get to finish after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How often the postmaster is checked for life.
const PG_WATCH_INTERVAL: Duration = Duration::from_millis(200);

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
    // Absolute, so that the daemons' command lines name it exactly (a later `up` finds them by it).
    let data = std::path::absolute(data)?;
    let _lock = DataLock::acquire(&data)?;
    let config = Config::load(&data)?;
    let exe = multi_call_binary()?;
    stop_leftover_daemons(&data).await;

    let cluster = if config.uses_private_cluster() {
        let cluster = PrivateCluster::new(&config.pg_dir())?;
        match cluster.running_pid() {
            // Left running by an `up` or admin command that was killed: the lock is ours now, so
            // nobody else runs it; use it rather than start a second one beside it.
            Some(pid) => println!("postgres   adopting the private cluster left running (pid {pid})"),
            None => {
                cluster.start(Durability::Full)?;
            }
        }
        println!(
            "postgres   private cluster in {} (unix socket only)",
            config.pg_dir().display()
        );
        Some(cluster)
    } else {
        None
    };
    let result = supervise(&config, &data, &exe, cluster.clone()).await;
    if let Some(cluster) = cluster {
        match tokio::task::spawn_blocking(move || cluster.stop()).await? {
            Ok(()) => println!("postgres   stopped"),
            Err(e) => eprintln!("tinydc: stopping PostgreSQL: {e:#}"),
        }
    }
    result
}

/// Daemons of this data directory that a killed `up` left behind (they exit by themselves once
/// they notice, but may still hold the ports) or that someone started by hand: SIGTERM, and
/// SIGKILL after the grace period, so our daemons never loop on "Address already in use".
async fn stop_leftover_daemons(data: &Path) {
    let mut leftovers = Vec::new();
    for name in DAEMONS {
        for pid in find_by_data_dir(name, data) {
            println!("{name:<10} stopping pid {pid}, left running on this data directory");
            let _ = send_signal(pid, Signal::Term);
            leftovers.push(pid);
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    while leftovers.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for pid in leftovers.into_iter().filter(|&p| alive(p)) {
        eprintln!(
            "tinydc: pid {pid} did not stop in {} s; killing it",
            STOP_GRACE.as_secs()
        );
        let _ = send_signal(pid, Signal::Kill);
    }
}

/// The binary the daemons run from: this one. `tinydc` is a multi-call binary: started under a
/// daemon's name (a link named `tinydc-imapd`, or argv[0] set by whoever starts it) it is that
/// daemon. One executable for all four processes means one copy of its code pages in memory,
/// shared between them (PSS divides it), where three separate binaries share none.
///
/// On Linux that is `/proc/self/exe`, which the kernel resolves in the starting process to the
/// very file it runs, even after a package upgrade replaced `/usr/bin/tinydc`: a daemon `up`
/// restarts is always the same version as `up` and its siblings.
pub fn multi_call_binary() -> anyhow::Result<PathBuf> {
    let own = PathBuf::from("/proc/self/exe");
    if own.exists() {
        return Ok(own);
    }
    std::env::current_exe().context("locating the tinydc binary")
}

/// The daemon this process was started as: argv[0]'s file name, when it is one of [`DAEMONS`]
/// (`/usr/bin/tinydc-smtpd`, a link to `tinydc`, or `up`'s children, started with that argv[0]).
pub fn daemon_called_as() -> Option<&'static str> {
    let arg0 = std::env::args_os().next()?;
    let name = Path::new(&arg0).file_name()?.to_str()?;
    DAEMONS.into_iter().find(|daemon| *daemon == name)
}

/// A command that starts daemon `name` from the multi-call binary `exe`: argv[0] is the daemon's
/// name, which selects it and is what `ps` and [`find_by_data_dir`] see.
pub fn daemon_command(exe: &Path, name: &str) -> Command {
    let mut command = Command::new(exe);
    command.arg0(name);
    command
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
        println!("webdav     {}", client_url("https", &config.server.hostname, a));
    }
    if let Some(a) = config.dav.http_listen {
        println!("webdav     {}", client_url("http", &config.server.hostname, a));
    }
    if let Some(a) = config
        .tls
        .acme_http_listen
        .filter(|_| !config.tls.acme_directory.is_empty())
    {
        println!("acme http  {a} (HTTP-01 for the ACME CA, redirects to https)");
    }
}

/// The URL a client should use for a listener: the host name when it listens on every address
/// (0.0.0.0 or ::), otherwise the one address it is bound to (a client cannot reach it by the
/// host name, which resolves elsewhere); the port left out when it is the scheme's default.
pub fn client_url(scheme: &str, hostname: &str, addr: std::net::SocketAddr) -> String {
    let host = match addr.ip() {
        ip if ip.is_unspecified() => hostname.to_string(),
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
    };
    let default = if scheme == "https" { 443 } else { 80 };
    if addr.port() == default {
        format!("{scheme}://{host}/")
    } else {
        format!("{scheme}://{host}:{}/", addr.port())
    }
}

async fn supervise(config: &Config, data: &Path, exe: &Path, cluster: Option<PrivateCluster>) -> anyhow::Result<()> {
    // Schema first, so three daemons do not race to migrate an empty database.
    let db = shared::db::connect(config, Duration::from_secs(30)).await?;
    db.close().await;

    let stop = CancellationToken::new();
    shared::net::cancel_on_signals(stop.clone());
    print_listeners(config);
    println!("tinydc is up; Ctrl-C stops everything");

    let mut tasks = JoinSet::new();
    for name in DAEMONS {
        tasks.spawn(keep_running(exe.to_path_buf(), name, data.to_path_buf(), stop.clone()));
    }
    if let Some(cluster) = cluster {
        tasks.spawn(watch_postgres(cluster, stop.clone()));
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            eprintln!("tinydc: supervisor task failed: {e}");
        }
    }
    Ok(())
}

/// Restart the private PostgreSQL whenever its postmaster dies, until `stop`. PostgreSQL runs
/// crash recovery from its WAL on start, so everything committed is back; the daemons' pools
/// (sqlx tests a connection before handing it out) and event listeners reconnect by themselves.
async fn watch_postgres(cluster: PrivateCluster, stop: CancellationToken) {
    loop {
        // Wait for the postmaster to go away (pg_ctl started it, so it is not our child to wait for).
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(PG_WATCH_INTERVAL) => {}
            }
            if cluster.running_pid().is_none() {
                break;
            }
        }
        let died = Instant::now();
        eprintln!("tinydc: PostgreSQL's postmaster died; restarting it (crash recovery)");
        let mut delay = Duration::from_millis(500);
        loop {
            let c = cluster.clone();
            match tokio::task::spawn_blocking(move || c.start(Durability::Full)).await {
                Ok(Ok(_)) => break,
                // Most often: backends of the dead postmaster still hold its shared memory.
                Ok(Err(e)) => eprintln!(
                    "tinydc: restarting PostgreSQL: {e:#}; next try in {} ms",
                    delay.as_millis()
                ),
                Err(e) => eprintln!("tinydc: restarting PostgreSQL: {e}"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            // Lingering backends go within seconds: retry quickly at first, then back off.
            if died.elapsed() > Duration::from_secs(30) {
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
        println!(
            "postgres   restarted: serving again {:.1} s after its postmaster died (pid {})",
            died.elapsed().as_secs_f64(),
            cluster.running_pid().map_or_else(|| "?".into(), |p| p.to_string())
        );
    }
}

/// Start a daemon with a supervisor pipe as its standard input: we keep the write end (std
/// makes our end close-on-exec, so no other child inherits it) and never write to it.
fn spawn(exe: &Path, name: &str, data: &Path) -> std::io::Result<Child> {
    daemon_command(exe, name)
        .arg("--data")
        .arg(data)
        .env(SUPERVISOR_ENV, "stdin")
        .stdin(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
}

/// Run one daemon until `stop`, restarting it with a growing delay when it dies.
async fn keep_running(exe: PathBuf, name: &'static str, data: PathBuf, stop: CancellationToken) {
    let mut delay = Duration::from_secs(1);
    loop {
        let started = Instant::now();
        let mut child = match spawn(&exe, name, &data) {
            Ok(child) => child,
            Err(e) => {
                eprintln!("tinydc: cannot start {name}: {e}");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        // Hold the pipe's write end ourselves: tokio's `wait` closes a child's stdin first,
        // which the daemon would take for our death.
        let _supervisor_pipe = child.stdin.take();
        let status = tokio::select! {
            _ = stop.cancelled() => {
                terminate(name, &mut child).await;
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
        let _ = send_signal(pid, Signal::Term);
    }
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(status) => println!("{name:<10} stopped ({})", describe(status)),
        Err(_) => {
            eprintln!("tinydc: {name} did not stop in {} s; killing it", STOP_GRACE.as_secs());
            let _ = child.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::client_url;

    #[test]
    fn the_printed_url_is_one_a_client_can_reach() {
        let url = |addr: &str| client_url("https", "mail.example.org", addr.parse().unwrap());
        assert_eq!(url("0.0.0.0:443"), "https://mail.example.org/");
        assert_eq!(url("[::]:10443"), "https://mail.example.org:10443/");
        assert_eq!(url("127.0.0.1:10443"), "https://127.0.0.1:10443/");
        assert_eq!(url("192.0.2.7:443"), "https://192.0.2.7/");
        assert_eq!(url("[2001:db8::1]:8443"), "https://[2001:db8::1]:8443/");
        assert_eq!(
            client_url("http", "mail.example.org", "127.0.0.1:8080".parse().unwrap()),
            "http://127.0.0.1:8080/"
        );
    }
}
