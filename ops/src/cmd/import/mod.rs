//! `tinydc import ADDRESS --mbox FILE [--folder NAME] | --maildir DIR | --imap HOST[:PORT] ...`
//!
//! Every source turns what it reads into [`Incoming`] messages and hands them, one at a time,
//! to the [`Importer`], which makes the folders they name, stores them through the mail store's
//! normal write path ([`MailStore::import`]: the same blobs, quota charge, events as a delivery,
//! so IMAP IDLE clients see the mail arrive) and counts. The store records each message's
//! (source, key) in the same transaction as the message rows, so a rerun, or a run resumed
//! after the importer was killed, adds only what is not there yet.
//!
//! Memory: one message at a time, bounded by `[smtp] max_message_size` (a larger one is skipped
//! with its reason before it is read whole); while it is read, the previous message's body may
//! still be being written, when that one is small ([`PIPELINE_MAX`]).
//!
//! Errors: a message that cannot be stored (bad folder name, too large) is skipped and counted
//! with its reason; the quota or the disk running out stops the import with the numbers (a
//! rerun carries on); a database that restarts is waited for (about a minute).

pub mod imap;
pub mod maildir;
pub mod mbox;

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::{ArgGroup, Args};
use indicatif::{ProgressBar, ProgressStyle};
use shared::accounts;
use shared::blobs::BlobStore;
use shared::mailstore::{self, ImportOutcome, MailStore, PreparedImport, SpecialUse, StoreError};
use shared::quota::{self, QuotaError};
use shared::size::format_size;

use crate::admin::with_admin;

/// The command's arguments. Exactly one source: `--mbox`, `--maildir` or `--imap`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("source").required(true).args(["mbox", "maildir", "imap"])))]
pub struct ImportArgs {
    /// The user's address (the account to import into).
    pub address: String,

    /// An mbox file (mboxrd or mboxo, LF or CRLF), e.g. a Google Takeout export: its
    /// X-Gmail-Labels header places each message in its folders.
    #[arg(long, value_name = "FILE")]
    pub mbox: Option<PathBuf>,

    /// With --mbox: put every message in this folder (default: INBOX, or the Gmail labels).
    #[arg(long, value_name = "NAME", requires = "mbox")]
    pub folder: Option<String>,

    /// A Maildir++ tree (Dovecot, Courier): its folders, flags and dovecot-keywords.
    #[arg(long, value_name = "DIR")]
    pub maildir: Option<PathBuf>,

    /// Another IMAP server to pull every folder from.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub imap: Option<String>,

    /// With --imap: the user name on that server.
    #[arg(long, value_name = "U", requires = "imap")]
    pub user: Option<String>,

    /// With --imap: read the password from the first line of standard input.
    #[arg(long, requires = "imap")]
    pub password_stdin: bool,

    /// With --imap: TLS from the start (default port 993).
    #[arg(long, requires = "imap", conflicts_with = "starttls")]
    pub tls: bool,

    /// With --imap: plain connection upgraded with STARTTLS (default port 143).
    #[arg(long, requires = "imap")]
    pub starttls: bool,

    /// With --imap --tls or --starttls: a PEM file of CA certificates to trust besides the
    /// system's (a server with a self-signed or private CA certificate).
    #[arg(long, value_name = "FILE", requires = "imap")]
    pub ca_file: Option<PathBuf>,
}

/// One message from any source, ready for the store.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// What the message comes from, e.g. `mbox`, `maildir`, `imap:host/user`; with `key`, the
    /// resume log's identity of the message (stable across reruns).
    pub source: String,
    /// The message within the source (a content hash, a Maildir unique name, UIDVALIDITY/UID).
    pub key: String,
    /// IMAP names, `/` separated, of the folders to store it in (one copy each, one body);
    /// empty: INBOX. `Sent`, `Drafts`, `Trash`, `Junk`, `Archive` (and common other names for
    /// them, see [`special_use_of`]) go to the user's existing special mailboxes.
    pub folders: Vec<String>,
    /// `\Seen`, `\Answered`, `\Flagged`, `\Deleted`, `\Draft` and keywords; anything that is
    /// not a valid IMAP flag is dropped with a log line.
    pub flags: Vec<String>,
    /// The IMAP internal date (None: now).
    pub internal_date: Option<DateTime<Utc>>,
    /// The message as it is to be stored (CRLF line ends); only its header when `stored`.
    pub raw: Vec<u8>,
    /// The message, streamed to the blob store as it was read (a large mbox or Maildir
    /// message): never held whole in memory.
    pub stored: Option<StoredBody>,
}

/// A message body already in the blob store.
#[derive(Debug, Clone)]
pub struct StoredBody {
    pub blob: shared::blobs::BlobId,
    /// Its length in bytes.
    pub size: u64,
}

/// Why an import stopped before the end of its source.
#[derive(Debug)]
pub enum Stop {
    /// The next message does not fit in the user's quota.
    OverQuota { requested: u64, available: u64 },
    /// The disk is (nearly) full.
    DiskFull(String),
}

/// Counts of one run, for the progress bar and the summary.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// Source messages stored now.
    pub imported: u64,
    /// Message rows made (a message with two labels makes two).
    pub copies: u64,
    /// Bytes charged to the quota.
    pub bytes: u64,
    /// Source messages already imported by an earlier run.
    pub already: u64,
    /// Messages not imported, by reason.
    pub skipped: BTreeMap<String, u64>,
}

impl Counts {
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }
}

/// Stores incoming messages for one user and reports progress.
pub struct Importer {
    store: MailStore,
    db: sqlx::PgPool,
    user_id: i64,
    address: String,
    /// Folder name (as the source gave it) → mailbox id, or why it cannot be made.
    folders: HashMap<String, Result<i64, String>>,
    max_message_size: u64,
    counts: Counts,
    progress: Progress,
    stopped: Option<Stop>,
    /// The message whose body is being written while the caller reads the next one.
    pending: Option<Pending>,
}

/// A message added but not committed yet ([`Importer::add`]).
struct Pending {
    what: String,
    folders: Vec<String>,
    flags: Vec<String>,
    date: DateTime<Utc>,
    source: String,
    key: String,
    source_bytes: u64,
    prepared: tokio::task::JoinHandle<Result<PreparedImport, StoreError>>,
}

/// Messages up to this size are pipelined (module docs of [`Importer::add`]).
pub const PIPELINE_MAX: u64 = 1 << 20;

/// The progress display: an indicatif bar on a terminal, plain lines every few seconds
/// otherwise (a log file, a cron mail).
struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    last_line: Instant,
    total_bytes: Option<u64>,
    total_messages: Option<u64>,
    /// Source bytes consumed (read past, whatever became of them).
    done_bytes: u64,
    done_messages: u64,
}

const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// Attempts at one message while the database is unavailable (about a second apart).
const UNAVAILABLE_RETRIES: u32 = 60;

impl Progress {
    fn new() -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
                )
                .expect("valid progress template"),
            );
            bar
        });
        Progress {
            bar,
            started: Instant::now(),
            last_line: Instant::now(),
            total_bytes: None,
            total_messages: None,
            done_bytes: 0,
            done_messages: 0,
        }
    }

    fn rate(&self) -> f64 {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        self.done_bytes as f64 / secs
    }

    fn eta(&self) -> Option<Duration> {
        let total = self.total_bytes?;
        let rate = self.rate();
        (rate > 0.0 && self.done_bytes > 0)
            .then(|| Duration::from_secs_f64(total.saturating_sub(self.done_bytes) as f64 / rate))
    }

    fn update(&mut self, counts: &Counts) {
        let messages = match self.total_messages {
            Some(total) => format!("{}/{total} messages", self.done_messages),
            None => format!("{} messages", self.done_messages),
        };
        let msg = format!(
            "{messages} ({} new, {} already there, {} skipped)",
            counts.imported,
            counts.already,
            counts.skipped_total()
        );
        if let Some(bar) = &self.bar {
            if let Some(total) = self.total_bytes {
                bar.set_length(total.max(self.done_bytes));
            }
            bar.set_position(self.done_bytes);
            bar.set_message(msg);
        } else if self.last_line.elapsed() >= PLAIN_EVERY {
            self.last_line = Instant::now();
            eprintln!("{}", self.line(&msg));
        }
    }

    fn line(&self, msg: &str) -> String {
        let done = match self.total_bytes {
            Some(total) => format!("{} of {}", format_size(self.done_bytes), format_size(total)),
            None => format_size(self.done_bytes),
        };
        let eta = self
            .eta()
            .map(|d| format!(", {} left", human_duration(d)))
            .unwrap_or_default();
        format!("import: {done}, {}/s{eta}, {msg}", format_size(self.rate() as u64))
    }

    fn println(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// The special mailbox a top-level folder name stands for, in the names common servers and
/// clients give them (Dovecot, Courier, Outlook/Exchange, Thunderbird, Gmail's labels).
pub fn special_use_of(name: &str) -> Option<SpecialUse> {
    if name.contains(mailstore::DELIMITER) {
        return None;
    }
    let lower = name.trim().to_ascii_lowercase();
    match lower.as_str() {
        "sent" | "sent items" | "sent messages" | "sent mail" => Some(SpecialUse::Sent),
        "drafts" | "draft" => Some(SpecialUse::Drafts),
        "trash" | "deleted items" | "deleted messages" | "deleted" | "bin" => Some(SpecialUse::Trash),
        "junk" | "spam" | "junk e-mail" | "junk email" | "bulk mail" => Some(SpecialUse::Junk),
        "archive" | "archives" => Some(SpecialUse::Archive),
        _ => None,
    }
}

/// A folder name cleaned into a valid store name: `/`-separated, empty and blank levels
/// dropped, control characters removed; empty means INBOX.
pub fn clean_folder_name(name: &str) -> String {
    let levels: Vec<String> = name
        .split(mailstore::DELIMITER)
        .map(|level| level.chars().filter(|c| !c.is_control()).collect::<String>())
        .map(|level| level.trim().to_string())
        .filter(|level| !level.is_empty())
        .collect();
    if levels.is_empty() {
        return "INBOX".into();
    }
    mailstore::normalize_mailbox_name(&levels.join(&mailstore::DELIMITER.to_string()))
}

/// Whether `flag` may be stored: a system flag, or a keyword that is an IMAP atom
/// (RFC 3501 §9: `flag-keyword = atom`, no atom-specials).
pub fn valid_flag(flag: &str) -> bool {
    const SYSTEM: [&str; 5] = ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"];
    if flag.starts_with('\\') {
        return SYSTEM.iter().any(|s| s.eq_ignore_ascii_case(flag));
    }
    !flag.is_empty()
        && flag.len() <= 128
        && flag
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"(){%*\"\\]".contains(&b))
}

/// The message with every bare LF made CRLF (RFC 5322 §2.1; IMAP serves messages with CRLF).
/// A message already in CRLF is returned as it is, without a copy.
/// [`to_crlf`] of everything `reader` yields, written to the blob store as it is read
/// (64 KiB at a time): the same bytes, and so the same blob id, as `to_crlf` of the whole.
pub fn stream_crlf(blobs: &shared::blobs::BlobStore, mut reader: impl std::io::Read) -> std::io::Result<StoredBody> {
    let mut writer = blobs.writer_blocking()?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(128 * 1024);
    // Whether the byte before the current chunk was a CR (a CRLF split across two reads).
    let mut after_cr = false;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.clear();
        for &b in &buf[..n] {
            if b == b'\n' && !after_cr {
                out.push(b'\r');
            }
            out.push(b);
            after_cr = b == b'\r';
        }
        writer.write(&out)?;
    }
    let (blob, size) = writer.finish()?;
    Ok(StoredBody { blob, size })
}

pub fn to_crlf(raw: Vec<u8>) -> Vec<u8> {
    let bare = raw
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'\n' && (i == 0 || raw[i - 1] != b'\r'))
        .count();
    if bare == 0 {
        return raw;
    }
    let mut out = Vec::with_capacity(raw.len() + bare);
    for (i, &b) in raw.iter().enumerate() {
        if b == b'\n' && (i == 0 || raw[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

impl Importer {
    /// An importer for `user_id` over `store`; messages larger than `max_message_size` are
    /// skipped.
    pub fn new(store: MailStore, db: sqlx::PgPool, user_id: i64, address: &str, max_message_size: u64) -> Importer {
        Importer {
            store,
            db,
            user_id,
            address: address.to_string(),
            folders: HashMap::new(),
            max_message_size,
            counts: Counts::default(),
            progress: Progress::new(),
            stopped: None,
            pending: None,
        }
    }

    /// The largest message that will be imported: sources skip (via [`Importer::skip`])
    /// anything larger without reading it whole.
    /// The blob store, for bodies streamed to it as they are read.
    pub fn blobs(&self) -> shared::blobs::BlobStore {
        self.store.blobs().clone()
    }

    pub fn max_message_size(&self) -> u64 {
        self.max_message_size
    }

    /// Why the import stopped early, if it did; a source stops reading once this is set.
    pub fn stopped(&self) -> Option<&Stop> {
        self.stopped.as_ref()
    }

    /// Tell the progress display how much the source holds (bytes as the source counts them,
    /// e.g. the mbox file size; messages when known).
    pub fn set_total(&mut self, bytes: Option<u64>, messages: Option<u64>) {
        self.progress.total_bytes = bytes;
        self.progress.total_messages = messages;
        self.progress.update(&self.counts);
    }

    /// Compare what the source holds with the user's free quota before starting. A fresh
    /// import (nothing of `source` imported yet) that cannot fit is refused here, with the
    /// numbers; a resumed one only warns (part of the source is already stored and charged),
    /// and stops at the first message that does not fit.
    #[allow(dead_code)] // for sources that know no better (the --imap source of branch imapimport)
    pub async fn check_quota(&mut self, source: &str, source_bytes: u64) -> anyhow::Result<()> {
        let resumed = self.store.imported_count(self.user_id, source).await? > 0;
        self.check_quota_of(source, source_bytes, resumed).await
    }

    /// [`Importer::check_quota`] for a source the caller names (`what`, e.g. the file) and
    /// knows to be fresh or resumed (e.g. its first message was imported before).
    pub async fn check_quota_of(&mut self, what: &str, source_bytes: u64, resumed: bool) -> anyhow::Result<()> {
        let info = quota::info(&self.db, self.user_id).await?;
        let Some(limit) = info.limit else {
            return Ok(());
        };
        let available = info.available();
        if source_bytes <= available {
            return Ok(());
        }
        let text = format!(
            "{} holds {} but {} has {} free ({} used of a {} limit)",
            what,
            format_size(source_bytes),
            self.address,
            format_size(available),
            format_size(info.used()),
            format_size(limit)
        );
        if resumed {
            self.progress.println(&format!(
                "warning: {text}; part of it was imported before, so carrying on until a message does not fit"
            ));
            return Ok(());
        }
        tracing::info!(user = %self.address, source_bytes, available, "import refused: over quota");
        anyhow::bail!(
            "it will not fit: {text}. Nothing was imported. Raise the limit (`tinydc quota set {} SIZE`) \
             and run the same command again",
            self.address
        )
    }

    /// Whether (source, key) was imported before, without counting it (see
    /// [`Importer::already_imported`] for the counting one).
    pub async fn is_imported(&self, source: &str, key: &str) -> anyhow::Result<bool> {
        Ok(self.store.is_imported(self.user_id, source, key).await?)
    }

    /// Whether (source, key) was imported by an earlier run; counted as "already there" when
    /// it was. Lets a source skip reading or downloading a message it need not.
    pub async fn already_imported(&mut self, source: &str, key: &str, source_bytes: u64) -> anyhow::Result<bool> {
        let mut attempt = 0;
        let done = loop {
            attempt += 1;
            match self.store.is_imported(self.user_id, source, key).await {
                Err(e) if e.is_unavailable() && attempt < UNAVAILABLE_RETRIES => {
                    tracing::warn!(key, attempt, "import: database unavailable, retrying: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                done => break done?,
            }
        };
        if done {
            self.counts.already += 1;
            self.consumed(source_bytes);
        }
        Ok(done)
    }

    /// Record a message the source could not or would not import, with the reason (shown in
    /// the summary, counted by reason) and how many source bytes it took.
    pub fn skip(&mut self, what: &str, reason: &str, source_bytes: u64) {
        tracing::info!(user = %self.address, what, reason, "import: message skipped");
        self.progress.println(&format!("skipped {what}: {reason}"));
        *self.counts.skipped.entry(reason.to_string()).or_default() += 1;
        self.consumed(source_bytes);
    }

    fn consumed(&mut self, source_bytes: u64) {
        self.progress.done_bytes += source_bytes;
        self.progress.done_messages += 1;
        self.progress.update(&self.counts);
    }

    /// The mailbox id for a folder name, made (with its superiors) when missing; the inner
    /// error is why the folder cannot be made (remembered), the outer one a database that is
    /// unavailable for now (retried by the caller).
    async fn folder(&mut self, name: &str) -> Result<Result<i64, String>, StoreError> {
        if let Some(known) = self.folders.get(name) {
            return Ok(known.clone());
        }
        let resolved = match self.resolve_folder(name).await {
            Ok(id) => Ok(id),
            Err(e) if e.is_unavailable() => return Err(e),
            Err(e) => {
                tracing::warn!(user = %self.address, folder = name, "import: folder refused: {e}");
                Err(format!("folder {:?}: {e}", clean_folder_name(name)))
            }
        };
        self.folders.insert(name.to_string(), resolved.clone());
        Ok(resolved)
    }

    async fn resolve_folder(&self, name: &str) -> Result<i64, StoreError> {
        let clean = clean_folder_name(name);
        if let Some(special) = special_use_of(&clean) {
            match self.store.mailbox_with_use(self.user_id, special).await {
                Ok(mailbox) => return Ok(mailbox.id),
                Err(StoreError::NoSuchMailbox) => {} // deleted by the user: made by name below
                Err(e) => return Err(e),
            }
        }
        match self.store.mailbox(self.user_id, &clean).await {
            Ok(mailbox) => return Ok(mailbox.id),
            Err(StoreError::NoSuchMailbox) => {}
            Err(e) => return Err(e),
        }
        match self.store.create_mailbox(self.user_id, &clean, None).await {
            Ok(mailbox) => {
                self.progress.println(&format!("created folder {clean}"));
                // CREATE no longer subscribes (RFC 3501 §6.3.9); an imported folder should still
                // show in clients that list only subscribed folders.
                self.store.set_subscribed(self.user_id, &clean, true).await?;
                Ok(mailbox.id)
            }
            // Made meanwhile (by a client): use it.
            Err(StoreError::AlreadyExists) => self.store.mailbox(self.user_id, &clean).await.map(|m| m.id),
            Err(e) => Err(e),
        }
    }

    /// Store one message (unless imported before). `source_bytes`: how much of the source it
    /// took, for the progress bar. Errors only on what stops the whole import (database down
    /// for good); a quota or disk refusal sets [`Importer::stopped`] instead, a bad message is
    /// skipped.
    ///
    /// Pipelined: the message is parsed and its body written in a task of its own while the
    /// previous message's transaction commits (each a disk flush); this call returns once that
    /// previous message is done. Messages commit in the order they are added (UIDs follow the
    /// source). Only messages up to [`PIPELINE_MAX`] wait like this, so at most one such small
    /// message is held besides the one being added.
    pub async fn add(&mut self, incoming: Incoming, source_bytes: u64) -> anyhow::Result<()> {
        if self.stopped.is_some() {
            return Ok(());
        }
        let what = format!("{} {}", incoming.source, incoming.key);
        let size = incoming
            .stored
            .as_ref()
            .map_or(incoming.raw.len() as u64, |stored| stored.size);
        if size > self.max_message_size {
            let reason = format!("larger than max_message_size ({})", format_size(self.max_message_size));
            self.skip(&what, &reason, source_bytes);
            return Ok(());
        }
        if size == 0 {
            self.skip(&what, "empty message", source_bytes);
            return Ok(());
        }
        let folders = if incoming.folders.is_empty() {
            vec!["INBOX".to_string()]
        } else {
            incoming.folders
        };
        let flags: Vec<String> = incoming
            .flags
            .into_iter()
            .filter(|f| {
                let ok = valid_flag(f);
                if !ok {
                    tracing::info!(what, flag = %f.escape_debug(), "import: invalid flag dropped");
                }
                ok
            })
            .collect();
        let large = size > PIPELINE_MAX;
        if large {
            // Hold nothing else while a large message is in memory.
            self.flush().await?;
            if self.stopped.is_some() {
                return Ok(());
            }
        }
        let store = self.store.clone();
        let (raw, stored) = (incoming.raw, incoming.stored);
        let pending = Pending {
            what,
            folders,
            flags,
            date: incoming.internal_date.unwrap_or_else(Utc::now),
            source: incoming.source,
            key: incoming.key,
            source_bytes,
            prepared: tokio::spawn(async move {
                match stored {
                    Some(stored) => store.prepare_import_stored(stored.blob, stored.size).await,
                    None => store.prepare_import(Arc::new(raw)).await,
                }
            }),
        };
        if let Some(previous) = self.pending.replace(pending) {
            self.commit(previous).await?;
        }
        if large {
            self.flush().await?;
        }
        Ok(())
    }

    /// Commit the message still pending, if any (abandon it when the import has stopped).
    async fn flush(&mut self) -> anyhow::Result<()> {
        if let Some(pending) = self.pending.take() {
            if self.stopped.is_some() {
                pending.prepared.abort();
            } else {
                self.commit(pending).await?;
            }
        }
        Ok(())
    }

    /// Wait for a pending message's body, then run its transaction (with the retries the
    /// module describes) and count the outcome.
    async fn commit(&mut self, pending: Pending) -> anyhow::Result<()> {
        let Pending {
            what,
            folders,
            flags,
            date,
            source,
            key,
            source_bytes,
            prepared,
        } = pending;
        if self.stopped.is_some() {
            prepared.abort();
            return Ok(());
        }
        let prepared = prepared
            .await
            .map_err(|e| anyhow::anyhow!("storing {what}: the body writer task failed: {e}"))?;
        let outcome = match prepared {
            Err(e) => Err(e),
            Ok(prepared) => {
                let mut attempt = 0u32;
                loop {
                    attempt += 1;
                    let mut targets = Ok(Vec::new());
                    for folder in &folders {
                        match self.folder(folder).await {
                            Ok(Ok(id)) => {
                                if let Ok(targets) = &mut targets {
                                    targets.push(id);
                                }
                            }
                            Ok(Err(reason)) => {
                                self.skip(&what, &format!("cannot make folder: {reason}"), source_bytes);
                                return Ok(());
                            }
                            Err(e) => {
                                targets = Err(e);
                                break;
                            }
                        }
                    }
                    let outcome = match targets {
                        Ok(targets) => {
                            self.store
                                .import_prepared(self.user_id, &targets, &prepared, &flags, date, &source, &key)
                                .await
                        }
                        Err(e) => Err(e),
                    };
                    match outcome {
                        // A folder deleted (by a client) since it was looked up: look up or
                        // make it again, once.
                        Err(StoreError::NoSuchMailbox) if attempt == 1 => {
                            tracing::info!(what, "import: a target folder went away; looking it up again");
                            self.folders.clear();
                        }
                        // PostgreSQL restarting (`tinydc up` restarts it when it dies): wait for
                        // it rather than abandon the import; nothing of this message was
                        // committed (or, if the commit went through unacknowledged, the retry
                        // finds the log row and counts it as already there).
                        Err(e) if e.is_unavailable() && attempt < UNAVAILABLE_RETRIES => {
                            tracing::warn!(what, attempt, "import: database unavailable, retrying: {e}");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        outcome => break outcome,
                    }
                }
            }
        };
        match outcome {
            Ok(ImportOutcome::Imported(imported)) => {
                self.counts.imported += 1;
                self.counts.copies += imported.appended.len() as u64;
                self.counts.bytes += imported.charged;
                self.consumed(source_bytes);
            }
            Ok(ImportOutcome::AlreadyImported) => {
                self.counts.already += 1;
                self.consumed(source_bytes);
            }
            Err(StoreError::Quota(QuotaError::Exceeded { requested, available })) => {
                tracing::info!(user = %self.address, requested, available, "import stopped: over quota");
                self.stopped = Some(Stop::OverQuota { requested, available });
            }
            Err(e) if e.is_disk_full() => {
                tracing::warn!(user = %self.address, "import stopped: disk full: {e}");
                self.stopped = Some(Stop::DiskFull(e.to_string()));
            }
            Err(StoreError::Invalid(reason)) => self.skip(&what, &reason, source_bytes),
            Err(e) => return Err(anyhow::Error::new(e).context(format!("storing {what}"))),
        }
        Ok(())
    }

    /// Commit what is pending, print the summary (stdout) and turn an early stop into the
    /// command's error.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        let flushed = self.flush().await;
        self.progress.finish();
        let c = &self.counts;
        println!(
            "imported {} message(s) ({} in folders, {}) into {}",
            c.imported,
            c.copies,
            format_size(c.bytes),
            self.address
        );
        println!("already there: {}", c.already);
        println!("skipped: {}", c.skipped_total());
        for (reason, n) in &c.skipped {
            println!("  {n} {reason}");
        }
        println!("took {}", human_duration(self.progress.started.elapsed()));
        flushed?;
        match self.stopped {
            None => Ok(()),
            Some(Stop::OverQuota { requested, available }) => {
                let info = quota::info(&self.db, self.user_id).await?;
                anyhow::bail!(
                    "stopped: over quota: the next message needs {} but {} has {} free ({} used of a {} limit). \
                     Raise the limit (`tinydc quota set {} SIZE`) and run the same command again: \
                     it carries on where it stopped",
                    format_size(requested),
                    self.address,
                    format_size(available),
                    format_size(info.used()),
                    info.limit.map(format_size).unwrap_or_else(|| "unlimited".into()),
                    self.address
                )
            }
            Some(Stop::DiskFull(e)) => anyhow::bail!(
                "stopped: the disk is full ({e}). Free some space and run the same command again: \
                 it carries on where it stopped"
            ),
        }
    }
}

pub async fn run(data: &Path, args: ImportArgs) -> anyhow::Result<()> {
    let address = accounts::normalize_address(&args.address)?;
    with_admin(data, async |admin| {
        let config = &admin.config;
        let user = accounts::get_user(&admin.db, &address).await?;
        let blobs = BlobStore::new(config.blobs_dir()).with_min_free(config.server.min_free_space);
        quota::guard_disk(
            &admin.db,
            vec![config.data_dir.clone(), config.blobs_dir()],
            config.server.min_free_space,
        );
        let store = MailStore::new(admin.db.clone(), blobs).with_limits(config.imap.mailbox_limits());
        let mut importer = Importer::new(
            store,
            admin.db.clone(),
            user.id,
            &user.address,
            config.smtp.max_message_size,
        );
        if let Some(file) = &args.mbox {
            mbox::import(&mut importer, file, args.folder.as_deref())
                .await
                .with_context(|| format!("importing {}", file.display()))?;
        } else if let Some(dir) = &args.maildir {
            maildir::import(&mut importer, dir)
                .await
                .with_context(|| format!("importing {}", dir.display()))?;
        } else if let Some(spec) = &args.imap {
            let source = imap::ImapSource {
                spec: spec.clone(),
                user: args.user.clone().unwrap_or_default(),
                password_stdin: args.password_stdin,
                tls: args.tls,
                starttls: args.starttls,
                ca_file: args.ca_file.clone(),
            };
            imap::import(&mut importer, &source)
                .await
                .with_context(|| format!("importing from {spec}"))?;
        }
        importer.finish().await
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_are_cleaned() {
        assert_eq!(clean_folder_name("inbox"), "INBOX");
        assert_eq!(clean_folder_name(" Work // Projects /"), "Work/Projects");
        assert_eq!(clean_folder_name("//"), "INBOX");
        assert_eq!(clean_folder_name("a\u{7}b"), "ab");
    }

    #[test]
    fn special_names() {
        assert_eq!(special_use_of("Sent Items"), Some(SpecialUse::Sent));
        assert_eq!(special_use_of("spam"), Some(SpecialUse::Junk));
        assert_eq!(special_use_of("Work/Sent"), None);
        assert_eq!(special_use_of("Inbox"), None);
    }

    #[test]
    fn flags_are_checked() {
        assert!(valid_flag("\\seen"));
        assert!(valid_flag("$Forwarded"));
        assert!(!valid_flag("\\Recent"));
        assert!(!valid_flag("two words"));
        assert!(!valid_flag("a(b"));
        assert!(!valid_flag(""));
    }

    #[test]
    fn line_ends() {
        assert_eq!(to_crlf(b"a\nb\r\nc\n".to_vec()), b"a\r\nb\r\nc\r\n");
        assert_eq!(to_crlf(b"\n".to_vec()), b"\r\n");
        assert_eq!(to_crlf(b"a\r\n".to_vec()), b"a\r\n");
    }
}
