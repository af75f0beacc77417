//! `[dav]`: tinydc-davd's listeners and limits.

use std::net::SocketAddr;
use std::time::Duration;

use super::Section;

/// `[dav]`
#[derive(Debug, Clone)]
pub struct DavConfig {
    /// WebDAV over HTTPS (port 443 in production). Empty: off.
    pub https_listen: Option<SocketAddr>,
    /// Plain HTTP for a reverse proxy; only a loopback address is allowed. Empty: off.
    pub http_listen: Option<SocketAddr>,
    /// Connections open at once.
    pub max_connections: u64,
    /// Connections one client address (an IPv4 address, an IPv6 /64) may hold open at once on
    /// the HTTPS listener (the loopback HTTP listener serves a reverse proxy: not counted so).
    pub max_connections_per_address: u64,
    /// Seconds a client gets to send a request's headers; also how long an idle keep-alive
    /// connection stays open waiting for the next request.
    pub header_timeout_secs: u64,
    /// Largest XML request body (PROPFIND, PROPPATCH, LOCK), in bytes; davd applies at most
    /// 64 KiB, all dav-server reads (davd::server::DAV_SERVER_BODY_MAX).
    pub max_xml_body: u64,
    /// How long an unfinished chunked upload (Nextcloud chunking v2, davd's chunked.rs) is kept
    /// after its last chunk arrived; then its chunks are removed and their quota given back.
    pub upload_expiry: Duration,
}

pub(super) const TEMPLATE: &str = r#"[dav]
# WebDAV over HTTPS (443 in production). Empty turns it off.
https_listen = "0.0.0.0:10443"
# Plain HTTP for a reverse proxy on this machine; loopback addresses only. Empty turns it off.
http_listen = ""
# Connections open at once, and from one address (an IPv4 address or an IPv6 /64).
max_connections = 200
max_connections_per_address = 50
# Seconds a client gets to send a request's headers, and an idle keep-alive connection waits.
header_timeout_secs = 30
# Largest XML request body (PROPFIND, PROPPATCH, LOCK); at most 64K (larger values act as 64K).
max_xml_body = "64K"
# An unfinished chunked upload (Nextcloud's chunking, for large files over a weak link) is
# removed this long after its last chunk arrived, and its quota given back ("90s", "30m", "24h").
upload_expiry = "24h"
"#;

impl DavConfig {
    pub(super) fn read(root: &toml::Table, problems: &mut Vec<String>) -> DavConfig {
        let mut s = Section::new(root, "dav", problems);
        let config = DavConfig {
            https_listen: s.listen("https_listen", "0.0.0.0:10443"),
            http_listen: s.listen("http_listen", ""),
            max_connections: s.number("max_connections", 200, 1, 1_000_000),
            max_connections_per_address: s.number("max_connections_per_address", 50, 1, 1_000_000),
            header_timeout_secs: s.number("header_timeout_secs", 30, 1, 3600),
            max_xml_body: s.size("max_xml_body", 64 << 10),
            upload_expiry: s.duration(
                "upload_expiry",
                Duration::from_secs(24 * 3600),
                Duration::from_secs(1),
                Duration::from_secs(30 * 86400),
            ),
        };
        s.finish();
        if let Some(addr) = config.http_listen.filter(|a| !a.ip().is_loopback()) {
            problems.push(format!(
                "dav.http_listen: {addr} is not a loopback address; plain HTTP is for a local reverse proxy only"
            ));
        }
        config
    }
}
