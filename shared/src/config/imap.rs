//! `[imap]`: tinydc-imapd's listeners and limits.

use std::net::SocketAddr;

use super::Section;

/// `[imap]`
#[derive(Debug, Clone)]
pub struct ImapConfig {
    /// IMAP with STARTTLS (port 143 in production). Empty: off.
    pub listen: Option<SocketAddr>,
    /// IMAP with implicit TLS (port 993 in production). Empty: off.
    pub tls_listen: Option<SocketAddr>,
    /// Longest command line (outside literals), in bytes.
    pub max_line_length: u64,
    /// Largest literal (APPEND message) accepted, in bytes.
    pub max_literal_size: u64,
    /// Seconds of silence before an idle connection is closed (RFC 3501 asks for 30 minutes at least).
    pub idle_timeout_secs: u64,
    /// Seconds of silence before a connection that has not logged in is closed (RFC 9051 §5.4's
    /// 30 minutes is for authenticated sessions); also bounds an AUTHENTICATE exchange.
    pub login_timeout_secs: u64,
    /// Connections open at once, over both listeners.
    pub max_connections: u64,
    /// Connections one client address (an IPv4 address, an IPv6 /64) may hold open at once.
    pub max_connections_per_address: u64,
    /// Offer COMPRESS=DEFLATE.
    pub compress: bool,
    /// Offer CONDSTORE and QRESYNC (RFC 7162): a client with a cache resyncs a mailbox in one
    /// SELECT. On by default; off hides both (for a client that misbehaves with them).
    pub condstore: bool,
    /// Bytes of literals (APPENDed messages) all connections together may hold in memory.
    pub literal_memory: u64,
    /// Mailboxes one user may have.
    pub max_mailboxes: u64,
    /// Levels of a mailbox name (`a/b/c` has 3).
    pub max_mailbox_depth: u64,
    /// Bytes of a mailbox name.
    pub max_mailbox_name_length: u64,
    /// Bytes of one METADATA entry value (RFC 5464: larger ones get `NO [METADATA MAXSIZE n]`).
    pub metadata_max_value: u64,
    /// METADATA entries one user may have, over the server and all their mailboxes (RFC 5464:
    /// `NO [METADATA TOOMANY]` past it).
    pub metadata_max_entries: u64,
}

pub(super) const TEMPLATE: &str = r#"[imap]
# IMAP with STARTTLS (143 in production) and with implicit TLS (993). Empty turns one off.
listen = "0.0.0.0:10143"
tls_listen = "0.0.0.0:10993"
# Longest command line outside literals, in bytes; largest literal (an APPENDed message).
max_line_length = 65536
max_literal_size = "50M"
# Seconds of silence before an idle connection is closed (at least 30 minutes, RFC 3501).
idle_timeout_secs = 1800
# Seconds a connection that has not logged in may stay silent.
login_timeout_secs = 60
# Connections open at once (both listeners), and from one address (an IPv4 address or an
# IPv6 /64): room for a family behind one router, each Thunderbird using up to 5.
max_connections = 500
max_connections_per_address = 50
# Offer COMPRESS=DEFLATE, and CONDSTORE with QRESYNC (quick resync of a client's cache).
compress = true
condstore = true
# Literals (APPENDed messages) held in memory by all connections together; a literal that
# does not fit is refused (NO [UNAVAILABLE]) before it is sent. At least max_literal_size.
literal_memory = "256M"
# Per user: mailboxes, levels of a name (a/b/c has 3), bytes of a name. CREATE and RENAME
# past them get NO [LIMIT].
max_mailboxes = 1000
max_mailbox_depth = 32
max_mailbox_name_length = 1024
# Per user: IMAP METADATA (RFC 5464) entries, and bytes of one entry's value. Entries count
# in the user's quota (name and value bytes).
metadata_max_entries = 200
metadata_max_value = "64K"
"#;

impl ImapConfig {
    pub(super) fn read(root: &toml::Table, problems: &mut Vec<String>) -> ImapConfig {
        let mut s = Section::new(root, "imap", problems);
        let config = ImapConfig {
            listen: s.listen("listen", "0.0.0.0:10143"),
            tls_listen: s.listen("tls_listen", "0.0.0.0:10993"),
            max_line_length: s.number("max_line_length", 65536, 1024, 16 << 20),
            max_literal_size: s.size("max_literal_size", 50 << 20),
            idle_timeout_secs: s.number("idle_timeout_secs", 1800, 1, 86_400),
            login_timeout_secs: s.number("login_timeout_secs", 60, 1, 86_400),
            max_connections: s.number("max_connections", 500, 1, 1_000_000),
            max_connections_per_address: s.number("max_connections_per_address", 50, 1, 1_000_000),
            compress: s.bool("compress", true),
            condstore: s.bool("condstore", true),
            literal_memory: s.size("literal_memory", 256 << 20),
            max_mailboxes: s.number("max_mailboxes", 1000, 10, 1_000_000),
            max_mailbox_depth: s.number("max_mailbox_depth", 32, 1, 1000),
            max_mailbox_name_length: s.number("max_mailbox_name_length", 1024, 16, 65536),
            metadata_max_value: s.size("metadata_max_value", 64 << 10),
            metadata_max_entries: s.number("metadata_max_entries", 200, 1, 100_000),
        };
        s.finish();
        config
    }
}

impl ImapConfig {
    /// The limits of METADATA entries (`shared::metadata::set`).
    pub fn metadata_limits(&self) -> crate::metadata::Limits {
        crate::metadata::Limits {
            max_value: self.metadata_max_value,
            max_entries: self.metadata_max_entries,
        }
    }

    /// The mail store's limits on a user's mailbox tree.
    pub fn mailbox_limits(&self) -> crate::mailstore::MailboxLimits {
        crate::mailstore::MailboxLimits {
            max_mailboxes: self.max_mailboxes,
            max_depth: self.max_mailbox_depth as usize,
            max_name_length: self.max_mailbox_name_length as usize,
        }
    }
}
