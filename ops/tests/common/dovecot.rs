//! A real Dovecot IMAP server on loopback for tests (Debian's `dovecot-imapd`, installed by
//! scripts/install-test-deps): a throwaway config, passwd-file users and Maildir storage in a
//! temp dir, plain IMAP and IMAPS (a self-signed certificate for 127.0.0.1 and localhost) on free
//! ports. Stopped (SIGTERM, then waited for) when dropped.
//!
//! Dovecot refuses to run its login processes as root and refuses uid 0 for mail. As root (CI)
//! the master runs as root, login as `dovenull`, auth as `dovecot`, and the mail is owned by the
//! `dovecot` user (the package makes both); as any other user everything runs as that user.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Dovecot {
    child: Child,
    dir: tempfile::TempDir,
    /// Plain IMAP (STARTTLS offered).
    pub imap_port: u16,
    /// IMAP over TLS.
    pub imaps_port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The dovecot binary: on PATH, else /usr/sbin (not on a normal user's PATH).
fn dovecot_binary() -> String {
    for candidate in ["dovecot", "/usr/sbin/dovecot"] {
        if Command::new(candidate)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return candidate.to_string();
        }
    }
    panic!(
        "this test needs Dovecot, which is not installed (Debian package `dovecot-imapd`: \
         apt-get install dovecot-imapd); scripts/install-test-deps installs every test prerequisite"
    );
}

/// uid and gid of a system user, from /etc/passwd.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&name) && fields.len() > 3)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
            .flatten()
    })
}

fn user_name(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() > 3 && fields[2] == uid.to_string()).then(|| fields[0].to_string())
        })
        .unwrap_or_else(|| panic!("uid {uid} has no name in /etc/passwd"))
}

impl Dovecot {
    /// Start Dovecot with these users (name, password) and no special folders declared.
    pub fn start(users: &[(&str, &str)]) -> Dovecot {
        Dovecot::start_with(users, &[])
    }

    /// Start Dovecot with these users and special-use folders (name, RFC 6154 attribute such as
    /// `\Sent`, created on first use) that LIST reports.
    pub fn start_with(users: &[(&str, &str)], special_use: &[(&str, &str)]) -> Dovecot {
        let binary = dovecot_binary();
        let dir = tempfile::Builder::new()
            .prefix("tinydc-dovecot-")
            .tempdir_in("/tmp")
            .unwrap();
        let root = dir.path();
        use std::os::unix::fs::PermissionsExt;
        // The login and auth processes run as other users when we are root: they must get in.
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        for sub in ["run", "state", "mail"] {
            std::fs::create_dir(root.join(sub)).unwrap();
        }
        // Our uid: the owner of what we just made.
        let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(root).unwrap());
        let (login_user, internal_user, mail_user) = if uid == 0 {
            for user in ["dovenull", "dovecot"] {
                assert!(
                    user_ids(user).is_some(),
                    "the `{user}` system user is missing: reinstall dovecot-core"
                );
            }
            ("dovenull".to_string(), "dovecot".to_string(), "dovecot".to_string())
        } else {
            let me = user_name(uid);
            (me.clone(), me.clone(), me)
        };
        let (mail_uid, mail_gid) = user_ids(&mail_user).unwrap();
        std::os::unix::fs::chown(root.join("mail"), Some(mail_uid), Some(mail_gid)).unwrap();

        let passwd: String = users.iter().map(|(u, p)| format!("{u}:{{PLAIN}}{p}\n")).collect();
        std::fs::write(root.join("passwd"), passwd).unwrap();
        std::fs::set_permissions(root.join("passwd"), std::fs::Permissions::from_mode(0o644)).unwrap();

        // A self-signed certificate clients verify with --ca-file.
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        std::fs::write(root.join("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(root.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
        std::fs::set_permissions(root.join("key.pem"), std::fs::Permissions::from_mode(0o644)).unwrap();

        let imap_port = free_port();
        let imaps_port = free_port();
        let r = root.display();
        let mailboxes: String = special_use
            .iter()
            .map(|(name, attr)| format!("  mailbox \"{name}\" {{\n    special_use = {attr}\n  }}\n"))
            .collect();
        let instance = root.file_name().unwrap().to_string_lossy();
        let group = if uid == 0 {
            "dovecot".to_string()
        } else {
            internal_user.clone()
        };
        let config = format!(
            "instance_name = {instance}\n\
             base_dir = {r}/run\n\
             state_dir = {r}/state\n\
             log_path = {r}/dovecot.log\n\
             protocols = imap\n\
             listen = 127.0.0.1\n\
             ssl = yes\n\
             ssl_cert = <{r}/cert.pem\n\
             ssl_key = <{r}/key.pem\n\
             disable_plaintext_auth = no\n\
             auth_mechanisms = plain login\n\
             default_login_user = {login_user}\n\
             default_internal_user = {internal_user}\n\
             default_internal_group = {group}\n\
             first_valid_uid = 1\n\
             mail_location = maildir:{r}/mail/%u\n\
             passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {r}/passwd\n}}\n\
             userdb {{\n  driver = static\n  args = uid={mail_uid} gid={mail_gid} home={r}/mail/%u\n}}\n\
             service imap-login {{\n  chroot =\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {imap_port}\n  }}\n  \
             inet_listener imaps {{\n    address = 127.0.0.1\n    port = {imaps_port}\n    ssl = yes\n  }}\n}}\n\
             service anvil {{\n  chroot =\n}}\n\
             namespace inbox {{\n  inbox = yes\n  separator = /\n{mailboxes}}}\n"
        );
        std::fs::write(root.join("dovecot.conf"), config).unwrap();
        let child = Command::new(&binary)
            .arg("-F")
            .arg("-c")
            .arg(root.join("dovecot.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut dovecot = Dovecot {
            child,
            dir,
            imap_port,
            imaps_port,
        };
        dovecot.wait_ready();
        dovecot
    }

    /// Wait until the plain listener greets.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("dovecot exited with {status}: {err}{}", self.log());
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.imap_port)) {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut greeting = [0u8; 64];
                if s.read(&mut greeting).is_ok_and(|n| greeting[..n].starts_with(b"* OK")) {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "dovecot did not come up: {}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The CA file that verifies the server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// A user's Maildir.
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.dir.path().join("mail").join(user)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Dovecot's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = shared::process::send_signal(self.child.id(), shared::process::Signal::Term);
            let deadline = Instant::now() + Duration::from_secs(10);
            while let Ok(None) = self.child.try_wait() {
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}
