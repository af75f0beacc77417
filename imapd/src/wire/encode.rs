//! Writing response data: strings as atoms, quoted strings or literals (RFC 3501 §4.3, §9).

/// Append `s` as a quoted string when it can be one, else as a literal.
pub fn string(out: &mut Vec<u8>, s: &[u8]) {
    let quotable = s.len() < 1000 && s.iter().all(|&b| (0x20..0x7f).contains(&b) || (b >= 0x80 && b != 0xff));
    if quotable && std::str::from_utf8(s).is_ok() {
        out.push(b'"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        literal(out, s);
    }
}

/// Append `s` as a literal.
pub fn literal(out: &mut Vec<u8>, s: &[u8]) {
    use std::io::Write as _;
    // Written in place: no string made per literal (one per message of a header download).
    out.reserve(s.len() + 24);
    let _ = write!(out, "{{{}}}\r\n", s.len());
    out.extend_from_slice(s);
}

/// Append an nstring: NIL or a string.
pub fn nstring(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => string(out, s.as_bytes()),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// Append a flag list `(\Seen $Label)`.
pub fn flag_list(out: &mut Vec<u8>, flags: &[String]) {
    out.push(b'(');
    for (i, f) in flags.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(f.as_bytes());
    }
    out.push(b')');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings() {
        let mut out = Vec::new();
        string(&mut out, b"a \"b\"");
        assert_eq!(out, b"\"a \\\"b\\\"\"");
        let mut out = Vec::new();
        string(&mut out, b"a\r\nb");
        assert_eq!(out, b"{4}\r\na\r\nb");
        let mut out = Vec::new();
        nstring(&mut out, None);
        assert_eq!(out, b"NIL");
    }
}
