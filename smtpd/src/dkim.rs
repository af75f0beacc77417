//! DKIM signing of outgoing mail (RFC 6376 §5) with the sender domain's key from `dkim_keys`
//! (made by `tinydc dkim generate DOMAIN`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use mail_auth::common::crypto::{RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use sqlx::PgPool;

/// Header fields signed (RFC 6376 §5.4.1's recommendations that a message usually has).
pub const SIGNED_HEADERS: [&str; 11] = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
];

/// A domain's key as stored.
#[derive(Debug, Clone)]
pub struct DomainKey {
    pub domain: String,
    pub selector: String,
    /// PKCS#8 DER.
    pub private_key: Vec<u8>,
}

/// The signing key of `domain`, if one was generated.
pub async fn key_for(db: &PgPool, domain: &str) -> anyhow::Result<Option<DomainKey>> {
    let row: Option<(String, String)> = sqlx::query_as("SELECT selector, private_key FROM dkim_keys WHERE domain = $1")
        .bind(domain.to_lowercase())
        .fetch_optional(db)
        .await?;
    let Some((selector, private_key)) = row else {
        return Ok(None);
    };
    Ok(Some(DomainKey {
        domain: domain.to_lowercase(),
        selector,
        private_key: B64.decode(private_key.trim())?,
    }))
}

/// The `DKIM-Signature: ...\r\n` header for `message` signed with `key`.
pub fn sign(message: &[u8], key: &DomainKey) -> anyhow::Result<String> {
    let rsa = RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        key.private_key.as_slice(),
    )))
    .map_err(|e| anyhow::anyhow!("DKIM key of {} unusable: {e}", key.domain))?;
    let signature = DkimSigner::from_key(rsa)
        .domain(key.domain.clone())
        .selector(key.selector.clone())
        .headers(SIGNED_HEADERS)
        .sign(message)
        .map_err(|e| anyhow::anyhow!("DKIM signing failed: {e}"))?;
    Ok(signature.to_header())
}
