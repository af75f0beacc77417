//! TLS for every listener: one rustls crypto provider (ring) for the whole workspace, the
//! certificate and key from PEM files (reloaded when they change, see [`CertStore`]), cipher
//! suites ordered for the CPU ([`suites_for`]), and a self-signed pair for a fresh install.

use std::collections::HashMap;
use std::fmt;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SupportedCipherSuite};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Install ring as the process's rustls provider. Several crates pull in rustls with different
/// defaults; without one explicit provider rustls panics. Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// How often a handshake may look at the certificate files for a change (one `stat` of each).
pub const RELOAD_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Whether this CPU has AES instructions that make AES-GCM fast and constant-time: `aes` on
/// aarch64 (absent on every Raspberry Pi before the Pi 5), `aes` and `pclmulqdq` (for GHASH) on
/// x86_64. Anything else counts as without.
pub fn cpu_has_aes() -> bool {
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
    {
        false
    }
}

fn is_chacha(suite: &SupportedCipherSuite) -> bool {
    use rustls::CipherSuite as C;
    matches!(
        suite.suite(),
        C::TLS13_CHACHA20_POLY1305_SHA256
            | C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            | C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
    )
}

/// ring's cipher suites in the server's order of preference: AES-GCM first when the CPU has AES
/// instructions, otherwise ChaCha20-Poly1305 first (in software it is several times faster than
/// AES-GCM, and free of table-lookup timing leaks). The order within each group, and TLS 1.3
/// before TLS 1.2, stay as ring lists them. The server's order is the one used
/// (`ignore_client_order` in [`server_config`]).
pub fn suites_for(aes_hardware: bool) -> Vec<SupportedCipherSuite> {
    let all = rustls::crypto::ring::DEFAULT_CIPHER_SUITES;
    let mut suites = all.to_vec();
    // A stable sort keeps ring's order inside each (version, family) group.
    suites.sort_by_key(|s| {
        let tls12 = matches!(s, SupportedCipherSuite::Tls12(_));
        (tls12, is_chacha(s) == aes_hardware)
    });
    suites
}

/// Add the system's CA certificates (rustls-native-certs: the distribution's bundle, or
/// `SSL_CERT_FILE` / `SSL_CERT_DIR`) to `roots`, for a client of this suite (ACME, `tinydc
/// import`). Those that cannot be read or parsed are logged, naming `purpose`; the answer is how
/// many were added.
pub fn add_system_roots(roots: &mut rustls::RootCertStore, purpose: &str) -> usize {
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::warn!("{purpose}: reading the system's CA certificates: {error}");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    if ignored > 0 {
        tracing::warn!("{purpose}: {ignored} of the system's CA certificates do not parse");
    }
    added
}

/// Add every certificate of the PEM file `path` to `roots`; `setting` is how the user named it
/// (`--ca-file`, `tls.acme_ca_file`). An error when one does not parse or there is none.
pub fn add_pem_roots(roots: &mut rustls::RootCertStore, path: &Path, setting: &str) -> anyhow::Result<usize> {
    let pem = std::fs::read(path).with_context(|| format!("reading {setting} {}", path.display()))?;
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.with_context(|| format!("{setting} {}: not a PEM certificate", path.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("{setting} {}: unusable certificate", path.display()))?;
        count += 1;
    }
    if count == 0 {
        bail!("{setting} {}: no certificate in it", path.display());
    }
    Ok(count)
}

/// The crypto provider every listener uses: ring with the suites ordered for this CPU.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        cipher_suites: suites_for(cpu_has_aes()),
        ..rustls::crypto::ring::default_provider()
    })
}

/// What identifies one version of a file: a rename (certbot, ACME) changes the inode, an
/// in-place write the size or modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    modified: Option<SystemTime>,
    ctime: (i64, i64),
}

fn stamp(path: &Path) -> Option<FileStamp> {
    // metadata() follows symlinks, so a certbot `live/` link moved to a new file counts.
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        modified: m.modified().ok(),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

struct Loaded {
    current: Arc<CertifiedKey>,
    /// The files as they were when last read (whether that read worked or not).
    seen: (Option<FileStamp>, Option<FileStamp>),
    checked: Instant,
}

/// The certificate every listener of a process presents, from the PEM files the config names.
/// Each handshake asks it for the certificate; at most every `check_every` it looks at the
/// files' inode, size and times, and when they changed it reads them again. New handshakes get
/// the new certificate; open connections keep the one they started with. A new pair that does
/// not load (bad PEM, key not matching the certificate) is logged and the old one kept; it is
/// read again when the files change again (e.g. the key written after the certificate).
pub struct CertStore {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    check_every: Duration,
    state: Mutex<Loaded>,
    /// TLS-ALPN-01 certificates (RFC 8737) by name, while an ACME order waits for the CA.
    challenges: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

/// The ALPN protocol of TLS-ALPN-01 handshakes (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish()
    }
}

/// Read a certificate chain and its key, checking that they belong together.
fn load_pair(cert_file: &Path, key_file: &Path, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .with_context(|| format!("reading certificate {}", cert_file.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificate {}", cert_file.display()))?;
    if certs.is_empty() {
        bail!("no certificate in {}", cert_file.display());
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .with_context(|| format!("reading private key {}", key_file.display()))?;
    let pair = CertifiedKey::from_der(certs, key, provider).with_context(|| {
        format!(
            "loading {} with {} (do the certificate and key match?)",
            cert_file.display(),
            key_file.display()
        )
    })?;
    // from_der lets an unknown consistency pass; the end-entity certificate must still parse.
    pair.end_entity_cert()
        .map_err(|e| anyhow::anyhow!("{}: {e}", cert_file.display()))?;
    Ok(pair)
}

impl CertStore {
    /// Load the pair now (an error if it does not load) and watch the files from then on.
    pub fn new(
        cert_file: &Path,
        key_file: &Path,
        provider: Arc<CryptoProvider>,
        check_every: Duration,
    ) -> anyhow::Result<Arc<CertStore>> {
        let seen = (stamp(cert_file), stamp(key_file));
        let current = Arc::new(load_pair(cert_file, key_file, &provider)?);
        Ok(Arc::new(CertStore {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            provider,
            check_every,
            state: Mutex::new(Loaded {
                current,
                seen,
                checked: Instant::now(),
            }),
            challenges: Mutex::new(HashMap::new()),
        }))
    }

    /// Answer TLS-ALPN-01 handshakes for `name` with this certificate (DER) and key (PKCS#8).
    pub fn set_challenge(&self, name: &str, cert: CertificateDer<'static>, key_pkcs8: Vec<u8>) -> anyhow::Result<()> {
        let key = PrivateKeyDer::Pkcs8(key_pkcs8.into());
        // Not CertifiedKey::from_der: its check parses the certificate with webpki, which
        // refuses the critical acmeIdentifier extension; the pair is made together here.
        let key = self
            .provider
            .key_provider
            .load_private_key(key)
            .context("a challenge certificate's key")?;
        let pair = CertifiedKey::new(vec![cert], key);
        self.challenges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_ascii_lowercase(), Arc::new(pair));
        Ok(())
    }

    /// Stop answering TLS-ALPN-01 handshakes for `name`.
    pub fn clear_challenge(&self, name: &str) {
        self.challenges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&name.to_ascii_lowercase());
    }

    /// The certificate to present now, reading the files again first if they changed.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.checked.elapsed() >= self.check_every {
            state.checked = Instant::now();
            // Stamps are taken before reading, so a write that lands during the read changes
            // them again and is picked up at the next check.
            let now = (stamp(&self.cert_file), stamp(&self.key_file));
            if now != state.seen {
                state.seen = now;
                match load_pair(&self.cert_file, &self.key_file, &self.provider) {
                    Ok(pair) => {
                        tracing::info!(
                            "loaded the new TLS certificate {}; new connections present it",
                            self.cert_file.display()
                        );
                        state.current = Arc::new(pair);
                    }
                    Err(e) => tracing::error!("new TLS certificate not loaded, keeping the one in use: {e:#}"),
                }
            }
        }
        state.current.clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // RFC 8737 §3: a handshake offering acme-tls/1 gets the challenge certificate for the
        // name it asks (and nothing when there is none); every other handshake the real one.
        if hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN))
        {
            let name = hello.server_name()?.to_ascii_lowercase();
            let found = self
                .challenges
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&name)
                .cloned();
            if found.is_none() {
                tracing::info!("TLS-ALPN-01 handshake for {name}, which has no challenge now: refused");
            }
            return found;
        }
        Some(self.current())
    }
}

/// A server config presenting `store`'s certificate: TLS 1.2 and 1.3 only (RFC 8996 retires
/// 1.0 and 1.1), the suites in [`suites_for`]'s order, and the server's order honoured.
pub fn server_config_with(store: Arc<CertStore>, provider: Arc<CryptoProvider>) -> anyhow::Result<Arc<ServerConfig>> {
    server_config_alpn(store, provider, Vec::new())
}

/// [`server_config_with`] with ALPN protocols (in the server's order of preference).
pub fn server_config_alpn(
    store: Arc<CertStore>,
    provider: Arc<CryptoProvider>,
    alpn: Vec<Vec<u8>>,
) -> anyhow::Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS versions")?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.ignore_client_order = true;
    config.alpn_protocols = alpn;
    Ok(Arc::new(config))
}

/// A server config from PEM files (certificate chain and private key), reloaded when they
/// change ([`CertStore`]).
pub fn server_config(cert_file: &Path, key_file: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    install_crypto_provider();
    let provider = provider();
    let store = CertStore::new(cert_file, key_file, provider.clone(), RELOAD_CHECK_EVERY)?;
    server_config_with(store, provider)
}

/// An HTTPS acceptor that also answers TLS-ALPN-01 (RFC 8737) from its [`CertStore`]'s
/// challenges: ALPN `http/1.1` (what davd speaks) and `acme-tls/1`.
pub fn acme_acceptor(cert_file: &Path, key_file: &Path) -> anyhow::Result<(TlsAcceptor, Arc<CertStore>)> {
    install_crypto_provider();
    let provider = provider();
    let store = CertStore::new(cert_file, key_file, provider.clone(), RELOAD_CHECK_EVERY)?;
    let config = server_config_alpn(
        store.clone(),
        provider,
        vec![b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()],
    )?;
    Ok((TlsAcceptor::from(config), store))
}

/// An acceptor from PEM files, for all of a daemon's listeners (one [`CertStore`]).
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
    use rustls::CipherSuite as C;

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

    fn names(suites: &[SupportedCipherSuite]) -> Vec<C> {
        suites.iter().map(|s| s.suite()).collect()
    }

    #[test]
    fn without_aes_instructions_chacha_comes_first() {
        assert_eq!(
            names(&suites_for(false)),
            [
                C::TLS13_CHACHA20_POLY1305_SHA256,
                C::TLS13_AES_256_GCM_SHA384,
                C::TLS13_AES_128_GCM_SHA256,
                C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
                C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            ]
        );
    }

    #[test]
    fn with_aes_instructions_aes_gcm_comes_first() {
        assert_eq!(
            names(&suites_for(true)),
            [
                C::TLS13_AES_256_GCM_SHA384,
                C::TLS13_AES_128_GCM_SHA256,
                C::TLS13_CHACHA20_POLY1305_SHA256,
                C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            ]
        );
    }

    /// Replace a file the way certbot and ACME clients do: write beside it, then rename.
    fn replace(path: &Path, bytes: &[u8]) {
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    fn pair(names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let pair = rcgen::generate_simple_self_signed(names).unwrap();
        (pair.cert.pem(), pair.key_pair.serialize_pem())
    }

    #[test]
    fn a_changed_pair_is_picked_up_and_a_broken_one_is_not() {
        install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        generate_self_signed(&["localhost".into()], &cert, &key).unwrap();
        let store = CertStore::new(&cert, &key, provider(), Duration::ZERO).unwrap();
        let first = store.current();
        assert!(
            Arc::ptr_eq(&first, &store.current()),
            "unchanged files are not read again"
        );

        let (new_cert, new_key) = pair(&["renewed.example.test"]);
        replace(&cert, new_cert.as_bytes());
        // The certificate alone: it does not match the old key, so the old pair stays.
        assert_eq!(store.current().cert, first.cert);
        replace(&key, new_key.as_bytes());
        let second = store.current();
        assert_ne!(second.cert, first.cert);
        let expected: Vec<CertificateDer> = CertificateDer::pem_slice_iter(new_cert.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(second.cert, expected);

        // Garbage, an empty file: logged, the pair in use kept.
        replace(
            &cert,
            b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
        );
        assert_eq!(store.current().cert, expected);
        replace(&cert, b"");
        assert_eq!(store.current().cert, expected);
        std::fs::remove_file(&key).unwrap();
        assert_eq!(store.current().cert, expected);
    }

    #[test]
    fn the_check_waits_its_interval() {
        install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        generate_self_signed(&["localhost".into()], &cert, &key).unwrap();
        let store = CertStore::new(&cert, &key, provider(), Duration::from_secs(3600)).unwrap();
        let first = store.current();
        let (new_cert, new_key) = pair(&["renewed.example.test"]);
        replace(&cert, new_cert.as_bytes());
        replace(&key, new_key.as_bytes());
        assert_eq!(store.current().cert, first.cert, "no stat before the interval is over");
    }

    /// A client that offers only ChaCha20-Poly1305 gets it (whatever the CPU), over TLS 1.3
    /// and TLS 1.2; a client that offers only TLS 1.1-era versions gets nothing (rustls has
    /// none to offer, so the version floor is the server config's `with_protocol_versions`).
    #[tokio::test]
    async fn a_chacha_only_client_gets_chacha() {
        install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        generate_self_signed(&["localhost".into()], &cert, &key).unwrap();
        let acceptor = acceptor(&cert, &key).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(stream).await {
                        use tokio::io::AsyncWriteExt;
                        let _ = tls.write_all(b"hello").await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&cert).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        for (suite, version) in [
            (
                rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
                &rustls::version::TLS13,
            ),
            (
                rustls::crypto::ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                &rustls::version::TLS12,
            ),
        ] {
            let client_provider = CryptoProvider {
                cipher_suites: vec![suite],
                ..rustls::crypto::ring::default_provider()
            };
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(client_provider))
                .with_protocol_versions(&[version])
                .unwrap()
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
            let mut tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                tls.get_ref().1.negotiated_cipher_suite().map(|s| s.suite()),
                Some(suite.suite())
            );
            let mut buf = Vec::new();
            use tokio::io::AsyncReadExt;
            tls.read_to_end(&mut buf).await.unwrap();
            assert_eq!(buf, b"hello");
        }
    }

    /// The server's order decides: a client preferring AES-GCM but offering ChaCha20 too gets
    /// the server's first choice for this CPU.
    #[tokio::test]
    async fn the_server_order_wins() {
        install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        generate_self_signed(&["localhost".into()], &cert, &key).unwrap();
        let server = server_config(&cert, &key).unwrap();
        let aes_first = [
            rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
            rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ];
        let client_provider = CryptoProvider {
            cipher_suites: aes_first.iter().rev().copied().collect(),
            ..rustls::crypto::ring::default_provider()
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&cert).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(client_provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (a, b) = tokio::io::duplex(1 << 16);
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let acceptor = TlsAcceptor::from(server);
        let (c, s) = tokio::join!(connector.connect(name, a), acceptor.accept(b));
        let (c, _s) = (c.unwrap(), s.unwrap());
        let got = c.get_ref().1.negotiated_cipher_suite().unwrap().suite();
        let want = if cpu_has_aes() {
            C::TLS13_AES_128_GCM_SHA256
        } else {
            C::TLS13_CHACHA20_POLY1305_SHA256
        };
        assert_eq!(got, want);
    }
}
