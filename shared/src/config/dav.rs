//! `[dav]`: tinydc-davd's listeners and limits.

use std::net::SocketAddr;

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
    /// Largest XML request body (PROPFIND, PROPPATCH, LOCK), in bytes; davd applies at most
    /// 64 KiB, all dav-server reads (davd::server::DAV_SERVER_BODY_MAX).
    pub max_xml_body: u64,
}

pub(super) const TEMPLATE: &str = r#"[dav]
# WebDAV over HTTPS (443 in production). Empty turns it off.
https_listen = "0.0.0.0:10443"
# Plain HTTP for a reverse proxy on this machine; loopback addresses only. Empty turns it off.
http_listen = ""
# Connections open at once.
max_connections = 200
# Largest XML request body (PROPFIND, PROPPATCH, LOCK); at most 64K (larger values act as 64K).
max_xml_body = "64K"
"#;

impl DavConfig {
    pub(super) fn read(root: &toml::Table, problems: &mut Vec<String>) -> DavConfig {
        let mut s = Section::new(root, "dav", problems);
        let config = DavConfig {
            https_listen: s.listen("https_listen", "0.0.0.0:10443"),
            http_listen: s.listen("http_listen", ""),
            max_connections: s.number("max_connections", 200, 1, 1_000_000),
            max_xml_body: s.size("max_xml_body", 64 << 10),
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
