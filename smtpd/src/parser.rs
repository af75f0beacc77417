//! Parsers without I/O: command lines (through smtp-proto) and the DATA byte stream
//! (dot-stuffing and the end-of-data sequence, RFC 5321 §4.5.2 and §4.1.1.4).

use smtp_proto::{Error as ProtoError, Request};

use crate::reply::Reply;

/// Why a command line was refused; each maps to its reply code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// 500: not a command we know (RFC 5321 §4.2.4).
    Unknown,
    /// 501: syntax error in the arguments.
    Syntax(String),
    /// 555: a MAIL/RCPT parameter we do not support (RFC 5321 §4.1.1.11).
    Parameter(String),
    /// 500 5.5.2: the line does not fit the configured limit (RFC 5321 §4.5.3.1.4).
    TooLong,
}

impl CommandError {
    pub fn reply(&self) -> Reply {
        match self {
            CommandError::Unknown => Reply::new(500, "5.5.2", "Command not recognized"),
            CommandError::Syntax(s) => Reply::new(501, "5.5.4", format!("Syntax: {s}")),
            CommandError::Parameter(p) => Reply::new(555, "5.5.4", format!("Unsupported parameter {p}")),
            CommandError::TooLong => Reply::new(500, "5.5.2", "Line too long"),
        }
    }
}

/// Parse one command line (with or without its CRLF).
pub fn parse_command(line: &[u8]) -> Result<Request<String>, CommandError> {
    let mut owned;
    let line = if line.ends_with(b"\n") {
        line
    } else {
        owned = line.to_vec();
        owned.push(b'\n');
        &owned[..]
    };
    if !line.is_ascii() && std::str::from_utf8(line).is_err() {
        return Err(CommandError::Syntax("command is not valid UTF-8".into()));
    }
    // RFC 5321 §4.1.2: a command's words are printable characters and spaces. A control
    // character (a NUL, a lone CR) would otherwise reach the replies (EHLO echoes its name)
    // and the Received header written from the EHLO name.
    let words = line.strip_suffix(b"\n").unwrap_or(line);
    let words = words.strip_suffix(b"\r").unwrap_or(words);
    if words.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(CommandError::Syntax("control character in the command".into()));
    }
    match Request::parse(&mut line.iter()) {
        Ok(request) => Ok(request),
        Err(ProtoError::UnknownCommand) => Err(CommandError::Unknown),
        Err(ProtoError::InvalidSenderAddress) => Err(CommandError::Syntax("invalid sender address".into())),
        Err(ProtoError::InvalidRecipientAddress) => Err(CommandError::Syntax("invalid recipient address".into())),
        Err(ProtoError::SyntaxError { syntax }) => Err(CommandError::Syntax(syntax.into())),
        Err(ProtoError::InvalidParameter { param }) => Err(CommandError::Syntax(format!("invalid {param}"))),
        Err(ProtoError::UnsupportedParameter { param }) => Err(CommandError::Parameter(param)),
        Err(ProtoError::ResponseTooLong) => Err(CommandError::TooLong),
        Err(ProtoError::NeedsMoreData { .. }) => Err(CommandError::Syntax("incomplete command".into())),
        Err(ProtoError::InvalidResponse { .. }) => Err(CommandError::Unknown),
    }
}

/// Where the DATA decoder is inside the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataState {
    /// After CRLF (or at the very start): a '.' here is special.
    LineStart,
    /// Inside a line.
    Mid,
    /// Saw CR inside a line.
    Cr,
    /// Saw '.' at the start of a line.
    Dot,
    /// Saw ".<CR>" at the start of a line.
    DotCr,
}

/// Decodes the DATA stream: removes dot-stuffing, finds `CRLF.CRLF`, stops storing past a size
/// limit (but keeps reading to the end so the session stays in step), and notes bare CR or LF.
///
/// RFC 5321 §2.3.8: only CRLF ends a line, and only `CRLF.CRLF` ends the data; a bare LF
/// never does (that is what "SMTP smuggling" abuses), so `\n.\n` is just data here and the
/// message is refused afterwards for its bare line feed.
#[derive(Debug)]
pub struct DataDecoder {
    state: DataState,
    limit: usize,
    pub body: Vec<u8>,
    /// More than `limit` bytes arrived.
    pub too_big: bool,
    /// A CR or LF that was not part of a CRLF pair was seen.
    pub bare_newline: bool,
}

impl DataDecoder {
    pub fn new(limit: usize) -> DataDecoder {
        DataDecoder {
            state: DataState::LineStart,
            limit,
            body: Vec::new(),
            too_big: false,
            bare_newline: false,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.body.len() + bytes.len() > self.limit {
            self.too_big = true;
        } else if !self.too_big {
            self.body.extend_from_slice(bytes);
        }
    }

    /// Feed bytes; returns how many were used and whether the end of data was reached
    /// (bytes after the end belong to the next command).
    pub fn feed(&mut self, input: &[u8]) -> (usize, bool) {
        for (i, &b) in input.iter().enumerate() {
            match self.state {
                DataState::LineStart => match b {
                    b'.' => self.state = DataState::Dot,
                    _ => self.mid(b),
                },
                DataState::Mid => self.mid(b),
                DataState::Cr => {
                    if b == b'\n' {
                        self.push(b"\r\n");
                        self.state = DataState::LineStart;
                    } else {
                        self.bare_newline = true;
                        self.push(b"\r");
                        self.mid(b);
                    }
                }
                DataState::Dot => match b {
                    b'\r' => self.state = DataState::DotCr,
                    // §4.5.2: a leading dot is removed; the rest of the line is data.
                    _ => self.mid(b),
                },
                DataState::DotCr => {
                    if b == b'\n' {
                        self.state = DataState::LineStart;
                        return (i + 1, true);
                    }
                    self.bare_newline = true;
                    self.push(b"\r");
                    self.mid(b);
                }
            }
        }
        (input.len(), false)
    }

    fn mid(&mut self, b: u8) {
        match b {
            b'\r' => self.state = DataState::Cr,
            b'\n' => {
                self.bare_newline = true;
                self.push(b"\n");
                self.state = DataState::Mid;
            }
            _ => {
                self.push(&[b]);
                self.state = DataState::Mid;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(chunks: &[&[u8]]) -> (Vec<u8>, bool, bool, Vec<u8>) {
        let mut d = DataDecoder::new(1000);
        for (n, chunk) in chunks.iter().enumerate() {
            let (used, done) = d.feed(chunk);
            if done {
                let rest: Vec<u8> = chunk[used..]
                    .iter()
                    .chain(chunks[n + 1..].iter().flat_map(|c| c.iter()))
                    .copied()
                    .collect();
                return (d.body, true, d.bare_newline, rest);
            }
        }
        (d.body, false, d.bare_newline, vec![])
    }

    #[test]
    fn commands() {
        assert!(matches!(parse_command(b"EHLO x\r\n"), Ok(Request::Ehlo { .. })));
        for line in [
            &b"EHLO a\0b\r\n"[..],
            b"HELO a\rb\r\n",
            b"EHLO a\x7fb\r\n",
            b"NOOP \x01\r\n",
        ] {
            assert!(matches!(parse_command(line), Err(CommandError::Syntax(_))), "{line:?}");
        }
        assert!(matches!(parse_command(b"EHLO x\n"), Ok(Request::Ehlo { .. })));
        assert!(matches!(
            parse_command(b"MAIL FROM:<a@b.c> SIZE=10\r\n"),
            Ok(Request::Mail { from }) if from.size == 10 && from.address == "a@b.c"
        ));
        assert!(matches!(parse_command(b"MAIL FROM:<>\r\n"), Ok(Request::Mail { from }) if from.address.is_empty()));
        assert_eq!(parse_command(b"FOO\r\n"), Err(CommandError::Unknown));
        assert!(matches!(
            parse_command(b"MAIL TO:<a@b>\r\n"),
            Err(CommandError::Syntax(_))
        ));
        assert!(matches!(
            parse_command(b"BDAT 5 LAST\r\n"),
            Ok(Request::Bdat {
                chunk_size: 5,
                is_last: true
            })
        ));
        assert!(parse_command(b"\xff\xfe\r\n").is_err());
    }

    #[test]
    fn dot_stuffing_and_end() {
        let (body, done, bare, rest) = decode(&[b"a\r\n..b\r\n.\r\nQUIT\r\n"]);
        assert!(done && !bare);
        assert_eq!(body, b"a\r\n.b\r\n");
        assert_eq!(rest, b"QUIT\r\n");
    }

    #[test]
    fn end_split_across_reads() {
        let (body, done, _, _) = decode(&[b"x\r", b"\n.", b"\r", b"\n"]);
        assert!(done);
        assert_eq!(body, b"x\r\n");
    }

    #[test]
    fn bare_lf_never_ends_data() {
        let (body, done, bare, _) = decode(&[b"a\n.\nb\r\n.\r\n"]);
        assert!(done && bare);
        assert_eq!(body, b"a\n.\nb\r\n");
    }

    #[test]
    fn size_limit() {
        let mut d = DataDecoder::new(3);
        let (_, done) = d.feed(b"abcdef\r\n.\r\n");
        assert!(done && d.too_big && d.body.len() <= 3);
    }
}
