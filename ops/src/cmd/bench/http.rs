//! A minimal HTTP/1.1 client for the WebDAV benchmark: one keep-alive connection, over TLS or
//! plain TCP (the loopback listener a reverse proxy uses, and Apache in `--compare`), Basic
//! credentials on every request, bodies sent from memory or streamed, responses with
//! Content-Length or chunked (RFC 9112 section 7.1) bodies. Over TLS the bench's own
//! self-signed certificate is the only trusted root, so the handshake is checked as a client
//! checks it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::wire::within;

/// A byte stream the client talks over: TLS or plain TCP.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub struct Https {
    io: BufReader<Box<dyn Stream>>,
    host: String,
    authorization: String,
}

pub struct Response {
    pub status: u16,
    /// The body, unless it was only counted.
    pub body: Vec<u8>,
    /// Bytes of body received.
    pub length: u64,
}

/// How a body is sent.
pub enum Body<'a> {
    /// These bytes.
    Bytes(&'a [u8]),
    /// `chunk` repeated until `length` bytes are sent (never all in memory).
    Repeat { chunk: &'a [u8], length: u64 },
}

impl Https {
    pub async fn connect(
        addr: std::net::SocketAddr,
        cert_file: &Path,
        user: &str,
        password: &str,
    ) -> anyhow::Result<Https> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(cert_file).context("reading the bench certificate")? {
            roots.add(cert?)?;
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        tcp.set_nodelay(true)?;
        let tls = within(Duration::from_secs(10), "TLS handshake", async {
            TlsConnector::from(Arc::new(config))
                .connect(ServerName::try_from("localhost")?, tcp)
                .await
                .context("TLS handshake with davd")
        })
        .await?;
        Ok(Https::over(Box::new(tls), addr, user, password))
    }

    /// Plain HTTP (no TLS) to `addr`.
    pub async fn connect_plain(addr: std::net::SocketAddr, user: &str, password: &str) -> anyhow::Result<Https> {
        let tcp = within(Duration::from_secs(10), "connect", async {
            TcpStream::connect(addr)
                .await
                .with_context(|| format!("connecting to {addr}"))
        })
        .await?;
        tcp.set_nodelay(true)?;
        Ok(Https::over(Box::new(tcp), addr, user, password))
    }

    fn over(stream: Box<dyn Stream>, addr: std::net::SocketAddr, user: &str, password: &str) -> Https {
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Https {
            io: BufReader::with_capacity(256 * 1024, stream),
            host: format!("localhost:{}", addr.port()),
            authorization: format!("Basic {credentials}"),
        }
    }

    /// Send one request and read its response; `keep_body: false` only counts the body's bytes.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
        keep_body: bool,
    ) -> anyhow::Result<Response> {
        let length = match body {
            Body::Bytes(b) => b.len() as u64,
            Body::Repeat { length, .. } => length,
        };
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nUser-Agent: tinydc-bench\r\n",
            self.host, self.authorization
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if length > 0 || matches!(method, "PUT" | "POST" | "PROPFIND") {
            head.push_str(&format!("Content-Length: {length}\r\n"));
        }
        head.push_str("\r\n");
        let stream = self.io.get_mut();
        stream.write_all(head.as_bytes()).await?;
        match body {
            Body::Bytes(b) => stream.write_all(b).await?,
            Body::Repeat { chunk, length } => {
                let mut left = length;
                while left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    stream.write_all(&chunk[..n]).await.context("sending the body")?;
                    left -= n as u64;
                }
            }
        }
        stream.flush().await?;
        within(
            Duration::from_secs(600),
            "the server's response",
            self.response(keep_body, method == "HEAD"),
        )
        .await
    }

    async fn response(&mut self, keep_body: bool, head_only: bool) -> anyhow::Result<Response> {
        loop {
            let status_line = self.line().await?;
            let status: u16 = status_line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("not an HTTP status line: {status_line:?}"))?;
            let mut content_length = None;
            let mut chunked = false;
            loop {
                let line = self.line().await?;
                if line.is_empty() {
                    break;
                }
                let Some((name, value)) = line.split_once(':') else {
                    bail!("a bad response header: {line:?}");
                };
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = Some(value.parse::<u64>().context("a bad Content-Length")?);
                } else if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                }
            }
            if (100..200).contains(&status) {
                continue; // an interim response (100 Continue): the real one follows
            }
            let mut response = Response {
                status,
                body: Vec::new(),
                length: 0,
            };
            if head_only || status == 204 || status == 304 {
                return Ok(response);
            }
            if chunked {
                loop {
                    let size_line = self.line().await?;
                    let size = u64::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                        .with_context(|| format!("a bad chunk size: {size_line:?}"))?;
                    if size == 0 {
                        while !self.line().await?.is_empty() {} // trailers
                        break;
                    }
                    self.body(size, keep_body, &mut response).await?;
                    if !self.line().await?.is_empty() {
                        bail!("a chunk not followed by CRLF");
                    }
                }
            } else if let Some(n) = content_length {
                self.body(n, keep_body, &mut response).await?;
            } else {
                bail!("a response body without a length (status {status})");
            }
            return Ok(response);
        }
    }

    async fn body(&mut self, n: u64, keep: bool, response: &mut Response) -> anyhow::Result<()> {
        if keep {
            let start = response.body.len();
            response.body.resize(start + n as usize, 0);
            self.io
                .read_exact(&mut response.body[start..])
                .await
                .context("reading a body")?;
        } else {
            let copied = tokio::io::copy(&mut (&mut self.io).take(n), &mut tokio::io::sink()).await?;
            if copied != n {
                bail!("the body ended after {copied} of {n} bytes");
            }
        }
        response.length += n;
        Ok(())
    }

    /// A header line without its CRLF.
    async fn line(&mut self) -> anyhow::Result<String> {
        let mut line = Vec::new();
        let n = (&mut self.io).take(64 * 1024).read_until(b'\n', &mut line).await?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        if !line.ends_with(b"\n") {
            bail!("a response line longer than 64 KiB");
        }
        Ok(String::from_utf8_lossy(&line)
            .trim_end_matches(['\r', '\n'])
            .to_string())
    }
}
