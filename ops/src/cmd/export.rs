//! `tinydc export ADDRESS --maildir DIR | --mbox DIR`: every folder of one person, in a format
//! other mail software reads, so nobody is locked in.
//!
//! - Maildir: Dovecot's Maildir++ layout (doc.dovecot.org, "Maildir Mailbox Format"): INBOX is
//!   DIR/{cur,new,tmp}, folder `A/B` is DIR/.A.B with each level in modified UTF-7 (RFC 3501
//!   §5.1.3, as Dovecot stores names on disk), messages in cur/ named
//!   `<time>.<unique>.<host>,S=<size>:2,<flags>` (cr.yp.to/proto/maildir.html, "info"), keywords
//!   as letters a..z listed in the folder's `dovecot-keywords`, UIDs and UIDVALIDITY in
//!   `dovecot-uidlist` (version 3), and each file's mtime set to the INTERNALDATE.
//! - mbox: one mboxrd file per folder: a From_ line with the INTERNALDATE in asctime form, body
//!   lines matching `^>*From ` quoted with one more `>`, and the flags as `Status:`,
//!   `X-Status:`, `X-Keywords:` (mutt, Dovecot) and `X-Mozilla-Status:` (Thunderbird) headers.
//!
//! Bodies are streamed from their blobs through a bounded buffer, never held whole in memory.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, FileTimes};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use clap::{ArgGroup, Args};
use indicatif::{ProgressBar, ProgressStyle};
use shared::accounts;
use shared::blobs::{BlobId, BlobStore};
use shared::mailstore::{DELIMITER, MailStore, Mailbox, StoredMessage};
use shared::size::format_size;

use crate::admin::with_admin;

/// Messages whose metadata is read per database round trip.
const BATCH: usize = 256;
/// The longest piece of a line handled at once (longer lines are streamed in pieces).
const CHUNK: u64 = 64 * 1024;
/// Dovecot's maildir keywords: letters a..z (doc.dovecot.org, "Maildir Mailbox Format").
const MAX_KEYWORDS: usize = 26;

#[derive(Args)]
#[command(group(ArgGroup::new("format").required(true).args(["maildir", "mbox"])))]
pub struct ExportArgs {
    /// The person whose mail is exported.
    address: String,
    /// Write a Maildir++ tree (the layout Dovecot and Courier read) into DIR.
    #[arg(long, value_name = "DIR")]
    maildir: Option<PathBuf>,
    /// Write one mbox file (mboxrd) per folder into DIR (Thunderbird's import, mutt).
    #[arg(long, value_name = "DIR")]
    mbox: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Maildir,
    Mbox,
}

/// What an export did.
#[derive(Default)]
struct Totals {
    messages: u64,
    bytes: u64,
    folders: u64,
    /// Messages left out (body missing or unreadable), described for the summary.
    failed: Vec<String>,
}

pub async fn run(data: &Path, args: ExportArgs) -> anyhow::Result<()> {
    let address = accounts::normalize_address(&args.address)?;
    let (format, dir) = match (args.maildir, args.mbox) {
        (Some(dir), None) => (Format::Maildir, dir),
        (None, Some(dir)) => (Format::Mbox, dir),
        _ => bail!("give exactly one of --maildir DIR and --mbox DIR"),
    };
    prepare_dir(&dir)?;
    with_admin(data, async |admin| {
        let user = accounts::get_user(&admin.db, &address).await?;
        let store = MailStore::new(admin.db.clone(), BlobStore::new(admin.config.blobs_dir()));
        let host = maildir_host(&admin.config.server.hostname);
        let mailboxes = store.list_mailboxes(user.id).await?;
        let mut folders = Vec::new();
        let mut total_messages = 0;
        for mailbox in mailboxes {
            let states = store.message_states(user.id, mailbox.id).await?;
            total_messages += states.len() as u64;
            folders.push((mailbox, states));
        }
        let progress = ProgressBar::new(total_messages);
        progress.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} messages {msg} ({eta} left)")
                .expect("valid progress template"),
        );
        let mut totals = Totals::default();
        let mut used_names = HashSet::new();
        for (mailbox, states) in folders {
            progress.set_message(mailbox.name.clone());
            let uids: Vec<u32> = states.iter().map(|s| s.uid).collect();
            let mut keywords: Vec<String> = Vec::new();
            for state in &states {
                for flag in state.flags.iter().filter(|f| !f.starts_with('\\')) {
                    if !keywords.iter().any(|k| k.eq_ignore_ascii_case(flag)) {
                        keywords.push(flag.clone());
                    }
                }
            }
            let mut folder = match format {
                Format::Maildir => Folder::maildir(&dir, &mailbox, &mut used_names, keywords, &host)?,
                Format::Mbox => Folder::mbox(&dir, &mailbox, &mut used_names)?,
            };
            // `fetch_light` leaves the flags out (an IMAP session has them in its view): the
            // export takes them from the states it read first.
            let flags_of: HashMap<u32, &Vec<String>> = states.iter().map(|s| (s.uid, &s.flags)).collect();
            for batch in uids.chunks(BATCH) {
                let mut messages = store.fetch_light(user.id, mailbox.id, batch).await?;
                for message in &mut messages {
                    if let Some(flags) = flags_of.get(&message.uid) {
                        message.flags = (*flags).clone();
                    }
                }
                tokio::task::block_in_place(|| -> anyhow::Result<()> {
                    for message in &messages {
                        match folder.write(store.blobs(), message) {
                            Ok(bytes) => {
                                totals.messages += 1;
                                totals.bytes += bytes;
                            }
                            Err(e) => {
                                tracing::warn!(address = %user.address, folder = %mailbox.name,
                                    uid = message.uid, "export: message left out: {e:#}");
                                let line = format!("{} uid {}: {e:#}", mailbox.name, message.uid);
                                progress.suspend(|| println!("error: {line}"));
                                totals.failed.push(line);
                            }
                        }
                        progress.inc(1);
                    }
                    Ok(())
                })?;
                progress.set_message(format!("{} ({})", mailbox.name, format_size(totals.bytes)));
            }
            tokio::task::block_in_place(|| folder.finish())?;
            totals.folders += 1;
        }
        progress.finish_and_clear();
        println!(
            "exported {} message(s) ({}) in {} folder(s) of {} to {} ({})",
            totals.messages,
            format_size(totals.bytes),
            totals.folders,
            user.address,
            dir.display(),
            match format {
                Format::Maildir => "Maildir++",
                Format::Mbox => "mboxrd, one file per folder",
            }
        );
        if !totals.failed.is_empty() {
            bail!(
                "{} message(s) could not be exported (their bodies are missing or unreadable; `tinydc check` names them)",
                totals.failed.len()
            );
        }
        Ok(())
    })
    .await
}

/// Make `dir` (private: 0700) or accept it when it exists and is empty. A non-empty one is
/// refused: an export never mixes with or overwrites other mail.
fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "refusing to export into {}: it is not empty (name a new or empty directory)",
                    dir.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display())),
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}

/// One folder being written.
enum Folder {
    Maildir(MaildirFolder),
    Mbox(MboxFolder),
}

impl Folder {
    fn maildir(
        root: &Path,
        mailbox: &Mailbox,
        used: &mut HashSet<String>,
        keywords: Vec<String>,
        host: &str,
    ) -> anyhow::Result<Folder> {
        let dir = if mailbox.name == "INBOX" {
            root.to_path_buf()
        } else {
            root.join(unique(used, maildir_folder_name(&mailbox.name), mailbox.id))
        };
        for sub in ["cur", "new", "tmp"] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        if mailbox.name != "INBOX" {
            // Maildir++: a folder's directory holds an empty `maildirfolder` file.
            private_file(&dir.join("maildirfolder"))?;
        }
        if keywords.len() > MAX_KEYWORDS {
            tracing::warn!(folder = %mailbox.name, count = keywords.len(), "more keywords than Maildir letters");
            println!(
                "note: {}: {} keywords, Maildir holds {MAX_KEYWORDS}; the rest are left off",
                mailbox.name,
                keywords.len()
            );
        }
        let keywords: Vec<String> = keywords.into_iter().take(MAX_KEYWORDS).collect();
        let mut list = String::new();
        for (i, keyword) in keywords.iter().enumerate() {
            list.push_str(&format!("{i} {keyword}\n"));
        }
        if !keywords.is_empty() {
            write_private(&dir.join("dovecot-keywords"), list.as_bytes())?;
        }
        Ok(Folder::Maildir(MaildirFolder {
            uidlist: format!("3 V{} N{}\n", mailbox.uidvalidity, mailbox.uidnext),
            dir,
            keywords,
            host: host.to_string(),
            uidvalidity: mailbox.uidvalidity,
        }))
    }

    fn mbox(root: &Path, mailbox: &Mailbox, used: &mut HashSet<String>) -> anyhow::Result<Folder> {
        let name = unique(used, mbox_file_name(&mailbox.name), mailbox.id);
        let path = root.join(format!("{name}.mbox"));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(Folder::Mbox(MboxFolder {
            out: BufWriter::with_capacity(CHUNK as usize, file),
            path,
        }))
    }

    /// Write one message; its bytes.
    fn write(&mut self, blobs: &BlobStore, message: &StoredMessage) -> anyhow::Result<u64> {
        if !BlobId::is_valid(&message.blob.0) {
            bail!("body id {:?} is not a blob name", message.blob.0);
        }
        let path = blobs.path(&message.blob);
        let body = File::open(&path).with_context(|| format!("body {} unreadable", message.blob))?;
        match self {
            Folder::Maildir(f) => f.write(body, message),
            Folder::Mbox(f) => f.write(body, message),
        }
    }

    fn finish(self) -> anyhow::Result<()> {
        match self {
            Folder::Maildir(f) => {
                write_private(&f.dir.join("dovecot-uidlist"), f.uidlist.as_bytes())?;
                shared::blobs::sync_dir(&f.dir.join("cur"))?;
                Ok(())
            }
            Folder::Mbox(f) => {
                let file = f
                    .out
                    .into_inner()
                    .map_err(|e| e.into_error())
                    .with_context(|| format!("writing {}", f.path.display()))?;
                file.sync_all()?;
                Ok(())
            }
        }
    }
}

struct MaildirFolder {
    dir: PathBuf,
    keywords: Vec<String>,
    host: String,
    uidvalidity: u32,
    uidlist: String,
}

impl MaildirFolder {
    fn write(&mut self, mut body: File, message: &StoredMessage) -> anyhow::Result<u64> {
        let size = body.metadata()?.len();
        // Unique by (UIDVALIDITY, UID) within the folder; the time part is the INTERNALDATE.
        let base = format!(
            "{}.T{}U{}.{}",
            message.internal_date.timestamp().max(0),
            self.uidvalidity,
            message.uid,
            self.host
        );
        // Dovecot's uidlist names a message by its file name up to the info (":2,") part.
        let base = format!("{base},S={size}");
        let name = format!("{base}:2,{}", maildir_flags(&message.flags, &self.keywords));
        let temp = self.dir.join("tmp").join(&base);
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .with_context(|| format!("creating {}", temp.display()))?;
        let copied = std::io::copy(&mut body, &mut out)?;
        let time = system_time(message.internal_date);
        out.set_times(FileTimes::new().set_modified(time).set_accessed(time))?;
        out.sync_all()?;
        drop(out);
        fs::rename(&temp, self.dir.join("cur").join(&name))?;
        self.uidlist.push_str(&format!("{} :{base}\n", message.uid));
        Ok(copied)
    }
}

struct MboxFolder {
    out: BufWriter<File>,
    path: PathBuf,
}

impl MboxFolder {
    fn write(&mut self, body: File, message: &StoredMessage) -> anyhow::Result<u64> {
        let eol: &[u8] = if message.header.windows(2).any(|w| w == b"\r\n") {
            b"\r\n"
        } else {
            b"\n"
        };
        let out = &mut self.out;
        // The From_ line: "From " sender, then the date in asctime(3) form.
        writeln!(
            out,
            "From MAILER-DAEMON {}",
            message.internal_date.format("%a %b %e %H:%M:%S %Y")
        )?;
        for header in mbox_flag_headers(&message.flags) {
            out.write_all(header.as_bytes())?;
            out.write_all(eol)?;
        }
        let written = copy_mboxrd(BufReader::with_capacity(CHUNK as usize, body), out)?;
        // An empty line ends each message (and a last line without its newline gets one).
        if !written.ended_with_newline {
            out.write_all(b"\n")?;
        }
        out.write_all(b"\n")?;
        Ok(written.bytes)
    }
}

/// Headers that carry IMAP flags in mbox files; the message's own copies are dropped.
const FLAG_HEADERS: [&str; 4] = ["status", "x-status", "x-keywords", "x-mozilla-status"];

/// `Status:` (R read, O old), `X-Status:` (A answered, F flagged, T draft, D deleted),
/// `X-Keywords:` and Thunderbird's `X-Mozilla-Status:` for `flags`.
fn mbox_flag_headers(flags: &[String]) -> Vec<String> {
    let has = |f: &str| flags.iter().any(|x| x.eq_ignore_ascii_case(f));
    let mut out = vec![format!("Status: {}O", if has("\\Seen") { "R" } else { "" })];
    let mut x = String::new();
    for (flag, letter) in [
        ("\\Answered", 'A'),
        ("\\Flagged", 'F'),
        ("\\Draft", 'T'),
        ("\\Deleted", 'D'),
    ] {
        if has(flag) {
            x.push(letter);
        }
    }
    if !x.is_empty() {
        out.push(format!("X-Status: {x}"));
    }
    let keywords: Vec<&str> = flags
        .iter()
        .filter(|f| !f.starts_with('\\'))
        .map(String::as_str)
        .collect();
    if !keywords.is_empty() {
        out.push(format!("X-Keywords: {}", keywords.join(" ")));
    }
    // Thunderbird (nsMsgMessageFlags): 0x1 read, 0x2 replied, 0x4 marked, 0x8 expunged.
    let mozilla = u16::from(has("\\Seen"))
        | u16::from(has("\\Answered")) << 1
        | u16::from(has("\\Flagged")) << 2
        | u16::from(has("\\Deleted")) << 3;
    out.push(format!("X-Mozilla-Status: {mozilla:04x}"));
    out
}

struct Copied {
    bytes: u64,
    ended_with_newline: bool,
}

/// Copy a message into an mbox: drop its own flag headers (the header block ends at the first
/// empty line) and quote every line matching `^>*From ` with one more `>` (mboxrd), reading
/// pieces of at most [`CHUNK`] bytes so a huge line costs no more memory than a short one.
fn copy_mboxrd(mut input: impl BufRead, out: &mut impl Write) -> std::io::Result<Copied> {
    let mut buf = Vec::with_capacity(CHUNK as usize);
    let mut bytes = 0;
    let mut at_line_start = true;
    // Inside a run of '>' that began a line (a piece boundary fell inside it).
    let mut in_quote_run = false;
    let mut in_header = true;
    // Dropping a flag header and its continuation lines.
    let mut dropping = false;
    let mut ended_with_newline = true;
    loop {
        buf.clear();
        let n = (&mut input).take(CHUNK).read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        let starts_line = at_line_start;
        let mut ends_line = buf.ends_with(b"\n");
        if starts_line || in_quote_run {
            // Make sure a '>'-run followed by a split "From " is decided on whole bytes.
            loop {
                let rest = &buf[buf.iter().take_while(|&&b| b == b'>').count()..];
                if ends_line || rest.len() >= 5 || !b"From ".starts_with(rest) || rest.is_empty() {
                    break;
                }
                let more = (&mut input).take(8).read_until(b'\n', &mut buf)?;
                ends_line = buf.ends_with(b"\n");
                if more == 0 {
                    break;
                }
            }
        }
        if starts_line && in_header {
            let blank = buf == b"\n" || buf == b"\r\n";
            let continuation = buf.first().is_some_and(|b| *b == b' ' || *b == b'\t');
            if blank {
                in_header = false;
                dropping = false;
            } else if !continuation {
                dropping = FLAG_HEADERS.iter().any(|h| {
                    buf.len() > h.len() && buf[..h.len()].eq_ignore_ascii_case(h.as_bytes()) && buf[h.len()] == b':'
                });
            }
        }
        let skip = dropping && in_header;
        if !skip {
            if starts_line || in_quote_run {
                let gts = buf.iter().take_while(|&&b| b == b'>').count();
                let rest = &buf[gts..];
                if rest.is_empty() && !ends_line {
                    in_quote_run = true;
                } else {
                    if rest.starts_with(b"From ") {
                        // mboxrd: one more '>' anywhere in the leading run quotes the line.
                        out.write_all(b">")?;
                    }
                    in_quote_run = false;
                }
            }
            out.write_all(&buf)?;
        }
        bytes += buf.len() as u64;
        at_line_start = ends_line;
        ended_with_newline = ends_line;
    }
    Ok(Copied {
        bytes,
        ended_with_newline,
    })
}

/// Maildir info flags (cr.yp.to/proto/maildir.html): D draft, F flagged, R replied, S seen,
/// T trashed, in ASCII order, then the keywords' letters (a = first line of dovecot-keywords).
fn maildir_flags(flags: &[String], keywords: &[String]) -> String {
    let has = |f: &str| flags.iter().any(|x| x.eq_ignore_ascii_case(f));
    let mut out = String::new();
    for (flag, letter) in [
        ("\\Draft", 'D'),
        ("\\Flagged", 'F'),
        ("\\Answered", 'R'),
        ("\\Seen", 'S'),
        ("\\Deleted", 'T'),
    ] {
        if has(flag) {
            out.push(letter);
        }
    }
    for (i, keyword) in keywords.iter().enumerate() {
        if has(keyword) {
            out.push((b'a' + i as u8) as char);
        }
    }
    out
}

/// Maildir++ directory of a folder: `.` then the levels in modified UTF-7 joined with `.`.
/// Maildir++ cannot hold a `.` inside a level (it is the separator); it becomes `_`.
fn maildir_folder_name(name: &str) -> String {
    let levels: Vec<String> = name
        .split(DELIMITER)
        .map(|level| shared::mutf7::encode(&level.replace('.', "_")))
        .collect();
    format!(".{}", levels.join("."))
}

/// An mbox file name for a folder: the levels joined with `.`, each with `%`, `.`, path and
/// control characters (and those Windows refuses) percent-escaped, so names stay distinct and
/// never leave DIR. Long names are cut (at a character boundary) to stay under NAME_MAX.
fn mbox_file_name(name: &str) -> String {
    let escape = |level: &str| {
        let mut out = String::new();
        for c in level.chars() {
            if c.is_control() || "%./\\:*?\"<>|".contains(c) {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            } else {
                out.push(c);
            }
        }
        out
    };
    let levels: Vec<String> = name.split(DELIMITER).map(escape).collect();
    levels.join(".")
}

/// `name`, or a variant of it no other folder of this export uses (names cut to fit a file name,
/// or two names that Maildir++ spells alike, get `~<mailbox id>`).
fn unique(used: &mut HashSet<String>, name: String, id: i64) -> String {
    const MAX: usize = 200;
    let mut name = if name.len() > MAX {
        let mut cut = MAX;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}~{id}", &name[..cut])
    } else {
        name
    };
    if used.contains(&name) {
        name = format!("{name}~{id}");
    }
    used.insert(name.clone());
    name
}

/// The host part of Maildir file names: '/' and ':' cannot appear in it (maildir(5) spells them
/// `\057` and `\072`), and '.' separates the name's parts, so it goes too.
fn maildir_host(hostname: &str) -> String {
    let host = hostname
        .replace('/', "\\057")
        .replace(':', "\\072")
        .replace(',', "\\054")
        .replace('.', "_");
    if host.is_empty() { "tinydc".into() } else { host }
}

fn system_time(t: DateTime<Utc>) -> SystemTime {
    let secs = t.timestamp();
    let base = if secs >= 0 {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64)
    } else {
        SystemTime::UNIX_EPOCH - std::time::Duration::from_secs(secs.unsigned_abs())
    };
    base + std::time::Duration::from_nanos(u64::from(t.timestamp_subsec_nanos()))
}

fn private_file(path: &Path) -> anyhow::Result<File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file = private_file(path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mboxrd(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        copy_mboxrd(input, &mut out).unwrap();
        out
    }

    #[test]
    fn from_lines_are_quoted_and_flag_headers_dropped() {
        let input = b"Status: RO\r\nSubject: x\r\nX-Keywords: a\r\n b\r\n\r\nFrom me\r\n>From you\r\nFrom\r\n";
        assert_eq!(
            mboxrd(input),
            b"Subject: x\r\n\r\n>From me\r\n>>From you\r\nFrom\r\n".to_vec()
        );
        // A body header-like line is not dropped, and "From " inside a line is left alone.
        assert_eq!(
            mboxrd(b"A: b\n\nStatus: x\nx From y\n"),
            b"A: b\n\nStatus: x\nx From y\n"
        );
    }

    #[test]
    fn quoting_survives_piece_boundaries() {
        // A line of '>' longer than a piece, then "From ": still quoted, once.
        let mut input = b"H: v\n\n".to_vec();
        input.extend(std::iter::repeat_n(b'>', CHUNK as usize + 3));
        input.extend_from_slice(b"From x\n");
        let out = mboxrd(&input);
        assert_eq!(out.len(), input.len() + 1);
        assert_eq!(out.iter().filter(|&&b| b == b'>').count(), CHUNK as usize + 4);
        // "From " split by the piece boundary.
        let mut input = b"H: v\n\n".to_vec();
        input.extend(std::iter::repeat_n(b'>', CHUNK as usize - 2));
        input.extend_from_slice(b"From x\n");
        assert_eq!(mboxrd(&input).len(), input.len() + 1);
    }

    #[test]
    fn names_and_flags() {
        assert_eq!(maildir_folder_name("Work/Projekte Ü"), ".Work.Projekte &ANw-");
        assert_eq!(maildir_folder_name("a.b/c&d"), ".a_b.c&-d");
        assert_eq!(mbox_file_name("Work/a.b/../x%"), "Work.a%2Eb.%2E%2E.x%25");
        let flags = ["\\Seen".to_string(), "$Work".to_string(), "\\Draft".to_string()];
        assert_eq!(maildir_flags(&flags, &["x".into(), "$work".into()]), "DSb");
        assert_eq!(maildir_host("mail.example.org"), "mail_example_org");
    }
}
