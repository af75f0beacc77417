//! `[net]`: connection timeouts every daemon shares (shared::net applies them).

use super::Section;

/// `[net]`
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Seconds a client gets to finish a TLS handshake (implicit TLS or after STARTTLS).
    pub tls_handshake_timeout_secs: u64,
    /// Seconds a write may make no progress (a client that stops reading) before the
    /// connection is dropped and its slot freed.
    pub write_timeout_secs: u64,
}

pub(super) const TEMPLATE: &str = r#"[net]
# Seconds a client gets to finish a TLS handshake (implicit TLS, or after STARTTLS).
tls_handshake_timeout_secs = 20
# Seconds a reply may wait for a client that stops reading before the connection is dropped.
write_timeout_secs = 60
"#;

impl NetConfig {
    pub(super) fn read(root: &toml::Table, problems: &mut Vec<String>) -> NetConfig {
        let mut s = Section::new(root, "net", problems);
        let config = NetConfig {
            tls_handshake_timeout_secs: s.number("tls_handshake_timeout_secs", 20, 1, 3600),
            write_timeout_secs: s.number("write_timeout_secs", 60, 1, 86_400),
        };
        s.finish();
        config
    }
}
