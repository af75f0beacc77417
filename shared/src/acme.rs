//! Certificates from an ACME CA (RFC 8555), e.g. Let's Encrypt, for the mail host name and
//! `autoconfig.<domain>` of every domain, answered by the process that runs it (davd) with
//! HTTP-01 (RFC 8555 §8.3) on the optional port-80 listener (`[tls] acme_http_listen`, served
//! by `davd::acme_http` from [`Http01Answers`]) or TLS-ALPN-01 (RFC 8737) on its HTTPS listener
//! (through [`CertStore`]'s challenge certificates).
//!
//! Which one: HTTP-01 whenever the port-80 listener is on and the CA offers it, TLS-ALPN-01
//! otherwise. Turning port 80 on is the person's explicit choice for this, and HTTP-01 is the
//! one that also works when port 443 does not reach davd's own TLS (a router forwarding 443
//! elsewhere, a TLS-terminating proxy in front of davd's loopback HTTP listener); it is also the
//! one every CA offers. TLS-ALPN-01 needs nothing but the HTTPS port, so it stays the choice of
//! an install without port 80. After an order through HTTP-01 fails, the next check tries
//! TLS-ALPN-01 (when davd serves HTTPS), then HTTP-01 again, and so on ([`run`]).
//!
//! The account key is kept in `DATA/acme/account.json` (mode 0600); the issued pair is written
//! to `[tls] cert_file`/`key_file`, where every daemon's [`CertStore`] picks it up. A check runs
//! at start and every `[tls] acme_check_secs`: a new certificate is ordered when the files do
//! not load, do not name every name, or have less than [`RENEW_BEFORE`] left.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::acme_https::AcmeHttps;
use crate::context::Context;
use crate::net::Shutdown;
use crate::tls::CertStore;

/// Renew when less than this is left (Let's Encrypt issues for 90 days or less).
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);

/// The HTTP-01 answers (RFC 8555 §8.3) the port-80 listener gives while an order waits for the
/// CA: token -> key authorization. Holds at most one entry per name of the order in progress.
#[derive(Debug, Default)]
pub struct Http01Answers {
    tokens: Mutex<HashMap<String, String>>,
}

impl Http01Answers {
    pub fn new() -> Arc<Http01Answers> {
        Arc::new(Http01Answers::default())
    }

    /// The key authorization for `token`, while its challenge is pending.
    pub fn get(&self, token: &str) -> Option<String> {
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
    }

    fn set(&self, token: &str, key_authorization: &str) {
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.to_string(), key_authorization.to_string());
    }

    fn clear(&self, token: &str) {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).remove(token);
    }
}

/// Where the process answers the CA's challenges: the HTTPS listener's certificates
/// (TLS-ALPN-01) and/or the port-80 listener's answers (HTTP-01). At least one is set.
#[derive(Debug, Clone)]
pub struct Responders {
    pub tls_alpn: Option<Arc<CertStore>>,
    pub http: Option<Arc<Http01Answers>>,
}

/// The challenge to answer for one authorization, of those the CA offers: HTTP-01 when this
/// process serves port 80, else TLS-ALPN-01 when it serves HTTPS (see the module's comment).
pub fn pick_challenge(offered: &[ChallengeType], http: bool, tls_alpn: bool) -> Option<ChallengeType> {
    let usable = |t: ChallengeType| offered.contains(&t);
    if http && usable(ChallengeType::Http01) {
        Some(ChallengeType::Http01)
    } else if tls_alpn && usable(ChallengeType::TlsAlpn01) {
        Some(ChallengeType::TlsAlpn01)
    } else {
        None
    }
}

/// The names one certificate must cover: the host name, then `autoconfig.<domain>` of each
/// domain (Thunderbird's autoconfig over HTTPS), without duplicates.
pub fn names(hostname: &str, domains: &[String]) -> Vec<String> {
    let mut names = vec![hostname.to_ascii_lowercase()];
    for d in domains {
        let name = format!("autoconfig.{}", d.to_ascii_lowercase());
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// Why the certificate in `cert_file` needs replacing for `names` at `now` (seconds since the
/// epoch), or `None` when it is fine.
pub fn renewal_reason(cert_file: &Path, names: &[String], now: i64) -> Option<String> {
    let der = match CertificateDer::pem_file_iter(cert_file).ok().and_then(|mut i| i.next()) {
        Some(Ok(der)) => der,
        _ => return Some(format!("{} holds no certificate", cert_file.display())),
    };
    let (_, cert) = match x509_parser::parse_x509_certificate(&der) {
        Ok(parsed) => parsed,
        Err(e) => return Some(format!("{} does not parse: {e}", cert_file.display())),
    };
    let mut covered: Vec<String> = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(n) = name {
                covered.push(n.to_ascii_lowercase());
            }
        }
    }
    if let Some(missing) = names.iter().find(|n| !covered.contains(n)) {
        return Some(format!("the certificate does not name {missing}"));
    }
    let left = cert.validity().not_after.timestamp() - now;
    if left < RENEW_BEFORE.as_secs() as i64 {
        return Some(format!("the certificate has {} days left", left / 86_400));
    }
    None
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path.parent().context("a file path has a folder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension("acme-tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// The ACME account: loaded from `DATA/acme/account.json`, or registered and saved there.
async fn account(ctx: &Context) -> anyhow::Result<Account> {
    let tls = &ctx.config.tls;
    // The CA's HTTPS: the system's CA certificates, or only `acme_ca_file`'s (a test CA).
    let builder = || -> anyhow::Result<_> {
        let http = AcmeHttps::new(tls.acme_ca_file.as_deref())?;
        Ok(Account::builder_with_http(Box::new(http)))
    };
    let file = ctx.config.data_dir.join("acme/account.json");
    if let Ok(text) = std::fs::read_to_string(&file) {
        let credentials: AccountCredentials =
            serde_json::from_str(&text).with_context(|| format!("reading {}", file.display()))?;
        return Ok(builder()?.from_credentials(credentials).await?);
    }
    let contact = (!tls.acme_contact.is_empty()).then(|| format!("mailto:{}", tls.acme_contact));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder()?
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            tls.acme_directory.clone(),
            None,
        )
        .await?;
    write_atomic(&file, serde_json::to_string(&credentials)?.as_bytes(), 0o600)?;
    tracing::info!("registered an ACME account at {}", tls.acme_directory);
    Ok(account)
}

/// Order, answer (HTTP-01 or TLS-ALPN-01) and install a certificate for `names`.
async fn issue(ctx: &Context, responders: &Responders, names: &[String]) -> anyhow::Result<()> {
    let account = account(ctx).await?;
    let identifiers: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    // What was published, to withdraw whatever happens once the order is done with.
    let mut alpn_answered = Vec::new();
    let mut http_answered = Vec::new();
    let status = async {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                status => bail!("authorization is {status:?}"),
            }
            let offered: Vec<ChallengeType> = authz.challenges.iter().map(|c| c.r#type.clone()).collect();
            let kind = pick_challenge(&offered, responders.http.is_some(), responders.tls_alpn.is_some())
                .with_context(|| {
                    format!(
                        "the CA offers {offered:?}; this server answers http-01 only with \
                         tls.acme_http_listen set and tls-alpn-01 only with dav.https_listen"
                    )
                })?;
            let mut challenge = authz.challenge(kind.clone()).context("the offered challenge")?;
            let name = match &challenge.identifier().identifier {
                Identifier::Dns(name) => name.clone(),
                other => bail!("cannot answer for {other:?}"),
            };
            match (kind, &responders.http, &responders.tls_alpn) {
                (ChallengeType::Http01, Some(http), _) => {
                    // RFC 8555 §8.3: GET /.well-known/acme-challenge/<token> answers the key
                    // authorization.
                    let token = challenge.token.clone();
                    http.set(&token, challenge.key_authorization().as_str());
                    http_answered.push(token);
                    tracing::info!("ACME: answering http-01 for {name}");
                }
                (ChallengeType::TlsAlpn01, _, Some(store)) => {
                    // RFC 8737 §3: a self-signed certificate for the name with the critical
                    // id-pe-acmeIdentifier extension holding SHA-256 of the key authorization.
                    let digest = challenge.key_authorization().digest();
                    let mut params = rcgen::CertificateParams::new(vec![name.clone()])?;
                    params
                        .custom_extensions
                        .push(rcgen::CustomExtension::new_acme_identifier(digest.as_ref()));
                    let key = rcgen::KeyPair::generate()?;
                    let cert = params.self_signed(&key)?;
                    store.set_challenge(&name, cert.der().clone(), key.serialize_der())?;
                    alpn_answered.push(name.clone());
                    tracing::info!("ACME: answering tls-alpn-01 for {name}");
                }
                (kind, _, _) => bail!("no responder for {kind:?}"),
            }
            challenge.set_ready().await?;
        }
        Ok::<_, anyhow::Error>(order.poll_ready(&RetryPolicy::default()).await?)
    }
    .await;
    if let Some(store) = &responders.tls_alpn {
        for name in &alpn_answered {
            store.clear_challenge(name);
        }
    }
    if let Some(http) = &responders.http {
        for token in &http_answered {
            http.clear(token);
        }
    }
    let status = status?;
    if status != OrderStatus::Ready {
        bail!(
            "the order is {status:?}, not ready (did the CA reach this server's port 80 or HTTPS port as every name?)"
        );
    }
    let key_pem = order.finalize().await?;
    let chain_pem = order.poll_certificate(&RetryPolicy::default()).await?;
    let tls = &ctx.config.tls;
    // Key first: until the certificate follows, the pair does not match and CertStore keeps the
    // old one; then the certificate, and the pair loads.
    write_atomic(&tls.key_file, key_pem.as_bytes(), 0o600)?;
    write_atomic(&tls.cert_file, chain_pem.as_bytes(), 0o644)?;
    tracing::info!("installed a new certificate for {}", names.join(", "));
    Ok(())
}

/// Check now and then every `[tls] acme_check_secs`, renewing when due, until shutdown.
pub async fn run(ctx: Arc<Context>, responders: Responders, shutdown: Shutdown) {
    let every = Duration::from_secs(ctx.config.tls.acme_check_secs);
    // After an order answered with HTTP-01 fails (port 80 not forwarded, say), the next one
    // tries TLS-ALPN-01 when the HTTPS listener can answer it, and the one after that HTTP-01
    // again: one blocked port does not keep the certificate from renewing.
    let mut skip_http = false;
    loop {
        let domains = crate::accounts::list_domains(&ctx.db).await.unwrap_or_else(|e| {
            tracing::warn!("ACME: cannot list domains: {e}");
            Vec::new()
        });
        let names = names(&ctx.config.server.hostname, &domains);
        let now = chrono::Utc::now().timestamp();
        if let Some(reason) = renewal_reason(&ctx.config.tls.cert_file, &names, now) {
            tracing::info!("ACME: ordering a certificate for {} ({reason})", names.join(", "));
            let this_time = Responders {
                tls_alpn: responders.tls_alpn.clone(),
                http: responders.http.clone().filter(|_| !skip_http),
            };
            match issue(&ctx, &this_time, &names).await {
                Ok(()) => skip_http = false,
                Err(e) => {
                    skip_http = this_time.http.is_some() && this_time.tls_alpn.is_some();
                    let next = if skip_http { " with tls-alpn-01" } else { "" };
                    tracing::error!("ACME: no certificate this time, will try again{next}: {e:#}");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_names_are_the_host_and_each_autoconfig() {
        let domains = vec!["Example.org".to_string(), "example.net".into(), "example.org".into()];
        assert_eq!(
            names("Mail.Example.org", &domains),
            ["mail.example.org", "autoconfig.example.org", "autoconfig.example.net"]
        );
    }

    #[test]
    fn http_01_is_preferred_when_port_80_is_served() {
        use ChallengeType::{Dns01, Http01, TlsAlpn01};
        let all = [Http01, Dns01, TlsAlpn01];
        assert_eq!(pick_challenge(&all, true, true), Some(Http01));
        assert_eq!(pick_challenge(&all, false, true), Some(TlsAlpn01));
        assert_eq!(pick_challenge(&all, true, false), Some(Http01));
        assert_eq!(pick_challenge(&[TlsAlpn01], true, true), Some(TlsAlpn01));
        assert_eq!(pick_challenge(&[Http01], false, true), None);
        assert_eq!(pick_challenge(&[Dns01], true, true), None);
    }

    fn write_cert(dir: &Path, names: &[&str], not_after: Option<(i32, u8, u8)>) -> std::path::PathBuf {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        if let Some((y, m, d)) = not_after {
            params.not_after = rcgen::date_time_ymd(y, m, d);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let file = dir.join("cert.pem");
        std::fs::write(&file, params.self_signed(&key).unwrap().pem()).unwrap();
        file
    }

    #[test]
    fn renewal_is_due_for_missing_names_little_time_left_or_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let want = vec!["mail.example.org".to_string(), "autoconfig.example.org".into()];
        // 2026-12-01 00:00 UTC.
        let now = 1_796_083_200;
        let file = write_cert(
            dir.path(),
            &["mail.example.org", "autoconfig.example.org"],
            Some((2027, 3, 1)),
        );
        assert_eq!(renewal_reason(&file, &want, now), None, "90 days left");
        let file = write_cert(
            dir.path(),
            &["mail.example.org", "autoconfig.example.org"],
            Some((2026, 12, 20)),
        );
        assert!(renewal_reason(&file, &want, now).unwrap().contains("days left"));
        let file = write_cert(dir.path(), &["mail.example.org", "localhost"], None);
        assert!(
            renewal_reason(&file, &want, now)
                .unwrap()
                .contains("autoconfig.example.org")
        );
        std::fs::write(&file, "junk").unwrap();
        assert!(renewal_reason(&file, &want, now).is_some());
        assert!(renewal_reason(&dir.path().join("none.pem"), &want, now).is_some());
    }
}
