//! The classic stack `tinydc bench all --compare` measures tinydc against: Debian's Dovecot
//! (IMAP, and LMTP for delivery), Postfix (SMTP, handing every message to Dovecot's LMTP, so
//! "delivered into the mailbox" means the same as for tinydc) and Apache 2.4 with mod_dav,
//! mod_dav_fs and Basic auth on a plain HTTP port. Each is started on free 127.0.0.1 ports with a
//! throwaway configuration in a temp dir, with the same users and password as tinydc's, and
//! stopped (and the dir removed) at the end, also after an error or Ctrl-C ([`ClassicStack::stop`],
//! and [`Drop`] as the last resort).
//!
//! They need root (Postfix and Dovecot change users for their processes); where a program is
//! missing or we are not root, its column says so instead of showing a number.
//! `scripts/install-bench-deps` installs them without leaving them running as services.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use shared::process::{Signal, send_signal};
use tokio::process::{Child, Command};

use super::memory::{descendants, pss_kib};

const DOVECOT: &str = "/usr/sbin/dovecot";
const POSTFIX: &str = "/usr/sbin/postfix";
const APACHE: &str = "/usr/sbin/apache2";
const APACHE_MODULES: &str = "/usr/lib/apache2/modules";
/// Dovecot's LMTP server (Debian's dovecot-lmtpd), which Postfix delivers into.
const DOVECOT_LMTP: &str = "/usr/lib/dovecot/lmtp";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Who serves what on the classic side; `Err(why)` when it is not there.
pub struct ClassicStack {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    /// Dovecot's IMAP listener.
    pub imap: Result<SocketAddr, String>,
    /// Postfix's SMTP listener (delivering into Dovecot).
    pub smtp: Result<SocketAddr, String>,
    /// Apache's plain HTTP listener with mod_dav.
    pub dav: Result<SocketAddr, String>,
    /// Where Apache keeps the files (to check a PUT landed whole).
    pub dav_root: PathBuf,
    dovecot: Option<Child>,
    apache: Option<Child>,
    /// Postfix daemonizes itself: `postfix stop` ends it; its master pid is in the queue dir.
    postfix_started: bool,
}

/// The users of both sides: the same addresses and password.
pub struct Users<'a> {
    pub mail: &'a [&'a str],
    pub dav: &'a str,
    pub password: &'a str,
    /// tinydc's own argon2id PHC hash of `password`: Dovecot verifies the very same hash (its
    /// ARGON2ID scheme is libsodium's, which reads PHC strings), so both pay the same per LOGIN.
    pub argon2_hash: &'a str,
}

impl ClassicStack {
    pub async fn start(users: &Users<'_>) -> anyhow::Result<ClassicStack> {
        let dir = tempfile::Builder::new().prefix("tinydc-peers-").tempdir_in("/tmp")?;
        {
            use std::os::unix::fs::PermissionsExt;
            // The peers' own users (dovecot, postfix, www-data) must enter it.
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        }
        let root = dir.path().to_path_buf();
        let root_user = rustix::process::geteuid().is_root();
        let missing = |program: &str| -> Option<String> {
            if !Path::new(program).exists() {
                Some("not installed".into())
            } else if !root_user {
                Some("not started (needs root)".into())
            } else {
                None
            }
        };
        let mut stack = ClassicStack {
            dir: Some(dir),
            dav_root: root.join("apache/files"),
            root,
            imap: Err(String::new()),
            smtp: Err(String::new()),
            dav: Err(String::new()),
            dovecot: None,
            apache: None,
            postfix_started: false,
        };
        let started = async {
            let mut lmtp = None;
            match missing(DOVECOT) {
                Some(why) => stack.imap = Err(why),
                None => {
                    let (imap, l) = stack.start_dovecot(users, Path::new(DOVECOT_LMTP).exists()).await?;
                    stack.imap = Ok(imap);
                    lmtp = l;
                }
            }
            match (missing(POSTFIX), lmtp) {
                (Some(why), _) => stack.smtp = Err(why),
                (None, None) => stack.smtp = Err("not started (needs Dovecot's LMTP: dovecot-lmtpd)".into()),
                (None, Some(lmtp)) => stack.smtp = Ok(stack.start_postfix(users, lmtp).await?),
            }
            let dav_missing = missing(APACHE).or_else(|| {
                (!Path::new(APACHE_MODULES).join("mod_dav_fs.so").exists()).then(|| "not installed (mod_dav_fs)".into())
            });
            match dav_missing {
                Some(why) => stack.dav = Err(why),
                None => stack.dav = Ok(stack.start_apache(users).await?),
            }
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = started {
            let _ = stack.stop().await;
            return Err(e);
        }
        Ok(stack)
    }

    /// Dovecot with IMAP, and LMTP when `with_lmtp`: its IMAP and LMTP listeners.
    async fn start_dovecot(
        &mut self,
        users: &Users<'_>,
        with_lmtp: bool,
    ) -> anyhow::Result<(SocketAddr, Option<SocketAddr>)> {
        let d = self.root.join("dovecot");
        let mail = d.join("mail");
        for dir in [&d, &mail, &d.join("run"), &d.join("state")] {
            std::fs::create_dir_all(dir)?;
        }
        chown(&mail, "dovecot")?;
        let [imap, lmtp] = free_ports::<2>()?;
        let mut passwd = String::new();
        for user in users.mail {
            writeln!(passwd, "{user}:{{ARGON2ID}}{}", users.argon2_hash)?;
        }
        std::fs::write(d.join("passwd"), passwd)?;
        let instance = format!("tinydc-bench-{}", std::process::id());
        let lmtp_conf = if with_lmtp {
            format!(
                "service lmtp {{\n  inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {lmtp}\n  }}\n}}\n\
                 protocol lmtp {{\n  postmaster_address = postmaster@localhost\n}}\n"
            )
        } else {
            String::new()
        };
        // Dovecot 2.3 defaults otherwise: fsync on save (mail_fsync = optimized), index files,
        // Maildir as Debian's package suggests.
        let conf = format!(
            "base_dir = {d}/run\n\
             state_dir = {d}/state\n\
             instance_name = {instance}\n\
             protocols = imap{protocol_lmtp}\n\
             listen = 127.0.0.1\n\
             ssl = no\n\
             disable_plaintext_auth = no\n\
             auth_mechanisms = plain login\n\
             log_path = {d}/dovecot.log\n\
             default_login_user = dovenull\n\
             default_internal_user = dovecot\n\
             first_valid_uid = 1\n\
             mail_location = maildir:{d}/mail/%u\n\
             passdb {{\n  driver = passwd-file\n  args = {d}/passwd\n}}\n\
             userdb {{\n  driver = static\n  args = uid=dovecot gid=dovecot home={d}/mail/%u\n}}\n\
             service imap-login {{\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {imap}\n  }}\n  \
               inet_listener imaps {{\n    port = 0\n  }}\n}}\n\
             {lmtp_conf}",
            d = d.display(),
            protocol_lmtp = if with_lmtp { " lmtp" } else { "" },
        );
        let conf_file = d.join("dovecot.conf");
        std::fs::write(&conf_file, conf)?;
        let log = std::fs::File::create(d.join("stdout.log"))?;
        let child = Command::new(DOVECOT)
            .arg("-F")
            .arg("-c")
            .arg(&conf_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .context("starting dovecot")?;
        self.dovecot = Some(child);
        let imap = SocketAddr::from(([127, 0, 0, 1], imap));
        let lmtp = with_lmtp.then(|| SocketAddr::from(([127, 0, 0, 1], lmtp)));
        for addr in std::iter::once(imap).chain(lmtp) {
            wait_listening(addr, "dovecot", &[d.join("dovecot.log"), d.join("stdout.log")]).await?;
        }
        Ok((imap, lmtp))
    }

    async fn start_postfix(&mut self, users: &Users<'_>, lmtp: SocketAddr) -> anyhow::Result<SocketAddr> {
        let p = self.root.join("postfix");
        std::fs::create_dir_all(p.join("data"))?;
        std::fs::create_dir_all(p.join("spool"))?;
        chown(&p.join("data"), "postfix")?;
        let [smtp] = free_ports::<1>()?;
        let mut mailboxes = String::new();
        for user in users.mail {
            writeln!(mailboxes, "{user} lmtp")?;
        }
        std::fs::write(p.join("mailboxes"), mailboxes)?;
        let domains: std::collections::BTreeSet<&str> = users
            .mail
            .iter()
            .filter_map(|u| u.split_once('@').map(|(_, d)| d))
            .collect();
        // Postfix 3 defaults otherwise: the queue file is fsynced before the 250 after DATA;
        // recipients are checked against the mailbox list as tinydc checks its users.
        let main = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {p}/spool\n\
             data_directory = {p}/data\n\
             mail_owner = postfix\n\
             setgid_group = postdrop\n\
             myhostname = localhost\n\
             mydomain = localhost\n\
             myorigin = localhost\n\
             mydestination =\n\
             inet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\n\
             mynetworks = 127.0.0.0/8\n\
             maillog_file = {p}/maillog\n\
             maillog_file_prefixes = {p}\n\
             virtual_mailbox_domains = {domains}\n\
             virtual_mailbox_maps = texthash:{p}/mailboxes\n\
             virtual_transport = lmtp:inet:{lmtp}\n\
             smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination\n\
             alias_maps =\n\
             alias_database =\n\
             biff = no\n",
            p = p.display(),
            domains = domains.into_iter().collect::<Vec<_>>().join(" "),
        );
        std::fs::write(p.join("main.cf"), main)?;
        let services = [
            "pickup    unix  n       -       n       60      1       pickup",
            "cleanup   unix  n       -       n       -       0       cleanup",
            "qmgr      unix  n       -       n       300     1       qmgr",
            "rewrite   unix  -       -       n       -       -       trivial-rewrite",
            "bounce    unix  -       -       n       -       0       bounce",
            "defer     unix  -       -       n       -       0       bounce",
            "trace     unix  -       -       n       -       0       bounce",
            "verify    unix  -       -       n       -       1       verify",
            "flush     unix  n       -       n       1000?   0       flush",
            "proxymap  unix  -       -       n       -       -       proxymap",
            "smtp      unix  -       -       n       -       -       smtp",
            "showq     unix  n       -       n       -       -       showq",
            "error     unix  -       -       n       -       -       error",
            "retry     unix  -       -       n       -       -       error",
            "discard   unix  -       -       n       -       -       discard",
            "lmtp      unix  -       -       n       -       -       lmtp",
            "anvil     unix  -       -       n       -       1       anvil",
            "scache    unix  -       -       n       -       1       scache",
            "postlog   unix-dgram n  -       n       -       1       postlogd",
        ];
        let master = format!("127.0.0.1:{smtp} inet n - n - - smtpd\n{}\n", services.join("\n"));
        std::fs::write(p.join("master.cf"), master)?;
        // `check` makes the queue's folders with their owners; `start` daemonizes the master.
        postfix_command(&p, "check").await?;
        self.postfix_started = true;
        postfix_command(&p, "start").await?;
        let addr = SocketAddr::from(([127, 0, 0, 1], smtp));
        wait_listening(addr, "postfix", &[p.join("maillog")]).await?;
        Ok(addr)
    }

    async fn start_apache(&mut self, users: &Users<'_>) -> anyhow::Result<SocketAddr> {
        let a = self.root.join("apache");
        for dir in ["files", "lock", "run"] {
            std::fs::create_dir_all(a.join(dir))?;
        }
        chown(&a.join("files"), "www-data")?;
        chown(&a.join("lock"), "www-data")?;
        let [port] = free_ports::<1>()?;
        // Basic auth from an htpasswd file with bcrypt (htpasswd -B, as Apache's documentation
        // recommends), verified once per user and then cached (mod_authn_socache), as tinydc
        // verifies once per connection: neither side pays the password hash per request.
        let htpasswd = Command::new("htpasswd")
            .args(["-nbB", users.dav, users.password])
            .stdin(Stdio::null())
            .output()
            .await
            .context("running htpasswd (apache2-utils)")?;
        if !htpasswd.status.success() {
            bail!("htpasswd failed: {}", String::from_utf8_lossy(&htpasswd.stderr));
        }
        std::fs::write(a.join("htpasswd"), &htpasswd.stdout)?;
        let modules = [
            ("mpm_event_module", "mod_mpm_event.so"),
            ("authz_core_module", "mod_authz_core.so"),
            ("authz_user_module", "mod_authz_user.so"),
            ("authn_core_module", "mod_authn_core.so"),
            ("authn_file_module", "mod_authn_file.so"),
            ("authn_socache_module", "mod_authn_socache.so"),
            ("socache_shmcb_module", "mod_socache_shmcb.so"),
            ("auth_basic_module", "mod_auth_basic.so"),
            ("dav_module", "mod_dav.so"),
            ("dav_fs_module", "mod_dav_fs.so"),
            ("mime_module", "mod_mime.so"),
        ];
        let mut conf = String::new();
        for (name, file) in modules {
            writeln!(conf, "LoadModule {name} {APACHE_MODULES}/{file}")?;
        }
        write!(
            conf,
            "ServerRoot {a}\n\
             ServerName localhost\n\
             Listen 127.0.0.1:{port}\n\
             PidFile {a}/run/httpd.pid\n\
             Mutex file:{a}/run default\n\
             DefaultRuntimeDir {a}/run\n\
             ErrorLog {a}/error.log\n\
             LogLevel warn\n\
             User www-data\n\
             Group www-data\n\
             TypesConfig /etc/mime.types\n\
             EnableSendfile On\n\
             EnableMMAP On\n\
             KeepAlive On\n\
             MaxKeepAliveRequests 0\n\
             LimitRequestBody 0\n\
             DavLockDB {a}/lock/DavLock\n\
             AuthnCacheSOCache shmcb\n\
             DocumentRoot {a}/files\n\
             <Directory {a}/files>\n  \
               Dav On\n  \
               AuthType Basic\n  \
               AuthName \"tinydc bench\"\n  \
               AuthBasicProvider socache file\n  \
               AuthnCacheProvideFor file\n  \
               AuthUserFile {a}/htpasswd\n  \
               Require valid-user\n\
             </Directory>\n",
            a = a.display()
        )?;
        let conf_file = a.join("httpd.conf");
        std::fs::write(&conf_file, conf)?;
        let log = std::fs::File::create(a.join("stdout.log"))?;
        let child = Command::new(APACHE)
            .arg("-f")
            .arg(&conf_file)
            .arg("-DFOREGROUND")
            .env("APACHE_RUN_DIR", a.join("run"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .context("starting apache2")?;
        self.apache = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_listening(addr, "apache2", &[a.join("error.log"), a.join("stdout.log")]).await?;
        Ok(addr)
    }

    /// PSS in KiB of each running peer with all its processes: (name, KiB, processes).
    pub fn memory(&self) -> Vec<(&'static str, u64, usize)> {
        let mut out = Vec::new();
        let postfix_master = std::fs::read_to_string(self.root.join("postfix/spool/pid/master.pid"))
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok());
        let roots = [
            ("dovecot", self.dovecot.as_ref().and_then(Child::id)),
            ("postfix", postfix_master.filter(|_| self.postfix_started)),
            ("apache2", self.apache.as_ref().and_then(Child::id)),
        ];
        for (name, pid) in roots {
            if let Some(pid) = pid {
                let pids = descendants(pid);
                let kib = pids.iter().filter_map(|&p| pss_kib(p)).sum();
                out.push((name, kib, pids.len()));
            }
        }
        out
    }

    /// Stop every peer (SIGTERM to its process group, SIGKILL after a grace period; `postfix
    /// stop`) and remove the temp dir.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        if self.postfix_started {
            self.postfix_started = false;
            if let Err(e) = postfix_command(&self.root.join("postfix"), "stop").await {
                problems.push(format!("{e:#}"));
                let _ = postfix_command(&self.root.join("postfix"), "abort").await;
            }
        }
        for (name, child) in [("dovecot", self.dovecot.take()), ("apache2", self.apache.take())] {
            let Some(mut child) = child else { continue };
            let Some(pid) = child.id() else { continue };
            // The whole group: the master and the workers it forked.
            let _ = send_signal(pid, Signal::Term);
            match tokio::time::timeout(STOP_GRACE, child.wait()).await {
                Ok(_) => {}
                Err(_) => {
                    problems.push(format!("{name} did not stop within {} s", STOP_GRACE.as_secs()));
                    let _ = child.kill().await;
                }
            }
            kill_group(pid);
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
            bail!("stopping the classic stack: {}", problems.join("; "))
        }
    }
}

impl Drop for ClassicStack {
    /// The last resort when [`ClassicStack::stop`] did not run (a panic): nothing may be left running.
    fn drop(&mut self) {
        if self.postfix_started {
            let _ = std::process::Command::new(POSTFIX)
                .arg("-c")
                .arg(self.root.join("postfix"))
                .arg("abort")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        for child in [&self.dovecot, &self.apache].into_iter().flatten() {
            if let Some(pid) = child.id() {
                kill_group(pid);
            }
        }
    }
}

/// SIGKILL the process group `pgid` (the peers run in their own, see `process_group(0)`).
fn kill_group(pgid: u32) {
    if let Some(pid) = i32::try_from(pgid).ok().and_then(rustix::process::Pid::from_raw) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

async fn postfix_command(dir: &Path, what: &str) -> anyhow::Result<()> {
    let output = Command::new(POSTFIX)
        .arg("-c")
        .arg(dir)
        .arg(what)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running postfix {what}"))?;
    if !output.status.success() {
        let log = tail(&dir.join("maillog"));
        bail!(
            "postfix {what} failed ({}): {}\n{log}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn chown(path: &Path, user: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("chown")
        .arg(format!("{user}:"))
        .arg(path)
        .status()
        .context("running chown")?;
    if !status.success() {
        bail!("chown {user} {} failed (is the {user} user there?)", path.display());
    }
    Ok(())
}

/// `N` distinct free ports on 127.0.0.1, the kernel's picks.
fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let probes: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let mut ports = [0; N];
    for (port, probe) in ports.iter_mut().zip(&probes) {
        *port = probe.local_addr()?.port();
    }
    Ok(ports)
}

async fn wait_listening(addr: SocketAddr, name: &str, logs: &[PathBuf]) -> anyhow::Result<()> {
    let started = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if started.elapsed() > START_TIMEOUT {
            let tails: Vec<String> = logs.iter().map(|l| tail(l)).collect();
            bail!("{name} does not listen on {addr}:\n{}", tails.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}
