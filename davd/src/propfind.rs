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
//! The answer is read as a flat series of tokens to find where each top-level `D:response`
//! ends ([`Scanner`]); each one is then parsed by the `xml` crate's pull parser (the tokenizer
//! every other XML reader in davd uses) inside a copy of dav-server's root element (so its
//! namespace prefixes resolve), changed, and written out again by the `xml` crate's writer.
//! Memory stays at one `D:response` (what dav-server itself holds).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use xml::name::OwnedName;
use xml::reader::{ParserConfig, XmlEvent};
use xml::writer::{EmitterConfig, EventWriter, XmlEvent as Out};

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

/// Rewrites dav-server's PROPFIND multistatus (see the module docs).
pub struct Rewrite<B> {
    inner: B,
    asked: Asked,
    /// Bytes of the answer not yet handled; `scan` is where the next token starts.
    input: Vec<u8>,
    scan: usize,
    depth: usize,
    /// Where the `D:response` being read starts in `input`.
    fragment: Option<usize>,
    /// dav-server's root start tag (as an open tag) and the name to close it with.
    root: Option<(Vec<u8>, Vec<u8>)>,
    writer: EventWriter<Vec<u8>>,
    finished: bool,
    inner_done: bool,
    ready: VecDeque<Bytes>,
}

impl<B> Rewrite<B> {
    pub fn new(inner: B, asked: Asked) -> Rewrite<B> {
        let config = EmitterConfig::new()
            .perform_indent(false)
            .normalize_empty_elements(true)
            .write_document_declaration(true);
        Rewrite {
            inner,
            asked,
            input: Vec::new(),
            scan: 0,
            depth: 0,
            fragment: None,
            root: None,
            writer: EventWriter::new_with_config(Vec::new(), config),
            finished: false,
            inner_done: false,
            ready: VecDeque::new(),
        }
    }

    /// Take in more of dav-server's answer; what is complete is written out.
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
                        let tag = &self.input[at..end];
                        let name_len = tag[1..]
                            .iter()
                            .position(|b| b.is_ascii_whitespace() || *b == b'>' || *b == b'/')
                            .unwrap_or(tag.len() - 1);
                        let name = tag[1..1 + name_len].to_vec();
                        let mut open = tag.to_vec();
                        if self_closing {
                            open.truncate(open.len() - 2);
                            open.push(b'>');
                        }
                        self.root = Some((open, name));
                        self.write_root(true)?;
                        if self_closing {
                            self.write_root(false)?;
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
                        0 => self.write_root(false)?,
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
        let out = std::mem::take(self.writer.inner_mut());
        if !out.is_empty() {
            self.ready.push_back(Bytes::from(out));
        }
        Ok(())
    }

    /// The events of dav-server's root element alone (`start`: its start, else its end).
    fn write_root(&mut self, start: bool) -> io::Result<()> {
        let (open, name) = self.root.clone().ok_or_else(|| bad("no root element"))?;
        if !start {
            self.writer.write(Out::end_element()).map_err(bad)?;
            self.finished = true;
            return Ok(());
        }
        let doc = [&open[..], b"</", &name[..], b">"].concat();
        for event in ParserConfig::new().create_reader(&doc[..]) {
            if let e @ XmlEvent::StartElement { .. } = event.map_err(bad)? {
                if let XmlEvent::StartElement { name, .. } = &e
                    && PropName::of(name)
                        != (PropName {
                            namespace: Some(DAV_NS.into()),
                            local: "multistatus".into(),
                        })
                {
                    return Err(bad("not a multistatus"));
                }
                return self
                    .writer
                    .write(e.as_writer_event().expect("a start element"))
                    .map_err(bad);
            }
        }
        Err(bad("no root element"))
    }

    /// One top-level element of the multistatus (a `D:response`), `input[start..end]`.
    fn fragment_done(&mut self, start: usize, end: usize) -> io::Result<()> {
        let (open, name) = self.root.as_ref().ok_or_else(|| bad("no root element"))?;
        let doc = [&open[..], &self.input[start..end], b"</", &name[..], b">"].concat();
        let events = ParserConfig::new()
            .create_reader(&doc[..])
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        self.rewrite_response(events)
    }

    /// Write one `D:response` (its events, inside the root), changed as the module docs say.
    fn rewrite_response(&mut self, events: Vec<XmlEvent>) -> io::Result<()> {
        let winners = winners(&events);
        let mut depth = 0usize;
        let mut seen: Vec<PropName> = Vec::new();
        // A propstat is held until its end: one left without properties is not written.
        let mut propstat: Option<(Vec<XmlEvent>, usize)> = None;
        // While Some(d): dropping everything until the end of the element at depth d.
        let mut skipping: Option<usize> = None;
        let mut in_prop = false;
        let mut in_etag = false;
        for (index, event) in events.into_iter().enumerate() {
            let mut event = event;
            match &event {
                XmlEvent::StartElement { name, .. } => {
                    depth += 1;
                    if skipping.is_some() {
                        continue;
                    }
                    let prop = PropName::of(name);
                    match depth {
                        1 => continue, // the root copy
                        3 if prop.is_dav("propstat") => propstat = Some((Vec::new(), 0)),
                        4 => in_prop = propstat.is_some() && prop.is_dav("prop"),
                        5 if in_prop => {
                            let asked = match &self.asked {
                                Asked::Prop(list) => list.contains(&prop),
                                Asked::Redirector => REDIRECTOR_PROPS
                                    .iter()
                                    .any(|(ns, local)| prop.namespace.as_deref() == Some(*ns) && prop.local == *local),
                                _ => true,
                            };
                            let keep = asked && winners.contains(&index);
                            if !keep {
                                skipping = Some(5);
                                continue;
                            }
                            if let Some((_, kept)) = &mut propstat {
                                *kept += 1;
                            }
                            in_etag = prop.is_dav("getetag");
                            seen.push(prop);
                        }
                        d if d > 5 && in_prop && self.asked == Asked::PropName => {
                            skipping = Some(d);
                            continue;
                        }
                        _ => {}
                    }
                }
                XmlEvent::EndElement { .. } => {
                    let d = depth;
                    depth -= 1;
                    if let Some(s) = skipping {
                        if d == s {
                            skipping = None;
                        }
                        continue;
                    }
                    match d {
                        1 => continue,
                        2 => {
                            self.write_missing(&seen)?;
                        }
                        3 => {
                            if let Some((mut held, kept)) = propstat.take() {
                                if kept > 0 {
                                    held.push(event);
                                    for e in &held {
                                        self.write(e)?;
                                    }
                                }
                                continue;
                            }
                        }
                        4 => in_prop = false,
                        5 => in_etag = false,
                        _ => {}
                    }
                }
                XmlEvent::Characters(_) | XmlEvent::CData(_) | XmlEvent::Whitespace(_) => {
                    if skipping.is_some() || (depth == 5 && in_prop && self.asked == Asked::PropName) {
                        continue;
                    }
                    if let XmlEvent::Characters(text) = &event
                        && in_etag
                        && depth == 5
                    {
                        event = XmlEvent::Characters(quoted_etag(text));
                    }
                }
                XmlEvent::StartDocument { .. } | XmlEvent::EndDocument | XmlEvent::Doctype { .. } => continue,
                _ => {
                    if skipping.is_some() || depth <= 1 {
                        continue;
                    }
                }
            }
            match &mut propstat {
                Some((held, _)) => held.push(event),
                None => self.write(&event)?,
            }
        }
        Ok(())
    }

    fn write(&mut self, event: &XmlEvent) -> io::Result<()> {
        match event.as_writer_event() {
            Some(e) => self.writer.write(e).map_err(bad),
            None => Ok(()),
        }
    }

    /// RFC 4918 section 9.1: each property asked for by name that the resource lacks, in a
    /// propstat with 404 (written just before the `D:response` ends).
    fn write_missing(&mut self, seen: &[PropName]) -> io::Result<()> {
        let Asked::Prop(list) = &self.asked else {
            return Ok(());
        };
        let missing: Vec<PropName> = list.iter().filter(|p| !seen.contains(p)).cloned().collect();
        if missing.is_empty() {
            return Ok(());
        }
        let w = &mut self.writer;
        w.write(Out::start_element("D:propstat")).map_err(bad)?;
        w.write(Out::start_element("D:prop")).map_err(bad)?;
        for p in &missing {
            match p.namespace.as_deref() {
                Some(DAV_NS) => {
                    let name = format!("D:{}", p.local);
                    w.write(Out::start_element(name.as_str())).map_err(bad)?;
                }
                Some(ns) => w
                    .write(Out::start_element(p.local.as_str()).default_ns(ns))
                    .map_err(bad)?,
                None => w.write(Out::start_element(p.local.as_str())).map_err(bad)?,
            }
            w.write(Out::end_element()).map_err(bad)?;
        }
        w.write(Out::end_element()).map_err(bad)?;
        w.write(Out::start_element("D:status")).map_err(bad)?;
        w.write(Out::characters("HTTP/1.1 404 Not Found")).map_err(bad)?;
        w.write(Out::end_element()).map_err(bad)?;
        w.write(Out::end_element()).map_err(bad)
    }
}

/// Which property elements of one `D:response` (indexes into its events) are written: each
/// property once. dav-server answers a Win32 property (and an asked-for dead property) first
/// from its own reckoning and then again from davd's store, appended after its live ones: the
/// `Win32FileAttributes` it computes knows only "directory" and "archive", while the stored one
/// holds what Explorer set (hidden, read-only; MS-WDV section 2.2.1). So the last occurrence
/// in a `200 OK` propstat wins; a property found in none keeps its first occurrence.
fn winners(events: &[XmlEvent]) -> HashSet<usize> {
    // (name, index, found in a 200 propstat)
    let mut all: Vec<(PropName, usize, bool)> = Vec::new();
    let mut current: Vec<(PropName, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut in_propstat = false;
    let mut in_status = false;
    let mut ok = false;
    for (index, event) in events.iter().enumerate() {
        match event {
            XmlEvent::StartElement { name, .. } => {
                depth += 1;
                let prop = PropName::of(name);
                match depth {
                    3 => {
                        in_propstat = prop.is_dav("propstat");
                        ok = false;
                    }
                    4 => in_status = in_propstat && prop.is_dav("status"),
                    5 if in_propstat => {
                        // Under D:prop (D:status has no child elements).
                        current.push((prop, index));
                    }
                    _ => {}
                }
            }
            XmlEvent::Characters(text) if in_status && depth == 4 => {
                ok |= text.split_ascii_whitespace().nth(1) == Some("200");
            }
            XmlEvent::EndElement { .. } => {
                if depth == 4 {
                    in_status = false;
                }
                if depth == 3 && in_propstat {
                    all.extend(current.drain(..).map(|(p, i)| (p, i, ok)));
                    in_propstat = false;
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
    }
    // Per name: its last occurrence in a 200 propstat, and its first anywhere.
    let mut best: HashMap<&PropName, (Option<usize>, usize)> = HashMap::new();
    for (prop, index, ok) in &all {
        let entry = best.entry(prop).or_insert((None, *index));
        if *ok {
            entry.0 = Some(*index);
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
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data()
                        && let Err(e) = self.feed(&data)
                    {
                        self.inner_done = true;
                        return Poll::Ready(Some(Err(e)));
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
        assert!(whole.contains(r#"<D:getcontentlength />"#), "{whole}");
        assert!(whole.contains(r#"<plain />"#), "{whole}");
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
            assert_eq!(out.matches("Win32FileAttributes>").count(), 2, "{asked:?}: {out}");
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
