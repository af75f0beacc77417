//! DKIM signing of outgoing mail (RFC 6376 §5) with the sender domain's key (`shared::dkim`,
//! made by `tinydc dkim generate DOMAIN`).

use mail_auth::common::crypto::{RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

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

/// A domain's key as stored (read with `shared::dkim::signing_key`).
pub use shared::dkim::DomainKey;

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
