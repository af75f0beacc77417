//! Test harness: a real server on 127.0.0.1:0 over a throwaway PostgreSQL (shared::testing),
//! and a small line-oriented IMAP client over real sockets (plain or TLS).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shared::Context;
use shared::net::Shutdown;
use shared::testing::TestEnv;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub const USER: &str = "alice@example.test";
pub const PASS: &str = "alice password";

pub struct Server {
    pub env: TestEnv,
    pub ctx: Arc<Context>,
    pub plain: SocketAddr,
    pub tls: SocketAddr,
    pub shutdown: Shutdown,
    pub user_id: i64,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Server {
    /// A server with the test config and one user (no quota).
    pub async fn start() -> Server {
        Server::start_with(|_| {}, None).await
    }

    /// A server whose config is changed by `edit`, with a quota for the user.
    pub async fn start_with(edit: impl FnOnce(&mut shared::Config), quota: Option<u64>) -> Server {
        Server::start_with_listener_idle(edit, quota, shared::events::LISTENER_IDLE_RELEASE).await
    }

    /// [`Server::start_with`] whose event listeners (the server's and the test environment's)
    /// give their connection up `listener_idle` after the last interest in them.
    pub async fn start_with_listener_idle(
        edit: impl FnOnce(&mut shared::Config),
        quota: Option<u64>,
        listener_idle: Duration,
    ) -> Server {
        shared::tls::install_crypto_provider();
        let env = TestEnv::with_listener_idle(listener_idle).await;
        let user = env.add_user(USER, PASS, quota).await;
        let mut config = (*env.context.config).clone();
        edit(&mut config);
        let ctx = Context::with_listener_idle(config, env.context.db.clone(), listener_idle)
            .await
            .expect("context");
        let listeners = tinydc_imapd::bind(&ctx).await.expect("bind");
        let plain = listeners.plain_addr().expect("plain listener");
        let tls = listeners.tls_addr().expect("tls listener");
        let shutdown = Shutdown::new();
        tokio::spawn(tinydc_imapd::serve(ctx.clone(), listeners, shutdown.clone()));
        Server {
            env,
            ctx,
            plain,
            tls,
            shutdown,
            user_id: user.id,
        }
    }

    /// Python's imaplib against this server: `python3 ARGS 127.0.0.1 PORT USER PASS EXTRA`
    /// (ARGS a script path, or `-c` and a script), finished within `limit`.
    pub async fn imaplib(&self, args: &[&str], extra: &[&str], limit: Duration) -> std::process::Output {
        shared::testing::require_tool("python3");
        tokio::time::timeout(
            limit,
            tokio::process::Command::new("python3")
                .args(args)
                .arg("127.0.0.1")
                .arg(self.plain.port().to_string())
                .arg(USER)
                .arg(PASS)
                .args(extra)
                .output(),
        )
        .await
        .expect("imaplib finished in time")
        .expect("python3 started")
    }

    /// A plain connection, greeting read.
    pub async fn connect(&self) -> Client {
        let stream = TcpStream::connect(self.plain).await.expect("connect");
        let mut client = Client::new(Box::new(stream));
        let greeting = client.line().await;
        assert!(greeting.starts_with("* OK"), "{greeting}");
        client
    }

    /// A plain connection, logged in.
    pub async fn login(&self) -> Client {
        let mut c = self.connect().await;
        c.ok(&format!("LOGIN {USER} \"{PASS}\"")).await;
        c
    }

    /// A TLS client config trusting the test certificate.
    pub fn tls_connector(&self) -> tokio_rustls::TlsConnector {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.ctx.config.tls.cert_file).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    /// Deliver a message to the user's INBOX through the shared store (as smtpd does).
    pub async fn deliver(&self, raw: &[u8]) {
        self.ctx
            .mail
            .deliver(
                vec![shared::mailstore::DeliveryTarget {
                    user_id: self.user_id,
                    mailbox_id: None,
                    reservation: None,
                }],
                raw,
                &[],
                chrono::Utc::now(),
            )
            .await
            .expect("deliver");
    }
}

pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A response: the untagged/continuation lines (literals inlined) and the tagged line.
#[derive(Debug)]
pub struct Response {
    pub lines: Vec<String>,
    pub tagged: String,
}

impl Response {
    pub fn has(&self, needle: &str) -> bool {
        self.lines.iter().any(|l| l.contains(needle))
    }

    pub fn find(&self, needle: &str) -> &str {
        self.lines
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in {:#?}", self.lines))
    }

    pub fn all(&self) -> String {
        self.lines.join("\n")
    }
}

pub struct Client {
    pub stream: Box<dyn Stream>,
    buf: Vec<u8>,
    n: u32,
}

impl Client {
    pub fn new(stream: Box<dyn Stream>) -> Client {
        Client {
            stream,
            buf: Vec::new(),
            n: 0,
        }
    }

    async fn fill(&mut self) {
        let mut tmp = [0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(20), self.stream.read(&mut tmp))
            .await
            .expect("server answered in time")
            .expect("read");
        assert!(
            n > 0,
            "connection closed; buffered: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        self.buf.extend_from_slice(&tmp[..n]);
    }

    /// Whether the server closed the connection (reads until EOF or timeout).
    pub async fn closed(&mut self) -> bool {
        let mut tmp = [0u8; 8192];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut tmp)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }

    /// One raw line (without CRLF), literals not handled.
    pub async fn raw_line(&mut self) -> String {
        loop {
            if let Some(p) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=p).collect();
                return String::from_utf8_lossy(&line)
                    .trim_end_matches(['\r', '\n'])
                    .to_string();
            }
            self.fill().await;
        }
    }

    /// One logical line, with literals inlined.
    pub async fn line(&mut self) -> String {
        let mut out = String::new();
        loop {
            let line = self.raw_line().await;
            out.push_str(&line);
            let literal = line
                .strip_suffix('}')
                .and_then(|l| l.rfind('{').map(|i| &l[i + 1..]))
                .and_then(|n| n.parse::<usize>().ok());
            let Some(n) = literal else {
                return out;
            };
            while self.buf.len() < n {
                self.fill().await;
            }
            let data: Vec<u8> = self.buf.drain(..n).collect();
            out.push_str("\r\n");
            out.push_str(&String::from_utf8_lossy(&data));
        }
    }

    /// Exactly `n` raw bytes (a literal's content, byte for byte).
    pub async fn bytes(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            self.fill().await;
        }
        self.buf.drain(..n).collect()
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
        self.stream.flush().await.expect("flush");
    }

    pub fn next_tag(&mut self) -> String {
        self.n += 1;
        format!("t{}", self.n)
    }

    /// Send `text` with a new tag and read up to the tagged response.
    pub async fn cmd(&mut self, text: &str) -> Response {
        let tag = self.next_tag();
        self.write(format!("{tag} {text}\r\n").as_bytes()).await;
        self.until(&tag).await
    }

    /// Read lines until the one tagged `tag`.
    pub async fn until(&mut self, tag: &str) -> Response {
        let mut lines = Vec::new();
        loop {
            let line = self.line().await;
            if line.starts_with(&format!("{tag} ")) {
                return Response { lines, tagged: line };
            }
            lines.push(line);
        }
    }

    /// Like `cmd`, asserting a tagged OK.
    pub async fn ok(&mut self, text: &str) -> Response {
        let r = self.cmd(text).await;
        assert!(r.tagged.contains(" OK"), "{text} -> {r:#?}");
        r
    }

    /// Like `cmd`, asserting a tagged NO.
    pub async fn no(&mut self, text: &str) -> Response {
        let r = self.cmd(text).await;
        assert!(r.tagged.contains(" NO"), "{text} -> {r:#?}");
        r
    }

    /// Like `cmd`, asserting a tagged BAD.
    pub async fn bad(&mut self, text: &str) -> Response {
        let r = self.cmd(text).await;
        assert!(r.tagged.contains(" BAD"), "{text} -> {r:#?}");
        r
    }

    /// The next line that contains `needle`, with the lines read before it; fails after 10 s.
    pub async fn wait_for(&mut self, needle: &str) -> (String, Vec<String>) {
        let mut before = Vec::new();
        let result = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let line = self.line().await;
                if line.contains(needle) {
                    return line;
                }
                before.push(line);
            }
        })
        .await;
        match result {
            Ok(line) => (line, before),
            Err(_) => panic!("no line with {needle:?} within 10 s; read {before:#?}"),
        }
    }

    /// Whatever arrives unasked within `ms` milliseconds.
    pub async fn unasked(&mut self, ms: u64) -> Vec<String> {
        let mut lines = Vec::new();
        let end = tokio::time::Instant::now() + Duration::from_millis(ms);
        while let Ok(line) = tokio::time::timeout_at(end, self.line()).await {
            lines.push(line);
        }
        lines
    }

    /// APPEND with a LITERAL+ literal.
    pub async fn append(&mut self, mailbox: &str, flags: &str, message: &[u8]) -> Response {
        let tag = self.next_tag();
        let mut bytes = format!("{tag} APPEND {mailbox} {flags} {{{}+}}\r\n", message.len()).into_bytes();
        bytes.extend_from_slice(message);
        bytes.extend_from_slice(b"\r\n");
        self.write(&bytes).await;
        self.until(&tag).await
    }
}

/// A small message with a subject and body.
pub fn message(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Bob <bob@example.test>\r\nTo: Alice <alice@example.test>\r\nSubject: {subject}\r\n\
Date: Tue, 24 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@example.test>\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// What a client process printed: stdout, then stderr.
pub fn printed(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
