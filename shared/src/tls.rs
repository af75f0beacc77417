//! TLS for every listener: one rustls crypto provider (ring) for the whole workspace, the
//! certificate and key from PEM files, and a self-signed pair for a fresh install.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Install ring as the process's rustls provider. Several crates pull in rustls with different
/// defaults; without one explicit provider rustls panics. Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A server config from PEM files (certificate chain and private key).
pub fn server_config(cert_file: &Path, key_file: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    install_crypto_provider();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .with_context(|| format!("reading certificate {}", cert_file.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificate {}", cert_file.display()))?;
    if certs.is_empty() {
        bail!("no certificate in {}", cert_file.display());
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .with_context(|| format!("reading private key {}", key_file.display()))?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not match")?;
    config.alpn_protocols = Vec::new();
    Ok(Arc::new(config))
}

/// An acceptor from PEM files.
pub fn acceptor(cert_file: &Path, key_file: &Path) -> anyhow::Result<TlsAcceptor> {
    Ok(TlsAcceptor::from(server_config(cert_file, key_file)?))
}

/// Write a self-signed certificate for `names` (e.g. the host name and `localhost`) and its key
/// (mode 0600). Existing files are not overwritten.
pub fn generate_self_signed(names: &[String], cert_file: &Path, key_file: &Path) -> anyhow::Result<()> {
    if cert_file.exists() || key_file.exists() {
        bail!("{} or {} already exists", cert_file.display(), key_file.display());
    }
    let pair = rcgen::generate_simple_self_signed(names.to_vec()).context("generating a certificate")?;
    for file in [cert_file, key_file] {
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    std::fs::write(cert_file, pair.cert.pem()).with_context(|| format!("writing {}", cert_file.display()))?;
    write_private(key_file, pair.key_pair.serialize_pem().as_bytes())
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_pair_loads() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls/cert.pem"), dir.path().join("tls/key.pem"));
        generate_self_signed(&["localhost".into()], &cert, &key).unwrap();
        server_config(&cert, &key).unwrap();
        assert!(
            generate_self_signed(&["localhost".into()], &cert, &key).is_err(),
            "must not overwrite"
        );
    }

    #[test]
    fn a_missing_or_bad_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = server_config(&dir.path().join("nope.pem"), &dir.path().join("nope.key")).unwrap_err();
        assert!(format!("{err:#}").contains("nope.pem"));
        std::fs::write(dir.path().join("bad.pem"), "junk").unwrap();
        assert!(server_config(&dir.path().join("bad.pem"), &dir.path().join("bad.pem")).is_err());
    }
}
