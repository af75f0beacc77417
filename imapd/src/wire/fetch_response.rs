//! The FETCH response (RFC 3501 §7.4.2) as types: `* n FETCH (att att ...)`, written
//! attribute by attribute so that message bodies can be streamed between them. An attribute
//! whose value is a literal too large to hold ([`FetchAttr::LiteralHeader`]) writes only its
//! name and `{len}\r\n`; the caller sends the `len` bytes itself before the next attribute.

use std::io::Write;

use chrono::{DateTime, Utc};
use shared::mailstore::parsed::{BodyStructure, Envelope};

use super::encode;
use crate::fetch::structure;

/// The name of an attribute whose value is message text (RFC 3501 §7.4.2, msg-att-static).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyName<'a> {
    /// `RFC822`: the whole message.
    Rfc822,
    /// `RFC822.HEADER`.
    Rfc822Header,
    /// `RFC822.TEXT`.
    Rfc822Text,
    /// `BODY[section]<origin>`: `spec` is the section spec as the client asked for it
    /// (`1.2.HEADER.FIELDS (From)`, empty for the whole message); `origin` is the first
    /// octet of a partial fetch, as requested (RFC 3501 §7.4.2).
    Section { spec: &'a str, origin: Option<u32> },
    /// `BINARY[section]<origin>` (RFC 3516 §4.2): `spec` holds only part numbers.
    Binary { spec: &'a str, origin: Option<u32> },
}

impl BodyName<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            BodyName::Rfc822 => out.extend_from_slice(b"RFC822"),
            BodyName::Rfc822Header => out.extend_from_slice(b"RFC822.HEADER"),
            BodyName::Rfc822Text => out.extend_from_slice(b"RFC822.TEXT"),
            BodyName::Section { spec, origin } => {
                let _ = write!(out, "BODY[{spec}]");
                if let Some(origin) = origin {
                    let _ = write!(out, "<{origin}>");
                }
            }
            BodyName::Binary { spec, origin } => {
                let _ = write!(out, "BINARY[{spec}]");
                if let Some(origin) = origin {
                    let _ = write!(out, "<{origin}>");
                }
            }
        }
    }
}

/// One message data item of a FETCH response (RFC 3501 §7.4.2, RFC 7162 §3.1.4.1).
#[derive(Debug, Clone, Copy)]
pub enum FetchAttr<'a> {
    /// `UID n`.
    Uid(u32),
    /// `FLAGS (...)`; `recent` adds the session flag `\Recent` (RFC 3501 §2.3.2).
    Flags { flags: &'a [String], recent: bool },
    /// `MODSEQ (n)` (RFC 7162 §3.1.4.1).
    ModSeq(u64),
    /// `INTERNALDATE "dd-Mon-yyyy hh:mm:ss +0000"` (RFC 3501 §9 date-time), in UTC.
    InternalDate(DateTime<Utc>),
    /// `RFC822.SIZE n`.
    Rfc822Size(u64),
    /// `ENVELOPE (...)`; `utf8` as for UTF8=ACCEPT (RFC 6855 §3).
    Envelope { envelope: &'a Envelope, utf8: bool },
    /// `BODY (...)`, or `BODYSTRUCTURE (...)` when `extended`.
    Structure {
        structure: &'a BodyStructure,
        extended: bool,
        utf8: bool,
    },
    /// `name {len}\r\n` followed by `data`; for BINARY, `~{len}` (literal8) when `data`
    /// holds a NUL, which a literal may not (RFC 3516 §4.2, RFC 9051 §4.3).
    Literal { name: BodyName<'a>, data: &'a [u8] },
    /// `BINARY.SIZE[spec] n` (RFC 3516 §4.2): the size of the decoded section.
    BinarySize { spec: &'a str, size: u64 },
    /// `name {len}\r\n` alone: the caller streams the `len` octets next (never buffered whole).
    LiteralHeader { name: BodyName<'a>, len: u64 },
}

/// A FETCH response being written: [`FetchResponse::open`], then [`FetchResponse::attr`] for
/// each item, then [`FetchResponse::close`].
#[derive(Debug)]
pub struct FetchResponse {
    first: bool,
}

impl FetchResponse {
    /// Append `* seq FETCH (`.
    pub fn open(out: &mut Vec<u8>, seq: u32) -> Self {
        let _ = write!(out, "* {seq} FETCH (");
        FetchResponse { first: true }
    }

    /// Append one attribute, preceded by the space that separates it from the last.
    pub fn attr(&mut self, out: &mut Vec<u8>, attr: FetchAttr<'_>) {
        if !self.first {
            out.push(b' ');
        }
        self.first = false;
        match attr {
            FetchAttr::Uid(uid) => {
                let _ = write!(out, "UID {uid}");
            }
            FetchAttr::Flags { flags, recent } => {
                out.extend_from_slice(b"FLAGS ");
                flag_list(out, flags, recent);
            }
            FetchAttr::ModSeq(modseq) => {
                let _ = write!(out, "MODSEQ ({modseq})");
            }
            FetchAttr::InternalDate(date) => {
                let _ = write!(out, "INTERNALDATE \"{}\"", date.format("%d-%b-%Y %H:%M:%S +0000"));
            }
            FetchAttr::Rfc822Size(size) => {
                let _ = write!(out, "RFC822.SIZE {size}");
            }
            FetchAttr::Envelope { envelope, utf8 } => {
                out.extend_from_slice(b"ENVELOPE ");
                structure::envelope(out, envelope, utf8);
            }
            FetchAttr::Structure {
                structure: body,
                extended,
                utf8,
            } => {
                out.extend_from_slice(if extended { b"BODYSTRUCTURE " } else { b"BODY " });
                structure::body(out, body, extended, utf8);
            }
            FetchAttr::Literal { name, data } => {
                name.write(out);
                out.push(b' ');
                if matches!(name, BodyName::Binary { .. }) && data.contains(&0) {
                    out.push(b'~');
                }
                encode::literal(out, data);
            }
            FetchAttr::BinarySize { spec, size } => {
                let _ = write!(out, "BINARY.SIZE[{spec}] {size}");
            }
            FetchAttr::LiteralHeader { name, len } => {
                name.write(out);
                let _ = write!(out, " {{{len}}}\r\n");
            }
        }
    }

    /// Append the closing `)` and CRLF.
    pub fn close(self, out: &mut Vec<u8>) {
        out.extend_from_slice(b")\r\n");
    }
}

/// A flag list, with `\Recent` last when `recent`.
pub(super) fn flag_list(out: &mut Vec<u8>, flags: &[String], recent: bool) {
    if recent {
        let mut flags = flags.to_vec();
        flags.push("\\Recent".into());
        encode::flag_list(out, &flags);
    } else {
        encode::flag_list(out, flags);
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    /// One response holding just `attr`.
    fn one(attr: FetchAttr<'_>) -> String {
        let mut out = Vec::new();
        let mut r = FetchResponse::open(&mut out, 3);
        r.attr(&mut out, attr);
        r.close(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn numbers() {
        assert_eq!(one(FetchAttr::Uid(42)), "* 3 FETCH (UID 42)\r\n");
        assert_eq!(one(FetchAttr::ModSeq(7)), "* 3 FETCH (MODSEQ (7))\r\n");
        assert_eq!(one(FetchAttr::Rfc822Size(1234)), "* 3 FETCH (RFC822.SIZE 1234)\r\n");
    }

    #[test]
    fn flags() {
        let flags = ["\\Seen".to_string(), "$Label".to_string()];
        assert_eq!(
            one(FetchAttr::Flags {
                flags: &flags,
                recent: false
            }),
            "* 3 FETCH (FLAGS (\\Seen $Label))\r\n"
        );
        assert_eq!(
            one(FetchAttr::Flags {
                flags: &flags,
                recent: true
            }),
            "* 3 FETCH (FLAGS (\\Seen $Label \\Recent))\r\n"
        );
        assert_eq!(
            one(FetchAttr::Flags {
                flags: &[],
                recent: false
            }),
            "* 3 FETCH (FLAGS ())\r\n"
        );
    }

    #[test]
    fn internal_date() {
        let date = Utc.with_ymd_and_hms(2024, 3, 5, 7, 8, 9).unwrap();
        assert_eq!(
            one(FetchAttr::InternalDate(date)),
            "* 3 FETCH (INTERNALDATE \"05-Mar-2024 07:08:09 +0000\")\r\n"
        );
    }

    #[test]
    fn literals() {
        assert_eq!(
            one(FetchAttr::Literal {
                name: BodyName::Rfc822Header,
                data: b"Subject: x\r\n\r\n"
            }),
            "* 3 FETCH (RFC822.HEADER {14}\r\nSubject: x\r\n\r\n)\r\n"
        );
        assert_eq!(
            one(FetchAttr::Literal {
                name: BodyName::Rfc822Text,
                data: b""
            }),
            "* 3 FETCH (RFC822.TEXT {0}\r\n)\r\n"
        );
        assert_eq!(
            one(FetchAttr::Literal {
                name: BodyName::Section {
                    spec: "1.HEADER.FIELDS (From)",
                    origin: None
                },
                data: b"ab"
            }),
            "* 3 FETCH (BODY[1.HEADER.FIELDS (From)] {2}\r\nab)\r\n"
        );
        assert_eq!(
            one(FetchAttr::Literal {
                name: BodyName::Section {
                    spec: "TEXT",
                    origin: Some(5)
                },
                data: b"cd"
            }),
            "* 3 FETCH (BODY[TEXT]<5> {2}\r\ncd)\r\n"
        );
    }

    #[test]
    fn binary() {
        let name = BodyName::Binary {
            spec: "1.2",
            origin: None,
        };
        assert_eq!(
            one(FetchAttr::Literal { name, data: b"ab" }),
            "* 3 FETCH (BINARY[1.2] {2}\r\nab)\r\n"
        );
        assert_eq!(
            one(FetchAttr::Literal {
                name: BodyName::Binary {
                    spec: "1",
                    origin: Some(4)
                },
                data: b"a\0b"
            }),
            "* 3 FETCH (BINARY[1]<4> ~{3}\r\na\0b)\r\n"
        );
        // A BODY[] literal never becomes a literal8.
        assert_eq!(
            one(FetchAttr::Literal {
                name: BodyName::Section {
                    spec: "1",
                    origin: None
                },
                data: b"\0"
            }),
            "* 3 FETCH (BODY[1] {1}\r\n\0)\r\n"
        );
        assert_eq!(
            one(FetchAttr::BinarySize { spec: "2", size: 17 }),
            "* 3 FETCH (BINARY.SIZE[2] 17)\r\n"
        );
    }

    #[test]
    fn streamed_literals() {
        assert_eq!(
            one(FetchAttr::LiteralHeader {
                name: BodyName::Rfc822,
                len: 300
            }),
            "* 3 FETCH (RFC822 {300}\r\n)\r\n"
        );
        assert_eq!(
            one(FetchAttr::LiteralHeader {
                name: BodyName::Section { spec: "", origin: None },
                len: 12
            }),
            "* 3 FETCH (BODY[] {12}\r\n)\r\n"
        );
        assert_eq!(
            one(FetchAttr::LiteralHeader {
                name: BodyName::Section {
                    spec: "",
                    origin: Some(100)
                },
                len: 0
            }),
            "* 3 FETCH (BODY[]<100> {0}\r\n)\r\n"
        );
    }

    #[test]
    fn several_attributes() {
        let mut out = Vec::new();
        let mut r = FetchResponse::open(&mut out, 12);
        r.attr(&mut out, FetchAttr::Uid(9));
        r.attr(&mut out, FetchAttr::Rfc822Size(5));
        r.attr(
            &mut out,
            FetchAttr::LiteralHeader {
                name: BodyName::Section { spec: "", origin: None },
                len: 5,
            },
        );
        // The caller streams the five octets here.
        out.extend_from_slice(b"hello");
        r.attr(
            &mut out,
            FetchAttr::Flags {
                flags: &[],
                recent: true,
            },
        );
        r.close(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "* 12 FETCH (UID 9 RFC822.SIZE 5 BODY[] {5}\r\nhello FLAGS (\\Recent))\r\n"
        );
    }

    #[test]
    fn envelope_and_structure() {
        let envelope = Envelope {
            subject: Some("hi".into()),
            ..Envelope::default()
        };
        let mut value = Vec::new();
        structure::envelope(&mut value, &envelope, false);
        assert_eq!(
            one(FetchAttr::Envelope {
                envelope: &envelope,
                utf8: false
            }),
            format!("* 3 FETCH (ENVELOPE {})\r\n", String::from_utf8(value).unwrap())
        );
        let body = BodyStructure::Single {
            media_type: "text".into(),
            media_subtype: "plain".into(),
            params: vec![("charset".into(), "us-ascii".into())],
            id: None,
            description: None,
            encoding: "7BIT".into(),
            size: 3,
            lines: Some(1),
            md5: None,
            disposition: None,
            language: Vec::new(),
            location: None,
            message: None,
            model: 0,
        };
        for (extended, name) in [(false, "BODY"), (true, "BODYSTRUCTURE")] {
            let mut value = Vec::new();
            structure::body(&mut value, &body, extended, false);
            assert_eq!(
                one(FetchAttr::Structure {
                    structure: &body,
                    extended,
                    utf8: false
                }),
                format!("* 3 FETCH ({name} {})\r\n", String::from_utf8(value).unwrap())
            );
        }
        assert_eq!(
            one(FetchAttr::Structure {
                structure: &body,
                extended: false,
                utf8: false
            }),
            "* 3 FETCH (BODY (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 3 1))\r\n"
        );
    }

    #[test]
    fn empty() {
        let mut out = Vec::new();
        FetchResponse::open(&mut out, 1).close(&mut out);
        assert_eq!(out, b"* 1 FETCH ()\r\n");
    }
}
