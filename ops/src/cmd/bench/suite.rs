//! A throwaway install for the daemon benchmarks: a data directory in /tmp with a private
//! PostgreSQL cluster at full durability, a self-signed certificate, a config with free
//! 127.0.0.1 ports and the per-IP / per-user rate limits raised (the defaults would throttle a
//! benchmark), three users, and the real daemons started as `tinydc up` starts them (this
//! binary under each daemon's name).

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use shared::Config;
use shared::config::CONFIG_FILE;
use shared::pg::{Durability, PrivateCluster};
use shared::process::{Signal, send_signal};
use tokio::process::{Child, Command};

use crate::cmd::up::{DAEMONS, daemon_command, multi_call_binary};

pub const DOMAIN: &str = "example.test";
pub const PASSWORD: &str = "bench password 1";
/// Receives the SMTP deliveries.
pub const SMTP_USER: &str = "alice@example.test";
/// Appends and downloads headers over IMAP.
pub const IMAP_USER: &str = "bob@example.test";
/// Owns the WebDAV files.
pub const DAV_USER: &str = "carol@example.test";

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(15);

pub struct Daemon {
    pub name: &'static str,
    pub pid: u32,
    child: Child,
}

pub struct Suite {
    /// `None` once kept (`--keep`).
    dir: Option<tempfile::TempDir>,
    pub data: PathBuf,
    pub config: Config,
    cluster: PrivateCluster,
    pub daemons: Vec<Daemon>,
    /// `tinydc up` supervising the daemons and PostgreSQL, when started with
    /// [`Suite::start_supervised`] (then `daemons` is empty: up starts them).
    up: Option<Child>,
}

impl Suite {
    pub async fn start(keep: bool) -> anyhow::Result<Suite> {
        Suite::start_with(keep, &[], false).await
    }

    /// [`Suite::start`] with `users` more users (same password).
    pub async fn start_with_users(keep: bool, users: &[String]) -> anyhow::Result<Suite> {
        Suite::start_with(keep, users, false).await
    }

    /// The throwaway install run by the real `tinydc up` (this binary), with `users` more users
    /// (same password): the soak kills its daemons and PostgreSQL and up must bring them back.
    pub async fn start_supervised(keep: bool, users: &[String]) -> anyhow::Result<Suite> {
        Suite::start_with(keep, users, true).await
    }

    async fn start_with(keep: bool, users: &[String], supervised: bool) -> anyhow::Result<Suite> {
        let exe = multi_call_binary()?;
        let dir = tempfile::Builder::new().prefix("tinydc-bench-").tempdir_in("/tmp")?;
        {
            // The private cluster runs as the postgres user when we are root: it must enter here.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        }
        let data = dir.path().to_path_buf();
        std::fs::write(data.join(CONFIG_FILE), config_text()?)?;
        let config = Config::load(&data)?;
        for d in [config.blobs_dir(), config.files_dir(), data.join("logs")] {
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        shared::tls::generate_self_signed(&["localhost".to_string()], &config.tls.cert_file, &config.tls.key_file)?;
        let cluster = PrivateCluster::new(&config.pg_dir())?;
        cluster.init(Durability::Full)?;
        let mut suite = Suite {
            dir: Some(dir),
            data,
            config,
            cluster,
            daemons: Vec::new(),
            up: None,
        };
        if keep {
            let dir = suite.dir.take().expect("just made");
            let path = dir.keep();
            eprintln!("bench: keeping {}", path.display());
        }
        if let Err(e) = suite.populate_and_spawn(&exe, users, supervised).await {
            let _ = suite.stop().await;
            return Err(e);
        }
        Ok(suite)
    }

    async fn populate_and_spawn(
        &mut self,
        exe: &std::path::Path,
        users: &[String],
        supervised: bool,
    ) -> anyhow::Result<()> {
        // Schema and users first, so three daemons do not race to migrate an empty database.
        let db = shared::db::connect(&self.config, Duration::from_secs(30)).await?;
        shared::accounts::add_domain(&db, DOMAIN).await?;
        for user in [SMTP_USER, IMAP_USER, DAV_USER]
            .into_iter()
            .chain(users.iter().map(String::as_str))
        {
            shared::accounts::add_user(&db, user, PASSWORD, None).await?;
        }
        db.close().await;

        if supervised {
            // up adopts the running cluster and starts the daemons; their logs go to up's.
            let child = self
                .spawn_logged(Command::new(exe), &["up"], "up")
                .context("starting tinydc up")?;
            self.up = Some(child);
        }
        for name in DAEMONS.iter().filter(|_| !supervised) {
            let child = self
                .spawn_logged(daemon_command(exe, name), &[], name)
                .with_context(|| format!("starting {name} from {}", exe.display()))?;
            let pid = child.id().context("the daemon has no pid")?;
            self.daemons.push(Daemon { name, pid, child });
        }
        let c = &self.config;
        let ports = [
            ("tinydc-smtpd", c.smtp.mx_listen),
            ("tinydc-imapd", c.imap.listen),
            ("tinydc-davd", c.dav.https_listen),
        ];
        let started = Instant::now();
        for (name, addr) in ports {
            let addr = addr.context("a listener is off in the bench config")?;
            loop {
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    break;
                }
                let mut exited = None;
                for d in &mut self.daemons {
                    if let Some(status) = d.child.try_wait()? {
                        exited = Some((d.name, status));
                    }
                }
                if let Some(up) = &mut self.up
                    && let Some(status) = up.try_wait()?
                {
                    exited = Some(("up", status));
                }
                if let Some((name, status)) = exited {
                    bail!("{name} exited ({status}) while starting:\n{}", self.log_tail(name));
                }
                if started.elapsed() > START_TIMEOUT {
                    bail!("{name} does not listen on {addr}:\n{}", self.log_tail(name));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Start `command --data DATA args…` in its own process group, its output in the log
    /// `log_name`, killed if the suite is dropped.
    fn spawn_logged(&self, mut command: Command, args: &[&str], log_name: &str) -> anyhow::Result<Child> {
        let log = std::fs::File::create(self.log_path(log_name))?;
        Ok(command
            .arg("--data")
            .arg(&self.data)
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?)
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.data.join("logs").join(format!("{name}.log"))
    }

    /// The last lines a daemon logged, for error messages.
    pub fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.log_path(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Log lines at WARN or ERROR a daemon wrote (a daemon that misbehaves under load says so).
    pub fn complaints(&self) -> Vec<String> {
        let mut out = Vec::new();
        for name in DAEMONS.into_iter().chain(["up"]) {
            let text = std::fs::read_to_string(self.log_path(name)).unwrap_or_default();
            for line in text.lines().map(strip_ansi) {
                if line.contains(" WARN ") || line.contains(" ERROR ") {
                    out.push(format!("{name}: {line}"));
                }
            }
        }
        out
    }

    /// The pid of a running daemon (`tinydc-imapd`): the one up runs now, or ours.
    pub fn daemon_pid(&self, name: &str) -> Option<u32> {
        if self.up.is_some() {
            shared::process::find_by_data_dir(name, &self.data).into_iter().next()
        } else {
            self.daemons.iter().find(|d| d.name == name).map(|d| d.pid)
        }
    }

    /// The log `tinydc up` wrote (empty unless supervised).
    pub fn up_log(&self) -> String {
        std::fs::read_to_string(self.log_path("up")).unwrap_or_default()
    }

    /// The private PostgreSQL's postmaster pid.
    pub fn postgres_pid(&self) -> Option<u32> {
        self.cluster.running_pid()
    }

    pub fn addr_smtp(&self) -> SocketAddr {
        self.config.smtp.mx_listen.expect("set in the bench config")
    }

    pub fn addr_imap(&self) -> SocketAddr {
        self.config.imap.listen.expect("set in the bench config")
    }

    pub fn addr_dav(&self) -> SocketAddr {
        self.config.dav.https_listen.expect("set in the bench config")
    }

    /// davd's plain HTTP listener on loopback (what a reverse proxy talks to).
    pub fn addr_dav_http(&self) -> SocketAddr {
        self.config.dav.http_listen.expect("set in the bench config")
    }

    /// SIGTERM every daemon (SIGKILL after a grace period), stop PostgreSQL, remove the directory.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        if let Some(mut up) = self.up.take() {
            // up stops its daemons (15 s grace each, in parallel), then PostgreSQL.
            if let Some(pid) = up.id() {
                let _ = send_signal(pid, Signal::Term);
            }
            match tokio::time::timeout(STOP_GRACE * 3, up.wait()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => problems.push(format!("tinydc up exited with {status} after SIGTERM")),
                Ok(Err(e)) => problems.push(format!("tinydc up: {e}")),
                Err(_) => {
                    let _ = up.kill().await;
                    problems.push("tinydc up did not stop in time".into());
                }
            }
        }
        for d in &self.daemons {
            let _ = send_signal(d.pid, Signal::Term);
        }
        for d in &mut self.daemons {
            match tokio::time::timeout(STOP_GRACE, d.child.wait()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => problems.push(format!("{} exited with {status} after SIGTERM", d.name)),
                Ok(Err(e)) => problems.push(format!("{}: {e}", d.name)),
                Err(_) => {
                    let _ = d.child.kill().await;
                    problems.push(format!(
                        "{} did not stop within {} s of SIGTERM",
                        d.name,
                        STOP_GRACE.as_secs()
                    ));
                }
            }
        }
        if let Err(e) = self.cluster.stop() {
            problems.push(format!("stopping PostgreSQL: {e:#}"));
        }
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            if let Err(e) = dir.close() {
                problems.push(format!("removing {}: {e}", path.display()));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("{}", problems.join("; "))
        }
    }
}

/// A log line without terminal colour codes (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn config_text() -> anyhow::Result<String> {
    // Free ports, the kernel's picks: every probe stays open until all are picked, so no two are the same.
    let probes: Vec<TcpListener> = (0..5)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let ports: Vec<u16> = probes
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?;
    drop(probes);
    Ok(format!(
        r#"[server]
hostname = "localhost"
domain = "{DOMAIN}"

[smtp]
mx_listen = "127.0.0.1:{mx}"
submission_listen = "127.0.0.1:{sub}"
submissions_listen = ""
max_connections = 1000
max_connections_per_address = 1000
connections_per_ip_per_minute = 1000000
messages_per_user_per_hour = 1000000

[imap]
listen = "127.0.0.1:{imap}"
tls_listen = ""
max_connections_per_address = 1000

[dav]
https_listen = "127.0.0.1:{dav}"
http_listen = "127.0.0.1:{dav_http}"
max_connections_per_address = 1000
"#,
        mx = ports[0],
        sub = ports[1],
        imap = ports[2],
        dav = ports[3],
        dav_http = ports[4],
    ))
}
