//! `tinydc doctor`: check what can be checked from this machine and print each finding as
//! ok / warn / fail with what to do about it. Exits non-zero when anything fails.
//!
//! Every network step is bounded in time (connects, DNS lookups), so a dead resolver or a
//! firewalled port makes a warning or a failure, never a hang.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};
use shared::Config;

use super::dns::{self, Addresses, Kind, Line, Purpose};
use crate::admin::Admin;

/// One DNS lookup waits at most this long (and is tried once).
const DNS_TIMEOUT: Duration = Duration::from_secs(2);
/// One TCP connect waits at most this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The outbound port 25 probe waits this long: a blocked port usually drops packets silently.
const PORT25_TIMEOUT: Duration = Duration::from_secs(5);
/// A certificate closer than this to its expiry gets a warning.
const EXPIRY_WARNING_DAYS: i64 = 14;
/// A mail domain whose MX hosts accept connections from anywhere: the port 25 probe target.
const PORT25_PROBE_DOMAIN: &str = "gmail.com";

#[derive(Args)]
pub struct DoctorArgs {
    /// Ask this DNS server (IP or IP:PORT) instead of the system resolver (/etc/resolv.conf).
    #[arg(long, value_name = "IP[:PORT]")]
    pub resolver: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    Warn,
    Fail,
}

/// The findings so far, printed as they come.
#[derive(Default)]
struct Report {
    warnings: usize,
    failures: usize,
}

impl Report {
    fn say(&mut self, status: Status, what: &str, detail: &str, fix: Option<&str>) {
        let word = match status {
            Status::Ok => "ok",
            Status::Warn => {
                self.warnings += 1;
                "warn"
            }
            Status::Fail => {
                self.failures += 1;
                "fail"
            }
        };
        println!("{word:<5} {what}: {detail}");
        if let Some(fix) = fix.filter(|_| status != Status::Ok) {
            println!("      fix: {fix}");
        }
    }
    fn ok(&mut self, what: &str, detail: &str) {
        self.say(Status::Ok, what, detail, None);
    }
    fn warn(&mut self, what: &str, detail: &str, fix: &str) {
        self.say(Status::Warn, what, detail, Some(fix));
    }
    fn fail(&mut self, what: &str, detail: &str, fix: &str) {
        self.say(Status::Fail, what, detail, Some(fix));
    }
}

pub async fn run(data: &Path, args: DoctorArgs) -> anyhow::Result<()> {
    let mut report = Report::default();
    let config = match Config::load(data) {
        Ok(config) => config,
        Err(e) => {
            report.fail(
                "config",
                &e.to_string(),
                "correct tinydc.toml (or create a data directory with `tinydc init`)",
            );
            anyhow::bail!("1 check failed");
        }
    };
    let resolver_address = args.resolver.as_deref().map(parse_resolver).transpose()?;
    report.ok(
        "config",
        &format!(
            "{} reads cleanly",
            config.data_dir.join(shared::config::CONFIG_FILE).display()
        ),
    );

    check_listeners(&mut report, &config).await;
    check_disk(&mut report, &config);

    // The database: the domain list, the queue and the quotas come from it.
    let mut domains = vec![config.server.domain.clone()];
    let admin = match tokio::time::timeout(Duration::from_secs(40), Admin::open(data)).await {
        Ok(Ok(admin)) => Some(admin),
        Ok(Err(e)) => {
            report.fail(
                "database",
                &format!("{e:#}"),
                "see DATA/pg/postgres.log (private cluster) or the server's log",
            );
            None
        }
        Err(_) => {
            report.fail(
                "database",
                "no answer within 40 s",
                "see DATA/pg/postgres.log or the server's log",
            );
            None
        }
    };
    let mut dkim = Vec::new();
    if let Some(admin) = admin {
        let checked = check_database(&mut report, &admin).await;
        if let Err(e) = &checked {
            report.fail(
                "database",
                &format!("{e:#}"),
                "see DATA/pg/postgres.log or the server's log",
            );
        }
        if let Ok(list) = shared::accounts::list_domains(&admin.db).await
            && !list.is_empty()
        {
            domains = list;
        }
        for domain in &domains {
            dkim.push(dns::dkim_record(&admin.db, domain).await.ok().flatten());
        }
        admin.close().await.context("closing the database")?;
    }

    check_certificate(&mut report, &config, &domains);

    let addresses = Addresses::find(&config);
    let resolver_name = match resolver_address {
        Some(addr) => format!("DNS server {addr}"),
        None => "the system resolver".to_string(),
    };
    let resolver = match build_resolver(resolver_address) {
        Ok(resolver) => Some(resolver),
        Err(e) => {
            report.warn(
                "dns",
                &format!("{e:#}; published records, reverse DNS and port 25 not checked"),
                "check /etc/resolv.conf, or name a DNS server with --resolver",
            );
            None
        }
    };
    let mut reachable = false;
    if let Some(resolver) = &resolver {
        reachable = check_dns(
            &mut report,
            &config,
            resolver,
            &resolver_name,
            &addresses,
            &domains,
            dkim,
        )
        .await;
        if reachable {
            check_reverse_dns(&mut report, &config, resolver, &addresses).await;
        }
    }
    check_outbound(&mut report, &config, resolver.as_ref().filter(|_| reachable)).await;

    println!();
    if report.failures > 0 {
        anyhow::bail!(
            "{} check(s) failed, {} warning(s); see the fixes above",
            report.failures,
            report.warnings
        );
    }
    println!("no failures ({} warning(s))", report.warnings);
    Ok(())
}

/// `IP` or `IP:PORT` (`[v6]:PORT`) of a DNS server; port 53 when not given.
fn parse_resolver(text: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let ip: IpAddr = text
        .parse()
        .map_err(|_| anyhow::anyhow!("--resolver {text:?}: expected an IP address or IP:PORT"))?;
    Ok(SocketAddr::new(ip, 53))
}

fn build_resolver(server: Option<SocketAddr>) -> anyhow::Result<TokioResolver> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = match server {
        Some(addr) => {
            let mut ns = NameServerConfig::udp(addr.ip());
            for connection in &mut ns.connections {
                connection.port = addr.port();
            }
            Resolver::builder_with_config(ResolverConfig::from_name_servers(vec![ns]), provider)
        }
        None => Resolver::builder(provider).context("reading the system resolver configuration")?,
    };
    let options = builder.options_mut();
    options.timeout = DNS_TIMEOUT;
    options.attempts = 1;
    // What the world sees, not this machine's /etc/hosts.
    options.use_hosts_file = ResolveHosts::Never;
    Ok(builder.build()?)
}

/// The connect address for a listener: its own, or loopback when it listens on every address.
fn probe_address(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    }
}

async fn connect(addr: SocketAddr, limit: Duration) -> Result<(), String> {
    match tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", limit.as_secs())),
    }
}

async fn check_listeners(report: &mut Report, config: &Config) {
    for (name, addr) in dns::listeners(config) {
        let what = format!("listener {name} {addr}");
        let implicit_tls = matches!(name, "submissions" | "imaps" | "https");
        let fix_down =
            "start tinydc (`systemctl start tinydc`, or `tinydc up`); if it runs, see its log (`journalctl -u tinydc`)";
        if !implicit_tls {
            match connect(probe_address(addr), CONNECT_TIMEOUT).await {
                Ok(()) => report.ok(&what, "accepts connections"),
                Err(e) => report.fail(&what, &format!("nothing answers ({e})"), fix_down),
            }
            continue;
        }
        // An implicit-TLS port (RFC 8314): a whole handshake, so the daemon logs no failed one
        // and the certificate it really presents can be compared with the file.
        match tls_probe(probe_address(addr), &config.server.hostname).await {
            Err(TlsProbeError::Connect(e)) => report.fail(&what, &format!("nothing answers ({e})"), fix_down),
            Err(TlsProbeError::Handshake(e)) => report.fail(
                &what,
                &format!("accepts connections but the TLS handshake fails ({e})"),
                "check tls.cert_file / tls.key_file and the daemon's log (`journalctl -u tinydc`)",
            ),
            Ok(presented) => {
                let file = leaf_in(&config.tls.cert_file);
                if file.as_ref() == Some(&presented) {
                    report.ok(
                        &what,
                        "accepts connections (TLS, with the certificate in tls.cert_file)",
                    );
                } else {
                    report.warn(
                        &what,
                        &format!(
                            "accepts TLS connections but presents another certificate than {}",
                            config.tls.cert_file.display()
                        ),
                        "daemons load a changed certificate within seconds; if this stays, the new file \
                         does not load (see the log, `journalctl -u tinydc`) or they run on other files",
                    );
                }
            }
        }
    }
    // The port-80 listener davd opens for ACME HTTP-01 (only with an ACME directory set).
    if let Some(addr) = config
        .tls
        .acme_http_listen
        .filter(|_| !config.tls.acme_directory.is_empty())
    {
        let what = format!("listener acme http {addr}");
        match connect(probe_address(addr), CONNECT_TIMEOUT).await {
            Ok(()) => report.ok(&what, "accepts connections"),
            Err(e) => report.fail(
                &what,
                &format!("nothing answers ({e}); the CA's HTTP-01 check will fail"),
                "start tinydc; if it runs, see whether tinydc-davd could bind the port (`journalctl -u tinydc`)",
            ),
        }
    }
}

/// The first certificate of a PEM file.
fn leaf_in(file: &Path) -> Option<rustls_pki_types::CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject as _;
    rustls_pki_types::CertificateDer::pem_file_iter(file).ok()?.next()?.ok()
}

enum TlsProbeError {
    Connect(String),
    Handshake(String),
}

/// Connect to `addr`, finish a TLS handshake asking for `hostname`, close it properly
/// (close_notify), and return the certificate the server presented. Bounded in time.
async fn tls_probe(
    addr: SocketAddr,
    hostname: &str,
) -> Result<rustls_pki_types::CertificateDer<'static>, TlsProbeError> {
    use tokio::io::AsyncWriteExt as _;
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(TlsProbeError::Connect(e.to_string())),
        Err(_) => {
            return Err(TlsProbeError::Connect(format!(
                "no answer within {} s",
                CONNECT_TIMEOUT.as_secs()
            )));
        }
    };
    let provider = shared::tls::provider();
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsProbeError::Handshake(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(hostname.to_string())
        .unwrap_or_else(|_| rustls_pki_types::ServerName::IpAddress(addr.ip().into()));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut tls = match tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return Err(TlsProbeError::Handshake(e.to_string())),
        Err(_) => {
            return Err(TlsProbeError::Handshake(format!(
                "no handshake within {} s",
                CONNECT_TIMEOUT.as_secs()
            )));
        }
    };
    let presented = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned());
    let _ = tokio::time::timeout(Duration::from_secs(1), tls.shutdown()).await;
    presented.ok_or_else(|| TlsProbeError::Handshake("the server presented no certificate".into()))
}

/// Takes any certificate (checking the handshake signatures): the probe looks at which
/// certificate a daemon presents; whether devices trust it is [`check_certificate`]'s finding.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn check_disk(report: &mut Report, config: &Config) {
    let dir = &config.data_dir;
    let stat = match rustix::fs::statvfs(dir.as_path()) {
        Ok(stat) => stat,
        Err(e) => {
            report.fail(
                "disk",
                &format!("cannot read free space of {}: {e}", dir.display()),
                "check that the disk is mounted",
            );
            return;
        }
    };
    let fragment = stat.f_frsize;
    let free = stat.f_bavail * fragment;
    let total = stat.f_blocks * fragment;
    let percent = if total == 0 {
        100.0
    } else {
        free as f64 * 100.0 / total as f64
    };
    let detail = format!(
        "{} free of {} ({percent:.0}%) on {}",
        shared::size::format_size(free),
        shared::size::format_size(total),
        dir.display()
    );
    let fix = "free space (old files, `tinydc sweep`) or move the data directory to a larger disk";
    if free < 256 << 20 || percent < 2.0 {
        report.fail("disk", &detail, fix);
    } else if free < 2 << 30 || percent < 10.0 {
        report.warn("disk", &detail, fix);
    } else {
        report.ok("disk", &detail);
    }
}

async fn check_database(report: &mut Report, admin: &Admin) -> anyhow::Result<()> {
    let db = &admin.db;
    let version: String = sqlx::query_scalar("SHOW server_version").fetch_one(db).await?;
    let users = shared::accounts::list_users(db).await?;
    report.ok(
        "database",
        &format!("PostgreSQL {version} answers; {} user(s)", users.len()),
    );

    // The queue: a message that waits for a day means deliveries keep failing.
    let rows = shared::queue::rows(db).await?;
    match rows.iter().map(|r| r.created_at).min() {
        None => report.ok("queue", "empty"),
        Some(oldest) => {
            let age = chrono::Utc::now() - oldest;
            let detail = format!(
                "{} message(s) waiting, the oldest for {} h",
                rows.len(),
                age.num_hours()
            );
            if age > chrono::Duration::hours(24) {
                report.warn(
                    "queue",
                    &detail,
                    "see the errors with `tinydc queue list` (blocked port 25? set a smarthost)",
                );
            } else {
                report.ok("queue", &detail);
            }
        }
    }

    // Quotas: a full mailbox refuses mail.
    let mut near = 0;
    for user in &users {
        let info = shared::quota::info(db, user.id).await?;
        let Some(percent) = info.percent() else { continue };
        // The level the warnings and `tinydc quota report` use (shared::quota::warn).
        let level = shared::quota::warn::level(&info);
        let what = format!("quota {}", user.address);
        let detail = format!("{percent:.0}% used");
        let fix = format!(
            "raise the limit (`tinydc quota set {} SIZE`) or ask them to delete some mail or files",
            user.address
        );
        match level {
            shared::quota::warn::Level::Critical => {
                near += 1;
                report.fail(&what, &detail, &fix);
            }
            shared::quota::warn::Level::Near => {
                near += 1;
                report.warn(&what, &detail, &fix);
            }
            shared::quota::warn::Level::Below => {}
        }
    }
    if near == 0 {
        report.ok("quotas", "every user is under 80% of their limit");
    }
    Ok(())
}

fn check_certificate(report: &mut Report, config: &Config, domains: &[String]) {
    use x509_parser::prelude::*;
    let file = &config.tls.cert_file;
    let what = "certificate";
    let pem_bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(e) => {
            report.fail(
                what,
                &format!("cannot read {}: {e}", file.display()),
                "set tls.cert_file to your certificate",
            );
            return;
        }
    };
    let pem = match x509_parser::pem::parse_x509_pem(&pem_bytes) {
        Ok((_, pem)) => pem,
        Err(e) => {
            report.fail(
                what,
                &format!("{} is not a PEM certificate: {e}", file.display()),
                "set tls.cert_file to your certificate",
            );
            return;
        }
    };
    let cert = match pem.parse_x509() {
        Ok(cert) => cert,
        Err(e) => {
            report.fail(
                what,
                &format!("{} does not parse: {e}", file.display()),
                "set tls.cert_file to your certificate",
            );
            return;
        }
    };
    let renew =
        "get a new certificate (e.g. certbot) and point tls.cert_file / tls.key_file at it, then restart tinydc";

    // Expiry (RFC 5280 section 4.1.2.5).
    let not_after = cert.validity().not_after.timestamp();
    let not_before = cert.validity().not_before.timestamp();
    let now = chrono::Utc::now().timestamp();
    let until = chrono::DateTime::from_timestamp(not_after, 0)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default();
    let days = (not_after - now) / 86_400;
    if not_after <= now {
        report.fail("certificate expiry", &format!("expired on {until}"), renew);
    } else if not_before > now {
        report.fail(
            "certificate expiry",
            "not valid yet (is the clock right?)",
            "check the system clock (timedatectl)",
        );
    } else if days < EXPIRY_WARNING_DAYS {
        report.warn(
            "certificate expiry",
            &format!("expires in {days} day(s), on {until}"),
            renew,
        );
    } else {
        report.ok("certificate expiry", &format!("valid until {until} ({days} days)"));
    }

    // Names (RFC 6125): the mail host and autoconfig.<domain> of every domain.
    let mut sans: Vec<String> = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            if let GeneralName::DNSName(n) = name {
                sans.push(n.to_ascii_lowercase());
            }
        }
    }
    let mut wanted = vec![config.server.hostname.clone()];
    wanted.extend(domains.iter().map(|d| format!("autoconfig.{d}")));
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|w| !sans.iter().any(|san| name_matches(san, w)))
        .collect();
    if missing.is_empty() {
        report.ok("certificate names", &format!("covers {}", wanted.join(", ")));
    } else {
        report.fail(
            "certificate names",
            &format!(
                "{} not named (the certificate names: {})",
                missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                sans.join(", ")
            ),
            "get a certificate that names the mail host and autoconfig.<domain> of every domain",
        );
    }
    if cert.subject() == cert.issuer() {
        report.warn(
            "certificate issuer",
            "self-signed: phones and computers will warn, and Windows' WebDAV refuses it",
            "get a certificate devices trust (e.g. certbot for Let's Encrypt) and point tls.cert_file / tls.key_file at it",
        );
    }
}

/// A certificate name matches a host name (a wildcard covers exactly one leftmost label).
fn name_matches(san: &str, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    match san.strip_prefix("*.") {
        Some(rest) => host.split_once('.').is_some_and(|(_, parent)| parent == rest),
        None => san == host,
    }
}

/// The answer to one lookup.
enum Answer {
    /// The values, in zone-file form, lower case.
    Found(Vec<String>),
    /// The name or type has no records.
    None,
    /// The resolver did not answer usefully.
    Unreachable(String),
}

async fn ask(resolver: &TokioResolver, name: &str, kind: RecordType) -> Answer {
    let fqdn = format!("{}.", name.trim_end_matches('.'));
    let lookup = match tokio::time::timeout(DNS_TIMEOUT * 2, resolver.lookup(fqdn.as_str(), kind)).await {
        Err(_) => return Answer::Unreachable(format!("no answer within {} s", (DNS_TIMEOUT * 2).as_secs())),
        Ok(Err(e)) => {
            return match &e {
                NetError::Dns(hickory_resolver::net::DnsError::NoRecordsFound(_)) => Answer::None,
                _ => Answer::Unreachable(e.to_string()),
            };
        }
        Ok(Ok(lookup)) => lookup,
    };
    let values: Vec<String> = lookup
        .answers()
        .iter()
        .filter(|r| r.record_type() == kind)
        .filter_map(|r| match &r.data {
            RData::A(ip) => Some(ip.0.to_string()),
            RData::AAAA(ip) => Some(ip.0.to_string()),
            RData::MX(mx) => Some(format!("{} {}", mx.preference, fqdn_text(&mx.exchange.to_string()))),
            RData::CNAME(name) => Some(fqdn_text(&name.0.to_string())),
            RData::PTR(name) => Some(fqdn_text(&name.0.to_string())),
            RData::SRV(srv) => Some(format!(
                "{} {} {} {}",
                srv.priority,
                srv.weight,
                srv.port,
                fqdn_text(&srv.target.to_string())
            )),
            // RFC 7208 section 3.3: the strings of one TXT record are joined without spaces.
            RData::TXT(txt) => Some(format!(
                "\"{}\"",
                txt.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s))
                    .collect::<String>()
            )),
            _ => None,
        })
        .collect();
    if values.is_empty() {
        Answer::None
    } else {
        Answer::Found(values)
    }
}

fn fqdn_text(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.').to_ascii_lowercase())
}

fn record_type(kind: Kind) -> RecordType {
    match kind {
        Kind::A => RecordType::A,
        Kind::Aaaa => RecordType::AAAA,
        Kind::Mx => RecordType::MX,
        Kind::Txt => RecordType::TXT,
        Kind::Cname => RecordType::CNAME,
        Kind::Srv => RecordType::SRV,
    }
}

/// Compare the published records of every domain with those `tinydc dns` prints. Returns whether
/// the resolver answered (when it did not, nothing further is looked up).
async fn check_dns(
    report: &mut Report,
    config: &Config,
    resolver: &TokioResolver,
    resolver_name: &str,
    addresses: &Addresses,
    domains: &[String],
    dkim: Vec<Option<(String, String)>>,
) -> bool {
    let host = &config.server.hostname;
    // One lookup first: when the resolver does not answer, say so once and look up nothing else.
    if let Answer::Unreachable(e) = ask(resolver, host, RecordType::A).await {
        report.warn(
            "dns",
            &format!("{resolver_name} did not answer ({e}); published records, reverse DNS and port 25 not checked"),
            "check the network and /etc/resolv.conf, then run `tinydc doctor` again",
        );
        return false;
    }
    if addresses.v4.is_none() {
        let what = format!("dns {host}. A");
        match ask(resolver, host, RecordType::A).await {
            Answer::Found(values) => report.warn(
                &what,
                &format!(
                    "published {} (not compared: this machine's public address is unknown)",
                    values.join(", ")
                ),
                "set server.public_ipv4 to your router's public address",
            ),
            _ => report.fail(
                &what,
                "not published",
                "publish your public IPv4 address (see `tinydc dns`)",
            ),
        }
    }
    for (domain, dkim) in domains.iter().zip(dkim) {
        for line in dns::records(config, domain, addresses, dkim) {
            let Line::Record(expected) = line else { continue };
            let what = format!("dns {}. {}", expected.name, expected.kind.name());
            let fix = format!("publish `{expected}` (see `tinydc dns {domain}`)");
            let answer = ask(resolver, &expected.name, record_type(expected.kind)).await;
            let values = match answer {
                Answer::Unreachable(e) => {
                    report.warn(
                        &what,
                        &format!("lookup failed ({e})"),
                        "run `tinydc doctor` again later",
                    );
                    continue;
                }
                Answer::None => Vec::new(),
                Answer::Found(values) => values,
            };
            let want = expected.value.to_ascii_lowercase();
            let published = if values.is_empty() {
                "nothing".to_string()
            } else {
                values.join(", ")
            };
            let exact = values
                .iter()
                .any(|v| *v == want || (expected.kind == Kind::Txt && *v == expected.value));
            // What else would do: another MX preference, SRV priority or weight, another SPF or
            // DMARC policy than the suggested one.
            let tail = |v: &str| v.split(' ').skip(1).collect::<Vec<_>>().join(" ");
            let acceptable = match expected.purpose {
                Purpose::Mx => values.iter().any(|v| tail(v) == tail(&want)),
                Purpose::Service => {
                    let end = |v: &str| v.split(' ').skip(2).collect::<Vec<_>>().join(" ");
                    values.iter().any(|v| end(v) == end(&want))
                }
                Purpose::Spf => values.iter().any(|v| v.starts_with("\"v=spf1")),
                Purpose::Dmarc => values.iter().any(|v| v.starts_with("\"v=dmarc1")),
                _ => false,
            };
            if exact {
                report.ok(&what, "published as expected");
            } else if acceptable {
                report.warn(
                    &what,
                    &format!("published {published}; tinydc suggests {}", expected.value),
                    &fix,
                );
            } else if expected.purpose == Purpose::Autoconfig {
                // An A record for autoconfig.<domain> with the host's address does as well as a CNAME.
                let a = ask(resolver, &expected.name, RecordType::A).await;
                match (a, addresses.public_v4()) {
                    (Answer::Found(v), Some(ip)) if v.contains(&ip.to_string()) => {
                        report.ok(&what, "published (as an A record)")
                    }
                    _ => report.warn(&what, &format!("published {published}"), &fix),
                }
            } else {
                let severe = matches!(
                    expected.purpose,
                    Purpose::Address | Purpose::Mx | Purpose::Spf | Purpose::Dkim
                ) && !(expected.purpose == Purpose::Dkim && values.is_empty());
                let detail = format!("published {published}, expected {}", expected.value);
                if severe {
                    report.fail(&what, &detail, &fix);
                } else {
                    report.warn(&what, &detail, &fix);
                }
            }
        }
    }
    true
}

/// Large receivers (Gmail, Outlook) reject mail from an address whose PTR record does not name
/// the sending host (reverse DNS, RFC 1035 section 3.5).
async fn check_reverse_dns(report: &mut Report, config: &Config, resolver: &TokioResolver, addresses: &Addresses) {
    let Some(ip) = addresses.public_v4() else {
        report.warn(
            "reverse dns",
            "this machine's public IPv4 address is unknown",
            "set server.public_ipv4, then ask your provider to set its reverse DNS to the mail host name",
        );
        return;
    };
    let [a, b, c, d] = ip.octets();
    let name = format!("{d}.{c}.{b}.{a}.in-addr.arpa");
    let host = fqdn_text(&config.server.hostname);
    let what = format!("reverse dns {ip}");
    let (status, detail) = match ask(resolver, &name, RecordType::PTR).await {
        Answer::Found(names) if names.contains(&host) => (Status::Ok, format!("names {host}")),
        Answer::Found(names) => (Status::Warn, format!("names {}, not {host}", names.join(", "))),
        Answer::None => (Status::Warn, "no PTR record".to_string()),
        Answer::Unreachable(e) => (Status::Warn, format!("lookup failed ({e})")),
    };
    let fix = if config.smtp.smarthost.is_some() {
        "(outgoing mail goes through the smarthost, so this matters less) ask your provider to set it to the mail host name"
    } else {
        "ask your provider to set the reverse DNS of your address to the mail host name, or send through a smarthost"
    };
    report.say(status, &what, &detail, Some(fix));
}

/// Outgoing mail needs port 25 to the world, or a smarthost.
/// `resolver` is None when DNS cannot be asked.
async fn check_outbound(report: &mut Report, config: &Config, resolver: Option<&TokioResolver>) {
    if let Some(relay) = &config.smtp.smarthost {
        let what = format!("smarthost {}:{}", relay.host, relay.port);
        let target = format!("{}:{}", relay.host, relay.port);
        let addrs = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host(target)).await {
            Ok(Ok(addrs)) => addrs.collect::<Vec<_>>(),
            Ok(Err(e)) => {
                report.fail(&what, &format!("cannot resolve: {e}"), "check smtp.smarthost.host");
                return;
            }
            Err(_) => {
                report.fail(
                    &what,
                    "name lookup did not finish",
                    "check the network and smtp.smarthost.host",
                );
                return;
            }
        };
        let mut last = String::from("no address");
        for addr in addrs {
            match connect(addr, PORT25_TIMEOUT).await {
                Ok(()) => {
                    report.ok(&what, "accepts connections (outgoing mail is relayed through it)");
                    return;
                }
                Err(e) => last = e,
            }
        }
        report.fail(
            &what,
            &format!("cannot connect ({last})"),
            "check smtp.smarthost host and port, and the network",
        );
        return;
    }
    let what = "outbound port 25";
    let Some(resolver) = resolver else {
        report.warn(
            what,
            "not checked (DNS did not answer)",
            "run `tinydc doctor` again when DNS works",
        );
        return;
    };
    let mx = match ask(resolver, PORT25_PROBE_DOMAIN, RecordType::MX).await {
        Answer::Found(values) => values
            .into_iter()
            .filter_map(|v| v.split(' ').nth(1).map(str::to_string))
            .next(),
        _ => None,
    };
    let ip = match mx {
        Some(mx) => match ask(resolver, &mx, RecordType::A).await {
            Answer::Found(ips) => ips.into_iter().find_map(|ip| ip.parse::<IpAddr>().ok()),
            _ => None,
        },
        None => None,
    };
    let Some(ip) = ip else {
        report.warn(
            what,
            &format!("not checked (no address for the MX of {PORT25_PROBE_DOMAIN})"),
            "run `tinydc doctor` again when DNS works",
        );
        return;
    };
    match connect(SocketAddr::new(ip, 25), PORT25_TIMEOUT).await {
        Ok(()) => report.ok(what, &format!("reachable ({ip}:25 of {PORT25_PROBE_DOMAIN}'s MX)")),
        Err(e) => report.fail(
            what,
            &format!("{ip}:25 of {PORT25_PROBE_DOMAIN}'s MX: {e}; your provider probably blocks port 25"),
            "send through a smarthost: set [smtp.smarthost] in tinydc.toml",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(name_matches("*.example.org", "autoconfig.example.org"));
        assert!(!name_matches("*.example.org", "example.org"));
        assert!(!name_matches("*.example.org", "a.b.example.org"));
        assert!(name_matches("mail.example.org", "MAIL.example.org"));
    }

    #[test]
    fn resolver_addresses() {
        assert_eq!(parse_resolver("127.0.0.1").unwrap(), "127.0.0.1:53".parse().unwrap());
        assert_eq!(
            parse_resolver("127.0.0.1:5353").unwrap(),
            "127.0.0.1:5353".parse().unwrap()
        );
        assert_eq!(parse_resolver("::1").unwrap(), "[::1]:53".parse().unwrap());
        assert!(parse_resolver("dns.example").is_err());
    }
}
