//! FETCH (RFC 3501 §6.4.5, RFC 7162 §3.1.4 CHANGEDSINCE): its data items, macros and
//! section specs.

use super::CommandBody;
use super::primitives::{PResult, Parser};

/// A part of a message named by a section spec (RFC 3501 §6.4.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionText {
    /// The whole part (or message).
    Full,
    Header,
    HeaderFields(Vec<String>),
    HeaderFieldsNot(Vec<String>),
    Text,
    Mime,
}

/// `BODY[1.2.HEADER]<0.100>` and friends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub part: Vec<u32>,
    pub text: SectionText,
    pub partial: Option<(u32, u32)>,
    pub peek: bool,
}

impl Section {
    /// The section spec as a FETCH response names it (`1.HEADER.FIELDS (SUBJECT)`), without
    /// the partial range and the `.PEEK`.
    pub fn spec(&self) -> String {
        let mut out = part_spec(&self.part);
        let text = match &self.text {
            SectionText::Full => String::new(),
            SectionText::Header => "HEADER".into(),
            SectionText::HeaderFields(f) => format!("HEADER.FIELDS ({})", f.join(" ")),
            SectionText::HeaderFieldsNot(f) => format!("HEADER.FIELDS.NOT ({})", f.join(" ")),
            SectionText::Text => "TEXT".into(),
            SectionText::Mime => "MIME".into(),
        };
        if !out.is_empty() && !text.is_empty() {
            out.push('.');
        }
        out.push_str(&text);
        out
    }
}

/// `BINARY[1.2]<0.100>` and `BINARY.PEEK[...]` (RFC 3516 §4.1, RFC 9051 §6.4.5): a part's
/// content with its Content-Transfer-Encoding removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinarySection {
    /// Empty for the whole message.
    pub part: Vec<u32>,
    pub partial: Option<(u32, u32)>,
    pub peek: bool,
}

impl BinarySection {
    /// The section as a FETCH response names it (`1.2`), without the partial range.
    pub fn spec(&self) -> String {
        part_spec(&self.part)
    }
}

/// A section spec as written inside `BODY[...]` (`1.MIME`, `HEADER.FIELDS (From)`), for the
/// `;SECTION=` of an IMAP URL (RFC 5092 §3.4 enc-section: RFC 3501's section-spec).
pub fn section_spec(spec: &[u8]) -> Result<(Vec<u32>, SectionText), String> {
    let input = [b"[".as_slice(), spec, b"]"].concat();
    let mut p = Parser {
        input: &input,
        pos: 0,
        depth: 0,
    };
    let section = p.section()?;
    if p.pos != input.len() {
        return Err("junk after the section".into());
    }
    Ok((section.part, section.text))
}

/// `1.2.3`: a section part as written in a section spec.
pub fn part_spec(part: &[u32]) -> String {
    part.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(".")
}

/// FETCH data items (RFC 3501 §6.4.5, RFC 7162 MODSEQ, RFC 3516 BINARY).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchItem {
    Envelope,
    Flags,
    InternalDate,
    Rfc822,
    Rfc822Header,
    Rfc822Size,
    Rfc822Text,
    /// BODY (without a section): the non-extensible BODYSTRUCTURE.
    Body,
    BodyStructure,
    Uid,
    ModSeq,
    Section(Section),
    /// `BINARY[...]` / `BINARY.PEEK[...]` (RFC 3516 §4.1).
    Binary(BinarySection),
    /// `BINARY.SIZE[...]`: the size of the decoded part (RFC 3516 §4.1), the part numbers.
    BinarySize(Vec<u32>),
}

impl Parser<'_> {
    pub(super) fn fetch(&mut self, uid: bool) -> PResult<CommandBody> {
        self.sp()?;
        let set = self.sequence_set()?;
        self.sp()?;
        let mut items = Vec::new();
        if self.peek() == Some(b'(') {
            self.pos += 1;
            loop {
                self.fetch_att(&mut items)?;
                if self.try_sp() {
                    continue;
                }
                self.expect(b')')?;
                break;
            }
        } else {
            let save = self.pos;
            match self.keyword()?.as_str() {
                // RFC 3501 §6.4.5 macros.
                "ALL" => items.extend([
                    FetchItem::Flags,
                    FetchItem::InternalDate,
                    FetchItem::Rfc822Size,
                    FetchItem::Envelope,
                ]),
                "FAST" => items.extend([FetchItem::Flags, FetchItem::InternalDate, FetchItem::Rfc822Size]),
                "FULL" => items.extend([
                    FetchItem::Flags,
                    FetchItem::InternalDate,
                    FetchItem::Rfc822Size,
                    FetchItem::Envelope,
                    FetchItem::Body,
                ]),
                _ => {
                    self.pos = save;
                    self.fetch_att(&mut items)?;
                }
            }
        }
        let mut changed_since = None;
        let mut vanished = false;
        if self.try_sp() {
            // RFC 7162 §3.1.4 (CHANGEDSINCE n) and §3.2.6 VANISHED, in either order.
            self.expect(b'(')?;
            loop {
                match self.keyword()?.as_str() {
                    "CHANGEDSINCE" if changed_since.is_none() => {
                        self.sp()?;
                        let n = self.number()?;
                        // 0 is taken too (everything changed since), as Dovecot does.
                        if n > i64::MAX as u64 {
                            return Err("CHANGEDSINCE takes a 63-bit mod-sequence-value".into());
                        }
                        changed_since = Some(n);
                    }
                    "VANISHED" if !vanished => vanished = true,
                    other => return Err(format!("unknown FETCH modifier {other}")),
                }
                if !self.try_sp() {
                    break;
                }
            }
            self.expect(b')')?;
            // RFC 7162 §3.2.6: VANISHED only in UID FETCH, and only with CHANGEDSINCE.
            if vanished && (!uid || changed_since.is_none()) {
                return Err("VANISHED needs UID FETCH with CHANGEDSINCE".into());
            }
        }
        Ok(CommandBody::Fetch {
            uid,
            set,
            items,
            changed_since,
            vanished,
        })
    }

    pub(super) fn fetch_att(&mut self, items: &mut Vec<FetchItem>) -> PResult<()> {
        let name = self.keyword()?;
        let item = match name.as_str() {
            "ENVELOPE" => FetchItem::Envelope,
            "FLAGS" => FetchItem::Flags,
            "INTERNALDATE" => FetchItem::InternalDate,
            "RFC822" => FetchItem::Rfc822,
            "RFC822.HEADER" => FetchItem::Rfc822Header,
            "RFC822.SIZE" => FetchItem::Rfc822Size,
            "RFC822.TEXT" => FetchItem::Rfc822Text,
            "BODYSTRUCTURE" => FetchItem::BodyStructure,
            "UID" => FetchItem::Uid,
            "MODSEQ" => FetchItem::ModSeq,
            "BODY" | "BODY.PEEK" => {
                if self.peek() != Some(b'[') {
                    if name == "BODY.PEEK" {
                        return Err("BODY.PEEK needs a section".into());
                    }
                    items.push(FetchItem::Body);
                    return Ok(());
                }
                let mut section = self.section()?;
                section.peek = name == "BODY.PEEK";
                FetchItem::Section(section)
            }
            // RFC 3516 §4.1: section-binary = "[" [section-part] "]".
            "BINARY" | "BINARY.PEEK" => {
                self.expect(b'[')?;
                let part = self.section_part()?;
                self.expect(b']')?;
                let partial = self.partial()?;
                FetchItem::Binary(BinarySection {
                    part,
                    partial,
                    peek: name == "BINARY.PEEK",
                })
            }
            "BINARY.SIZE" => {
                self.expect(b'[')?;
                let part = self.section_part()?;
                self.expect(b']')?;
                FetchItem::BinarySize(part)
            }
            other => return Err(format!("unknown FETCH item {other}")),
        };
        items.push(item);
        Ok(())
    }

    /// `1.2.3` (or nothing): section-part = nz-number *("." nz-number) (RFC 3501 §9), at
    /// most 64 levels.
    fn section_part(&mut self) -> PResult<Vec<u32>> {
        let mut part = Vec::new();
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            let n = self.number32()?;
            if n == 0 {
                return Err("section part numbers start at 1".into());
            }
            part.push(n);
            if part.len() > 64 {
                return Err("section too deep".into());
            }
            if self.peek() != Some(b'.') || !self.rest().get(1).is_some_and(u8::is_ascii_digit) {
                break;
            }
            self.pos += 1;
        }
        Ok(part)
    }

    /// `<start.length>` after a section, if present (RFC 3501 §9 partial).
    fn partial(&mut self) -> PResult<Option<(u32, u32)>> {
        if self.peek() != Some(b'<') {
            return Ok(None);
        }
        self.pos += 1;
        let start = self.number32()?;
        self.expect(b'.')?;
        let len = self.number32()?;
        if len == 0 {
            return Err("partial length must be positive".into());
        }
        self.expect(b'>')?;
        Ok(Some((start, len)))
    }

    /// HEADER, TEXT, MIME (only after a part) or HEADER.FIELDS[.NOT] (list), after a section's
    /// part numbers.
    fn section_text(&mut self, part: &[u32]) -> PResult<SectionText> {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_alphabetic() || b == b'.') {
            self.pos += 1;
        }
        let word = String::from_utf8_lossy(&self.input[start..self.pos]).to_ascii_uppercase();
        Ok(match word.as_str() {
            "HEADER" => SectionText::Header,
            "TEXT" => SectionText::Text,
            "MIME" if !part.is_empty() => SectionText::Mime,
            "HEADER.FIELDS" | "HEADER.FIELDS.NOT" => {
                self.sp()?;
                self.expect(b'(')?;
                let mut fields = Vec::new();
                loop {
                    let f = self.astring()?;
                    fields.push(f);
                    if fields.len() > 200 {
                        return Err("too many header fields".into());
                    }
                    if !self.try_sp() {
                        break;
                    }
                }
                self.expect(b')')?;
                if word == "HEADER.FIELDS" {
                    SectionText::HeaderFields(fields)
                } else {
                    SectionText::HeaderFieldsNot(fields)
                }
            }
            _ => return Err(format!("bad section {word:?}")),
        })
    }

    fn section(&mut self) -> PResult<Section> {
        self.expect(b'[')?;
        // section-spec = section-msgtext / (section-part ["." section-text]) (RFC 3501 §9).
        let part = self.section_part()?;
        let text = if self.peek() == Some(b']') {
            SectionText::Full
        } else {
            if !part.is_empty() {
                self.expect(b'.')?;
            }
            self.section_text(&part)?
        };
        self.expect(b']')?;
        let partial = self.partial()?;
        Ok(Section {
            part,
            text,
            partial,
            peek: false,
        })
    }
}
