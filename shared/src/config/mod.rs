//! The one config file, `DATA/tinydc.toml`.
//!
//! Every field has a default, so a file may hold only what differs. Reading never stops at the
//! first problem: every bad value and every unknown key is collected, each named by its
//! `section.field`, and reported together (see [`ConfigError`]).

mod dav;
mod imap;
mod net;
mod reader;
mod smtp;

use std::path::{Path, PathBuf};

pub use dav::DavConfig;
pub use imap::ImapConfig;
pub use net::NetConfig;
pub use reader::Section;
pub use smtp::{DNS_FALLBACKS, SmarthostConfig, SmtpConfig};

/// Default of `server.min_free_space`: eight 16 MiB WAL segments.
pub const DEFAULT_MIN_FREE_SPACE: u64 = 128 << 20;

/// The name of the config file inside the data directory.
pub const CONFIG_FILE: &str = "tinydc.toml";

/// Everything a tinydc process reads from `DATA/tinydc.toml`.
#[derive(Debug, Clone)]
pub struct Config {
    /// The data directory: the folder that holds `tinydc.toml` (not a key in the file).
    pub data_dir: PathBuf,
    /// `[server]`: who this server is.
    pub server: ServerConfig,
    /// `[database]`: where the metadata lives.
    pub database: DatabaseConfig,
    /// `[tls]`: the certificate every listener presents.
    pub tls: TlsConfig,
    /// `[auth]`: login rules shared by the three daemons.
    pub auth: AuthConfig,
    /// `[smtp]`: tinydc-smtpd.
    pub smtp: SmtpConfig,
    /// `[imap]`: tinydc-imapd.
    pub imap: ImapConfig,
    /// `[dav]`: tinydc-davd.
    pub dav: DavConfig,
    /// `[net]`: connection timeouts shared by the three daemons.
    pub net: NetConfig,
}

/// `[server]`
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The host name this server answers as (SMTP greeting, certificate name, autoconfig).
    pub hostname: String,
    /// The first mail domain, made at `tinydc init`; more are added with `tinydc domain add`.
    pub domain: String,
    /// Bytes that must stay free on the data directory's filesystem: writes (mail delivery,
    /// APPEND, uploads) that would go below are refused as "insufficient storage", so the
    /// private PostgreSQL in DATA/pg keeps room for its WAL.
    pub min_free_space: u64,
    /// The public IPv4 address the mail host is reached at (the router's, behind NAT), for
    /// `tinydc dns` and `tinydc doctor`. None: detected from the host's interfaces.
    pub public_ipv4: Option<std::net::Ipv4Addr>,
    /// The public IPv6 address of the mail host. None: detected from the host's interfaces.
    pub public_ipv6: Option<std::net::Ipv6Addr>,
}

/// `[database]`
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// A PostgreSQL URL (`postgres://user:pass@host/db`). Empty: tinydc runs its own private
    /// cluster in `DATA/pg`, reached over a unix socket, with no TCP port.
    pub url: Option<String>,
    /// Connections each process keeps open at most.
    pub max_connections: u32,
}

/// `[tls]`
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// PEM certificate chain (relative paths are inside the data directory).
    pub cert_file: PathBuf,
    /// PEM private key (relative paths are inside the data directory).
    /// Both files are read again when they change (`shared::tls::CertStore`).
    pub key_file: PathBuf,
    /// ACME directory URL (RFC 8555), e.g. Let's Encrypt's. Empty: ACME off, the files are
    /// managed by hand or by another tool (`shared::acme`).
    pub acme_directory: String,
    /// Contact e-mail address given to the ACME CA (empty: none).
    pub acme_contact: String,
    /// A PEM CA certificate to trust for the ACME server's own HTTPS (test CAs such as pebble).
    pub acme_ca_file: Option<PathBuf>,
    /// Seconds between checks of whether the certificate needs renewing.
    pub acme_check_secs: u64,
    /// A plain HTTP listener (port 80 in production) where davd answers ACME HTTP-01 challenges
    /// (RFC 8555 §8.3) and redirects everything else to HTTPS; used only with `acme_directory`
    /// set. None (empty): off, and ACME uses TLS-ALPN-01 on the HTTPS port.
    pub acme_http_listen: Option<std::net::SocketAddr>,
}

/// `[auth]`
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Allow passwords without TLS when the client connects from the loopback address
    /// (127.0.0.1 or ::1). Never applies to other addresses.
    pub allow_plaintext_on_loopback: bool,
    /// Failed logins one IP address may make per minute before it is throttled.
    pub failures_per_ip_per_minute: u32,
    /// Failed logins one account may receive per minute before addresses that have failed
    /// are throttled for it (an address with no failures can still log in).
    pub failures_per_account_per_minute: u32,
    /// Password checks (argon2id, 19 MiB each) one process runs at once.
    pub max_concurrent_checks: u32,
    /// Logins one process lets wait for a check; more are refused at once as busy.
    pub max_waiting_checks: u32,
    /// Seconds a successful password check is remembered (in memory, as a keyed hash) so the
    /// same password for the same stored hash skips argon2id; 0 turns this off.
    pub credential_cache_secs: u64,
}

/// Every problem found in a config file, each naming its `section.field`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file that was read.
    pub path: PathBuf,
    /// One line per problem.
    pub problems: Vec<String>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} has {} problem{}:",
            self.path.display(),
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" }
        )?;
        for problem in &self.problems {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Read `DATA/tinydc.toml`.
    pub fn load(data_dir: &Path) -> Result<Config, ConfigError> {
        let data_dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        let path = data_dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
            path: path.clone(),
            problems: vec![if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "not found: is {} a tinydc data directory? (create one with `tinydc init`)",
                    data_dir.display()
                )
            } else {
                format!("cannot be read: {e}")
            }],
        })?;
        Self::parse(&text, &data_dir).map_err(|problems| ConfigError { path, problems })
    }

    /// Parse config text for a data directory; `Err` lists every problem.
    pub fn parse(text: &str, data_dir: &Path) -> Result<Config, Vec<String>> {
        let root: toml::Table = toml::from_str(text).map_err(|e| vec![format!("not valid TOML: {e}")])?;
        let mut problems = Vec::new();
        let known = ["server", "database", "tls", "auth", "smtp", "imap", "dav", "net"];
        for key in root.keys() {
            if !known.contains(&key.as_str()) {
                problems.push(format!("{key}: unknown section (known: {})", known.join(", ")));
            }
        }

        let mut s = Section::new(&root, "server", &mut problems);
        let mut server = ServerConfig {
            hostname: s.string("hostname", "localhost"),
            domain: s.string("domain", "localhost"),
            min_free_space: s.size("min_free_space", DEFAULT_MIN_FREE_SPACE),
            public_ipv4: None,
            public_ipv6: None,
        };
        let (v4, v6) = (s.string("public_ipv4", ""), s.string("public_ipv6", ""));
        s.finish();
        if !v4.is_empty() {
            match v4.parse() {
                Ok(ip) => server.public_ipv4 = Some(ip),
                Err(_) => problems.push(format!("server.public_ipv4: {v4:?} is not an IPv4 address")),
            }
        }
        if !v6.is_empty() {
            match v6.parse() {
                Ok(ip) => server.public_ipv6 = Some(ip),
                Err(_) => problems.push(format!("server.public_ipv6: {v6:?} is not an IPv6 address")),
            }
        }

        let mut s = Section::new(&root, "database", &mut problems);
        let url = s.string("url", "");
        // On the private cluster every process's pool must fit its max_connections together
        // (crate::pg::MAX_POOL_ON_PRIVATE_CLUSTER); a larger pool would fail under load with
        // "too many clients" instead of queueing in the pool. An external server is the
        // operator's to size.
        let mut max_connections = s.number("max_connections", 10, 1, 1000) as u32;
        let pool_max = crate::pg::MAX_POOL_ON_PRIVATE_CLUSTER;
        if url.is_empty() && max_connections > pool_max {
            s.problem(
                "max_connections",
                format!(
                    "{max_connections} is more than the private PostgreSQL can serve: its {} connections \
                     are shared by {} processes (three daemons and `tinydc up`) plus tinydc commands, \
                     so at most {pool_max} (or set database.url to a server sized for more)",
                    crate::pg::CLUSTER_MAX_CONNECTIONS,
                    crate::pg::POOLED_PROCESSES
                ),
            );
            max_connections = pool_max;
        }
        let database = DatabaseConfig {
            url: (!url.is_empty()).then_some(url),
            max_connections,
        };
        s.finish();

        let mut s = Section::new(&root, "tls", &mut problems);
        let tls = TlsConfig {
            cert_file: data_dir.join(s.string("cert_file", "tls/cert.pem")),
            key_file: data_dir.join(s.string("key_file", "tls/key.pem")),
            acme_directory: s.string("acme_directory", ""),
            acme_contact: s.string("acme_contact", ""),
            acme_ca_file: Some(s.string("acme_ca_file", ""))
                .filter(|f| !f.is_empty())
                .map(|f| data_dir.join(f)),
            acme_check_secs: s.number("acme_check_secs", 43_200, 1, 7 * 86_400),
            acme_http_listen: s.listen("acme_http_listen", ""),
        };
        s.finish();

        let mut s = Section::new(&root, "auth", &mut problems);
        let auth = AuthConfig {
            allow_plaintext_on_loopback: s.bool("allow_plaintext_on_loopback", true),
            failures_per_ip_per_minute: s.number("failures_per_ip_per_minute", 10, 1, 100_000) as u32,
            failures_per_account_per_minute: s.number("failures_per_account_per_minute", 5, 1, 100_000) as u32,
            max_concurrent_checks: s.number("max_concurrent_checks", 2, 1, 64) as u32,
            max_waiting_checks: s.number("max_waiting_checks", 32, 0, 10_000) as u32,
            credential_cache_secs: s.number("credential_cache_secs", 300, 0, 3600),
        };
        s.finish();

        let smtp = SmtpConfig::read(&root, &mut problems);
        let imap = ImapConfig::read(&root, &mut problems);
        let dav = DavConfig::read(&root, &mut problems);
        let net = NetConfig::read(&root, &mut problems);

        if problems.is_empty() {
            Ok(Config {
                data_dir: data_dir.to_path_buf(),
                server,
                database,
                tls,
                auth,
                smtp,
                imap,
                dav,
                net,
            })
        } else {
            Err(problems)
        }
    }

    /// The defaults, as for an empty file (used by tests).
    pub fn defaults(data_dir: &Path) -> Config {
        Self::parse("", data_dir).expect("the defaults are valid")
    }

    /// `DATA/pg`: the private PostgreSQL cluster.
    pub fn pg_dir(&self) -> PathBuf {
        self.data_dir.join("pg")
    }

    /// `DATA/blobs`: message bodies.
    pub fn blobs_dir(&self) -> PathBuf {
        self.data_dir.join("blobs")
    }

    /// `DATA/files`: every person's WebDAV tree, one folder each.
    pub fn files_dir(&self) -> PathBuf {
        self.data_dir.join("files")
    }

    /// `DATA/uploads`: davd's unfinished chunked uploads, one folder per user id (outside
    /// every user's tree; charged as quota reservations until they are assembled).
    pub fn uploads_dir(&self) -> PathBuf {
        self.data_dir.join("uploads")
    }

    /// Whether the private cluster is used (no database URL configured).
    pub fn uses_private_cluster(&self) -> bool {
        self.database.url.is_none()
    }
}

/// The commented config file written by `tinydc init`: every setting present with its default.
pub fn template(domain: &str, database_url: Option<&str>) -> String {
    let url = database_url.unwrap_or("");
    format!(
        r#"# tinydc configuration. Every setting is shown with its default; relative paths are
# inside this data directory. Restart the daemons (or `tinydc up`) after a change.

[server]
# The host name this server answers as (SMTP greeting, certificate name, client autoconfig).
hostname = "{domain}"
# The first mail domain; add more with `tinydc domain add`.
domain = "{domain}"
# Space that must stay free on the data directory's disk: mail and uploads that would use it are
# refused (SMTP 452, IMAP NO, WebDAV 507) so PostgreSQL never runs out of room. Sizes as 128M.
min_free_space = "128M"
# The public addresses of this server, for `tinydc dns` and `tinydc doctor` (behind a home
# router: the router's public IPv4 address). Empty: detected from this machine's interfaces.
public_ipv4 = ""
public_ipv6 = ""

[database]
# A PostgreSQL URL. Empty: tinydc runs its own private cluster in DATA/pg (unix socket only).
url = "{url}"
# Connections each process (three daemons and `tinydc up`) opens at most; idle ones close
# after 10 s. With the private cluster at most 10 (its 50 connections are shared by all).
max_connections = 10

[tls]
# PEM certificate chain and key. `tinydc init` made a self-signed pair; replace them with real
# ones (e.g. certbot's fullchain.pem and privkey.pem, copied here by a deploy hook). Every daemon
# notices new files within a few seconds and presents them to new connections, no restart; a
# pair that does not load is logged and the old one kept.
# Or let tinydc-davd get them from an ACME CA (RFC 8555) for the host name and autoconfig.<domain>
# of every domain, answering the CA's HTTP-01 check on acme_http_listen (port 80) when that is set,
# else its TLS-ALPN-01 check on the HTTPS port; the port used must be reachable from the internet
# as 80 or 443. Set the CA's directory, e.g.
# acme_directory = "https://acme-v02.api.letsencrypt.org/directory"
acme_directory = ""
# An e-mail address the CA may write to about your certificates (optional).
acme_contact = ""
# Seconds between checks; a certificate with less than 30 days left is renewed.
acme_check_secs = 43200
# A plain HTTP listener for the CA's HTTP-01 check (port 80, reachable from the internet); it
# answers only the CA's requests and redirects everything else to HTTPS. When set, tinydc-davd
# prefers HTTP-01 to TLS-ALPN-01. Used only with acme_directory set. Empty turns it off.
acme_http_listen = ""
cert_file = "tls/cert.pem"
key_file = "tls/key.pem"

[auth]
# Allow passwords without TLS from 127.0.0.1 / ::1 only (never from other addresses).
allow_plaintext_on_loopback = true
# Failed logins one IP address may make per minute before it is throttled.
failures_per_ip_per_minute = 10
# Failed logins one account may take per minute before addresses that failed are throttled for it.
failures_per_account_per_minute = 5
# Password checks each daemon runs at once (argon2id takes 19 MiB each) and logins that may wait
# for one; logins beyond that are refused at once as busy, so memory stays bounded under a flood.
max_concurrent_checks = 2
max_waiting_checks = 32
# Seconds a successful login is remembered so the same password skips argon2id (a phone polling
# every minute, a mail client's several connections). Memory only, as a hash under a random key
# made at start; a changed password never matches; wrong passwords always get the full check.
# 0 turns it off.
credential_cache_secs = 300

{smtp}
{imap}
{dav}
{net}"#,
        smtp = smtp::TEMPLATE,
        imap = imap::TEMPLATE,
        dav = dav::TEMPLATE,
        net = net::TEMPLATE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_parses_to_the_defaults() {
        let dir = Path::new("/srv/tinydc");
        let config = Config::parse(&template("example.test", None), dir).unwrap();
        assert_eq!(config.server.domain, "example.test");
        assert!(config.uses_private_cluster());
        assert_eq!(config.tls.cert_file, dir.join("tls/cert.pem"));
        let defaults = Config::defaults(dir);
        assert_eq!(config.imap.listen, defaults.imap.listen);
        assert_eq!(config.smtp.max_message_size, defaults.smtp.max_message_size);
        assert_eq!(config.dav.https_listen, defaults.dav.https_listen);
    }

    #[test]
    fn every_error_is_reported_with_its_field() {
        let text = r#"
            [server]
            hostname = 5
            [database]
            max_connections = "many"
            colour = "blue"
            [smtp]
            max_message_size = "huge"
            [imap]
            listen = "not an address"
            [nonsense]
        "#;
        let problems = Config::parse(text, Path::new("/d")).unwrap_err();
        let all = problems.join("\n");
        for needle in [
            "server.hostname",
            "database.max_connections",
            "database.colour",
            "smtp.max_message_size",
            "imap.listen",
            "nonsense",
        ] {
            assert!(all.contains(needle), "{needle} missing from:\n{all}");
        }
        assert_eq!(problems.len(), 6, "{all}");
    }

    /// Issue #12: every process's pool must fit the private cluster's 50 connections together.
    #[test]
    fn the_pool_must_fit_the_private_cluster() {
        let problems = Config::parse("[database]\nmax_connections = 11\n", Path::new("/d")).unwrap_err();
        let all = problems.join("\n");
        assert!(
            all.contains("database.max_connections") && all.contains("at most 10"),
            "{all}"
        );
        let config = Config::parse("[database]\nmax_connections = 10\n", Path::new("/d")).unwrap();
        assert_eq!(config.database.max_connections, 10);
        // An external server is the operator's to size.
        let config = Config::parse(
            "[database]\nurl = \"postgres://u@db.example/tinydc\"\nmax_connections = 200\n",
            Path::new("/d"),
        )
        .unwrap();
        assert_eq!(config.database.max_connections, 200);
        assert!(Config::parse("[database]\nmax_connections = 1001\n", Path::new("/d")).is_err());
    }

    /// Issue #10: no public DNS resolver unless the operator names one.
    #[test]
    fn the_dns_fallback_is_off_unless_named() {
        let config = Config::parse("", Path::new("/d")).unwrap();
        assert_eq!(config.smtp.dns_fallback, "");
        let config = Config::parse("[smtp]\ndns_fallback = \"quad9-tls\"\n", Path::new("/d")).unwrap();
        assert_eq!(config.smtp.dns_fallback, "quad9-tls");
        let problems = Config::parse("[smtp]\ndns_fallback = \"8.8.8.8\"\n", Path::new("/d")).unwrap_err();
        assert!(
            problems.iter().any(|p| p.starts_with("smtp.dns_fallback:")),
            "{problems:?}"
        );
    }

    #[test]
    fn public_addresses_are_optional_and_checked() {
        let config = Config::defaults(Path::new("/d"));
        assert_eq!((config.server.public_ipv4, config.server.public_ipv6), (None, None));
        let text = "[server]\npublic_ipv4 = \"203.0.113.7\"\npublic_ipv6 = \"2001:db8::7\"\n";
        let config = Config::parse(text, Path::new("/d")).unwrap();
        assert_eq!(config.server.public_ipv4, Some("203.0.113.7".parse().unwrap()));
        assert_eq!(config.server.public_ipv6, Some("2001:db8::7".parse().unwrap()));
        let problems = Config::parse("[server]\npublic_ipv4 = \"2001:db8::7\"\n", Path::new("/d")).unwrap_err();
        assert!(problems[0].contains("server.public_ipv4"), "{problems:?}");
    }

    #[test]
    fn a_database_url_turns_the_private_cluster_off() {
        let config = Config::parse("[database]\nurl = \"postgres://x@h/db\"\n", Path::new("/d")).unwrap();
        assert!(!config.uses_private_cluster());
    }

    #[test]
    fn broken_toml_is_one_clear_error() {
        let problems = Config::parse("[server\nhostname=", Path::new("/d")).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("not valid TOML"));
    }
}
