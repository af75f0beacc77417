//! `[smtp]`: tinydc-smtpd's listeners, limits and outbound delivery.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::Section;

/// `[smtp]`
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// MX listener: mail from the internet for local domains (port 25 in production). Empty: off.
    pub mx_listen: Option<SocketAddr>,
    /// Submission listener with STARTTLS (port 587 in production). Empty: off.
    pub submission_listen: Option<SocketAddr>,
    /// Submission listener with implicit TLS (port 465 in production). Empty: off.
    pub submissions_listen: Option<SocketAddr>,
    /// Largest message accepted, in bytes (announced with SIZE).
    pub max_message_size: u64,
    /// Most recipients in one message.
    pub max_recipients: u64,
    /// Longest command line, in bytes.
    pub max_line_length: u64,
    /// Seconds a client may wait between commands.
    pub command_timeout_secs: u64,
    /// Seconds a client may take between two blocks of message data.
    pub data_timeout_secs: u64,
    /// Seconds a submission client may wait between commands before it has authenticated
    /// (the MX keeps `command_timeout_secs`, RFC 5321 §4.5.3.2.7).
    pub login_timeout_secs: u64,
    /// Connections open at once, over all listeners.
    pub max_connections: u64,
    /// Connections one client address (an IPv4 address, an IPv6 /64) may hold open at once.
    pub max_connections_per_address: u64,
    /// Connections one IP address may open per minute.
    pub connections_per_ip_per_minute: u64,
    /// Messages one authenticated user may send per hour.
    pub messages_per_user_per_hour: u64,
    /// Refuse (550) mail whose DMARC policy is `reject` and which fails DMARC.
    pub dmarc_reject: bool,
    /// Deliver mail that fails DMARC (policy quarantine) or SPF into Junk instead of INBOX.
    pub junk_on_fail: bool,
    /// Relay all outgoing mail through this host instead of looking up MX records.
    pub smarthost: Option<SmarthostConfig>,
    /// Per-domain routes: `"domain" = "host:port"` sends that domain's mail to that host
    /// (plain SMTP, opportunistic STARTTLS). Used for tests and split setups.
    pub routes: BTreeMap<String, String>,
    /// Seconds before the first retry of a temporarily failed delivery; each later retry waits
    /// twice as long as the one before (at most 4 hours).
    pub queue_retry_secs: u64,
    /// Seconds a message may stay in the outbound queue before it is bounced (5 days).
    pub queue_lifetime_secs: u64,
    /// A public resolver to ask when the system's (/etc/resolv.conf) cannot be used: one of
    /// [`DNS_FALLBACKS`]. Empty (the default): none, lookups fail until the system's works, and
    /// no looked-up name goes to a third party.
    pub dns_fallback: String,
}

/// The values of `[smtp] dns_fallback`: off, or a public resolver over UDP/TCP or DNS-over-TLS.
pub const DNS_FALLBACKS: &[&str] = &["", "cloudflare", "cloudflare-tls", "google", "quad9", "quad9-tls"];

/// `[smtp.smarthost]`
#[derive(Debug, Clone)]
pub struct SmarthostConfig {
    /// `host:port` of the relay.
    pub host: String,
    /// Port (587 STARTTLS or 465 implicit TLS usually).
    pub port: u16,
    /// `starttls`, `tls` (implicit) or `none`.
    pub security: String,
    /// User name for AUTH (empty: no AUTH).
    pub username: String,
    /// Password for AUTH.
    pub password: String,
}

pub(super) const TEMPLATE: &str = r#"[smtp]
# MX: mail from the internet for your domains (use "0.0.0.0:25" in production). Empty turns it off.
mx_listen = "0.0.0.0:10025"
# Submission with STARTTLS, for your mail clients (587 in production).
submission_listen = "0.0.0.0:10587"
# Submission with implicit TLS (465 in production).
submissions_listen = "0.0.0.0:10465"
# Largest message accepted (announced with SIZE).
max_message_size = "50M"
# Most recipients in one message.
max_recipients = 100
# Longest command line, in bytes.
max_line_length = 4096
# Seconds a client may wait between commands, and between blocks of message data.
command_timeout_secs = 300
data_timeout_secs = 600
# Seconds a submission client may wait between commands before it has logged in.
login_timeout_secs = 60
# Connections open at once, open at once from one address (an IPv4 address or an IPv6 /64),
# and new connections one IP may open per minute.
max_connections = 200
max_connections_per_address = 20
connections_per_ip_per_minute = 60
# Messages one user may send per hour.
messages_per_user_per_hour = 500
# Refuse mail that fails DMARC when the sender's policy says reject.
dmarc_reject = true
# File mail that fails DMARC (quarantine) or SPF into Junk.
junk_on_fail = true
# Outbound queue: first retry after this many seconds (doubling up to 4 hours), and bounce
# to the sender after this long (5 days).
queue_retry_secs = 60
queue_lifetime_secs = 432000
# DNS: only the system's resolver (/etc/resolv.conf) is asked. When it cannot be used, lookups
# fail (mail waits in the queue) unless this names a public resolver to ask instead, which then
# sees the domains of everyone your users write to or hear from: "" (off), "cloudflare",
# "cloudflare-tls", "google", "quad9" or "quad9-tls" (-tls: DNS over TLS).
dns_fallback = ""

# Outgoing mail through a relay (many home connections block port 25):
# [smtp.smarthost]
# host = "smtp.example.net"
# port = 587
# security = "starttls"   # starttls, tls or none
# username = "me@example.net"
# password = "secret"

# Per-domain routes: send mail for a domain to a fixed host:port instead of its MX.
[smtp.routes]
# "example.org" = "10.0.0.5:25"
"#;

impl SmtpConfig {
    pub(super) fn read(root: &toml::Table, problems: &mut Vec<String>) -> SmtpConfig {
        let mut s = Section::new(root, "smtp", problems);
        let mut config = SmtpConfig {
            mx_listen: s.listen("mx_listen", "0.0.0.0:10025"),
            submission_listen: s.listen("submission_listen", "0.0.0.0:10587"),
            submissions_listen: s.listen("submissions_listen", "0.0.0.0:10465"),
            max_message_size: s.size("max_message_size", 50 << 20),
            max_recipients: s.number("max_recipients", 100, 1, 100_000),
            max_line_length: s.number("max_line_length", 4096, 512, 1 << 20),
            command_timeout_secs: s.number("command_timeout_secs", 300, 1, 86_400),
            data_timeout_secs: s.number("data_timeout_secs", 600, 1, 86_400),
            login_timeout_secs: s.number("login_timeout_secs", 60, 1, 86_400),
            max_connections: s.number("max_connections", 200, 1, 1_000_000),
            max_connections_per_address: s.number("max_connections_per_address", 20, 1, 1_000_000),
            connections_per_ip_per_minute: s.number("connections_per_ip_per_minute", 60, 1, 1_000_000),
            messages_per_user_per_hour: s.number("messages_per_user_per_hour", 500, 1, 1_000_000),
            dmarc_reject: s.bool("dmarc_reject", true),
            junk_on_fail: s.bool("junk_on_fail", true),
            smarthost: None,
            routes: s.string_map("routes"),
            queue_retry_secs: s.number("queue_retry_secs", 60, 1, 86_400),
            queue_lifetime_secs: s.number("queue_lifetime_secs", 432_000, 0, 30 * 86_400),
            dns_fallback: s.string("dns_fallback", ""),
        };
        let smarthost = s.table("smarthost");
        s.finish();
        if let Some(table) = smarthost {
            let root: toml::Table = [("smtp.smarthost".to_string(), toml::Value::Table(table.clone()))]
                .into_iter()
                .collect();
            let mut h = Section::new(&root, "smtp.smarthost", problems);
            let smarthost = SmarthostConfig {
                host: h.string("host", ""),
                port: h.number("port", 587, 1, 65535) as u16,
                security: h.string("security", "starttls"),
                username: h.string("username", ""),
                password: h.string("password", ""),
            };
            h.finish();
            if smarthost.host.is_empty() {
                problems.push("smtp.smarthost.host: must name the relay host".into());
            }
            if !["starttls", "tls", "none"].contains(&smarthost.security.as_str()) {
                problems.push(format!(
                    "smtp.smarthost.security: {:?} is not one of starttls, tls, none",
                    smarthost.security
                ));
            }
            config.smarthost = Some(smarthost);
        }
        if !DNS_FALLBACKS.contains(&config.dns_fallback.as_str()) {
            problems.push(format!(
                "smtp.dns_fallback: {:?} is not one of \"\" (off), {}",
                config.dns_fallback,
                DNS_FALLBACKS[1..].join(", ")
            ));
        }
        config
    }
}
