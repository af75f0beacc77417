//! The ACME client's transport ([`instant_acme::HttpClient`]): one HTTP/1.1 request per TLS
//! connection (hyper's http1 client over tokio-rustls), HTTPS only (RFC 8555 §6.1).
//!
//! Why not instant-acme's own client (its `hyper-rustls` feature): that one also speaks HTTP/2,
//! which links the `h2` crate and its tables into the one `tinydc` executable, and every daemon
//! pays their relocated read-only data at start (issue #12, idle memory), for a client that
//! talks to the CA a few times every 60 days. No connection is kept between requests: an order
//! is a dozen requests, and an idle daemon then holds no socket to the CA.
//!
//! Trust is what instant-acme's client gave: the system's CA certificates (rustls-native-certs,
//! which is what rustls-platform-verifier reads on Linux), or only the certificates of
//! `[tls] acme_ca_file` when that is set (a test CA such as pebble's).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::header::{CONNECTION, HOST, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;

/// Longest a request may take, connection and TLS handshake included: a CA that stops
/// answering fails this check (retried at the next one) instead of holding the task forever.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest response body read. The biggest ACME answer is a certificate chain (a few KiB); a
/// directory, order or problem document is smaller.
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// The HTTPS/1.1 client given to instant-acme (`Account::builder_with_http`).
pub struct AcmeHttps {
    tls: TlsConnector,
}

impl AcmeHttps {
    /// Trusting the certificates in the PEM file `ca_file` only, or the system's when `None`.
    pub fn new(ca_file: Option<&Path>) -> anyhow::Result<AcmeHttps> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                crate::tls::add_pem_roots(&mut roots, path, "tls.acme_ca_file")?;
            }
            None => {
                if crate::tls::add_system_roots(&mut roots, "ACME") == 0 {
                    bail!("no CA certificates on this system to check the ACME server's (install ca-certificates)");
                }
            }
        }
        let mut config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .context("TLS setup")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // RFC 7301: offer HTTP/1.1 only, the one protocol this client speaks.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(AcmeHttps {
            tls: TlsConnector::from(Arc::new(config)),
        })
    }
}

impl HttpClient for AcmeHttps {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let tls = self.tls.clone();
        Box::pin(async move {
            let uri = req.uri().clone();
            match tokio::time::timeout(REQUEST_TIMEOUT, send(tls, req)).await {
                Ok(Ok(rsp)) => Ok(rsp),
                // The whole chain in one message: instant-acme shows this error's text only.
                Ok(Err(e)) => Err(instant_acme::Error::Other(
                    format!("ACME request to {uri}: {e:#}").into(),
                )),
                Err(_) => Err(instant_acme::Error::Other(
                    format!("ACME request to {uri}: no answer within {REQUEST_TIMEOUT:?}").into(),
                )),
            }
        })
    }
}

/// Where to connect for `uri`: host (without an IPv6 literal's brackets), port, and the
/// request's origin-form target (RFC 9112 §3.2.1).
fn target(uri: &Uri) -> anyhow::Result<(&str, u16, PathAndQuery)> {
    if uri.scheme() != Some(&Scheme::HTTPS) {
        bail!("not an https URL (RFC 8555 §6.1: ACME is spoken over HTTPS only)");
    }
    let host = uri.host().filter(|h| !h.is_empty()).context("the URL names no host")?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Ok((host, uri.port_u16().unwrap_or(443), path))
}

async fn send(tls: TlsConnector, mut req: Request<BodyWrapper<Bytes>>) -> anyhow::Result<BytesResponse> {
    let (host, port, path) = target(req.uri())?;
    let server_name = ServerName::try_from(host.to_string()).context("the URL's host is not a DNS name or address")?;
    let authority = req.uri().authority().context("the URL names no host")?.as_str();
    // RFC 9112 §3.2: Host is the URL's authority.
    let host_header = HeaderValue::from_str(authority).context("the URL's host")?;
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .with_context(|| format!("connecting to {host} port {port}"))?;
    tcp.set_nodelay(true)?;
    let stream = tls.connect(server_name, tcp).await.context("TLS handshake")?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // The connection ends when the answer is read and `sender` dropped, or at the timeout.
        if let Ok(Err(e)) = tokio::time::timeout(REQUEST_TIMEOUT, conn).await {
            tracing::debug!("ACME: connection: {e}");
        }
    });
    *req.uri_mut() = Uri::from(path);
    let headers = req.headers_mut();
    headers.insert(HOST, host_header);
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    let rsp = sender.send_request(req).await?;
    let (parts, body) = rsp.into_parts();
    let body = Limited::new(body, MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the answer (at most {MAX_RESPONSE_BYTES} bytes): {e}"))?
        .to_bytes();
    Ok(BytesResponse::from(Response::from_parts(parts, Full::new(body))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_urls_are_requested_in_origin_form() {
        let uri: Uri = "https://acme.example.org/directory".parse().unwrap();
        let (host, port, path) = target(&uri).unwrap();
        assert_eq!((host, port, path.as_str()), ("acme.example.org", 443, "/directory"));
        let uri: Uri = "https://[::1]:14000/order/1?x=y".parse().unwrap();
        let (host, port, path) = target(&uri).unwrap();
        assert_eq!((host, port, path.as_str()), ("::1", 14000, "/order/1?x=y"));
        let uri: Uri = "https://127.0.0.1:14000".parse().unwrap();
        assert_eq!(target(&uri).unwrap().2.as_str(), "/");
        assert!(target(&"http://acme.example.org/directory".parse().unwrap()).is_err());
        assert!(target(&"/directory".parse().unwrap()).is_err());
    }

    /// A TLS server on 127.0.0.1 for "localhost" that answers one request per connection with
    /// `body`; returns its port and the CA file (its self-signed certificate).
    async fn https_server(dir: &Path, body: Vec<u8>) -> (u16, std::path::PathBuf) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        crate::tls::generate_self_signed(&["localhost".to_string()], &cert, &key).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(crate::tls::server_config(&cert, &key).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let body = Arc::new(body);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, body) = (acceptor.clone(), body.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = vec![0u8; 4096];
                    let _ = tls.read(&mut head).await;
                    let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.write_all(&body).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        (port, cert)
    }

    fn get(port: u16) -> Request<BodyWrapper<Bytes>> {
        Request::get(format!("https://localhost:{port}/directory"))
            .body(BodyWrapper::from(Vec::new()))
            .unwrap()
    }

    #[tokio::test]
    async fn answers_are_read_from_a_trusted_server_up_to_the_limit() {
        crate::tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let (port, ca) = https_server(dir.path(), b"{\"newNonce\":\"x\"}".to_vec()).await;
        let client = AcmeHttps::new(Some(&ca)).unwrap();
        let rsp = client.request(get(port)).await.unwrap();
        assert_eq!(rsp.parts.status, 200);
        let mut body = rsp.body;
        assert_eq!(&body.into_bytes().await.unwrap()[..], b"{\"newNonce\":\"x\"}");

        // A server whose certificate the CA file does not hold is refused.
        let other = tempfile::tempdir().unwrap();
        let (_, other_ca) = https_server(other.path(), Vec::new()).await;
        let err = AcmeHttps::new(Some(&other_ca))
            .unwrap()
            .request(get(port))
            .await
            .err()
            .unwrap();
        assert!(format!("{err}").contains("TLS handshake"), "{err}");

        // An answer longer than MAX_RESPONSE_BYTES is an error, not a buffer that grows.
        let big = tempfile::tempdir().unwrap();
        let (port, ca) = https_server(big.path(), vec![b'x'; MAX_RESPONSE_BYTES + 1]).await;
        let err = AcmeHttps::new(Some(&ca))
            .unwrap()
            .request(get(port))
            .await
            .err()
            .unwrap();
        assert!(format!("{err}").contains("at most"), "{err}");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, "not a certificate\n").unwrap();
        let err = AcmeHttps::new(Some(&file)).err().unwrap();
        assert!(format!("{err:#}").contains("no certificate"), "{err:#}");
        assert!(AcmeHttps::new(Some(&dir.path().join("missing.pem"))).is_err());
    }
}
