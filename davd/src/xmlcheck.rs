//! The gate every XML request body passes before anything parses it into a tree.
//!
//! dav-server (and win32.rs) build trees with xmltree, which recurses once per nesting level: a
//! body of a few KB nested thousands of levels deep overflows a worker thread's stack and
//! aborts the whole process. So a body is first read as a flat stream of events (the `xml`
//! crate's pull parser, the very tokenizer xmltree runs on, so both see the same elements, those
//! coming from entity expansion included) counting the open elements; a body nested deeper than
//! [`MAX_XML_DEPTH`] or not well-formed (XML 1.0 section 2.1) is refused before any tree is built.
//! The scan keeps one counter and the parser's own stack of open names on the heap, whatever
//! the body. A body with a DOCTYPE is refused too (RFC 4918 section 20.6: entity expansion).

use std::fmt;

use xml::reader::{ParserConfig, XmlEvent};

/// Deepest element nesting accepted in a request body. RFC 4918 bodies need about 6 levels
/// (propertyupdate/set/prop/property/value); dead property values may nest a little more.
pub const MAX_XML_DEPTH: usize = 64;

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Nested deeper than the limit (the depth reached when the scan stopped).
    TooDeep(usize),
    /// Not a well-formed XML document.
    Malformed(String),
    /// A document type declaration: no WebDAV client sends one, and its entities are the
    /// classic expansion attack (RFC 4918 section 20.6), so none is accepted.
    Dtd,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::TooDeep(depth) => write!(f, "XML nested deeper than {} levels (at {depth})", MAX_XML_DEPTH),
            Refusal::Malformed(e) => write!(f, "XML not well-formed: {e}"),
            Refusal::Dtd => write!(f, "XML with a DOCTYPE is not accepted"),
        }
    }
}

/// Check that `body` is one well-formed XML document nested at most `max_depth` elements
/// deep. Stops at the first element past the limit (no work past it).
pub fn check(body: &[u8], max_depth: usize) -> Result<(), Refusal> {
    let config = ParserConfig::new()
        .allow_multiple_root_elements(false)
        .ignore_comments(true)
        .coalesce_characters(false);
    let mut depth = 0usize;
    for event in config.create_reader(body) {
        match event {
            Ok(XmlEvent::StartElement { .. }) => {
                depth += 1;
                if depth > max_depth {
                    return Err(Refusal::TooDeep(depth));
                }
            }
            Ok(XmlEvent::EndElement { .. }) => depth = depth.saturating_sub(1),
            Ok(XmlEvent::Doctype { .. }) => return Err(Refusal::Dtd),
            Ok(XmlEvent::EndDocument) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(Refusal::Malformed(e.to_string())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> Vec<u8> {
        let mut s = String::from(r#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:">"#);
        s.push_str(&"<a>".repeat(levels));
        s.push_str(&"</a>".repeat(levels));
        s.push_str("</D:propfind>");
        s.into_bytes()
    }

    #[test]
    fn depth_is_bounded_and_counted_exactly() {
        // The root counts as one level.
        assert_eq!(check(&nested(MAX_XML_DEPTH - 1), MAX_XML_DEPTH), Ok(()));
        assert_eq!(
            check(&nested(MAX_XML_DEPTH), MAX_XML_DEPTH),
            Err(Refusal::TooDeep(MAX_XML_DEPTH + 1))
        );
        assert!(matches!(
            check(&nested(100_000), MAX_XML_DEPTH),
            Err(Refusal::TooDeep(_))
        ));
        // Siblings do not add up.
        let wide = format!("<r>{}</r>", "<a><b/></a>".repeat(10_000));
        assert_eq!(check(wide.as_bytes(), 3), Ok(()));
    }

    #[test]
    fn refuses_what_is_not_well_formed() {
        for bad in [
            &b"not xml"[..],
            b"<a><b></a>",
            b"<a>",
            b"<a/><b/>",
            b"",
            b"<a>&undefined;</a>",
        ] {
            assert!(
                matches!(check(bad, MAX_XML_DEPTH), Err(Refusal::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let ok = br#"<?xml version="1.0" encoding="utf-8" ?>
<!-- a comment --><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><x xmlns="urn:x"><![CDATA[<<>>]]></x></D:prop></D:set></D:propertyupdate>
"#;
        assert_eq!(check(ok, MAX_XML_DEPTH), Ok(()));
    }

    #[test]
    fn a_dtd_is_refused_before_its_entities_are_used() {
        let mut doc = String::from("<!DOCTYPE r [<!ENTITY e \"");
        doc.push_str(&"<a>".repeat(200));
        doc.push_str(&"</a>".repeat(200));
        doc.push_str("\">]><r>&e;</r>");
        assert_eq!(check(doc.as_bytes(), MAX_XML_DEPTH), Err(Refusal::Dtd));
        let laughs = r#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><r>&b;</r>"#;
        assert_eq!(check(laughs.as_bytes(), MAX_XML_DEPTH), Err(Refusal::Dtd));
    }
}
