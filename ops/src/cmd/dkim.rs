//! `tinydc dkim generate DOMAIN`: make a DKIM signing key for a mail domain (RSA 2048, stored
//! through `shared::dkim` in the `dkim_keys` table that tinydc-smtpd signs outgoing mail with) and print the DNS TXT record
//! to publish. Running it again replaces the key with a new one under a new selector.
//! `tinydc dkim show DOMAIN` prints the record of the current key again.

use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
use sqlx::PgPool;

/// The DNS record to publish for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    /// `selector._domainkey.domain`
    pub name: String,
    /// `v=DKIM1; k=rsa; p=...`
    pub value: String,
}

impl std::fmt::Display for DnsRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}. IN TXT \"{}\"", self.name, self.value)
    }
}

fn record(key: &shared::dkim::PublicKey) -> DnsRecord {
    DnsRecord {
        name: format!("{}._domainkey.{}", key.selector, key.domain),
        value: format!("v=DKIM1; k=rsa; p={}", key.public_key),
    }
}

/// Make (or replace) the key of `domain` and return its DNS record.
pub async fn create_key(db: &PgPool, domain: &str) -> anyhow::Result<DnsRecord> {
    let domain = shared::accounts::normalize_domain(domain)?;
    if !shared::accounts::is_local_domain(db, &domain).await? {
        anyhow::bail!("domain {domain} is not served here (add it with `tinydc domain add {domain}`)");
    }
    // RSA because every receiver verifies it (Ed25519, RFC 8463, is not yet widely checked).
    let (private_der, public_der) = tokio::task::spawn_blocking(|| -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)?;
        let private = key.to_pkcs8_der()?.as_bytes().to_vec();
        let public = key.to_public_key().to_public_key_der()?.as_bytes().to_vec();
        Ok((private, public))
    })
    .await??;
    // A new selector each time, so a replaced key can stay published while mail signed with
    // it is still in flight.
    let selector = format!("tinydc{}", chrono::Utc::now().format("%Y%m%d%H%M%S"));
    let key = shared::dkim::replace_key(db, &domain, &selector, &private_der, &public_der).await?;
    Ok(record(&key))
}

/// The record of the current key of `domain`, if there is one.
pub async fn current(db: &PgPool, domain: &str) -> anyhow::Result<Option<DnsRecord>> {
    let domain = shared::accounts::normalize_domain(domain)?;
    Ok(shared::dkim::public_key(db, &domain).await?.as_ref().map(record))
}

/// `tinydc dkim generate DOMAIN`: make the key and print what to publish.
pub async fn generate(db: &PgPool, domain: &str) -> anyhow::Result<()> {
    let record = create_key(db, domain).await?;
    println!("DKIM key created. Publish this TXT record in your DNS zone:\n\n{record}\n");
    println!(
        "(Some DNS providers want the name without the domain: {}; long values may need\n\
         splitting into several quoted strings of at most 255 characters.)",
        record.name.split("._domainkey.").next().unwrap_or("").to_string() + "._domainkey"
    );
    Ok(())
}

/// `tinydc dkim show DOMAIN`: print the record of the current key.
pub async fn show(db: &PgPool, domain: &str) -> anyhow::Result<()> {
    match current(db, domain).await? {
        Some(record) => println!("{record}"),
        None => anyhow::bail!("no DKIM key for {domain} (make one with `tinydc dkim generate {domain}`)"),
    }
    Ok(())
}
