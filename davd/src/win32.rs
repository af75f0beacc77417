//! Windows' Win32 properties (MS-WDV section 2.2.1): after every upload, Explorer PROPPATCHes
//! Win32CreationTime, Win32LastAccessTime, Win32LastModifiedTime and Win32FileAttributes.
//!
//! dav-server treats these as live properties: it answers 200 to the PROPPATCH without storing
//! anything and computes them from the file's metadata on PROPFIND. So davd makes them true:
//! the times are applied to the file itself (mtime, atime) and all four are kept as dead
//! properties (which follow the file through MOVE/COPY/DELETE); the creation time, which
//! Linux cannot set, is reported from that store. A PROPFIND reports the stored values, not a
//! reckoning from the file (propfind.rs; a Win32FileAttributes reckoned knows only directory or
//! archive, never hidden or read-only).

use std::io::Cursor;
use std::time::SystemTime;

use dav_server::fs::DavProp;

/// The namespace of Microsoft's properties.
pub const NS: &str = "urn:schemas-microsoft-com:";
pub const CREATION_TIME: &str = "Win32CreationTime";
pub const LAST_ACCESS_TIME: &str = "Win32LastAccessTime";
pub const LAST_MODIFIED_TIME: &str = "Win32LastModifiedTime";
pub const FILE_ATTRIBUTES: &str = "Win32FileAttributes";
const NAMES: [&str; 4] = [CREATION_TIME, LAST_ACCESS_TIME, LAST_MODIFIED_TIME, FILE_ATTRIBUTES];

/// The Win32 properties a PROPPATCH body sets (a parser without I/O; an unparsable body gives
/// none, and dav-server answers it with 400).
pub fn sets_in(body: &[u8]) -> Vec<DavProp> {
    // xmltree recurses once per level: only a body that passed the depth check is parsed
    // (server.rs checks every XML body first; this keeps the function safe on its own).
    if crate::xmlcheck::check(body, crate::xmlcheck::MAX_XML_DEPTH).is_err() {
        return Vec::new();
    }
    let Ok(tree) = xmltree::Element::parse(Cursor::new(body)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for op in tree.children.iter().filter_map(|n| n.as_element()) {
        if op.name != "set" {
            continue;
        }
        for prop in op
            .children
            .iter()
            .filter_map(|n| n.as_element())
            .filter(|e| e.name == "prop")
        {
            for p in prop.children.iter().filter_map(|n| n.as_element()) {
                if p.namespace.as_deref() != Some(NS) || !NAMES.contains(&p.name.as_str()) {
                    continue;
                }
                let text = p.get_text().map(|t| t.trim().to_string()).unwrap_or_default();
                out.push(DavProp::new(
                    p.name.clone(),
                    "Z".into(),
                    NS.into(),
                    crate::xmldoc::escape(&text).into_owned(),
                ));
            }
        }
    }
    out
}

/// The text content of a stored property element (`<Z:x ...>text</Z:x>`), trimmed; None when
/// it is not one well-formed element.
pub fn text_of(xml: &[u8]) -> Option<String> {
    let texts = crate::xmldoc::texts(xml, |_, depth| depth == 1).ok()?;
    texts.into_iter().next().map(|t| t.trim().to_string())
}

/// An HTTP date (`Tue, 24 Nov 2026 02:00:00 GMT`, what Windows sends) as a time.
pub fn parse_time(text: &str) -> Option<SystemTime> {
    let t = chrono::DateTime::parse_from_rfc2822(text.trim()).ok()?;
    Some(SystemTime::from(t.with_timezone(&chrono::Utc)))
}

/// The time a set property carries, if it is one of the times.
pub fn time_of(prop: &DavProp, name: &str) -> Option<SystemTime> {
    if prop.name != name {
        return None;
    }
    parse_time(&text_of(prop.xml.as_deref()?)?)
}

/// The time in a stored Win32CreationTime element.
pub fn created_from(xml: &[u8]) -> Option<SystemTime> {
    parse_time(&text_of(xml)?)
}

/// The creation time Windows stored for a resource, among its dead properties.
pub fn created_among(dead: &[DavProp]) -> Option<SystemTime> {
    let p = dead
        .iter()
        .find(|p| p.name == CREATION_TIME && p.namespace.as_deref() == Some(NS))?;
    created_from(p.xml.as_deref()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_win32_sets() {
        let body = br#"<?xml version="1.0" encoding="utf-8" ?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:schemas-microsoft-com:"><D:set><D:prop><Z:Win32CreationTime>Tue, 24 Nov 2026 02:00:00 GMT</Z:Win32CreationTime><Z:Win32FileAttributes>00000020</Z:Win32FileAttributes><Z:Other>x</Z:Other></D:prop></D:set><D:remove><D:prop><Z:Win32LastAccessTime/></D:prop></D:remove></D:propertyupdate>"#;
        let props = sets_in(body);
        assert_eq!(props.len(), 2);
        let created = time_of(&props[0], "Win32CreationTime").unwrap();
        assert_eq!(
            created.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1_795_485_600
        );
        assert_eq!(text_of(props[1].xml.as_deref().unwrap()).as_deref(), Some("00000020"));
        assert!(sets_in(b"not xml").is_empty());
        // Nested past the limit: nothing, and no stack overflow.
        let deep = format!(
            r#"<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:schemas-microsoft-com:"><D:set><D:prop><Z:Win32FileAttributes>{}{}</Z:Win32FileAttributes></D:prop></D:set></D:propertyupdate>"#,
            "<a>".repeat(100_000),
            "</a>".repeat(100_000)
        );
        assert!(sets_in(deep.as_bytes()).is_empty());
        // The stored element is read as XML: entities resolved, CDATA and comments understood.
        assert_eq!(
            text_of(br#"<Z:a xmlns:Z="urn:schemas-microsoft-com:"> x &amp; <!-- </Z:a> --><![CDATA[<y>]]></Z:a>"#)
                .as_deref(),
            Some("x & <y>")
        );
        assert_eq!(text_of(b"<Z:a>x</Z:b>"), None);
    }
}
