//! The fields of a message's header section (RFC 5322 §2.2), the one place that splits a header
//! block into fields: SMTP's originator check and Authentication-Results stripping, IMAP's
//! HEADER.FIELDS, SEARCH and MIME walk, and the mail store all walk fields through
//! [`fields`]. Real parsing of a field body (addresses, dates, encoded words) stays with
//! mail-parser; this only finds where each field starts and ends.
//!
//! Works on the raw bytes without copying. Lines end at LF (with or without the CR before it),
//! so a caller that must refuse a bare CR or LF (RFC 5322 §2.2) checks the bytes [`Fields::consumed`]
//! covers. A line starting with a blank continues the field before it (folding, §2.2.3), a
//! first line starting with a blank starts a field, and the section ends at the first empty line
//! (§2.1) or at the end of the input.

/// One header field as written: its first line, its continuation lines and their line ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    raw: &'a [u8],
    /// Where the colon of the first line is; a line without one is not a field (`name` None).
    colon: Option<usize>,
}

impl<'a> Field<'a> {
    /// The whole field, line ends included, byte for byte.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The field name without the blanks around it (obs-optional, RFC 5322 §4.5.1, allows
    /// blanks before the colon); None for a line without a colon.
    pub fn name(&self) -> Option<&'a [u8]> {
        self.colon.map(|c| self.raw[..c].trim_ascii())
    }

    /// Whether the field is named `name` (field names are case-insensitive, RFC 5322 §1.2.2).
    pub fn is(&self, name: &str) -> bool {
        self.name().is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
    }

    /// The field body as written: after the colon, folds included, without the final line end.
    pub fn value(&self) -> Option<&'a [u8]> {
        let body = &self.raw[self.colon? + 1..];
        let body = body.strip_suffix(b"\n").unwrap_or(body);
        Some(body.strip_suffix(b"\r").unwrap_or(body))
    }

    /// The field body unfolded (RFC 5322 §2.2.3) as text, blanks kept.
    pub fn unfolded(&self) -> Option<String> {
        self.value().map(unfold)
    }
}

/// Unfold (RFC 5322 §2.2.3): remove the line breaks, keeping the blanks that follow them.
/// Invalid UTF-8 is replaced (U+FFFD); header fields are ASCII or UTF-8 (RFC 6532).
pub fn unfold(value: &[u8]) -> String {
    // One pass and one allocation: every LF goes, and the CR just before one (as replacing
    // "\r\n" and then "\n" would do).
    let text = String::from_utf8_lossy(value);
    if memchr::memchr(b'\n', text.as_bytes()).is_none() {
        return text.into_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_ref();
    while let Some(lf) = memchr::memchr(b'\n', rest.as_bytes()) {
        let line = &rest[..lf];
        out.push_str(line.strip_suffix('\r').unwrap_or(line));
        rest = &rest[lf + 1..];
    }
    out.push_str(rest);
    out
}

/// The fields of the header section at the start of `message` (or of a header block alone).
pub fn fields(message: &[u8]) -> Fields<'_> {
    Fields {
        message,
        pos: 0,
        ended: false,
    }
}

/// Iterator over the fields of a header section; see [`fields`].
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    message: &'a [u8],
    pos: usize,
    ended: bool,
}

impl Fields<'_> {
    /// How many bytes have been read: once the iterator is done, the length of the header
    /// section including the empty line that ends it (the whole input when none does).
    pub fn consumed(&self) -> usize {
        self.pos
    }

    /// The end of the line starting at `at` (after its LF, or the end of the input).
    fn line_end(&self, at: usize) -> usize {
        memchr::memchr(b'\n', &self.message[at..]).map_or(self.message.len(), |p| at + p + 1)
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        if self.ended || self.pos >= self.message.len() {
            return None;
        }
        let start = self.pos;
        let first_end = self.line_end(start);
        let first = &self.message[start..first_end];
        if first == b"\r\n" || first == b"\n" {
            // RFC 5322 §2.1: the empty line ends the header section.
            self.pos = first_end;
            self.ended = true;
            return None;
        }
        let mut end = first_end;
        while self.message.get(end).is_some_and(|&b| b == b' ' || b == b'\t') {
            end = self.line_end(end);
        }
        self.pos = end;
        Some(Field {
            raw: &self.message[start..end],
            colon: memchr::memchr(b':', first),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(header: &[u8]) -> Vec<(Option<String>, Option<String>)> {
        fields(header)
            .map(|f| (f.name().map(|n| String::from_utf8_lossy(n).into_owned()), f.unfolded()))
            .collect()
    }

    fn some(name: &str, value: &str) -> (Option<String>, Option<String>) {
        (Some(name.into()), Some(value.into()))
    }

    #[test]
    fn names_and_unfolded_values() {
        let message = b"Subject: hi\r\n there\r\n\tyou\r\nFROM : a@x\r\nX-Empty:\r\n\r\nBody: no\r\n";
        assert_eq!(
            pairs(message),
            vec![
                some("Subject", " hi there\tyou"),
                some("FROM", " a@x"),
                some("X-Empty", "")
            ]
        );
        let mut iter = fields(message);
        assert_eq!(iter.by_ref().count(), 3);
        // The empty line belongs to the header section; the body is never read.
        assert_eq!(iter.consumed(), message.len() - b"Body: no\r\n".len());
    }

    #[test]
    fn unfolding_drops_line_breaks_only() {
        assert_eq!(unfold(b" a\r\n b\n\tc"), " a b\tc");
        // A CR is dropped only right before its LF.
        assert_eq!(unfold(b"a\rb\r\r\n c"), "a\rb\r c");
        assert_eq!(unfold(b"plain"), "plain");
        assert_eq!(unfold(b"\xff\r\n x"), "\u{fffd} x");
    }

    #[test]
    fn raw_fields_are_byte_for_byte() {
        let message = b"A: 1\r\n 2\r\nB: 3\nC: 4";
        let raw: Vec<&[u8]> = fields(message).map(|f| f.raw()).collect();
        assert_eq!(raw, vec![&b"A: 1\r\n 2\r\n"[..], b"B: 3\n", b"C: 4"]);
        assert_eq!(raw.concat(), message);
        let mut iter = fields(message);
        iter.by_ref().for_each(drop);
        assert_eq!(iter.consumed(), message.len());
        assert_eq!(fields(b"A: 1\r\n").next().unwrap().value(), Some(&b" 1"[..]));
    }

    #[test]
    fn lines_that_are_not_fields() {
        // A line without a colon is yielded without a name (with its own continuation lines),
        // a first line starting with a blank is a field, and a line of blanks continues.
        assert_eq!(
            pairs(b" Lead: x\r\nno colon\r\n a: b\r\nTo: y\r\n \r\nCc: z\r\n"),
            vec![some("Lead", " x"), (None, None), some("To", " y "), some("Cc", " z")]
        );
        assert!(fields(b"").next().is_none());
        let mut empty = fields(b"\r\nSubject: body\r\n");
        assert!(empty.next().is_none());
        assert!(empty.next().is_none());
        assert_eq!(empty.consumed(), 2);
        assert!(fields(b"A: b\r\n").next().unwrap().is("a"));
        assert!(!fields(b"AB: b\r\n").next().unwrap().is("a"));
    }
}
