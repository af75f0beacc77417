//! The bytes of a section of a message (RFC 3501 §6.4.5) from the one MIME model
//! (shared::mailstore::parsed::MimeTree), and header-field filtering.

use shared::mailstore::parsed::{MimeTree, header_length};

use crate::wire::parse::SectionText;

/// A MIME entity: its header block (with the blank line) and its body.
#[derive(Debug, Clone, Copy)]
pub struct Entity<'a> {
    pub header: &'a [u8],
    pub body: &'a [u8],
}

/// Split raw bytes into header and body.
pub fn split(raw: &[u8]) -> Entity<'_> {
    let n = header_length(raw);
    Entity {
        header: &raw[..n],
        body: &raw[n..],
    }
}

/// Unfolded values of the header fields named `name` (case-insensitive), trimmed.
pub fn header_values(header: &[u8], name: &str) -> Vec<String> {
    shared::header::fields(header)
        .filter(|field| field.is(name))
        .filter_map(|field| field.unfolded())
        .map(|value| value.trim().to_string())
        .collect()
}

/// HEADER.FIELDS / HEADER.FIELDS.NOT: the chosen fields and the blank line (RFC 3501 §6.4.5).
pub fn filter_header(header: &[u8], names: &[String], keep: bool) -> Vec<u8> {
    // At most the whole header and the blank line: one allocation.
    let mut out = Vec::with_capacity(header.len() + 2);
    for field in shared::header::fields(header) {
        let Some(name) = field.name() else {
            continue;
        };
        let listed = names.iter().any(|n| n.as_bytes().eq_ignore_ascii_case(name));
        if listed == keep {
            out.extend_from_slice(field.raw());
            if !field.raw().ends_with(b"\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The bytes of a section of the message `raw` (RFC 3501 §6.4.5), or `None` when there is no
/// such part (the caller answers with an empty string, as Dovecot does). Parts are numbered by
/// the one MIME model, shared::mailstore::parsed::MimeTree, which also wrote the stored
/// BODYSTRUCTURE.
pub fn section(raw: &[u8], part: &[u32], text: &SectionText) -> Option<Vec<u8>> {
    if part.is_empty() {
        // The message's own header and text need no walk over its parts.
        let message = split(raw);
        return Some(match text {
            SectionText::Full => raw.to_vec(),
            SectionText::Header | SectionText::Mime => message.header.to_vec(),
            SectionText::Text => message.body.to_vec(),
            SectionText::HeaderFields(names) => filter_header(message.header, names, true),
            SectionText::HeaderFieldsNot(names) => filter_header(message.header, names, false),
        });
    }
    let tree = MimeTree::parse(raw);
    let bytes = |range: std::ops::Range<usize>| raw[range].to_vec();
    let message = || tree.message_of(part).map(|m| tree.entity(m));
    Some(match text {
        SectionText::Full => bytes(tree.entity(tree.find(part)?).body.clone()),
        SectionText::Mime => bytes(tree.entity(tree.find(part)?).header.clone()),
        SectionText::Header => bytes(message()?.header.clone()),
        SectionText::Text => bytes(message()?.body.clone()),
        SectionText::HeaderFields(names) => filter_header(&raw[message()?.header.clone()], names, true),
        SectionText::HeaderFieldsNot(names) => filter_header(&raw[message()?.header.clone()], names, false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] =
        b"From: a@x.test\r\nSubject: hi\r\n there\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
preamble\r\n--b1\r\nContent-Type: text/plain\r\n\r\nfirst\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\n\
From: inner@x.test\r\nSubject: inner\r\n\r\ninner body\r\n--b1--\r\nepilogue\r\n";

    #[test]
    fn sections() {
        assert_eq!(section(MSG, &[1], &SectionText::Full).unwrap(), b"first");
        assert_eq!(
            section(MSG, &[1], &SectionText::Mime).unwrap(),
            b"Content-Type: text/plain\r\n\r\n"
        );
        assert_eq!(section(MSG, &[2, 1], &SectionText::Full).unwrap(), b"inner body");
        assert_eq!(section(MSG, &[2], &SectionText::Text).unwrap(), b"inner body");
        assert_eq!(
            section(MSG, &[2], &SectionText::Header).unwrap(),
            b"From: inner@x.test\r\nSubject: inner\r\n\r\n"
        );
        assert!(section(MSG, &[3], &SectionText::Full).is_none());
        let single = b"Subject: x\r\n\r\nbody\r\n";
        assert_eq!(section(single, &[1], &SectionText::Full).unwrap(), b"body\r\n");
        assert_eq!(section(single, &[], &SectionText::Text).unwrap(), b"body\r\n");
        // A non-multipart part's only part is 1, at any level (as Dovecot answers).
        assert_eq!(section(MSG, &[1, 1], &SectionText::Full).unwrap(), b"first");
        assert!(section(MSG, &[1, 2], &SectionText::Full).is_none());
    }

    #[test]
    fn header_fields() {
        let h = split(MSG).header;
        assert_eq!(
            filter_header(h, &["subject".into()], true),
            b"Subject: hi\r\n there\r\n\r\n".to_vec()
        );
        let not = filter_header(h, &["Subject".into(), "Content-Type".into()], false);
        assert_eq!(not, b"From: a@x.test\r\n\r\n".to_vec());
        assert_eq!(header_values(h, "subject"), vec!["hi there"]);
    }
}
