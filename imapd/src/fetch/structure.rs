//! ENVELOPE, BODY and BODYSTRUCTURE (RFC 3501 §7.4.2) written from the structures parsed at
//! delivery (shared::mailstore::parsed).

use base64::Engine as _;
use shared::mailstore::parsed::{BodyStructure, Disposition, Envelope, EnvelopeAddress};

use crate::wire::encode;

/// A string for the client: 8-bit text becomes an RFC 2047 encoded word unless UTF8=ACCEPT.
fn text(out: &mut Vec<u8>, s: Option<&str>, utf8: bool) {
    match s {
        Some(s) if !utf8 && !s.is_ascii() => {
            let word = format!(
                "=?utf-8?b?{}?=",
                base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
            );
            encode::string(out, word.as_bytes());
        }
        Some(s) => encode::string(out, s.as_bytes()),
        None => out.extend_from_slice(b"NIL"),
    }
}

fn addresses(out: &mut Vec<u8>, list: &[EnvelopeAddress], utf8: bool) {
    if list.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for a in list {
        out.push(b'(');
        text(out, a.name.as_deref(), utf8);
        out.push(b' ');
        text(out, a.adl.as_deref(), utf8);
        out.push(b' ');
        text(out, a.mailbox.as_deref(), utf8);
        out.push(b' ');
        text(out, a.host.as_deref(), utf8);
        out.push(b')');
    }
    out.push(b')');
}

/// `ENVELOPE` data.
pub fn envelope(out: &mut Vec<u8>, e: &Envelope, utf8: bool) {
    out.push(b'(');
    text(out, e.date.as_deref(), utf8);
    out.push(b' ');
    text(out, e.subject.as_deref(), utf8);
    for list in [&e.from, &e.sender, &e.reply_to, &e.to, &e.cc, &e.bcc] {
        out.push(b' ');
        addresses(out, list, utf8);
    }
    out.push(b' ');
    text(out, e.in_reply_to.as_deref(), utf8);
    out.push(b' ');
    text(out, e.message_id.as_deref(), utf8);
    out.push(b')');
}

fn params(out: &mut Vec<u8>, params: &[(String, String)], utf8: bool) {
    if params.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        text(out, Some(&k.to_ascii_uppercase()), utf8);
        out.push(b' ');
        text(out, Some(v), utf8);
    }
    out.push(b')');
}

fn disposition(out: &mut Vec<u8>, d: Option<&Disposition>, utf8: bool) {
    match d {
        None => out.extend_from_slice(b"NIL"),
        Some(d) => {
            out.push(b'(');
            text(out, Some(&d.kind.to_ascii_uppercase()), utf8);
            out.push(b' ');
            params(out, &d.params, utf8);
            out.push(b')');
        }
    }
}

fn language(out: &mut Vec<u8>, l: &[String], utf8: bool) {
    match l {
        [] => out.extend_from_slice(b"NIL"),
        [one] => text(out, Some(one), utf8),
        many => {
            out.push(b'(');
            for (i, x) in many.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                text(out, Some(x), utf8);
            }
            out.push(b')');
        }
    }
}

/// The extension data both kinds of part end with (RFC 3501 §7.4.2, body-ext-1part and
/// body-ext-mpart): disposition, language and location, each after a space.
fn extension_tail(out: &mut Vec<u8>, d: Option<&Disposition>, l: &[String], location: Option<&str>, utf8: bool) {
    out.push(b' ');
    disposition(out, d, utf8);
    out.push(b' ');
    language(out, l, utf8);
    out.push(b' ');
    text(out, location, utf8);
}

/// Levels written before a structure is cut short. Delivery already stores at most
/// MAX_STRUCTURE_DEPTH levels; this bounds the recursion here whatever the database holds.
const MAX_DEPTH: usize = shared::mailstore::parsed::MAX_STRUCTURE_DEPTH + 2;

const EMPTY_TEXT_PART: &[u8] = b"(\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 0 0)";

/// `BODYSTRUCTURE` (`extended`) or `BODY` data.
pub fn body(out: &mut Vec<u8>, b: &BodyStructure, extended: bool, utf8: bool) {
    body_at(out, b, extended, utf8, 0);
}

fn body_at(out: &mut Vec<u8>, b: &BodyStructure, extended: bool, utf8: bool, depth: usize) {
    if depth > MAX_DEPTH {
        tracing::warn!("stored body structure deeper than {MAX_DEPTH} levels: cut");
        out.extend_from_slice(EMPTY_TEXT_PART);
        return;
    }
    out.push(b'(');
    match b {
        BodyStructure::Multipart {
            parts,
            media_subtype,
            params: p,
            disposition: d,
            language: l,
            location,
            ..
        } => {
            if parts.is_empty() {
                // RFC 3501 requires at least one part; show an empty text part.
                out.extend_from_slice(EMPTY_TEXT_PART);
            }
            for part in parts {
                body_at(out, part, extended, utf8, depth + 1);
            }
            out.push(b' ');
            text(out, Some(&media_subtype.to_ascii_uppercase()), utf8);
            if extended {
                out.push(b' ');
                params(out, p, utf8);
                extension_tail(out, d.as_ref(), l, location.as_deref(), utf8);
            }
        }
        BodyStructure::Single {
            media_type,
            media_subtype,
            params: p,
            id,
            description,
            encoding,
            size,
            lines,
            md5,
            disposition: d,
            language: l,
            location,
            message,
            ..
        } => {
            text(out, Some(&media_type.to_ascii_uppercase()), utf8);
            out.push(b' ');
            text(out, Some(&media_subtype.to_ascii_uppercase()), utf8);
            out.push(b' ');
            params(out, p, utf8);
            out.push(b' ');
            text(out, id.as_deref(), utf8);
            out.push(b' ');
            text(out, description.as_deref(), utf8);
            out.push(b' ');
            text(out, Some(encoding), utf8);
            out.extend_from_slice(format!(" {size}").as_bytes());
            if let Some(inner) = message {
                out.push(b' ');
                envelope(out, &inner.0, utf8);
                out.push(b' ');
                body_at(out, &inner.1, extended, utf8, depth + 1);
                out.extend_from_slice(format!(" {}", lines.unwrap_or(0)).as_bytes());
            } else if media_type == "text" {
                out.extend_from_slice(format!(" {}", lines.unwrap_or(0)).as_bytes());
            }
            if extended {
                out.push(b' ');
                text(out, md5.as_deref(), utf8);
                extension_tail(out, d.as_ref(), l, location.as_deref(), utf8);
            }
        }
    }
    out.push(b')');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_structure_too_deep_is_cut() {
        let mut b = BodyStructure::Multipart {
            parts: Vec::new(),
            media_subtype: "mixed".into(),
            params: Vec::new(),
            disposition: None,
            language: Vec::new(),
            location: None,
            model: 0,
        };
        for _ in 0..500 {
            b = BodyStructure::Multipart {
                parts: vec![b],
                media_subtype: "mixed".into(),
                params: Vec::new(),
                disposition: None,
                language: Vec::new(),
                location: None,
                model: 0,
            };
        }
        let mut out = Vec::new();
        body(&mut out, &b, true, false);
        let depth = out.iter().filter(|&&c| c == b'(').count();
        assert!(depth < 4 * MAX_DEPTH, "{depth}");
    }

    #[test]
    fn a_simple_message() {
        let parsed = shared::mailstore::parsed::parse(
            b"From: J\xc3\xb6rg <j@x.test>\r\nSubject: hi\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n\r\nbody\r\n",
        );
        let mut out = Vec::new();
        envelope(&mut out, &parsed.envelope, false);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("(\"Tue, 24 Nov 2026 10:00:00 +0000\" \"hi\" ((\"=?utf-8?b?"),
            "{text}"
        );
        let mut out = Vec::new();
        body(&mut out, &parsed.body_structure, true, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 6 1 NIL NIL NIL NIL)"
        );
    }
}
