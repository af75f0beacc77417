//! The port-80 listener (`[tls] acme_http_listen`): plain HTTP that answers the ACME CA's
//! HTTP-01 requests (RFC 8555 §8.3) from [`Http01Answers`] and sends everything else to HTTPS.
//! It runs in davd because davd runs the ACME client (shared::acme).
//!
//! Nothing here reads a body or keeps a connection: one request per connection (no
//! keep-alive), headers of at most [`MAX_HEADER_BYTES`] (more is answered 431 by hyper), a
//! header timeout, and its own connection caps through a [`net::Gate`], so a flood of port 80
//! cannot take WebDAV's connection slots.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use shared::acme::Http01Answers;
use shared::net::{self, Shutdown};
use tokio::net::TcpListener;

/// The path prefix of HTTP-01 requests (RFC 8555 §8.3).
pub const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";
/// Largest request head (start line and headers) read, in bytes.
pub const MAX_HEADER_BYTES: usize = 8192;
/// Most header fields in one request.
const MAX_HEADERS: usize = 32;
/// Connections open at once on port 80, and from one address (an IPv4 address, an IPv6 /64).
/// A CA validates each name once per order, from a few addresses.
pub const MAX_CONNECTIONS: u64 = 64;
pub const MAX_PER_ADDRESS: u64 = 8;
/// Time a client gets to send its request head (at most the WebDAV header timeout).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the listener needs to answer.
#[derive(Clone)]
pub struct Port80 {
    pub answers: Arc<Http01Answers>,
    /// The mail host name: where a request without a usable Host header is redirected.
    pub hostname: String,
    /// The HTTPS port redirects point at; None: no HTTPS listener, nothing to redirect to.
    pub https_port: Option<u16>,
}

/// Serve `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    port80: Port80,
    net_config: &shared::config::NetConfig,
    header_timeout: Duration,
    shutdown: Shutdown,
) {
    let gate = net::Gate::new(net::Limits::new(net_config, MAX_CONNECTIONS, MAX_PER_ADDRESS));
    let endpoint = net::Endpoint {
        name: "acme http-01",
        security: net::Security::Plain,
        refusal: net::HTTP_REFUSAL,
        per_address: true,
    };
    let port80 = Arc::new(port80);
    let header_timeout = header_timeout.min(HEADER_TIMEOUT);
    net::serve(listener, gate, endpoint, shutdown, move |stream, peer, shutdown| {
        let port80 = port80.clone();
        async move {
            let service = service_fn(move |req| {
                let answer = respond(&req, &port80, peer);
                async move { Ok::<_, Infallible>(answer) }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(MAX_HEADER_BYTES)
                .max_header_size(MAX_HEADER_BYTES)
                .max_headers(MAX_HEADERS)
                .keep_alive(false);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::info!(listener = "acme http-01", %peer, "bad or slow request: {e}");
                },
                _ = shutdown.cancelled() => {}
            }
        }
    })
    .await;
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// A host name as a Host header may carry it (without the port): letters, digits, dots and
/// hyphens (RFC 1123 §2.1), or None when it is anything else (an IP literal included).
fn host_name(host: &str) -> Option<String> {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && name.bytes().any(|b| b.is_ascii_alphabetic());
    ok.then(|| name.to_ascii_lowercase())
}

/// The answer to one request on port 80.
pub fn respond<B>(req: &Request<B>, port80: &Port80, peer: SocketAddr) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if let Some(token) = path.strip_prefix(CHALLENGE_PREFIX) {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut res = text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return res;
        }
        // RFC 8555 §8.3: the body is the key authorization; the example's type is
        // application/octet-stream (the CA reads the body whatever the type).
        return match port80.answers.get(token) {
            Some(key_authorization) => {
                tracing::info!(%peer, "ACME: answered an http-01 challenge");
                let mut res = Response::new(Full::new(Bytes::from(key_authorization)));
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                res
            }
            None => {
                tracing::info!(%peer, "ACME: http-01 request for a token with no challenge pending");
                text(StatusCode::NOT_FOUND, "no such challenge\n")
            }
        };
    }
    let Some(https_port) = port80.https_port else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    // Everything else goes to the same host over HTTPS (RFC 9110 §15.4.2 301 for GET and
    // HEAD, §15.4.9 308 for the rest so the method is kept). The Host header is the client's;
    // one that is not a plain host name is replaced by the configured one.
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(host_name)
        .unwrap_or_else(|| port80.hostname.clone());
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| p.starts_with('/'))
        .unwrap_or("/");
    let location = match https_port {
        443 => format!("https://{host}{target}"),
        port => format!("https://{host}:{port}{target}"),
    };
    let Ok(location) = HeaderValue::from_str(&location) else {
        return text(StatusCode::BAD_REQUEST, "bad request\n");
    };
    let status = if req.method() == Method::GET || req.method() == Method::HEAD {
        StatusCode::MOVED_PERMANENTLY
    } else {
        StatusCode::PERMANENT_REDIRECT
    };
    let mut res = text(status, "this server speaks HTTPS\n");
    res.headers_mut().insert(header::LOCATION, location);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_from_the_host_header() {
        assert_eq!(host_name("Mail.Example.org"), Some("mail.example.org".into()));
        assert_eq!(host_name("mail.example.org:80"), Some("mail.example.org".into()));
        assert_eq!(host_name("127.0.0.1:80"), None);
        assert_eq!(host_name("[::1]:80"), None);
        assert_eq!(host_name("evil.example/x"), None);
        assert_eq!(host_name("a b"), None);
        assert_eq!(host_name(""), None);
    }
}
