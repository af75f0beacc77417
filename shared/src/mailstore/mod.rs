//! Mailboxes and messages: every operation takes the user it acts for and touches only that
//! user's mailboxes (isolation), runs in one transaction, and announces itself with an event.
//!
//! This module is the one owner of the `mailboxes` and `messages` tables (and of the \Recent
//! claim mark, `mailboxes.recent_claimed_uid`): the daemons read and write them only through
//! [`MailStore`], and the directory (`accounts`) through the functions at the end that run in
//! its transaction ([`create_default_mailboxes`], [`count_user_messages`], [`purge_user_mail`]).
//!
//! UIDs come from the mailbox row, updated under its row lock in the delivering transaction, so
//! they strictly increase in commit order even with concurrent writers (RFC 3501 §2.3.1.1).
//! Each change takes a new MODSEQ from the same row (RFC 7162 §3.1).
//!
//! # Lock order
//!
//! Every write transaction here takes its row locks in one order, so no two can wait on each
//! other in a cycle (a PostgreSQL deadlock aborts one of them, which IMAP reported as
//! `NO [SERVERBUG]`):
//!
//! 1. `users` rows, ascending id (this also serialises quota checks: `quota::charge`, `refund`
//!    and a `commit` that outgrows its reservation update the same row);
//! 2. `quota_reservations` rows (through `quota`: a `commit` turns its own reservation into a
//!    charged delta without the user's row, migration 0016; so deliveries call it before they
//!    lock a mailbox);
//! 3. `mailboxes` rows, ascending id;
//! 4. `messages` rows (only ever under their mailbox's lock);
//! 5. `blobs` rows, ascending id (`blobs::lock`).
//!
//! deliver/append, copy, move, expunge, store, create, rename and delete mailbox all follow it.
//! [`MailStore::claim_recent`] locks one mailbox row in a statement of its own and waits for
//! nothing while holding it; [`purge_user_mail`] runs under its caller's lock on the user row.

pub mod clock;
mod group;
mod import;
mod light_cache;
pub mod parsed;

pub use import::{ImportOutcome, Imported, PreparedImport};

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::{Connection as _, PgConnection, PgPool};
use thiserror::Error;

use crate::blobs::{self, BlobId, BlobStore};
use crate::events::{self, Event};
use crate::quota::{self, QuotaError, Reservation, Usage};

/// RFC 6154 special uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpecialUse {
    Sent,
    Drafts,
    Trash,
    Junk,
    Archive,
}

impl SpecialUse {
    /// The attribute as IMAP writes it (`\Sent`).
    pub fn as_imap(self) -> &'static str {
        match self {
            SpecialUse::Sent => "\\Sent",
            SpecialUse::Drafts => "\\Drafts",
            SpecialUse::Trash => "\\Trash",
            SpecialUse::Junk => "\\Junk",
            SpecialUse::Archive => "\\Archive",
        }
    }

    /// Read `\Sent` etc. (case-insensitive).
    pub fn from_imap(text: &str) -> Option<SpecialUse> {
        [
            SpecialUse::Sent,
            SpecialUse::Drafts,
            SpecialUse::Trash,
            SpecialUse::Junk,
            SpecialUse::Archive,
        ]
        .into_iter()
        .find(|s| s.as_imap().eq_ignore_ascii_case(text))
    }
}

/// The mailboxes every user starts with.
pub const DEFAULT_MAILBOXES: [(&str, Option<SpecialUse>); 6] = [
    ("INBOX", None),
    ("Sent", Some(SpecialUse::Sent)),
    ("Drafts", Some(SpecialUse::Drafts)),
    ("Trash", Some(SpecialUse::Trash)),
    ("Junk", Some(SpecialUse::Junk)),
    ("Archive", Some(SpecialUse::Archive)),
];

/// The hierarchy delimiter of mailbox names.
pub const DELIMITER: char = '/';

/// A UIDVALIDITY for a new mailbox of `user_id` (RFC 3501 §2.3.1.1: a mailbox deleted and
/// created again must get a greater one): the current time in seconds, or one more than the
/// last one this user got when that is greater, so two creations within a second differ too.
/// Kept in the user's row (`users.last_uidvalidity`), which this locks: call it inside the
/// creating transaction (lock order step 1, the user's row).
pub async fn next_uidvalidity(conn: &mut PgConnection, user_id: i64) -> Result<i64, sqlx::Error> {
    let now = (Utc::now().timestamp() & 0xFFFF_FFFF).max(1);
    let next: Option<i64> = sqlx::query_scalar!(
        "UPDATE users SET last_uidvalidity = greatest(last_uidvalidity + 1, $2) WHERE id = $1 RETURNING last_uidvalidity",
        user_id,
        now
    )
    .fetch_optional(&mut *conn)
    .await?;
    // UIDVALIDITY is a 32-bit number (RFC 3501 §9 nz-number); time reaches that in 2106.
    Ok(next.unwrap_or(now) & 0xFFFF_FFFF)
}

/// Mailbox names are stored with `INBOX` in upper case; other names as given.
pub fn normalize_mailbox_name(name: &str) -> String {
    let name = name.trim_matches(DELIMITER);
    if name.eq_ignore_ascii_case("INBOX") {
        return "INBOX".into();
    }
    match name.split_once(DELIMITER) {
        Some((first, rest)) if first.eq_ignore_ascii_case("INBOX") => format!("INBOX{DELIMITER}{rest}"),
        _ => name.to_string(),
    }
}

/// What went wrong, in terms each protocol can translate.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("no such mailbox")]
    NoSuchMailbox,
    #[error("mailbox already exists")]
    AlreadyExists,
    #[error("{0}")]
    Invalid(String),
    /// A configured limit (mailboxes per user, name depth or length) would be passed.
    #[error("{0}")]
    Limit(String),
    #[error(transparent)]
    Quota(#[from] QuotaError),
    #[error("storage error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl StoreError {
    /// Whether this is a quota refusal.
    pub fn is_over_quota(&self) -> bool {
        matches!(self, StoreError::Quota(QuotaError::Exceeded { .. }))
    }

    /// Whether the database cannot be reached right now (it is restarting): the client retries.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Db(e) | StoreError::Quota(QuotaError::Db(e)) => crate::db::is_unavailable(e),
            _ => false,
        }
    }

    /// Whether the disk is full (a transient refusal: SMTP 452 4.3.1, IMAP NO [OVERQUOTA]).
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Quota(e) => e.is_disk_full(),
            StoreError::Io(e) => quota::is_no_space(e),
            StoreError::Db(e) => quota::is_db_disk_full(e),
            _ => false,
        }
    }
}

/// A mailbox as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub highestmodseq: u64,
    pub special_use: Option<SpecialUse>,
    /// The old `mailboxes.subscribed` column, no longer kept up to date since subscriptions
    /// are names of their own (migration 0011): use [`MailStore::subscriptions`].
    pub subscribed: bool,
}

/// A `mailboxes` row as selected (`SELECT id, user_id, name, uidvalidity, uidnext,
/// highestmodseq, special_use, subscribed`; `query_as!` checks each query's columns against it).
struct MailboxRow {
    id: i64,
    user_id: i64,
    name: String,
    uidvalidity: i64,
    uidnext: i64,
    highestmodseq: i64,
    special_use: Option<String>,
    subscribed: bool,
}

impl From<MailboxRow> for Mailbox {
    fn from(row: MailboxRow) -> Mailbox {
        Mailbox {
            id: row.id,
            user_id: row.user_id,
            name: row.name,
            uidvalidity: row.uidvalidity as u32,
            uidnext: row.uidnext as u32,
            highestmodseq: row.highestmodseq as u64,
            special_use: row.special_use.as_deref().and_then(SpecialUse::from_imap),
            subscribed: row.subscribed,
        }
    }
}

/// A message's changing state, for synchronisation (UID, MODSEQ, flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageState {
    pub uid: u32,
    pub modseq: u64,
    pub flags: Vec<String>,
}

/// A mailbox with its counts, as STATUS reports them (RFC 3501 §6.3.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxStatus {
    pub mailbox: Mailbox,
    /// Messages in the mailbox.
    pub messages: u64,
    /// Messages without `\Seen`.
    pub unseen: u64,
    /// Messages no session has claimed as \Recent yet (RFC 3501 §2.3.2; see
    /// [`MailStore::claim_recent`]).
    pub recent: u64,
    /// Messages with `\Deleted` (RFC 9051 §6.3.11 STATUS DELETED).
    pub deleted: u64,
    /// The messages' sizes (RFC822.SIZE) added up (RFC 8438 STATUS SIZE).
    pub size: u64,
}

/// What changed in a mailbox since a MODSEQ ([`MailStore::changes_since`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    pub highestmodseq: u64,
    /// Messages added or changed since, by UID.
    pub changed: Vec<MessageState>,
    /// UIDs removed since, by UID; `None` when the removal record does not reach back that far.
    pub expunged: Option<Vec<u32>>,
}

impl Changes {
    /// No change yet, as of the mailbox's `highestmodseq`; `complete` says whether the removal
    /// record reaches back to the MODSEQ asked about.
    fn new(highestmodseq: i64, complete: bool) -> Changes {
        Changes {
            highestmodseq: highestmodseq.max(0) as u64,
            changed: Vec::new(),
            expunged: complete.then(Vec::new),
        }
    }

    /// One row of a changes statement (`gone`: from the removal record); a row without a
    /// message (the mailbox unchanged: the outer join's empty side) adds nothing.
    fn add(&mut self, uid: Option<i64>, modseq: Option<i64>, flags: Option<Vec<String>>, gone: Option<bool>) {
        let (Some(uid), Some(modseq)) = (uid, modseq) else {
            return;
        };
        if gone == Some(true) {
            if let Some(expunged) = &mut self.expunged {
                expunged.push(uid as u32);
            }
        } else {
            self.changed.push(MessageState {
                uid: uid as u32,
                modseq: modseq as u64,
                flags: flags.unwrap_or_default(),
            });
        }
    }
}

/// A message's stored metadata (everything but the body).
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub uid: u32,
    pub modseq: u64,
    pub flags: Vec<String>,
    pub internal_date: DateTime<Utc>,
    pub size: u64,
    pub blob: BlobId,
    /// Boxed, as the body structure: together they were five sixths of this struct's 648
    /// bytes, moved with every row of a header download that never reads them (issue #12).
    pub envelope: Box<parsed::Envelope>,
    pub body_structure: Box<parsed::BodyStructure>,
    pub header: Vec<u8>,
}

impl StoredMessage {
    /// A message read without its envelope and body structure (`fetch_light`, `scan_light`):
    /// what header fetches, flags and SEARCH over headers, dates and sizes need.
    fn light(
        uid: i64,
        modseq: i64,
        flags: Vec<String>,
        internal_date: DateTime<Utc>,
        size: i64,
        blob_id: String,
        header: Vec<u8>,
    ) -> StoredMessage {
        StoredMessage {
            uid: uid as u32,
            modseq: modseq as u64,
            flags,
            internal_date,
            size: size as u64,
            blob: BlobId(blob_id),
            envelope: Default::default(),
            body_structure: Box::new(parsed::BodyStructure::Multipart {
                parts: Vec::new(),
                media_subtype: String::new(),
                params: Vec::new(),
                disposition: None,
                language: Vec::new(),
                location: None,
                model: parsed::MIME_MODEL,
            }),
            header,
        }
    }
}

/// Where a new message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub user_id: i64,
    pub mailbox_id: i64,
    pub uidvalidity: u32,
    pub uid: u32,
    pub modseq: u64,
    /// RFC 3501 §2.3.2: the \Recent claim made by the same statement that took the UID
    /// ([`MailStore::append_named`] with a view to advance): the UIDs from this one up to
    /// [`Self::uid`] are the appending session's. `None`: nothing claimed.
    pub recent_from: Option<u32>,
}

/// Where one message goes, as the statement that takes its UID finds the mailbox (under its row
/// lock, so the mailbox is resolved and locked in one round trip).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Destination {
    Id(i64),
    /// A mailbox name, normalized ([`normalize_mailbox_name`]); INBOX for `DeliveryTarget`s
    /// without a mailbox.
    Named(String),
}

impl Destination {
    fn of(target: &DeliveryTarget) -> Destination {
        match target.mailbox_id {
            Some(id) => Destination::Id(id),
            None => Destination::Named("INBOX".into()),
        }
    }
}

/// The session's view of the mailbox an APPEND goes into, when it has that mailbox selected
/// (RFC 3501 §6.3.11: "the normal new message actions SHOULD occur"): with it, the statement
/// that takes the UID also tells whether the view was current (the mailbox's MODSEQ was
/// `known_modseq` until this append), and, when `claim_recent`, claims \Recent for the session
/// in that case (RFC 3501 §2.3.2), so no sync read and no separate claim follow the commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SelectedView {
    /// The selected mailbox: nothing is claimed in another one of the same name.
    pub mailbox_id: i64,
    pub known_modseq: u64,
    pub claim_recent: bool,
}

/// What a delivery is, beyond storing the message: each kind adds one step to the transaction.
#[derive(Debug, Clone, Copy)]
enum DeliveryKind<'a> {
    /// SMTP, APPEND, COPY's source message: charged against the quota.
    Normal,
    /// `tinydc import`: the resume log row is inserted first; a message already there is skipped.
    Import(import::LogKey<'a>),
    /// A quota warning: charged without the limit check, stored only with its crossing's record.
    QuotaWarning(quota::warn::Level),
}

/// One message of an [`MailStore::append_batch`].
#[derive(Debug)]
pub struct NewMessage {
    pub raw: Vec<u8>,
    pub flags: Vec<String>,
    pub internal_date: DateTime<Utc>,
    /// Space reserved when its literal was announced; without one the size is checked now.
    pub reservation: Option<Reservation>,
}

/// One recipient of a delivery.
#[derive(Debug)]
pub struct DeliveryTarget {
    pub user_id: i64,
    /// The mailbox (None: INBOX).
    pub mailbox_id: Option<i64>,
    /// Space reserved earlier (SMTP RCPT, IMAP APPEND); without one the size is checked now.
    pub reservation: Option<Reservation>,
}

/// How STORE changes flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOp {
    Add,
    Remove,
    Replace,
}

/// What a flag change did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlagChange {
    /// Messages whose flags changed, with their new state.
    pub changed: Vec<MessageState>,
    /// UIDs refused by UNCHANGEDSINCE (RFC 7162 §3.2).
    pub modified: Vec<u32>,
}

/// What an EXPUNGE removed ([`MailStore::expunge_at`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expunged {
    /// The removed UIDs, ascending.
    pub uids: Vec<u32>,
    /// The MODSEQ the removal took (the mailbox's HIGHESTMODSEQ after it); `None` when nothing
    /// was removed.
    pub modseq: Option<u64>,
}

/// Limits on a user's mailbox tree (`[imap]` max_mailboxes, max_mailbox_depth,
/// max_mailbox_name_length), enforced by CREATE and RENAME in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxLimits {
    /// Mailboxes one user may have (INBOX and the defaults included).
    pub max_mailboxes: u64,
    /// Levels of a name (`a/b/c` has 3).
    pub max_depth: usize,
    /// Bytes of a name (UTF-8, after modified UTF-7 decoding).
    pub max_name_length: usize,
}

impl Default for MailboxLimits {
    fn default() -> Self {
        MailboxLimits {
            max_mailboxes: 1000,
            max_depth: 32,
            max_name_length: 1024,
        }
    }
}

/// The mail store of one process.
#[derive(Debug, Clone)]
pub struct MailStore {
    db: PgPool,
    /// Connections kept between the statements of the everyday commands (`db::KeptConnections`:
    /// no round trip to PostgreSQL when each goes back).
    kept: crate::db::KeptConnections,
    blobs: BlobStore,
    limits: MailboxLimits,
    /// Deliveries waiting to commit together, per mailbox (`group.rs`).
    groups: Arc<group::Groups>,
    /// Users whose usage deltas this process folds a moment after their writes.
    usage_folds: Arc<quota::FoldQueue>,
    /// Users this process has seen without a quota limit (`quota::reserve_known`).
    known_limits: Arc<quota::KnownLimits>,
    /// Ticked after each committed change to a mailbox's messages (`clock.rs`).
    clock: Arc<clock::ChangeClock>,
    /// Header FETCH rows of messages this process stored or read (`light_cache.rs`).
    light: Arc<light_cache::LightCache>,
}

/// uid, modseq, flags, internal date, size, blob id, header ([`MailStore::fetch_light`]).
fn uids_param(uids: &[u32]) -> Vec<i64> {
    uids.iter().map(|&u| u as i64).collect()
}

/// [`uids_param`] sorted and without repeats, for a statement that joins its targets from the
/// array (a repeated UID would be a repeated row).
fn unique_uids_param(uids: &[u32]) -> Vec<i64> {
    let mut uids = uids_param(uids);
    uids.sort_unstable();
    uids.dedup();
    uids
}

/// [`unique_uids_param`] as runs of consecutive UIDs: the first and the last UID of each run,
/// ascending, for a statement that range-scans the primary key once per run
/// ([`MailStore::fetch_light`], STORE's [`StoreFlags`]): `1:*` is one run however long.
fn uid_runs_param(uids: &[u32]) -> (Vec<i64>, Vec<i64>) {
    let (mut first, mut last) = (Vec::new(), Vec::<i64>::new());
    for uid in unique_uids_param(uids) {
        match last.last_mut() {
            Some(end) if *end + 1 == uid => *end = uid,
            _ => {
                first.push(uid);
                last.push(uid);
            }
        }
    }
    (first, last)
}

impl MailStore {
    /// The store over `db` and `blobs`.
    pub fn new(db: PgPool, blobs: BlobStore) -> MailStore {
        let clock = clock::ChangeClock::open(&blobs.root().with_file_name(clock::FILE_NAME));
        MailStore {
            kept: crate::db::KeptConnections::new(db.clone()),
            db,
            blobs,
            limits: MailboxLimits::default(),
            groups: Arc::default(),
            usage_folds: Arc::default(),
            known_limits: Arc::default(),
            clock: Arc::new(clock),
            light: Arc::default(),
        }
    }

    /// The same store with other mailbox limits.
    pub fn with_limits(mut self, limits: MailboxLimits) -> MailStore {
        self.limits = limits;
        self
    }

    /// Refuse a (normalized) name that is malformed or passes the depth or length limit.
    fn check_name(&self, name: &str) -> Result<(), StoreError> {
        if name.is_empty() || name.split(DELIMITER).any(str::is_empty) {
            return Err(StoreError::Invalid("invalid mailbox name".into()));
        }
        if name.len() > self.limits.max_name_length {
            return Err(StoreError::Limit(format!(
                "mailbox name longer than {} bytes",
                self.limits.max_name_length
            )));
        }
        if name.split(DELIMITER).count() > self.limits.max_depth {
            return Err(StoreError::Limit(format!(
                "mailbox name deeper than {} levels",
                self.limits.max_depth
            )));
        }
        Ok(())
    }

    /// The database (quota warnings read usage through it).
    pub(crate) fn db(&self) -> &PgPool {
        &self.db
    }

    /// This process's batch of usage deltas to fold (`quota::warn::after_unlimited_write`).
    pub(crate) fn usage_folds(&self) -> &Arc<quota::FoldQueue> {
        &self.usage_folds
    }

    /// The users this process has seen without a quota limit (`quota::reserve_known`).
    pub fn known_limits(&self) -> &quota::KnownLimits {
        &self.known_limits
    }

    /// The change clock this store ticks (`clock.rs`).
    pub fn clock(&self) -> &clock::ChangeClock {
        &self.clock
    }

    /// The header FETCH rows of `uids` (ascending) in `mailbox_id` when this process keeps every
    /// one of them (`light_cache.rs`): as [`Self::fetch_light`] reads them, without its round
    /// trip.
    pub fn cached_light(&self, mailbox_id: i64, uids: &[u32]) -> Option<Vec<StoredMessage>> {
        self.light.get_all(mailbox_id, uids)
    }

    /// Keep the rows of a read for the next FETCH of them: a client's FETCH of its new mail, or
    /// the same headers downloaded again (Thunderbird's other connections, a phone's next sync).
    fn keep_light(&self, mailbox_id: i64, rows: &[StoredMessage]) {
        self.light.insert_all(mailbox_id, rows);
    }

    /// Tick the clock once for each mailbox `appended` went into (after their commit).
    fn tick_appended(&self, appended: &[Appended]) {
        let mut ids: Vec<i64> = appended.iter().map(|a| a.mailbox_id).collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            self.clock.tick(id);
        }
    }

    /// The blob store (for reading bodies).
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// Every mailbox of a user, by name.
    pub async fn list_mailboxes(&self, user_id: i64) -> Result<Vec<Mailbox>, StoreError> {
        let rows = sqlx::query_as!(
            MailboxRow,
            "SELECT id, user_id, name, uidvalidity, uidnext, highestmodseq, special_use, subscribed FROM mailboxes WHERE user_id = $1 ORDER BY name",
            user_id
        )
        .fetch_all(&self.db)
        .await?;
        Ok(rows.into_iter().map(Mailbox::from).collect())
    }

    /// A mailbox by name (`INBOX` in any case).
    pub async fn mailbox(&self, user_id: i64, name: &str) -> Result<Mailbox, StoreError> {
        let mut conn = self.kept.take().await?;
        let row = sqlx::query_as!(
            MailboxRow,
            "SELECT id, user_id, name, uidvalidity, uidnext, highestmodseq, special_use, subscribed FROM mailboxes WHERE user_id = $1 AND name = $2",
            user_id,
            normalize_mailbox_name(name)
        )
        .fetch_optional(&mut *conn)
        .await?;
        conn.done();
        row.map(Mailbox::from).ok_or(StoreError::NoSuchMailbox)
    }

    /// A mailbox by id, if it is the user's.
    pub async fn mailbox_by_id(&self, user_id: i64, mailbox_id: i64) -> Result<Mailbox, StoreError> {
        let mut conn = self.kept.take().await?;
        let row = sqlx::query_as!(
            MailboxRow,
            "SELECT id, user_id, name, uidvalidity, uidnext, highestmodseq, special_use, subscribed FROM mailboxes WHERE user_id = $1 AND id = $2",
            user_id,
            mailbox_id
        )
        .fetch_optional(&mut *conn)
        .await?;
        conn.done();
        row.map(Mailbox::from).ok_or(StoreError::NoSuchMailbox)
    }

    /// The user's mailbox with a special use (e.g. Junk for filtered mail).
    pub async fn mailbox_with_use(&self, user_id: i64, special_use: SpecialUse) -> Result<Mailbox, StoreError> {
        let row = sqlx::query_as!(
            MailboxRow,
            "SELECT id, user_id, name, uidvalidity, uidnext, highestmodseq, special_use, subscribed FROM mailboxes WHERE user_id = $1 AND special_use = $2 ORDER BY id LIMIT 1",
            user_id,
            special_use.as_imap()
        )
        .fetch_optional(&self.db)
        .await?;
        row.map(Mailbox::from).ok_or(StoreError::NoSuchMailbox)
    }

    /// A mailbox by name with its message counts for STATUS (RFC 3501 §6.3.10), read in one
    /// statement (one snapshot, one round trip).
    pub async fn mailbox_status(&self, user_id: i64, name: &str) -> Result<MailboxStatus, StoreError> {
        let name = normalize_mailbox_name(name);
        self.statuses(user_id, Some(&name))
            .await?
            .pop()
            .ok_or(StoreError::NoSuchMailbox)
    }

    /// Every mailbox of a user with its STATUS counts, by name, in one statement: LIST-STATUS
    /// (RFC 5819) answers a LIST of many mailboxes with one round trip, not one per mailbox.
    pub async fn mailbox_statuses(&self, user_id: i64) -> Result<Vec<MailboxStatus>, StoreError> {
        self.statuses(user_id, None).await
    }

    /// The one STATUS statement: the user's mailboxes (only `name`, normalized, when given).
    async fn statuses(&self, user_id: i64, name: Option<&str>) -> Result<Vec<MailboxStatus>, StoreError> {
        // RFC 3501 §2.3.2: RECENT counts the messages above the claim mark, which no session
        // has claimed yet. RFC 8438 SIZE adds up the messages' sizes (RFC822.SIZE); RFC 9051
        // §6.3.11 DELETED counts \Deleted.
        // count(*) is never NULL; sqlx cannot see that through the LATERAL subquery.
        let rows = sqlx::query!(
            r#"SELECT b.id, b.user_id, b.name, b.uidvalidity, b.uidnext, b.highestmodseq, b.special_use,
                    b.subscribed, c.messages AS "messages!", c.unseen AS "unseen!", c.recent AS "recent!",
                    c.deleted AS "deleted!", c.size AS "size!"
             FROM mailboxes b,
             LATERAL (SELECT count(*) AS messages,
                             count(*) FILTER (WHERE NOT ('\Seen' = ANY(m.flags))) AS unseen,
                             count(*) FILTER (WHERE m.uid > b.recent_claimed_uid) AS recent,
                             count(*) FILTER (WHERE '\Deleted' = ANY(m.flags)) AS deleted,
                             COALESCE(sum(m.size), 0)::BIGINT AS size
                      FROM messages m WHERE m.mailbox_id = b.id) c
             WHERE b.user_id = $1 AND ($2::TEXT IS NULL OR b.name = $2)
             ORDER BY b.name"#,
            user_id,
            name
        )
        .fetch_all(&self.db)
        .await?;
        let count = |n: i64| n.max(0) as u64;
        Ok(rows
            .into_iter()
            .map(|row| MailboxStatus {
                mailbox: Mailbox::from(MailboxRow {
                    id: row.id,
                    user_id: row.user_id,
                    name: row.name,
                    uidvalidity: row.uidvalidity,
                    uidnext: row.uidnext,
                    highestmodseq: row.highestmodseq,
                    special_use: row.special_use,
                    subscribed: row.subscribed,
                }),
                messages: count(row.messages),
                unseen: count(row.unseen),
                recent: count(row.recent),
                deleted: count(row.deleted),
                size: count(row.size),
            })
            .collect())
    }

    /// What changed in a user's mailbox since MODSEQ `since`, for a view of it that holds the
    /// messages up to UID `known_uid`, in one statement (one snapshot): its HIGHESTMODSEQ, the
    /// messages added since (above `known_uid`: UIDs and MODSEQs are both taken in ascending
    /// order under the mailbox's row lock, so whatever came after `since` is above every UID
    /// the view could know) and those changed since (the record of flag changes,
    /// `flag_changes`, migration 0021; `modseq` itself is not indexed, so that a STORE's row
    /// versions can be HOT), and the UIDs removed since, from the mailbox's removal record
    /// (RFC 7162 §3.2.5, the table `expunged`); `expunged` is `None` when the record no longer
    /// reaches back to `since` (pruned past `expunged_floor`): the caller then compares its
    /// whole view ([`Self::message_states`]). When the record of flag changes does not reach
    /// back to `since` (`flag_log_floor`, [`FLAG_LOG_MAX_UIDS`]) every message of the view is
    /// compared instead. A session whose view is current pays one index probe of each record
    /// and of the messages above its UIDs, not a count of the mailbox's messages.
    /// `NoSuchMailbox` when the mailbox is gone or not the user's.
    pub async fn changes_since(
        &self,
        user_id: i64,
        mailbox_id: i64,
        since: u64,
        known_uid: u32,
    ) -> Result<Changes, StoreError> {
        let (changes, _) = self
            .changes_and_light(user_id, mailbox_id, since, known_uid, &[])
            .await?;
        Ok(changes)
    }

    /// [`Self::changes_since`] and [`Self::fetch_light`] of `uids` in one statement: one round
    /// trip and one snapshot for FETCH's sync read and its first batch of rows (issue #12: the
    /// mixed load's FETCH paid two). The rows are as of the same moment as the changes, so a
    /// view brought up to date with the changes agrees with them. The rows' flags are left
    /// empty (the session's view has them, as for [`Self::scan_light`]). With no `uids` it is
    /// [`Self::changes_since`].
    pub async fn changes_and_light(
        &self,
        user_id: i64,
        mailbox_id: i64,
        since: u64,
        known_uid: u32,
        uids: &[u32],
    ) -> Result<(Changes, Vec<StoredMessage>), StoreError> {
        // A client's MODSEQ is at most 63 bits (RFC 7162 §7); a larger one is past every change.
        let since = i64::try_from(since).unwrap_or(i64::MAX);
        let (first, last) = uid_runs_param(uids);
        let mut conn = self.kept.take().await?;
        // `kind` 0: added since (above the view's UIDs), changed since (the record of flag
        // changes; or every message of the view when that record does not reach back to
        // `since`); 1: removed since; 2: a row asked for (as in `fetch_light`: one primary key
        // range scan per run of UIDs). Each branch's test of the floors uses only the mailbox
        // row and parameters: PostgreSQL evaluates it once, before the branch's scan (a gating
        // "one-time filter"); so does the test that the mailbox changed at all since `since`
        // (every change takes a new HIGHESTMODSEQ), which spares a view that is current (a
        // NOOP, an IDLE wake-up for another mailbox, a FETCH) every scan but the rows'. The UID ranges are closed on both sides so that a generic plan
        // range-scans the primary key: with one side open it estimated a third of the table and
        // scanned all of it. The recorded ranges (merged by `range_agg`) and the runs asked for
        // each range-scan it too, behind `OFFSET 0` (never pulled up into the join, so always
        // the inner side of a nested loop driven by the ranges).
        let rows = sqlx::query!(
            r#"SELECT b.highestmodseq, $3 >= b.expunged_floor AS "complete!",
                      c.kind AS "kind?", c.uid AS "uid?", c.modseq AS "modseq?", c.flags AS "flags?",
                      c.internal_date AS "internal_date?", c.size AS "size?", c.blob_id AS "blob_id?",
                      c.header AS "header?"
             FROM mailboxes b
             LEFT JOIN LATERAL (
                 SELECT 0 AS kind, m.uid, m.modseq, m.flags, NULL::timestamptz AS internal_date,
                        NULL::bigint AS size, NULL::text AS blob_id, NULL::bytea AS header
                 FROM messages m
                 WHERE m.mailbox_id = b.id AND m.uid > $6 AND m.uid < b.uidnext AND b.highestmodseq > $3
                 UNION ALL
                 SELECT 0, m.uid, m.modseq, m.flags, NULL, NULL, NULL, NULL FROM (
                     SELECT unnest(range_agg(f.uids)) AS r FROM flag_changes f
                     WHERE f.mailbox_id = b.id AND f.modseq > $3 AND $3 >= b.flag_log_floor AND b.highestmodseq > $3) x
                 CROSS JOIN LATERAL (
                     SELECT m.uid, m.modseq, m.flags FROM messages m
                     WHERE m.mailbox_id = b.id AND m.uid >= lower(x.r) AND m.uid < upper(x.r)
                       AND m.uid <= $6 AND m.modseq > $3
                     OFFSET 0) m
                 UNION ALL
                 SELECT 0, m.uid, m.modseq, m.flags, NULL, NULL, NULL, NULL FROM messages m
                 WHERE m.mailbox_id = b.id AND m.uid BETWEEN 1 AND $6 AND m.modseq > $3 AND $3 < b.flag_log_floor
                   AND b.highestmodseq > $3
                 UNION ALL
                 SELECT 1, e.uid, e.modseq, NULL, NULL, NULL, NULL, NULL FROM expunged e
                 WHERE e.mailbox_id = b.id AND e.modseq > $3 AND $3 >= b.expunged_floor AND b.highestmodseq > $3
                 UNION ALL
                 SELECT 2, m.uid, m.modseq, NULL, m.internal_date, m.size, m.blob_id, m.header
                 FROM unnest($4::bigint[], $5::bigint[]) AS r(first_uid, last_uid)
                 CROSS JOIN LATERAL (
                     SELECT m.uid, m.modseq, m.internal_date, m.size, m.blob_id, m.header
                     FROM messages m
                     WHERE m.mailbox_id = b.id AND m.uid BETWEEN r.first_uid AND r.last_uid
                     OFFSET 0) m
             ) c ON true
             WHERE b.id = $1 AND b.user_id = $2
             ORDER BY c.kind, c.uid"#,
            mailbox_id,
            user_id,
            since,
            &first,
            &last,
            i64::from(known_uid)
        )
        .fetch_all(&mut *conn)
        .await?;
        conn.done();
        let first = rows.first().ok_or(StoreError::NoSuchMailbox)?;
        let mut changes = Changes::new(first.highestmodseq, first.complete);
        let mut light = Vec::new();
        for row in rows {
            if row.kind != Some(2) {
                changes.add(row.uid, row.modseq, row.flags, row.kind.map(|kind| kind == 1));
            } else if let (Some(uid), Some(modseq), Some(internal_date), Some(size), Some(blob_id), Some(header)) = (
                row.uid,
                row.modseq,
                row.internal_date,
                row.size,
                row.blob_id,
                row.header,
            ) {
                light.push(StoredMessage::light(
                    uid,
                    modseq,
                    Vec::new(),
                    internal_date,
                    size,
                    blob_id,
                    header,
                ));
            }
        }
        self.keep_light(mailbox_id, &light);
        Ok((changes, light))
    }

    /// Claim the messages of a user's mailbox up to `up_to_uid` as \Recent for the calling
    /// session (RFC 3501 §2.3.2: a message is \Recent in exactly one session, the first that
    /// learns of it with the mailbox selected read-write). Returns the UIDs this call won, or
    /// `None` when every UID up to `up_to_uid` was claimed already (or the mailbox is gone or
    /// not the user's).
    ///
    /// The mailbox row keeps the highest UID already claimed (`recent_claimed_uid`); a claim
    /// moves it up to `up_to_uid` and gets the old mark back in the same statement, so the UIDs
    /// in (old, up_to_uid] are the caller's. The row lock orders two sessions' claims one after
    /// the other, so no UID is claimed twice, across sessions and processes. The caller keeps
    /// only the UIDs of that range it actually has in its view.
    pub async fn claim_recent(
        &self,
        user_id: i64,
        mailbox_id: i64,
        up_to_uid: u32,
    ) -> Result<Option<RangeInclusive<u32>>, StoreError> {
        let mut conn = self.kept.take().await?;
        // FOR UPDATE in the subquery: it waits for a concurrent claim and re-reads the value
        // that claim left, and the UPDATE then works on that locked row (the old value comes
        // back). Nothing new to claim: no row matches, nothing is locked or written. Only the
        // mailbox row is locked, alone in its transaction, so the lock order holds.
        // The claim commits without waiting for the WAL flush (`set_config(.., true)` is SET
        // LOCAL for the statement's own transaction; claims made visible to others at once
        // all the same): \Recent is a hint (RFC 3501 §2.3.2), and a claim lost in a database
        // crash only lets a later session see those messages as \Recent again, while a
        // synchronous one cost a second WAL flush per APPEND into a selected mailbox.
        let old: Option<i64> = sqlx::query_scalar!(
            r#"UPDATE mailboxes b SET recent_claimed_uid = greatest(old.recent_claimed_uid, $3)
             FROM (SELECT id, recent_claimed_uid FROM mailboxes
                   WHERE id = $1 AND user_id = $2 AND recent_claimed_uid < $3
                     AND set_config('synchronous_commit', 'off', true) IS NOT NULL
                   FOR UPDATE) old
             WHERE b.id = old.id
             RETURNING old.recent_claimed_uid AS "old!""#,
            mailbox_id,
            user_id,
            i64::from(up_to_uid)
        )
        .fetch_optional(&mut *conn)
        .await?;
        conn.done();
        // The old mark is below `up_to_uid` (the WHERE above), so it fits a u32.
        Ok(old.map(|old| (old.max(0) as u32 + 1)..=up_to_uid))
    }

    /// Create a mailbox (RFC 3501 §6.3.3), optionally with a special use (RFC 6154 CREATE USE),
    /// with the superior names it needs, all in one transaction: when the name, a limit or
    /// anything else refuses it, nothing is left behind.
    pub async fn create_mailbox(
        &self,
        user_id: i64,
        name: &str,
        special_use: Option<SpecialUse>,
    ) -> Result<Mailbox, StoreError> {
        let name = normalize_mailbox_name(name);
        if let Err(e) = self.check_name(&name) {
            if matches!(e, StoreError::Limit(_)) {
                tracing::info!(user_id, len = name.len(), "CREATE refused: {e}");
            }
            return Err(e);
        }
        let mut tx = self.db.begin().await?;
        // Lock order: the user row first; it also serialises this user's creations, so the
        // count below cannot be raced past the limit.
        lock_user(&mut tx, user_id).await?;
        let mailbox = self.create_in(&mut tx, user_id, &name, special_use).await?;
        tx.commit().await?;
        Ok(mailbox)
    }

    /// Create the missing superiors of `name` (RFC 3501 §6.3.3: CREATE and RENAME make the
    /// hierarchy a name implies), after checking that they and `more` further mailboxes fit the
    /// user's mailbox count. Inside the caller's transaction, all or nothing.
    async fn create_superiors(
        &self,
        conn: &mut PgConnection,
        user_id: i64,
        name: &str,
        more: u64,
    ) -> Result<(), StoreError> {
        let missing = self.missing_superiors(conn, user_id, name).await?;
        self.check_count(conn, user_id, missing.len() as u64 + more).await?;
        for parent in &missing {
            let uidvalidity = next_uidvalidity(conn, user_id).await?;
            sqlx::query!(
                "INSERT INTO mailboxes (user_id, name, uidvalidity) VALUES ($1, $2, $3)
                 ON CONFLICT (user_id, name) DO NOTHING",
                user_id,
                parent,
                uidvalidity
            )
            .execute(&mut *conn)
            .await?;
            let event = Event::MailboxCreated {
                user_id,
                name: parent.clone(),
            };
            events::notify(conn, &event).await?;
        }
        Ok(())
    }

    /// Inside a transaction holding the user's row: create `name` and its missing superiors
    /// after checking the mailbox count.
    async fn create_in(
        &self,
        conn: &mut PgConnection,
        user_id: i64,
        name: &str,
        special_use: Option<SpecialUse>,
    ) -> Result<Mailbox, StoreError> {
        self.create_superiors(conn, user_id, name, 1).await?;
        let uidvalidity = next_uidvalidity(conn, user_id).await?;
        let row = sqlx::query_as!(
            MailboxRow,
            "INSERT INTO mailboxes (user_id, name, uidvalidity, special_use) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id, name) DO NOTHING RETURNING id, user_id, name, uidvalidity, uidnext, highestmodseq, special_use, subscribed",
            user_id,
            name,
            uidvalidity,
            special_use.map(SpecialUse::as_imap)
        )
        .fetch_optional(&mut *conn)
        .await?;
        let mailbox = row.map(Mailbox::from).ok_or(StoreError::AlreadyExists)?;
        // Sent at commit (RFC 5465 §5.4 MailboxName for the sessions of this user).
        let event = Event::MailboxCreated {
            user_id,
            name: mailbox.name.clone(),
        };
        events::notify(conn, &event).await?;
        Ok(mailbox)
    }

    /// The superior names of `name` (`a`, `a/b` for `a/b/c`) that do not exist yet.
    async fn missing_superiors(
        &self,
        conn: &mut PgConnection,
        user_id: i64,
        name: &str,
    ) -> Result<Vec<String>, StoreError> {
        let parts: Vec<&str> = name.split(DELIMITER).collect();
        let superiors: Vec<String> = (1..parts.len())
            .map(|i| parts[..i].join(&DELIMITER.to_string()))
            .collect();
        if superiors.is_empty() {
            return Ok(Vec::new());
        }
        let existing: Vec<String> = sqlx::query_scalar!(
            "SELECT name FROM mailboxes WHERE user_id = $1 AND name = ANY($2)",
            user_id,
            &superiors
        )
        .fetch_all(&mut *conn)
        .await?;
        Ok(superiors.into_iter().filter(|s| !existing.contains(s)).collect())
    }

    /// Refuse when `adding` more mailboxes would pass the per-user limit.
    async fn check_count(&self, conn: &mut PgConnection, user_id: i64, adding: u64) -> Result<(), StoreError> {
        let count: i64 = sqlx::query_scalar!(
            r#"SELECT count(*) AS "count!" FROM mailboxes WHERE user_id = $1"#,
            user_id
        )
        .fetch_one(&mut *conn)
        .await?;
        if count.max(0) as u64 + adding > self.limits.max_mailboxes {
            tracing::info!(
                user_id,
                count,
                adding,
                limit = self.limits.max_mailboxes,
                "mailbox refused: too many mailboxes"
            );
            return Err(StoreError::Limit(format!(
                "at most {} mailboxes per user",
                self.limits.max_mailboxes
            )));
        }
        Ok(())
    }

    /// Delete a mailbox and its messages (RFC 3501 §6.3.4); INBOX cannot be deleted. Inferior
    /// mailboxes stay.
    pub async fn delete_mailbox(&self, user_id: i64, name: &str) -> Result<(), StoreError> {
        let name = normalize_mailbox_name(name);
        if name == "INBOX" {
            return Err(StoreError::Invalid("INBOX cannot be deleted".into()));
        }
        let mut tx = self.db.begin().await?;
        lock_user(&mut tx, user_id).await?;
        let mailbox_id: Option<i64> = sqlx::query_scalar!(
            "SELECT id FROM mailboxes WHERE user_id = $1 AND name = $2 FOR UPDATE",
            user_id,
            name
        )
        .fetch_optional(&mut *tx)
        .await?;
        let mailbox_id = mailbox_id.ok_or(StoreError::NoSuchMailbox)?;
        let removed: Vec<(String, i64)> = sqlx::query!(
            "DELETE FROM messages WHERE mailbox_id = $1 RETURNING blob_id, size",
            mailbox_id
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| (r.blob_id, r.size))
        .collect();
        let warned = release_messages(&mut tx, user_id, &removed).await?;
        // RFC 5464 §3.2: the mailbox's METADATA entries go with it, their bytes refunded.
        crate::metadata::drop_mailbox(&mut tx, user_id, mailbox_id).await?;
        sqlx::query!("DELETE FROM mailboxes WHERE id = $1", mailbox_id)
            .execute(&mut *tx)
            .await?;
        events::notify(&mut tx, &Event::MailboxDeleted { user_id, name }).await?;
        tx.commit().await?;
        // A session with it selected finds it gone at its next command.
        self.clock.tick(mailbox_id);
        if warned {
            // Usage fell: the warning given may be armed again.
            quota::warn::after_write(self, &[user_id]).await;
        }
        Ok(())
    }

    /// Rename a mailbox and its inferiors (RFC 3501 §6.3.5), creating the superior names the new
    /// name needs, in one transaction. Renaming INBOX moves its messages into a new mailbox and
    /// leaves INBOX empty. Every new name must stay within the depth and length limits.
    pub async fn rename_mailbox(&self, user_id: i64, from: &str, to: &str) -> Result<(), StoreError> {
        let from = normalize_mailbox_name(from);
        let to = normalize_mailbox_name(to);
        if let Err(e) = self.check_name(&to) {
            if matches!(e, StoreError::Limit(_)) {
                tracing::info!(user_id, len = to.len(), "RENAME refused: {e}");
            }
            return Err(e);
        }
        if to == "INBOX" || to.starts_with(&format!("{from}{DELIMITER}")) {
            return Err(StoreError::Invalid("cannot rename to that name".into()));
        }
        if from == "INBOX" {
            let inbox = self.mailbox(user_id, "INBOX").await?;
            let target = self.create_mailbox(user_id, &to, None).await?;
            let uids: Vec<u32> = self
                .message_states(user_id, inbox.id)
                .await?
                .iter()
                .map(|m| m.uid)
                .collect();
            self.move_messages(user_id, inbox.id, &uids, target.id).await?;
            return Ok(());
        }
        let mut tx = self.db.begin().await?;
        lock_user(&mut tx, user_id).await?;
        let exists: bool = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM mailboxes WHERE user_id = $1 AND name = $2) AS "exists!""#,
            user_id,
            to
        )
        .fetch_one(&mut *tx)
        .await?;
        if exists {
            return Err(StoreError::AlreadyExists);
        }
        let renamed: Vec<String> = sqlx::query_scalar!(
            "SELECT name FROM mailboxes WHERE user_id = $1 AND (name = $2 OR left(name, length($2) + 1) = $2 || '/')",
            user_id,
            from
        )
        .fetch_all(&mut *tx)
        .await?;
        if renamed.is_empty() {
            return Err(StoreError::NoSuchMailbox);
        }
        for old in &renamed {
            let new = format!("{to}{}", &old[from.len()..]);
            if let Err(e) = self.check_name(&new) {
                tracing::info!(user_id, "RENAME refused: {e}");
                return Err(e);
            }
        }
        self.create_superiors(&mut tx, user_id, &to, 0).await?;
        sqlx::query!(
            "UPDATE mailboxes SET name = $3 || substr(name, length($2) + 1)
             WHERE user_id = $1 AND (name = $2 OR left(name, length($2) + 1) = $2 || '/')",
            user_id,
            from,
            to
        )
        .execute(&mut *tx)
        .await?;
        // The subscriptions follow the renamed mailboxes, as in Dovecot (RFC 3501 §6.3.5 leaves it
        // open): a client that lists only subscribed folders keeps seeing what it renamed. A
        // stale subscription already on a new name stays as it is.
        sqlx::query!(
            "WITH moved AS (
                 DELETE FROM subscriptions
                 WHERE user_id = $1 AND (name = $2 OR left(name, length($2) + 1) = $2 || '/')
                 RETURNING name)
             INSERT INTO subscriptions (user_id, name)
             SELECT $1, $3 || substr(name, length($2) + 1) FROM moved
             ON CONFLICT DO NOTHING",
            user_id,
            from,
            to
        )
        .execute(&mut *tx)
        .await?;
        events::notify(&mut tx, &Event::MailboxRenamed { user_id, from, to }).await?;
        tx.commit().await?;
        Ok(())
    }

    /// SUBSCRIBE / UNSUBSCRIBE (RFC 3501 §6.3.6, §6.3.7). Subscriptions are names kept apart
    /// from the mailboxes: SUBSCRIBE checks that the mailbox exists (§6.3.6 allows it), and
    /// UNSUBSCRIBE removes the name whether or not a mailbox has it (RFC 9051 §6.3.7: a deleted
    /// mailbox's name stays subscribed until the client removes it). Both are idempotent.
    pub async fn set_subscribed(&self, user_id: i64, name: &str, subscribed: bool) -> Result<(), StoreError> {
        let name = normalize_mailbox_name(name);
        if !subscribed {
            let mut conn = self.db.acquire().await?;
            let removed = sqlx::query!(
                "DELETE FROM subscriptions WHERE user_id = $1 AND name = $2",
                user_id,
                name
            )
            .execute(&mut *conn)
            .await?;
            if removed.rows_affected() > 0 {
                // Outside a transaction: sent at once, after the DELETE (RFC 5465 §5.5).
                let event = Event::Subscription {
                    user_id,
                    name,
                    subscribed: false,
                };
                events::notify(&mut conn, &event).await?;
            }
            return Ok(());
        }
        // Names stay subscribed after their mailbox is deleted, so subscribe/delete/create
        // cycles could grow the list without end: it holds at most as many names as the user
        // may have mailboxes (RFC 5530 NO [LIMIT]).
        let count: i64 = sqlx::query_scalar!(
            r#"SELECT count(*) AS "count!" FROM subscriptions WHERE user_id = $1"#,
            user_id
        )
        .fetch_one(&self.db)
        .await?;
        if count.max(0) as u64 >= self.limits.max_mailboxes {
            tracing::info!(user_id, count, "SUBSCRIBE refused: too many subscriptions");
            return Err(StoreError::Limit(format!(
                "at most {} subscriptions per user",
                self.limits.max_mailboxes
            )));
        }
        // One statement: the mailbox must exist at that moment.
        let mut conn = self.db.acquire().await?;
        let inserted = sqlx::query!(
            "INSERT INTO subscriptions (user_id, name)
             SELECT user_id, name FROM mailboxes WHERE user_id = $1 AND name = $2
             ON CONFLICT DO NOTHING",
            user_id,
            name
        )
        .execute(&mut *conn)
        .await?;
        if inserted.rows_affected() > 0 {
            let event = Event::Subscription {
                user_id,
                name: name.clone(),
                subscribed: true,
            };
            events::notify(&mut conn, &event).await?;
        }
        drop(conn);
        if inserted.rows_affected() == 0 {
            let exists: bool = sqlx::query_scalar!(
                r#"SELECT EXISTS (SELECT 1 FROM mailboxes WHERE user_id = $1 AND name = $2) AS "exists!""#,
                user_id,
                name
            )
            .fetch_one(&self.db)
            .await?;
            if !exists {
                return Err(StoreError::NoSuchMailbox);
            }
        }
        Ok(())
    }

    /// The names the user subscribed to (RFC 3501 §6.3.9 LSUB), mailboxes or not.
    pub async fn subscriptions(&self, user_id: i64) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar!(
            "SELECT name FROM subscriptions WHERE user_id = $1 ORDER BY name",
            user_id
        )
        .fetch_all(&self.db)
        .await?)
    }

    /// Store one message in one mailbox (IMAP APPEND). The body is durable and the quota
    /// charged before this returns `Ok`.
    pub async fn append(
        &self,
        user_id: i64,
        mailbox_id: i64,
        raw: &[u8],
        flags: &[String],
        internal_date: DateTime<Utc>,
        reservation: Option<Reservation>,
    ) -> Result<Appended, StoreError> {
        self.append_owned(user_id, mailbox_id, raw.to_vec(), flags, internal_date, reservation)
            .await
    }

    /// [`Self::append`] of a message the caller owns (no copy is made for parsing it).
    pub async fn append_owned(
        &self,
        user_id: i64,
        mailbox_id: i64,
        raw: Vec<u8>,
        flags: &[String],
        internal_date: DateTime<Utc>,
        reservation: Option<Reservation>,
    ) -> Result<Appended, StoreError> {
        let target = DeliveryTarget {
            user_id,
            mailbox_id: Some(mailbox_id),
            reservation,
        };
        let mut appended = self
            .deliver_owned(vec![target], Arc::new(raw), flags, internal_date)
            .await?;
        Ok(appended.remove(0))
    }

    /// Store one message in the user's mailbox named `name` (IMAP APPEND, RFC 3501 §6.3.11):
    /// [`Self::append_owned`] with the mailbox resolved by the statement that locks it and takes
    /// the UID (issue #12: no lookup before the transaction); `NoSuchMailbox` when the user has
    /// none of that name. `view`: the session has this mailbox selected ([`SelectedView`]); the
    /// answer then says whether \Recent was claimed for it (`Appended::recent_from`).
    #[allow(clippy::too_many_arguments)] // The APPEND's own parts, each needed once.
    pub async fn append_named(
        &self,
        user_id: i64,
        name: &str,
        view: Option<SelectedView>,
        raw: Vec<u8>,
        flags: &[String],
        internal_date: DateTime<Utc>,
        reservation: Option<Reservation>,
    ) -> Result<Appended, StoreError> {
        let target = DeliveryTarget {
            user_id,
            mailbox_id: None,
            reservation,
        };
        let into = Some((Destination::Named(normalize_mailbox_name(name)), view));
        let mut appended = self
            .deliver_owned_into(vec![target], into, Arc::new(raw), flags, internal_date)
            .await?;
        Ok(appended.remove(0))
    }

    /// Store several messages in one mailbox, all or none (IMAP MULTIAPPEND, RFC 3502 §3: "If
    /// the server fails to append any message, none of the messages are appended"). Each body
    /// is prepared like a single APPEND's ([`Self::prepare`]: parsed, written and fsynced), then
    /// one transaction adds every row in the given order (ascending UIDs, RFC 4315 §3), commits
    /// or charges each message's quota, and commits. The reservations are used up either way:
    /// committed on success, released on failure.
    pub async fn append_batch(
        &self,
        user_id: i64,
        mailbox_id: i64,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<Appended>, StoreError> {
        let reservations: Vec<i64> = messages
            .iter()
            .filter_map(|m| m.reservation.as_ref().map(|r| r.id))
            .collect();
        let unlimited = messages.iter().all(|m| is_unlimited(m.reservation.as_ref()));
        let result = self.append_batch_once(user_id, mailbox_id, messages).await;
        if result.is_ok() {
            self.clock.tick(mailbox_id);
        }
        match &result {
            Err(_) => {
                // The rolled-back transaction left the reservations in place; give the space back.
                if let Err(e) = quota::release_ids(&self.db, &reservations).await {
                    tracing::warn!("releasing reservations after a failed append: {e}");
                }
            }
            Ok(_) if unlimited => quota::warn::after_unlimited_write(self, &[user_id]),
            Ok(_) => quota::warn::after_write(self, &[user_id]).await,
        }
        result
    }

    async fn append_batch_once(
        &self,
        user_id: i64,
        mailbox_id: i64,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<Appended>, StoreError> {
        // Every body is durable before the transaction starts (as for one message); bodies of
        // a batch that then fails are swept later like any unreferenced blob.
        let mut prepared = Vec::with_capacity(messages.len());
        for message in messages {
            let NewMessage {
                raw,
                flags,
                internal_date,
                reservation,
            } = message;
            let body = self.prepare(Arc::new(raw)).await?;
            prepared.push((body, normalize_flags(&flags), internal_date, reservation));
        }
        let mut tx = self.db.begin().await?;
        // The module's lock order up front (user, mailbox, then the blob rows that exist by
        // ascending id), since the bodies' blob rows are referenced one by one in command order
        // below; an EXPUNGE of some of the same contents cannot then deadlock with the batch.
        lock_user(&mut tx, user_id).await?;
        lock_mailbox_row(&mut tx, user_id, mailbox_id).await?;
        let mut blob_ids: Vec<String> = prepared.iter().map(|p| p.0.blob.0.clone()).collect();
        blob_ids.sort_unstable();
        blob_ids.dedup();
        blobs::lock(&mut tx, &blob_ids).await?;
        let mut appended = Vec::with_capacity(prepared.len());
        for (body, flags, internal_date, reservation) in prepared {
            let Prepared {
                blob,
                size,
                header,
                envelope,
                structure,
                pending,
            } = body;
            let target = DeliveryTarget {
                user_id,
                mailbox_id: Some(mailbox_id),
                reservation,
            };
            let row = Row {
                flags,
                internal_date,
                size,
                blob,
                envelope,
                structure,
                header,
                pending,
                written: std::sync::Mutex::new(None),
            };
            // Locks already held: the UID and MODSEQ are taken in command order (RFC 4315 §3).
            // The quota step touches only this session's own reservation rows (`quota::commit`),
            // which no other writer locks, so taking them after the mailbox row cannot deadlock.
            appended.push(deliver_one(&mut tx, target, &row).await?);
            // The blob row is locked by the statement that added the reference.
            self.blobs.ensure_present(&row.blob)?;
        }
        tx.commit().await?;
        Ok(appended)
    }

    /// Store one message for several recipients, all or none (SMTP DATA): the body is written
    /// once, then one transaction adds every copy, charges every quota and commits. The targets'
    /// reservations are used up either way: committed on success, released on failure.
    pub async fn deliver(
        &self,
        targets: Vec<DeliveryTarget>,
        raw: &[u8],
        flags: &[String],
        internal_date: DateTime<Utc>,
    ) -> Result<Vec<Appended>, StoreError> {
        // The parse runs on the blocking pool, which needs the bytes for itself.
        self.deliver_owned(targets, Arc::new(raw.to_vec()), flags, internal_date)
            .await
    }

    /// [`Self::deliver`] of a message the caller hands over.
    pub async fn deliver_owned(
        &self,
        targets: Vec<DeliveryTarget>,
        raw: Arc<Vec<u8>>,
        flags: &[String],
        internal_date: DateTime<Utc>,
    ) -> Result<Vec<Appended>, StoreError> {
        self.deliver_owned_into(targets, None, raw, flags, internal_date).await
    }

    /// [`Self::deliver_owned`]; `into`: the one target's mailbox as the transaction resolves
    /// it, and the session's view of it (`append_named`), instead of the target's mailbox id.
    async fn deliver_owned_into(
        &self,
        targets: Vec<DeliveryTarget>,
        into: Option<(Destination, Option<SelectedView>)>,
        raw: Arc<Vec<u8>>,
        flags: &[String],
        internal_date: DateTime<Utc>,
    ) -> Result<Vec<Appended>, StoreError> {
        let reservations: Vec<i64> = targets
            .iter()
            .filter_map(|t| t.reservation.as_ref().map(|r| r.id))
            .collect();
        let unlimited = targets.iter().all(|t| is_unlimited(t.reservation.as_ref()));
        let result = self.deliver_once(targets, into, raw, flags, internal_date, None).await;
        match &result {
            Err(_) if !reservations.is_empty() => {
                // The rolled-back transaction left the reservations in place; give the space back.
                if let Err(e) = quota::release_ids(&self.db, &reservations).await {
                    tracing::warn!("releasing reservations after a failed delivery: {e}");
                }
            }
            Err(_) => {}
            Ok(appended) => {
                let mut users: Vec<i64> = appended.iter().map(|a| a.user_id).collect();
                users.sort_unstable();
                users.dedup();
                if unlimited {
                    quota::warn::after_unlimited_write(self, &users);
                } else {
                    quota::warn::after_write(self, &users).await;
                }
            }
        }
        result
    }

    /// Store a quota warning of `level` (`raw`, from `quota::warn`) in the user's INBOX, through
    /// the normal delivery, in one transaction with the record of the crossing
    /// (`quota::warn::claim`). Not refused by the quota and never checked for a warning itself.
    /// `false`: nothing stored (the crossing was already warned about, or is gone).
    pub(crate) async fn deliver_quota_warning(
        &self,
        user_id: i64,
        level: quota::warn::Level,
        raw: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let target = DeliveryTarget {
            user_id,
            mailbox_id: None,
            reservation: None,
        };
        let appended = self
            .deliver_once(vec![target], None, Arc::new(raw), &[], Utc::now(), Some(level))
            .await?;
        Ok(!appended.is_empty())
    }

    async fn deliver_once(
        &self,
        targets: Vec<DeliveryTarget>,
        into: Option<(Destination, Option<SelectedView>)>,
        raw: Arc<Vec<u8>>,
        flags: &[String],
        internal_date: DateTime<Utc>,
        warning: Option<quota::warn::Level>,
    ) -> Result<Vec<Appended>, StoreError> {
        if warning.is_none() && targets.len() == 1 {
            // The common case (one recipient, one APPEND): the steps of `deliver_one`, in one
            // transaction with the deliveries into the same mailbox that wait meanwhile (group
            // commit, `group.rs`). The body's write overlaps the transaction's statements: a
            // large body's commit waits for its fsyncs, a small body's answer for its file.
            let (prepared, write) = self.prepare_overlapped(raw).await?;
            let target = targets.into_iter().next().expect("one target");
            let row = prepared.into_row(flags, internal_date);
            let body = match write {
                BodyWrite::BeforeCommit(body) => Some(body),
                BodyWrite::AfterCommit(written) => {
                    *row.written.lock().unwrap_or_else(|e| e.into_inner()) = Some(written);
                    None
                }
            };
            // An IMAP APPEND's message (named mailbox) is kept for the FETCH that usually follows
            // it; a delivery's (smtpd) is not: that process never reads it back.
            let keep = into.is_some().then(|| {
                (
                    row.internal_date,
                    row.size,
                    row.blob.clone(),
                    Arc::<[u8]>::from(&row.header[..]),
                )
            });
            let (destination, view) = into.unwrap_or_else(|| (Destination::of(&target), None));
            let appended = self.deliver_grouped(target, destination, view, row, body).await?;
            self.clock.tick(appended.mailbox_id);
            if let Some((internal_date, size, blob, header)) = keep {
                self.light
                    .insert_parts(appended.mailbox_id, appended.uid, internal_date, size, &blob, header);
            }
            return Ok(vec![appended]);
        }
        let prepared = self.prepare(raw).await?;
        let kind = match warning {
            Some(level) => DeliveryKind::QuotaWarning(level),
            None => DeliveryKind::Normal,
        };
        let appended = self
            .deliver_prepared(targets, prepared, flags, internal_date, kind)
            .await?;
        Ok(appended.unwrap_or_default())
    }

    /// Parse a message and write its body durably to the blob store: what a delivery needs
    /// before its transaction.
    async fn prepare(&self, raw: Arc<Vec<u8>>) -> Result<Prepared, StoreError> {
        // Parsing up to max_message_size bytes is CPU work: on the blocking pool, not on an
        // async worker thread every other session shares.
        let for_parse = raw.clone();
        let parse = tokio::task::spawn_blocking(move || Analysed::of(&for_parse));
        // The parse and the body's write and fsync run side by side on the blocking pool; the
        // transaction below starts only when both are done (the body is durable before any row
        // points at it). A body written for a message that then fails is swept later.
        let (parse, blob) = tokio::join!(parse, self.blobs.put_shared(raw.clone()));
        let analysed = parse.map_err(parser_failed)?;
        analysed.prepared(blob?, raw.len() as u64, None)
    }

    /// [`Self::prepare`] that does not wait for the body's file. A small body
    /// (`blobs::PENDING_MAX`) travels in the row to `blob_pending`, so the commit makes it
    /// durable (`blobs.rs` module docs); its file is written without an fsync while the
    /// statements run ([`BodyWrite::AfterCommit`]), and hashed and parsed here first. A larger
    /// one has its write (with its fsyncs) started, the message parsed meanwhile, and the write
    /// handed back to be waited for before the commit that references it
    /// ([`BodyWrite::BeforeCommit`]).
    async fn prepare_overlapped(&self, raw: Arc<Vec<u8>>) -> Result<(Prepared, BodyWrite), StoreError> {
        let size = raw.len() as u64;
        if raw.len() <= INLINE_PARSE_MAX {
            // Hashed and parsed on this thread: a handful of microseconds for a body this
            // size, cheaper than handing it to a blocking-pool thread and back before the
            // statement can go out (issue #12: the APPEND's path).
            let blob = BlobId::of(&raw);
            self.blobs.check_space(size)?;
            let written = self.blobs.start_unsynced(blob.clone(), raw.clone());
            let prepared = Analysed::of(&raw).prepared(blob, size, Some(raw))?;
            return Ok((prepared, BodyWrite::AfterCommit(written)));
        }
        let blobs = self.blobs.clone();
        let small = raw.len() <= blobs::PENDING_MAX;
        // Hashing and parsing up to max_message_size bytes is CPU work: on the blocking pool.
        let (blob, write, analysed) = tokio::task::spawn_blocking(move || {
            let blob = BlobId::of(&raw);
            let write = if small {
                blobs.check_space(size)?;
                BodyWrite::AfterCommit(blobs.start_unsynced(blob.clone(), raw.clone()))
            } else {
                BodyWrite::BeforeCommit(blobs.start_put(blob.clone(), raw.clone()))
            };
            let analysed = Analysed::of(&raw);
            Ok::<_, std::io::Error>((blob, write, (analysed, small.then_some(raw))))
        })
        .await
        .map_err(parser_failed)??;
        let (analysed, pending) = analysed;
        Ok((analysed.prepared(blob, size, pending)?, write))
    }

    /// [`Self::prepare`] of a message already written to the blob store (`size` bytes under
    /// `blob`, e.g. by a [`crate::blobs::BlobWriter`]): the file is mapped into memory on the
    /// blocking pool and parsed there, so the message is never copied into one heap buffer.
    async fn prepare_stored(&self, blob: BlobId, size: u64) -> Result<Prepared, StoreError> {
        let path = self.blobs.path(&blob);
        let analysed = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            let file = std::fs::File::open(&path)?;
            let len = file.metadata()?.len();
            if len != size {
                return Err(std::io::Error::other(format!(
                    "blob {} has {len} bytes, expected {size}",
                    path.display()
                )));
            }
            // SAFETY: a blob file is immutable once renamed to its name (blobs.rs: written
            // under tmp/, fsynced, renamed; never opened for writing again), so the mapping
            // cannot change under the parser. Only a sweep removes it, which leaves the mapped
            // pages readable (an unlinked file stays until unmapped).
            #[allow(unsafe_code)] // mmap(2) of an immutable file: see SAFETY above.
            let map = unsafe { memmap2::Mmap::map(&file)? };
            Ok(Analysed::of(&map))
        })
        .await
        .map_err(parser_failed)??;
        analysed.prepared(blob, size, None)
    }

    /// One transaction adding a prepared message to every target. For an import, the resume
    /// log row is inserted first in the same transaction (`import.rs`); for a quota warning, the
    /// record of its crossing is claimed (`quota::warn::claim`). When the row was there already
    /// or the crossing is no longer to be warned about, nothing is added and the answer is `None`.
    async fn deliver_prepared(
        &self,
        targets: Vec<DeliveryTarget>,
        prepared: Prepared,
        flags: &[String],
        internal_date: DateTime<Utc>,
        kind: DeliveryKind<'_>,
    ) -> Result<Option<Vec<Appended>>, StoreError> {
        let row = prepared.into_row(flags, internal_date);

        let warning = match kind {
            DeliveryKind::QuotaWarning(level) => Some(level),
            _ => None,
        };
        // (One recipient of a normal delivery never comes here: `deliver_once` sends it to the
        // group commit.)
        let mut tx = self.db.begin().await?;
        if let DeliveryKind::Import(log) = kind
            && !import::log(&mut tx, log).await?
        {
            tx.rollback().await?;
            return Ok(None);
        }
        if warning.is_none() && targets.len() == 1 {
            // One recipient, one imported message: the same steps in fewer round trips.
            let target = targets.into_iter().next().expect("one target");
            let appended = deliver_one(&mut tx, target, &row).await?;
            // The blob row is locked by the statement that added the reference.
            self.blobs.ensure_present(&row.blob)?;
            tx.commit().await?;
            self.tick_appended(std::slice::from_ref(&appended));
            return Ok(Some(vec![appended]));
        }
        let mut appended = Vec::with_capacity(targets.len());
        // Lock mailboxes in id order so concurrent multi-recipient deliveries cannot deadlock.
        let mut resolved = Vec::with_capacity(targets.len());
        for target in targets {
            let mailbox_id = match target.mailbox_id {
                Some(id) => id,
                None => sqlx::query_scalar!(
                    "SELECT id FROM mailboxes WHERE user_id = $1 AND name = 'INBOX'",
                    target.user_id
                )
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StoreError::NoSuchMailbox)?,
            };
            resolved.push((mailbox_id, target));
        }
        // Lock order (module docs): users, then mailboxes, each by ascending id, then the blob.
        // The blob row used to come first, and an EXPUNGE of the same content (user row, then
        // blob) deadlocked with it.
        let mut users: Vec<i64> = resolved.iter().map(|(_, t)| t.user_id).collect();
        users.sort_unstable();
        users.dedup();
        for &user_id in &users {
            lock_user(&mut tx, user_id).await?;
        }
        if let Some(level) = warning {
            // A quota warning (one target): stored only with the record of its crossing.
            for &user_id in &users {
                if !quota::warn::claim(&mut tx, user_id, level).await? {
                    tx.rollback().await?;
                    return Ok(None);
                }
            }
        }
        // Then the quota (the reservations' rows come before any mailbox row in the lock order).
        resolved.sort_by_key(|(mailbox_id, _)| *mailbox_id);
        let mut targets = Vec::with_capacity(resolved.len());
        for (mailbox_id, mut target) in resolved {
            let user_id = target.user_id;
            match target.reservation.take() {
                Some(reservation) => {
                    quota::commit(&mut tx, reservation, row.size, Usage::Mail).await?;
                }
                None if warning.is_some() => quota::warn::charge_warning(&mut tx, user_id, row.size).await?,
                None => quota::charge(&mut tx, user_id, Usage::Mail, row.size).await?,
            }
            targets.push((mailbox_id, user_id));
        }
        for &(mailbox_id, user_id) in &targets {
            lock_mailbox_row(&mut tx, user_id, mailbox_id).await?;
        }
        // Then the blob row (messages reference it).
        blobs::add_ref(&mut tx, &row.blob, row.size, targets.len() as i64).await?;
        self.blobs.ensure_present(&row.blob)?;
        for (mailbox_id, user_id) in targets {
            let (uidvalidity, uid, modseq) = next_uid(&mut tx, user_id, mailbox_id).await?;
            sqlx::query!(
                "INSERT INTO messages (mailbox_id, uid, modseq, flags, internal_date, size, blob_id, envelope, body_structure, header)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                mailbox_id,
                uid as i64,
                modseq as i64,
                &row.flags,
                row.internal_date,
                row.size as i64,
                row.blob.0,
                row.envelope,
                row.structure,
                row.header,
            )
            .execute(&mut *tx)
            .await?;
            events::notify(&mut tx, &Event::Mailbox { user_id, mailbox_id }).await?;
            appended.push(Appended {
                user_id,
                mailbox_id,
                uidvalidity,
                uid,
                modseq,
                recent_from: None,
            });
        }
        tx.commit().await?;
        self.tick_appended(&appended);
        Ok(Some(appended))
    }

    /// UID, MODSEQ and flags of every message in a mailbox, by UID.
    pub async fn message_states(&self, user_id: i64, mailbox_id: i64) -> Result<Vec<MessageState>, StoreError> {
        self.message_states_since(user_id, mailbox_id, 0).await
    }

    /// The UIDs (ascending) expunged from a user's mailbox with a MODSEQ above `modseq`
    /// (RFC 7162 §3.2.5, §3.2.6 VANISHED (EARLIER)); `None` when the store no longer knows
    /// them all (some removals after `modseq` were forgotten, see [`EXPUNGED_KEPT`], or
    /// happened before they were recorded).
    pub async fn expunged_since(
        &self,
        user_id: i64,
        mailbox_id: i64,
        modseq: u64,
    ) -> Result<Option<Vec<u32>>, StoreError> {
        let mut tx = self.db.begin().await?;
        // One snapshot for the floor and the rows (REPEATABLE READ): a pruning in between
        // could otherwise drop rows the floor does not yet admit to.
        sqlx::query!("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *tx)
            .await?;
        let floor: Option<i64> = sqlx::query_scalar!(
            "SELECT expunged_floor FROM mailboxes WHERE id = $1 AND user_id = $2",
            mailbox_id,
            user_id
        )
        .fetch_optional(&mut *tx)
        .await?;
        let floor = floor.ok_or(StoreError::NoSuchMailbox)?;
        // A client's MODSEQ is at most 63 bits (RFC 7162 §7); a larger one is past every change.
        let modseq = i64::try_from(modseq).unwrap_or(i64::MAX);
        if modseq < floor {
            return Ok(None);
        }
        let uids: Vec<i64> = sqlx::query_scalar!(
            "SELECT uid FROM expunged WHERE mailbox_id = $1 AND modseq > $2 ORDER BY uid",
            mailbox_id,
            modseq
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(uids.into_iter().map(|u| u as u32).collect()))
    }

    /// Like [`Self::message_states`], only messages with MODSEQ above `modseq`.
    pub async fn message_states_since(
        &self,
        user_id: i64,
        mailbox_id: i64,
        modseq: u64,
    ) -> Result<Vec<MessageState>, StoreError> {
        let mut conn = self.kept.take().await?;
        let rows = sqlx::query!(
            "SELECT m.uid, m.modseq, m.flags FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id
             WHERE b.user_id = $1 AND m.mailbox_id = $2 AND m.modseq > $3 ORDER BY m.uid",
            user_id,
            mailbox_id,
            modseq as i64
        )
        .fetch_all(&mut *conn)
        .await?;
        conn.done();
        Ok(rows
            .into_iter()
            .map(|r| MessageState {
                uid: r.uid as u32,
                modseq: r.modseq as u64,
                flags: r.flags,
            })
            .collect())
    }

    /// Full metadata of the given UIDs (missing ones are skipped), by UID.
    pub async fn fetch(&self, user_id: i64, mailbox_id: i64, uids: &[u32]) -> Result<Vec<StoredMessage>, StoreError> {
        let rows = sqlx::query!(
            "SELECT m.uid, m.modseq, m.flags, m.internal_date, m.size, m.blob_id, m.envelope, m.body_structure, m.header
             FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id
             WHERE b.user_id = $1 AND m.mailbox_id = $2 AND m.uid = ANY($3) ORDER BY m.uid",
            user_id,
            mailbox_id,
            &uids_param(uids)
        )
        .fetch_all(&self.db)
        .await?;
        rows.into_iter()
            .map(|row| {
                let invalid =
                    |e: serde_json::Error| StoreError::Invalid(format!("stored message metadata unreadable: {e}"));
                Ok(StoredMessage {
                    uid: row.uid as u32,
                    modseq: row.modseq as u64,
                    flags: row.flags,
                    internal_date: row.internal_date,
                    size: row.size as u64,
                    blob: BlobId(row.blob_id),
                    envelope: serde_json::from_value(row.envelope).map_err(invalid)?,
                    body_structure: serde_json::from_value(row.body_structure).map_err(invalid)?,
                    header: row.header,
                })
            })
            .collect()
    }

    /// Like [`Self::fetch`] without the stored envelope and body structure and without the
    /// flags (all left empty), for FETCH and SEARCH items that do not need them (Thunderbird's
    /// header download: sizes, header fields; the flags are the session's view's): the parse is
    /// neither read nor decoded. One statement per call.
    pub async fn fetch_light(
        &self,
        user_id: i64,
        mailbox_id: i64,
        uids: &[u32],
    ) -> Result<Vec<StoredMessage>, StoreError> {
        // One range scan of the primary key (mailbox_id, uid) per run of consecutive UIDs, the
        // runs read one after the other: the same plan whatever the table's statistics say.
        // `OFFSET 0` keeps the planner from pulling the subquery up into the join (it does not
        // for a subquery with LIMIT or OFFSET), so, referring to the runs (LATERAL), it stays
        // the inner side of a nested loop driven by them. Joined freely, the generic plan (`shared::db`) once estimated the mailbox's
        // range at one row and ran the array's unnest again for every message: 250 × 250
        // comparisons per batch, 20-30 ms instead of under 1 (issue #12: the second bench round
        // downloaded headers at half the speed of the first). The mailbox's owner is checked
        // once, not per row.
        //
        // The rows come in UID order without an ORDER BY: the runs are ascending and each is read
        // in the primary key's order, and the nested loop keeps that order. A sort in the
        // statement copied every row (its header block too) once more for nothing (issue #12:
        // 0.45 ms of 1.1 per 1000 rows); the order is checked here instead, and restored should a
        // plan ever not keep it. The flags are not read: the session's view has them (as for
        // `scan_light`), and the array was the costliest column to send and decode.
        let (first, last) = uid_runs_param(uids);
        let rows = sqlx::query!(
            r#"SELECT m.uid AS "uid!", m.modseq AS "modseq!",
                      m.internal_date AS "internal_date!", m.size AS "size!", m.blob_id AS "blob_id!",
                      m.header AS "header!"
             FROM unnest($3::bigint[], $4::bigint[]) AS r(first_uid, last_uid)
             CROSS JOIN LATERAL (
                 SELECT m.uid, m.modseq, m.internal_date, m.size, m.blob_id, m.header
                 FROM messages m
                 WHERE m.mailbox_id = $2 AND m.uid BETWEEN r.first_uid AND r.last_uid
                 OFFSET 0) m
             WHERE EXISTS (SELECT FROM mailboxes b WHERE b.id = $2 AND b.user_id = $1)"#,
            user_id,
            mailbox_id,
            &first,
            &last
        )
        .fetch_all(&self.db)
        .await?;
        let mut messages: Vec<StoredMessage> = rows
            .into_iter()
            .map(|r| {
                StoredMessage::light(
                    r.uid,
                    r.modseq,
                    Vec::new(),
                    r.internal_date,
                    r.size,
                    r.blob_id,
                    r.header,
                )
            })
            .collect();
        if !messages.is_sorted_by_key(|m| m.uid) {
            messages.sort_unstable_by_key(|m| m.uid);
        }
        self.keep_light(mailbox_id, &messages);
        Ok(messages)
    }

    /// Every message of a mailbox with a UID in `uids`, in UID order, handed to `each` as
    /// PostgreSQL sends it: one statement for the whole mailbox, and only one row in memory at a
    /// time (SEARCH, SORT and THREAD over headers, dates and sizes). Like
    /// [`Self::fetch_light`] without the blob: its id is left empty (what is scanned never reads
    /// the body; sending it was a seventh of the bytes of each row). Of the envelope, the
    /// subject is there (SEARCH SUBJECT matches it, RFC 9051 §6.4.4).
    ///
    /// With `subject_contains` (lower-case ASCII), PostgreSQL leaves out the messages whose
    /// envelope subject cannot contain it: those without the text in any letter case and
    /// without an encoded word (RFC 2047) that might decode to it. What comes is a superset of
    /// SEARCH SUBJECT's matches, for the caller's own check; a search for one subject then
    /// moves one row instead of every header block of the mailbox (issue #12).
    pub async fn scan_light(
        &self,
        user_id: i64,
        mailbox_id: i64,
        uids: RangeInclusive<u32>,
        subject_contains: Option<&str>,
        mut each: impl FnMut(StoredMessage),
    ) -> Result<(), StoreError> {
        use futures::TryStreamExt;
        // The mailbox's owner is checked once (a one-time filter), not joined per row. Lower
        // case under the "C" collation changes ASCII letters only, whatever the database's own
        // collation (a Turkish one would turn `I` into a dotless i), as the caller's
        // ASCII-case-insensitive match does.
        let mut rows = sqlx::query!(
            r#"SELECT m.uid, m.modseq, m.internal_date, m.size, m.header, m.envelope ->> 'subject' AS subject
             FROM messages m
             WHERE m.mailbox_id = $2 AND m.uid BETWEEN $3 AND $4
               AND ($5::text IS NULL
                    OR strpos(lower((m.envelope ->> 'subject') COLLATE "C"), $5) > 0
                    OR strpos(m.envelope ->> 'subject', '=?') > 0)
               AND EXISTS (SELECT FROM mailboxes b WHERE b.id = $2 AND b.user_id = $1)
             ORDER BY m.uid"#,
            user_id,
            mailbox_id,
            i64::from(*uids.start()),
            i64::from(*uids.end()),
            subject_contains
        )
        .fetch(&self.db);
        while let Some(r) = rows.try_next().await? {
            let mut message = StoredMessage::light(
                r.uid,
                r.modseq,
                Vec::new(),
                r.internal_date,
                r.size,
                String::new(),
                r.header,
            );
            message.envelope.subject = r.subject;
            each(message);
        }
        Ok(())
    }

    /// Change flags (RFC 3501 §6.4.6), honouring UNCHANGEDSINCE (RFC 7162 §3.2) when given.
    /// Messages whose flags end up the same are not touched and keep their MODSEQ; when none
    /// changes, the mailbox keeps its HIGHESTMODSEQ and nobody is told.
    ///
    /// One statement, one round trip however many messages ([`StoreFlags::run`]): it reads the
    /// flags, computes the new ones in SQL, and takes the new MODSEQ only if the mailbox's
    /// HIGHESTMODSEQ is still the one its snapshot read (a compare-and-set under the mailbox's
    /// row lock). Every writer of a mailbox's messages takes that lock and a new MODSEQ, so an
    /// unchanged HIGHESTMODSEQ means the flags it read are the ones under the lock, and no
    /// concurrent STORE is lost. When another writer got in between (the set fails), the same
    /// statement runs again in a transaction that takes the mailbox's row lock first (lock
    /// order step 3), where its snapshot is taken under the lock and the set cannot fail.
    /// Flags are not usage: the user's row is not locked.
    pub async fn store_flags(
        &self,
        user_id: i64,
        mailbox_id: i64,
        uids: &[u32],
        op: FlagOp,
        flags: &[String],
        unchanged_since: Option<u64>,
    ) -> Result<FlagChange, StoreError> {
        let flags = normalize_flags(flags);
        let (first_uids, last_uids) = uid_runs_param(uids);
        let store = StoreFlags {
            user_id,
            mailbox_id,
            first_uids: &first_uids,
            last_uids: &last_uids,
            op,
            flags: &flags,
            unchanged_since,
        };
        let mut conn = self.kept.take().await?;
        let change = match store.run(&mut conn).await? {
            Some(change) => change,
            None => {
                let mut tx = conn.begin().await?;
                lock_mailbox_row(&mut tx, user_id, mailbox_id).await?;
                let change = store
                    .run(&mut tx)
                    .await?
                    .ok_or_else(|| changed_under_lock("STORE", mailbox_id))?;
                tx.commit().await?;
                change
            }
        };
        conn.done();
        if !change.changed.is_empty() {
            self.clock.tick(mailbox_id);
        }
        Ok(change)
    }

    /// Copy messages (RFC 3501 §6.4.7); the copies are charged to the quota. Returns
    /// (source UID, new UID) pairs for COPYUID (RFC 4315).
    pub async fn copy(&self, user_id: i64, from: i64, uids: &[u32], to: i64) -> Result<Vec<(u32, u32)>, StoreError> {
        self.transfer(user_id, from, uids, to, false).await
    }

    /// Move messages (RFC 6851): copy and expunge in one transaction; quota unchanged.
    pub async fn move_messages(
        &self,
        user_id: i64,
        from: i64,
        uids: &[u32],
        to: i64,
    ) -> Result<Vec<(u32, u32)>, StoreError> {
        self.transfer(user_id, from, uids, to, true).await
    }

    async fn transfer(
        &self,
        user_id: i64,
        from: i64,
        uids: &[u32],
        to: i64,
        remove: bool,
    ) -> Result<Vec<(u32, u32)>, StoreError> {
        let mut tx = self.db.begin().await?;
        // Lock in id order (deadlock-free against concurrent transfers the other way).
        let (first, second) = if from <= to { (from, to) } else { (to, from) };
        lock_mailbox(&mut tx, user_id, first).await?;
        if second != first {
            lock_mailbox(&mut tx, user_id, second).await?;
        }
        let rows: Vec<(i64, i64)> = sqlx::query!(
            "SELECT uid, size FROM messages WHERE mailbox_id = $1 AND uid = ANY($2) ORDER BY uid",
            from,
            &uids_param(uids)
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| (r.uid, r.size))
        .collect();
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        if !remove {
            let total: u64 = rows.iter().map(|r| r.1 as u64).sum();
            quota::charge(&mut tx, user_id, Usage::Mail, total).await?;
        }
        let modseq = bump_modseq(&mut tx, to).await?;
        let first_uid: i64 = sqlx::query_scalar!(
            r#"UPDATE mailboxes SET uidnext = uidnext + $2 WHERE id = $1 RETURNING uidnext - $2 AS "first_uid!""#,
            to,
            rows.len() as i64
        )
        .fetch_one(&mut *tx)
        .await?;
        let source_uids: Vec<i64> = rows.iter().map(|r| r.0).collect();
        // One statement copies every row, new UIDs in the order of the old ones (the source
        // mailbox is locked, so the set cannot change in between).
        sqlx::query!(
            "INSERT INTO messages (mailbox_id, uid, modseq, flags, internal_date, size, blob_id, envelope, body_structure, header)
             SELECT $3, $4 + row_number() OVER (ORDER BY uid) - 1, $5, flags, internal_date, size, blob_id, envelope, body_structure, header
             FROM messages WHERE mailbox_id = $1 AND uid = ANY($2)",
            from,
            &source_uids,
            to,
            first_uid,
            modseq as i64
        )
        .execute(&mut *tx)
        .await?;
        let pairs: Vec<(u32, u32)> = source_uids
            .iter()
            .enumerate()
            .map(|(i, &uid)| (uid as u32, (first_uid + i as i64) as u32))
            .collect();
        if remove {
            sqlx::query!(
                "DELETE FROM messages WHERE mailbox_id = $1 AND uid = ANY($2)",
                from,
                &source_uids
            )
            .execute(&mut *tx)
            .await?;
            record_removal(&mut tx, user_id, from, &source_uids).await?;
        } else {
            // One more reference per copy (one id per message); the blob rows locked in id
            // order first.
            let blob_ids: Vec<String> = sqlx::query_scalar!(
                "SELECT blob_id FROM messages WHERE mailbox_id = $1 AND uid = ANY($2)",
                from,
                &source_uids
            )
            .fetch_all(&mut *tx)
            .await?;
            blobs::lock(&mut tx, &blob_ids).await?;
            blobs::add_refs(&mut tx, &blob_ids).await?;
        }
        events::notify(
            &mut tx,
            &Event::Mailbox {
                user_id,
                mailbox_id: to,
            },
        )
        .await?;
        tx.commit().await?;
        self.clock.tick(to);
        if remove {
            self.clock.tick(from);
        } else {
            // A copy is charged: it may cross a warning threshold.
            quota::warn::after_write(self, &[user_id]).await;
        }
        Ok(pairs)
    }

    /// Remove messages flagged `\Deleted` (RFC 3501 §6.4.3), only among `uids` when given
    /// (UID EXPUNGE, RFC 4315). Returns the expunged UIDs in ascending order; refunds quota.
    pub async fn expunge(&self, user_id: i64, mailbox_id: i64, uids: Option<&[u32]>) -> Result<Vec<u32>, StoreError> {
        Ok(self.expunge_at(user_id, mailbox_id, uids).await?.uids)
    }

    /// [`MailStore::expunge`], also saying the MODSEQ the removal took (the mailbox's new
    /// HIGHESTMODSEQ), so a session's view can follow it without reading the mailbox again.
    ///
    /// One statement, one round trip ([`Expunge::run`]): the removal, the quota refund (RFC
    /// 9208), the blob references and the removal record with its MODSEQ and event, under the
    /// user's and the mailbox's row locks taken only if the mailbox's HIGHESTMODSEQ is still the
    /// one the statement's snapshot read (as [`MailStore::store_flags`] does). When another
    /// writer got in between, the same statement runs again in a transaction that takes those
    /// locks first. Nothing is locked or written when no message is to go.
    pub async fn expunge_at(
        &self,
        user_id: i64,
        mailbox_id: i64,
        uids: Option<&[u32]>,
    ) -> Result<Expunged, StoreError> {
        let uids = uids.map(uids_param);
        let expunge = Expunge {
            user_id,
            mailbox_id,
            uids: uids.as_deref(),
        };
        let mut conn = self.kept.take().await?;
        let done = match expunge.run(&mut conn).await? {
            Some(done) => done,
            None => {
                let mut tx = conn.begin().await?;
                lock_mailbox(&mut tx, user_id, mailbox_id).await?;
                let done = expunge
                    .run(&mut tx)
                    .await?
                    .ok_or_else(|| changed_under_lock("EXPUNGE", mailbox_id))?;
                tx.commit().await?;
                done
            }
        };
        if !done.expunged.uids.is_empty() {
            self.clock.tick(mailbox_id);
        }
        if done.prune_due {
            // Out of the removal's transaction: the record only grows a little past its bound
            // until this commits (or the next removal prunes it after a crash).
            let mut tx = conn.begin().await?;
            lock_mailbox_row(&mut tx, user_id, mailbox_id).await?;
            prune_expunged(&mut tx, mailbox_id).await?;
            tx.commit().await?;
        }
        conn.done();
        if done.warned {
            // Usage fell: the warning given may be armed again.
            quota::warn::after_write(self, &[user_id]).await;
        }
        Ok(done.expunged)
    }
}

/// A single-statement write ([`StoreFlags::run`], [`Expunge::run`]) run again under the
/// mailbox's row lock still found the mailbox changed since its snapshot. Cannot happen: the
/// transaction holds the lock every other writer of the mailbox needs; logged and refused.
fn changed_under_lock(command: &str, mailbox_id: i64) -> StoreError {
    tracing::error!("{command} under mailbox {mailbox_id}'s row lock saw a concurrent change");
    StoreError::Db(sqlx::Error::Protocol("concurrent change under the mailbox lock".into()))
}

/// UIDs a mailbox's record of flag changes (`flag_changes`, migration 0021) may hold. The STORE
/// that would pass it empties the record instead and raises the mailbox's `flag_log_floor` to
/// its own MODSEQ: a session that knew the mailbox before that compares every message once
/// ([`MailStore::changes_since`]), which costs about what reading that many changes would. The
/// bound keeps the record at most a few hundred KiB per mailbox.
pub const FLAG_LOG_MAX_UIDS: i64 = 50_000;

/// One STORE's change, as [`MailStore::store_flags`] runs it.
struct StoreFlags<'a> {
    user_id: i64,
    mailbox_id: i64,
    /// The targets as runs of consecutive UIDs: each run's first and last ([`uid_runs_param`]).
    first_uids: &'a [i64],
    last_uids: &'a [i64],
    op: FlagOp,
    flags: &'a [String],
    unchanged_since: Option<u64>,
}

impl StoreFlags<'_> {
    /// The change in one statement; `None` when the mailbox changed between the statement's
    /// snapshot and its row lock (nothing was written: run it again under the lock).
    ///
    /// `cur` reads the targets and computes their new flags (RFC 3501 §6.4.6: `+FLAGS` appends
    /// the ones missing, `-FLAGS` drops the ones named, `FLAGS` replaces; flags compare
    /// case-insensitively, system flags are stored in their canonical case; a single flag
    /// added or removed in the case it is stored in, the common STORE, skips the per-row
    /// subquery: a message's flags hold no two that differ only in case), `todo` keeps those
    /// that change and pass UNCHANGEDSINCE, `b` takes the new MODSEQ only if something changes
    /// and HIGHESTMODSEQ is still the snapshot's, `u` writes the rows (each once, so the row
    /// versions written are only the changed messages'; `modseq` is not indexed, so they are
    /// HOT where the page has room), `lg` records the targets' UIDs (as ranges: a superset of the
    /// changed ones, which the reader narrows by MODSEQ) at the new MODSEQ for the other
    /// sessions' sync ([`MailStore::changes_since`], migration 0021) and `pr` forgets the
    /// record when `b` emptied it ([`FLAG_LOG_MAX_UIDS`]; `flag_log_uids` is 0 after a STORE
    /// that changed something only then, so other STOREs do not even probe the record), `n`
    /// tells the other sessions. The rows returned are the changed and the refused (`modified`)
    /// messages.
    async fn run(&self, conn: &mut PgConnection) -> Result<Option<FlagChange>, StoreError> {
        let op = match self.op {
            FlagOp::Add => 0,
            FlagOp::Remove => 1,
            FlagOp::Replace => 2,
        };
        let payload = events::payload(&Event::Mailbox {
            user_id: self.user_id,
            mailbox_id: self.mailbox_id,
        });
        // The targets are read as runs of consecutive UIDs, one range scan of the primary key
        // per run (as `MailStore::fetch_light`): not tested with `uid = ANY(..)`, which
        // PostgreSQL searches linearly for every row for a parameter array (a `STORE 1:*` on
        // 2000 messages spent 17 ms in that test alone), nor joined freely from an array, which
        // a generic plan can turn quadratic when the table's statistics are small. The same runs
        // are the record of the STORE's targets (`lg`): `STORE 1:*` is one range.
        let rows = sqlx::query!(
            r#"WITH snap AS (
                 SELECT highestmodseq FROM mailboxes WHERE id = $1 AND user_id = $2),
             given AS (
                 SELECT $6::text[] AS flags, lower($6::text)::text[] AS lower,
                        CASE WHEN cardinality($6::text[]) = 1 THEN $6[1] END AS one),
             cur AS (
                 SELECT uid, ($7::bigint IS NOT NULL AND modseq > $7) AS refused,
                        CASE $5::int
                          WHEN 0 THEN CASE WHEN l @> g.lower THEN NULL
                              WHEN g.one IS NOT NULL THEN m.flags || g.flags
                              ELSE m.flags || ARRAY(
                              SELECT f FROM unnest(g.flags, g.lower) AS a(f, lf) WHERE NOT lf = ANY(l)) END
                          WHEN 1 THEN CASE WHEN NOT l && g.lower THEN NULL
                              WHEN g.one IS NOT NULL AND m.flags @> g.flags THEN array_remove(m.flags, g.one)
                              ELSE ARRAY(
                              SELECT c FROM unnest(m.flags) AS c WHERE NOT lower(c) = ANY(g.lower)) END
                          ELSE CASE WHEN l @> g.lower AND g.lower @> l THEN NULL ELSE g.flags END
                        END AS new_flags
                 FROM (SELECT m.uid, m.modseq, m.flags, lower(m.flags::text)::text[] AS l
                       FROM unnest($3::bigint[], $4::bigint[]) AS r(first_uid, last_uid)
                       CROSS JOIN LATERAL (
                           SELECT m.uid, m.modseq, m.flags FROM messages m
                           WHERE m.mailbox_id = $1 AND m.uid BETWEEN r.first_uid AND r.last_uid
                           OFFSET 0) m) m,
                      given g),
             todo AS (
                 SELECT uid, new_flags FROM cur WHERE NOT refused AND new_flags IS NOT NULL),
             k AS (
                 SELECT count(*) AS changed FROM todo),
             b AS (
                 UPDATE mailboxes SET highestmodseq = highestmodseq + 1,
                        flag_log_uids = CASE WHEN flag_log_uids + k.changed > $10 THEN 0
                                             ELSE flag_log_uids + k.changed END,
                        flag_log_floor = CASE WHEN flag_log_uids + k.changed > $10 THEN highestmodseq + 1
                                              ELSE flag_log_floor END
                 FROM k
                 WHERE id = $1 AND highestmodseq = (SELECT highestmodseq FROM snap) AND k.changed > 0
                 RETURNING highestmodseq, flag_log_floor, flag_log_uids),
             u AS (
                 UPDATE messages m SET flags = t.new_flags, modseq = b.highestmodseq
                 FROM b, todo t WHERE m.mailbox_id = $1 AND m.uid = t.uid),
             lg AS (
                 INSERT INTO flag_changes (mailbox_id, modseq, uids)
                 SELECT $1, b.highestmodseq,
                        (SELECT range_agg(int8range(r.first_uid, r.last_uid, '[]'))
                         FROM unnest($3::bigint[], $4::bigint[]) AS r(first_uid, last_uid))
                 FROM b
                 WHERE b.highestmodseq > b.flag_log_floor),
             pr AS (
                 DELETE FROM flag_changes f USING b
                 WHERE b.flag_log_uids = 0 AND f.mailbox_id = $1 AND f.modseq <= b.flag_log_floor),
             n AS (
                 SELECT pg_notify($8, $9) FROM b)
             SELECT (SELECT highestmodseq FROM b) AS modseq,
                    (SELECT changed FROM k) AS "todo!",
                    (SELECT count(*) FROM n) AS "notified!",
                    r.uid AS "uid?", r.refused AS "refused?", r.new_flags AS "new_flags?"
             FROM snap LEFT JOIN (
                 SELECT uid, refused, new_flags FROM cur WHERE refused OR new_flags IS NOT NULL) r ON true
             ORDER BY r.uid"#,
            self.mailbox_id,
            self.user_id,
            self.first_uids,
            self.last_uids,
            op,
            self.flags,
            self.unchanged_since.map(|m| m.min(i64::MAX as u64) as i64),
            events::CHANNEL,
            payload,
            FLAG_LOG_MAX_UIDS,
        )
        .fetch_all(&mut *conn)
        .await?;
        let Some(first) = rows.first() else {
            // No row of `snap`: not this user's mailbox.
            return Err(StoreError::NoSuchMailbox);
        };
        let modseq = match first.modseq {
            Some(modseq) => modseq as u64,
            None if first.todo > 0 => return Ok(None),
            None => 0,
        };
        let mut result = FlagChange::default();
        for row in rows {
            let Some(uid) = row.uid else { continue };
            if row.refused == Some(true) {
                result.modified.push(uid as u32);
            } else if let Some(flags) = row.new_flags {
                result.changed.push(MessageState {
                    uid: uid as u32,
                    modseq,
                    flags,
                });
            }
        }
        Ok(Some(result))
    }
}

/// One EXPUNGE, as [`MailStore::expunge_at`] runs it.
struct Expunge<'a> {
    user_id: i64,
    mailbox_id: i64,
    /// UID EXPUNGE's UIDs (RFC 4315 §2.1); `None`: every `\Deleted` message.
    uids: Option<&'a [i64]>,
}

/// What one run of [`Expunge`] did.
struct ExpungeDone {
    expunged: Expunged,
    /// The user has been warned of a quota level (`quota::refund` says the same).
    warned: bool,
    /// The removal record passed [`EXPUNGED_PRUNE_AT`].
    prune_due: bool,
}

impl Expunge<'_> {
    /// The removal in one statement; `None` when the mailbox changed between the statement's
    /// snapshot and its row locks (nothing was written: run it again under the locks).
    ///
    /// The steps are those of the general path, in the lock order: `lk` locks the user's and
    /// the mailbox's rows (steps 1 and 3) when something is to go and HIGHESTMODSEQ is still
    /// the snapshot's; `d` removes the messages (step 4, after `lk`: `EXISTS` over it is a
    /// one-time filter evaluated before the scan, which stays an index range on the mailbox
    /// id; a mailbox id taken from `lk` made a generic plan scan the whole table); `f` and `q`
    /// refund the quota as `quota::refund` does (the user's charged deltas of mail folded into
    /// the row first, so the clamp at zero is against the whole usage); `bl`
    /// locks the blob rows in ascending id order (step 5, as `blobs::lock`) and `br` drops one
    /// reference per removed message as `blobs::drop_refs` does (a body whose count reaches
    /// zero is left to the sweep, `zero_since`); `b`, `e` and `n` are `record_removal`: the new
    /// MODSEQ, the UIDs remembered for VANISHED (EARLIER) (RFC 7162 §3.2.5), the event.
    async fn run(&self, conn: &mut PgConnection) -> Result<Option<ExpungeDone>, StoreError> {
        let payload = events::payload(&Event::Mailbox {
            user_id: self.user_id,
            mailbox_id: self.mailbox_id,
        });
        // UID EXPUNGE's UIDs bound a range scan of the primary key and are looked up in a
        // hashed subplan (`IN (SELECT unnest(..))`): `uid = ANY($3)` searched the parameter array
        // once per message of the mailbox (as in `StoreFlags::run`).
        let (lowest, highest) = match self.uids {
            Some(uids) => (
                uids.iter().min().copied().unwrap_or(0),
                uids.iter().max().copied().unwrap_or(0),
            ),
            None => (0, i64::MAX),
        };
        let row = sqlx::query!(
            r#"WITH snap AS (
                 SELECT highestmodseq FROM mailboxes WHERE id = $1 AND user_id = $2),
             due AS (
                 SELECT EXISTS (SELECT 1 FROM messages WHERE mailbox_id = $1 AND uid BETWEEN $6 AND $7
                                AND '\Deleted' = ANY(flags)
                                AND ($3::bigint[] IS NULL OR uid IN (SELECT unnest($3::bigint[])))) AS due),
             lk AS (
                 SELECT m.id FROM users u, mailboxes m
                 WHERE u.id = $2 AND m.id = $1 AND m.user_id = u.id
                   AND m.highestmodseq = (SELECT highestmodseq FROM snap) AND (SELECT due FROM due)
                 FOR UPDATE OF u, m),
             d AS (
                 DELETE FROM messages WHERE mailbox_id = $1 AND uid BETWEEN $6 AND $7 AND EXISTS (SELECT 1 FROM lk)
                   AND '\Deleted' = ANY(flags) AND ($3::bigint[] IS NULL OR uid IN (SELECT unnest($3::bigint[])))
                 RETURNING uid, blob_id, size),
             f AS (
                 DELETE FROM quota_reservations
                 WHERE user_id = $2 AND charged = 'mail' AND EXISTS (SELECT 1 FROM d)
                 RETURNING bytes),
             q AS (
                 UPDATE users SET mail_bytes = greatest(
                     mail_bytes + (SELECT coalesce(sum(bytes), 0) FROM f)::bigint - (SELECT sum(size) FROM d)::bigint, 0)
                 WHERE id = $2 AND EXISTS (SELECT 1 FROM d)
                 RETURNING quota_warned > 0 AS warned),
             refs AS (
                 SELECT blob_id AS id, count(*) AS n FROM d GROUP BY blob_id),
             bl AS (
                 SELECT id FROM blobs WHERE id IN (SELECT id FROM refs) ORDER BY id FOR UPDATE),
             br AS (
                 UPDATE blobs SET refcount = greatest(blobs.refcount - refs.n, 0),
                                  zero_since = CASE WHEN blobs.refcount - refs.n <= 0 THEN now() ELSE NULL END
                 FROM refs, bl WHERE blobs.id = refs.id AND bl.id = refs.id),
             b AS (
                 UPDATE mailboxes SET highestmodseq = highestmodseq + 1,
                        expunged_rows = expunged_rows + (SELECT count(*) FROM d)
                 WHERE id = $1 AND EXISTS (SELECT 1 FROM d)
                 RETURNING highestmodseq, expunged_rows),
             e AS (
                 INSERT INTO expunged (mailbox_id, uid, modseq) SELECT $1, d.uid, b.highestmodseq FROM b, d
                 ON CONFLICT (mailbox_id, uid) DO UPDATE SET modseq = EXCLUDED.modseq),
             n AS (
                 SELECT pg_notify($4, $5) FROM b)
             SELECT (SELECT due FROM due) AS "due!",
                    (SELECT count(*) FROM lk) AS "locked!",
                    (SELECT highestmodseq FROM b) AS modseq,
                    (SELECT expunged_rows FROM b) AS expunged_rows,
                    (SELECT warned FROM q) AS warned,
                    (SELECT count(*) FROM n) AS "notified!",
                    ARRAY(SELECT uid FROM d ORDER BY uid) AS "uids!"
             FROM snap"#,
            self.mailbox_id,
            self.user_id,
            self.uids,
            events::CHANNEL,
            payload,
            lowest,
            highest,
        )
        .fetch_optional(&mut *conn)
        .await?;
        // No row of `snap`: not this user's mailbox.
        let row = row.ok_or(StoreError::NoSuchMailbox)?;
        if row.due && row.locked == 0 {
            return Ok(None);
        }
        Ok(Some(ExpungeDone {
            expunged: Expunged {
                uids: row.uids.into_iter().map(|uid| uid as u32).collect(),
                modseq: row.modseq.map(|m| m as u64),
            },
            warned: row.warned.unwrap_or(false),
            prune_due: row.expunged_rows.is_some_and(|rows| rows > EXPUNGED_PRUNE_AT),
        }))
    }
}

/// Bodies up to this many bytes are hashed and parsed on the async thread that received them
/// ([`MailStore::prepare_overlapped`]); larger ones on the blocking pool.
const INLINE_PARSE_MAX: usize = 16 * 1024;

/// What the message rows need from a body's bytes: its header block, envelope and structure.
struct Analysed {
    header: Vec<u8>,
    envelope: serde_json::Result<serde_json::Value>,
    structure: serde_json::Result<serde_json::Value>,
}

impl Analysed {
    fn of(raw: &[u8]) -> Analysed {
        let parsed = parsed::parse(raw);
        // Only a message with a NUL byte somewhere can have one in what the parse quotes.
        let nul = memchr::memchr(0, raw).is_some();
        let storable = |mut value: serde_json::Value| {
            if nul {
                replace_nul(&mut value);
            }
            value
        };
        Analysed {
            envelope: serde_json::to_value(&parsed.envelope).map(storable),
            structure: serde_json::to_value(&parsed.body_structure).map(storable),
            header: parsed.header,
        }
    }

    fn prepared(self, blob: BlobId, size: u64, pending: Option<Arc<Vec<u8>>>) -> Result<Prepared, StoreError> {
        let invalid = |e: serde_json::Error| StoreError::Invalid(format!("message metadata: {e}"));
        Ok(Prepared {
            blob,
            size,
            header: self.header,
            envelope: self.envelope.map_err(invalid)?,
            structure: self.structure.map_err(invalid)?,
            pending,
        })
    }
}

/// Every NUL in `value`'s strings replaced by U+FFFD: PostgreSQL's jsonb refuses `\u0000`
/// (PostgreSQL 15 documentation, 8.14 "JSON Types"), so a message with a NUL byte in a header
/// field the envelope or body structure quotes (a Subject, a display name, a parameter) could
/// not be stored at all. IMAP cannot send a NUL in a string anyway (RFC 9051 §4.3: CHAR8). The
/// keys are the parse's field names (it has no map keyed by the message's text).
fn replace_nul(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{FFFD}"),
        Value::Array(items) => items.iter_mut().for_each(replace_nul),
        Value::Object(fields) => fields.values_mut().for_each(replace_nul),
        _ => {}
    }
}

fn parser_failed(e: tokio::task::JoinError) -> StoreError {
    StoreError::Io(std::io::Error::other(format!("message parser task failed: {e}")))
}

/// A body's write in progress, as [`MailStore::prepare_overlapped`] started it.
enum BodyWrite {
    /// A large body's durable write: the commit that references it waits for it.
    BeforeCommit(blobs::PendingPut),
    /// A small body's file, written without an fsync: the commit makes the body durable
    /// through `blob_pending` without it; the delivery waits for it after the commit, before
    /// its answer (`Row::wait_written`).
    AfterCommit(blobs::UnsyncedPut),
}

/// A parsed message whose body is already in the blob store ([`MailStore::prepare`]).
#[derive(Clone)]
struct Prepared {
    blob: BlobId,
    size: u64,
    header: Vec<u8>,
    envelope: serde_json::Value,
    structure: serde_json::Value,
    /// The body, when its file is not durable yet: the transaction lists it in `blob_pending`.
    pending: Option<Arc<Vec<u8>>>,
}

impl Prepared {
    /// The message row of this body with the client's flags and date.
    fn into_row(self, flags: &[String], internal_date: DateTime<Utc>) -> Row {
        let Prepared {
            blob,
            size,
            header,
            envelope,
            structure,
            pending,
        } = self;
        Row {
            flags: normalize_flags(flags),
            internal_date,
            size,
            blob,
            envelope,
            structure,
            header,
            pending,
            written: std::sync::Mutex::new(None),
        }
    }
}

/// The columns of one message row, as [`MailStore::deliver_prepared`] writes them.
struct Row {
    flags: Vec<String>,
    internal_date: DateTime<Utc>,
    size: u64,
    blob: BlobId,
    envelope: serde_json::Value,
    structure: serde_json::Value,
    header: Vec<u8>,
    /// The body, when its file is not durable yet (`Prepared::pending`); after the commit the
    /// file is settled (`BlobStore::settle_later`).
    pending: Option<Arc<Vec<u8>>>,
    /// The pending body's file while it is still being written ([`BodyWrite::AfterCommit`]).
    written: std::sync::Mutex<Option<blobs::UnsyncedPut>>,
}

impl Row {
    /// Wait for the pending body's file if it is still being written: before anything checks
    /// the file (`BlobStore::ensure_present`) or settles it. Its outcome is told once.
    async fn wait_written(&self) -> std::io::Result<()> {
        let written = self.written.lock().unwrap_or_else(|e| e.into_inner()).take();
        match written {
            Some(written) => written.wait().await,
            None => Ok(()),
        }
    }
}

/// Whether a write's quota step is a reservation made while the user had no limit (which
/// `quota::commit` turns into a charged delta): no warning check is due after it.
fn is_unlimited(reservation: Option<&Reservation>) -> bool {
    reservation.is_some_and(|r| r.id == Reservation::UNLIMITED)
}

/// One message into one mailbox inside the caller's transaction, in three statements: commit
/// the reservation (or charge the quota); lock the mailbox and take the UID and MODSEQ; add the
/// blob reference, the message row and its event. Same lock order as the general path: the
/// quota first (with a reservation that covers the message, only the reservation's own row: the
/// user's row stays free for the account's other writers, `quota::commit`), then the mailbox
/// row, then the blob row.
async fn deliver_one(conn: &mut PgConnection, target: DeliveryTarget, row: &Row) -> Result<Appended, StoreError> {
    let destination = Destination::of(&target);
    charge_delivery(conn, target.user_id, target.reservation, row.size).await?;
    insert_message(conn, target.user_id, &destination, None, row).await
}

/// The quota step of one delivery: commit its reservation, or charge the quota without one.
async fn charge_delivery(
    conn: &mut PgConnection,
    user_id: i64,
    reservation: Option<Reservation>,
    size: u64,
) -> Result<(), StoreError> {
    match reservation {
        Some(reservation) => {
            quota::commit(conn, reservation, size, Usage::Mail).await?;
        }
        None => quota::charge(conn, user_id, Usage::Mail, size).await?,
    }
    Ok(())
}

/// The mailbox step and the row step of one delivery, after its quota step: resolve the
/// mailbox and take its UID and MODSEQ under its row lock (with `view`, claim \Recent for that
/// view when it was current, `SelectedView`); add the blob reference, the message row and its
/// event.
async fn insert_message(
    conn: &mut PgConnection,
    user_id: i64,
    destination: &Destination,
    view: Option<SelectedView>,
    row: &Row,
) -> Result<Appended, StoreError> {
    let (by_id, by_name) = match destination {
        Destination::Id(id) => (Some(*id), None),
        Destination::Named(name) => (None, Some(name.as_str())),
    };
    // No mailbox of this user by that id or name: no row, NoSuchMailbox. The subquery locks the
    // row (FOR UPDATE) and hands the old \Recent mark over (as `claim_recent` does); the SET
    // sees the row as it was before this statement, so `m.highestmodseq = $3` is "the view knew
    // the MODSEQ just before this append" and `m.uidnext` the UID taken here.
    let locked = sqlx::query!(
        r#"UPDATE mailboxes m SET uidnext = m.uidnext + 1, highestmodseq = m.highestmodseq + 1,
             recent_claimed_uid = CASE WHEN $4 AND m.highestmodseq = $3 AND m.id = $6
                 THEN greatest(m.recent_claimed_uid, m.uidnext) ELSE m.recent_claimed_uid END
         FROM (SELECT id, recent_claimed_uid FROM mailboxes
               WHERE user_id = $1 AND ((id = $2) OR ($2::bigint IS NULL AND name = $5))
               FOR UPDATE) old
         WHERE m.id = old.id
         RETURNING m.id, m.uidvalidity, m.uidnext - 1 AS "uid!", m.highestmodseq,
             CASE WHEN m.recent_claimed_uid > old.recent_claimed_uid THEN old.recent_claimed_uid END AS recent_before"#,
        user_id,
        by_id,
        view.map(|v| v.known_modseq as i64),
        view.is_some_and(|v| v.claim_recent),
        by_name,
        view.map(|v| v.mailbox_id),
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NoSuchMailbox)?;
    let mailbox_id = locked.id;
    let payload = events::payload(&Event::Mailbox { user_id, mailbox_id });
    // The blob row first (messages and blob_pending reference it; the foreign keys are checked
    // at the end of the statement), a body whose file is not durable yet ($13, blobs.rs module
    // docs) into blob_pending so this commit makes it durable, then the message, then the event
    // sent at commit (events::notify).
    sqlx::query!(
        "WITH b AS (
             INSERT INTO blobs (id, size, refcount) VALUES ($7, $6, 1)
             ON CONFLICT (id) DO UPDATE SET refcount = blobs.refcount + 1, zero_since = NULL
             RETURNING id),
         p AS (
             INSERT INTO blob_pending (id, body) SELECT b.id, $13 FROM b WHERE $13::bytea IS NOT NULL
             ON CONFLICT (id) DO UPDATE SET body = excluded.body),
         m AS (
             INSERT INTO messages (mailbox_id, uid, modseq, flags, internal_date, size, blob_id, envelope, body_structure, header)
             SELECT $1, $2, $3, $4, $5, $6, b.id, $8, $9, $10 FROM b
             RETURNING 1)
         SELECT pg_notify($11, $12) FROM m",
        mailbox_id,
        locked.uid,
        locked.highestmodseq,
        &row.flags,
        row.internal_date,
        row.size as i64,
        row.blob.0,
        row.envelope,
        row.structure,
        row.header,
        events::CHANNEL,
        payload,
        row.pending.as_deref().map(|body| body.as_slice()),
    )
    .execute(&mut *conn)
    .await?;
    Ok(Appended {
        user_id,
        mailbox_id,
        uidvalidity: locked.uidvalidity as u32,
        uid: locked.uid as u32,
        modseq: locked.highestmodseq as u64,
        // Claimed above the old mark: the UIDs after it up to this one (RFC 3501 §2.3.2).
        recent_from: locked.recent_before.map(|old| (old.max(0) as u32).saturating_add(1)),
    })
}

/// Whether a delivery can be stored by [`insert_unlimited`]: reserved while its user had no
/// limit, with a small body that its own statement makes durable (`Row::pending`).
fn fits_one_statement(reservation: Option<&Reservation>, row: &Row) -> bool {
    is_unlimited(reservation) && row.pending.is_some()
}

/// Deliveries of a user without a limit ([`is_unlimited`] reservations) into one mailbox, each
/// with a small body (`Row::pending`), in ONE statement (issue #12): [`charge_delivery`]'s
/// delta and [`insert_message`]'s two statements for all of them. Run on the pool it is its own
/// transaction, so a single APPEND or SMTP delivery, or a group commit of several
/// (`group.rs`), costs one round trip, its commit (one WAL flush, the bodies in
/// `blob_pending`) included, instead of BEGIN, three statements per message and COMMIT.
///
/// The mailbox row gives `rows.len()` UIDs and MODSEQs at once, in the order of `rows` (RFC
/// 4315 §3 ascending, RFC 7162 §3.1 one MODSEQ per message), as statements one by one would;
/// the usage is one delta of their sum; each distinct body is one blob row, its references
/// counted once per message; one event tells the mailbox's listeners. The same lock order as
/// the two-step path: the user's row first (`FOR KEY SHARE`, what the delta's foreign key check
/// takes anyway; the uncorrelated `EXISTS` runs before the mailbox is scanned), then the
/// mailbox row, then the blob rows by ascending id. The quota step is `quota::commit`'s for a
/// reservation made without a limit: a charged delta, written only while the user still has no
/// limit (keep the two alike). `Ok(None)`: the user has a limit now and nothing was written;
/// the caller takes the two-step path, whose `quota::commit` checks the write against it.
///
/// `view`: the appending session's view when it is the first row's (`SelectedView`). Its
/// \Recent claim (RFC 3501 §2.3.2) can only succeed for the first row: a later row's session
/// cannot have seen the rows before it, so the mailbox's MODSEQ before that row is never its
/// view's, exactly as if the rows were inserted one by one.
///
/// A body that a sweep removed between its write and this statement is not caught before the
/// commit (`BlobStore::ensure_present` needs the blob row's lock held): the caller checks it
/// after the commit and writes the file again from `Row::pending` (the committed
/// `blob_pending` row holds the same bytes), before the delivery is acknowledged.
async fn insert_unlimited<'e, E>(
    conn: E,
    user_id: i64,
    destination: &Destination,
    view: Option<SelectedView>,
    rows: &[&Row],
) -> Result<Option<Vec<Appended>>, StoreError>
where
    E: sqlx::PgExecutor<'e>,
{
    let (by_id, by_name) = match destination {
        Destination::Id(id) => (Some(*id), None),
        Destination::Named(name) => (None, Some(name.as_str())),
    };
    let count = rows.len() as i64;
    let sizes: Vec<i64> = rows.iter().map(|r| r.size as i64).collect();
    let blob_ids: Vec<&str> = rows.iter().map(|r| r.blob.0.as_str()).collect();
    // Each message's flags as a JSON array (PostgreSQL arrays cannot be ragged).
    let flags: Vec<serde_json::Value> = rows.iter().map(|r| serde_json::json!(r.flags)).collect();
    let dates: Vec<DateTime<Utc>> = rows.iter().map(|r| r.internal_date).collect();
    let envelopes: Vec<&serde_json::Value> = rows.iter().map(|r| &r.envelope).collect();
    let structures: Vec<&serde_json::Value> = rows.iter().map(|r| &r.structure).collect();
    let headers: Vec<&[u8]> = rows.iter().map(|r| r.header.as_slice()).collect();
    let bodies: Vec<Option<&[u8]>> = rows
        .iter()
        .map(|r| r.pending.as_deref().map(|b| b.as_slice()))
        .collect();
    // `u`: the user without a limit, key-share locked first. `locked`: as in `insert_message`
    // (the SET sees the row as it was before this statement), returning the first UID taken,
    // the MODSEQ before this statement and the \Recent mark before a claim. `r`: the messages
    // in order (`ord` from 1). `q`: the usage delta (`quota::commit`). `b`, `p`, `m`: the blob
    // references, the pending bodies, the message rows. The event's payload is
    // `events::Event::Mailbox` as serde writes it, built here because a named mailbox's id is
    // only known inside the statement. The foreign keys are checked at the end of the
    // statement, under locks it already holds.
    let stored = sqlx::query!(
        r#"WITH u AS MATERIALIZED (
             SELECT id FROM users WHERE id = $1 AND quota_limit IS NULL FOR KEY SHARE),
         locked AS (
             UPDATE mailboxes m SET uidnext = m.uidnext + $4, highestmodseq = m.highestmodseq + $4,
                 recent_claimed_uid = CASE WHEN $14 AND m.highestmodseq = $15 AND m.id = $16
                     THEN greatest(m.recent_claimed_uid, m.uidnext) ELSE m.recent_claimed_uid END
             FROM (SELECT id, recent_claimed_uid FROM mailboxes
                   WHERE user_id = $1 AND ((id = $2) OR ($2::bigint IS NULL AND name = $3))
                     AND EXISTS (SELECT 1 FROM u)
                   FOR UPDATE) old
             WHERE m.id = old.id
             RETURNING m.id, m.uidvalidity, m.uidnext - $4 AS first_uid, m.highestmodseq - $4 AS modseq_before,
                 CASE WHEN m.recent_claimed_uid > old.recent_claimed_uid THEN old.recent_claimed_uid END AS recent_before),
         r AS MATERIALIZED (
             SELECT * FROM unnest($5::bigint[], $6::text[], $7::jsonb[], $8::timestamptz[], $9::jsonb[],
                                  $10::jsonb[], $11::bytea[], $12::bytea[])
                 WITH ORDINALITY AS r(size, blob, flags, internal_date, envelope, structure, header, body, ord)),
         q AS (
             INSERT INTO quota_reservations (user_id, bytes, expires_at, charged)
             SELECT $1, s.total, 'infinity', 'mail' FROM (SELECT sum(size)::bigint AS total FROM r) s, locked),
         b AS (
             INSERT INTO blobs (id, size, refcount)
             SELECT r.blob, min(r.size), count(*) FROM r, locked GROUP BY r.blob ORDER BY r.blob
             ON CONFLICT (id) DO UPDATE SET refcount = blobs.refcount + excluded.refcount, zero_since = NULL),
         p AS (
             INSERT INTO blob_pending (id, body)
             SELECT DISTINCT ON (r.blob) r.blob, r.body FROM r, locked WHERE r.body IS NOT NULL ORDER BY r.blob
             ON CONFLICT (id) DO UPDATE SET body = excluded.body),
         m AS (
             INSERT INTO messages (mailbox_id, uid, modseq, flags, internal_date, size, blob_id, envelope, body_structure, header)
             SELECT l.id, l.first_uid + r.ord - 1, l.modseq_before + r.ord,
                    ARRAY(SELECT jsonb_array_elements_text(r.flags)), r.internal_date, r.size, r.blob,
                    r.envelope, r.structure, r.header
             FROM r, locked l ORDER BY r.ord
             RETURNING 1),
         n AS MATERIALIZED (
             SELECT pg_notify($13, json_build_object('kind', 'mailbox', 'user_id', $1::bigint, 'mailbox_id', l.id)::text)
             FROM locked l WHERE EXISTS (SELECT 1 FROM m))
         SELECT EXISTS (SELECT 1 FROM u) AS "no_limit!", l.id AS "id?", l.uidvalidity AS "uidvalidity?",
             l.first_uid AS "first_uid?", l.modseq_before AS "modseq_before?", l.recent_before,
             (SELECT count(*) FROM m) AS "messages!", (SELECT count(*) FROM n) AS "events!"
         FROM (SELECT 1) one LEFT JOIN locked l ON true"#,
        user_id,
        by_id,
        by_name,
        count,
        &sizes as &[i64],
        &blob_ids as &[&str],
        &flags as &[serde_json::Value],
        &dates as &[DateTime<Utc>],
        &envelopes as &[&serde_json::Value],
        &structures as &[&serde_json::Value],
        &headers as &[&[u8]],
        &bodies as &[Option<&[u8]>],
        events::CHANNEL,
        view.is_some_and(|v| v.claim_recent),
        view.map(|v| v.known_modseq as i64),
        view.map(|v| v.mailbox_id),
    )
    .fetch_one(conn)
    .await?;
    if !stored.no_limit {
        return Ok(None);
    }
    let (Some(mailbox_id), Some(uidvalidity), Some(first_uid), Some(modseq_before)) =
        (stored.id, stored.uidvalidity, stored.first_uid, stored.modseq_before)
    else {
        return Err(StoreError::NoSuchMailbox);
    };
    // Claimed above the old mark: the UIDs after it up to the first row's (RFC 3501 §2.3.2).
    let recent_from = stored.recent_before.map(|old| (old.max(0) as u32).saturating_add(1));
    Ok(Some(
        (0..count)
            .map(|i| Appended {
                user_id,
                mailbox_id,
                uidvalidity: uidvalidity as u32,
                uid: (first_uid + i) as u32,
                modseq: (modseq_before + 1 + i) as u64,
                recent_from: if i == 0 { recent_from } else { None },
            })
            .collect(),
    ))
}

/// Lock a mailbox row that must belong to the user. The user's row is locked first: every
/// transaction that changes usage locks user before mailbox, so none can deadlock another.
///
/// One statement: PostgreSQL takes a statement's row locks in the order its `FOR UPDATE OF` list
/// names the tables (the plan's row marks, walked in that order when each row is returned), so
/// the user's row is locked before the mailbox's as if by [`lock_user`] then
/// [`lock_mailbox_row`], one round trip fewer (issue #12). A mailbox that is not the user's
/// locks nothing and is `NoSuchMailbox`.
async fn lock_mailbox(conn: &mut PgConnection, user_id: i64, mailbox_id: i64) -> Result<(), StoreError> {
    let found: Option<i64> = sqlx::query_scalar!(
        "SELECT m.id FROM users u, mailboxes m WHERE u.id = $2 AND m.id = $1 AND m.user_id = u.id
         FOR UPDATE OF u, m",
        mailbox_id,
        user_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    found.map(|_| ()).ok_or(StoreError::NoSuchMailbox)
}

/// Lock a user's row (step 1 of the lock order).
async fn lock_user(conn: &mut PgConnection, user_id: i64) -> Result<(), StoreError> {
    sqlx::query!("SELECT id FROM users WHERE id = $1 FOR UPDATE", user_id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(())
}

/// Lock a mailbox row of the user (step 2; the caller holds the user's row).
async fn lock_mailbox_row(conn: &mut PgConnection, user_id: i64, mailbox_id: i64) -> Result<(), StoreError> {
    let found: Option<i64> = sqlx::query_scalar!(
        "SELECT id FROM mailboxes WHERE id = $1 AND user_id = $2 FOR UPDATE",
        mailbox_id,
        user_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    found.map(|_| ()).ok_or(StoreError::NoSuchMailbox)
}

/// Take the next UID and a new MODSEQ of a user's mailbox (row-locked until commit).
async fn next_uid(conn: &mut PgConnection, user_id: i64, mailbox_id: i64) -> Result<(u32, u32, u64), StoreError> {
    let row = sqlx::query!(
        r#"UPDATE mailboxes SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1
         WHERE id = $1 AND user_id = $2 RETURNING uidvalidity, uidnext - 1 AS "uid!", highestmodseq"#,
        mailbox_id,
        user_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    let (uidvalidity, uid, modseq) = row
        .map(|r| (r.uidvalidity, r.uid, r.highestmodseq))
        .ok_or(StoreError::NoSuchMailbox)?;
    Ok((uidvalidity as u32, uid as u32, modseq as u64))
}

/// A new MODSEQ for a mailbox (row-locked until commit).
async fn bump_modseq(conn: &mut PgConnection, mailbox_id: i64) -> Result<u64, StoreError> {
    let modseq: i64 = sqlx::query_scalar!(
        "UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = $1 RETURNING highestmodseq",
        mailbox_id
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(modseq as u64)
}

/// Expunged UIDs each mailbox remembers (RFC 7162 §3.2.5.2 lets a server forget): enough for
/// a client that was away while thousands of messages were cleaned up.
pub const EXPUNGED_KEPT: i64 = 20_000;

/// Rows of `expunged` a mailbox may reach before its record is pruned back to
/// [`EXPUNGED_KEPT`]: the slack makes the pruning walk (O(EXPUNGED_KEPT)) happen once per
/// `EXPUNGED_PRUNE_AT - EXPUNGED_KEPT` removals instead of on every EXPUNGE, O(1) per removed
/// message on average.
pub const EXPUNGED_PRUNE_AT: i64 = EXPUNGED_KEPT + EXPUNGED_KEPT / 4;

/// Record that `uids` left a user's mailbox, in the caller's transaction (which holds the
/// mailbox's row lock): a new MODSEQ for the mailbox, the removals remembered at it for
/// VANISHED (EARLIER) (RFC 7162 §3.2.5, §3.2.6; the table `expunged`, migration 0013), and the
/// mailbox's event, in one statement. Returns the new MODSEQ.
///
/// The mailbox counts its rows of `expunged` (`expunged_rows`, migration 0015); past
/// [`EXPUNGED_PRUNE_AT`] the oldest MODSEQs are forgotten whole until at most
/// [`EXPUNGED_KEPT`] rows are left, and the mailbox's `expunged_floor` rises to the highest of
/// them.
async fn record_removal(
    conn: &mut PgConnection,
    user_id: i64,
    mailbox_id: i64,
    uids: &[i64],
) -> Result<u64, StoreError> {
    let payload = events::payload(&Event::Mailbox { user_id, mailbox_id });
    // The INSERT sees the new MODSEQ through `b` (the sub-statements of one statement share a
    // snapshot, so it is handed over, not re-read).
    let row = sqlx::query!(
        r#"WITH b AS (
             UPDATE mailboxes SET highestmodseq = highestmodseq + 1,
                    expunged_rows = expunged_rows + cardinality($2::bigint[])
             WHERE id = $1 RETURNING highestmodseq, expunged_rows),
         e AS (
             INSERT INTO expunged (mailbox_id, uid, modseq) SELECT $1, u, b.highestmodseq FROM b, unnest($2::bigint[]) AS u
             ON CONFLICT (mailbox_id, uid) DO UPDATE SET modseq = EXCLUDED.modseq)
         SELECT b.highestmodseq, b.expunged_rows FROM b, pg_notify($3, $4)"#,
        mailbox_id,
        uids,
        events::CHANNEL,
        payload,
    )
    .fetch_one(&mut *conn)
    .await?;
    if row.expunged_rows > EXPUNGED_PRUNE_AT {
        prune_expunged(conn, mailbox_id).await?;
    }
    Ok(row.highestmodseq as u64)
}

/// Forget a mailbox's oldest removals, whole MODSEQs at a time, until at most
/// [`EXPUNGED_KEPT`] rows are left; raise `expunged_floor` to the highest MODSEQ forgotten and
/// set `expunged_rows` to the true count. Under the mailbox's row lock.
async fn prune_expunged(conn: &mut PgConnection, mailbox_id: i64) -> Result<(), StoreError> {
    // Sub-statements share one snapshot: the count is of the rows before the DELETE.
    sqlx::query!(
        "WITH c AS (
             SELECT modseq FROM expunged WHERE mailbox_id = $1 ORDER BY modseq DESC OFFSET $2 LIMIT 1),
         d AS (
             DELETE FROM expunged e USING c WHERE e.mailbox_id = $1 AND e.modseq <= c.modseq RETURNING 1)
         UPDATE mailboxes SET expunged_floor = greatest(expunged_floor, (SELECT modseq FROM c)),
                expunged_rows = (SELECT count(*) FROM expunged WHERE mailbox_id = $1) - (SELECT count(*) FROM d)
         WHERE id = $1",
        mailbox_id,
        EXPUNGED_KEPT
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Refund quota and drop blob references for removed messages (blob id, size).
async fn release_messages(
    conn: &mut PgConnection,
    user_id: i64,
    removed: &[(String, i64)],
) -> Result<bool, StoreError> {
    if removed.is_empty() {
        return Ok(false);
    }
    let bytes: i64 = removed.iter().map(|r| r.1).sum();
    let warned = quota::refund(conn, user_id, Usage::Mail, bytes as u64).await?;
    let ids: Vec<String> = removed.iter().map(|r| r.0.clone()).collect();
    blobs::lock(conn, &ids).await?;
    blobs::drop_refs(conn, &ids).await?;
    Ok(warned)
}

// A user's mail as a whole, for the directory (`accounts`) and quota recounts: these run
// inside the caller's transaction, which already holds the user's row (lock order step 1).

/// Create the default mailboxes ([`DEFAULT_MAILBOXES`]) of a new user, inside the transaction
/// that creates the user (`accounts::add_user`).
pub async fn create_default_mailboxes(conn: &mut PgConnection, user_id: i64) -> Result<(), sqlx::Error> {
    for (name, special_use) in DEFAULT_MAILBOXES {
        let uidvalidity = next_uidvalidity(conn, user_id).await?;
        // The default mailboxes start subscribed, so clients that show only subscribed
        // folders (Thunderbird's default) show them.
        sqlx::query!(
            "INSERT INTO subscriptions (user_id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            user_id,
            name
        )
        .execute(&mut *conn)
        .await?;
        sqlx::query!(
            "INSERT INTO mailboxes (user_id, name, uidvalidity, special_use) VALUES ($1, $2, $3, $4)",
            user_id,
            name,
            uidvalidity,
            special_use.map(SpecialUse::as_imap)
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// How many messages a user has, over all their mailboxes.
pub async fn count_user_messages(conn: &mut PgConnection, user_id: i64) -> Result<u64, sqlx::Error> {
    let count: i64 = sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.user_id = $1"#,
        user_id
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(count.max(0) as u64)
}

/// The bytes of a user's messages, over all their mailboxes: what their mail usage should be.
pub async fn user_mail_bytes(conn: &mut PgConnection, user_id: i64) -> Result<u64, sqlx::Error> {
    let bytes: i64 = sqlx::query_scalar!(
        r#"SELECT coalesce(sum(m.size), 0)::bigint AS "bytes!" FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id
         WHERE b.user_id = $1"#,
        user_id
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(bytes.max(0) as u64)
}

/// Delete every mailbox and message of a user who is being deleted (`accounts::delete_user`
/// with purge), dropping the blob references the messages held: blobs referenced by nobody
/// else become sweepable. Usage is not refunded (the user row goes next).
pub async fn purge_user_mail(conn: &mut PgConnection, user_id: i64) -> Result<(), sqlx::Error> {
    // Lock order step 4: the blob rows in ascending id order (blobs::lock) before their
    // references drop. Every other writer of this user's mailboxes waits on the user row the
    // caller holds. One id per message: drop_refs counts repeats.
    let ids: Vec<String> = sqlx::query_scalar!(
        "SELECT m.blob_id FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.user_id = $1",
        user_id
    )
    .fetch_all(&mut *conn)
    .await?;
    blobs::lock(conn, &ids).await?;
    blobs::drop_refs(conn, &ids).await?;
    // The messages go with their mailboxes (ON DELETE CASCADE).
    sqlx::query!("DELETE FROM mailboxes WHERE user_id = $1", user_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

// Consistency checks for `tinydc check`: reads over every user, and one repair that runs in
// the lock order above.

/// The bytes of every user's messages, by user id (users without mail are absent).
pub async fn mail_bytes_by_user(conn: &mut PgConnection) -> Result<HashMap<i64, u64>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT b.user_id, coalesce(sum(m.size), 0)::bigint AS "bytes!"
         FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id GROUP BY b.user_id"#
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.user_id, r.bytes.max(0) as u64)).collect())
}

/// A mailbox whose counters are behind its messages: a UID at or above UIDNEXT (RFC 3501
/// §2.3.1.1: UIDNEXT is above every assigned UID) or a MODSEQ above HIGHESTMODSEQ (RFC 7162
/// §3.1.1). Either would let the store hand out a UID or MODSEQ twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterProblem {
    pub user_id: i64,
    pub address: String,
    pub mailbox_id: i64,
    pub name: String,
    pub uidnext: i64,
    pub max_uid: i64,
    pub highestmodseq: i64,
    pub max_modseq: i64,
}

/// Every mailbox whose UIDNEXT or HIGHESTMODSEQ is behind its messages. (Two messages with one
/// UID cannot exist: (mailbox_id, uid) is the primary key.)
pub async fn counter_problems(conn: &mut PgConnection) -> Result<Vec<CounterProblem>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT b.id, b.user_id, u.address, b.name, b.uidnext, b.highestmodseq,
                max(m.uid) AS "max_uid!", max(m.modseq) AS "max_modseq!"
         FROM mailboxes b JOIN users u ON u.id = b.user_id JOIN messages m ON m.mailbox_id = b.id
         GROUP BY b.id, u.address
         HAVING max(m.uid) >= b.uidnext OR max(m.modseq) > b.highestmodseq
         ORDER BY u.address, b.name"#
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| CounterProblem {
            user_id: r.user_id,
            address: r.address,
            mailbox_id: r.id,
            name: r.name,
            uidnext: r.uidnext,
            max_uid: r.max_uid,
            highestmodseq: r.highestmodseq,
            max_modseq: r.max_modseq,
        })
        .collect())
}

/// Move a mailbox's UIDNEXT above its highest UID and its HIGHESTMODSEQ up to its highest
/// MODSEQ (never down: UIDs stay valid, so clients keep their caches). Under the user's and the
/// mailbox's row locks, like every writer here.
pub async fn repair_counters(db: &PgPool, user_id: i64, mailbox_id: i64) -> Result<(), StoreError> {
    let mut tx = db.begin().await?;
    lock_mailbox(&mut tx, user_id, mailbox_id).await?;
    sqlx::query!(
        "UPDATE mailboxes SET
           uidnext = greatest(uidnext, coalesce((SELECT max(uid) + 1 FROM messages WHERE mailbox_id = $1), 1)),
           highestmodseq = greatest(highestmodseq, coalesce((SELECT max(modseq) FROM messages WHERE mailbox_id = $1), 1))
         WHERE id = $1 AND user_id = $2",
        mailbox_id,
        user_id
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A message named by where a person sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessagePlace {
    pub address: String,
    pub mailbox: String,
    pub uid: u32,
    pub blob_id: String,
}

/// The messages whose body is one of `blob_ids`, by address, mailbox and UID.
pub async fn messages_with_blobs(
    conn: &mut PgConnection,
    blob_ids: &[String],
) -> Result<Vec<MessagePlace>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT u.address, b.name, m.uid, m.blob_id FROM messages m
         JOIN mailboxes b ON b.id = m.mailbox_id JOIN users u ON u.id = b.user_id
         WHERE m.blob_id = ANY($1) ORDER BY u.address, b.name, m.uid",
        blob_ids
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| MessagePlace {
            address: r.address,
            mailbox: r.name,
            uid: r.uid as u32,
            blob_id: r.blob_id,
        })
        .collect())
}

/// System flags in their canonical case (`\seen` → `\Seen`), keywords as given, no
/// duplicates (case-insensitive), `\Recent` dropped (it is per session, RFC 3501 §2.3.2).
pub fn normalize_flags(flags: &[String]) -> Vec<String> {
    const SYSTEM: [&str; 5] = ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"];
    let mut out: Vec<String> = Vec::with_capacity(flags.len());
    for flag in flags {
        let flag = match SYSTEM.iter().find(|s| s.eq_ignore_ascii_case(flag)) {
            Some(system) => system.to_string(),
            None if flag.eq_ignore_ascii_case("\\Recent") || flag.is_empty() => continue,
            None => flag.clone(),
        };
        if !out.iter().any(|f| f.eq_ignore_ascii_case(&flag)) {
            out.push(flag);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_normalized() {
        let flags = normalize_flags(&["\\seen".into(), "$Junk".into(), "\\SEEN".into(), "\\Recent".into()]);
        assert_eq!(flags, vec!["\\Seen".to_string(), "$Junk".to_string()]);
    }

    #[test]
    fn inbox_is_case_insensitive() {
        assert_eq!(normalize_mailbox_name("inbox"), "INBOX");
        assert_eq!(normalize_mailbox_name("Inbox/Sub"), "INBOX/Sub");
        assert_eq!(normalize_mailbox_name("Inboxes"), "Inboxes");
    }
}
