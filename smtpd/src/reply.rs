//! SMTP replies: a code, an enhanced status code (RFC 3463, announced with
//! ENHANCEDSTATUSCODES, RFC 2034) and text, possibly on several lines (RFC 5321 §4.2.1).

use std::fmt::Write as _;

/// One reply, one or more lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Enhanced status code such as "2.1.0"; empty for replies that carry none (220, 221 ...).
    pub status: &'static str,
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply.
    pub fn new(code: u16, status: &'static str, text: impl Into<String>) -> Reply {
        Reply {
            code,
            status,
            lines: vec![text.into()],
        }
    }

    /// `250 2.0.0 OK`
    pub fn ok() -> Reply {
        Reply::new(250, "2.0.0", "OK")
    }

    /// Whether this is a 2xx or 3xx reply.
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// The reply on the wire, each line ending in CRLF.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = String::new();
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            // Enhanced codes go on every line of a reply but not on EHLO keyword lines, which
            // RFC 2034 §4 leaves alone: callers building EHLO use an empty status.
            if self.status.is_empty() {
                let _ = write!(out, "{}{}{}\r\n", self.code, sep, line);
            } else {
                let _ = write!(out, "{}{}{} {}\r\n", self.code, sep, self.status, line);
            }
        }
        if self.lines.is_empty() {
            let _ = write!(out, "{} \r\n", self.code);
        }
        out.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiline() {
        let r = Reply {
            code: 250,
            status: "",
            lines: vec!["host".into(), "SIZE 10".into()],
        };
        assert_eq!(r.to_wire(), b"250-host\r\n250 SIZE 10\r\n");
        assert_eq!(Reply::ok().to_wire(), b"250 2.0.0 OK\r\n");
    }
}
