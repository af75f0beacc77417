//! Reading and writing bits of XML, the one way davd does it: text goes out through [`escape`]
//! and comes back in through [`texts`], which reads a document as parsed elements (the `xml`
//! crate's pull parser, the tokenizer xmltree and xmlcheck.rs use) instead of searching its
//! text. Every document passes the depth gate (xmlcheck.rs) first.

use std::borrow::Cow;

use xml::name::OwnedName;
use xml::reader::{ParserConfig, XmlEvent};

use crate::xmlcheck::{MAX_XML_DEPTH, Refusal};

/// The WebDAV namespace (RFC 4918 section 21).
pub const DAV_NS: &str = "DAV:";

/// `text` escaped for an XML attribute value or element content (XML 1.0 section 2.4): `&`,
/// `<`, `>`, both quotes, and CR/LF as character references.
pub fn escape(text: &str) -> Cow<'_, str> {
    xml::escape::escape_str_attribute(text)
}

/// The text directly inside each element `wanted` picks (by its name and its depth, the root at
/// 1), in document order, entities and CDATA resolved. A document that is not well-formed, is
/// nested too deep or has a DOCTYPE is refused whole.
pub fn texts(body: &[u8], wanted: impl Fn(&OwnedName, usize) -> bool) -> Result<Vec<String>, Refusal> {
    crate::xmlcheck::check(body, MAX_XML_DEPTH)?;
    let config = ParserConfig::new().ignore_comments(true);
    let mut out: Vec<String> = Vec::new();
    // For each open element, the index in `out` of its text when it is wanted.
    let mut open: Vec<Option<usize>> = Vec::new();
    for event in config.create_reader(body) {
        match event.map_err(|e| Refusal::Malformed(e.to_string()))? {
            XmlEvent::StartElement { name, .. } => {
                let slot = wanted(&name, open.len() + 1).then(|| {
                    out.push(String::new());
                    out.len() - 1
                });
                open.push(slot);
            }
            XmlEvent::EndElement { .. } => {
                open.pop();
            }
            XmlEvent::Characters(text) | XmlEvent::CData(text) | XmlEvent::Whitespace(text) => {
                if let Some(Some(i)) = open.last() {
                    out[*i].push_str(&text);
                }
            }
            XmlEvent::EndDocument => break,
            _ => {}
        }
    }
    Ok(out)
}

/// Whether `name` is `local` in the DAV: namespace.
pub fn is_dav(name: &OwnedName, local: &str) -> bool {
    name.namespace.as_deref() == Some(DAV_NS) && name.local_name == local
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(
            escape(r#"b&b <"x"> 'y'"#),
            "b&amp;b &lt;&quot;x&quot;&gt; &apos;y&apos;"
        );
        // What is escaped reads back as it was.
        let doc = format!("<a x=\"{0}\">{0}</a>", escape("a\"b<c>&d'\ne"));
        assert_eq!(texts(doc.as_bytes(), |_, d| d == 1).unwrap(), ["a\"b<c>&d'\ne"]);
    }

    #[test]
    fn texts_of_chosen_elements() {
        let doc = br#"<?xml version="1.0"?><D:multistatus xmlns:D="DAV:" xmlns:x="urn:x"><D:response>
            <D:propstat><D:status>HTTP/1.1 200 OK</D:status></D:propstat>
            <D:propstat><D:status> HTTP/1.1 424 <!-- c -->Failed Dependency</D:status></D:propstat>
            <x:status>not DAV</x:status><status xmlns="DAV:"><![CDATA[HTTP/1.1 <403>]]> &amp;</status>
            </D:response></D:multistatus>"#;
        assert_eq!(
            texts(doc, |n, _| is_dav(n, "status")).unwrap(),
            ["HTTP/1.1 200 OK", " HTTP/1.1 424 Failed Dependency", "HTTP/1.1 <403> &"]
        );
        // Only text directly inside: the root's own text, not its children's.
        assert_eq!(texts(b"<r> a <c>b</c>c </r>", |_, d| d == 1).unwrap(), [" a c "]);
        assert!(matches!(texts(b"<a>", |_, _| true), Err(Refusal::Malformed(_))));
        let deep = format!("{}{}", "<a>".repeat(10_000), "</a>".repeat(10_000));
        assert!(matches!(texts(deep.as_bytes(), |_, _| true), Err(Refusal::TooDeep(_))));
    }
}
