//! DNS for SPF, DKIM, DMARC and MX lookups, through mail-auth's resolver and its caches.
//!
//! [`Dns::system`] asks the system's resolver and caches answers until their TTL.
//! [`Dns::fixed`] answers only from records a test put in, and NXDOMAIN for anything else, so
//! tests never touch the network.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::dmarc::Dmarc;
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
    pub authenticator: MessageAuthenticator,
    pub txt: TxtCache,
    pub mx: MxCache,
    pub ipv4: V4Cache,
    pub ipv6: V6Cache,
    pub ptr: PtrCache,
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
    /// The system's resolver (/etc/resolv.conf), caching by TTL.
    pub fn system() -> anyhow::Result<Dns> {
        let authenticator = match mail_auth::hickory_resolver::system_conf::read_system_conf() {
            Ok((config, mut options)) => {
                // A lost UDP answer must not hold a whole SMTP session for the default 5 s:
                // ask again sooner, a few more times. "No such record" answers are kept for a
                // minute at least, since SPF and DMARC ask for the same missing names repeatedly.
                options.timeout = std::time::Duration::from_millis(1500);
                options.attempts = 3;
                options.negative_min_ttl = Some(std::time::Duration::from_secs(60));
                MessageAuthenticator::new(config, options)
            }
            Err(e) => {
                tracing::warn!("cannot read the system's resolver config ({e}); using Cloudflare over TLS");
                MessageAuthenticator::new_cloudflare_tls()
            }
        }
        .map_err(|e| anyhow::anyhow!("no DNS resolver: {e}"))?;
        Ok(Dns {
            authenticator,
            txt: Cache::new(None),
            mx: Cache::new(None),
            ipv4: Cache::new(None),
            ipv6: Cache::new(None),
            ptr: Cache::new(None),
        })
    }

    /// Only the records added with `add_*`; everything else does not exist.
    pub fn fixed() -> Dns {
        let not_found = Txt::Error(mail_auth::Error::Dns(DnsError::RecordNotFound(ResponseCode::NXDomain)));
        Dns {
            // Never used for a query: every lookup is answered by the caches.
            authenticator: MessageAuthenticator::new_cloudflare().expect("a resolver config needs no network"),
            txt: Cache::new(Some(not_found)),
            mx: Cache::new(Some(empty())),
            ipv4: Cache::new(Some(empty())),
            ipv6: Cache::new(Some(empty())),
            ptr: Cache::new(Some(empty())),
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
        match self
            .authenticator
            .mx_lookup(fqdn(domain).as_ref(), Some(&self.mx))
            .await
        {
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
            Err(e) => Err(anyhow::anyhow!("MX lookup for {domain} failed: {e}")),
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

    #[tokio::test]
    async fn fixed_txt_records_and_misses() {
        let dns = Dns::fixed();
        dns.add_txt("example.org", "v=spf1 ip4:192.0.2.1 -all").unwrap();
        assert!(dns.add_txt("_dmarc.example.org", "nonsense").is_err());
        assert!(matches!(dns.txt.get("example.org."), Some(Txt::Spf(_))));
        assert!(matches!(dns.txt.get("other.example."), Some(Txt::Error(_))));
    }
}
