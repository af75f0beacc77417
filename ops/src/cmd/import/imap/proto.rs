//! Just enough of the IMAP4rev1 client side (RFC 3501) for an importer that lists, examines
//! and fetches: a bounded response reader (lines and literals, RFC 3501 section 4.3), a value
//! parser for the parts of responses we read, modified UTF-7 mailbox names (section 5.1.3) and
//! INTERNALDATE (section 9, `date-time`).
//!
//! Hand-written instead of a crate on purpose: the importer must bound what a hostile or broken
//! server can make it hold (a literal bigger than `max_message_size` is read and dropped, never
//! buffered; a line has a cap; every read has a timeout), and the IMAP crates that build on our
//! Rust (async-imap, imap-next) buffer whole responses with no per-literal limit of ours and
//! bring a second async stack. We need six commands and one response shape.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// The longest line (text between literals) of a response we accept. A FETCH of 100 messages'
/// flags and sizes is a few KB; a LIST line is small.
pub const MAX_LINE: usize = 1 << 20;
/// The most text (all lines, not literals) one response may have.
pub const MAX_RESPONSE_TEXT: usize = 4 << 20;
/// The most literals one response may carry (a FETCH has one body; a LIST at most one name).
pub const MAX_LITERALS: usize = 16;

/// Literal bytes one response may hold beyond one message (a mailbox name, a header).
const LITERAL_SLACK: u64 = 64 * 1024;

/// The byte that stands for a literal inside [`Response::text`]: NUL may not appear in IMAP text
/// (RFC 3501 section 9, CHAR8 excludes %x00), so a line carrying one is refused.
const LITERAL_MARK: u8 = 0;

/// A literal of a response: its bytes, or only its size when it was bigger than allowed and was
/// read and dropped.
#[derive(Debug)]
pub enum Literal {
    Bytes(Vec<u8>),
    TooBig(u64),
}

/// A whole response: its text with each literal replaced by one NUL, and the literals in order.
#[derive(Debug)]
pub struct Response {
    pub text: Vec<u8>,
    pub literals: Vec<Literal>,
}

/// What a response is (RFC 3501 section 7 and 2.2.2).
#[derive(Debug, PartialEq, Eq)]
pub enum Kind<'a> {
    Continuation,
    Untagged,
    Tagged(&'a str),
}

impl Response {
    pub fn kind(&self) -> Kind<'_> {
        if self.text.starts_with(b"+") {
            Kind::Continuation
        } else if self.text.starts_with(b"* ") {
            Kind::Untagged
        } else {
            let end = self.text.iter().position(|&b| b == b' ').unwrap_or(self.text.len());
            Kind::Tagged(std::str::from_utf8(&self.text[..end]).unwrap_or(""))
        }
    }

    /// A parser over the text after the tag (or `*`).
    pub fn parser(&mut self) -> Parser<'_> {
        let start = self
            .text
            .iter()
            .position(|&b| b == b' ')
            .map(|i| i + 1)
            .unwrap_or(self.text.len());
        Parser {
            text: &self.text,
            pos: start,
            literals: std::mem::take(&mut self.literals).into_iter(),
        }
    }

    /// The text for an error message: printable ASCII only, literals shown as `{…}`, shortened.
    pub fn display(&self) -> String {
        let mut out = String::new();
        for &b in self.text.iter().take(300) {
            match b {
                LITERAL_MARK => out.push_str("{…}"),
                0x20..=0x7e => out.push(b as char),
                _ => out.push('?'),
            }
        }
        out
    }
}

/// A parsed value (RFC 3501 section 9: atom, number, string, NIL, parenthesized list).
#[derive(Debug)]
pub enum Value {
    Nil,
    /// An atom or number, including flags (`\Seen`) and `BODY[]`.
    Atom(String),
    /// A quoted string's content or a literal's bytes.
    Str(Vec<u8>),
    /// A literal that was too big to keep.
    TooBig(u64),
    List(Vec<Value>),
}

impl Value {
    pub fn atom(&self) -> Option<&str> {
        match self {
            Value::Atom(a) => Some(a),
            _ => None,
        }
    }

    pub fn number(&self) -> Option<u64> {
        self.atom().and_then(|a| a.parse().ok())
    }

    /// An astring or nstring's bytes (NIL gives none).
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Atom(a) => Some(a.as_bytes()),
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

pub struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
    literals: std::vec::IntoIter<Literal>,
}

impl Parser<'_> {
    fn skip_spaces(&mut self) {
        while self.text.get(self.pos) == Some(&b' ') {
            self.pos += 1;
        }
    }

    /// If the next thing is `[CODE args]` (a resp-text-code, RFC 3501 section 7.1), its text.
    pub fn response_code(&mut self) -> Option<String> {
        self.skip_spaces();
        if self.text.get(self.pos) != Some(&b'[') {
            return None;
        }
        let end = self.text[self.pos..].iter().position(|&b| b == b']')? + self.pos;
        let code = String::from_utf8_lossy(&self.text[self.pos + 1..end]).into_owned();
        self.pos = end + 1;
        Some(code)
    }

    pub fn value(&mut self) -> Result<Value> {
        self.value_at_depth(0)
    }

    fn value_at_depth(&mut self, depth: usize) -> Result<Value> {
        // A FETCH response nests two lists deep; a hostile one cannot make us recurse far.
        if depth > 16 {
            bail!("the server's response nests too deeply");
        }
        self.skip_spaces();
        let Some(&first) = self.text.get(self.pos) else {
            bail!("the server's response ended early");
        };
        match first {
            b'(' => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_spaces();
                    match self.text.get(self.pos) {
                        Some(b')') => {
                            self.pos += 1;
                            return Ok(Value::List(items));
                        }
                        None => bail!("a list in the server's response is not closed"),
                        Some(_) => items.push(self.value_at_depth(depth + 1)?),
                    }
                }
            }
            b'"' => {
                self.pos += 1;
                let mut out = Vec::new();
                loop {
                    match self.text.get(self.pos) {
                        None => bail!("a quoted string in the server's response is not closed"),
                        Some(b'"') => {
                            self.pos += 1;
                            return Ok(Value::Str(out));
                        }
                        Some(b'\\') => {
                            let &c = self
                                .text
                                .get(self.pos + 1)
                                .ok_or_else(|| anyhow!("bad quoted string"))?;
                            out.push(c);
                            self.pos += 2;
                        }
                        Some(&c) => {
                            out.push(c);
                            self.pos += 1;
                        }
                    }
                }
            }
            LITERAL_MARK => {
                self.pos += 1;
                match self.literals.next() {
                    Some(Literal::Bytes(b)) => Ok(Value::Str(b)),
                    Some(Literal::TooBig(n)) => Ok(Value::TooBig(n)),
                    None => bail!("the server's response lost a literal"),
                }
            }
            _ => {
                let start = self.pos;
                let mut in_section = false;
                while let Some(&c) = self.text.get(self.pos) {
                    match c {
                        b'[' => in_section = true,
                        b']' => in_section = false,
                        b' ' | b'(' | b')' if !in_section => break,
                        b'"' | LITERAL_MARK => break,
                        _ => {}
                    }
                    self.pos += 1;
                }
                if self.pos == start {
                    bail!("unexpected {:?} in the server's response", first as char);
                }
                let atom = String::from_utf8_lossy(&self.text[start..self.pos]).into_owned();
                if atom.eq_ignore_ascii_case("NIL") {
                    Ok(Value::Nil)
                } else {
                    Ok(Value::Atom(atom))
                }
            }
        }
    }
}

/// A byte stream to an IMAP server, plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One argument of a command: sent as is, or as a string (quoted, or a literal when it must be).
pub enum Arg<'a> {
    Raw(&'a str),
    Str(&'a [u8]),
}

/// A connection: the stream, the tag counter and the limits.
pub struct Conn {
    pub io: BufReader<Box<dyn Stream>>,
    tag: u32,
    /// The longest wait for any read or write.
    pub timeout: Duration,
    /// Literals bigger than this are read and dropped ([`Literal::TooBig`]).
    pub max_literal: u64,
    /// The server takes non-synchronizing literals (RFC 7888 LITERAL+).
    pub literal_plus: bool,
}

impl Conn {
    pub fn new(stream: Box<dyn Stream>, timeout: Duration, max_literal: u64) -> Conn {
        Conn {
            io: BufReader::with_capacity(64 * 1024, stream),
            tag: 0,
            timeout,
            max_literal,
            literal_plus: false,
        }
    }

    async fn fill(&mut self) -> Result<&[u8]> {
        let timeout = self.timeout;
        let buf = tokio::time::timeout(timeout, self.io.fill_buf())
            .await
            .map_err(|_| anyhow!("the server sent nothing for {}s", timeout.as_secs()))?
            .context("reading from the server")?;
        if buf.is_empty() {
            bail!("the server closed the connection");
        }
        Ok(buf)
    }

    /// One line, without its CRLF, at most `limit` bytes.
    async fn read_line(&mut self, limit: usize) -> Result<Vec<u8>> {
        let mut line = Vec::new();
        loop {
            let buf = self.fill().await?;
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            if line.len() + take > limit + 2 {
                bail!("the server sent a line longer than {limit} bytes");
            }
            line.extend_from_slice(&buf[..take]);
            self.io.consume(take);
            if done {
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
        }
    }

    /// A literal of `size` bytes: kept when within `max_literal` and what is left of the
    /// response's `budget`, else read and dropped.
    async fn read_literal(&mut self, size: u64, budget: &mut u64) -> Result<Literal> {
        let keep = size <= self.max_literal && size <= *budget;
        if keep {
            *budget -= size;
        }
        let mut bytes = if keep {
            Vec::with_capacity(size as usize)
        } else {
            Vec::new()
        };
        let mut left = size;
        while left > 0 {
            let buf = self.fill().await?;
            let take = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            if keep {
                bytes.extend_from_slice(&buf[..take]);
            }
            self.io.consume(take);
            left -= take as u64;
        }
        Ok(if keep {
            Literal::Bytes(bytes)
        } else {
            Literal::TooBig(size)
        })
    }

    /// The next whole response: lines and the literals between them (RFC 3501 section 4.3).
    pub async fn read_response(&mut self) -> Result<Response> {
        let mut text = Vec::new();
        let mut literals = Vec::new();
        // All literals of one response together: one message and a little more (several
        // literals of max_literal each would multiply what one response can make us hold).
        let mut budget = self.max_literal.saturating_add(LITERAL_SLACK);
        loop {
            let room = MAX_RESPONSE_TEXT.saturating_sub(text.len()).min(MAX_LINE);
            let line = self.read_line(room).await?;
            if line.contains(&LITERAL_MARK) {
                bail!("the server sent a NUL byte in a response line");
            }
            match literal_size(&line) {
                Some((size, start)) => {
                    if literals.len() >= MAX_LITERALS {
                        bail!("the server sent more than {MAX_LITERALS} literals in one response");
                    }
                    text.extend_from_slice(&line[..start]);
                    text.push(LITERAL_MARK);
                    literals.push(self.read_literal(size, &mut budget).await?);
                }
                None => {
                    text.extend_from_slice(&line);
                    return Ok(Response { text, literals });
                }
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, async {
            let stream = self.io.get_mut();
            stream.write_all(bytes).await?;
            stream.flush().await
        })
        .await
        .map_err(|_| anyhow!("the server took nothing for {}s", timeout.as_secs()))?
        .context("writing to the server")
    }

    /// Send a command; its tag. Strings go quoted when they can (RFC 3501 section 4.3: no CR, LF,
    /// NUL or 8-bit), else as literals: non-synchronizing with LITERAL+, else after the server's
    /// continuation. Untagged responses that arrive while waiting for one are returned with the
    /// tag so the caller can handle them.
    pub async fn send(&mut self, args: &[Arg<'_>]) -> Result<(String, Vec<Response>)> {
        self.tag += 1;
        let tag = format!("t{}", self.tag);
        let mut line = tag.clone().into_bytes();
        let mut early = Vec::new();
        for arg in args {
            line.push(b' ');
            match arg {
                Arg::Raw(s) => line.extend_from_slice(s.as_bytes()),
                Arg::Str(s) if quotable(s) => {
                    line.push(b'"');
                    for &b in s.iter() {
                        if b == b'"' || b == b'\\' {
                            line.push(b'\\');
                        }
                        line.push(b);
                    }
                    line.push(b'"');
                }
                Arg::Str(s) => {
                    if self.literal_plus {
                        line.extend_from_slice(format!("{{{}+}}\r\n", s.len()).as_bytes());
                    } else {
                        line.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
                        self.write(&line).await?;
                        line.clear();
                        loop {
                            let response = self.read_response().await?;
                            match response.kind() {
                                Kind::Continuation => break,
                                Kind::Untagged => early.push(response),
                                Kind::Tagged(_) => {
                                    bail!("the server refused a literal: {}", response.display())
                                }
                            }
                        }
                    }
                    line.extend_from_slice(s);
                }
            }
        }
        line.extend_from_slice(b"\r\n");
        self.write(&line).await?;
        Ok((tag, early))
    }

    /// Send raw bytes (an AUTHENTICATE continuation answer).
    pub async fn send_line(&mut self, bytes: &[u8]) -> Result<()> {
        let mut line = bytes.to_vec();
        line.extend_from_slice(b"\r\n");
        self.write(&line).await
    }

    /// Run a command to its end; the untagged responses it produced. A NO or BAD is an error
    /// quoting the server; `* BYE` ends the session (RFC 3501 section 7.1.5).
    pub async fn run(&mut self, args: &[Arg<'_>]) -> Result<Vec<Response>> {
        let mut untagged = Vec::new();
        let mut held = 0;
        self.run_with(args, |r| {
            // A server that floods a small command's answer cannot make us hold it all.
            held += r.text.len() + 64;
            if held > MAX_RESPONSE_TEXT {
                bail!("the server's answer is larger than {MAX_RESPONSE_TEXT} bytes");
            }
            untagged.push(r);
            Ok(())
        })
        .await?;
        Ok(untagged)
    }

    /// [`Conn::run`], handing each untagged response to `each` as it arrives.
    pub async fn run_with(&mut self, args: &[Arg<'_>], mut each: impl FnMut(Response) -> Result<()>) -> Result<()> {
        let (tag, early) = self.send(args).await?;
        for r in early {
            each(r)?;
        }
        loop {
            let mut response = self.read_response().await?;
            match response.kind() {
                Kind::Untagged => {
                    if is_bye(&response) {
                        bail!("the server ended the session: {}", response.display());
                    }
                    each(response)?;
                }
                Kind::Continuation => bail!("unexpected continuation from the server"),
                Kind::Tagged(t) if t == tag => return check_tagged(&mut response),
                Kind::Tagged(_) => bail!("the server answered another command: {}", response.display()),
            }
        }
    }
}

/// Whether an untagged response is `* BYE`.
pub fn is_bye(response: &Response) -> bool {
    response.text.len() >= 5 && response.text[2..5].eq_ignore_ascii_case(b"BYE")
}

/// A tagged response: OK passes, NO and BAD become an error with the server's text.
pub fn check_tagged(response: &mut Response) -> Result<()> {
    let display = response.display();
    let mut p = response.parser();
    match p.value()?.atom().map(str::to_ascii_uppercase).as_deref() {
        Some("OK") => Ok(()),
        Some("NO") | Some("BAD") => bail!("the server said: {display}"),
        _ => bail!("the server sent a malformed answer: {display}"),
    }
}

fn quotable(s: &[u8]) -> bool {
    s.len() < 1024 && s.iter().all(|&b| (1..0x80).contains(&b) && b != b'\r' && b != b'\n')
}

/// `{123}` or `{123+}` at the end of a line: the size and where the marker starts.
fn literal_size(line: &[u8]) -> Option<(u64, usize)> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let digits = &inner[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some((std::str::from_utf8(digits).ok()?.parse().ok()?, open))
}

/// A mailbox name as the server sent it (modified UTF-7, RFC 3501 section 5.1.3) in UTF-8.
/// A name that is not valid modified UTF-7 is kept as it is (lossily), with a warning: some
/// servers send raw UTF-8.
pub fn decode_mailbox_name(raw: &[u8]) -> String {
    match std::str::from_utf8(raw).ok().and_then(shared::mutf7::decode) {
        Some(name) => name,
        None => {
            tracing::warn!(name = %String::from_utf8_lossy(raw), "mailbox name is not modified UTF-7; taken as it is");
            String::from_utf8_lossy(raw).into_owned()
        }
    }
}

/// INTERNALDATE, `"dd-Mon-yyyy hh:mm:ss +zzzz"` with a space-padded day (RFC 3501 section 9).
pub fn parse_internal_date(text: &[u8]) -> Option<DateTime<Utc>> {
    let text = std::str::from_utf8(text).ok()?.trim();
    DateTime::parse_from_str(text, "%d-%b-%Y %H:%M:%S %z")
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_names_decode() {
        assert_eq!(decode_mailbox_name(b"Entw&APw-rfe"), "Entwürfe");
        assert_eq!(decode_mailbox_name(b"A&-B"), "A&B");
        assert_eq!(decode_mailbox_name(b"&ZeVnLIqe-"), "日本語");
        assert_eq!(decode_mailbox_name(b"INBOX"), "INBOX");
        // Raw UTF-8 from a server that does not encode.
        assert_eq!(decode_mailbox_name("Grüße".as_bytes()), "Grüße");
    }

    #[test]
    fn internal_dates_parse() {
        let d = parse_internal_date(b" 5-Dec-2026 01:02:03 +0100").unwrap();
        assert_eq!(d.to_rfc3339(), "2026-12-05T00:02:03+00:00");
        let d = parse_internal_date(b"17-Jul-1996 02:44:25 -0700").unwrap();
        assert_eq!(d.to_rfc3339(), "1996-07-17T09:44:25+00:00");
        assert!(parse_internal_date(b"yesterday").is_none());
    }

    #[test]
    fn literal_markers() {
        assert_eq!(literal_size(b"* 1 FETCH (BODY[] {12}"), Some((12, 18)));
        assert_eq!(literal_size(b"x {3+}"), Some((3, 2)));
        assert_eq!(literal_size(b"x {}"), None);
        assert_eq!(literal_size(b"x {99999999999999999999}"), None);
    }

    #[test]
    fn deep_nesting_is_refused_not_recursed() {
        let mut text = b"* 1 FETCH ".to_vec();
        text.extend(std::iter::repeat_n(b'(', 100_000));
        let mut r = Response {
            text,
            literals: Vec::new(),
        };
        let mut p = r.parser();
        p.value().unwrap();
        p.value().unwrap();
        assert!(p.value().unwrap_err().to_string().contains("nests too deeply"));
    }

    #[test]
    fn fetch_values_parse() {
        let mut r = Response {
            text: b"* 3 FETCH (UID 7 FLAGS (\\Seen $Label1) INTERNALDATE \" 1-Jan-2020 00:00:00 +0000\" RFC822.SIZE 5 BODY[] \0)".to_vec(),
            literals: vec![Literal::Bytes(b"hello".to_vec())],
        };
        assert_eq!(r.kind(), Kind::Untagged);
        let mut p = r.parser();
        assert_eq!(p.value().unwrap().number(), Some(3));
        assert_eq!(p.value().unwrap().atom(), Some("FETCH"));
        let Value::List(items) = p.value().unwrap() else {
            panic!()
        };
        assert_eq!(items.len(), 10);
        assert_eq!(items[8].atom(), Some("BODY[]"));
        assert_eq!(items[9].bytes(), Some(&b"hello"[..]));
    }
}
