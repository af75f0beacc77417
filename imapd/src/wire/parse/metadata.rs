//! GETMETADATA and SETMETADATA (RFC 5464 §4.2, §4.3, grammar in §5). Entry names are checked
//! by `shared::metadata::entry_name` (RFC 5464 §3.2): a bad one is BAD.

use shared::metadata::{self, Depth, MAX_ENTRIES_PER_COMMAND};

use super::CommandBody;
use super::primitives::{PResult, Parser};

/// GETMETADATA's options (RFC 5464 §4.2.1-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetadataOptions {
    /// MAXSIZE: values longer than this are left out (and reported with LONGENTRIES).
    pub maxsize: Option<u64>,
    pub depth: Depth,
}

impl Parser<'_> {
    /// `GETMETADATA [SP options] SP mailbox SP entries`. The options are also taken after the
    /// mailbox, where RFC 5464's own examples (§4.2.1-2) put them (erratum 1947 to §5).
    pub(super) fn getmetadata(&mut self) -> PResult<CommandBody> {
        self.sp()?;
        let mut options = None;
        if self.peek() == Some(b'(') {
            options = Some(self.metadata_options()?);
            self.sp()?;
        }
        let mailbox = self.mailbox()?;
        self.sp()?;
        if self.peek() == Some(b'(') && self.options_follow() {
            if options.is_some() {
                return Err("GETMETADATA options given twice".into());
            }
            options = Some(self.metadata_options()?);
            self.sp()?;
        }
        let entries = if self.peek() == Some(b'(') {
            self.pos += 1;
            let mut entries = vec![self.entry()?];
            while self.try_sp() {
                entries.push(self.entry()?);
                if entries.len() > MAX_ENTRIES_PER_COMMAND {
                    return Err(format!("at most {MAX_ENTRIES_PER_COMMAND} entries in one command"));
                }
            }
            self.expect(b')')?;
            entries
        } else {
            vec![self.entry()?]
        };
        Ok(CommandBody::GetMetadata {
            mailbox,
            options: options.unwrap_or_default(),
            entries,
        })
    }

    /// `SETMETADATA SP mailbox SP "(" entry SP value *(SP entry SP value) ")"`, a value being
    /// an nstring or a literal8 (NIL removes the entry).
    pub(super) fn setmetadata(&mut self) -> PResult<CommandBody> {
        self.sp()?;
        let mailbox = self.mailbox()?;
        self.sp()?;
        self.expect(b'(')?;
        let mut entries = Vec::new();
        loop {
            let name = self.entry()?;
            if metadata::is_root(&name) {
                return Err(format!("{name} is the root of the entry tree and holds no value"));
            }
            self.sp()?;
            // RFC 5464 §5: value = nstring / literal8.
            let value = if self.peek() == Some(b'~') {
                Some(self.literal(true)?)
            } else {
                self.nstring()?
            };
            entries.push((name, value));
            if entries.len() > MAX_ENTRIES_PER_COMMAND {
                return Err(format!("at most {MAX_ENTRIES_PER_COMMAND} entries in one command"));
            }
            if !self.try_sp() {
                break;
            }
        }
        self.expect(b')')?;
        Ok(CommandBody::SetMetadata { mailbox, entries })
    }

    /// Whether a `(` here opens GETMETADATA options rather than a list of entries (entry
    /// names start with `/`, options with a keyword).
    fn options_follow(&self) -> bool {
        let rest = self.rest();
        rest.len() > 1 && rest[1].is_ascii_alphabetic()
    }

    fn metadata_options(&mut self) -> PResult<MetadataOptions> {
        self.expect(b'(')?;
        let mut options = MetadataOptions::default();
        let (mut maxsize, mut depth) = (false, false);
        loop {
            match self.keyword()?.as_str() {
                "MAXSIZE" if !maxsize => {
                    maxsize = true;
                    self.sp()?;
                    options.maxsize = Some(self.number()?);
                }
                "DEPTH" if !depth => {
                    depth = true;
                    self.sp()?;
                    options.depth = match self.keyword()?.as_str() {
                        "0" => Depth::Zero,
                        "1" => Depth::One,
                        "INFINITY" => Depth::Infinity,
                        other => return Err(format!("DEPTH is 0, 1 or infinity, not {other}")),
                    };
                }
                "MAXSIZE" | "DEPTH" => return Err("GETMETADATA option given twice".into()),
                other => return Err(format!("unknown GETMETADATA option {other}")),
            }
            if !self.try_sp() {
                break;
            }
        }
        self.expect(b')')?;
        Ok(options)
    }

    /// An entry name (an astring), checked and lower-cased (RFC 5464 §3.2).
    fn entry(&mut self) -> PResult<String> {
        let raw = self.astring_bytes()?;
        metadata::entry_name(&raw).map_err(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{CommandBody, parse_command};
    use super::*;

    fn parse(s: &[u8]) -> CommandBody {
        parse_command(s)
            .unwrap_or_else(|e| panic!("{}: {e:?}", String::from_utf8_lossy(s)))
            .body
    }

    #[test]
    fn getmetadata_forms_of_rfc_5464() {
        // §4.2: one entry, no options.
        assert_eq!(
            parse(b"a GETMETADATA \"\" /shared/comment\r\n"),
            CommandBody::GetMetadata {
                mailbox: "".into(),
                options: MetadataOptions::default(),
                entries: vec!["/shared/comment".into()],
            }
        );
        // §4.2.1's example puts the options after the mailbox; §5's grammar before it.
        for text in [
            &b"a GETMETADATA INBOX (MAXSIZE 1024) (/shared/comment /private/Comment)\r\n"[..],
            b"a GETMETADATA (MAXSIZE 1024) INBOX (/shared/comment /private/comment)\r\n",
        ] {
            assert_eq!(
                parse(text),
                CommandBody::GetMetadata {
                    mailbox: "INBOX".into(),
                    options: MetadataOptions {
                        maxsize: Some(1024),
                        depth: Depth::Zero
                    },
                    entries: vec!["/shared/comment".into(), "/private/comment".into()],
                }
            );
        }
        let CommandBody::GetMetadata { options, .. } =
            parse(b"a GETMETADATA (DEPTH infinity MAXSIZE 5) INBOX /private/filters/values\r\n")
        else {
            panic!()
        };
        assert_eq!(options.depth, Depth::Infinity);
        assert_eq!(options.maxsize, Some(5));
        for bad in [
            &b"a GETMETADATA INBOX /private//x\r\n"[..],
            b"a GETMETADATA INBOX /private/*\r\n",
            b"a GETMETADATA INBOX comment\r\n",
            b"a GETMETADATA INBOX ()\r\n",
            b"a GETMETADATA (DEPTH 2) INBOX /private/x\r\n",
            b"a GETMETADATA (DEPTH 1 DEPTH 1) INBOX /private/x\r\n",
            b"a GETMETADATA (DEPTH 1) INBOX (DEPTH 1) /private/x\r\n",
            b"a GETMETADATA (FOO 1) INBOX /private/x\r\n",
            b"a GETMETADATA INBOX\r\n",
        ] {
            assert!(parse_command(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let many = format!(
            "a GETMETADATA INBOX ({})\r\n",
            vec!["/private/x"; MAX_ENTRIES_PER_COMMAND + 1].join(" ")
        );
        assert!(parse_command(many.as_bytes()).is_err());
    }

    #[test]
    fn setmetadata_forms_of_rfc_5464() {
        // §4.3's examples: a quoted value, NIL, a literal, and a literal8 holding a NUL.
        assert_eq!(
            parse(b"a SETMETADATA INBOX (/private/comment \"My new comment\")\r\n"),
            CommandBody::SetMetadata {
                mailbox: "INBOX".into(),
                entries: vec![("/private/comment".into(), Some(b"My new comment".to_vec()))],
            }
        );
        assert_eq!(
            parse(b"a SETMETADATA INBOX (/private/comment NIL)\r\n"),
            CommandBody::SetMetadata {
                mailbox: "INBOX".into(),
                entries: vec![("/private/comment".into(), None)],
            }
        );
        let CommandBody::SetMetadata { entries, .. } =
            parse(b"a SETMETADATA INBOX (/private/comment {33}\r\nMy new comment across\r\ntwo lines. /shared/x ~{3}\r\na\0b)\r\n")
        else {
            panic!()
        };
        assert_eq!(
            entries[0].1.as_deref(),
            Some(&b"My new comment across\r\ntwo lines."[..])
        );
        assert_eq!(entries[1].1.as_deref(), Some(&b"a\0b"[..]));
        for bad in [
            &b"a SETMETADATA INBOX ()\r\n"[..],
            b"a SETMETADATA INBOX (/private \"x\")\r\n",
            b"a SETMETADATA INBOX (/private/x)\r\n",
            b"a SETMETADATA INBOX (/private/x% \"x\")\r\n",
            b"a SETMETADATA INBOX /private/x \"x\"\r\n",
        ] {
            assert!(parse_command(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
