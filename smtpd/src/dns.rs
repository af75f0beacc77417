//! DNS for SPF, DKIM, DMARC and MX lookups, through mail-auth's resolver and its caches.
//!
//! [`Dns::system`] asks the system's resolver and caches answers until their TTL.
//! [`Dns::fixed`] answers only from records a test put in, and NXDOMAIN for anything else, so
//! tests never touch the network.
//!
//! Only the system's resolver (/etc/resolv.conf) is asked unless `[smtp] dns_fallback` names a
//! public resolver: the names looked up are those of the users' correspondents, and they go to
//! a third party only when the operator chose so ([`resolver_setup`]). Resolver trouble is
//! logged at warn, at most once a minute ([`Dns::trouble`]).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::dmarc::Dmarc;
use mail_auth::hickory_resolver::config::{CLOUDFLARE, GOOGLE, QUAD9, ResolverConfig, ResolverOpts};
use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::spf::Spf;
use mail_auth::{DnsError, DnssecStatus, MX, MessageAuthenticator, Parameters, RecordSet, ResolverCache, Txt};

/// Entries kept before a cache is emptied (bounded memory).
const CACHE_MAX: usize = 10_000;

/// A cache of one record type. In fixed mode, a miss is an authoritative "no such record".
pub struct Cache<K, V> {
    entries: Mutex<HashMap<K, (V, Option<Instant>)>>,
    miss: Option<V>,
}

impl<K: Hash + Eq, V: Clone> Cache<K, V> {
    fn new(miss: Option<V>) -> Cache<K, V> {
        Cache {
            entries: Mutex::new(HashMap::new()),
            miss,
        }
    }

    fn put(&self, key: K, value: V) {
        self.entries.lock().expect("cache lock").insert(key, (value, None));
    }
}

impl<K: Hash + Eq, V: Clone> ResolverCache<K, V> for Cache<K, V> {
    fn get<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entries = self.entries.lock().expect("cache lock");
        match entries.get(name) {
            Some((value, None)) => Some(value.clone()),
            Some((value, Some(until))) if *until > Instant::now() => Some(value.clone()),
            _ => self.miss.clone(),
        }
    }

    fn remove<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.lock().expect("cache lock").remove(name).map(|(v, _)| v)
    }

    fn insert(&self, key: K, value: V, valid_until: Instant) {
        let mut entries = self.entries.lock().expect("cache lock");
        if entries.len() >= CACHE_MAX {
            entries.clear();
        }
        entries.insert(key, (value, Some(valid_until)));
    }
}

fn empty<T>() -> RecordSet<T> {
    RecordSet {
        rrset: Arc::from(Vec::new()),
        dnssec_status: DnssecStatus::Indeterminate,
    }
}

pub type TxtCache = Cache<Box<str>, Txt>;
pub type MxCache = Cache<Box<str>, RecordSet<MX>>;
pub type V4Cache = Cache<Box<str>, RecordSet<Ipv4Addr>>;
pub type V6Cache = Cache<Box<str>, RecordSet<Ipv6Addr>>;
pub type PtrCache = Cache<IpAddr, RecordSet<Box<str>>>;

/// The resolver with its caches.
pub struct Dns {
    /// mail-auth's resolver, built on the first lookup ([`Dns::authenticator`]): an smtpd that
    /// looks nothing up (idle, or only local submission) never pays for building it (issue #12,
    /// the daemons' idle memory). Kept once built, or the reason it could not be.
    authenticator: OnceLock<Result<MessageAuthenticator, String>>,
    resolver: (ResolverConfig, ResolverOpts),
    pub txt: TxtCache,
    pub mx: MxCache,
    pub ipv4: V4Cache,
    pub ipv6: V6Cache,
    pub ptr: PtrCache,
    trouble_log: Mutex<TroubleLog>,
}

/// At most one "resolver trouble" line per this time; the ones skipped are counted in the next.
const TROUBLE_LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Default)]
struct TroubleLog {
    last: Option<Instant>,
    skipped: u64,
}

/// The values `[smtp] dns_fallback` takes (see [`resolver_setup`]), "" first.
pub const DNS_FALLBACKS: &[&str] = shared::config::DNS_FALLBACKS;

/// The resolver config to use, from the system's (or why it could not be read) and the
/// `[smtp] dns_fallback` setting. The system's config is used whenever it names a server. When
/// it cannot be read or names none, the fallback is used if one is set (`cloudflare`, `google`,
/// `quad9` over UDP/TCP; `cloudflare-tls`, `quad9-tls` over DNS-over-TLS); with the default ""
/// the config names no server at all, so lookups fail (mail waits in the queue, inbound checks
/// say temperror) and no name leaves the machine.
pub fn resolver_setup(
    system: Result<(ResolverConfig, ResolverOpts), String>,
    fallback: &str,
) -> anyhow::Result<(ResolverConfig, ResolverOpts)> {
    let why = match system {
        Ok((config, mut options)) if !config.name_servers().is_empty() => {
            // A lost UDP answer must not hold a whole SMTP session for the default 5 s: ask
            // again sooner, a few more times. "No such record" answers are kept for a minute at
            // least, since SPF and DMARC ask for the same missing names repeatedly.
            options.timeout = Duration::from_millis(1500);
            options.attempts = 3;
            options.negative_min_ttl = Some(Duration::from_secs(60));
            return Ok((config, options));
        }
        Ok(_) => "it names no name server".to_string(),
        Err(e) => e,
    };
    let config = match fallback {
        "" => {
            tracing::error!(
                "cannot use the system's DNS resolver ({why}); DNS lookups will fail until it is fixed \
                 (fix /etc/resolv.conf, or set [smtp] dns_fallback to send lookups to a public resolver)"
            );
            return Ok((ResolverConfig::from_name_servers(Vec::new()), ResolverOpts::default()));
        }
        "cloudflare" => ResolverConfig::udp_and_tcp(&CLOUDFLARE),
        "cloudflare-tls" => ResolverConfig::tls(&CLOUDFLARE),
        "google" => ResolverConfig::udp_and_tcp(&GOOGLE),
        "quad9" => ResolverConfig::udp_and_tcp(&QUAD9),
        "quad9-tls" => ResolverConfig::tls(&QUAD9),
        other => anyhow::bail!("[smtp] dns_fallback: unknown resolver {other:?}"),
    };
    tracing::warn!("cannot use the system's DNS resolver ({why}); using {fallback} as [smtp] dns_fallback says");
    Ok((config, ResolverOpts::default()))
}

/// Names are looked up as lower-case FQDNs with the final dot.
fn fqdn(name: &str) -> Box<str> {
    let mut name = name.trim().to_ascii_lowercase();
    if !name.ends_with('.') {
        name.push('.');
    }
    name.into_boxed_str()
}

impl Dns {
    /// The system's resolver (/etc/resolv.conf), caching by TTL; `fallback` is
    /// `[smtp] dns_fallback` ([`resolver_setup`]).
    pub fn system(fallback: &str) -> anyhow::Result<Dns> {
        let system = mail_auth::hickory_resolver::system_conf::read_system_conf().map_err(|e| e.to_string());
        let (config, options) = resolver_setup(system, fallback)?;
        Dns::with_config(config, options)
    }

    /// A resolver asking exactly the servers in `config`.
    pub fn with_config(config: ResolverConfig, options: ResolverOpts) -> anyhow::Result<Dns> {
        Ok(Dns {
            authenticator: OnceLock::new(),
            resolver: (config, options),
            txt: Cache::new(None),
            mx: Cache::new(None),
            ipv4: Cache::new(None),
            ipv6: Cache::new(None),
            ptr: Cache::new(None),
            trouble_log: Mutex::new(TroubleLog::default()),
        })
    }

    /// Log a failed lookup (not an authoritative "no such record") at warn, at most once per
    /// [`TROUBLE_LOG_EVERY`], so a resolver that is down does not fill the log.
    pub fn trouble(&self, what: &str, error: &dyn std::fmt::Display) {
        let mut log = self.trouble_log.lock().unwrap_or_else(|p| p.into_inner());
        if log.last.is_some_and(|t| t.elapsed() < TROUBLE_LOG_EVERY) {
            log.skipped += 1;
            return;
        }
        let skipped = std::mem::take(&mut log.skipped);
        log.last = Some(Instant::now());
        drop(log);
        if skipped > 0 {
            tracing::warn!("DNS trouble: {what}: {error} ({skipped} more since the last such line)");
        } else {
            tracing::warn!("DNS trouble: {what}: {error}");
        }
    }

    /// Only the records added with `add_*`; everything else does not exist.
    pub fn fixed() -> Dns {
        let not_found = Txt::Error(mail_auth::Error::Dns(DnsError::RecordNotFound(ResponseCode::NXDomain)));
        Dns {
            // Never used for a query (every lookup is answered by the caches), and it names no
            // server anyway.
            authenticator: OnceLock::new(),
            resolver: (ResolverConfig::from_name_servers(Vec::new()), ResolverOpts::default()),
            txt: Cache::new(Some(not_found)),
            mx: Cache::new(Some(empty())),
            ipv4: Cache::new(Some(empty())),
            ipv6: Cache::new(Some(empty())),
            ptr: Cache::new(Some(empty())),
            trouble_log: Mutex::new(TroubleLog::default()),
        }
    }

    /// Add a TXT record: SPF (`v=spf1`), DMARC (`_dmarc.` names) or a DKIM key (`._domainkey.`).
    pub fn add_txt(&self, name: &str, text: &str) -> anyhow::Result<()> {
        let key = fqdn(name);
        let bytes = text.as_bytes();
        let parse_error = |e: mail_auth::Error| anyhow::anyhow!("bad TXT record for {name}: {e}");
        let value = if key.contains("._domainkey.") {
            Txt::DomainKey(Arc::new(DomainKey::parse(bytes).map_err(parse_error)?))
        } else if key.starts_with("_dmarc.") {
            Txt::Dmarc(Arc::new(Dmarc::parse(bytes).map_err(parse_error)?))
        } else {
            Txt::Spf(Arc::new(Spf::parse(bytes).map_err(parse_error)?))
        };
        self.txt.put(key, value);
        Ok(())
    }

    /// Add an MX record.
    pub fn add_mx(&self, domain: &str, host: &str, preference: u16) {
        let key = fqdn(domain);
        let mut records: Vec<MX> = self
            .mx
            .entries
            .lock()
            .expect("cache lock")
            .get(&key)
            .map(|(set, _)| set.rrset.to_vec())
            .unwrap_or_default();
        records.push(MX {
            exchanges: vec![fqdn(host)].into_boxed_slice(),
            preference,
        });
        self.mx.put(
            key,
            RecordSet {
                rrset: Arc::from(records),
                dnssec_status: DnssecStatus::Indeterminate,
            },
        );
    }

    /// mail-auth parameters that use these caches.
    /// mail-auth's resolver, built on the first call; `Err` says why it cannot be built (the
    /// caller treats it as a temporary DNS failure).
    pub fn authenticator(&self) -> Result<&MessageAuthenticator, &str> {
        self.authenticator
            .get_or_init(|| {
                let (config, options) = self.resolver.clone();
                MessageAuthenticator::new(config, options).map_err(|e| format!("no DNS resolver: {e}"))
            })
            .as_ref()
            .map_err(String::as_str)
    }

    pub fn params<P>(&self, params: P) -> Parameters<'_, P, TxtCache, MxCache, V4Cache, V6Cache, PtrCache> {
        Parameters::new(params)
            .with_txt_cache(&self.txt)
            .with_mx_cache(&self.mx)
            .with_ipv4_cache(&self.ipv4)
            .with_ipv6_cache(&self.ipv6)
            .with_ptr_cache(&self.ptr)
    }

    /// The mail exchangers of `domain`, best first; RFC 5321 §5.1: no MX means the domain itself.
    pub async fn mail_hosts(&self, domain: &str) -> anyhow::Result<Vec<String>> {
        let authenticator = self.authenticator().map_err(|why| anyhow::anyhow!("{why}"))?;
        match authenticator.mx_lookup(fqdn(domain).as_ref(), Some(&self.mx)).await {
            Ok(set) => {
                let mut records = set.rrset.to_vec();
                records.sort_by_key(|mx| mx.preference);
                let hosts: Vec<String> = records
                    .iter()
                    .flat_map(|mx| mx.exchanges.iter())
                    .map(|h| h.trim_end_matches('.').to_string())
                    .filter(|h| !h.is_empty())
                    .collect();
                if hosts.is_empty() {
                    Ok(vec![domain.to_string()])
                } else {
                    Ok(hosts)
                }
            }
            Err(mail_auth::Error::Dns(DnsError::RecordNotFound(_))) => Ok(vec![domain.to_string()]),
            Err(e) => {
                self.trouble(&format!("MX lookup for {domain}"), &e);
                Err(anyhow::anyhow!("MX lookup for {domain} failed: {e}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fixed_mx_records_best_first() {
        let dns = Dns::fixed();
        dns.add_mx("example.org", "backup.example.org", 20);
        dns.add_mx("Example.org", "mx1.example.org.", 10);
        assert_eq!(
            dns.mail_hosts("example.org").await.unwrap(),
            ["mx1.example.org", "backup.example.org"]
        );
        // RFC 5321 §5.1: no MX record, the domain itself.
        assert_eq!(dns.mail_hosts("nomx.example").await.unwrap(), ["nomx.example"]);
    }

    fn servers(config: &ResolverConfig) -> Vec<IpAddr> {
        config.name_servers().iter().map(|s| s.ip).collect()
    }

    /// With `dns_fallback` off (the default), a system resolver that cannot be read, or names
    /// no server, leaves a config naming no server: nothing is sent to any third party, and a
    /// lookup fails at once instead.
    #[tokio::test]
    async fn without_a_fallback_a_broken_system_resolver_asks_nobody() {
        for system in [
            Err("no /etc/resolv.conf".to_string()),
            Ok((ResolverConfig::from_name_servers(Vec::new()), ResolverOpts::default())),
        ] {
            let (config, options) = resolver_setup(system, "").unwrap();
            assert_eq!(servers(&config), Vec::<IpAddr>::new());
            let dns = Dns::with_config(config, options).unwrap();
            let started = Instant::now();
            let looked_up = tokio::time::timeout(Duration::from_secs(10), dns.mail_hosts("example.com"))
                .await
                .expect("a lookup with no server fails at once");
            assert!(looked_up.is_err(), "{looked_up:?}");
            assert!(started.elapsed() < Duration::from_secs(5));
        }
    }

    /// A working system resolver is used as it is, fallback or not; a chosen fallback is used
    /// only when the system's cannot be; an unknown name is an error.
    #[test]
    fn the_fallback_is_used_only_when_chosen_and_needed() {
        let local: IpAddr = "127.0.0.53".parse().unwrap();
        let system = || {
            let config = ResolverConfig::from_name_servers(vec![
                mail_auth::hickory_resolver::config::NameServerConfig::udp_and_tcp(local),
            ]);
            Ok((config, ResolverOpts::default()))
        };
        for fallback in DNS_FALLBACKS {
            let (config, options) = resolver_setup(system(), fallback).unwrap();
            assert_eq!(servers(&config), [local]);
            assert_eq!(options.timeout, Duration::from_millis(1500));
        }
        let (config, _) = resolver_setup(Err("unreadable".into()), "quad9").unwrap();
        let quad9 = servers(&config);
        assert!(
            !quad9.is_empty() && quad9.iter().all(|ip| QUAD9.ips.contains(ip)),
            "{quad9:?}"
        );
        let (config, _) = resolver_setup(Err("unreadable".into()), "cloudflare-tls").unwrap();
        assert!(servers(&config).iter().all(|ip| CLOUDFLARE.ips.contains(ip)));
        assert!(resolver_setup(Err("unreadable".into()), "8.8.8.8").is_err());
    }

    #[tokio::test]
    async fn fixed_txt_records_and_misses() {
        let dns = Dns::fixed();
        dns.add_txt("example.org", "v=spf1 ip4:192.0.2.1 -all").unwrap();
        assert!(dns.add_txt("_dmarc.example.org", "nonsense").is_err());
        assert!(matches!(dns.txt.get("example.org."), Some(Txt::Spf(_))));
        assert!(matches!(dns.txt.get("other.example."), Some(Txt::Error(_))));
    }
}
