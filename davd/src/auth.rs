//! HTTP Basic credentials (RFC 7617). A parser without I/O; the password check is
//! shared::auth (argon2, throttled).

use base64::Engine as _;

/// `Basic <base64(user:password)>` -> (user, password). The user may not contain ':'
/// (RFC 7617 section 2); the password may.
pub fn parse_basic(header: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, rest) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    if user.is_empty() {
        return None;
    }
    Some((user.to_string(), password.to_string()))
}

/// The challenge sent with every 401 (RFC 7617 section 2.1: charset tells clients to send UTF-8).
pub const CHALLENGE: &str = "Basic realm=\"tinydc\", charset=\"UTF-8\"";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_forms() {
        // "alice@example.test:p:w" in base64.
        let h = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice@example.test:p:w")
        );
        assert_eq!(
            parse_basic(h.as_bytes()),
            Some(("alice@example.test".into(), "p:w".into()))
        );
        assert_eq!(parse_basic(b"Bearer abc"), None);
        assert_eq!(parse_basic(b"Basic !!!"), None);
        assert_eq!(parse_basic(b"Basic"), None);
        let no_colon = format!("basic {}", base64::engine::general_purpose::STANDARD.encode("alice"));
        assert_eq!(parse_basic(no_colon.as_bytes()), None);
        let empty_user = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(":pw"));
        assert_eq!(parse_basic(empty_user.as_bytes()), None);
    }
}
