//! PROPFIND (RFC 4918 section 9.1), Depth 0 and 1, answered by davd itself.
//!
//! A PROPFIND reads the resource's metadata, for Depth 1 of a folder its listing (streamed in
//! batches, fs/read.rs), one query for the dead properties of the resource and its entries
//! (props.rs `list_folder`), the user's live locks once when `lockdiscovery` is wanted
//! (locks.rs), the account's quota once when a quota property is (RFC 4331), and the stored
//! content hash of a file when `oc:checksums` is asked for (checksum.rs). The multistatus is
//! written straight from them, one `D:response` per resource, and goes out in frames of about
//! [`FRAME_TARGET`] while the folder is still being read: memory stays at a few batches of
//! entries, whatever the folder's size. (Issue #12: dav-server's own PROPFIND built every
//! property of every entry through its metadata trait and an XML writer, and davd then cut and
//! rewrote that answer: more than twice Apache's time for a folder of 1000 files.)
//!
//! The answer is dav-server's, with the faults clients tripped on fixed:
//! - `getetag` is quoted, as in the `ETag` header (RFC 9110 section 8.8.3: the quotes are part
//!   of the entity-tag): a client that sends the PROPFIND value back in `If-Match` gets a match;
//! - a property asked for by name that the resource lacks (`getcontentlength` on a folder, an
//!   unknown dead property) is in a propstat with `404 Not Found` (section 9.1 and 9.1.2);
//! - with `<D:prop>` only the properties asked for, each once; `<D:propname>` gives names only;
//! - a stored Win32 property (win32.rs) is the one reported, not a reckoning from the file
//!   (which knows only "directory" and "archive"): Explorer sees the hidden and read-only bits it
//!   set (MS-WDV section 2.2.1);
//! - a folder listing for the Windows redirector keeps only what Explorer reads
//!   ([`REDIRECTOR_PROPS`]).
//!
//! Everything dav-server's answer carried stays: the live properties of its allprop (the four
//! Win32 ones too for a client whose User-Agent says Microsoft), of its propname, RFC 4331
//! quota (used bytes zero-padded for Finder's webdavfs, as dav-server wrote them),
//! `current-user-principal`, Apache's `executable`, `supportedlock` and `lockdiscovery`; its
//! hrefs and their escaping (paths.rs `encode_segment`). Share links (share.rs) are still
//! answered by dav-server over `ShareFs`, its answer fixed on the way out ([`Rewrite`],
//! propfind/rewrite.rs); the tests compare davd's answer with that one for one tree.
//!
//! What davd does not answer here stays dav-server's, with the status it gives: a body that is
//! not a `DAV:propfind` this module reads (400), a resource that is not there (404) or not the
//! user's to see. Depth infinity is refused before (server.rs `refuse_depth_infinity`).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use dav_server::davpath::DavPath;
use dav_server::fs::{DavMetaData, DavProp, FsResult};
use dav_server::ls::DavLock;
use http::{HeaderValue, StatusCode, header};
use http_body::{Body as HttpBody, Frame};
use shared::quota::QuotaInfo;
use xml::name::OwnedName;
use xml::reader::{ParserConfig, XmlEvent};

use crate::fs::{Meta, TinyFs, User};
use crate::locks::PgLocks;
use crate::xmldoc::{DAV_NS, escape};
use crate::{checksum, paths, win32};

mod rewrite;

pub use self::rewrite::Rewrite;

/// Apache mod_dav's namespace, of its `executable` property.
const APACHE_NS: &str = "http://apache.org/dav/props/";

/// One property name: its namespace (none for the empty namespace) and local name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PropName {
    pub namespace: Option<String>,
    pub local: String,
}

impl PropName {
    fn of(name: &OwnedName) -> PropName {
        PropName {
            namespace: name.namespace.clone().filter(|n| !n.is_empty()),
            local: name.local_name.clone(),
        }
    }

    fn is_dav(&self, local: &str) -> bool {
        self.namespace.as_deref() == Some(DAV_NS) && self.local == local
    }
}

/// What a PROPFIND body asks for (RFC 4918 section 14.20).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asked {
    /// `<D:allprop/>` (with or without `<D:include>`), or no body at all (section 9.1).
    AllProp,
    /// `<D:propname/>`.
    PropName,
    /// `<D:prop>` with these properties, each once, in the order asked.
    Prop(Vec<PropName>),
    /// An allprop listing (Depth 1) for the Windows redirector: only [`REDIRECTOR_PROPS`].
    Redirector,
}

/// What Explorer reads of a folder listing: each entry's type, size, creation and modification
/// times, ETag and locks, and its Win32 attributes (hidden, read-only: MS-WDV section 2.2.1;
/// only `Win32FileAttributes` carries them).
///
/// The Windows WebDAV redirector (`Microsoft-WebDAV-MiniRedir/...`) lists a folder with an
/// allprop PROPFIND (no body, `Depth: 1`) and refuses an answer larger than its
/// `FileAttributesLimitInBytes` (1,000,000 bytes by default): the folder then shows as empty.
/// dav-server's allprop answer is about 1,130 bytes an entry (`supportedlock` alone is 280,
/// plus `displayname`, `getcontenttype` and every dead property), so a folder of 900 files was
/// past the limit. The listing for the redirector keeps only these, about 440 bytes an entry
/// (2,200 files; davd/tests/windows.rs measures it). The three Win32 times are left out: the
/// same times are in `creationdate` (davd reports the stored Win32CreationTime there) and
/// `getlastmodified` (the file's mtime, which Win32LastModifiedTime set), which the redirector
/// reads from any server. Past that size the registry fix in README is the way.
const REDIRECTOR_PROPS: [(&str, &str); 7] = [
    (DAV_NS, "resourcetype"),
    (DAV_NS, "getcontentlength"),
    (DAV_NS, "getlastmodified"),
    (DAV_NS, "creationdate"),
    (DAV_NS, "getetag"),
    (DAV_NS, "lockdiscovery"),
    (win32::NS, win32::FILE_ATTRIBUTES),
];

/// The User-Agent of Windows' WebDAV redirector (Explorer's mapped drives and `\\host@SSL\`).
pub fn is_redirector(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::USER_AGENT)
        .is_some_and(|ua| ua.as_bytes().starts_with(b"Microsoft-WebDAV-MiniRedir/"))
}

/// What a PROPFIND asks for, as answered to this client: an allprop listing (Depth 1) by the
/// Windows redirector is answered with [`REDIRECTOR_PROPS`] only. A single resource (Depth 0,
/// what the redirector reads before and after a LOCK) keeps the whole allprop answer.
pub fn for_client(asked: Asked, headers: &http::HeaderMap) -> Asked {
    let listing = headers.get("depth").is_some_and(|d| d.as_bytes().trim_ascii() == b"1");
    if asked == Asked::AllProp && listing && is_redirector(headers) {
        Asked::Redirector
    } else {
        asked
    }
}

/// Read what a PROPFIND body asks for. `None` when it is not a `DAV:propfind` this module
/// understands: dav-server then answers it (a 400).
pub fn asked(body: &[u8]) -> Option<Asked> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Some(Asked::AllProp);
    }
    let config = ParserConfig::new().ignore_comments(true);
    let mut depth = 0usize;
    let mut kind: Option<Asked> = None;
    // The names in the list, to keep each once (a body may name thousands).
    let mut listed: std::collections::HashSet<PropName> = std::collections::HashSet::new();
    for event in config.create_reader(body) {
        match event.ok()? {
            XmlEvent::StartElement { name, .. } => {
                depth += 1;
                let prop = PropName::of(&name);
                match depth {
                    1 if !prop.is_dav("propfind") => return None,
                    2 if kind.is_none() => {
                        kind = if prop.is_dav("prop") {
                            Some(Asked::Prop(Vec::new()))
                        } else if prop.is_dav("propname") {
                            Some(Asked::PropName)
                        } else if prop.is_dav("allprop") {
                            Some(Asked::AllProp)
                        } else {
                            None
                        };
                    }
                    3 => {
                        if let Some(Asked::Prop(list)) = &mut kind
                            && listed.insert(prop.clone())
                        {
                            list.push(prop);
                        }
                    }
                    _ => {}
                }
            }
            XmlEvent::EndElement { .. } => {
                depth -= 1;
                // Only the first of prop/propname/allprop counts, as in dav-server.
                if depth == 1 && kind.is_some() {
                    break;
                }
            }
            XmlEvent::EndDocument => break,
            _ => {}
        }
    }
    kind
}

/// The quoted form of an entity-tag (RFC 9110 section 8.8.3), as the `ETag` header has it.
fn quoted_etag(text: &str) -> String {
    let t = text.trim();
    if t.starts_with('"') || t.starts_with("W/\"") {
        t.to_string()
    } else {
        format!("\"{t}\"")
    }
}

/// A token of the answer, as far as finding element boundaries needs.
enum Token {
    Start {
        self_closing: bool,
    },
    End,
    /// Comment, CDATA, processing instruction, declaration.
    Other,
}

/// Where the token starting at `input[at] == b'<'` ends (one past its `>`), or `None` when
/// it is not all there yet.
fn token_at(input: &[u8], at: usize) -> Option<(Token, usize)> {
    let rest = &input[at..];
    let find = |from: usize, pat: &[u8]| {
        rest.get(from..)?
            .windows(pat.len())
            .position(|w| w == pat)
            .map(|p| at + from + p + pat.len())
    };
    // Not enough bytes yet to tell a comment or CDATA from a declaration.
    for (pat, end) in [(&b"<!--"[..], &b"-->"[..]), (b"<![CDATA[", b"]]>")] {
        if rest.len() < pat.len() && pat.starts_with(rest) {
            return None;
        }
        if rest.starts_with(pat) {
            return find(pat.len(), end).map(|e| (Token::Other, e));
        }
    }
    if rest.len() < 2 {
        return None;
    }
    match rest[1] {
        b'?' => find(2, b"?>").map(|e| (Token::Other, e)),
        b'!' => find(2, b">").map(|e| (Token::Other, e)),
        b'/' => find(2, b">").map(|e| (Token::End, e)),
        _ => {
            // A start tag: its end is the first `>` outside a quoted attribute value.
            let mut quote = None;
            for (i, &b) in rest.iter().enumerate().skip(1) {
                match (quote, b) {
                    (Some(q), _) if b == q => quote = None,
                    (Some(_), _) => {}
                    (None, b'"' | b'\'') => quote = Some(b),
                    (None, b'>') => {
                        let self_closing = rest[i - 1] == b'/';
                        return Some((Token::Start { self_closing }, at + i + 1));
                    }
                    _ => {}
                }
            }
            None
        }
    }
}

/// Namespace bindings in scope, innermost last: (prefix, namespace); the empty prefix is the
/// default namespace, and an empty namespace undeclares it (XML Namespaces 1.0 section 6).
type Bindings = Vec<(Vec<u8>, Vec<u8>)>;

/// An attribute of a start tag: its name, its raw value, and where it is (with the white space
/// before it) in the tag's attributes.
type Attribute<'a> = (&'a [u8], &'a [u8], std::ops::Range<usize>);

/// A start tag `<name attributes>` or `<name attributes/>`, split.
struct Tag<'a> {
    name: &'a [u8],
    attributes: &'a [u8],
}

impl Tag<'_> {
    /// `tag` is a whole start tag, `<` to `>` (as [`token_at`] found it).
    fn of(tag: &[u8]) -> Tag<'_> {
        let self_closing = tag.ends_with(b"/>");
        let inner = &tag[1..tag.len() - if self_closing { 2 } else { 1 }];
        let name_len = inner
            .iter()
            .position(|b| b.is_ascii_whitespace())
            .unwrap_or(inner.len());
        Tag {
            name: &inner[..name_len],
            attributes: &inner[name_len..],
        }
    }

    /// The attributes of this tag: (name, raw value, the bytes of the whole attribute with the
    /// white space before it, as a range of `attributes`).
    fn attributes(&self) -> io::Result<Vec<Attribute<'_>>> {
        let all = self.attributes;
        let mut found = Vec::new();
        let mut at = 0;
        loop {
            let from = at;
            while all.get(at).is_some_and(u8::is_ascii_whitespace) {
                at += 1;
            }
            if at >= all.len() {
                return Ok(found);
            }
            let rest = &all[at..];
            let eq = rest
                .iter()
                .position(|&b| b == b'=')
                .ok_or_else(|| bad("an attribute without a value"))?;
            let name = rest[..eq].trim_ascii_end();
            let after = &rest[eq + 1..];
            let skipped = after.len() - after.trim_ascii_start().len();
            let value_at = at + eq + 1 + skipped;
            let quote = *all.get(value_at).ok_or_else(|| bad("an attribute without a value"))?;
            if quote != b'"' && quote != b'\'' {
                return Err(bad("an unquoted attribute value"));
            }
            let len = all[value_at + 1..]
                .iter()
                .position(|&b| b == quote)
                .ok_or_else(|| bad("an unterminated attribute value"))?;
            at = value_at + len + 2;
            found.push((name, &all[value_at + 1..value_at + 1 + len], from..at));
        }
    }

    /// Write this start tag without the namespace declarations `root` already makes (a stored
    /// Win32 property declares the prefix dav-server's root binds too: 40 bytes an entry of
    /// Explorer's listing, whose size is limited). `close`: as a self-closing tag.
    fn write_lean(&self, out: &mut Vec<u8>, root: &Bindings, close: bool) -> io::Result<()> {
        out.push(b'<');
        out.extend_from_slice(self.name);
        for (name, value, range) in self.attributes()? {
            let prefix = if name == b"xmlns" {
                Some(&b""[..])
            } else {
                name.strip_prefix(b"xmlns:")
            };
            let redundant = match prefix {
                Some(p) => {
                    let value = unescape(value)?;
                    root.iter()
                        .rev()
                        .find(|(rp, _)| rp == p)
                        .is_some_and(|(_, ns)| *ns == value)
                }
                None => false,
            };
            if !redundant {
                out.extend_from_slice(&self.attributes[range]);
            }
        }
        out.extend_from_slice(if close { b"/>" } else { b">" });
        Ok(())
    }
}

/// An attribute value with its five predefined entities and character references resolved
/// (XML 1.0 section 4.6, 4.1): a namespace name as written in a declaration.
fn unescape(value: &[u8]) -> io::Result<Vec<u8>> {
    if !value.contains(&b'&') {
        return Ok(value.to_vec());
    }
    let mut out = Vec::with_capacity(value.len());
    let mut rest = value;
    while let Some(amp) = rest.iter().position(|&b| b == b'&') {
        out.extend_from_slice(&rest[..amp]);
        let semi = rest[amp..]
            .iter()
            .position(|&b| b == b';')
            .ok_or_else(|| bad("an unterminated entity"))?;
        let entity = &rest[amp + 1..amp + semi];
        let ch = match entity {
            b"amp" => '&',
            b"lt" => '<',
            b"gt" => '>',
            b"quot" => '"',
            b"apos" => '\'',
            _ => {
                let digits = std::str::from_utf8(entity).map_err(|_| bad("an unknown entity"))?;
                let code = match digits.strip_prefix("#x") {
                    Some(hex) => u32::from_str_radix(hex, 16),
                    None => digits
                        .strip_prefix('#')
                        .ok_or_else(|| bad("an unknown entity"))?
                        .parse::<u32>(),
                };
                code.ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| bad("a bad character reference"))?
            }
        };
        out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
        rest = &rest[amp + semi + 1..];
    }
    out.extend_from_slice(rest);
    Ok(out)
}

fn bad(e: impl std::fmt::Display) -> io::Error {
    tracing::error!("PROPFIND XML: {e}");
    io::Error::other(format!("PROPFIND answer: {e}"))
}

impl Asked {
    /// Whether a property of this name is written in the answer.
    fn wants_name(&self, namespace: Option<&str>, local: &str) -> bool {
        match self {
            Asked::Prop(list) => list
                .iter()
                .any(|p| p.namespace.as_deref() == namespace && p.local == local),
            Asked::Redirector => REDIRECTOR_PROPS
                .iter()
                .any(|(ns, l)| namespace == Some(*ns) && local == *l),
            Asked::AllProp | Asked::PropName => true,
        }
    }

    /// Whether the answer needs davd's stored content hashes (checksum.rs): for `oc:checksums`.
    fn wants_hashes(&self) -> bool {
        matches!(self, Asked::Prop(list) if list.iter().any(|p| {
            p.namespace.as_deref() == Some(checksum::OC_NS) && p.local == "checksums"
        }))
    }

    /// Whether the answer needs the account's quota (RFC 4331): propname names the quota
    /// properties only where they have a value.
    pub fn needs_quota(&self) -> bool {
        match self {
            Asked::PropName => true,
            Asked::Prop(list) => list
                .iter()
                .any(|p| Live::of(p).is_some_and(|l| matches!(l, Live::QuotaAvailableBytes | Live::QuotaUsedBytes))),
            Asked::AllProp | Asked::Redirector => false,
        }
    }
}

/// A live property: one davd reckons from the resource itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Live {
    CreationDate,
    GetContentLength,
    GetContentType,
    GetEtag,
    GetLastModified,
    LockDiscovery,
    ResourceType,
    SupportedLock,
    QuotaAvailableBytes,
    QuotaUsedBytes,
    CurrentUserPrincipal,
    Executable,
    Win32CreationTime,
    Win32FileAttributes,
    Win32LastAccessTime,
    Win32LastModifiedTime,
}

/// allprop (RFC 4918 section 14.2): the live properties of section 15. `displayname` and
/// `getcontentlanguage` are dead properties here (set by PROPPATCH), listed with the others.
const ALLPROP: [Live; 8] = [
    Live::CreationDate,
    Live::GetContentLength,
    Live::GetContentType,
    Live::GetEtag,
    Live::GetLastModified,
    Live::LockDiscovery,
    Live::ResourceType,
    Live::SupportedLock,
];

/// allprop for a Microsoft client: the Win32 properties too (MS-WDV section 2.2.1).
const MS_ALLPROP: [Live; 12] = [
    Live::CreationDate,
    Live::GetContentLength,
    Live::GetContentType,
    Live::GetEtag,
    Live::GetLastModified,
    Live::LockDiscovery,
    Live::ResourceType,
    Live::SupportedLock,
    Live::Win32CreationTime,
    Live::Win32FileAttributes,
    Live::Win32LastAccessTime,
    Live::Win32LastModifiedTime,
];

/// The live properties propname names (where the resource has them).
const PROPNAME: [Live; 12] = [
    Live::CreationDate,
    Live::GetContentLength,
    Live::GetContentType,
    Live::GetEtag,
    Live::GetLastModified,
    Live::LockDiscovery,
    Live::ResourceType,
    Live::SupportedLock,
    Live::QuotaAvailableBytes,
    Live::QuotaUsedBytes,
    Live::Executable,
    Live::Win32LastAccessTime,
];

impl Live {
    const ALL: [Live; 16] = [
        Live::CreationDate,
        Live::GetContentLength,
        Live::GetContentType,
        Live::GetEtag,
        Live::GetLastModified,
        Live::LockDiscovery,
        Live::ResourceType,
        Live::SupportedLock,
        Live::QuotaAvailableBytes,
        Live::QuotaUsedBytes,
        Live::CurrentUserPrincipal,
        Live::Executable,
        Live::Win32CreationTime,
        Live::Win32FileAttributes,
        Live::Win32LastAccessTime,
        Live::Win32LastModifiedTime,
    ];

    /// Its namespace, the prefix the answer's root binds to it, and its local name.
    fn name(self) -> (&'static str, &'static str, &'static str) {
        let ms = win32::NS;
        match self {
            Live::CreationDate => (DAV_NS, "D", "creationdate"),
            Live::GetContentLength => (DAV_NS, "D", "getcontentlength"),
            Live::GetContentType => (DAV_NS, "D", "getcontenttype"),
            Live::GetEtag => (DAV_NS, "D", "getetag"),
            Live::GetLastModified => (DAV_NS, "D", "getlastmodified"),
            Live::LockDiscovery => (DAV_NS, "D", "lockdiscovery"),
            Live::ResourceType => (DAV_NS, "D", "resourcetype"),
            Live::SupportedLock => (DAV_NS, "D", "supportedlock"),
            // RFC 4331 section 3 and 4.
            Live::QuotaAvailableBytes => (DAV_NS, "D", "quota-available-bytes"),
            Live::QuotaUsedBytes => (DAV_NS, "D", "quota-used-bytes"),
            // RFC 5397 section 3.
            Live::CurrentUserPrincipal => (DAV_NS, "D", "current-user-principal"),
            Live::Executable => (APACHE_NS, "A", "executable"),
            Live::Win32CreationTime => (ms, "Z", win32::CREATION_TIME),
            Live::Win32FileAttributes => (ms, "Z", win32::FILE_ATTRIBUTES),
            Live::Win32LastAccessTime => (ms, "Z", win32::LAST_ACCESS_TIME),
            Live::Win32LastModifiedTime => (ms, "Z", win32::LAST_MODIFIED_TIME),
        }
    }

    fn of(name: &PropName) -> Option<Live> {
        Live::ALL.into_iter().find(|l| {
            let (ns, _, local) = l.name();
            name.namespace.as_deref() == Some(ns) && name.local == local
        })
    }
}

/// A live property's value: text (escaped when written) or markup davd made.
enum Value {
    Text(String),
    Markup(String),
}

/// `supportedlock` (RFC 4918 section 15.10): exclusive and shared write locks (locks.rs).
const SUPPORTED_LOCKS: &str = "<D:lockentry><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockentry><D:lockentry><D:lockscope><D:shared/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockentry>";

/// Gather this much of the answer before handing it on as one frame (one HTTP chunk).
const FRAME_TARGET: usize = 32 * 1024;

/// One resource of the answer.
struct Resource<'a> {
    /// Its href: percent-encoded (paths.rs) after the request's prefix, so only unreserved
    /// characters, `%` and `/`: nothing in it needs XML escaping.
    href: &'a str,
    /// Its key (paths.rs).
    key: &'a str,
    /// Its name (the last path segment, raw; empty for the user's root).
    name: &'a [u8],
    meta: &'a Meta,
    /// Its dead properties, davd's own among them (checksum.rs).
    dead: &'a [DavProp],
    locks: &'a [DavLock],
}

/// Writes one multistatus (RFC 4918 section 13), a `D:response` at a time.
struct Writer {
    asked: Asked,
    /// The client's User-Agent says Microsoft: allprop has the Win32 properties too.
    microsoft: bool,
    /// Finder's webdavfs, which reads quota-used-bytes of 14 digits (as dav-server wrote it).
    webdavfs: bool,
    /// The user, for `current-user-principal`, and their id, for the log.
    principal: String,
    user_id: i64,
    quota: Option<QuotaInfo>,
    /// The namespace declarations of the root element: left off stored properties that repeat
    /// them (40 bytes an entry of Explorer's size-limited listing).
    root: Bindings,
    out: Vec<u8>,
}

impl Writer {
    fn new(asked: Asked, headers: &http::HeaderMap, user: &User, quota: Option<QuotaInfo>) -> Writer {
        let ua = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let in_asked = |ns: &str| match &asked {
            Asked::Prop(list) => list.iter().any(|p| p.namespace.as_deref() == Some(ns)),
            Asked::PropName => true,
            Asked::AllProp | Asked::Redirector => false,
        };
        let microsoft = ua.contains("Microsoft");
        let mut root: Bindings = vec![(b"D".to_vec(), DAV_NS.as_bytes().to_vec())];
        if in_asked(APACHE_NS) {
            root.push((b"A".to_vec(), APACHE_NS.as_bytes().to_vec()));
        }
        if in_asked(crate::win32::NS) || (microsoft && matches!(asked, Asked::AllProp | Asked::Redirector)) {
            root.push((b"Z".to_vec(), crate::win32::NS.as_bytes().to_vec()));
        }
        let mut out = Vec::with_capacity(FRAME_TARGET + 4096);
        out.extend_from_slice(br#"<?xml version="1.0" encoding="utf-8"?><D:multistatus"#);
        for (prefix, ns) in &root {
            out.extend_from_slice(b" xmlns:");
            out.extend_from_slice(prefix);
            out.extend_from_slice(b"=\"");
            out.extend_from_slice(ns);
            out.push(b'"');
        }
        out.push(b'>');
        Writer {
            microsoft,
            webdavfs: ua.contains("WebDAVFS"),
            asked,
            principal: user.address.clone(),
            user_id: user.id,
            quota,
            root,
            out,
        }
    }

    fn finish(&mut self) {
        self.out.extend_from_slice(b"</D:multistatus>");
    }

    /// Whether this answer shows `lockdiscovery` (and so needs the locks).
    fn wants_locks(&self) -> bool {
        let (ns, _, local) = Live::LockDiscovery.name();
        self.asked != Asked::PropName && self.asked.wants_name(Some(ns), local)
    }

    /// One `D:response`: the properties the resource has in a 200 propstat, and those asked
    /// for by name that it lacks in a 404 one (RFC 4918 section 9.1).
    fn response(&mut self, r: &Resource) {
        let mut answer = std::mem::take(&mut self.out);
        let out = &mut answer;
        out.extend_from_slice(b"<D:response><D:href>");
        out.extend_from_slice(r.href.as_bytes());
        out.extend_from_slice(b"</D:href>");
        let ok_start = out.len();
        out.extend_from_slice(b"<D:propstat><D:prop>");
        let props_start = out.len();
        // davd's own (the content hash) are not the client's dead properties.
        let dead = || r.dead.iter().filter(|p| !checksum::is_reserved(p));
        let stored = |ns: &str, local: &str| dead().find(|p| p.namespace.as_deref() == Some(ns) && p.name == local);
        let mut missing: Vec<&PropName> = Vec::new();
        match &self.asked {
            Asked::AllProp | Asked::Redirector | Asked::PropName => {
                let names_only = self.asked == Asked::PropName;
                let live: &[Live] = match (names_only, self.microsoft) {
                    (true, _) => &PROPNAME,
                    (false, false) => &ALLPROP,
                    (false, true) => &MS_ALLPROP,
                };
                for &l in live {
                    let (ns, prefix, local) = l.name();
                    // A stored value wins over a reckoned one (Win32): written below, once.
                    if self.asked.wants_name(Some(ns), local) && stored(ns, local).is_none() {
                        write_live(out, self.live_value(r, l), prefix, local, names_only);
                    }
                }
                for p in dead() {
                    if self.asked.wants_name(p.namespace.as_deref(), &p.name) {
                        write_stored(out, p, &self.root, names_only);
                    }
                }
            }
            Asked::Prop(list) => {
                for name in list {
                    if let Some(p) = dead().find(|p| p.namespace == name.namespace && p.name == name.local) {
                        write_stored(out, p, &self.root, false);
                    } else if name.namespace.as_deref() == Some(checksum::OC_NS) && name.local == "checksums" {
                        // ownCloud's `oc:checksums`: the stored hash, if it is of this file.
                        match crate::fs::stored_hash_in(r.dead, self.user_id, r.key)
                            .and_then(|s| s.for_file(r.meta.metadata()))
                        {
                            Some(hash) => {
                                let xml = hash.oc_checksums_xml();
                                write_element(out, &xml, &self.root, false);
                            }
                            None => missing.push(name),
                        }
                    } else if let Some(l) = Live::of(name)
                        && let (_, prefix, local) = l.name()
                        && let Some(value) = self.live_value(r, l)
                    {
                        write_live(out, Some(value), prefix, local, false);
                    } else {
                        missing.push(name);
                    }
                }
            }
        }
        if out.len() == props_start {
            // A propstat left without properties is not written.
            out.truncate(ok_start);
        } else {
            out.extend_from_slice(b"</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>");
        }
        write_missing(out, &missing);
        out.extend_from_slice(b"</D:response>");
        self.out = answer;
    }

    /// The value of live property `l` of `r`, `None` where it has none (`getcontentlength` of a
    /// folder, quota when it is not known).
    fn live_value(&self, r: &Resource, l: Live) -> Option<Value> {
        let meta = r.meta;
        let text = |s: String| Some(Value::Text(s));
        match l {
            Live::CreationDate => text(rfc3339(creation_time(meta)?)),
            Live::GetContentLength => (!meta.is_dir()).then(|| Value::Text(meta.len().to_string())),
            Live::GetContentType => {
                let kind = if meta.is_dir() {
                    "httpd/unix-directory"
                } else {
                    mime_type(r.name)
                };
                text(kind.to_string())
            }
            Live::GetEtag => text(quoted_etag(&meta.etag()?)),
            Live::GetLastModified => text(httpdate::fmt_http_date(meta.modified().ok()?)),
            Live::LockDiscovery => {
                let mut xml = String::new();
                for lock in r.locks {
                    write_activelock(&mut xml, lock);
                }
                Some(Value::Markup(xml))
            }
            Live::ResourceType => Some(Value::Markup(if meta.is_dir() {
                "<D:collection/>".to_string()
            } else {
                String::new()
            })),
            Live::SupportedLock => Some(Value::Markup(SUPPORTED_LOCKS.to_string())),
            Live::QuotaUsedBytes => {
                let used = self.quota_used(meta)?;
                text(if self.webdavfs {
                    format!("{used:014}")
                } else {
                    used.to_string()
                })
            }
            Live::QuotaAvailableBytes => {
                let info = self.quota.as_ref()?;
                info.limit?;
                // What the account may still store, as seen from this resource: all of it less
                // this resource's share (a file's own size; a folder's is the account's usage).
                let total = info.used().saturating_add(info.available());
                text(total.saturating_sub(self.quota_used(meta)?).to_string())
            }
            Live::CurrentUserPrincipal => Some(Value::Markup(format!("<D:href>{}</D:href>", escape(&self.principal)))),
            Live::Executable => text(if meta.executable().ok()? { "T" } else { "F" }.to_string()),
            Live::Win32CreationTime => text(httpdate::fmt_http_date(creation_time(meta)?)),
            Live::Win32FileAttributes => {
                // MS-WDV section 2.2.1: hidden (a dot name), directory or archive.
                let mut attributes = 0u32;
                if r.name.starts_with(b".") {
                    attributes |= 0x0002;
                }
                attributes |= if meta.is_dir() { 0x0010 } else { 0x0020 };
                text(format!("{attributes:08x}"))
            }
            Live::Win32LastAccessTime => text(httpdate::fmt_http_date(meta.accessed().ok()?)),
            Live::Win32LastModifiedTime => text(httpdate::fmt_http_date(meta.modified().ok()?)),
        }
    }

    /// RFC 4331 quota-used-bytes of a resource: one quota covers the whole account (mail and
    /// files), so a folder's is the account's usage; a file's is its size.
    fn quota_used(&self, meta: &Meta) -> Option<u64> {
        let info = self.quota.as_ref()?;
        Some(if meta.is_dir() { info.used() } else { meta.len() })
    }
}

/// The creation time: Windows' stored one (win32.rs) or the file's birth time, else the older
/// of its change and modification times (as Apache reports it).
fn creation_time(meta: &Meta) -> Option<SystemTime> {
    if let Ok(t) = meta.created() {
        return Some(t);
    }
    let changed = meta.status_changed().ok()?;
    Some(match meta.modified() {
        Ok(modified) if modified < changed => modified,
        _ => changed,
    })
}

/// RFC 4918 section 15.1: `creationdate` is an RFC 3339 date-time.
fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A file's media type from its name's extension (what dav-server's GET sends too).
fn mime_type(name: &[u8]) -> &'static str {
    let mut parts = name.rsplitn(2, |&b| b == b'.');
    if let (Some(ext), Some(_)) = (parts.next(), parts.next())
        && let Ok(ext) = std::str::from_utf8(ext)
        && let Some(kind) = mime_guess::from_ext(ext).first_raw()
    {
        return kind;
    }
    "application/octet-stream"
}

/// A live property element; `names_only` (propname) or without content as `<name/>`.
fn write_live(out: &mut Vec<u8>, value: Option<Value>, prefix: &str, local: &str, names_only: bool) {
    let Some(value) = value else {
        return;
    };
    let open = |out: &mut Vec<u8>| {
        out.push(b'<');
        out.extend_from_slice(prefix.as_bytes());
        out.push(b':');
        out.extend_from_slice(local.as_bytes());
    };
    let content = match &value {
        Value::Text(t) => escape(t),
        Value::Markup(m) => std::borrow::Cow::Borrowed(m.as_str()),
    };
    open(out);
    if names_only || content.is_empty() {
        out.extend_from_slice(b"/>");
        return;
    }
    out.push(b'>');
    out.extend_from_slice(content.as_bytes());
    out.extend_from_slice(b"</");
    out.extend_from_slice(prefix.as_bytes());
    out.push(b':');
    out.extend_from_slice(local.as_bytes());
    out.push(b'>');
}

/// A dead property as stored (props.rs: one element, perhaps after an XML declaration).
fn write_stored(out: &mut Vec<u8>, prop: &DavProp, root: &Bindings, names_only: bool) {
    let xml = prop.xml.as_deref().unwrap_or_default();
    if !write_element(out, xml, root, names_only) {
        tracing::warn!(
            name = prop.name,
            "a stored dead property that is not an element: its name only"
        );
        out.push(b'<');
        out.extend_from_slice(prop.name.as_bytes());
        out.extend_from_slice(b" xmlns=\"");
        out.extend_from_slice(escape(prop.namespace.as_deref().unwrap_or("")).as_bytes());
        out.extend_from_slice(b"\"/>");
    }
}

/// Write the element in `xml` (after what precedes it: an XML declaration, comments), its
/// start tag without the declarations `root` makes; `names_only`: the start tag alone, closed.
/// Whether `xml` held an element.
fn write_element(out: &mut Vec<u8>, xml: &[u8], root: &Bindings, names_only: bool) -> bool {
    let mut at = 0;
    let (start, end, self_closing) = loop {
        while xml.get(at).is_some_and(u8::is_ascii_whitespace) {
            at += 1;
        }
        if xml.get(at) != Some(&b'<') {
            return false;
        }
        match token_at(xml, at) {
            Some((Token::Other, end)) => at = end,
            Some((Token::Start { self_closing }, end)) => break (at, end, self_closing),
            _ => return false,
        }
    };
    let tag = Tag::of(&xml[start..end]);
    let mark = out.len();
    let close = names_only || self_closing;
    if tag.write_lean(out, root, close).is_err() {
        out.truncate(mark);
        return false;
    }
    if !close {
        out.extend_from_slice(xml[end..].trim_ascii_end());
    }
    true
}

/// An `activelock` of `lockdiscovery` (RFC 4918 section 15.8).
fn write_activelock(xml: &mut String, lock: &DavLock) {
    let scope = if lock.shared { "shared" } else { "exclusive" };
    let depth = if lock.deep { "Infinity" } else { "0" };
    let timeout = match lock.timeout {
        None => "Infinite".to_string(),
        Some(d) => format!("Second-{}", d.as_secs()),
    };
    xml.push_str(&format!(
        "<D:activelock><D:lockscope><D:{scope}/></D:lockscope><D:locktype><D:write/></D:locktype>\
         <D:depth>{depth}</D:depth><D:timeout>{timeout}</D:timeout>\
         <D:locktoken><D:href>{}</D:href></D:locktoken><D:lockroot><D:href>{}</D:href></D:lockroot>",
        escape(&lock.token),
        escape(&lock.path.with_prefix().as_url_string()),
    ));
    if let Some(owner) = &lock.owner {
        let mut buf = Vec::new();
        let config = xmltree::EmitterConfig::new().write_document_declaration(false);
        match owner.write_with_config(&mut buf, config) {
            Ok(()) => xml.push_str(&String::from_utf8_lossy(&buf)),
            Err(e) => tracing::warn!("lock owner not written: {e}"),
        }
    }
    xml.push_str("</D:activelock>");
}

/// RFC 4918 section 9.1: each property asked for by name that the resource lacks, in a
/// propstat with 404.
fn write_missing(out: &mut Vec<u8>, missing: &[&PropName]) {
    if missing.is_empty() {
        return;
    }
    out.extend_from_slice(b"<D:propstat><D:prop>");
    for p in missing {
        out.push(b'<');
        if p.namespace.as_deref() == Some(DAV_NS) {
            out.extend_from_slice(b"D:");
            out.extend_from_slice(p.local.as_bytes());
        } else {
            // The names were read from the request by the XML parser: valid names.
            out.extend_from_slice(p.local.as_bytes());
            out.extend_from_slice(b" xmlns=\"");
            out.extend_from_slice(escape(p.namespace.as_deref().unwrap_or("")).as_bytes());
            out.push(b'"');
        }
        out.extend_from_slice(b"/>");
    }
    out.extend_from_slice(b"</D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>");
}

/// The body of davd's PROPFIND answer: the frames the writing task sends (bounded: it waits
/// while the connection is slower than the folder is read).
pub struct AnswerBody {
    frames: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
}

impl HttpBody for AnswerBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.frames.poll_recv(cx).map(|f| f.map(|r| r.map(Frame::data)))
    }
}

/// A PROPFIND answer on its way from server.rs's routing (which answers with dav-server's
/// response type) to the connection: its body, taken once. (Response extensions must be
/// `Clone`, hence the shared slot.)
#[derive(Clone)]
pub struct Pending(Arc<Mutex<Option<AnswerBody>>>);

impl Pending {
    pub fn take(&self) -> Option<AnswerBody> {
        self.0.lock().expect("pending answer lock").take()
    }
}

/// What one PROPFIND answers with, besides its resource.
pub struct Request<'a> {
    pub asked: Asked,
    /// `Depth: 1` (else 0).
    pub depth_one: bool,
    pub headers: &'a http::HeaderMap,
    /// The account's quota, read once for the answer when [`Asked::needs_quota`].
    pub quota: Option<QuotaInfo>,
}

/// Answer a PROPFIND of `path` (with the request's prefix set) for `user`: the status line and
/// headers now, the multistatus streamed after. `Err` when the resource cannot be read (not
/// there, not the user's): nothing is answered, and the caller lets dav-server give its status.
pub async fn answer(
    fs: &TinyFs,
    locks: PgLocks,
    user: &User,
    path: &DavPath,
    request: Request<'_>,
) -> FsResult<http::Response<Pending>> {
    let found = fs
        .for_propfind(path, user, request.depth_one, request.asked.wants_hashes())
        .await?;
    let mut href = path.with_prefix().as_url_string();
    let mut content_location = None;
    if found.meta.is_dir() && !href.ends_with('/') {
        // A folder's href ends in a slash (RFC 4918 section 8.3), and the answer says where.
        href.push('/');
        content_location = Some(href.clone());
    }
    let key = paths::key(path);
    let name = path.file_name_bytes().to_vec();
    let writer = Writer::new(request.asked, request.headers, user, request.quota);
    // Two frames ahead of the connection at most.
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let user_id = user.id;
    tokio::spawn(async move {
        let target = (href, key, name);
        if let Err(e) = write_answer(writer, found, target, &locks, &tx).await {
            tracing::debug!(user_id, "PROPFIND answer not finished: {e}");
            let _ = tx.send(Err(e)).await;
        }
    });
    let mut res = http::Response::new(Pending(Arc::new(Mutex::new(Some(AnswerBody { frames: rx })))));
    *res.status_mut() = StatusCode::MULTI_STATUS;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if let Some(location) = content_location
        && let Ok(v) = HeaderValue::from_str(&location)
    {
        h.insert(header::CONTENT_LOCATION, v);
    }
    Ok(res)
}

/// Write the whole answer into frames: the resource (`target`: its href, key and name), then
/// its entries as they are listed.
async fn write_answer(
    mut writer: Writer,
    found: crate::fs::Found,
    (href, key, name): (String, String, Vec<u8>),
    locks: &PgLocks,
    tx: &tokio::sync::mpsc::Sender<io::Result<Bytes>>,
) -> io::Result<()> {
    let crate::fs::Found {
        meta,
        mut props,
        entries,
    } = found;
    let wants_locks = writer.wants_locks();
    let dead = props.remove(&key).unwrap_or_default();
    let meta = meta.with_created(win32::created_among(&dead));
    let held = if wants_locks {
        locks.discover_key(&key).await
    } else {
        Vec::new()
    };
    writer.response(&Resource {
        href: &href,
        key: &key,
        name: &name,
        meta: &meta,
        dead: &dead,
        locks: &held,
    });
    if let Some(mut entries) = entries {
        let mut child_href = String::new();
        while let Some(batch) = entries.recv().await {
            for (name, meta) in batch {
                let segment = paths::encode_segment(&name);
                let child_key = if key == "/" {
                    format!("/{segment}")
                } else {
                    format!("{key}/{segment}")
                };
                let dead = if props.is_empty() {
                    Vec::new()
                } else {
                    props.remove(&child_key).unwrap_or_default()
                };
                let meta = meta.with_created(win32::created_among(&dead));
                child_href.clear();
                child_href.push_str(&href);
                child_href.push_str(&segment);
                if meta.is_dir() {
                    child_href.push('/');
                }
                let held = if wants_locks {
                    locks.discover_key(&child_key).await
                } else {
                    Vec::new()
                };
                writer.response(&Resource {
                    href: &child_href,
                    key: &child_key,
                    name: &name,
                    meta: &meta,
                    dead: &dead,
                    locks: &held,
                });
                if writer.out.len() >= FRAME_TARGET {
                    send(tx, &mut writer.out).await?;
                }
            }
        }
    }
    writer.finish();
    send(tx, &mut writer.out).await
}

async fn send(tx: &tokio::sync::mpsc::Sender<io::Result<Bytes>>, out: &mut Vec<u8>) -> io::Result<()> {
    let frame = Bytes::from(std::mem::replace(out, Vec::with_capacity(FRAME_TARGET + 4096)));
    tx.send(Ok(frame))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dav(local: &str) -> PropName {
        PropName {
            namespace: Some(DAV_NS.into()),
            local: local.into(),
        }
    }

    #[test]
    fn reads_what_is_asked() {
        assert_eq!(asked(b""), Some(Asked::AllProp));
        assert_eq!(
            asked(br#"<D:propfind xmlns:D="DAV:"><D:propname/></D:propfind>"#),
            Some(Asked::PropName)
        );
        assert_eq!(
            asked(br#"<propfind xmlns="DAV:"><allprop/><include><x xmlns="urn:x"/></include></propfind>"#),
            Some(Asked::AllProp)
        );
        assert_eq!(
            asked(br#"<D:propfind xmlns:D="DAV:"><D:prop><D:getetag/><x:a xmlns:x="urn:x"/><D:getetag/><b xmlns=""/></D:prop></D:propfind>"#),
            Some(Asked::Prop(vec![
                dav("getetag"),
                PropName {
                    namespace: Some("urn:x".into()),
                    local: "a".into()
                },
                PropName {
                    namespace: None,
                    local: "b".into()
                },
            ]))
        );
        assert_eq!(asked(br#"<x:propfind xmlns:x="urn:x"/>"#), None);
    }

    #[test]
    fn only_a_redirector_listing_is_trimmed() {
        let headers = |ua: &str, depth: Option<&str>| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::USER_AGENT, ua.parse().unwrap());
            if let Some(d) = depth {
                h.insert("depth", d.parse().unwrap());
            }
            h
        };
        let ua = "Microsoft-WebDAV-MiniRedir/10.0.19045";
        assert_eq!(for_client(Asked::AllProp, &headers(ua, Some("1"))), Asked::Redirector);
        assert_eq!(for_client(Asked::AllProp, &headers(ua, Some("0"))), Asked::AllProp);
        assert_eq!(for_client(Asked::PropName, &headers(ua, Some("1"))), Asked::PropName);
        assert_eq!(
            for_client(Asked::AllProp, &headers("Microsoft Office/16.0", Some("1"))),
            Asked::AllProp
        );
        assert_eq!(
            for_client(Asked::AllProp, &headers("curl/8", Some("1"))),
            Asked::AllProp
        );
    }
}
