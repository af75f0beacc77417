//! What a message is parsed into once, at delivery, so IMAP can answer ENVELOPE, BODYSTRUCTURE
//! and header fetches without reading or parsing the body again (RFC 3501 §7.4.2).
//!
//! Strings keep the header's raw text (unfolded), as IMAP servers return them: a Subject with
//! RFC 2047 encoded words is stored encoded. Display names are decoded UTF-8.

use mail_parser::{Address, HeaderName, HeaderValue, Message, MessageParser, MessagePart, MimeHeaders};
use serde::{Deserialize, Serialize};

/// An address as IMAP's ENVELOPE lists it (RFC 3501 §7.4.2, "address structure"). A group is
/// a start marker (`mailbox` = group name, `host` = None) and an end marker (all None).
///
/// Stored as jsonb in every message row, so what is absent is left out of it (issue #12: a
/// narrower row puts more of a mailbox on each page a header download reads); a row written
/// with `null`s reads the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EnvelopeAddress {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// RFC 3501 ENVELOPE. Sender and Reply-To default to From, as §7.4.2 requires.
///
/// Stored as [`StoredEnvelope`]: a Sender or Reply-To equal to From is not written twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(into = "StoredEnvelope", from = "StoredEnvelope")]
pub struct Envelope {
    pub date: Option<String>,
    pub subject: Option<String>,
    pub from: Vec<EnvelopeAddress>,
    pub sender: Vec<EnvelopeAddress>,
    pub reply_to: Vec<EnvelopeAddress>,
    pub to: Vec<EnvelopeAddress>,
    pub cc: Vec<EnvelopeAddress>,
    pub bcc: Vec<EnvelopeAddress>,
    pub in_reply_to: Option<String>,
    pub message_id: Option<String>,
}

/// An [`Envelope`] as the message row's jsonb holds it: absent fields and empty lists left out,
/// Sender and Reply-To left out when they equal From (most messages; together about a third of
/// an envelope's bytes). Rows written before this, with every field, read the same: a present
/// `sender` or `reply_to` is taken as it is, even when empty.
#[derive(Serialize, Deserialize)]
struct StoredEnvelope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    date: Option<String>,
    /// Kept under this name: SEARCH's filter reads `envelope ->> 'subject'` in SQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    from: Vec<EnvelopeAddress>,
    /// `None`: the same as `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sender: Option<Vec<EnvelopeAddress>>,
    /// `None`: the same as `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reply_to: Option<Vec<EnvelopeAddress>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    to: Vec<EnvelopeAddress>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    cc: Vec<EnvelopeAddress>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    bcc: Vec<EnvelopeAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    in_reply_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message_id: Option<String>,
}

impl From<Envelope> for StoredEnvelope {
    fn from(e: Envelope) -> StoredEnvelope {
        let unless_from = |list: Vec<EnvelopeAddress>| (list != e.from).then_some(list);
        StoredEnvelope {
            sender: unless_from(e.sender),
            reply_to: unless_from(e.reply_to),
            date: e.date,
            subject: e.subject,
            from: e.from,
            to: e.to,
            cc: e.cc,
            bcc: e.bcc,
            in_reply_to: e.in_reply_to,
            message_id: e.message_id,
        }
    }
}

impl From<StoredEnvelope> for Envelope {
    fn from(s: StoredEnvelope) -> Envelope {
        Envelope {
            sender: s.sender.unwrap_or_else(|| s.from.clone()),
            reply_to: s.reply_to.unwrap_or_else(|| s.from.clone()),
            date: s.date,
            subject: s.subject,
            from: s.from,
            to: s.to,
            cc: s.cc,
            bcc: s.bcc,
            in_reply_to: s.in_reply_to,
            message_id: s.message_id,
        }
    }
}

/// Content-Disposition: value and parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disposition {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<(String, String)>,
}

/// RFC 3501 BODYSTRUCTURE, with the extension data. Stored as jsonb like [`Envelope`], what is
/// absent left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BodyStructure {
    Single {
        /// Lowercase media type and subtype (`text`, `plain`).
        media_type: String,
        media_subtype: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        params: Vec<(String, String)>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        /// Content-Transfer-Encoding, `7BIT` when absent.
        encoding: String,
        /// Octets of the body as stored (still transfer-encoded).
        size: u64,
        /// Lines of the body, for `text/*` and `message/rfc822`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lines: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        md5: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disposition: Option<Disposition>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        language: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        location: Option<String>,
        /// For `message/rfc822`: the enclosed message's envelope and structure.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<Box<(Envelope, BodyStructure)>>,
        /// See [`MIME_MODEL`]; set on the outermost structure only.
        #[serde(default, skip_serializing_if = "is_zero")]
        model: u8,
    },
    Multipart {
        parts: Vec<BodyStructure>,
        media_subtype: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        params: Vec<(String, String)>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disposition: Option<Disposition>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        language: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        location: Option<String>,
        /// See [`MIME_MODEL`]; set on the outermost structure only.
        #[serde(default, skip_serializing_if = "is_zero")]
        model: u8,
    },
}

/// The version of the MIME model ([`MimeTree`]) a stored structure was written by, kept on its
/// outermost part. 0 (absent): written before it, by mail-parser's own walk, whose part numbers
/// can differ from the ones BODY[section] now uses; IMAP recomputes those from the body.
pub const MIME_MODEL: u8 = 1;

fn is_zero(n: &u8) -> bool {
    *n == 0
}

impl BodyStructure {
    /// Whether this stored structure may disagree with the MIME model: one written before it
    /// that has parts (a multipart or an enclosed message). A single leaf reads the same.
    pub fn predates_mime_model(&self) -> bool {
        match self {
            BodyStructure::Multipart { model, .. } => *model < MIME_MODEL,
            BodyStructure::Single {
                model,
                media_type,
                message,
                ..
            } => *model < MIME_MODEL && (message.is_some() || media_type == "multipart" || media_type == "message"),
        }
    }

    fn set_model(&mut self) {
        match self {
            BodyStructure::Multipart { model, .. } | BodyStructure::Single { model, .. } => *model = MIME_MODEL,
        }
    }
}

/// Everything stored per message besides the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub envelope: Envelope,
    pub body_structure: BodyStructure,
    /// The header block, up to and including the blank line.
    pub header: Vec<u8>,
}

/// Parse a whole message. Never fails: a message whose structure cannot be read is stored as
/// one `text/plain` part with an empty envelope, and can still be fetched whole.
pub fn parse(raw: &[u8]) -> Parsed {
    // mail-parser (which reads each header block here) has debug assertions that crafted input
    // might reach; in a debug build they would panic inside the delivering task. Treat that
    // like any unreadable message.
    match std::panic::catch_unwind(|| parse_unguarded(raw)) {
        Ok(parsed) => parsed,
        Err(_) => {
            tracing::warn!("message structure could not be parsed; storing it as plain text");
            let header_len = header_length(raw);
            Parsed {
                envelope: Envelope::default(),
                body_structure: plain_body(raw, header_len),
                header: raw[..header_len].to_vec(),
            }
        }
    }
}

/// An empty `text/plain` part.
fn empty_text_part() -> BodyStructure {
    plain_body(b"", 0)
}

/// A whole body as one `text/plain` part.
fn plain_body(raw: &[u8], header_len: usize) -> BodyStructure {
    BodyStructure::Single {
        media_type: "text".into(),
        media_subtype: "plain".into(),
        params: vec![("charset".into(), "us-ascii".into())],
        id: None,
        description: None,
        encoding: "7BIT".into(),
        size: (raw.len() - header_len) as u64,
        lines: Some(count_lines(&raw[header_len..])),
        md5: None,
        disposition: None,
        language: Vec::new(),
        location: None,
        message: None,
        model: 0,
    }
}

fn parse_unguarded(raw: &[u8]) -> Parsed {
    let tree = MimeTree::parse(raw);
    let root = tree.entity(0);
    let header = raw[root.header.clone()].to_vec();
    Parsed {
        envelope: envelope_of_header(&raw[root.header.clone()]),
        body_structure: body_structure(raw, &tree),
        header,
    }
}

/// The BODYSTRUCTURE of a message (RFC 3501 §7.4.2) from its MIME model.
fn body_structure(raw: &[u8], tree: &MimeTree) -> BodyStructure {
    let mut structure = structure_of(raw, tree, 0);
    structure.set_model();
    structure
}

/// Length of the header block including the empty line that ends it (RFC 5322 §2.1, CRLF or
/// a bare LF); the whole message when there is no body. Where the shared field iterator stops,
/// so a header block and its fields always agree.
pub fn header_length(raw: &[u8]) -> usize {
    let mut fields = crate::header::fields(raw);
    fields.by_ref().for_each(drop);
    fields.consumed()
}

fn count_lines(body: &[u8]) -> u64 {
    body.iter().filter(|&&b| b == b'\n').count() as u64
}

/// Bytes `start..end` of a message. mail-parser's offsets count from the start of the outermost
/// message, while a nested message's `raw_message` starts at its own first header.
fn slice<'m>(message: &'m Message<'_>, start: u32, end: u32) -> Option<&'m [u8]> {
    let base = message.parts.first().map_or(0, |p| p.offset_header) as usize;
    let (start, end) = ((start as usize).checked_sub(base)?, (end as usize).checked_sub(base)?);
    message.raw_message().get(start..end)
}

/// A header's raw value, unfolded and trimmed.
fn raw_value(message: &Message<'_>, part: &MessagePart<'_>, name: HeaderName<'_>) -> Option<String> {
    let header = part.headers.iter().rev().find(|h| h.name == name)?;
    let bytes = slice(message, header.offset_start, header.offset_end)?;
    let unfolded = crate::header::unfold(bytes);
    let trimmed = unfolded.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_string())
}

fn addresses(value: Option<&HeaderValue<'_>>) -> Vec<EnvelopeAddress> {
    let mut out = Vec::new();
    let one = |name: Option<&str>, address: Option<&str>| {
        let (mailbox, host) = match address.and_then(|a| a.rsplit_once('@')) {
            Some((local, domain)) => (Some(local.to_string()), Some(domain.to_string())),
            None => (address.map(str::to_string), None),
        };
        // RFC 5322 §4.4 obs-route `<@a,@b:user@host>`: mail-parser leaves the route in front of
        // the local part; RFC 3501 §7.4.2 puts it in the address structure's second field
        // (at-domain-list) and the bare local part in the third.
        let (adl, mailbox) = match mailbox {
            Some(local) if local.starts_with('@') => match local.split_once(':') {
                Some((route, local)) => (Some(route.trim().to_string()), Some(local.to_string())),
                None => (None, Some(local)),
            },
            other => (None, other),
        };
        EnvelopeAddress {
            name: name.map(str::to_string),
            adl,
            mailbox,
            host,
        }
    };
    match value.and_then(|v| v.as_address()) {
        Some(Address::List(list)) => {
            for addr in list {
                if addr.address.is_some() {
                    out.push(one(addr.name.as_deref(), addr.address.as_deref()));
                }
            }
        }
        Some(Address::Group(groups)) => {
            for group in groups {
                if let Some(name) = &group.name {
                    out.push(EnvelopeAddress {
                        mailbox: Some(name.to_string()),
                        ..Default::default()
                    });
                }
                for addr in &group.addresses {
                    if addr.address.is_some() {
                        out.push(one(addr.name.as_deref(), addr.address.as_deref()));
                    }
                }
                if group.name.is_some() {
                    out.push(EnvelopeAddress::default());
                }
            }
        }
        None => {}
    }
    out
}

/// One piece of an address field, for [`without_addr_spec_comments`].
enum Piece {
    Char(char, bool),
    Space,
    Comment(String),
}

/// An address field with the comments that sit inside an address removed (RFC 5322 §3.2.2 CFWS
/// inside `<...>`, next to `@` — obs forms of §4.4 — or after `>`), and the blanks around `@`
/// dropped, so `<user (c)@ (c) host>` reads as `<user@host>` rather than a display name made of
/// comments. A trailing comment after a bare address (`jdoe@x.test (John Doe)`) is kept: mail
/// parsers take it as the display name. None when there is nothing to remove.
pub fn without_addr_spec_comments(value: &str) -> Option<String> {
    // Past this, mail-parser's reading stands: the pieces cost ~16 bytes a character.
    const MAX: usize = 64 * 1024;
    if value.len() > MAX || !value.contains('(') {
        return None;
    }
    let mut pieces = Vec::new();
    let (mut depth, mut quoted, mut escaped) = (0usize, false, false);
    let mut comment = String::new();
    for c in value.chars() {
        if depth > 0 {
            comment.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '(' {
                depth += 1;
            } else if c == ')' {
                depth -= 1;
                if depth == 0 {
                    pieces.push(Piece::Comment(std::mem::take(&mut comment)));
                }
            }
            continue;
        }
        if escaped {
            escaped = false;
            pieces.push(Piece::Char(c, true));
            continue;
        }
        match c {
            '\\' => {
                escaped = true;
                pieces.push(Piece::Char(c, true));
            }
            '"' => {
                quoted = !quoted;
                pieces.push(Piece::Char(c, true));
            }
            '(' if !quoted => {
                depth = 1;
                comment.push(c);
            }
            c if c.is_whitespace() && !quoted => pieces.push(Piece::Space),
            c => pieces.push(Piece::Char(c, quoted)),
        }
    }
    if depth > 0 {
        // An unclosed comment: leave the field as it is to the parser.
        return None;
    }
    // The significant character (not blank, not a comment; any quoted one counts as '"') before
    // and after each piece, computed in two linear passes.
    let significant = |p: &Piece| match p {
        Piece::Char(c, false) => Some(*c),
        Piece::Char(_, true) => Some('"'),
        _ => None,
    };
    let mut before = Vec::with_capacity(pieces.len());
    let mut last = None;
    for p in &pieces {
        before.push(last);
        last = significant(p).or(last);
    }
    let mut after = vec![None; pieces.len()];
    let mut next = None;
    for (i, p) in pieces.iter().enumerate().rev() {
        after[i] = next;
        next = significant(p).or(next);
    }
    let mut out = String::with_capacity(value.len());
    let mut angle = false;
    let mut removed = false;
    for (i, piece) in pieces.iter().enumerate() {
        match piece {
            Piece::Char(c, quoted) => {
                if !quoted {
                    match c {
                        '<' => angle = true,
                        '>' => angle = false,
                        '@' => {
                            let trimmed = out.trim_end().len();
                            out.truncate(trimmed);
                        }
                        _ => {}
                    }
                }
                out.push(*c);
            }
            Piece::Space => {
                if !out.ends_with('@') && !out.ends_with(' ') {
                    out.push(' ');
                }
            }
            Piece::Comment(text) => {
                if angle || matches!(before[i], Some('@' | '>')) || after[i] == Some('@') {
                    removed = true;
                    if !out.ends_with('@') && !out.ends_with(' ') {
                        out.push(' ');
                    }
                } else {
                    out.push_str(text);
                }
            }
        }
    }
    removed.then(|| out.trim().to_string())
}

/// An address field: mail-parser's reading, or, when comments sit inside an address, the reading
/// of the field without them.
fn address_field(message: &Message<'_>, name: HeaderName<'static>) -> Vec<EnvelopeAddress> {
    let root = &message.parts[0];
    if let Some(clean) = raw_value(message, root, name.clone()).and_then(|v| without_addr_spec_comments(&v)) {
        let raw = format!("To: {clean}\r\n\r\n");
        if let Some(reparsed) = MessageParser::default().parse(raw.as_bytes()) {
            return addresses(
                reparsed.parts[0]
                    .headers
                    .iter()
                    .find(|h| h.name == HeaderName::To)
                    .map(|h| &h.value),
            );
        }
    }
    addresses(root.headers.iter().rev().find(|h| h.name == name).map(|h| &h.value))
}

/// The addresses of one address field's (unfolded) value, as ENVELOPE lists them; SEARCH FROM,
/// TO, CC and BCC match against these (RFC 3501 §6.4.4: "the envelope structure's FROM field").
pub fn address_list(value: &str) -> Vec<EnvelopeAddress> {
    let clean = without_addr_spec_comments(value);
    let raw = format!("To: {}\r\n\r\n", clean.as_deref().unwrap_or(value));
    match MessageParser::default().parse(raw.as_bytes()) {
        Some(parsed) => addresses(
            parsed.parts[0]
                .headers
                .iter()
                .find(|h| h.name == HeaderName::To)
                .map(|h| &h.value),
        ),
        None => Vec::new(),
    }
}

fn envelope_of(message: &Message<'_>) -> Envelope {
    let root = &message.parts[0];
    let from = address_field(message, HeaderName::From);
    let sender = address_field(message, HeaderName::Sender);
    let reply_to = address_field(message, HeaderName::ReplyTo);
    Envelope {
        date: raw_value(message, root, HeaderName::Date),
        subject: raw_value(message, root, HeaderName::Subject),
        sender: if sender.is_empty() { from.clone() } else { sender },
        reply_to: if reply_to.is_empty() { from.clone() } else { reply_to },
        from,
        to: address_field(message, HeaderName::To),
        cc: address_field(message, HeaderName::Cc),
        bcc: address_field(message, HeaderName::Bcc),
        in_reply_to: raw_value(message, root, HeaderName::InReplyTo),
        message_id: raw_value(message, root, HeaderName::MessageId),
    }
}

fn params_of(attributes: Option<&[mail_parser::Attribute<'_>]>) -> Vec<(String, String)> {
    attributes
        .unwrap_or_default()
        .iter()
        .map(|a| (a.name.to_ascii_lowercase(), a.value.to_string()))
        .collect()
}

fn language_of(value: &HeaderValue<'_>) -> Vec<String> {
    match value {
        HeaderValue::Text(t) => t
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        HeaderValue::TextList(list) => list.iter().map(|s| s.to_string()).collect(),
        _ => Vec::new(),
    }
}

/// Levels of multipart and message/rfc822 nesting the MIME model reads; a deeper multipart has
/// no parts and a deeper message no content. Bounds every recursive walk over the model and over
/// a stored BODYSTRUCTURE.
pub const MAX_STRUCTURE_DEPTH: usize = 20;

/// Body parts and enclosed messages the model reads in one message (Dovecot's default limit):
/// past it, the rest of a multipart stays in the body of its last part read. Bounds the stored BODYSTRUCTURE and
/// the time to build it.
pub const MAX_PARTS: usize = 10_000;

/// What an entity contains besides its own bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nested {
    /// A leaf (a discrete media type, RFC 2046 §3).
    None,
    /// A multipart's body parts, in order (indexes into [`MimeTree`]); empty when the boundary
    /// is missing or no delimiter line was found.
    Parts(Vec<usize>),
    /// A message/rfc822 (or message/global) entity's enclosed message (RFC 2046 §5.2.1).
    Message(usize),
}

/// One MIME entity (RFC 2045 §2.4) by its byte ranges in the raw message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity {
    /// The header block, with the empty line that ends it (empty for a part that has none).
    pub header: std::ops::Range<usize>,
    /// The body, still transfer-encoded; for a body part without the line break before the next
    /// delimiter (RFC 2046 §5.1.1: it belongs to the delimiter).
    pub body: std::ops::Range<usize>,
    /// Lower-case media type and subtype, with RFC 2045 §5.2's default (and RFC 2046 §5.1.5's
    /// message/rfc822 inside a multipart/digest) when Content-Type is absent or unreadable.
    pub media_type: String,
    pub media_subtype: String,
    pub nested: Nested,
}

/// The one MIME model of a message: every entity with its byte ranges, read once with the same
/// rules for BODYSTRUCTURE (at delivery), BODY[section] (RFC 3501 §6.4.5) and SEARCH BODY/TEXT,
/// so their part numbers always agree. Built without recursion, in time linear in the message
/// size for each nesting level (at most [`MAX_STRUCTURE_DEPTH`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MimeTree {
    /// Entity 0 is the message itself.
    entities: Vec<Entity>,
}

impl MimeTree {
    pub fn parse(raw: &[u8]) -> MimeTree {
        let root_header = header_length(raw);
        let (media_type, media_subtype, boundary) = read_content_type(&raw[..root_header], false);
        let mut tree = MimeTree {
            entities: vec![Entity {
                header: 0..root_header,
                body: root_header..raw.len(),
                media_type,
                media_subtype,
                nested: Nested::None,
            }],
        };
        // The entity each one is part of or enclosed by, for `extend_closed`.
        let mut parents = vec![0usize];
        // (entity, its boundary if a multipart, nesting depth)
        let mut pending = vec![(0usize, boundary, 0usize)];
        while let Some((index, boundary, depth)) = pending.pop() {
            let entity = &tree.entities[index];
            let body = entity.body.clone();
            match (entity.media_type.as_str(), entity.media_subtype.as_str()) {
                ("multipart", subtype) => {
                    let digest = subtype == "digest";
                    let mut kids = Vec::new();
                    if let Some(boundary) = boundary.filter(|_| depth < MAX_STRUCTURE_DEPTH) {
                        // Entity 0, the message itself, does not count.
                        let budget = (MAX_PARTS + 1).saturating_sub(tree.entities.len());
                        let (parts, closed_at_end) = body_parts(&raw[body.clone()], &boundary, budget);
                        for part in parts {
                            let start = body.start + part.start;
                            let end = body.start + part.end;
                            let header_end = start + header_length(&raw[start..end]);
                            let (media_type, media_subtype, boundary) =
                                read_content_type(&raw[start..header_end], digest);
                            kids.push(tree.entities.len());
                            parents.push(index);
                            pending.push((tree.entities.len(), boundary, depth + 1));
                            tree.entities.push(Entity {
                                header: start..header_end,
                                body: header_end..end,
                                media_type,
                                media_subtype,
                                nested: Nested::None,
                            });
                        }
                        if closed_at_end {
                            tree.extend_closed(raw, index, &parents);
                        }
                    }
                    tree.entities[index].nested = Nested::Parts(kids);
                }
                ("message", "rfc822" | "global") => {
                    // RFC 2046 §5.2.1 allows no transfer encoding but 7bit, 8bit and binary: an
                    // encoded one (like one too deep or past the part limit) encloses an empty
                    // message, so BODYSTRUCTURE still has the envelope and body the grammar
                    // requires (as Dovecot answers).
                    let readable = depth < MAX_STRUCTURE_DEPTH
                        && tree.entities.len() <= MAX_PARTS
                        && !is_encoded(&raw[entity.header.clone()]);
                    let (header, inner_body) = if readable {
                        let header_end = body.start + header_length(&raw[body.clone()]);
                        (body.start..header_end, header_end..body.end)
                    } else {
                        (body.end..body.end, body.end..body.end)
                    };
                    let (media_type, media_subtype, boundary) = read_content_type(&raw[header.clone()], false);
                    let inner = tree.entities.len();
                    parents.push(index);
                    tree.entities[index].nested = Nested::Message(inner);
                    tree.entities.push(Entity {
                        header,
                        body: inner_body,
                        media_type,
                        media_subtype,
                        nested: Nested::None,
                    });
                    if readable {
                        pending.push((inner, boundary, depth + 1));
                    }
                }
                _ => {}
            }
        }
        tree
    }

    /// A multipart whose close delimiter line ends its body lost that line's break to the
    /// enclosing delimiter (RFC 2046 §5.1.1 gives it to either: the close delimiter's line end
    /// or the next delimiter's leading CRLF). Dovecot, and so the clients and conformance suites
    /// written against it, count it in the inner multipart and in the parts around it that end
    /// there (a forwarded multipart message ends with `--inner--` and its line break): give it
    /// back to them.
    fn extend_closed(&mut self, raw: &[u8], index: usize, parents: &[usize]) {
        let end = self.entities[index].body.end;
        let line_break = match raw.get(end..end + 2) {
            Some(b"\r\n") => 2,
            _ if raw.get(end) == Some(&b'\n') => 1,
            _ => return,
        };
        let mut current = index;
        while current != 0 && self.entities[current].body.end == end {
            self.entities[current].body.end = end + line_break;
            current = parents[current];
        }
    }

    pub fn entity(&self, index: usize) -> &Entity {
        &self.entities[index]
    }

    /// The entity a section part number names (RFC 3501 §6.4.5), as Dovecot reads them: at each
    /// level a multipart's Nth part, and a non-multipart entity's only part is 1 (itself); a
    /// message/rfc822 entity followed by more numbers stands for the message it encloses.
    pub fn find(&self, part: &[u32]) -> Option<usize> {
        let mut current = 0;
        for (i, &number) in part.iter().enumerate() {
            current = match &self.entities[current].nested {
                Nested::Parts(kids) => *kids.get((number as usize).checked_sub(1)?)?,
                _ if number == 1 => current,
                _ => return None,
            };
            if i + 1 < part.len()
                && let Nested::Message(inner) = self.entities[current].nested
            {
                current = inner;
            }
        }
        Some(current)
    }

    /// The message whose HEADER and TEXT the section `part` names: the message itself for an
    /// empty part, the enclosed message of a message/rfc822 part, None for any other part.
    pub fn message_of(&self, part: &[u32]) -> Option<usize> {
        if part.is_empty() {
            return Some(0);
        }
        match self.entities[self.find(part)?].nested {
            Nested::Message(inner) => Some(inner),
            _ => None,
        }
    }

    /// The leaves (discrete media types) in part order.
    pub fn leaves(&self) -> impl Iterator<Item = &Entity> {
        let mut stack = vec![0usize];
        std::iter::from_fn(move || {
            while let Some(index) = stack.pop() {
                let entity = &self.entities[index];
                match &entity.nested {
                    Nested::None => return Some(entity),
                    Nested::Parts(kids) => stack.extend(kids.iter().rev()),
                    Nested::Message(inner) => stack.push(*inner),
                }
            }
            None
        })
    }
}

/// Whether a Content-Transfer-Encoding other than the identity ones is declared.
fn is_encoded(header: &[u8]) -> bool {
    crate::header::fields(header)
        .filter(|f| f.is("Content-Transfer-Encoding"))
        .filter_map(|f| f.unfolded())
        .last()
        .is_some_and(|e| !matches!(e.trim().to_ascii_lowercase().as_str(), "7bit" | "8bit" | "binary" | ""))
}

/// An entity's header block as mail-parser reads it (None for an empty one).
fn read_header(header: &[u8]) -> Option<Message<'_>> {
    MessageParser::default()
        .parse_headers(header)
        .filter(|m| !m.parts.is_empty())
}

/// Media type, subtype and boundary from a header block. RFC 2045 §5.2: text/plain when
/// Content-Type is absent or unreadable; RFC 2046 §5.1.5: message/rfc822 inside a digest.
fn read_content_type(header: &[u8], in_digest: bool) -> (String, String, Option<String>) {
    let default = || {
        if in_digest {
            ("message".to_string(), "rfc822".to_string(), None)
        } else {
            ("text".to_string(), "plain".to_string(), None)
        }
    };
    let Some(message) = read_header(header) else {
        return default();
    };
    let Some(content_type) = message.parts[0].content_type() else {
        return default();
    };
    let Some(subtype) = content_type.subtype() else {
        return default();
    };
    let boundary = content_type
        .attribute("boundary")
        .filter(|b| !b.is_empty())
        .map(str::to_string);
    (
        content_type.ctype().to_ascii_lowercase(),
        subtype.to_ascii_lowercase(),
        boundary,
    )
}

/// The body parts of a multipart body, as ranges of `body`, split at its delimiter lines
/// (RFC 2046 §5.1.1: `--boundary`, optional blanks, line end; `--boundary--` closes). The line
/// break before a delimiter belongs to it. Without a close delimiter the last part runs to the
/// end. At most `budget` parts: past it, the last one keeps the rest.
/// Also whether the close delimiter is the body's last line, without its line break.
fn body_parts(body: &[u8], boundary: &str, budget: usize) -> (Vec<std::ops::Range<usize>>, bool) {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    // (line start, content start) of each delimiter line.
    let mut starts: Vec<(usize, usize)> = Vec::new();
    let mut close = None;
    let mut closed_at_end = false;
    let mut i = 0;
    while i < body.len() {
        let line_end = body[i..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |p| i + p + 1);
        if let Some(rest) = body[i..line_end].strip_prefix(delimiter) {
            if rest.starts_with(b"--") {
                close = Some(i);
                closed_at_end = line_end == body.len() && !body.ends_with(b"\n");
                break;
            }
            if rest.trim_ascii().is_empty() && starts.len() < budget {
                starts.push((i, line_end));
            }
        }
        i = line_end;
    }
    let mut parts = Vec::with_capacity(starts.len());
    for (k, &(_, content)) in starts.iter().enumerate() {
        let next = starts.get(k + 1).map(|s| s.0).or(close);
        let mut end = next.unwrap_or(body.len());
        if next.is_some() {
            if body[..end].ends_with(b"\r\n") {
                end -= 2;
            } else if body[..end].ends_with(b"\n") {
                end -= 1;
            }
        }
        parts.push(content..end.max(content));
    }
    (parts, closed_at_end)
}

/// The envelope of a message from its header block.
fn envelope_of_header(header: &[u8]) -> Envelope {
    read_header(header).map(|m| envelope_of(&m)).unwrap_or_default()
}

/// The BODYSTRUCTURE of entity `index` of `tree` (RFC 3501 §7.4.2). Recursion is bounded by
/// the tree's depth (at most MAX_STRUCTURE_DEPTH levels).
fn structure_of(raw: &[u8], tree: &MimeTree, index: usize) -> BodyStructure {
    let entity = tree.entity(index);
    let header = read_header(&raw[entity.header.clone()]);
    let part = header.as_ref().map(|m| &m.parts[0]);
    let content_type = part.and_then(|p| p.content_type());
    let disposition = part.and_then(|p| p.content_disposition()).map(|d| Disposition {
        kind: d.ctype().to_ascii_lowercase(),
        params: params_of(d.attributes()),
    });
    let language = part.map(|p| language_of(p.content_language())).unwrap_or_default();
    let location = part.and_then(|p| p.content_location()).map(str::to_string);
    // Parameters only from a Content-Type that was read (not a defaulted one).
    let mut params = if content_type.is_some_and(|c| c.subtype().is_some()) {
        params_of(content_type.and_then(|c| c.attributes()))
    } else {
        Vec::new()
    };
    match &entity.nested {
        // RFC 3501 §7.4.2 needs at least one part: a multipart without any shows one empty text
        // part, as Dovecot does (BODY[1] of it is empty too: there is no such entity).
        Nested::Parts(kids) if kids.is_empty() => BodyStructure::Multipart {
            parts: vec![empty_text_part()],
            media_subtype: entity.media_subtype.clone(),
            params,
            disposition,
            language,
            location,
            model: 0,
        },
        Nested::Parts(kids) => BodyStructure::Multipart {
            parts: kids.iter().map(|&kid| structure_of(raw, tree, kid)).collect(),
            media_subtype: entity.media_subtype.clone(),
            params,
            disposition,
            language,
            location,
            model: 0,
        },
        nested => {
            let body = &raw[entity.body.clone()];
            if entity.media_type == "text" && !params.iter().any(|(k, _)| k == "charset") {
                params.push(("charset".into(), "us-ascii".into()));
            }
            let message = match nested {
                Nested::Message(inner) => Some(Box::new((
                    envelope_of_header(&raw[tree.entity(*inner).header.clone()]),
                    structure_of(raw, tree, *inner),
                ))),
                _ => None,
            };
            let lines = (entity.media_type == "text" || message.is_some()).then(|| count_lines(body));
            BodyStructure::Single {
                media_type: entity.media_type.clone(),
                media_subtype: entity.media_subtype.clone(),
                params,
                id: part.and_then(|p| p.content_id()).map(|id| format!("<{id}>")),
                description: part.and_then(|p| p.content_description()).map(str::to_string),
                encoding: part
                    .and_then(|p| p.content_transfer_encoding())
                    .map(|e| e.to_ascii_uppercase())
                    .unwrap_or_else(|| "7BIT".into()),
                size: body.len() as u64,
                lines,
                md5: None,
                disposition,
                language,
                location,
                message,
                model: 0,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simple_message() {
        let raw = b"From: Alice <alice@example.test>\r\nTo: bob@example.test, \"Carol C\" <carol@example.test>\r\n\
Subject: =?utf-8?q?caf=C3=A9?=\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m1@example.test>\r\n\r\nHello\r\nWorld\r\n";
        let parsed = parse(raw);
        assert!(parsed.header.ends_with(b"\r\n\r\n"));
        let env = &parsed.envelope;
        assert_eq!(env.subject.as_deref(), Some("=?utf-8?q?caf=C3=A9?="));
        assert_eq!(env.message_id.as_deref(), Some("<m1@example.test>"));
        assert_eq!(env.from[0].name.as_deref(), Some("Alice"));
        assert_eq!(env.from[0].mailbox.as_deref(), Some("alice"));
        assert_eq!(env.from[0].host.as_deref(), Some("example.test"));
        assert_eq!(env.sender, env.from);
        assert_eq!(env.to.len(), 2);
        match &parsed.body_structure {
            BodyStructure::Single {
                media_type,
                size,
                lines,
                params,
                ..
            } => {
                assert_eq!(media_type, "text");
                assert_eq!(*size, 14);
                assert_eq!(*lines, Some(2));
                assert!(params.contains(&("charset".into(), "us-ascii".into())));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_multipart_with_an_attached_message() {
        let raw = b"From: a@x.test\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhi\r\n\
--b1\r\nContent-Type: message/rfc822\r\n\r\nFrom: inner@x.test\r\nSubject: inner\r\n\r\nbody\r\n\
--b1--\r\n";
        let parsed = parse(raw);
        let BodyStructure::Multipart {
            parts, media_subtype, ..
        } = &parsed.body_structure
        else {
            panic!("{:?}", parsed.body_structure)
        };
        assert_eq!(media_subtype, "mixed");
        assert_eq!(parts.len(), 2);
        let BodyStructure::Single {
            message: Some(inner), ..
        } = &parts[1]
        else {
            panic!("{:?}", parts[1])
        };
        assert_eq!(inner.0.subject.as_deref(), Some("inner"));
    }

    #[test]
    fn garbage_is_still_stored() {
        let parsed = parse(b"\x00\x01 not a message");
        assert!(matches!(parsed.body_structure, BodyStructure::Single { .. }));
        assert_eq!(header_length(b"no header end"), 13);
        assert_eq!(header_length(b"A: b\r\n c\r\n\r\nbody\r\n\r\n"), 12);
        assert_eq!(header_length(b"A: b\n\nbody"), 6);
        // An empty header: the first line is the empty one, whatever blank lines the body has.
        assert_eq!(header_length(b"\r\nbody\r\n\r\nmore"), 2);
        assert_eq!(header_length(b"\nbody\n\nmore"), 1);
    }
}

#[cfg(test)]
mod depth_tests {
    use super::*;

    fn nested_multipart(depth: usize) -> Vec<u8> {
        let mut m = String::from("Content-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n");
        for i in 0..depth {
            m.push_str(&format!(
                "--b{i}\r\nContent-Type: multipart/mixed; boundary=\"b{}\"\r\n\r\n",
                i + 1
            ));
        }
        m.push_str(&format!(
            "--b{depth}\r\nContent-Type: text/plain\r\n\r\nbottom\r\n--b{depth}--\r\n"
        ));
        for i in (0..depth).rev() {
            m.push_str(&format!("--b{i}--\r\n"));
        }
        m.into_bytes()
    }

    fn nested_messages(depth: usize) -> Vec<u8> {
        let mut m = String::new();
        for _ in 0..depth {
            m.push_str("From: a@example.test\r\nContent-Type: message/rfc822\r\n\r\n");
        }
        m.push_str("Subject: bottom\r\n\r\nbottom\r\n");
        m.into_bytes()
    }

    /// On a thread with the stack tokio gives its threads (2 MiB).
    fn on_small_stack(f: impl FnOnce() + Send + 'static) {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn ten_thousand_nested_multiparts() {
        on_small_stack(|| {
            let p = parse(&nested_multipart(10_000));
            let json = serde_json::to_value(&p.body_structure).unwrap();
            let _: BodyStructure = serde_json::from_value(json).unwrap();
        });
    }

    #[test]
    fn a_hundred_thousand_nested_messages() {
        on_small_stack(|| {
            let p = parse(&nested_messages(100_000));
            let json = serde_json::to_value(&p.body_structure).unwrap();
            let _: BodyStructure = serde_json::from_value(json).unwrap();
        });
    }
}

#[cfg(test)]
mod address_tests {
    use super::*;

    /// RFC 3501 §7.4.2: the address structure's second field is the at-domain-list (source
    /// route); RFC 5322 §4.4 obs-route `<@route:user@domain>`.
    #[test]
    fn a_source_route_goes_to_the_adl_field() {
        let p = parse(b"From: <@route:user@domain>\r\nTo: Bob <@a.test,@b.test:bob@c.test>, plain@d.test\r\n\r\nx\r\n");
        let a = &p.envelope.from[0];
        assert_eq!(
            (
                a.name.as_deref(),
                a.adl.as_deref(),
                a.mailbox.as_deref(),
                a.host.as_deref()
            ),
            (None, Some("@route"), Some("user"), Some("domain"))
        );
        let b = &p.envelope.to[0];
        assert_eq!(
            (
                b.name.as_deref(),
                b.adl.as_deref(),
                b.mailbox.as_deref(),
                b.host.as_deref()
            ),
            (Some("Bob"), Some("@a.test,@b.test"), Some("bob"), Some("c.test"))
        );
        assert_eq!(p.envelope.to[1].adl, None);
        assert_eq!(p.envelope.to[1].mailbox.as_deref(), Some("plain"));
        // A quoted local part that merely looks like a route is not one.
        let p = parse(b"From: <\"@foo:bar\"@x.test>\r\n\r\nx\r\n");
        assert_eq!(p.envelope.from[0].adl, None);
        assert_eq!(p.envelope.from[0].mailbox.as_deref(), Some("\"@foo:bar\""));
    }

    /// Envelopes stored before the adl field was filled still read back.
    #[test]
    fn an_old_stored_envelope_still_reads() {
        let old = r#"{"date":null,"subject":"s","from":[{"name":null,"mailbox":"a","host":"b"}],
            "sender":[],"reply_to":[],"to":[],"cc":[],"bcc":[],"in_reply_to":null,"message_id":null}"#;
        let e: Envelope = serde_json::from_str(old).unwrap();
        assert_eq!(e.from[0].adl, None);
        assert_eq!(e.from[0].mailbox.as_deref(), Some("a"));
    }

    /// The stored form leaves out what is absent and a Sender or Reply-To equal to From, and
    /// reads back equal; one written with every field (before issue #12's narrower rows) reads
    /// the same as the narrow one.
    #[test]
    fn the_stored_parse_leaves_out_what_is_absent_and_reads_back_equal() {
        let raw = b"From: Ann <ann@a.test>\r\nTo: bob@b.test\r\nSubject: hi\r\n\r\nbody\r\n";
        let p = parse(raw);
        assert_eq!(p.envelope.sender, p.envelope.from);
        assert_eq!(p.envelope.reply_to, p.envelope.from);
        let envelope = serde_json::to_value(&p.envelope).unwrap();
        assert_eq!(
            envelope,
            serde_json::json!({
                "subject": "hi",
                "from": [{"name": "Ann", "mailbox": "ann", "host": "a.test"}],
                "to": [{"mailbox": "bob", "host": "b.test"}],
            })
        );
        assert_eq!(serde_json::from_value::<Envelope>(envelope).unwrap(), p.envelope);
        let wide = r#"{"date":null,"subject":"hi",
            "from":[{"name":"Ann","adl":null,"mailbox":"ann","host":"a.test"}],
            "sender":[{"name":"Ann","adl":null,"mailbox":"ann","host":"a.test"}],
            "reply_to":[{"name":"Ann","adl":null,"mailbox":"ann","host":"a.test"}],
            "to":[{"name":null,"adl":null,"mailbox":"bob","host":"b.test"}],
            "cc":[],"bcc":[],"in_reply_to":null,"message_id":null}"#;
        assert_eq!(serde_json::from_str::<Envelope>(wide).unwrap(), p.envelope);

        let structure = serde_json::to_value(&p.body_structure).unwrap();
        assert_eq!(
            structure,
            serde_json::json!({
                "kind": "single", "media_type": "text", "media_subtype": "plain",
                "params": [["charset", "us-ascii"]], "encoding": "7BIT", "size": 6, "lines": 1,
                "model": MIME_MODEL,
            })
        );
        assert_eq!(
            serde_json::from_value::<BodyStructure>(structure).unwrap(),
            p.body_structure
        );
        let wide = r#"{"kind":"single","media_type":"text","media_subtype":"plain",
            "params":[["charset","us-ascii"]],"id":null,"description":null,"encoding":"7BIT",
            "size":6,"lines":1,"md5":null,"disposition":null,"language":[],"location":null,
            "message":null,"model":1}"#;
        assert_eq!(serde_json::from_str::<BodyStructure>(wide).unwrap(), p.body_structure);

        // A Sender or Reply-To that differs from From is kept, an empty one too.
        let p = parse(b"From: ann@a.test\r\nSender: sec@a.test\r\nReply-To: list@l.test\r\n\r\nx\r\n");
        let back: Envelope = serde_json::from_value(serde_json::to_value(&p.envelope).unwrap()).unwrap();
        assert_eq!(back, p.envelope);
        assert_eq!(back.sender[0].mailbox.as_deref(), Some("sec"));
        assert_eq!(back.reply_to[0].mailbox.as_deref(), Some("list"));
        let odd = Envelope {
            from: p.envelope.from.clone(),
            ..Envelope::default()
        };
        let back: Envelope = serde_json::from_value(serde_json::to_value(&odd).unwrap()).unwrap();
        assert_eq!(back, odd);
        assert!(back.sender.is_empty() && back.reply_to.is_empty());
    }
}

#[cfg(test)]
mod comment_tests {
    use super::*;

    fn one(a: &EnvelopeAddress) -> (Option<&str>, Option<&str>, Option<&str>) {
        (a.name.as_deref(), a.mailbox.as_deref(), a.host.as_deref())
    }

    /// Comments inside an address are not its display name (RFC 5322 §3.2.2, §4.4), as
    /// Dovecot answers: `<user-from (comment)@ (comment) domain.org>` is (NIL NIL "user-from"
    /// "domain.org").
    #[test]
    fn comments_inside_an_address_are_dropped() {
        let p = parse(
            b"From: <user-from (comment)@ (comment) domain.org>\r\n\
To: \"Real To\" <user-to@domain.org> (a comment)\r\n\
Cc: user-cc (c) @ (d) domain.org, other@x.test\r\n\
Bcc: jdoe@x.test (John Doe), \"Q (not a comment)\" <q@x.test>\r\n\r\nbody\r\n",
        );
        let e = &p.envelope;
        assert_eq!(one(&e.from[0]), (None, Some("user-from"), Some("domain.org")));
        assert_eq!(one(&e.to[0]), (Some("Real To"), Some("user-to"), Some("domain.org")));
        assert_eq!(one(&e.cc[0]), (None, Some("user-cc"), Some("domain.org")));
        assert_eq!(one(&e.cc[1]), (None, Some("other"), Some("x.test")));
        assert_eq!(one(&e.bcc[0]), (Some("John Doe"), Some("jdoe"), Some("x.test")));
        assert_eq!(one(&e.bcc[1]), (Some("Q (not a comment)"), Some("q"), Some("x.test")));
    }

    #[test]
    fn odd_fields_do_not_break_the_cleaner() {
        assert_eq!(without_addr_spec_comments("a@b.c"), None);
        assert_eq!(without_addr_spec_comments("(unclosed a@b.c"), None);
        assert_eq!(without_addr_spec_comments("a@b.c (x"), None);
        assert_eq!(without_addr_spec_comments("x (y) z"), None);
        assert_eq!(without_addr_spec_comments("((((a)))) @ b"), Some("@b".to_string()));
        assert_eq!(
            without_addr_spec_comments("<a\\(b (c)@d>").as_deref(),
            Some("<a\\(b@d>")
        );
        let deep = format!("{}x{}@y", "(".repeat(10_000), ")".repeat(10_000));
        assert_eq!(without_addr_spec_comments(&deep).as_deref(), Some("@y"));
        // Many comments stay linear; a huge field is left to the parser.
        let many = format!("<a{}@b>", " ()".repeat(20_000));
        assert_eq!(without_addr_spec_comments(&many).as_deref(), Some("<a@b>"));
        assert_eq!(without_addr_spec_comments(&"() ".repeat(30_000)), None);
    }
}

#[cfg(test)]
mod model_tests {
    use super::*;

    fn text(raw: &[u8], tree: &MimeTree, part: &[u32]) -> Option<String> {
        let e = tree.entity(tree.find(part)?);
        Some(String::from_utf8_lossy(&raw[e.body.clone()]).into_owned())
    }

    /// RFC 2046 §5.1.1: a delimiter is `--boundary` at a line start with only blanks after it;
    /// a longer line that starts with it is content.
    #[test]
    fn delimiter_lines() {
        let raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\npre --b\r\n--bx\r\n--b \t\r\n\r\none\r\n--b\r\n\r\ntwo\r\n--b--\r\nepilogue\r\n";
        let tree = MimeTree::parse(raw);
        assert_eq!(text(raw, &tree, &[1]).as_deref(), Some("one"));
        assert_eq!(text(raw, &tree, &[2]).as_deref(), Some("two"));
        assert_eq!(tree.find(&[3]), None);
        assert_eq!(tree.find(&[0]), None);
        assert_eq!(tree.leaves().count(), 2);
    }

    /// The line break after a nested close delimiter stays with the nested multipart and the
    /// parts that end with it (as Dovecot counts); before a plain part's next delimiter it
    /// belongs to the delimiter.
    #[test]
    fn the_line_break_after_a_nested_close_delimiter() {
        let raw = b"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: message/rfc822\r\n\r\n\
Content-Type: multipart/mixed; boundary=i\r\n\r\n--i\r\n\r\nx\r\n--i--\r\n--o\r\n\r\ny\r\n--o--\r\n";
        let tree = MimeTree::parse(raw);
        assert!(text(raw, &tree, &[1]).unwrap().ends_with("--i--\r\n"));
        // [1.TEXT]: the enclosed message's body.
        let enclosed = tree.entity(tree.message_of(&[1]).unwrap());
        assert_eq!(&raw[enclosed.body.clone()], b"--i\r\n\r\nx\r\n--i--\r\n");
        // [1.1] is the first part of the enclosed message's multipart.
        assert_eq!(text(raw, &tree, &[1, 1]).as_deref(), Some("x"));
        assert_eq!(text(raw, &tree, &[1, 1, 1]).as_deref(), Some("x"));
        assert_eq!(text(raw, &tree, &[2]).as_deref(), Some("y"));
        let parsed = parse(raw);
        let json = serde_json::to_value(&parsed.body_structure).unwrap();
        assert_eq!(json["model"], MIME_MODEL);
        assert!(json["parts"][0].get("model").is_none());
    }

    /// Past MAX_PARTS the last part read keeps the rest; building stays linear.
    #[test]
    fn many_parts_are_bounded_and_linear() {
        let mut raw = String::from("Content-Type: multipart/mixed; boundary=w\r\n\r\n");
        for i in 0..50_000 {
            raw.push_str(&format!("--w\r\n\r\np{i}\r\n"));
        }
        raw.push_str("--w--\r\n");
        let started = std::time::Instant::now();
        let tree = MimeTree::parse(raw.as_bytes());
        let elapsed = started.elapsed();
        let Nested::Parts(kids) = &tree.entity(0).nested else {
            panic!("not a multipart")
        };
        assert_eq!(kids.len(), MAX_PARTS);
        let last = text(raw.as_bytes(), &tree, &[MAX_PARTS as u32]).unwrap();
        assert!(last.starts_with("p9999\r\n--w\r\n") && last.ends_with("p49999"));
        // Generous for a debug build on a Pi; a quadratic walk takes minutes here.
        assert!(elapsed < std::time::Duration::from_secs(10), "{elapsed:?}");
    }
}
