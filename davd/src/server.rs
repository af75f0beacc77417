//! HTTP(S) listeners, authentication and routing to the per-user WebDAV handler.
//!
//! - HTTPS on `dav.https_listen`; plain HTTP on `dav.http_listen` (loopback only, for a local
//!   reverse proxy; the config refuses anything else);
//! - the autoconfig document and OPTIONS are answered without credentials (Windows probes
//!   OPTIONS at the root before it authenticates);
//! - everything else needs HTTP Basic (RFC 7617) checked by shared::auth; throttled logins get
//!   429 with Retry-After, bad ones 401 with the realm;
//! - a user sees only `DATA/files/<address>/`, at `/` and at `/dav/<address>/`;
//! - read-only share links, `/s/<token>/...`, are answered without credentials (share.rs).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use dav_server::DavHandler;
use dav_server::body::Body;
use dav_server::davpath::DavPath;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::{Body as HttpBody, Frame};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use shared::Context;
use shared::auth::{AuthError, Channel, password_may_cross};
use shared::net::{self, Shutdown};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::auth::{CHALLENGE, parse_basic};
use crate::autoconfig;
use crate::fs::{TinyFs, User};
use crate::journal::Journal;
use crate::locks::PgLocks;
use crate::propfind;

/// How long a request body may stall before the request is dropped (no hang on a dead client).
const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a connection reuses a checked password before checking it again (a changed
/// password or a deleted account takes effect within this time on open connections).
const AUTH_CACHE_FOR: Duration = Duration::from_secs(300);

/// Largest request head (request line and headers together) accepted; more is answered
/// `431 Request Header Fields Too Large` (RFC 6585 section 5) by hyper, which then closes the
/// connection. nginx's default is about as much (4 x 8 KiB); WebDAV clients send a few hundred
/// bytes (a Basic credential, an `If` header with a lock token or two).
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// Most header fields in one request (hyper's own default; more is 431 too).
const MAX_HEADER_FIELDS: usize = 100;

/// dav-server reads at most this much of a request body other than PUT (a fixed 64 KiB in
/// `DavInner::read_request`) and answers more with its own 413; davd's XML limit is kept at or
/// below it so that davd's limit is the one that bites (`App::xml_limit`).
pub const DAV_SERVER_BODY_MAX: u64 = 65536;
/// The methods whose body dav-server parses as XML (RFC 4918 PROPFIND, PROPPATCH, LOCK; the
/// others for CalDAV/CardDAV, should they be turned on); each is checked by xmlcheck.rs first.
/// Other methods' bodies are not parsed (dav-server answers a non-empty one with 415).
const XML_METHODS: [&str; 7] = [
    "PROPFIND",
    "PROPPATCH",
    "LOCK",
    "REPORT",
    "MKCALENDAR",
    "MKADDRESSBOOK",
    "SEARCH",
];

/// What OPTIONS answers (RFC 4918 section 10.1: class 1 and 2, since locks are implemented).
const DAV_CLASSES: &str = "1, 2";
const ALLOW: &str = "OPTIONS, GET, HEAD, PUT, DELETE, PROPFIND, PROPPATCH, MKCOL, COPY, MOVE, LOCK, UNLOCK";

/// The listeners of one davd, bound and ready to serve.
pub struct Server {
    context: Arc<Context>,
    https: Option<(TcpListener, TlsAcceptor)>,
    http: Option<TcpListener>,
    /// With `[tls] acme_directory` set: the HTTPS listener's certificates, where the ACME task
    /// puts its TLS-ALPN-01 answers (shared::acme).
    acme: Option<Arc<shared::tls::CertStore>>,
    /// With `[tls] acme_directory` and `acme_http_listen` set: the port-80 listener and the
    /// HTTP-01 answers it gives (crate::acme_http).
    acme_http: Option<(TcpListener, Arc<shared::acme::Http01Answers>)>,
}

pub(crate) struct App {
    pub(crate) context: Arc<Context>,
    pub(crate) journal: Arc<Journal>,
    chunked: Arc<crate::chunked::Chunked>,
}

impl Server {
    /// Bind the configured listeners (load the certificate for HTTPS).
    pub async fn bind(context: Arc<Context>) -> anyhow::Result<Server> {
        let config = &context.config;
        let mut acme = None;
        let https = match config.dav.https_listen {
            Some(addr) => {
                let acceptor = if config.tls.acme_directory.is_empty() {
                    shared::tls::acceptor(&config.tls.cert_file, &config.tls.key_file)?
                } else {
                    let (acceptor, store) = shared::tls::acme_acceptor(&config.tls.cert_file, &config.tls.key_file)?;
                    acme = Some(store);
                    acceptor
                };
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("dav.https_listen {addr}: {e}"))?;
                Some((listener, acceptor))
            }
            None => None,
        };
        let http = match config.dav.http_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("dav.http_listen {addr}: {e}"))?,
            ),
            None => None,
        };
        if https.is_none() && http.is_none() {
            anyhow::bail!("dav: neither https_listen nor http_listen is set");
        }
        let acme_http = match config.tls.acme_http_listen {
            Some(addr) if !config.tls.acme_directory.is_empty() => {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("tls.acme_http_listen {addr}: {e}"))?;
                Some((listener, shared::acme::Http01Answers::new()))
            }
            Some(addr) => {
                // `init --production` writes port 80 for whenever ACME gets turned on: an
                // install on certbot's files is fine, so this is no warning.
                tracing::info!(
                    "tls.acme_http_listen {addr} is not opened: it serves ACME only, and tls.acme_directory is empty"
                );
                None
            }
            None => None,
        };
        if !config.tls.acme_directory.is_empty() && acme.is_none() && acme_http.is_none() {
            anyhow::bail!(
                "tls.acme_directory needs dav.https_listen or tls.acme_http_listen: the CA checks this server over one of them"
            );
        }
        Ok(Server {
            context,
            https,
            http,
            acme,
            acme_http,
        })
    }

    /// The bound HTTPS address.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The bound port-80 (ACME HTTP-01) address.
    pub fn acme_http_addr(&self) -> Option<SocketAddr> {
        self.acme_http.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The bound plain HTTP address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serve until `shutdown`.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let started = std::time::SystemTime::now();
        // Where port 80 redirects to: the bound HTTPS port (what `https_listen` names, or the
        // one the system chose for port 0).
        let https_port = self.https_addr().map(|a| a.port());
        let files_dir = self.context.config.files_dir();
        let journal = Arc::new(Journal::new(
            self.context.db.clone(),
            files_dir.clone(),
            self.context.mail.clone(),
        ));
        // Before serving: finish file operations a crash interrupted (journal.rs), so usage
        // matches every tree; only then may the sweep remove old temp files.
        journal.recover_all().await?;
        // Hashes of uploads a crash left uncomputed (checksum.rs `Pending`), computed in the
        // background from now on (only files recovery has placed are there to be read).
        match crate::checksum::requeue_pending(&self.context.db, &files_dir, shutdown.clone()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(files = n, "computing content hashes a restart left pending"),
            Err(e) => tracing::warn!("reading pending content hashes: {e} (tried again at the next start)"),
        }
        // Then the quota warnings a crash cut short, or that the recovered usage calls for.
        if let Err(e) = shared::quota::warn::sweep(&self.context.mail).await {
            tracing::warn!("quota warning sweep after recovery: {e}");
        }
        // The chunked uploads a restart interrupted, reserved again (or expired) before serving.
        let chunked = crate::chunked::Chunked::start(
            self.context.db.clone(),
            journal.clone(),
            self.context.config.uploads_dir(),
            self.context.config.dav.upload_expiry,
            shutdown.clone(),
        )
        .await?;
        let app = Arc::new(App {
            context: self.context.clone(),
            journal,
            chunked,
        });
        tokio::task::spawn_blocking(move || crate::fs::sweep_stale_uploads(&files_dir, started));
        let http01 = self.acme_http.as_ref().map(|(_, answers)| answers.clone());
        if self.acme.is_some() || http01.is_some() {
            let responders = shared::acme::Responders {
                tls_alpn: self.acme.clone(),
                http: http01,
            };
            tokio::spawn(shared::acme::run(self.context.clone(), responders, shutdown.clone()));
        }
        // One cap over both listeners; per client address only on HTTPS (the loopback HTTP
        // listener serves a reverse proxy: every client arrives from its one address).
        let dav = &self.context.config.dav;
        let gate = net::Gate::new(net::Limits::new(
            &self.context.config.net,
            dav.max_connections,
            dav.max_connections_per_address,
        ));
        let header_timeout = Duration::from_secs(dav.header_timeout_secs);
        let https = self.https.map(|(listener, acceptor)| {
            (
                listener,
                "webdav https",
                net::Security::Tls(acceptor),
                Channel::Tls,
                true,
            )
        });
        let http = self.http.map(|listener| {
            (
                listener,
                "webdav http, loopback",
                net::Security::Plain,
                Channel::LocalProxy,
                false,
            )
        });
        let mut tasks = tokio::task::JoinSet::new();
        if let Some((listener, answers)) = self.acme_http {
            tracing::info!(
                "listening on {} (acme http-01, redirects to https)",
                listener.local_addr()?
            );
            let port80 = crate::acme_http::Port80 {
                answers,
                hostname: self.context.config.server.hostname.clone(),
                https_port,
            };
            let context = self.context.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                crate::acme_http::serve(listener, port80, &context.config.net, header_timeout, shutdown).await
            });
        }
        for (listener, name, security, channel, per_address) in https.into_iter().chain(http) {
            tracing::info!("listening on {} ({name})", listener.local_addr()?);
            let endpoint = net::Endpoint {
                name,
                security,
                refusal: net::HTTP_REFUSAL,
                per_address,
            };
            let app = app.clone();
            tasks.spawn(net::serve(
                listener,
                gate.clone(),
                endpoint,
                shutdown.clone(),
                move |stream, peer, shutdown| {
                    serve_connection(stream, peer, channel, app.clone(), header_timeout, shutdown)
                },
            ));
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}

/// Bind and serve the configured listeners until `shutdown`.
pub async fn run(context: Arc<Context>, shutdown: Shutdown) -> anyhow::Result<()> {
    if context.config.dav.max_xml_body > DAV_SERVER_BODY_MAX {
        tracing::warn!(
            configured = context.config.dav.max_xml_body,
            applied = DAV_SERVER_BODY_MAX,
            "dav.max_xml_body is above what dav-server reads; the smaller limit applies"
        );
    }
    Server::bind(context).await?.run(shutdown).await
}

/// The last credentials that succeeded on this connection: a keep-alive connection does not
/// pay for argon2 on every request.
type AuthCache = Arc<Mutex<Option<(HeaderValue, User, std::time::Instant)>>>;

/// One HTTP/1.1 connection. `header_timeout` bounds both the wait for a request's headers and
/// the idle time of a keep-alive connection between requests (hyper's header read timer starts
/// as soon as the connection waits for the next request); writes time out in shared::net.
async fn serve_connection(
    io: net::Stream,
    peer: SocketAddr,
    channel: Channel,
    app: Arc<App>,
    header_timeout: Duration,
    shutdown: Shutdown,
) {
    let cache: AuthCache = Arc::new(Mutex::new(None));
    let service = service_fn(move |req| {
        let (app, cache) = (app.clone(), cache.clone());
        // Boxed: the connection is polled without its own shutdown (below), which needs an
        // Unpin future.
        Box::pin(async move { Ok::<_, Infallible>(app.handle(req, peer, channel, cache).await) })
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADER_FIELDS)
        // A response's pieces are queued and written with writev, never copied into hyper's
        // own buffer first: a GET's pieces may be a file's mapped pages (fs/read.rs
        // `map_piece`), which only the kernel may read.
        .writev(true)
        .keep_alive(true);
    let mut conn = builder.serve_connection(TokioIo::new(io), service);
    let mut stopping = false;
    let ended = tokio::select! {
        r = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => r,
        _ = shutdown.cancelled() => {
            stopping = true;
            Pin::new(&mut conn).graceful_shutdown();
            std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)).await
        }
    };
    let linger = match &ended {
        Ok(()) => !stopping,
        Err(e) => {
            tracing::debug!(%peer, "connection ended: {e}");
            // An idle or silent client has nothing more to say; anything else may have left
            // a request (a body not read, the rest of a head too large) unread.
            !stopping && !e.is_timeout()
        }
    };
    let io = conn.into_parts().io.into_inner();
    close(io, linger).await;
}

/// How long a closing connection keeps reading (and dropping) what the client still sends.
const LINGER: Duration = Duration::from_secs(2);

/// Close a connection: TLS close_notify and FIN first, then, with `linger`, read and drop what
/// the client still sends for up to [`LINGER`]. A socket closed with unread data answers with a
/// reset, which can destroy the answer (a 413 or 431) before the client reads it; this is
/// Apache's "lingering close" (RFC 9112 section 9.6: close the sending side first, then keep
/// reading until the client closes or a time passes).
async fn close(mut io: net::Stream, linger: bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if tokio::time::timeout(LINGER, io.shutdown()).await.is_err() || !linger {
        return;
    }
    let mut buf = vec![0u8; 16 * 1024];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(n) = io.read(&mut buf).await
            && n > 0
        {}
    })
    .await;
}

pub(crate) fn simple(status: StatusCode, text: &str) -> Response<Body> {
    let mut res = Response::new(Body::from(text.to_string()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// 401 with the Basic challenge (RFC 7617), and the DAV classes: Finder and the Windows
/// redirector probe a share before they send credentials and look for the `DAV` header on
/// whatever comes back (RFC 4918 section 10.1 allows it on any answer).
fn unauthorized() -> Response<Body> {
    let mut res = simple(StatusCode::UNAUTHORIZED, "authentication required\n");
    let h = res.headers_mut();
    h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
    h.insert("DAV", HeaderValue::from_static(DAV_CLASSES));
    h.insert("MS-Author-Via", HeaderValue::from_static("DAV"));
    res
}

/// The Depth of a PROPFIND, checked: `None` for 0 or 1, else the answer to send.
/// RFC 4918 section 9.1: a server may refuse Depth infinity, with 403 and the
/// propfind-finite-depth precondition (dav-server answers 501); a whole tree in one answer is
/// unbounded work for one request. A PROPFIND without Depth is to be treated as infinity
/// (section 9.1, "SHOULD") and is refused the same way: no client davd serves sends one (Finder's
/// webdavfs sends Depth 0 or 1 on every PROPFIND, webdav_network.c; Explorer's redirector 0 or 1;
/// davfs2 through neon's ne_propfind_create, 0 or 1; rclone 0 or 1), and dav-server would
/// otherwise list the children without the resource itself. Any other value is 400.
pub(crate) fn refuse_depth_infinity(headers: &http::HeaderMap) -> Option<Response<Body>> {
    match headers.get("depth").map(|d| d.as_bytes().trim_ascii()) {
        Some(b"0" | b"1") => None,
        Some(d) if !d.eq_ignore_ascii_case(b"infinity") => {
            Some(simple(StatusCode::BAD_REQUEST, "Depth must be 0, 1 or infinity\n"))
        }
        _ => {
            let mut res = Response::new(Body::from(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:error xmlns:D=\"DAV:\"><D:propfind-finite-depth/></D:error>\n",
            ));
            *res.status_mut() = StatusCode::FORBIDDEN;
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/xml; charset=utf-8"),
            );
            Some(res)
        }
    }
}

/// `/dav/<address>/...` (or Nextcloud's `/remote.php/dav/files/<address>/...`, for its
/// clients and chunked uploads, chunked.rs) for the logged-in user: the prefix dav-server
/// strips (as it appears decoded in the request); any other path is inside the user's tree
/// from `/`.
pub fn dav_prefix(path: &str, address: &str) -> Option<String> {
    let (base, rest) = ["/dav/", "/remote.php/dav/files/"]
        .into_iter()
        .find_map(|base| path.strip_prefix(base).map(|rest| (base, rest)))?;
    let segment = rest.split('/').next().unwrap_or("");
    let decoded = String::from_utf8(crate::paths::decode_segment(segment)).ok()?;
    decoded
        .eq_ignore_ascii_case(address)
        .then(|| format!("{base}{decoded}"))
}

/// The account's usage (mail and files), without locking anything.
/// For a COPY: the source and destination keys and whether it is deep (RFC 4918 section 9.8.3).
fn copy_keys(headers: &http::HeaderMap, path: &str, prefix: &str) -> Option<(String, String, bool)> {
    let parse = |p: &str| {
        let mut d = dav_server::davpath::DavPath::new(p).ok()?;
        if !prefix.is_empty() {
            d.set_prefix(prefix).ok()?;
        }
        Some(crate::paths::key(&d))
    };
    let dest = headers.get("destination")?.to_str().ok()?;
    let dest_path = dest.parse::<http::Uri>().ok()?.path().to_string();
    let deep = headers
        .get("depth")
        .and_then(|d| d.to_str().ok())
        .is_none_or(|d| d.trim() != "0");
    Some((parse(path)?, parse(&dest_path)?, deep))
}

/// Bounds a request body: an error instead of more bytes than announced, and an error
/// instead of a clean end before the announced length. dav-server then never calls `flush`,
/// so a short or overlong upload is never committed.
struct LengthChecked {
    inner: Incoming,
    expected: Option<u64>,
    seen: u64,
    /// Fires when the body stalls for BODY_IDLE_TIMEOUT.
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl LengthChecked {
    fn new(inner: Incoming, expected: Option<u64>) -> LengthChecked {
        LengthChecked {
            inner,
            expected,
            seen: 0,
            idle: Box::pin(tokio::time::sleep(BODY_IDLE_TIMEOUT)),
        }
    }
}

impl HttpBody for LengthChecked {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending => match self.idle.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    tracing::info!(seen = self.seen, "request body stalled; dropping the request");
                    Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "request body stalled",
                    ))))
                }
                Poll::Pending => Poll::Pending,
            },
            Poll::Ready(Some(Ok(frame))) => {
                let deadline = tokio::time::Instant::now() + BODY_IDLE_TIMEOUT;
                self.idle.as_mut().reset(deadline);
                if let Some(data) = frame.data_ref() {
                    self.seen += data.len() as u64;
                    if let Some(expected) = self.expected
                        && self.seen > expected
                    {
                        tracing::warn!(expected, seen = self.seen, "request body longer than announced");
                        return Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "body longer than announced",
                        ))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::info!("request body broke off: {e}");
                Poll::Ready(Some(Err(io::Error::other(e))))
            }
            Poll::Ready(None) => match self.expected {
                Some(expected) if self.seen < expected => {
                    tracing::warn!(expected, seen = self.seen, "request body shorter than announced");
                    Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "body shorter than announced",
                    ))))
                }
                _ => Poll::Ready(None),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        false
    }
}

/// The modification time in an `X-OC-Mtime` header (ownCloud/Nextcloud, sent by rclone's
/// owncloud and nextcloud vendors and the ownCloud clients): seconds since the Unix epoch,
/// possibly with a fraction. `None` when it is not that or past the year 9999.
pub(crate) fn oc_mtime(value: &HeaderValue) -> Option<std::time::SystemTime> {
    let text = value.to_str().ok()?.trim();
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty()
        || whole.len() > 12
        || fraction.len() > 9
        || !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let secs: u64 = whole.parse().ok()?;
    if secs > 253_402_300_799 {
        return None;
    }
    let nanos: u32 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<9}").parse().ok()?
    };
    std::time::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// The most of a refused (413) body read and dropped to keep its connection usable.
const DRAIN_MAX: u64 = 1 << 20;

/// Read and drop up to about `budget` more bytes of `body` (it ends, breaks off, or the
/// budget runs out).
async fn drain(body: &mut LengthChecked, budget: u64) {
    let mut read = 0u64;
    while read <= budget
        && let Some(Ok(frame)) = http_body_util::BodyExt::frame(body).await
    {
        read += frame.data_ref().map_or(0, |d| d.len() as u64);
    }
}

/// The size a PUT announces: Content-Length, or X-Expected-Entity-Length (macOS Finder sends
/// its uploads chunked with the real size there).
fn announced_length(req: &Request<Incoming>) -> Result<Option<u64>, ()> {
    for name in [header::CONTENT_LENGTH.as_str(), "x-expected-entity-length"] {
        if let Some(v) = req.headers().get(name) {
            return v.to_str().ok().and_then(|s| s.trim().parse().ok()).map(Some).ok_or(());
        }
    }
    Ok(None)
}

/// What davd answers with: dav-server's body, davd's own PROPFIND answer (propfind.rs), or a
/// share link's PROPFIND answer from dav-server put through propfind.rs's rewrite.
pub enum ResBody {
    Dav(Body),
    Propfind(Box<propfind::AnswerBody>),
    Rewritten(Box<propfind::Rewrite<Body>>),
}

impl HttpBody for ResBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.get_mut() {
            ResBody::Dav(b) => Pin::new(b).poll_frame(cx),
            ResBody::Propfind(b) => Pin::new(b.as_mut()).poll_frame(cx),
            ResBody::Rewritten(b) => Pin::new(b.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResBody::Dav(b) => b.is_end_stream(),
            ResBody::Propfind(_) | ResBody::Rewritten(_) => false,
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            ResBody::Dav(b) => b.size_hint(),
            ResBody::Propfind(_) | ResBody::Rewritten(_) => http_body::SizeHint::default(),
        }
    }
}

impl App {
    async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        channel: Channel,
        cache: AuthCache,
    ) -> Response<ResBody> {
        let method = req.method().clone();
        // A share link's token is a password: never in the log (share.rs logs the link's id).
        let uri_path = crate::share::loggable(req.uri().path());
        let response = self.route(req, peer, channel, cache).await;
        let status = response.status();
        // MKCOL of a folder that is there is 405 (RFC 4918 section 9.3.1) and routine: rclone
        // and davfs2 make every folder of a tree before uploading into it. So is a 404 to a
        // look-up: Finder probes for `._name`, `.DS_Store`, `.hidden`, `.Spotlight-V100` in
        // every folder it opens, Explorer for `desktop.ini`, davfs2 HEADs before uploading.
        let routine = (method.as_str() == "MKCOL" && status == StatusCode::METHOD_NOT_ALLOWED)
            || (status == StatusCode::NOT_FOUND && matches!(method.as_str(), "GET" | "HEAD" | "PROPFIND"));
        if (status.is_client_error() || status.is_server_error()) && !routine {
            tracing::info!(%peer, %method, path = uri_path, status = status.as_u16(), "refused");
        } else {
            tracing::debug!(%peer, %method, path = uri_path, status = status.as_u16());
        }
        let (mut parts, body) = response.into_parts();
        if let Some(answer) = parts.extensions.remove::<propfind::Pending>().and_then(|p| p.take()) {
            // davd's own PROPFIND answer (propfind.rs), streamed: no length known before.
            return Response::from_parts(parts, ResBody::Propfind(Box::new(answer)));
        }
        match parts.extensions.remove::<propfind::Asked>() {
            Some(asked) if status == StatusCode::MULTI_STATUS => {
                // A share link's PROPFIND (share.rs), dav-server's answer through the rewrite.
                parts.headers.remove(header::CONTENT_LENGTH);
                Response::from_parts(parts, ResBody::Rewritten(Box::new(propfind::Rewrite::new(body, asked))))
            }
            _ => Response::from_parts(parts, ResBody::Dav(body)),
        }
    }

    async fn route(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        channel: Channel,
        cache: AuthCache,
    ) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();

        // Read-only share links answer without a login (share.rs).
        if let Some(token) = crate::share::token_of(&path) {
            let token = token.to_string();
            return self.share(req, peer, &token).await;
        }
        if (method == Method::GET || method == Method::HEAD) && autoconfig::is_autoconfig_path(&path) {
            return self.autoconfig(method == Method::HEAD).await;
        }
        if method == Method::OPTIONS {
            // RFC 4918 section 10.1 / MS-WDV: DAV classes and MS-Author-Via, before any login.
            let mut res = Response::new(Body::empty());
            let h = res.headers_mut();
            h.insert("DAV", HeaderValue::from_static(DAV_CLASSES));
            h.insert("MS-Author-Via", HeaderValue::from_static("DAV"));
            h.insert(header::ALLOW, HeaderValue::from_static(ALLOW));
            h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            return res;
        }

        let user = match self.authenticate(&req, peer, channel, &cache).await {
            Ok(user) => user,
            Err(res) => return res,
        };
        // A file operation of this user that a crash or an I/O error interrupted is finished
        // before anything of theirs is served (journal.rs).
        if self.journal.ready(user.id, &user.root).await.is_err() {
            return simple(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage unavailable; try again later\n",
            );
        }

        // Nextcloud's chunked uploads (chunked.rs): only the user's own, never dav-server's tree.
        if let Some(target) = crate::chunked::target(&path, &user.address) {
            let target = match target {
                Ok(t) => t,
                Err(status) => {
                    tracing::info!(%peer, user = user.address, %method, path, "not this user's uploads");
                    return simple(status, "not found\n");
                }
            };
            if method == Method::PUT
                && let crate::chunked::Target::Chunk(id, name) = &target
            {
                let expected = match announced_length(&req) {
                    Ok(n) => n,
                    Err(()) => return simple(StatusCode::BAD_REQUEST, "bad Content-Length\n"),
                };
                let (parts, body) = req.into_parts();
                let body = LengthChecked::new(body, expected);
                let chunk = (id.clone(), name.clone());
                return self
                    .chunked
                    .put_chunk(&parts.headers, body, expected, chunk, &user, peer)
                    .await;
            }
            let (parts, _body) = match self.read_body(req, peer, &user).await {
                Ok(r) => r,
                Err(res) => return res,
            };
            if let Err((status, why)) = self.destination_is_here(&parts) {
                tracing::warn!(%peer, user = user.address, %method, path, "{why}");
                return simple(status, &format!("{why}\n"));
            }
            return self.chunked.handle(parts, target, &user, peer).await;
        }
        if method.as_str() == "PATCH" {
            // sabredav partial updates are not implemented (and not advertised).
            let mut res = simple(StatusCode::METHOD_NOT_ALLOWED, "PATCH is not supported\n");
            res.headers_mut().insert(header::ALLOW, HeaderValue::from_static(ALLOW));
            return res;
        }
        let prefix = dav_prefix(&path, &user.address).unwrap_or_default();
        let db = self.context.db.clone();
        let build = |fs: TinyFs| {
            DavHandler::builder()
                .filesystem(Box::new(fs))
                .locksystem(Box::new(PgLocks::new(db.clone(), user.id, &prefix)))
                .strip_prefix(prefix.clone())
                .hide_symlinks(true)
                .autoindex(false)
                .read_buf_size(crate::fs::READ_CHUNK)
                .build_handler()
        };
        if method == Method::PUT {
            // RFC 9110 section 14.5: a server that does not do partial PUT must refuse Content-Range.
            if req.headers().contains_key(header::CONTENT_RANGE) {
                return simple(
                    StatusCode::BAD_REQUEST,
                    "partial PUT (Content-Range) is not supported\n",
                );
            }
            let expected = match announced_length(&req) {
                Ok(n) => n,
                Err(()) => return simple(StatusCode::BAD_REQUEST, "bad Content-Length\n"),
            };
            let mtime = match req.headers().get("x-oc-mtime").map(oc_mtime) {
                None => None,
                Some(Some(t)) => Some(t),
                Some(None) => {
                    tracing::info!(%peer, user = user.address, path, "PUT with an unusable X-OC-Mtime");
                    return simple(StatusCode::BAD_REQUEST, "bad X-OC-Mtime\n");
                }
            };
            // ownCloud's upload checksum: the body is checked against it (checksum.rs).
            let claims = match req.headers().get("oc-checksum") {
                None => Vec::new(),
                Some(value) => match crate::checksum::parse_header(value.as_bytes()) {
                    Some(claims) => claims,
                    None => {
                        tracing::info!(%peer, user = user.address, path, "PUT with an unusable OC-Checksum");
                        return simple(StatusCode::BAD_REQUEST, "bad OC-Checksum\n");
                    }
                },
            };
            let note = Arc::new(crate::checksum::Note::with_claims(claims));
            // The only body dav-server streams (to disk); every other one is read below.
            let req = req.map(|inner| LengthChecked::new(inner, expected));
            let fs = TinyFs::new(db.clone(), self.journal.clone())
                .with_mtime(mtime)
                .with_checksum(note.clone());
            let mut res = build(fs).handle_guarded(req, user.address.clone(), user).await;
            match note.outcome() {
                // Nothing was stored (fs/upload.rs).
                crate::checksum::Outcome::Mismatch => {
                    return simple(StatusCode::BAD_REQUEST, "the body does not match OC-Checksum\n");
                }
                crate::checksum::Outcome::Known(hash)
                    if matches!(res.status(), StatusCode::CREATED | StatusCode::NO_CONTENT) =>
                {
                    let value = HeaderValue::from_str(&hash.header_value()).expect("hex");
                    res.headers_mut().insert("OC-Checksum", value);
                }
                _ => {}
            }
            if mtime.is_some() && matches!(res.status(), StatusCode::CREATED | StatusCode::NO_CONTENT) {
                // ownCloud's answer: the time was kept (rclone's owncloud/nextcloud vendors).
                res.headers_mut()
                    .insert("X-OC-MTime", HeaderValue::from_static("accepted"));
            }
            return res;
        }

        // Every other body is read here, whole and bounded, and an XML one is checked
        // (xmlcheck.rs) before dav-server parses it into a tree.
        let (mut parts, body) = match self.read_body(req, peer, &user).await {
            Ok(r) => r,
            Err(res) => return res,
        };
        if (method.as_str() == "COPY" || method.as_str() == "MOVE")
            && let Err((status, why)) = self.destination_is_here(&parts)
        {
            tracing::warn!(%peer, user = user.address, %method, path, "{why}");
            return simple(status, &format!("{why}\n"));
        }
        if method.as_str() == "LOCK"
            && let Some(value) = parts.headers.get("timeout")
        {
            // dav-server's own reading of Timeout gives up on a list with spaces or on a number
            // past u32, and the lock then got the default; it is read here instead (locks.rs).
            match value.to_str().ok().and_then(crate::locks::requested_timeout) {
                Some(t) => {
                    let v = HeaderValue::from_str(&format!("Second-{}", t.as_secs())).expect("digits");
                    parts.headers.insert("timeout", v);
                }
                None => {
                    tracing::info!(%peer, user = user.address, "LOCK: unusable Timeout {value:?}; default used");
                    parts.headers.remove("timeout");
                }
            }
        }

        if method.as_str() == "PROPFIND" {
            if let Some(res) = refuse_depth_infinity(&parts.headers) {
                let depth = parts
                    .headers
                    .get("depth")
                    .map(|d| String::from_utf8_lossy(d.as_bytes()).into_owned());
                tracing::info!(%peer, user = user.address, path, ?depth, "PROPFIND refused: Depth must be 0 or 1");
                return res;
            }
            // davd answers a PROPFIND itself (propfind.rs); dav-server only what davd does not
            // read (a body that is not a DAV:propfind: 400) and a resource that cannot be
            // (404, 403), with its own status.
            let fs = TinyFs::new(db.clone(), self.journal.clone());
            if let Some(asked) = propfind::asked(&body).map(|a| propfind::for_client(a, &parts.headers))
                && let Ok(dav_path) = DavPath::new(&path).and_then(|mut p| p.set_prefix(&prefix).map(|()| p))
            {
                // One read of quota and usage for the whole answer (every collection reports
                // the account's), so used and available agree with each other.
                let quota = if asked.needs_quota() {
                    match shared::quota::info(&db, user.id).await {
                        Ok(info) => Some(info),
                        Err(e) => {
                            tracing::error!("reading quota: {e}");
                            None
                        }
                    }
                } else {
                    None
                };
                let request = propfind::Request {
                    asked,
                    depth_one: parts
                        .headers
                        .get("depth")
                        .is_some_and(|d| d.as_bytes().trim_ascii() == b"1"),
                    headers: &parts.headers,
                    quota,
                };
                let locks = PgLocks::new(db.clone(), user.id, &prefix);
                match propfind::answer(&fs, locks, &user, &dav_path, request).await {
                    Ok(res) => {
                        // handle() takes the body out of the extensions.
                        let (mut res_parts, pending) = res.into_parts();
                        res_parts.extensions.insert(pending);
                        return Response::from_parts(res_parts, Body::empty());
                    }
                    Err(e) => tracing::debug!(user = user.address, path, "PROPFIND left to dav-server: {e:?}"),
                }
            }
            let req = Request::from_parts(parts, http_body_util::Full::new(body));
            return build(fs).handle_guarded(req, user.address.clone(), user.clone()).await;
        }
        let note = Arc::new(crate::checksum::Note::default());
        let mut fs = TinyFs::new(db.clone(), self.journal.clone()).with_checksum(note.clone());
        if method == Method::GET && channel == Channel::LocalProxy {
            // Plain TCP: the kernel copies the file's pages to the socket (fs/mod.rs).
            fs = fs.with_mapped_reads();
        }
        if method == Method::DELETE {
            // A folder is removed in one journaled step (fs/mod.rs `for_delete`).
            fs = fs.for_delete();
        }
        let handler = build(fs);
        if method.as_str() == "PROPPATCH" {
            return self.proppatch(parts, body, handler, user, &path, &prefix).await;
        }
        let copy = (method.as_str() == "COPY")
            .then(|| copy_keys(&parts.headers, &path, &prefix))
            .flatten();
        let req = Request::from_parts(parts, http_body_util::Full::new(body));
        let user_id = user.id;
        let mut response = handler.handle_guarded(req, user.address.clone(), user).await;
        if (method == Method::GET || method == Method::HEAD)
            && response.status() == StatusCode::OK
            && let crate::checksum::Outcome::Known(hash) = note.outcome()
        {
            // The whole file's hash (ownCloud sends it on GET); not on a 206 part.
            let value = HeaderValue::from_str(&hash.header_value()).expect("hex");
            response.headers_mut().insert("OC-Checksum", value);
        }
        if let Some((from, to, deep)) = copy
            && (response.status() == StatusCode::CREATED || response.status() == StatusCode::NO_CONTENT)
        {
            // dav-server copies a collection by creating folders and copying files; the
            // folders' dead properties are copied here.
            let r = async {
                let mut tx = self.context.db.begin().await?;
                crate::props::copy_tree(&mut tx, user_id, &from, &to, deep).await?;
                tx.commit().await
            }
            .await;
            if let Err(e) = r {
                tracing::error!(from, to, "copying collection properties: {e}");
            }
        }
        response
    }

    /// The largest XML body accepted: the configured `dav.max_xml_body`, but never more than
    /// dav-server itself reads ([`DAV_SERVER_BODY_MAX`]), so the limit that bites is this one,
    /// with a 413 at exactly one byte past it.
    fn xml_limit(&self) -> u64 {
        self.context.config.dav.max_xml_body.min(DAV_SERVER_BODY_MAX)
    }

    /// Read a (non-PUT) request body whole, at most [`App::xml_limit`] bytes (413 past it, with
    /// the connection kept), and refuse an XML body nested too deep or not well-formed with 400
    /// (xmlcheck.rs) before anything builds a tree of it.
    pub(crate) async fn read_body(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        user: &User,
    ) -> Result<(http::request::Parts, Bytes), Response<Body>> {
        let limit = self.xml_limit();
        let method = req.method().clone();
        let announced = match announced_length(&req) {
            Ok(n) => n,
            Err(()) => return Err(simple(StatusCode::BAD_REQUEST, "bad Content-Length\n")),
        };
        let (parts, body) = req.into_parts();
        let too_large = |seen: String| {
            tracing::warn!(%peer, user = user.address, %method, limit, "request body too large ({seen} bytes)");
            simple(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n")
        };
        let mut body = LengthChecked::new(body, announced);
        if let Some(n) = announced
            && n > limit
        {
            // Refused before reading. Up to DRAIN_MAX the body is read and dropped, so the
            // connection stays usable (RFC 9110 section 15.5.14); past that it is closed
            // after the answer (with a lingering close, `close`).
            if n <= DRAIN_MAX {
                drain(&mut body, n).await;
            }
            return Err(too_large(n.to_string()));
        }
        // Read up to the limit; past it (a chunked body), the rest is read and dropped up to
        // DRAIN_MAX as above, and the answer is 413.
        let mut kept = bytes::BytesMut::new();
        let mut seen = 0u64;
        while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
            match frame {
                Ok(frame) => {
                    let Some(data) = frame.data_ref() else { continue };
                    seen += data.len() as u64;
                    if seen > limit {
                        drain(&mut body, DRAIN_MAX.saturating_sub(seen)).await;
                        return Err(too_large(format!("more than {limit}")));
                    }
                    kept.extend_from_slice(data);
                }
                Err(e) => {
                    tracing::info!(%peer, user = user.address, %method, "request body not read: {e}");
                    return Err(simple(StatusCode::BAD_REQUEST, "request body incomplete\n"));
                }
            }
        }
        let body = kept.freeze();
        if XML_METHODS.contains(&method.as_str())
            && !body.is_empty()
            && let Err(why) = crate::xmlcheck::check(&body, crate::xmlcheck::MAX_XML_DEPTH)
        {
            tracing::warn!(%peer, user = user.address, %method, path = parts.uri.path(), "request body refused: {why}");
            return Err(simple(StatusCode::BAD_REQUEST, &format!("{why}\n")));
        }
        Ok((parts, body))
    }

    /// RFC 4918 sections 9.8.5 and 9.9.4: a COPY or MOVE whose Destination is on another
    /// server is answered 502 (davd copies only within itself). "This server" is the authority
    /// the client addressed (the Host header, or the request's own authority), on a scheme davd
    /// serves (https; http too when the loopback listener for a reverse proxy is on). An
    /// absolute path (`/x`) is this server by definition; anything else is 400.
    fn destination_is_here(&self, parts: &http::request::Parts) -> Result<(), (StatusCode, String)> {
        let Some(dest) = parts.headers.get("destination") else {
            return Ok(()); // dav-server answers a missing Destination itself (400)
        };
        let bad = |why: &str| Err((StatusCode::BAD_REQUEST, format!("Destination {dest:?}: {why}")));
        let Ok(text) = dest.to_str() else {
            return bad("not ASCII");
        };
        let text = text.trim();
        // Simple-ref = absolute-URI | path-absolute (RFC 4918 section 10.3); "//host/x" is
        // neither (it would name another host).
        if text.starts_with('/') {
            return if text.starts_with("//") {
                bad("not an absolute path or URI")
            } else {
                Ok(())
            };
        }
        let Ok(uri) = text.parse::<http::Uri>() else {
            return bad("not a URI");
        };
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return bad("not an absolute URI");
        };
        let elsewhere = |why: &str| Err((StatusCode::BAD_GATEWAY, format!("Destination {text} is {why}")));
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "https" => 443,
            "http" if self.context.config.dav.http_listen.is_some() => 80,
            _ => return elsewhere("not on a scheme this server serves"),
        };
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.trim().parse::<http::uri::Authority>().ok())
            .or_else(|| parts.uri.authority().cloned());
        let Some(host) = host else {
            return elsewhere("not provably this server (no Host)");
        };
        let same = host.host().eq_ignore_ascii_case(authority.host())
            && host.port_u16().unwrap_or(default_port) == authority.port_u16().unwrap_or(default_port)
            && authority.as_str().rfind('@').is_none();
        if same { Ok(()) } else { elsewhere("on another server") }
    }

    /// PROPPATCH through dav-server, then make the Win32 properties it accepted true (win32.rs).
    async fn proppatch(
        &self,
        parts: http::request::Parts,
        body: Bytes,
        handler: DavHandler<User>,
        user: User,
        uri_path: &str,
        prefix: &str,
    ) -> Response<Body> {
        // DAV:getlastmodified goes to dav-server as Win32LastModifiedTime (mtime.rs).
        let stood_in = crate::mtime::stand_in(&body).map(Bytes::from);
        let body = stood_in.clone().unwrap_or(body);
        let sets = crate::win32::sets_in(&body);
        let req = Request::from_parts(parts, http_body_util::Full::new(body));
        let response = handler.handle_guarded(req, user.address.clone(), user.clone()).await;
        if sets.is_empty() || response.status() != StatusCode::MULTI_STATUS {
            return response;
        }
        // The answer to a PROPPATCH is small (bounded by the request); read it to see whether
        // everything was applied (RFC 4918 section 9.2: all or nothing).
        let (parts, body) = response.into_parts();
        let bytes = match http_body_util::BodyExt::collect(body).await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                tracing::error!("PROPPATCH answer: {e}");
                return simple(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
            }
        };
        // Every status of the multistatus (RFC 4918 section 14.28), read as parsed elements; an
        // answer that cannot be read applies nothing.
        let all_ok = match crate::xmldoc::texts(&bytes, |name, _| crate::xmldoc::is_dav(name, "status")) {
            Ok(statuses) => statuses.iter().all(|s| s.trim_start().starts_with("HTTP/1.1 200")),
            Err(e) => {
                tracing::error!(path = uri_path, "unreadable PROPPATCH answer: {e}");
                false
            }
        };
        if all_ok {
            let path = dav_server::davpath::DavPath::new(uri_path).and_then(|mut p| {
                if !prefix.is_empty() {
                    p.set_prefix(prefix)?;
                }
                Ok(p)
            });
            let applied = match path {
                Ok(p) => TinyFs::new(self.context.db.clone(), self.journal.clone())
                    .apply_win32(&p, &user, sets)
                    .await
                    .map_err(|e| format!("{e:?}")),
                Err(e) => Err(format!("{e:?}")),
            };
            if let Err(e) = applied {
                tracing::error!(path = uri_path, "storing Win32 properties failed: {e}");
                return simple(StatusCode::INTERNAL_SERVER_ERROR, "properties not stored\n");
            }
        }
        let (mut parts, mut bytes) = (parts, bytes);
        if stood_in.is_some() {
            match crate::mtime::named_back(&bytes) {
                Some(named) => {
                    parts.headers.remove(header::CONTENT_LENGTH);
                    bytes = Bytes::from(named);
                }
                None => tracing::error!(path = uri_path, "PROPPATCH answer not renamed back"),
            }
        }
        Response::from_parts(parts, Body::from(bytes))
    }

    async fn autoconfig(&self, head: bool) -> Response<Body> {
        let domains = match shared::accounts::list_domains(&self.context.db).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("autoconfig: {e}");
                return simple(StatusCode::SERVICE_UNAVAILABLE, "try again later\n");
            }
        };
        let xml = autoconfig::document(&self.context.config, &domains);
        let len = xml.len();
        let mut res = Response::new(if head { Body::empty() } else { Body::from(xml) });
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/xml; charset=utf-8"),
        );
        res.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        res
    }

    async fn authenticate(
        &self,
        req: &Request<Incoming>,
        peer: SocketAddr,
        channel: Channel,
        cache: &AuthCache,
    ) -> Result<User, Response<Body>> {
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return Err(unauthorized());
        };
        if !password_may_cross(channel, peer.ip(), &self.context.config.auth) {
            // Unreachable with a valid config (plain HTTP listens on loopback only); kept so the
            // rule has one home, shared::auth.
            tracing::warn!(%peer, "Basic credentials over a connection that may not carry them");
            return Err(simple(StatusCode::FORBIDDEN, "use HTTPS\n"));
        }
        if let Some((cached, user, at)) = cache.lock().expect("auth cache lock").as_ref()
            && cached == value
            && at.elapsed() < AUTH_CACHE_FOR
        {
            return Ok(user.clone());
        }
        let Some((name, password)) = parse_basic(value.as_bytes()) else {
            tracing::info!(%peer, "malformed Authorization header");
            return Err(unauthorized());
        };
        match self.context.auth.login(&name, &password, peer.ip()).await {
            Ok(authed) => {
                let root = self.context.user_files_dir(&authed.address);
                let r = root.clone();
                let made = tokio::task::spawn_blocking(move || ensure_root(&r)).await;
                if !matches!(made, Ok(Ok(()))) {
                    tracing::error!(root = %root.display(), "cannot prepare the user's folder: {made:?}");
                    return Err(simple(StatusCode::INTERNAL_SERVER_ERROR, "storage unavailable\n"));
                }
                let user = User {
                    id: authed.id,
                    address: authed.address,
                    root,
                };
                *cache.lock().expect("auth cache lock") =
                    Some((value.clone(), user.clone(), std::time::Instant::now()));
                Ok(user)
            }
            Err(AuthError::Invalid) => Err(unauthorized()),
            Err(AuthError::Throttled { retry_after }) => {
                let mut res = simple(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many failed logins; try again later\n",
                );
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after.as_secs().max(1)));
                Err(res)
            }
            Err(AuthError::Busy) => {
                // RFC 9110 §15.6.4: 503 with Retry-After for a temporary overload.
                let mut res = simple(StatusCode::SERVICE_UNAVAILABLE, "server busy; try again shortly\n");
                res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
                Err(res)
            }
            Err(AuthError::Internal(e)) => {
                tracing::error!("login check failed: {e}");
                Err(simple(StatusCode::SERVICE_UNAVAILABLE, "try again later\n"))
            }
        }
    }
}

/// Create the user's folder (and DATA/files) if needed; refuse one that is not a real directory.
fn ensure_root(root: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(parent) = root.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o750).create(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(root) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = root.symlink_metadata()?;
    if !meta.is_dir() {
        return Err(io::Error::other("the user's folder is not a directory"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oc_mtime_reads_unix_seconds() {
        let t = |s: &str| oc_mtime(&HeaderValue::from_str(s).unwrap());
        let at = |secs, nanos| Some(std::time::UNIX_EPOCH + Duration::new(secs, nanos));
        assert_eq!(t("1700000000"), at(1_700_000_000, 0));
        assert_eq!(t(" 1700000000.5 "), at(1_700_000_000, 500_000_000));
        assert_eq!(t("0"), at(0, 0));
        for bad in [
            "",
            "-1",
            "1e9",
            ".5",
            "abc",
            "1700000000.1234567891",
            "999999999999",
            "253402300800",
        ] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn dav_prefix_only_for_ones_own_address() {
        assert_eq!(
            dav_prefix("/dav/alice@example.test/x", "alice@example.test"),
            Some("/dav/alice@example.test".into())
        );
        assert_eq!(
            dav_prefix("/dav/alice%40example.test/", "alice@example.test"),
            Some("/dav/alice@example.test".into())
        );
        assert_eq!(dav_prefix("/dav/bob@example.test/x", "alice@example.test"), None);
        assert_eq!(
            dav_prefix("/remote.php/dav/files/alice%40example.test/x", "alice@example.test"),
            Some("/remote.php/dav/files/alice@example.test".into())
        );
        assert_eq!(
            dav_prefix("/remote.php/dav/files/bob@example.test/x", "alice@example.test"),
            None
        );
        assert_eq!(dav_prefix("/docs/x", "alice@example.test"), None);
    }
}
