//! ACME end to end (issue #10 item 1, RFC 8555) against Debian's `pebble` test CA, once with
//! TLS-ALPN-01 (RFC 8737) on davd's HTTPS port and once with HTTP-01 (RFC 8555 §8.3) on its
//! port-80 listener: pebble-challtestsrv answers every name with 127.0.0.1, pebble's validation
//! connects to davd, davd answers the challenge, writes the issued pair where every daemon picks
//! it up, and renews it when less than 30 days remain (the test CA issues for 20 days, so every
//! check renews). A connection opened on the first certificate keeps working after the renewal
//! while new ones get the renewed certificate. Also the port-80 listener's own behaviour:
//! redirects, unknown tokens, oversized and slow requests, its connection cap.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use shared::Context;
use shared::net::Shutdown;
use shared::testing::TestEnv;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Child processes killed when the test ends, however it ends; their logs shown on failure.
struct Procs(Vec<Child>, std::path::PathBuf);

impl Drop for Procs {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for log in ["pebble.log", "pebble.err", "challtestsrv.log", "challtestsrv.err"] {
                let text = std::fs::read_to_string(self.1.join(log)).unwrap_or_default();
                eprintln!("---- {log}\n{text}");
            }
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_for_port(port: u16, what: &str) {
    let until = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < until, "{what} did not start listening on {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn leaf(file: &Path) -> Option<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(file).ok()?.next()?.ok()
}

/// The DNS names of a certificate.
fn names_of(der: &CertificateDer) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

async fn wait_for_leaf(file: &Path, not: Option<&CertificateDer<'static>>, name: &str) -> CertificateDer<'static> {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(cert) = leaf(file)
            && Some(&cert) != not
            && names_of(&cert).iter().any(|n| n == name)
        {
            return cert;
        }
        assert!(Instant::now() < until, "no certificate for {name} was issued in time");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn connect(
    addr: SocketAddr,
    root: &CertificateDer<'static>,
    name: &str,
) -> (tokio_rustls::client::TlsStream<TcpStream>, CertificateDer<'static>) {
    try_connect(addr, root, name)
        .await
        .expect("a certificate the test CA issued for the name")
}

/// A TLS connection verified against `root` for `name`, or why not.
async fn try_connect(
    addr: SocketAddr,
    root: &CertificateDer<'static>,
    name: &str,
) -> std::io::Result<(tokio_rustls::client::TlsStream<TcpStream>, CertificateDer<'static>)> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        connector.connect(ServerName::try_from(name.to_string()).unwrap(), tcp),
    )
    .await
    .expect("handshake in time")?;
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    Ok((tls, cert))
}

async fn options<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(stream: S) -> String {
    let mut r = BufReader::new(stream);
    r.get_mut()
        .write_all(b"OPTIONS / HTTP/1.1\r\nHost: mail.example.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut status = String::new();
    tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut status))
        .await
        .unwrap()
        .unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut rest)).await;
    status
}

/// Which challenge the CA can reach davd with.
#[derive(Clone, Copy, PartialEq)]
enum Via {
    /// pebble validates on davd's HTTPS port; davd has no port-80 listener.
    TlsAlpn,
    /// davd serves port 80 (and prefers HTTP-01); pebble's TLS-ALPN-01 port is one where
    /// nothing listens, so only HTTP-01 can succeed.
    Http,
    /// davd serves port 80 but the CA cannot reach it (pebble's HTTP-01 port has nothing):
    /// each HTTP-01 order fails and the next one, through TLS-ALPN-01, succeeds.
    HttpBlocked,
}

async fn issue_and_renew(via: Via) {
    shared::testing::require_tools(&["pebble", "pebble-challtestsrv", "curl"]);
    shared::tls::install_crypto_provider();
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let env = TestEnv::new().await;
    let work = tempfile::tempdir().unwrap();

    // Pebble's own HTTPS certificate (its API), trusted by davd's ACME client.
    let api = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let (api_cert, api_key) = (work.path().join("api.pem"), work.path().join("api.key"));
    std::fs::write(&api_cert, api.cert.pem()).unwrap();
    std::fs::write(&api_key, api.key_pair.serialize_pem()).unwrap();

    let (acme_port, mgmt_port, dns_port, chall_mgmt) = (free_port(), free_port(), free_port(), free_port());
    let mut config = (*env.context.config).clone();
    config.server.hostname = "mail.example.test".into();
    config.tls.acme_directory = format!("https://127.0.0.1:{acme_port}/dir");
    config.tls.acme_ca_file = Some(api_cert.clone());
    config.tls.acme_check_secs = 1;
    if via != Via::TlsAlpn {
        config.tls.acme_http_listen = Some("127.0.0.1:0".parse().unwrap());
    }
    let ctx = Context::new(config.clone(), env.context.db.clone()).await.unwrap();
    let server = davd::Server::bind(ctx).await.unwrap();
    let https = server.https_addr().unwrap();
    let (http_port, tls_port) = match via {
        Via::TlsAlpn => (free_port(), https.port()),
        Via::Http => (server.acme_http_addr().unwrap().port(), free_port()),
        Via::HttpBlocked => (free_port(), https.port()),
    };

    let pebble_config = serde_json::json!({ "pebble": {
        "listenAddress": format!("127.0.0.1:{acme_port}"),
        "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
        "certificate": api_cert,
        "privateKey": api_key,
        "httpPort": http_port,
        "tlsPort": tls_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
        "certificateValidityPeriod": 20 * 86_400,
    }});
    let pebble_json = work.path().join("pebble.json");
    std::fs::write(&pebble_json, pebble_config.to_string()).unwrap();
    let log = |name: &str| Stdio::from(std::fs::File::create(work.path().join(name)).unwrap());
    let mut procs = Procs(Vec::new(), work.path().to_path_buf());
    procs.0.push(
        Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns_port}"), "-defaultIPv6", ""])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{chall_mgmt}")])
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .spawn()
            .unwrap(),
    );
    procs.0.push(
        Command::new("pebble")
            .arg("-config")
            .arg(&pebble_json)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .unwrap(),
    );
    wait_for_port(chall_mgmt, "pebble-challtestsrv").await;
    wait_for_port(acme_port, "pebble").await;

    let shutdown = Shutdown::new();
    let s = shutdown.clone();
    tokio::spawn(async move { server.run(s).await });

    let first = wait_for_leaf(&config.tls.cert_file, None, "mail.example.test").await;
    let mut names = names_of(&first);
    names.sort();
    assert_eq!(names, ["autoconfig.example.test", "mail.example.test"]);
    let account = config.data_dir.join("acme/account.json");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&account).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(&config.tls.key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Pebble's root (it makes a new one each run), from its management API.
    let out = Command::new("curl")
        .args(["-sk", &format!("https://127.0.0.1:{mgmt_port}/roots/0")])
        .output()
        .unwrap();
    let root = CertificateDer::from_pem_slice(&out.stdout).expect("pebble's root certificate");

    // davd presents the issued certificate (after its CertStore's next look at the files), for
    // both names; pick a moment when it is still the first one.
    let until = Instant::now() + Duration::from_secs(30);
    let (old_conn, seen) = loop {
        // Until davd's CertStore looks again it presents the self-signed one: not trusted.
        if let Ok((conn, seen)) = try_connect(https, &root, "mail.example.test").await
            && seen == leaf(&config.tls.cert_file).unwrap()
        {
            break (conn, seen);
        }
        assert!(Instant::now() < until, "davd never presented the issued certificate");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    connect(https, &root, "autoconfig.example.test").await;

    // 20 days left is under 30: the next check renews; new connections get the renewed pair.
    let renewed = wait_for_leaf(&config.tls.cert_file, Some(&seen), "mail.example.test").await;
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let (_conn, now) = connect(https, &root, "mail.example.test").await;
        if now != seen {
            break;
        }
        assert!(
            Instant::now() < until,
            "davd kept presenting the certificate before renewal"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_ne!(renewed, first);
    // The connection from before the renewal still works.
    let status = options(old_conn).await;
    assert!(status.starts_with("HTTP/1.1 "), "{status}");
    // A TLS-ALPN-01 handshake for a name with no challenge pending gets nothing.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let mut alpn = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    alpn.alpn_protocols = vec![b"acme-tls/1".to_vec()];
    let tcp = TcpStream::connect(https).await.unwrap();
    let refused = tokio_rustls::TlsConnector::from(Arc::new(alpn))
        .connect(ServerName::try_from("other.example.test").unwrap(), tcp)
        .await;
    assert!(refused.is_err());
    shutdown.cancel();
    drop(procs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pebble_issues_and_renews_through_tls_alpn_01() {
    issue_and_renew(Via::TlsAlpn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pebble_issues_and_renews_through_http_01_on_port_80() {
    issue_and_renew(Via::Http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_http_01_order_is_followed_by_one_through_tls_alpn_01() {
    issue_and_renew(Via::HttpBlocked).await;
}

/// Send `request` on a new connection to `addr` and read until the server closes (bounded).
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    // The server may answer (and close) before it has read everything, e.g. a 431.
    let _ = tcp.write_all(request).await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).to_string()
}

fn header_of<'a>(reply: &'a str, name: &str) -> Option<&'a str> {
    reply.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_80_answers_only_challenges_redirects_the_rest_and_is_bounded() {
    shared::tls::install_crypto_provider();
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let env = TestEnv::new().await;
    let mut config = (*env.context.config).clone();
    config.server.hostname = "mail.example.test".into();
    // A CA that is not there: the ACME task fails and waits; the listener serves regardless.
    config.tls.acme_directory = format!("https://127.0.0.1:{}/dir", free_port());
    config.tls.acme_check_secs = 3600;
    config.tls.acme_http_listen = Some("127.0.0.1:0".parse().unwrap());
    config.dav.header_timeout_secs = 2;
    let ctx = Context::new(config.clone(), env.context.db.clone()).await.unwrap();
    let server = davd::Server::bind(ctx).await.unwrap();
    let https = server.https_addr().unwrap().port();
    let port80 = server.acme_http_addr().unwrap();
    let shutdown = Shutdown::new();
    let s = shutdown.clone();
    tokio::spawn(async move { server.run(s).await });

    // Anything but a challenge: to the same host over HTTPS, path and query kept.
    let reply = exchange(
        port80,
        b"GET /.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=a HTTP/1.1\r\nHost: Autoconfig.Example.test\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 301 "), "{reply}");
    assert_eq!(
        header_of(&reply, "location"),
        Some(
            format!(
                "https://autoconfig.example.test:{https}/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=a"
            )
            .as_str()
        ),
        "{reply}"
    );
    // An address or a bogus Host: the configured host name; another method keeps it (308).
    let reply = exchange(
        port80,
        b"PUT /x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 308 "), "{reply}");
    assert_eq!(
        header_of(&reply, "location"),
        Some(format!("https://mail.example.test:{https}/x").as_str())
    );
    let reply = exchange(port80, b"GET / HTTP/1.1\r\nHost: evil.test\"><x\r\n\r\n").await;
    assert_eq!(
        header_of(&reply, "location"),
        Some(format!("https://mail.example.test:{https}/").as_str()),
        "{reply}"
    );
    // A token with no pending challenge, and a method a challenge does not take.
    let reply = exchange(
        port80,
        b"GET /.well-known/acme-challenge/no-such-token HTTP/1.1\r\nHost: mail.example.test\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 404 "), "{reply}");
    let reply = exchange(
        port80,
        b"POST /.well-known/acme-challenge/x HTTP/1.1\r\nHost: mail.example.test\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 405 "), "{reply}");
    // One request per connection: a second one pipelined behind the first gets no answer.
    let reply = exchange(
        port80,
        b"GET /a HTTP/1.1\r\nHost: mail.example.test\r\n\r\nGET /b HTTP/1.1\r\nHost: mail.example.test\r\n\r\n",
    )
    .await;
    assert_eq!(reply.matches("HTTP/1.1 ").count(), 1, "{reply}");

    // Headers past the limit: 431, not an ever-growing buffer.
    let mut big = b"GET / HTTP/1.1\r\nHost: mail.example.test\r\n".to_vec();
    for i in 0..400 {
        big.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "a".repeat(40)).as_bytes());
    }
    big.extend_from_slice(b"\r\n");
    let reply = exchange(port80, &big).await;
    assert!(reply.starts_with("HTTP/1.1 431 "), "{reply}");

    // A client that never finishes its headers is dropped after the header timeout.
    let mut slow = TcpStream::connect(port80).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: mail.example.test\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "a stalled request was kept open");
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());

    // The per-address cap: idle connections up to it, then 503 with Retry-After.
    let mut idle = Vec::new();
    for _ in 0..davd::acme_http::MAX_PER_ADDRESS {
        idle.push(TcpStream::connect(port80).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reply = exchange(port80, b"GET / HTTP/1.1\r\nHost: mail.example.test\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 503 "), "{reply}");
    drop(idle);
    shutdown.cancel();
}
