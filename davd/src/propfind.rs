//! PROPFIND answers as RFC 4918 section 9.1 wants them, made from dav-server's.
//!
//! dav-server 0.11 writes the multistatus of a PROPFIND itself, with four faults clients trip
//! on, fixed here on the way out (streamed, one `D:response` at a time):
//! - `getetag` is written without its quotes, while the `ETag` header has them (RFC 9110
//!   section 8.8.3: the quotes are part of the entity-tag), so a client that sends the
//!   PROPFIND value back in `If-Match` got 412. It is quoted here.
//! - a property asked for by name that the resource does not have (`getcontentlength` on a
//!   folder, an unknown dead property) is left out; RFC 4918 section 9.1 (and the example of
//!   9.1.2) wants it in a propstat with `404 Not Found`. Those are added.
//! - with `<D:prop>` every dead property of the resource is listed too (and a requested one
//!   twice); only the properties asked for are kept, each once. With `<D:propname>` the dead
//!   properties came with their values; only their names are kept (section 9.1: "names only").
//! - a Win32 property is written twice, dav-server's own reckoning first and davd's stored
//!   value after it; the stored one is kept ([`winners`]), so Explorer sees the hidden and
//!   read-only bits it set.
//!
//! And one answer is cut to fit its client: a folder listing for the Windows redirector keeps
//! only what Explorer reads ([`REDIRECTOR_PROPS`]), to stay under its size limit.
//!
//! The answer is read as a flat series of tokens ([`token_at`]) to find where each top-level
//! `D:response` ends; each one is then cut by byte offsets into its pieces (its propstats, the
//! property elements in them, each with its name resolved through the namespace declarations in
//! scope, from dav-server's root element down), and the answer is made by copying the pieces
//! kept and writing only what is new (a 404 propstat, a quoted ETag, a property's name alone).
//! dav-server's bytes are never parsed into events nor serialized again: that pass was most of
//! a PROPFIND's time (issue #12). Memory stays at one `D:response` (what dav-server itself
//! holds) and the answer goes out in frames of about [`FRAME_TARGET`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use xml::name::OwnedName;
use xml::reader::{ParserConfig, XmlEvent};

use crate::xmldoc::DAV_NS;

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
    (crate::win32::NS, "Win32FileAttributes"),
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
/// understands: dav-server then answers it (a 400) and nothing is rewritten.
pub fn asked(body: &[u8]) -> Option<Asked> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Some(Asked::AllProp);
    }
    let config = ParserConfig::new().ignore_comments(true);
    let mut depth = 0usize;
    let mut kind: Option<Asked> = None;
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
                            && !list.contains(&prop)
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

    /// Push the namespace declarations of this tag onto `scope`.
    fn declare(&self, scope: &mut Bindings) -> io::Result<()> {
        for (name, value, _) in self.attributes()? {
            if name == b"xmlns" {
                scope.push((Vec::new(), unescape(value)?));
            } else if let Some(prefix) = name.strip_prefix(b"xmlns:") {
                scope.push((prefix.to_vec(), unescape(value)?));
            }
        }
        Ok(())
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

    /// The element's expanded name in `scope` (its own declarations already pushed).
    fn resolve(&self, scope: &Bindings) -> io::Result<PropName> {
        let (prefix, local) = match self.name.iter().position(|&b| b == b':') {
            Some(colon) => (&self.name[..colon], &self.name[colon + 1..]),
            None => (&b""[..], self.name),
        };
        let namespace = match scope.iter().rev().find(|(p, _)| p == prefix) {
            Some((_, ns)) => ns.clone(),
            None if prefix.is_empty() => Vec::new(),
            None => return Err(bad("an undeclared namespace prefix")),
        };
        let text = |b: Vec<u8>| String::from_utf8(b).map_err(|_| bad("a name that is not UTF-8"));
        Ok(PropName {
            namespace: Some(text(namespace)?).filter(|n| !n.is_empty()),
            local: text(local.to_vec())?,
        })
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

/// One property element of a `D:prop`, as byte offsets into its `D:response`.
struct Property {
    name: PropName,
    /// Its start tag, `<` to `>`.
    open: std::ops::Range<usize>,
    /// Its end tag (empty at `open.end` when the start tag closes itself).
    close: std::ops::Range<usize>,
    /// In a propstat whose status is 200.
    ok: bool,
}

/// One `D:propstat` of a `D:response`: where it starts, its `D:prop` start tag and end tag.
struct Propstat {
    start: usize,
    prop_open_end: usize,
    prop_close_start: usize,
    end: usize,
    /// Indexes into the response's properties.
    properties: std::ops::Range<usize>,
}

/// What the writer copies of one `D:response`: pieces kept as they are, and propstats.
enum Piece {
    Verbatim(std::ops::Range<usize>),
    Propstat(Propstat),
}

/// One `D:response` cut into what the writer copies.
struct Cut {
    /// Its start tag.
    open: std::ops::Range<usize>,
    pieces: Vec<Piece>,
    properties: Vec<Property>,
    /// Its end tag.
    close: std::ops::Range<usize>,
}

/// Rewrites dav-server's PROPFIND multistatus (see the module docs).
///
/// Each `D:response` is cut into its pieces by offsets (a flat scan of its tokens, namespace
/// declarations followed), and the answer is made by copying the pieces kept: no parse into
/// events and no second serialization (issue #12: the event-by-event rewrite through the `xml`
/// crate was most of a PROPFIND's time).
pub struct Rewrite<B> {
    inner: B,
    asked: Asked,
    /// Bytes of the answer not yet handled; `scan` is where the next token starts.
    input: Vec<u8>,
    scan: usize,
    depth: usize,
    /// Where the `D:response` being read starts in `input`.
    fragment: Option<usize>,
    /// The name dav-server's root element is closed with, once its start tag was read.
    root_name: Option<Vec<u8>>,
    /// The namespace declarations of the root element.
    root_scope: Bindings,
    /// A prefix the root binds to `DAV:`, for the 404 propstats written here.
    dav_prefix: Option<Vec<u8>>,
    out: Vec<u8>,
    finished: bool,
    inner_done: bool,
    ready: VecDeque<Bytes>,
}

/// Gather this much of the answer before handing it on as one frame (one HTTP chunk): dav-server
/// sends one frame per `D:response` of a few hundred bytes.
const FRAME_TARGET: usize = 32 * 1024;

impl<B> Rewrite<B> {
    pub fn new(inner: B, asked: Asked) -> Rewrite<B> {
        Rewrite {
            inner,
            asked,
            input: Vec::new(),
            scan: 0,
            depth: 0,
            fragment: None,
            root_name: None,
            root_scope: Vec::new(),
            dav_prefix: None,
            out: Vec::new(),
            finished: false,
            inner_done: false,
            ready: VecDeque::new(),
        }
    }

    /// Take in more of dav-server's answer; what is complete is written to `out`.
    fn feed(&mut self, data: &[u8]) -> io::Result<()> {
        self.input.extend_from_slice(data);
        while !self.finished {
            let Some(lt) = self.input[self.scan..].iter().position(|&b| b == b'<') else {
                self.scan = self.input.len();
                break;
            };
            let at = self.scan + lt;
            let Some((token, end)) = token_at(&self.input, at) else {
                self.scan = at;
                break;
            };
            match token {
                Token::Start { self_closing } => match self.depth {
                    0 => {
                        self.open_root(at, end)?;
                        if self_closing {
                            self.close_root();
                        } else {
                            self.depth = 1;
                        }
                    }
                    1 => {
                        if self_closing {
                            self.fragment_done(at, end)?;
                        } else {
                            self.fragment = Some(at);
                            self.depth = 2;
                        }
                    }
                    _ => {
                        if !self_closing {
                            self.depth += 1;
                        }
                    }
                },
                Token::End => {
                    self.depth = self.depth.saturating_sub(1);
                    match self.depth {
                        1 => {
                            let start = self.fragment.take().unwrap_or(at);
                            self.fragment_done(start, end)?;
                        }
                        0 => self.close_root(),
                        _ => {}
                    }
                }
                Token::Other => {}
            }
            self.scan = end;
            if self.fragment.is_none() {
                // Nothing before here is needed again.
                self.input.drain(..self.scan);
                self.scan = 0;
            }
        }
        if self.finished {
            self.input.clear();
            self.scan = 0;
        }
        Ok(())
    }

    /// Hand on what is written so far as one frame.
    fn take_out(&mut self) {
        if !self.out.is_empty() {
            let out = std::mem::take(&mut self.out);
            self.ready.push_back(Bytes::from(out));
        }
    }

    /// dav-server's root start tag, `input[at..end]`: checked to be `DAV:multistatus`, its
    /// namespace declarations kept, and written (after the XML declaration) as it is.
    fn open_root(&mut self, at: usize, end: usize) -> io::Result<()> {
        let tag = Tag::of(&self.input[at..end]);
        let mut scope = Bindings::new();
        tag.declare(&mut scope)?;
        if !tag.resolve(&scope)?.is_dav("multistatus") {
            return Err(bad("not a multistatus"));
        }
        self.dav_prefix = scope
            .iter()
            .rev()
            .find(|(p, ns)| !p.is_empty() && ns == DAV_NS.as_bytes())
            .map(|(p, _)| p.clone());
        self.root_name = Some(tag.name.to_vec());
        self.out.extend_from_slice(br#"<?xml version="1.0" encoding="utf-8"?>"#);
        self.out.push(b'<');
        self.out.extend_from_slice(tag.name);
        self.out.extend_from_slice(tag.attributes);
        self.out.push(b'>');
        self.root_scope = scope;
        Ok(())
    }

    fn close_root(&mut self) {
        if let Some(name) = self.root_name.take() {
            self.out.extend_from_slice(b"</");
            self.out.extend_from_slice(&name);
            self.out.push(b'>');
        }
        self.finished = true;
    }

    /// One top-level element of the multistatus (a `D:response`), `input[start..end]`.
    fn fragment_done(&mut self, start: usize, end: usize) -> io::Result<()> {
        if self.root_name.is_none() {
            return Err(bad("no root element"));
        }
        let fragment = std::mem::take(&mut self.input);
        let result = self.rewrite_response(&fragment[start..end]);
        self.input = fragment;
        result
    }

    /// Cut one `D:response` into its pieces and properties (offsets into `response`).
    fn cut(&self, response: &[u8]) -> io::Result<Cut> {
        let mut scope = self.root_scope.clone();
        // Per open element: the scope's length before its declarations.
        let mut open: Vec<usize> = Vec::new();
        let mut pieces = Vec::new();
        let mut properties: Vec<Property> = Vec::new();
        let mut response_open = 0..0;
        // The child of the response being read, from where, and whether it is a propstat.
        let mut child: Option<(usize, bool)> = None;
        let mut propstat: Option<Propstat> = None;
        let mut in_prop = false;
        let mut in_status = false;
        let mut status_ok = false;
        let mut property: Option<Property> = None;
        let mut at = 0;
        while let Some(lt) = response[at..].iter().position(|&b| b == b'<') {
            let start = at + lt;
            let (token, end) = token_at(response, start).ok_or_else(|| bad("a cut-off response"))?;
            if in_status && let Some(text) = response.get(at..start) {
                status_ok |= text.split(u8::is_ascii_whitespace).filter(|w| !w.is_empty()).nth(1) == Some(b"200");
            }
            match token {
                Token::Start { self_closing } => {
                    let depth = open.len() + 1;
                    let tag = Tag::of(&response[start..end]);
                    open.push(scope.len());
                    tag.declare(&mut scope)?;
                    match depth {
                        1 => response_open = start..end,
                        2 => {
                            let is_propstat = tag.resolve(&scope)?.is_dav("propstat");
                            child = Some((start, is_propstat));
                            if is_propstat && !self_closing {
                                propstat = Some(Propstat {
                                    start,
                                    prop_open_end: 0,
                                    prop_close_start: 0,
                                    end: 0,
                                    properties: properties.len()..properties.len(),
                                });
                                status_ok = false;
                            }
                        }
                        3 if propstat.is_some() => {
                            let name = tag.resolve(&scope)?;
                            if name.is_dav("prop") && !self_closing {
                                in_prop = true;
                                if let Some(p) = &mut propstat {
                                    p.prop_open_end = end;
                                    p.prop_close_start = end;
                                }
                            }
                            in_status = name.is_dav("status") && !self_closing;
                        }
                        4 if in_prop => {
                            property = Some(Property {
                                name: tag.resolve(&scope)?,
                                open: start..end,
                                close: end..end,
                                ok: false,
                            });
                        }
                        _ => {}
                    }
                    if self_closing && depth == 1 {
                        // An empty response (dav-server writes none): kept as it is.
                        return Ok(Cut {
                            open: start..end,
                            pieces,
                            properties,
                            close: end..end,
                        });
                    }
                    if self_closing {
                        self.closed(
                            depth,
                            start,
                            end,
                            &mut child,
                            &mut pieces,
                            &mut property,
                            &mut properties,
                        );
                        scope.truncate(open.pop().unwrap_or(0));
                    }
                }
                Token::End => {
                    let depth = open.len();
                    scope.truncate(open.pop().ok_or_else(|| bad("an end tag without a start"))?);
                    match depth {
                        1 => {
                            if end != response.len() {
                                return Err(bad("content after a response"));
                            }
                            return Ok(Cut {
                                open: response_open,
                                pieces,
                                properties,
                                close: start..end,
                            });
                        }
                        2 => {
                            if let Some(mut p) = propstat.take() {
                                p.end = end;
                                p.properties.end = properties.len();
                                for prop in &mut properties[p.properties.clone()] {
                                    prop.ok = status_ok;
                                }
                                if p.prop_open_end > 0 {
                                    pieces.push(Piece::Propstat(p));
                                } else if let Some((from, _)) = child {
                                    pieces.push(Piece::Verbatim(from..end));
                                }
                                child = None;
                            } else {
                                self.closed(
                                    depth,
                                    start,
                                    end,
                                    &mut child,
                                    &mut pieces,
                                    &mut property,
                                    &mut properties,
                                );
                            }
                        }
                        3 => {
                            if in_prop && let Some(p) = &mut propstat {
                                p.prop_close_start = start;
                            }
                            in_prop = false;
                            in_status = false;
                        }
                        4 => self.closed(
                            depth,
                            start,
                            end,
                            &mut child,
                            &mut pieces,
                            &mut property,
                            &mut properties,
                        ),
                        _ => {}
                    }
                }
                Token::Other => {}
            }
            at = end;
        }
        Err(bad("a cut-off response"))
    }

    /// An element at `depth` ended at `end` (its end tag or self-closing start tag at `start`).
    #[allow(clippy::too_many_arguments)]
    fn closed(
        &self,
        depth: usize,
        start: usize,
        end: usize,
        child: &mut Option<(usize, bool)>,
        pieces: &mut Vec<Piece>,
        property: &mut Option<Property>,
        properties: &mut Vec<Property>,
    ) {
        match depth {
            2 => {
                if let Some((from, _)) = child.take() {
                    pieces.push(Piece::Verbatim(from..end));
                }
            }
            4 => {
                if let Some(mut p) = property.take() {
                    if p.open.end != end {
                        p.close = start..end;
                    }
                    properties.push(p);
                }
            }
            _ => {}
        }
    }

    /// Write one `D:response`, changed as the module docs say.
    fn rewrite_response(&mut self, response: &[u8]) -> io::Result<()> {
        let cut = self.cut(response)?;
        let winners = winners(&cut.properties);
        let mut seen: Vec<&PropName> = Vec::new();
        let out = &mut self.out;
        out.extend_from_slice(&response[cut.open.clone()]);
        for piece in &cut.pieces {
            match piece {
                Piece::Verbatim(range) => out.extend_from_slice(&response[range.clone()]),
                Piece::Propstat(p) => {
                    let kept: Vec<usize> = p
                        .properties
                        .clone()
                        .filter(|&i| winners.contains(&i) && self.asked.wants(&cut.properties[i].name))
                        .collect();
                    // A propstat left without properties is not written.
                    if kept.is_empty() {
                        continue;
                    }
                    out.extend_from_slice(&response[p.start..p.prop_open_end]);
                    for i in kept {
                        let prop = &cut.properties[i];
                        seen.push(&prop.name);
                        write_property(out, response, prop, &self.asked, &self.root_scope)?;
                    }
                    out.extend_from_slice(&response[p.prop_close_start..p.end]);
                }
            }
        }
        if !cut.close.is_empty() {
            // The 404s go just before the response ends.
            write_missing(out, &self.asked, &seen, self.dav_prefix.as_deref());
            out.extend_from_slice(&response[cut.close.clone()]);
        }
        Ok(())
    }
}

impl Asked {
    /// Whether a property of this name is written in the answer.
    fn wants(&self, name: &PropName) -> bool {
        match self {
            Asked::Prop(list) => list.contains(name),
            Asked::Redirector => REDIRECTOR_PROPS
                .iter()
                .any(|(ns, local)| name.namespace.as_deref() == Some(*ns) && name.local == *local),
            Asked::AllProp | Asked::PropName => true,
        }
    }
}

/// One property element as kept: names only for `propname`, a quoted `getetag`, else as it is
/// (its start tag without the declarations the root makes: `root`).
fn write_property(
    out: &mut Vec<u8>,
    response: &[u8],
    prop: &Property,
    asked: &Asked,
    root: &Bindings,
) -> io::Result<()> {
    let open = Tag::of(&response[prop.open.clone()]);
    let value = &response[prop.open.end..prop.close.start];
    // An empty one as `<name/>` (dav-server writes `<D:resourcetype></D:resourcetype>`): 15
    // bytes less an entry of Explorer's size-limited listing for each.
    if *asked == Asked::PropName || value.is_empty() {
        return open.write_lean(out, root, true);
    }
    open.write_lean(out, root, false)?;
    if prop.name.is_dav("getetag") && !value.contains(&b'<') {
        // dav-server writes the entity-tag without its quotes (the text is our own hex).
        let text = String::from_utf8_lossy(value);
        out.extend_from_slice(quoted_etag(&text).as_bytes());
    } else {
        out.extend_from_slice(value);
    }
    out.extend_from_slice(&response[prop.close.clone()]);
    Ok(())
}

/// RFC 4918 section 9.1: each property asked for by name that the resource lacks, in a
/// propstat with 404 (written just before the `D:response` ends).
fn write_missing(out: &mut Vec<u8>, asked: &Asked, seen: &[&PropName], dav_prefix: Option<&[u8]>) {
    let Asked::Prop(list) = asked else {
        return;
    };
    let missing: Vec<&PropName> = list.iter().filter(|p| !seen.contains(p)).collect();
    if missing.is_empty() {
        return;
    }
    // The DAV: elements around the missing properties, under the root's prefix for DAV:.
    let dav = |out: &mut Vec<u8>, local: &str, close: bool| {
        out.push(b'<');
        if close {
            out.push(b'/');
        }
        match dav_prefix {
            Some(p) => {
                out.extend_from_slice(p);
                out.push(b':');
                out.extend_from_slice(local.as_bytes());
            }
            None => {
                out.extend_from_slice(local.as_bytes());
                if !close {
                    out.extend_from_slice(br#" xmlns="DAV:""#);
                }
            }
        }
        out.push(b'>');
    };
    dav(out, "propstat", false);
    dav(out, "prop", false);
    for p in missing {
        match (p.namespace.as_deref(), dav_prefix) {
            (Some(DAV_NS), Some(prefix)) => {
                out.push(b'<');
                out.extend_from_slice(prefix);
                out.push(b':');
                out.extend_from_slice(p.local.as_bytes());
                out.extend_from_slice(b"/>");
            }
            (namespace, _) => {
                // The names were read from the request by the XML parser: valid names.
                out.push(b'<');
                out.extend_from_slice(p.local.as_bytes());
                out.extend_from_slice(b" xmlns=\"");
                out.extend_from_slice(crate::xmldoc::escape(namespace.unwrap_or("")).as_bytes());
                out.extend_from_slice(b"\"/>");
            }
        }
    }
    dav(out, "prop", true);
    dav(out, "status", false);
    out.extend_from_slice(b"HTTP/1.1 404 Not Found");
    dav(out, "status", true);
    dav(out, "propstat", true);
}

/// Which properties of one `D:response` (indexes) are written: each property once.
/// dav-server answers a Win32 property (and an asked-for dead property) first from its own
/// reckoning and then again from davd's store, appended after its live ones: the
/// `Win32FileAttributes` it computes knows only "directory" and "archive", while the stored one
/// holds what Explorer set (hidden, read-only; MS-WDV section 2.2.1). So the last occurrence
/// in a `200 OK` propstat wins; a property found in none keeps its first occurrence.
fn winners(properties: &[Property]) -> HashSet<usize> {
    // Per name: its last occurrence in a 200 propstat, and its first anywhere.
    let mut best: HashMap<&PropName, (Option<usize>, usize)> = HashMap::with_capacity(properties.len());
    for (index, prop) in properties.iter().enumerate() {
        let entry = best.entry(&prop.name).or_insert((None, index));
        if prop.ok {
            entry.0 = Some(index);
        }
    }
    best.into_values()
        .map(|(last_ok, first)| last_ok.unwrap_or(first))
        .collect()
}

fn bad(e: impl std::fmt::Display) -> io::Error {
    tracing::error!("rewriting a PROPFIND answer: {e}");
    io::Error::other(format!("PROPFIND answer: {e}"))
}

impl<B> HttpBody for Rewrite<B>
where
    B: HttpBody<Data = Bytes, Error = io::Error> + Unpin,
{
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        loop {
            if let Some(out) = self.ready.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(out))));
            }
            if self.inner_done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => {
                    // What is written goes out while dav-server works on the rest.
                    if self.out.is_empty() {
                        return Poll::Pending;
                    }
                    self.take_out();
                }
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data()
                        && let Err(e) = self.feed(&data)
                    {
                        self.inner_done = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                    if self.out.len() >= FRAME_TARGET {
                        self.take_out();
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    self.inner_done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    self.inner_done = true;
                    if !self.finished {
                        return Poll::Ready(Some(Err(bad("the answer ended early"))));
                    }
                    self.take_out();
                }
            }
        }
    }
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

    /// Run `answer`, cut into pieces of `step` bytes, through the rewrite.
    fn rewrite(answer: &str, asked: Asked, step: usize) -> String {
        let mut r = Rewrite::new((), asked);
        for piece in answer.as_bytes().chunks(step) {
            r.feed(piece).unwrap();
        }
        assert!(r.finished);
        r.take_out();
        let out: Vec<u8> = r.ready.iter().flat_map(|b| b.to_vec()).collect();
        String::from_utf8(out).unwrap()
    }

    const ANSWER: &str = concat!(
        r#"<?xml version="1.0" encoding="utf-8"?><D:multistatus xmlns:D="DAV:">"#,
        r#"<D:response><D:href>/d/</D:href><D:propstat><D:prop><D:getetag>abc-1</D:getetag>"#,
        r#"<x:color xmlns:x="urn:x">red</x:color><x:size xmlns:x="urn:x">9</x:size>"#,
        r#"<x:color xmlns:x="urn:x">red <![CDATA[</D:response>]]><!-- </D:prop> --></x:color></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"#,
        r#"<D:response><D:href>/d/f</D:href><D:propstat><D:prop><D:getetag>"q"</D:getetag></D:prop>"#,
        r#"<D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>"#
    );

    #[test]
    fn prop_keeps_what_was_asked_once_and_reports_the_rest_404() {
        let asked = Asked::Prop(vec![
            dav("getetag"),
            dav("getcontentlength"),
            PropName {
                namespace: Some("urn:x".into()),
                local: "color".into(),
            },
            PropName {
                namespace: None,
                local: "plain".into(),
            },
        ]);
        let whole = rewrite(ANSWER, asked.clone(), ANSWER.len());
        for step in [1, 2, 3, 7, 64] {
            assert_eq!(rewrite(ANSWER, asked.clone(), step), whole, "pieces of {step}");
        }
        assert!(whole.contains("<D:getetag>\"abc-1\"</D:getetag>"), "{whole}");
        assert!(whole.contains("<D:getetag>\"q\"</D:getetag>"), "{whole}");
        // Once in /d/ (start and end tag), and as a 404 in /d/f.
        assert_eq!(whole.matches("color").count(), 3, "{whole}");
        assert!(!whole.contains("size"), "{whole}");
        assert!(whole.contains("<![CDATA[</D:response>]]>"), "{whole}");
        let statuses = crate::xmldoc::texts(whole.as_bytes(), |n, _| crate::xmldoc::is_dav(n, "status")).unwrap();
        assert_eq!(
            statuses,
            [
                "HTTP/1.1 200 OK",
                "HTTP/1.1 404 Not Found",
                "HTTP/1.1 200 OK",
                "HTTP/1.1 404 Not Found"
            ]
        );
        assert!(whole.contains(r#"<D:getcontentlength/>"#), "{whole}");
        assert!(whole.contains(r#"<plain xmlns=""/>"#), "{whole}");
    }

    #[test]
    fn propname_keeps_names_only() {
        let out = rewrite(ANSWER, Asked::PropName, 5);
        assert!(
            !out.contains("red") && !out.contains(">9<") && !out.contains("CDATA"),
            "{out}"
        );
        assert!(out.contains("size"), "{out}");
        assert!(!out.contains("404"), "{out}");
    }

    #[test]
    fn an_answer_cut_short_is_an_error() {
        let mut r = Rewrite::new((), Asked::AllProp);
        r.feed(&ANSWER.as_bytes()[..100]).unwrap();
        assert!(!r.finished);
    }

    const WIN32_TWICE: &str = concat!(
        r#"<?xml version="1.0" encoding="utf-8"?><D:multistatus xmlns:D="DAV:" xmlns:Z="urn:schemas-microsoft-com:">"#,
        r#"<D:response><D:href>/f</D:href><D:propstat><D:prop><D:getcontentlength>4</D:getcontentlength>"#,
        r#"<Z:Win32FileAttributes>00000020</Z:Win32FileAttributes><D:supportedlock><D:lockentry/></D:supportedlock>"#,
        r#"<Z:Win32FileAttributes xmlns:Z="urn:schemas-microsoft-com:">00000023</Z:Win32FileAttributes>"#,
        r#"</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>"#,
        r#"<D:propstat><D:prop><Z:Win32LastAccessTime/></D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>"#,
        r#"</D:response></D:multistatus>"#
    );

    #[test]
    fn the_stored_win32_value_wins_and_the_redirector_gets_what_explorer_reads() {
        for asked in [
            Asked::AllProp,
            Asked::Redirector,
            Asked::Prop(vec![PropName {
                namespace: Some(crate::win32::NS.into()),
                local: "Win32FileAttributes".into(),
            }]),
        ] {
            let out = rewrite(WIN32_TWICE, asked.clone(), 9);
            assert_eq!(out.matches("</Z:Win32FileAttributes>").count(), 1, "{asked:?}: {out}");
            assert!(
                out.contains(">00000023<") && !out.contains(">00000020<"),
                "{asked:?}: {out}"
            );
            // Found in no 200 propstat: its one occurrence stays.
            if asked != Asked::Redirector {
                assert_eq!(out.contains("Win32LastAccessTime"), asked == Asked::AllProp, "{out}");
            }
        }
        let lean = rewrite(WIN32_TWICE, Asked::Redirector, 64);
        assert!(
            lean.contains("getcontentlength") && !lean.contains("supportedlock"),
            "{lean}"
        );
        let full = rewrite(WIN32_TWICE, Asked::AllProp, 64);
        assert!(full.contains("supportedlock"), "{full}");
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
