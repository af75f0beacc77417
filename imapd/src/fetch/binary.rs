//! BINARY[section] (RFC 3516, RFC 9051 §6.4.5): a part's content with its
//! Content-Transfer-Encoding (RFC 2045 §6) removed. Parts are numbered by the one MIME model
//! (shared::mailstore::parsed::MimeTree), as for BODY[section]; the decoders are mail-parser's.

use mail_parser::decoders::{base64::base64_decode, quoted_printable::quoted_printable_decode};
use shared::mailstore::parsed::MimeTree;

use super::mime::{header_values, split};

/// Why a part cannot be given decoded: RFC 3516 §4.3 answers `NO [UNKNOWN-CTE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CteError {
    /// A Content-Transfer-Encoding this server does not know (an `x-token`, RFC 2045 §6.1).
    Unknown(String),
    /// A known encoding whose content is malformed (a character outside the base64 alphabet,
    /// a `=` not followed by two hex digits in quoted-printable).
    Malformed(&'static str),
}

impl std::fmt::Display for CteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CteError::Unknown(name) => write!(f, "unknown Content-Transfer-Encoding {name:?}"),
            CteError::Malformed(name) => write!(f, "the part is not valid {name}"),
        }
    }
}

/// The decoded content of section `part` of the message `raw`; `Ok(None)` when there is no
/// such part (answered with an empty string, as BODY[section] is). An empty `part` is the
/// whole message: its header as is and its body decoded. A decoded part is never larger than
/// the stored one (base64 and quoted-printable only shrink), so memory stays within the
/// message size.
pub fn section(raw: &[u8], part: &[u32]) -> Result<Option<Vec<u8>>, CteError> {
    if part.is_empty() {
        let message = split(raw);
        return Ok(Some(match decode(message.header, message.body)? {
            None => raw.to_vec(),
            Some(body) => [message.header, &body].concat(),
        }));
    }
    let tree = MimeTree::parse(raw);
    let Some(index) = tree.find(part) else {
        return Ok(None);
    };
    let entity = tree.entity(index);
    let body = &raw[entity.body.clone()];
    Ok(Some(match decode(&raw[entity.header.clone()], body)? {
        None => body.to_vec(),
        Some(decoded) => decoded,
    }))
}

/// `body` decoded by the Content-Transfer-Encoding in `header`; `None` when the encoding is
/// the identity (absent, 7bit, 8bit, binary: RFC 2045 §6.2) and the body is its own content.
fn decode(header: &[u8], body: &[u8]) -> Result<Option<Vec<u8>>, CteError> {
    // The last field wins, as in shared::mailstore::parsed; the value is a token, case-insensitive
    // (RFC 2045 §6.1).
    let Some(encoding) = header_values(header, "Content-Transfer-Encoding").pop() else {
        return Ok(None);
    };
    match encoding.to_ascii_lowercase().as_str() {
        "" | "7bit" | "8bit" | "binary" => Ok(None),
        "base64" => base64_decode(body).map(Some).ok_or(CteError::Malformed("base64")),
        "quoted-printable" => quoted_printable_decode(body)
            .map(Some)
            .ok_or(CteError::Malformed("quoted-printable")),
        _ => Err(CteError::Unknown(encoding)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"Subject: t\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9 =\r\nsoft\r\n--b\r\n\
Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: BASE64\r\n\r\nAAEC\r\n/w==\r\n--b\r\n\
Content-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin\r\n--b\r\n\
Content-Type: text/plain\r\n\r\nplain\r\n--b--\r\n";

    #[test]
    fn decodes_each_encoding() {
        assert_eq!(section(MSG, &[1]).unwrap().unwrap(), "café soft".as_bytes());
        assert_eq!(section(MSG, &[2]).unwrap().unwrap(), [0u8, 1, 2, 0xff]);
        assert_eq!(section(MSG, &[3]), Err(CteError::Unknown("x-uuencode".into())));
        assert_eq!(section(MSG, &[4]).unwrap().unwrap(), b"plain");
        assert_eq!(section(MSG, &[5]).unwrap(), None);
        assert_eq!(section(MSG, &[]).unwrap().unwrap(), MSG);
    }

    #[test]
    fn single_part_and_malformed() {
        let single = b"Content-Transfer-Encoding: base64\r\n\r\naGk=\r\n";
        assert_eq!(section(single, &[1]).unwrap().unwrap(), b"hi");
        assert_eq!(
            section(single, &[]).unwrap().unwrap(),
            b"Content-Transfer-Encoding: base64\r\n\r\nhi"
        );
        let broken = b"Content-Transfer-Encoding: base64\r\n\r\na*Gk=\r\n";
        assert_eq!(section(broken, &[1]), Err(CteError::Malformed("base64")));
    }
}
