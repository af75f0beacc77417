//! Finding a section of a message (RFC 3501 §6.4.5 section numbering) by walking its MIME
//! structure over the raw bytes: no decoding, no copies.

use shared::mailstore::parsed::header_length;

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
    let mut out = Vec::new();
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

/// Lower-case media type and subtype and the boundary parameter of an entity.
pub fn content_type(header: &[u8]) -> (String, String, Option<String>) {
    let Some(value) = header_values(header, "Content-Type").into_iter().next() else {
        return ("text".into(), "plain".into(), None);
    };
    let mut parts = value.split(';');
    let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let (ty, sub) = media.split_once('/').unwrap_or(("text", "plain"));
    let mut boundary = None;
    for param in parts {
        if let Some((k, v)) = param.split_once('=')
            && k.trim().eq_ignore_ascii_case("boundary")
        {
            boundary = Some(v.trim().trim_matches('"').to_string());
        }
    }
    (ty.trim().to_string(), sub.trim().to_string(), boundary)
}

fn is_multipart(e: &Entity<'_>) -> Option<String> {
    let (ty, _, boundary) = content_type(e.header);
    if ty == "multipart" {
        boundary.filter(|b| !b.is_empty())
    } else {
        None
    }
}

fn is_message(e: &Entity<'_>) -> bool {
    let (ty, sub, _) = content_type(e.header);
    ty == "message" && (sub == "rfc822" || sub == "global")
}

/// The children of a multipart body, split at `--boundary` lines (RFC 2046 §5.1.1).
pub fn children<'a>(body: &'a [u8], boundary: &str) -> Vec<Entity<'a>> {
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    let mut starts: Vec<(usize, usize)> = Vec::new(); // (line start, content start)
    let mut i = 0;
    let mut end_at = None;
    while i < body.len() {
        let line_end = body[i..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |p| i + p + 1);
        let line = &body[i..line_end];
        if line.starts_with(delim) {
            let rest = &line[delim.len()..];
            if rest.starts_with(b"--") {
                end_at = Some(i);
                break;
            }
            if rest.trim_ascii().is_empty() {
                starts.push((i, line_end));
            }
        }
        i = line_end;
    }
    let mut out = Vec::new();
    for (k, &(_, content)) in starts.iter().enumerate() {
        let next = starts.get(k + 1).map(|s| s.0).or(end_at);
        let mut stop = next.unwrap_or(body.len());
        // The line break before a delimiter belongs to the delimiter.
        if next.is_some() {
            if body[..stop].ends_with(b"\r\n") {
                stop -= 2;
            } else if body[..stop].ends_with(b"\n") {
                stop -= 1;
            }
        }
        let stop = stop.max(content);
        out.push(split(&body[content..stop]));
    }
    out
}

/// The bytes of a section of the message `raw`, or `None` when there is no such part
/// (the caller answers with an empty string, as RFC 3501 allows).
pub fn section(raw: &[u8], part: &[u32], text: &SectionText) -> Option<Vec<u8>> {
    let mut cur = split(raw);
    let mut at_message = true;
    for &p in part {
        if !at_message && is_message(&cur) {
            cur = split(cur.body);
            at_message = true;
        }
        let kids = match is_multipart(&cur) {
            Some(boundary) => children(cur.body, &boundary),
            None if at_message => vec![cur],
            None => return None,
        };
        cur = *kids.get(p as usize - 1)?;
        at_message = false;
    }
    let message = if part.is_empty() {
        Some(cur)
    } else if is_message(&cur) {
        Some(split(cur.body))
    } else {
        None
    };
    Some(match text {
        SectionText::Full if part.is_empty() => raw.to_vec(),
        SectionText::Full => cur.body.to_vec(),
        SectionText::Mime => cur.header.to_vec(),
        SectionText::Header => message?.header.to_vec(),
        SectionText::Text => message?.body.to_vec(),
        SectionText::HeaderFields(names) => filter_header(message?.header, names, true),
        SectionText::HeaderFieldsNot(names) => filter_header(message?.header, names, false),
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
        assert!(section(MSG, &[1, 1], &SectionText::Full).is_none());
        let single = b"Subject: x\r\n\r\nbody\r\n";
        assert_eq!(section(single, &[1], &SectionText::Full).unwrap(), b"body\r\n");
        assert_eq!(section(single, &[], &SectionText::Text).unwrap(), b"body\r\n");
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
