//! The grammar's building blocks (RFC 3501 §9): the parser's cursor, spaces and line ends,
//! atoms, numbers, quoted strings and literals (RFC 7888), astrings, flags, sequence sets and
//! dates. The per-command modules beside this one build commands out of these.

use chrono::{DateTime, FixedOffset, NaiveDate};

use crate::wire::sequence::SequenceSet;

pub(super) type PResult<T> = Result<T, String>;

pub(super) struct Parser<'a> {
    pub(super) input: &'a [u8],
    pub(super) pos: usize,
    pub(super) depth: usize,
}

pub(super) fn is_atom_char(b: u8) -> bool {
    // RFC 3501 §9: ATOM-CHAR = any CHAR except atom-specials.
    b > 0x20 && b < 0x7f && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
}

fn is_astring_char(b: u8) -> bool {
    is_atom_char(b) || b == b']'
}

fn is_tag_char(b: u8) -> bool {
    is_astring_char(b) && b != b'+'
}

impl<'a> Parser<'a> {
    pub(super) fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    pub(super) fn rest(&self) -> &'a [u8] {
        &self.input[self.pos.min(self.input.len())..]
    }

    pub(super) fn tag(&mut self) -> PResult<String> {
        let start = self.pos;
        while self.peek().is_some_and(is_tag_char) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err("missing tag".into());
        }
        let tag = String::from_utf8_lossy(&self.input[start..self.pos]).into_owned();
        self.sp()?;
        Ok(tag)
    }

    pub(super) fn sp(&mut self) -> PResult<()> {
        if self.peek() == Some(b' ') {
            self.pos += 1;
            Ok(())
        } else {
            Err("expected a space".into())
        }
    }

    pub(super) fn try_sp(&mut self) -> bool {
        if self.peek() == Some(b' ') {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub(super) fn crlf(&mut self) -> PResult<()> {
        // Be lenient about a bare LF and trailing spaces some clients send.
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
        match self.rest() {
            b"\r\n" | b"\n" => {
                self.pos = self.input.len();
                Ok(())
            }
            [] => Ok(()),
            _ => Err("unexpected text at the end of the command".into()),
        }
    }

    pub(super) fn expect(&mut self, byte: u8) -> PResult<()> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!("expected {:?}", byte as char))
        }
    }

    pub(super) fn at_end(&self) -> bool {
        matches!(self.rest(), b"\r\n" | b"\n" | [])
    }

    /// An atom, as bytes (may be empty).
    pub(super) fn atom_raw(&mut self) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(is_atom_char) {
            self.pos += 1;
        }
        &self.input[start..self.pos]
    }

    pub(super) fn atom(&mut self) -> PResult<String> {
        let raw = self.atom_raw();
        if raw.is_empty() {
            return Err("expected an atom".into());
        }
        Ok(String::from_utf8_lossy(raw).into_owned())
    }

    /// Upper-cased keyword made of atom characters (stops at `[`, `.` is included).
    pub(super) fn keyword(&mut self) -> PResult<String> {
        let start = self.pos;
        while self.peek().is_some_and(|b| is_atom_char(b) && b != b'[' && b != b'<') {
            self.pos += 1;
        }
        if self.pos == start {
            return Err("expected a keyword".into());
        }
        Ok(String::from_utf8_lossy(&self.input[start..self.pos]).to_ascii_uppercase())
    }

    pub(super) fn number(&mut self) -> PResult<u64> {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        if self.pos == start || self.pos - start > 19 {
            return Err("expected a number".into());
        }
        std::str::from_utf8(&self.input[start..self.pos])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "number too large".into())
    }

    pub(super) fn number32(&mut self) -> PResult<u32> {
        u32::try_from(self.number()?).map_err(|_| "number too large".into())
    }

    pub(super) fn quoted(&mut self) -> PResult<Vec<u8>> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None | Some(b'\r') | Some(b'\n') => return Err("unterminated quoted string".into()),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => {
                            out.push(c);
                            self.pos += 1;
                        }
                        _ => return Err("bad escape in quoted string".into()),
                    }
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    /// `{n}CRLF` or `{n+}CRLF` (RFC 7888), then n octets; `~{n}` (literal8) when `eight` is set.
    pub(super) fn literal(&mut self, eight: bool) -> PResult<Vec<u8>> {
        if eight && self.peek() == Some(b'~') {
            self.pos += 1;
        }
        self.expect(b'{')?;
        let n = self.number()? as usize;
        if self.peek() == Some(b'+') {
            self.pos += 1;
        }
        self.expect(b'}')?;
        if self.rest().starts_with(b"\r\n") {
            self.pos += 2;
        } else if self.rest().starts_with(b"\n") {
            self.pos += 1;
        } else {
            return Err("literal length must end the line".into());
        }
        let rest = self.rest();
        if rest.len() < n {
            return Err("literal shorter than announced".into());
        }
        self.pos += n;
        Ok(rest[..n].to_vec())
    }

    /// A quoted string or a literal; never a literal8, which RFC 3516 §4.2 and RFC 5464 §5 allow
    /// only where their grammar names it (APPEND, CATENATE's TEXT, a METADATA value).
    pub(super) fn string(&mut self) -> PResult<Vec<u8>> {
        match self.peek() {
            Some(b'"') => self.quoted(),
            Some(b'{') => self.literal(false),
            _ => Err("expected a string".into()),
        }
    }

    pub(super) fn astring_bytes(&mut self) -> PResult<Vec<u8>> {
        match self.peek() {
            Some(b'"') | Some(b'{') => self.string(),
            _ => {
                let start = self.pos;
                // 8-bit atoms are accepted for UTF8=ACCEPT clients (RFC 6855 §3).
                while self.peek().is_some_and(|b| is_astring_char(b) || b >= 0x80) {
                    self.pos += 1;
                }
                if self.pos == start {
                    return Err("expected an atom or a string".into());
                }
                Ok(self.input[start..self.pos].to_vec())
            }
        }
    }

    pub(super) fn astring(&mut self) -> PResult<String> {
        String::from_utf8(self.astring_bytes()?).map_err(|_| "not UTF-8".into())
    }

    pub(super) fn mailbox(&mut self) -> PResult<String> {
        self.astring()
    }

    pub(super) fn flag(&mut self) -> PResult<String> {
        let start = self.pos;
        if self.peek() == Some(b'\\') {
            self.pos += 1;
        }
        let atom = self.atom_raw();
        if atom.is_empty() {
            if start + 1 == self.pos && self.peek() == Some(b'*') {
                return Err("\\* is not a flag".into());
            }
            return Err("expected a flag".into());
        }
        Ok(String::from_utf8_lossy(&self.input[start..self.pos]).into_owned())
    }

    pub(super) fn flag_list(&mut self) -> PResult<Vec<String>> {
        self.expect(b'(')?;
        let mut flags = Vec::new();
        if self.peek() == Some(b')') {
            self.pos += 1;
            return Ok(flags);
        }
        loop {
            flags.push(self.flag()?);
            if self.try_sp() {
                continue;
            }
            self.expect(b')')?;
            return Ok(flags);
        }
    }

    pub(super) fn sequence_set(&mut self) -> PResult<SequenceSet> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_digit() || matches!(b, b':' | b',' | b'*' | b'$'))
        {
            self.pos += 1;
        }
        SequenceSet::parse(&self.input[start..self.pos]).ok_or_else(|| "bad sequence set".into())
    }

    pub(super) fn nstring(&mut self) -> PResult<Option<Vec<u8>>> {
        if self.rest().len() >= 3 && self.rest()[..3].eq_ignore_ascii_case(b"NIL") {
            self.pos += 3;
            return Ok(None);
        }
        self.string().map(Some)
    }
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

/// `1-Feb-1994` (RFC 3501 date-text).
pub fn parse_date(raw: &[u8]) -> Option<NaiveDate> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut it = text.trim().split('-');
    let day: u32 = it.next()?.trim().parse().ok()?;
    let month = it.next()?.to_ascii_uppercase();
    let month = MONTHS.iter().position(|m| *m == month)? as u32 + 1;
    let year: i32 = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    NaiveDate::from_ymd_opt(year, month, day)
}

/// `17-Jul-1996 02:44:25 -0700` (RFC 3501 date-time, day may be space-padded).
pub fn parse_date_time(raw: &[u8]) -> Option<DateTime<FixedOffset>> {
    let text = std::str::from_utf8(raw).ok()?.trim_start();
    let (date, rest) = text.split_once(' ')?;
    let (time, zone) = rest.split_once(' ')?;
    let date = parse_date(date.as_bytes())?;
    let time = chrono::NaiveTime::parse_from_str(time, "%H:%M:%S").ok()?;
    if zone.len() != 5 || !zone.is_ascii() {
        return None;
    }
    let sign = match zone.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let hours: i32 = zone[1..3].parse().ok()?;
    let minutes: i32 = zone[3..5].parse().ok()?;
    let offset = FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))?;
    date.and_time(time).and_local_timezone(offset).single()
}
