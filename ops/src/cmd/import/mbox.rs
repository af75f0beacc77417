//! `--mbox FILE`: an mbox file read as a stream, one message at a time.
//!
//! # Format
//!
//! Messages start with a `From ` line ("From_ line": `From sender date`) that follows a blank
//! line (or starts the file) and carries an asctime-style date (`Wed Jan 03 12:34:56 2024`,
//! Gmail writes `Wed Jan 03 12:34:56 +0000 2024`; an RFC 5322 date is taken too). A body line that merely starts with
//! `From ` is no separator unless it also follows a blank line and carries such a date, so
//! unquoted `From ` lines in bodies (sloppy mboxo writers) stay in their message.
//!
//! Quoting: mboxo writers turn a body line `From ...` into `>From ...` and leave `>From` alone;
//! mboxrd writers add one `>` to every line matching `^>*From `. Reading removes one `>` from
//! every line matching `^>+From ` (the mboxrd rule). For a file with no `>>From ` line, that is
//! exactly what the mboxo rule does too, so both readings agree; a file with `>>From ` lines is
//! taken as mboxrd, since mboxo writers never make them from `From ` lines (an mboxo file whose
//! mail itself contained `>>From ` would lose one `>` there; mboxo is ambiguous by nature).
//! mboxcl/mboxcl2 (Content-Length, no quoting) are read as mboxo.
//!
//! Line ends: LF or CRLF in the file; every stored message has CRLF (RFC 5322 §2.1, what IMAP
//! serves), so the same mail imported from an LF and a CRLF file is byte-identical. The blank
//! line that separates a message from the next From_ line is not part of the message.
//!
//! Headers are kept as they are in the file (8-bit included): the stored message is the mbox
//! message, `Status:`, `X-Status:`, `X-Gmail-Labels:` and the like included; they are also
//! read for flags and folders:
//!
//! - `Status:` `R` → `\Seen`; `X-Status:` `A` → `\Answered`, `F` → `\Flagged`, `T` → `\Draft`,
//!   `D` → `\Deleted` (mutt, Pine, Dovecot's mbox).
//! - `X-Mozilla-Status:` (Thunderbird, hex) 0x1 → `\Seen`, 0x2 → `\Answered`, 0x4 → `\Flagged`,
//!   0x1000 → `$Forwarded`; 0x8 (deleted in Thunderbird, not compacted yet) → skipped.
//! - `X-Keywords:` (Dovecot, mutt) and `X-Mozilla-Keys:` → keywords.
//! - `X-Gmail-Labels:` (Google Takeout, comma-separated, CSV-quoted) → see [`gmail_labels`].
//!
//! Internal date: the From_ line's date (taken as UTC when it names no zone), else the `Date:`
//! header, else now.
//!
//! Resume key: source `mbox`, key = the sha256 of the stored message bytes and its occurrence
//! number among identical messages in the file (`<hex>#<n>`), so a rerun, or a run on the same
//! file after more mail was appended to it, adds only the new mail.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use sha2::{Digest, Sha256};
use shared::blobs::{BlobId, BlobStore, BlobWriter};

use super::{Importer, Incoming, StoredBody};

/// The resume log's source name of mbox imports.
pub const SOURCE: &str = "mbox";

/// One message as read from the file.
#[derive(Debug)]
pub struct RawMessage {
    /// The From_ line (without its line end).
    pub from_line: Vec<u8>,
    /// The message (CRLF line ends, unquoted), or None when it was larger than the limit.
    pub body: Option<Vec<u8>>,
    /// Bytes of the message (as stored; counted on even when too large).
    pub size: u64,
    /// Bytes of the file it took, From_ line included.
    pub file_bytes: u64,
    /// A message larger than [`SPILL_AT`], read by a reader [`MboxReader::with_spill`]: the
    /// whole message (`size` bytes) was written to the blob store under this id as it was
    /// read, and `body` holds only its header (for flags, labels and dates).
    pub stored: Option<BlobId>,
}

/// Messages larger than this go to the blob store as they are read (one [`BlobWriter`]),
/// so memory stays bounded whatever their size (issue #11: a 50 MB message streams).
pub const SPILL_AT: u64 = super::PIPELINE_MAX;

/// The header block at the start of `message` (through its blank line), or all of it.
fn header_part(message: &[u8]) -> Vec<u8> {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or(message.len());
    message[..end].to_vec()
}

/// A streaming mbox reader: holds one message at a time, at most `max` bytes of it.
pub struct MboxReader<R> {
    reader: R,
    max: u64,
    /// The From_ line that starts the next message, once read.
    next_from: Option<(Vec<u8>, u64)>,
    started: bool,
    line: Vec<u8>,
    /// Where messages over [`SPILL_AT`] are streamed to (None: held in memory).
    spill: Option<BlobStore>,
}

/// One line of the file: its bytes up to a limit, and its full length.
struct Line {
    /// Whether the line was cut at the limit (the rest was read and dropped).
    truncated: bool,
    /// Bytes in the file, line end included.
    len: u64,
}

/// Read one line (through `\n`) into `buf`, keeping at most `limit` bytes of it: a line with
/// no end (a binary file) cannot take more memory than that.
fn read_line_bounded<R: BufRead>(reader: &mut R, buf: &mut Vec<u8>, limit: usize) -> std::io::Result<Option<Line>> {
    buf.clear();
    let mut len = 0u64;
    let mut truncated = false;
    loop {
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok((len > 0).then_some(Line { truncated, len }));
        }
        let (take, done) = match memchr(b'\n', chunk) {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let room = limit.saturating_sub(buf.len());
        if room < take {
            truncated = true;
        }
        buf.extend_from_slice(&chunk[..take.min(room)]);
        reader.consume(take);
        len += take as u64;
        if done {
            return Ok(Some(Line { truncated, len }));
        }
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

/// The line without its `\n` or `\r\n`.
fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

impl<R: BufRead> MboxReader<R> {
    pub fn new(reader: R, max: u64) -> MboxReader<R> {
        MboxReader {
            reader,
            max,
            next_from: None,
            started: false,
            line: Vec::new(),
            spill: None,
        }
    }

    /// Stream each message larger than [`SPILL_AT`] into `blobs` as it is read (see
    /// [`RawMessage::stored`]). The bytes, and so the blob id, are those of the in-memory path.
    pub fn with_spill(mut self, blobs: BlobStore) -> MboxReader<R> {
        self.spill = Some(blobs);
        self
    }

    /// The longest line kept whole: a From_ line or a header is far shorter; a longer body
    /// line makes its message too large anyway.
    fn line_limit(&self) -> usize {
        (self.max as usize).saturating_add(2)
    }

    /// The next message, or None at the end of the file.
    pub fn next_message(&mut self) -> anyhow::Result<Option<RawMessage>> {
        let limit = self.line_limit();
        if !self.started {
            self.started = true;
            // Leading blank lines are tolerated; then the first line must be a From_ line.
            loop {
                let Some(line) = read_line_bounded(&mut self.reader, &mut self.line, limit)? else {
                    return Ok(None);
                };
                if strip_eol(&self.line).is_empty() {
                    continue;
                }
                if line.truncated || !self.line.starts_with(b"From ") {
                    anyhow::bail!("not an mbox file: it does not start with a \"From \" line");
                }
                self.next_from = Some((strip_eol(&self.line).to_vec(), line.len));
                break;
            }
        }
        let Some((from_line, from_len)) = self.next_from.take() else {
            return Ok(None);
        };
        let mut body: Option<Vec<u8>> = Some(Vec::new());
        let mut size = 0u64;
        let mut file_bytes = from_len;
        let mut prev_blank = false;
        let mut writer: Option<BlobWriter> = None;
        let mut header: Option<Vec<u8>> = None;
        while let Some(line) = read_line_bounded(&mut self.reader, &mut self.line, limit)? {
            let content = strip_eol(&self.line);
            if prev_blank && !line.truncated && content.starts_with(b"From ") && from_line_date(content).is_some() {
                self.next_from = Some((content.to_vec(), line.len));
                break;
            }
            file_bytes += line.len;
            prev_blank = content.is_empty();
            // mboxrd unquoting (module docs): one '>' off `>+From `.
            let unquoted = match content.iter().position(|&b| b != b'>') {
                Some(n) if n > 0 && content[n..].starts_with(b"From ") => &content[1..],
                _ => content,
            };
            let ends = self.line.ends_with(b"\n");
            let added = unquoted.len() as u64 + if ends { 2 } else { 0 };
            size += added;
            if line.truncated || size > self.max {
                body = None;
                writer = None; // removes its temp file
            }
            if let Some(buf) = &mut body {
                buf.extend_from_slice(unquoted);
                if ends {
                    buf.extend_from_slice(b"\r\n");
                }
                if let Some(blobs) = &self.spill
                    && buf.len() as u64 >= SPILL_AT
                {
                    let writer = match &mut writer {
                        Some(writer) => writer,
                        None => {
                            header = Some(header_part(buf));
                            writer.insert(blobs.writer_blocking()?)
                        }
                    };
                    // The last two bytes stay behind: they may be the blank line before the
                    // next From_ line, which is cut below.
                    let cut = buf.len() - 2;
                    writer.write(&buf[..cut])?;
                    buf.drain(..cut);
                }
            }
        }
        // The blank line before the next From_ line (or the end) belongs to the mbox.
        if prev_blank {
            size = size.saturating_sub(2);
            if let Some(buf) = &mut body {
                buf.truncate(buf.len().saturating_sub(2));
            }
        }
        if size > self.max {
            body = None;
        }
        let mut stored = None;
        if let (Some(mut writer), Some(rest)) = (writer, body.as_ref()) {
            writer.write(rest)?;
            let (id, len) = writer.finish()?;
            anyhow::ensure!(
                len == size,
                "mbox reader: streamed {len} bytes of a {size}-byte message"
            );
            stored = Some(id);
            body = header;
        }
        Ok(Some(RawMessage {
            from_line,
            body,
            size,
            file_bytes,
            stored,
        }))
    }
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

/// The date of a From_ line (`From sender Wed Jan  3 12:34:56 2024`, optionally with a zone
/// such as `+0000` before or after the year, and `remote from host` after), as UTC.
pub fn from_line_date(line: &[u8]) -> Option<DateTime<Utc>> {
    let text = std::str::from_utf8(line.strip_prefix(b"From ")?).ok()?;
    let mut words = text.split_ascii_whitespace();
    words.next()?; // the sender
    let words: Vec<&str> = words.collect();
    // Some writers put an RFC 5322 date there (`Thu, 1 Feb 2024 08:00:00 +0000`).
    if let Ok(date) = DateTime::parse_from_rfc2822(&words.join(" ")) {
        return Some(date.with_timezone(&Utc));
    }
    // Find "Mon DD HH:MM[:SS]" and a year among the next few words.
    let month_at = words
        .iter()
        .take(3)
        .position(|w| MONTHS.contains(&w.to_ascii_lowercase().as_str()))?;
    let month = MONTHS.iter().position(|m| words[month_at].eq_ignore_ascii_case(m))? as u32 + 1;
    let day: u32 = words.get(month_at + 1)?.parse().ok()?;
    let time = words.get(month_at + 2)?;
    let time = NaiveTime::parse_from_str(time, "%H:%M:%S")
        .or_else(|_| NaiveTime::parse_from_str(time, "%H:%M"))
        .ok()?;
    let mut offset_secs = 0i64;
    let mut year = None;
    for word in words.iter().skip(month_at + 3).take(3) {
        if let Ok(y) = word.parse::<i32>()
            && (1970..=9999).contains(&y)
            && word.len() == 4
        {
            year = Some(y);
        } else if let Some(sign) = word.strip_prefix('+').map(|_| 1).or(word.strip_prefix('-').map(|_| -1))
            && word.len() == 5
            && let Ok(hhmm) = word[1..].parse::<i64>()
        {
            offset_secs = sign * ((hhmm / 100) * 3600 + (hhmm % 100) * 60);
        }
    }
    let date = NaiveDate::from_ymd_opt(year?, month, day)?;
    let local = NaiveDateTime::new(date, time);
    Some(DateTime::from_naive_utc_and_offset(local, Utc) - chrono::Duration::seconds(offset_secs))
}

/// The unfolded values of the header fields named `name` (case-insensitive), from a message's
/// header block, as (lossy) UTF-8.
pub fn header_values(raw: &[u8], name: &str) -> Vec<String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 2)
        .unwrap_or(raw.len());
    let header = &raw[..end];
    let mut out = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    for line in header.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            if let Some(value) = &mut current {
                value.push(b' ');
                value.extend_from_slice(line.trim_ascii());
            }
            continue;
        }
        if let Some(value) = current.take() {
            out.push(String::from_utf8_lossy(&value).into_owned());
        }
        if let Some(colon) = line.iter().position(|&b| b == b':')
            && line[..colon].trim_ascii().eq_ignore_ascii_case(name.as_bytes())
        {
            current = Some(line[colon + 1..].trim_ascii().to_vec());
        }
    }
    if let Some(value) = current {
        out.push(String::from_utf8_lossy(&value).into_owned());
    }
    out
}

/// Split a CSV line (Takeout's X-Gmail-Labels: `Inbox,"Label, with comma",Opened`).
fn split_csv(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    out.push(field);
    out.into_iter()
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty())
        .collect()
}

/// A header value with RFC 2047 encoded words (`=?UTF-8?Q?Entw=C3=BCrfe?=`) decoded; other
/// text as it is (8-bit text is taken as UTF-8, invalid bytes replaced).
pub fn decode_encoded_words(value: &str) -> String {
    if !value.contains("=?") {
        return value.to_string();
    }
    // mail-parser's RFC 2047 decoder, reached through an unstructured header.
    let message = format!("Subject: {value}\r\n\r\n");
    mail_parser::MessageParser::default()
        .parse(message.as_bytes())
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or_else(|| value.to_string())
}

/// What a message's Gmail labels mean here.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GmailLabels {
    /// Folders (IMAP names); empty when the labels name none (then the caller decides).
    pub folders: Vec<String>,
    pub flags: Vec<String>,
    /// `Some(true)`: "Opened"; `Some(false)`: "Unread"; None: neither label.
    pub seen: Option<bool>,
}

/// Google Takeout's `X-Gmail-Labels` values, mapped:
///
/// | label | here |
/// |---|---|
/// | `Inbox` | folder INBOX |
/// | `Sent` | the Sent mailbox |
/// | `Drafts` / `Draft` | the Drafts mailbox, and `\Draft` |
/// | `Spam` | the Junk mailbox |
/// | `Trash` | the Trash mailbox |
/// | `Archived` | the Archive mailbox, when no other label gives a folder (Gmail's "not in Inbox") |
/// | `Chat` | folder `Chats` (Hangouts/Chat transcripts Takeout exports as messages) |
/// | `Opened` / `Unread` | `\Seen` set / not set |
/// | `Starred` | `\Flagged` (not a folder) |
/// | `Important` | keyword `$Important` (not a folder) |
/// | `Category Personal`, `Category Social`, `Category Promotions`, `Category Updates`, `Category Forums` | dropped: Gmail's inbox tabs, not folders |
/// | any other label (`Work`, `Work/Projects`) | a folder of that name (Gmail nests labels with `/`) |
///
/// A message with several folder labels is stored once per folder (one body); one whose labels
/// name no folder goes to Archive (Gmail's "All Mail" without Inbox).
pub fn gmail_labels(value: &str) -> GmailLabels {
    let mut out = GmailLabels::default();
    let mut archived = false;
    let add_folder = |out: &mut GmailLabels, name: &str| {
        if !out.folders.iter().any(|f| f.eq_ignore_ascii_case(name)) {
            out.folders.push(name.to_string());
        }
    };
    for label in split_csv(value) {
        match label.to_ascii_lowercase().as_str() {
            "inbox" => add_folder(&mut out, "INBOX"),
            "sent" => add_folder(&mut out, "Sent"),
            "drafts" | "draft" => {
                add_folder(&mut out, "Drafts");
                out.flags.push("\\Draft".into());
            }
            "spam" => add_folder(&mut out, "Junk"),
            "trash" => add_folder(&mut out, "Trash"),
            "chat" => add_folder(&mut out, "Chats"),
            "archived" => archived = true,
            "opened" => out.seen = Some(true),
            "unread" => out.seen = Some(false),
            "starred" => out.flags.push("\\Flagged".into()),
            "important" => out.flags.push("$Important".into()),
            lower if lower.starts_with("category ") => {}
            _ => add_folder(&mut out, &label),
        }
    }
    if out.folders.is_empty() && archived {
        out.folders.push("Archive".into());
    }
    out
}

/// Flags from the mbox status headers (module docs), and whether Thunderbird marked the
/// message deleted.
pub fn status_flags(raw: &[u8]) -> (Vec<String>, bool) {
    let mut flags = Vec::new();
    let mut deleted = false;
    for value in header_values(raw, "Status") {
        if value.contains('R') {
            flags.push("\\Seen".to_string());
        }
    }
    for value in header_values(raw, "X-Status") {
        for (c, flag) in [
            ('A', "\\Answered"),
            ('F', "\\Flagged"),
            ('T', "\\Draft"),
            ('D', "\\Deleted"),
        ] {
            if value.contains(c) {
                flags.push(flag.to_string());
            }
        }
    }
    for value in header_values(raw, "X-Mozilla-Status") {
        let hex = value.trim().trim_start_matches("0x").trim_start_matches("0X");
        if let Ok(bits) = u32::from_str_radix(hex, 16) {
            for (bit, flag) in [
                (0x1, "\\Seen"),
                (0x2, "\\Answered"),
                (0x4, "\\Flagged"),
                (0x1000, "$Forwarded"),
            ] {
                if bits & bit != 0 {
                    flags.push(flag.to_string());
                }
            }
            deleted |= bits & 0x8 != 0;
        }
    }
    for value in header_values(raw, "X-Keywords")
        .into_iter()
        .chain(header_values(raw, "X-Mozilla-Keys"))
    {
        for word in value.split(|c: char| c == ',' || c.is_ascii_whitespace()) {
            if !word.is_empty() {
                flags.push(word.to_string());
            }
        }
    }
    (flags, deleted)
}

/// The `Date:` header as UTC (RFC 5322 §3.3), comments and a trailing zone name tolerated.
pub fn date_header(raw: &[u8]) -> Option<DateTime<Utc>> {
    let value = header_values(raw, "Date").into_iter().next()?;
    let value = match value.find('(') {
        Some(i) => value[..i].trim().to_string(),
        None => value.trim().to_string(),
    };
    DateTime::parse_from_rfc2822(&value)
        .ok()
        .map(|d| d.with_timezone(&Utc))
        // Some writers add a zone name after the offset (`+0000 UTC`).
        .or_else(|| {
            let cut = value.rsplit_once(' ')?.0;
            DateTime::parse_from_rfc2822(cut).ok().map(|d| d.with_timezone(&Utc))
        })
}

/// What one raw message becomes: the incoming message, or why it is skipped.
pub fn to_incoming(raw: Vec<u8>, from_line: &[u8], folder: Option<&str>, key: String) -> Result<Incoming, String> {
    let (mut flags, deleted) = status_flags(&raw);
    if deleted {
        return Err("deleted in Thunderbird (X-Mozilla-Status expunged bit)".into());
    }
    let mut folders = Vec::new();
    if let Some(labels) = header_values(&raw, "X-Gmail-Labels").into_iter().next() {
        let labels = gmail_labels(&decode_encoded_words(&labels));
        match labels.seen {
            Some(true) => flags.push("\\Seen".into()),
            Some(false) => flags.retain(|f| !f.eq_ignore_ascii_case("\\Seen")),
            None => {}
        }
        flags.extend(labels.flags);
        folders = labels.folders;
        if folders.is_empty() {
            folders.push("Archive".into());
        }
    }
    if let Some(folder) = folder {
        folders = vec![folder.to_string()];
    }
    let internal_date = from_line_date(from_line).or_else(|| date_header(&raw));
    Ok(Incoming {
        source: SOURCE.into(),
        key,
        folders,
        flags,
        internal_date,
        raw,
        stored: None,
    })
}

/// Import an mbox file.
pub async fn import(importer: &mut Importer, path: &Path, folder: Option<&str>) -> anyhow::Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let total = file.metadata().map(|m| m.len()).ok();
    importer.set_total(total, None);
    let what = format!("{}", path.display());
    read_all(
        importer,
        BufReader::with_capacity(1 << 16, file),
        folder,
        total.map(|t| (what, t)),
    )
    .await
}

/// Read and import every message; `quota_check`: the file's name and size, checked against
/// the free quota before the first message is stored (a file whose first message was imported
/// before is a resumed import: see [`Importer::check_quota`]).
async fn read_all<R: Read>(
    importer: &mut Importer,
    reader: BufReader<R>,
    folder: Option<&str>,
    mut quota_check: Option<(String, u64)>,
) -> anyhow::Result<()> {
    let mut reader = MboxReader::new(reader, importer.max_message_size()).with_spill(importer.blobs());
    let mut seen: HashMap<[u8; 32], u32> = HashMap::new();
    let mut number = 0u64;
    while importer.stopped().is_none() {
        let Some(message) = reader.next_message()? else {
            break;
        };
        number += 1;
        let what = format!("message {number} ({})", String::from_utf8_lossy(&message.from_line));
        let Some(raw) = message.body else {
            importer.skip(
                &format!("{what}, {} bytes", message.size),
                &format!(
                    "larger than max_message_size ({})",
                    shared::size::format_size(importer.max_message_size())
                ),
                message.file_bytes,
            );
            continue;
        };
        // The key is the sha256 of the stored bytes either way: a streamed message's blob id.
        let digest: [u8; 32] = match &message.stored {
            Some(id) => hex::decode(&id.0)
                .ok()
                .and_then(|d| d.try_into().ok())
                .context("a blob id is 64 hex digits")?,
            None => Sha256::digest(&raw).into(),
        };
        let occurrence = seen.entry(digest).or_insert(0);
        let key = format!("{}#{}", hex::encode(digest), occurrence);
        *occurrence += 1;
        if let Some((what, total)) = quota_check.take() {
            let resumed = importer.is_imported(SOURCE, &key).await?;
            importer.check_quota_of(&what, total, resumed).await?;
        }
        if importer.already_imported(SOURCE, &key, message.file_bytes).await? {
            continue;
        }
        match to_incoming(raw, &message.from_line, folder, key) {
            Ok(mut incoming) => {
                incoming.stored = message.stored.map(|blob| StoredBody {
                    blob,
                    size: message.size,
                });
                importer.add(incoming, message.file_bytes).await?
            }
            Err(reason) => importer.skip(&what, &reason, message.file_bytes),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &[u8], max: u64) -> Vec<RawMessage> {
        let mut reader = MboxReader::new(text, max);
        let mut out = Vec::new();
        while let Some(m) = reader.next_message().unwrap() {
            out.push(m);
        }
        out
    }

    #[test]
    fn splits_unquotes_and_converts_line_ends() {
        let file = b"From a@b Mon Jan  1 00:00:00 2024\nSubject: one\n\nFrom here on, a body line.\n>From quoted\n>>From twice\n\nFrom b@c Tue Jan  2 10:00:00 +0100 2024\r\nSubject: two\r\n\r\nbody\r\n\r\n";
        let messages = read(file, 1 << 20);
        assert_eq!(messages.len(), 2);
        assert_eq!(
            messages[0].body.as_deref().unwrap(),
            b"Subject: one\r\n\r\nFrom here on, a body line.\r\nFrom quoted\r\n>From twice\r\n"
        );
        assert_eq!(messages[1].body.as_deref().unwrap(), b"Subject: two\r\n\r\nbody\r\n");
        let total: u64 = messages.iter().map(|m| m.file_bytes).sum();
        assert_eq!(total, file.len() as u64);
        assert_eq!(
            from_line_date(&messages[1].from_line).unwrap().to_rfc3339(),
            "2024-01-02T09:00:00+00:00"
        );
    }

    #[test]
    fn too_large_is_dropped_not_held() {
        let mut file = b"From a@b Mon Jan  1 00:00:00 2024\nSubject: big\n\n".to_vec();
        file.extend(std::iter::repeat_n(b'x', 5000));
        file.extend_from_slice(b"\n\nFrom a@b Mon Jan  1 00:00:00 2024\nSubject: small\n\nok\n");
        let messages = read(&file, 1000);
        assert_eq!(messages.len(), 2);
        assert!(messages[0].body.is_none());
        assert!(messages[0].size > 1000);
        assert_eq!(messages[1].body.as_deref().unwrap(), b"Subject: small\r\n\r\nok\r\n");
    }

    /// A message over SPILL_AT is streamed to the blob store: the same bytes (so the same
    /// key) as the in-memory reading, the blank line before the next From_ line cut, quoting
    /// undone, and only the header kept in memory.
    #[test]
    fn large_messages_spill_to_the_blob_store_with_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::new(dir.path().join("blobs"));
        let mut file = b"From a@b Mon Jan  1 00:00:00 2024\nSubject: big\n\n".to_vec();
        while (file.len() as u64) < 3 * SPILL_AT {
            file.extend_from_slice(b"line\n>From quoted\n\nFrom not a separator\n");
        }
        file.extend_from_slice(b"\nFrom a@b Mon Jan  1 00:00:00 2024\nSubject: small\n\nok\n\n");
        let plain = read(&file, 1 << 30);
        let mut reader = MboxReader::new(&file[..], 1 << 30).with_spill(blobs.clone());
        let big = reader.next_message().unwrap().unwrap();
        let small = reader.next_message().unwrap().unwrap();
        assert!(reader.next_message().unwrap().is_none());
        let id = big.stored.expect("streamed");
        let want = plain[0].body.as_deref().unwrap();
        assert_eq!(id, BlobId::of(want));
        assert_eq!(big.size, want.len() as u64);
        assert_eq!(std::fs::read(blobs.path(&id)).unwrap(), want);
        assert_eq!(big.body.as_deref().unwrap(), b"Subject: big\r\n\r\n");
        assert_eq!(big.file_bytes, plain[0].file_bytes);
        assert!(small.stored.is_none());
        assert_eq!(small.body, plain[1].body);
        // Over the limit: nothing stored, no temp file left.
        let mut reader = MboxReader::new(&file[..], 2 * SPILL_AT).with_spill(blobs.clone());
        assert!(reader.next_message().unwrap().unwrap().body.is_none());
        assert_eq!(std::fs::read_dir(dir.path().join("blobs/tmp")).unwrap().count(), 0);
    }

    #[test]
    fn not_an_mbox() {
        let mut reader = MboxReader::new(&b"Subject: x\n\nbody\n"[..], 100);
        assert!(reader.next_message().is_err());
    }

    #[test]
    fn gmail_label_mapping() {
        let l = gmail_labels("Inbox,Important,Opened,\"Work, 2024\",Category Updates,Starred");
        assert_eq!(l.folders, vec!["INBOX".to_string(), "Work, 2024".to_string()]);
        assert_eq!(l.flags, vec!["$Important".to_string(), "\\Flagged".to_string()]);
        assert_eq!(l.seen, Some(true));
        let l = gmail_labels("Archived,Unread,Category Promotions");
        assert_eq!(l.folders, vec!["Archive".to_string()]);
        assert_eq!(l.seen, Some(false));
        let l = gmail_labels("Archived,Receipts");
        assert_eq!(l.folders, vec!["Receipts".to_string()]);
    }

    #[test]
    fn encoded_labels() {
        let labels = gmail_labels(&decode_encoded_words("Inbox,=?UTF-8?Q?Entw=C3=BCrfe?="));
        assert_eq!(labels.folders, vec!["INBOX".to_string(), "Entwürfe".to_string()]);
        assert_eq!(decode_encoded_words("Inbox,Work"), "Inbox,Work");
    }

    #[test]
    fn status_headers() {
        let raw = b"Status: RO\r\nX-Status: AF\r\nX-Keywords: $Label1 todo\r\n\r\nbody";
        let (flags, deleted) = status_flags(raw);
        assert_eq!(flags, vec!["\\Seen", "\\Answered", "\\Flagged", "$Label1", "todo"]);
        assert!(!deleted);
        let (_, deleted) = status_flags(b"X-Mozilla-Status: 0009\r\n\r\n");
        assert!(deleted);
    }

    #[test]
    fn dates() {
        assert!(from_line_date(b"From here on, a body line.").is_none());
        assert_eq!(
            from_line_date(b"From a@b Thu, 1 Feb 2024 08:00:00 +0100")
                .unwrap()
                .to_rfc3339(),
            "2024-02-01T07:00:00+00:00"
        );
        assert_eq!(
            from_line_date(b"From MAILER-DAEMON Sat Dec  5 01:02:03 2026")
                .unwrap()
                .to_rfc3339(),
            "2026-12-05T01:02:03+00:00"
        );
        let raw = b"Date: Tue, 1 Jul 2003 10:52:37 +0200 (CEST)\r\n\r\n";
        assert_eq!(date_header(raw).unwrap().to_rfc3339(), "2003-07-01T08:52:37+00:00");
    }
}
