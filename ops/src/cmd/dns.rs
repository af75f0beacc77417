//! `tinydc dns DOMAIN`: every DNS record to publish for a mail domain, in zone-file form, and the
//! same list as data for `tinydc doctor` to compare with what is published.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use shared::Config;

/// The record types tinydc asks to publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    A,
    Aaaa,
    Mx,
    Txt,
    Cname,
    Srv,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::A => "A",
            Kind::Aaaa => "AAAA",
            Kind::Mx => "MX",
            Kind::Txt => "TXT",
            Kind::Cname => "CNAME",
            Kind::Srv => "SRV",
        }
    }
}

/// What a record is for, which decides how `doctor` compares it and how bad a mismatch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// An address of the mail host.
    Address,
    Mx,
    Spf,
    Dkim,
    Dmarc,
    Autoconfig,
    /// RFC 6186 service record.
    Service,
}

/// One record to publish. `value` is in zone-file form (`10 host.`, `"v=spf1 mx -all"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub kind: Kind,
    pub value: String,
    pub purpose: Purpose,
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}. IN {} {}", self.name, self.kind.name(), self.value)
    }
}

/// A line of `tinydc dns` output: a record or a comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Comment(String),
    Record(Record),
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Line::Comment(text) => write!(f, "; {text}"),
            Line::Record(record) => record.fmt(f),
        }
    }
}

/// Where the mail host's addresses came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addresses {
    /// Public IPv4 and whether it was configured (true) or detected (false).
    pub v4: Option<(Ipv4Addr, bool)>,
    pub v6: Option<(Ipv6Addr, bool)>,
    /// The other IPv4 addresses found on the interfaces when no public one was (behind a router).
    pub local_v4: Vec<Ipv4Addr>,
}

impl Addresses {
    /// The configured addresses, else the global ones on this host's interfaces.
    pub fn find(config: &Config) -> Addresses {
        let detected = interface_addresses();
        let mut found = Addresses {
            v4: config.server.public_ipv4.map(|ip| (ip, true)),
            v6: config.server.public_ipv6.map(|ip| (ip, true)),
            local_v4: Vec::new(),
        };
        if found.v4.is_none() {
            found.v4 = detected.iter().find_map(|ip| match ip {
                IpAddr::V4(v4) if is_public_v4(v4) => Some((*v4, false)),
                _ => None,
            });
            if found.v4.is_none() {
                found.local_v4 = detected
                    .iter()
                    .filter_map(|ip| match ip {
                        IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_link_local() => Some(*v4),
                        _ => None,
                    })
                    .collect();
            }
        }
        if found.v6.is_none() {
            found.v6 = detected.iter().find_map(|ip| match ip {
                IpAddr::V6(v6) if is_public_v6(v6) => Some((*v6, false)),
                _ => None,
            });
        }
        found
    }

    /// The public IPv4 address, however it was found.
    pub fn public_v4(&self) -> Option<Ipv4Addr> {
        self.v4.map(|(ip, _)| ip)
    }
}

/// An IPv4 address others on the internet can reach (not private, CGNAT, loopback, link-local,
/// documentation or multicast).
pub fn is_public_v4(ip: &Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || (a == 100 && (64..128).contains(&b)))
}

/// A global unicast IPv6 address (2000::/3), not a documentation one.
pub fn is_public_v6(ip: &Ipv6Addr) -> bool {
    let s = ip.segments();
    (s[0] & 0xe000) == 0x2000 && !(s[0] == 0x2001 && s[1] == 0x0db8)
}

/// Every address on this host's interfaces (getifaddrs(3)).
pub fn interface_addresses() -> Vec<IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces.into_iter().map(|i| i.ip()).collect(),
        Err(e) => {
            tracing::warn!("reading the network interfaces: {e}");
            Vec::new()
        }
    }
}

/// The lines of `tinydc dns DOMAIN`: every record, with comments where a choice was made.
/// `dkim` is the domain's current key record, if it has one.
pub fn records(config: &Config, domain: &str, addresses: &Addresses, dkim: Option<(String, String)>) -> Vec<Line> {
    let host = config.server.hostname.as_str();
    let mut lines = vec![Line::Comment(format!("records for {domain} (mail host {host})"))];
    let record = |name: String, kind, value: String, purpose| {
        Line::Record(Record {
            name,
            kind,
            value,
            purpose,
        })
    };
    let source = |configured: bool, key: &str| {
        if configured {
            format!("from the config (server.{key})")
        } else {
            format!("detected on this machine's interfaces (set server.{key} to override)")
        }
    };
    match addresses.v4 {
        Some((ip, configured)) => {
            lines.push(Line::Comment(format!(
                "IPv4 address {}",
                source(configured, "public_ipv4")
            )));
            lines.push(record(host.into(), Kind::A, ip.to_string(), Purpose::Address));
        }
        None => {
            let private = addresses.local_v4.iter().map(|ip| ip.to_string()).collect::<Vec<_>>();
            lines.push(Line::Comment(if private.is_empty() {
                "no public IPv4 address found: set server.public_ipv4 and publish it".to_string()
            } else {
                format!(
                    "this machine has no public IPv4 address (only {}: behind a router?): publish the router's \
                     public address, forward the mail ports to this machine, and set server.public_ipv4",
                    private.join(", ")
                )
            }));
            lines.push(Line::Comment(format!("{host}. IN A <your public IPv4 address>")));
        }
    }
    // A detected IPv6 address is only worth publishing when something listens on IPv6.
    let listens_v6 = listeners(config).iter().any(|(_, addr)| addr.is_ipv6());
    match addresses.v6 {
        Some((ip, configured)) if configured || listens_v6 => {
            lines.push(Line::Comment(format!(
                "IPv6 address {}",
                source(configured, "public_ipv6")
            )));
            lines.push(record(host.into(), Kind::Aaaa, ip.to_string(), Purpose::Address));
        }
        Some((ip, _)) => lines.push(Line::Comment(format!(
            "no AAAA: this machine has IPv6 address {ip} but every listener is IPv4 only (listen on [::] to serve IPv6)"
        ))),
        None => {}
    }
    // RFC 5321 section 5.1: mail for the domain goes to the host named by its MX.
    lines.push(record(domain.into(), Kind::Mx, format!("10 {host}."), Purpose::Mx));
    // RFC 7208: only the MX hosts send mail for the domain.
    lines.push(record(
        domain.into(),
        Kind::Txt,
        "\"v=spf1 mx -all\"".into(),
        Purpose::Spf,
    ));
    match dkim {
        Some((name, value)) => lines.push(record(name, Kind::Txt, format!("\"{value}\""), Purpose::Dkim)),
        None => lines.push(Line::Comment(format!(
            "no DKIM key yet: run `tinydc dkim generate {domain}` and publish its record"
        ))),
    }
    // RFC 7489 section 6.1.
    lines.push(record(
        format!("_dmarc.{domain}"),
        Kind::Txt,
        "\"v=DMARC1; p=quarantine; adkim=s; aspf=s\"".into(),
        Purpose::Dmarc,
    ));
    // Thunderbird's autoconfig: https://autoconfig.<domain>/mail/config-v1.1.xml
    lines.push(record(
        format!("autoconfig.{domain}"),
        Kind::Cname,
        format!("{host}."),
        Purpose::Autoconfig,
    ));
    // RFC 6186 section 3: service records for mail clients. RFC 8314 section 5.1: implicit TLS is
    // preferred, so its records get the lower (preferred) priority numbers.
    lines.push(Line::Comment(
        "mail client service records (RFC 6186), implicit TLS preferred (RFC 8314)".into(),
    ));
    let services = [
        ("_imaps._tcp", config.imap.tls_listen, 0),
        ("_submissions._tcp", config.smtp.submissions_listen, 0),
        ("_imap._tcp", config.imap.listen, 10),
        ("_submission._tcp", config.smtp.submission_listen, 10),
    ];
    for (service, listen, priority) in services {
        let value = match listen {
            Some(addr) => format!("{priority} 1 {} {host}.", addr.port()),
            // RFC 6186 section 4: a target of "." says the service is not offered.
            None => "0 0 0 .".to_string(),
        };
        lines.push(record(
            format!("{service}.{domain}"),
            Kind::Srv,
            value,
            Purpose::Service,
        ));
    }
    lines
}

/// Every configured listener, by a short name.
pub fn listeners(config: &Config) -> Vec<(&'static str, std::net::SocketAddr)> {
    [
        ("smtp (MX)", config.smtp.mx_listen),
        ("submission", config.smtp.submission_listen),
        ("submissions", config.smtp.submissions_listen),
        ("imap", config.imap.listen),
        ("imaps", config.imap.tls_listen),
        ("https", config.dav.https_listen),
        ("http", config.dav.http_listen),
    ]
    .into_iter()
    .filter_map(|(name, addr)| addr.map(|a| (name, a)))
    .collect()
}

/// The current DKIM record of `domain` as (name, value).
pub async fn dkim_record(db: &sqlx::PgPool, domain: &str) -> anyhow::Result<Option<(String, String)>> {
    Ok(super::dkim::current(db, domain).await?.map(|r| (r.name, r.value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_and_private_addresses() {
        for ip in [
            "192.168.1.5",
            "10.0.0.1",
            "172.16.3.4",
            "100.64.0.1",
            "127.0.0.1",
            "169.254.1.1",
            "192.0.2.1",
        ] {
            assert!(!is_public_v4(&ip.parse().unwrap()), "{ip}");
        }
        assert!(is_public_v4(&"81.2.69.142".parse().unwrap()));
        assert!(is_public_v6(&"2a01:4f8::1".parse().unwrap()));
        for ip in ["fe80::1", "fd00::1", "::1", "2001:db8::1"] {
            assert!(!is_public_v6(&ip.parse().unwrap()), "{ip}");
        }
        assert!(interface_addresses().iter().any(|ip| ip.is_loopback()));
    }
}
