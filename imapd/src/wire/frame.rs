//! Framing of commands on the wire (RFC 3501 §4.3, RFC 7888): a command is a line, and a line
//! that ends in `{n}` or `{n+}` continues with n octets and another line. No I/O here: the
//! connection loop reads lines and asks [`literal_at_end`] what follows.

/// A literal announced at the end of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Literal {
    pub size: u64,
    /// `{n}`: the client waits for a continuation request. `{n+}` (LITERAL+): it does not.
    pub synchronizing: bool,
}

/// The literal announced at the end of `line` (which includes its CRLF or LF), if any.
pub fn literal_at_end(line: &[u8]) -> Option<Literal> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = line.strip_suffix(b"}")?;
    let (line, synchronizing) = match line.strip_suffix(b"+") {
        Some(rest) => (rest, false),
        None => (line, true),
    };
    let open = line.iter().rposition(|&b| b == b'{')?;
    let digits = &line[open + 1..];
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let size = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(Literal { size, synchronizing })
}

/// The position just after the first LF in `buf`, if there is one.
pub fn line_end(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n').map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals() {
        assert_eq!(
            literal_at_end(b"a APPEND INBOX {310}\r\n"),
            Some(Literal {
                size: 310,
                synchronizing: true
            })
        );
        assert_eq!(
            literal_at_end(b"a LOGIN {5+}\r\n"),
            Some(Literal {
                size: 5,
                synchronizing: false
            })
        );
        assert_eq!(literal_at_end(b"a NOOP\r\n"), None);
        assert_eq!(literal_at_end(b"a X {}\r\n"), None);
        assert_eq!(literal_at_end(b"a X {99999999999999999999}\r\n"), None);
        assert_eq!(literal_at_end(b"}\r\n"), None);
        assert_eq!(line_end(b"ab\r\ncd"), Some(4));
    }
}
