//! DKIM signing keys, table `dkim_keys` (one per mail domain): the one module that reads and
//! writes it. `tinydc dkim generate` makes a key and stores it with [`replace_key`]; tinydc-smtpd
//! signs outgoing mail (RFC 6376 §5) with [`signing_key`]; `tinydc dkim show` and `tinydc dns`
//! print the record to publish from [`public_key`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sqlx::PgPool;

/// A domain's signing key as stored.
#[derive(Debug, Clone)]
pub struct DomainKey {
    pub domain: String,
    pub selector: String,
    /// PKCS#8 DER.
    pub private_key: Vec<u8>,
}

/// A domain's published half: the selector and the base64 of the DER SubjectPublicKeyInfo
/// (the `p=` of the DNS record, RFC 6376 §3.6.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub domain: String,
    pub selector: String,
    pub public_key: String,
}

/// The signing key of `domain`, if one was generated.
pub async fn signing_key(db: &PgPool, domain: &str) -> anyhow::Result<Option<DomainKey>> {
    let domain = domain.to_lowercase();
    let row = sqlx::query!("SELECT selector, private_key FROM dkim_keys WHERE domain = $1", domain)
        .fetch_optional(db)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some(DomainKey {
        domain,
        selector: row.selector,
        private_key: B64.decode(row.private_key.trim())?,
    }))
}

/// The public key of `domain` (a normalized domain name), if there is one.
pub async fn public_key(db: &PgPool, domain: &str) -> anyhow::Result<Option<PublicKey>> {
    let row = sqlx::query!("SELECT selector, public_key FROM dkim_keys WHERE domain = $1", domain)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|row| PublicKey {
        domain: domain.to_string(),
        selector: row.selector,
        public_key: row.public_key,
    }))
}

/// Store (or replace) the RSA key of `domain` (a normalized domain name) under `selector`:
/// `private_der` is PKCS#8, `public_der` the SubjectPublicKeyInfo. Returns what to publish.
pub async fn replace_key(
    db: &PgPool,
    domain: &str,
    selector: &str,
    private_der: &[u8],
    public_der: &[u8],
) -> anyhow::Result<PublicKey> {
    let public = B64.encode(public_der);
    sqlx::query!(
        "INSERT INTO dkim_keys (domain, selector, algorithm, private_key, public_key)
         VALUES ($1, $2, 'rsa-sha256', $3, $4)
         ON CONFLICT (domain) DO UPDATE SET selector = $2, algorithm = 'rsa-sha256', private_key = $3,
             public_key = $4, created_at = now()",
        domain,
        selector,
        B64.encode(private_der),
        public,
    )
    .execute(db)
    .await?;
    Ok(PublicKey {
        domain: domain.to_string(),
        selector: selector.to_string(),
        public_key: public,
    })
}
