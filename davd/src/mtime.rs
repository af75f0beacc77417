//! PROPPATCH of `DAV:getlastmodified`: a client's way to give a file its modification time
//! (rclone and other sync tools; RFC 4918 section 15.7 calls the property protected, but lets
//! a server accept it).
//!
//! dav-server refuses it (403 inside the 207). Windows' `Win32LastModifiedTime` does the very
//! same thing with the same HTTP-date text, and davd already makes that one true (win32.rs:
//! after dav-server accepted the whole PROPPATCH, with its lock checks, the time is set on the
//! file). So the request's `getlastmodified` is handed to dav-server as `Win32LastModifiedTime`
//! ([`stand_in`]), and the answer names it `getlastmodified` again ([`named_back`]).

use xml::name::OwnedName;
use xml::reader::{ParserConfig, XmlEvent};
use xml::writer::{EmitterConfig, XmlEvent as Out};

use crate::xmldoc::{DAV_NS, is_dav};

const WIN32_MTIME: &str = crate::win32::LAST_MODIFIED_TIME;

fn is_win32_mtime(name: &OwnedName) -> bool {
    name.namespace.as_deref() == Some(crate::win32::NS) && name.local_name == WIN32_MTIME
}

/// `body` written again with every element `pick` chooses (given its name and its open
/// ancestors, the root first) renamed to `prefix:local` in `namespace`, its attributes dropped.
/// `None` when the body is not well-formed XML within the depth limit.
fn rename(
    body: &[u8],
    pick: impl Fn(&OwnedName, &[OwnedName]) -> bool,
    (prefix, namespace, local): (&str, &str, &str),
) -> Option<Vec<u8>> {
    crate::xmlcheck::check(body, crate::xmlcheck::MAX_XML_DEPTH).ok()?;
    let mut out = EmitterConfig::new()
        .perform_indent(false)
        .normalize_empty_elements(true)
        .create_writer(Vec::new());
    let mut open: Vec<OwnedName> = Vec::new();
    let renamed = format!("{prefix}:{local}");
    for event in ParserConfig::new().create_reader(body) {
        let event = event.ok()?;
        match &event {
            XmlEvent::StartElement { name, .. } if pick(name, &open) => {
                out.write(Out::start_element(renamed.as_str()).ns(prefix, namespace))
                    .ok()?;
                open.push(name.clone());
            }
            XmlEvent::StartElement { name, .. } => {
                out.write(event.as_writer_event()?).ok()?;
                open.push(name.clone());
            }
            // The writer closes whatever it opened, under the name it wrote.
            XmlEvent::EndElement { .. } => {
                out.write(Out::end_element()).ok()?;
                open.pop();
            }
            XmlEvent::EndDocument => break,
            _ => {
                if let Some(e) = event.as_writer_event() {
                    out.write(e).ok()?;
                }
            }
        }
    }
    Some(out.into_inner())
}

/// A PROPPATCH body that sets `DAV:getlastmodified` to a valid HTTP date, with
/// `Win32LastModifiedTime` in its place. `None` (the body goes to dav-server as it is) when it
/// does not, when the date is not one, or when it sets `Win32LastModifiedTime` itself.
pub fn stand_in(body: &[u8]) -> Option<Vec<u8>> {
    let in_set = |open: &[OwnedName]| {
        open.len() == 3 && is_dav(&open[0], "propertyupdate") && is_dav(&open[1], "set") && is_dav(&open[2], "prop")
    };
    let mut mtimes = Vec::new();
    let mut win32 = false;
    {
        let mut open: Vec<OwnedName> = Vec::new();
        let mut text: Option<String> = None;
        for event in ParserConfig::new().create_reader(body) {
            match event.ok()? {
                XmlEvent::StartElement { name, .. } => {
                    if in_set(&open) {
                        win32 |= is_win32_mtime(&name);
                        if is_dav(&name, "getlastmodified") {
                            text = Some(String::new());
                        }
                    }
                    open.push(name);
                }
                XmlEvent::Characters(t) | XmlEvent::CData(t) | XmlEvent::Whitespace(t) => {
                    if let Some(s) = &mut text {
                        s.push_str(&t);
                    }
                }
                XmlEvent::EndElement { .. } => {
                    open.pop();
                    if open.len() == 3
                        && let Some(t) = text.take()
                    {
                        mtimes.push(t);
                    }
                }
                XmlEvent::EndDocument => break,
                _ => {}
            }
            if open.len() > crate::xmlcheck::MAX_XML_DEPTH {
                return None;
            }
        }
    }
    if mtimes.is_empty() || win32 || mtimes.iter().any(|t| crate::win32::parse_time(t).is_none()) {
        if !mtimes.is_empty() {
            tracing::info!("PROPPATCH getlastmodified not taken: {mtimes:?}");
        }
        return None;
    }
    rename(
        body,
        |name, open| in_set(open) && is_dav(name, "getlastmodified"),
        ("Z", crate::win32::NS, WIN32_MTIME),
    )
}

/// dav-server's PROPPATCH answer with `Win32LastModifiedTime` named `getlastmodified` again.
pub fn named_back(answer: &[u8]) -> Option<Vec<u8>> {
    rename(
        answer,
        |name, open| open.len() == 4 && is_win32_mtime(name),
        ("D", DAV_NS, "getlastmodified"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getlastmodified_goes_as_win32_and_comes_back() {
        let body = br#"<?xml version="1.0"?><d:propertyupdate xmlns:d="DAV:"><d:set><d:prop><d:getlastmodified>Sun, 13 Sep 2020 12:26:40 GMT</d:getlastmodified><x:o xmlns:x="urn:x">1</x:o></d:prop></d:set></d:propertyupdate>"#;
        let sent = String::from_utf8(stand_in(body).unwrap()).unwrap();
        assert!(
            sent.contains(r#"<Z:Win32LastModifiedTime xmlns:Z="urn:schemas-microsoft-com:">Sun, 13 Sep 2020 12:26:40 GMT</Z:Win32LastModifiedTime>"#),
            "{sent}"
        );
        assert!(sent.contains(r#"<x:o xmlns:x="urn:x">1</x:o>"#), "{sent}");
        let props = crate::win32::sets_in(sent.as_bytes());
        assert_eq!(props.len(), 1);
        // Not a date, no getlastmodified, or Win32LastModifiedTime set as well: left alone.
        assert_eq!(
            stand_in(&String::from_utf8_lossy(body).replace("Sun, 13", "Someday").into_bytes()),
            None
        );
        assert_eq!(stand_in(br#"<d:propertyupdate xmlns:d="DAV:"><d:remove><d:prop><d:getlastmodified/></d:prop></d:remove></d:propertyupdate>"#), None);
        assert_eq!(stand_in(b"not xml"), None);

        let answer = br#"<?xml version="1.0" encoding="utf-8"?><D:multistatus xmlns:D="DAV:"><D:response><D:href>/f</D:href><D:propstat><D:prop><Z:Win32LastModifiedTime xmlns:Z="urn:schemas-microsoft-com:"/><x:o xmlns:x="urn:x"/></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>"#;
        let back = String::from_utf8(named_back(answer).unwrap()).unwrap();
        assert!(
            back.contains("<D:getlastmodified />") && !back.contains("Win32"),
            "{back}"
        );
        assert!(back.contains("HTTP/1.1 200 OK"), "{back}");
    }
}
