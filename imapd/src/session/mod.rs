//! One IMAP connection: the state enum (RFC 3501 §3), the one gate deciding which command is
//! allowed in which state, the connection loop, and keeping the selected mailbox's view
//! (sequence numbers, flags) in step with other sessions.

pub mod budget;
pub mod conn;
pub mod context;
pub mod notify;
pub mod recent;
mod sync;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shared::Context;
use shared::auth::AuthedUser;
use shared::events::Event;
use shared::mailstore::{Mailbox, StoreError};
use shared::net::Shutdown;
use shared::quota::{self, Reservation};
use tokio::sync::broadcast;
use tokio_rustls::TlsAcceptor;

use crate::wire::frame;
use crate::wire::mutf7;
use crate::wire::parse::{self, Command, CommandBody};
use crate::wire::response::Response;
use crate::wire::sequence::SequenceSet;
use conn::{Conn, Line};

/// Malformed commands in a row before the connection is closed.
const MAX_GARBAGE: u32 = 10;
/// Messages one APPEND may carry (MULTIAPPEND, RFC 3502); their bytes together are bounded by
/// the command size limit (`max_literal_size` and a few lines).
pub(crate) const MAX_APPEND_MESSAGES: usize = 100;
/// RFC 7888 §5 (LITERAL-) and RFC 9051 §4.3: a non-synchronizing literal of up to 4096 octets
/// is always accepted, in every state (a LOGIN password before authentication too).
const NON_SYNC_LITERAL_FLOOR: u64 = 4096;
/// A refused non-synchronizing literal up to this size is read and dropped, and the connection
/// goes on; a larger one closes it (RFC 7888 §4's two choices: reading many megabytes only to
/// throw them away is the worse one).
const MAX_DISCARDED_LITERAL: u64 = 1 << 20;

/// The selected mailbox as this session sees it: message sequence number `n` is `uids[n-1]`.
#[derive(Debug)]
pub struct Selected {
    pub mailbox: Mailbox,
    pub read_only: bool,
    pub uids: Vec<u32>,
    pub flags: Vec<Vec<String>>,
    pub modseqs: Vec<u64>,
    /// UIDs expunged by others but not yet announced (RFC 3501 §7.4.1 forbids EXPUNGE
    /// responses during FETCH, STORE and SEARCH); they keep their sequence numbers until then.
    pub ghosts: Vec<u32>,
    /// The mailbox's HIGHESTMODSEQ this view is in step with.
    pub known_modseq: u64,
    /// RFC 3501 §2.3.2: the UIDs (ascending) that are \Recent in this session: those it claimed
    /// first (see `recent.rs`). Always empty for EXAMINE.
    pub recent: Vec<u32>,
    /// The keywords announced to the client in `* FLAGS` (RFC 3501 §7.2.6).
    pub keywords: Vec<String>,
    /// RFC 5182: the UIDs (ascending) saved by the last `SEARCH RETURN (SAVE)`, read as `$`.
    /// Empty at SELECT/EXAMINE; gone with the view at CLOSE/UNSELECT. Kept as UIDs, so an
    /// expunged message drops out of `$` when it is resolved against the view.
    pub saved: Vec<u32>,
    /// RFC 5267 §4.3: the searches kept live (`RETURN (UPDATE)`), see `context.rs`; they end
    /// with the view ("when the mailbox is no longer selected") or at CANCELUPDATE.
    pub live: Vec<context::Live>,
    /// The view is the mailbox as it was at a moment within the command now running: SELECT
    /// has just read it, FETCH synced before reading, or this session's own flag change took
    /// the MODSEQ right after the one the view knew ([`Selected::advance_known`]). The sync at
    /// the end of such a command is skipped (`sync.rs`, [`Session::view_is_current`]).
    /// Cleared when each command starts, unless the change clock vouches for the view
    /// ([`Selected::verified`]).
    pub current: bool,
    /// The change clock's reading for this mailbox (`shared::mailstore::clock`) taken before
    /// the view was last found to be the whole mailbox (a sync's read, or this session's own
    /// change that took the next MODSEQ), and when. While the clock still reads the same, no
    /// change answered since has touched the mailbox: a command starts with the view current
    /// and needs no sync (for at most `clock::TRUST_FOR`).
    pub verified: Option<(u64, std::time::Instant)>,
}

impl Selected {
    /// The sequence number of a UID.
    pub fn seq_of(&self, uid: u32) -> Option<u32> {
        self.uids.binary_search(&uid).ok().map(|i| i as u32 + 1)
    }

    pub fn max_uid(&self) -> u32 {
        self.uids.last().copied().unwrap_or(0)
    }

    pub fn is_recent(&self, uid: u32) -> bool {
        self.recent.binary_search(&uid).is_ok()
    }

    /// This session's own flag change (all at one new MODSEQ) is in the view already: when it
    /// directly follows the MODSEQ the view knows, nobody else changed the mailbox in between
    /// (every change takes the next MODSEQ under the mailbox's row lock), so the sync after the
    /// command need not read every changed message back (`STORE 1:*` read the whole mailbox
    /// twice).
    ///
    /// Such a change also makes the view current as of that change's commit (`current`); a
    /// change that did not follow directly (or changed nothing) leaves the view to the sync.
    pub fn advance_known(&mut self, changed: &[shared::mailstore::MessageState]) {
        self.advance_to(changed.first().map(|s| s.modseq));
    }

    /// [`Selected::advance_known`] for a change of this session's that took `modseq` (`None`:
    /// it changed nothing), e.g. an EXPUNGE whose removals the view has already dropped.
    pub fn advance_to(&mut self, modseq: Option<u64>) {
        self.current = false;
        if let Some(modseq) = modseq
            && self.known_modseq.checked_add(1) == Some(modseq)
        {
            self.known_modseq = modseq;
            self.current = true;
        }
    }

    /// RFC 3501 §7.2.6: a keyword the client has not been told of yet (set by STORE, APPEND
    /// or another session) is announced with `* FLAGS` and `* OK [PERMANENTFLAGS]` before any
    /// FETCH shows it; writes those to `out` when `flags` bring a new one.
    pub fn announce_keywords<'a>(&mut self, flags: impl IntoIterator<Item = &'a String>, out: &mut Vec<u8>) {
        let before = self.keywords.len();
        for flag in flags {
            if !flag.starts_with('\\') && !self.keywords.iter().any(|k| k.eq_ignore_ascii_case(flag)) {
                self.keywords.push(flag.clone());
            }
        }
        if self.keywords.len() == before {
            return;
        }
        let mut all: Vec<String> = crate::cmd::select::SYSTEM_FLAGS.iter().map(|s| s.to_string()).collect();
        all.extend(self.keywords.iter().cloned());
        Response::Flags(&all).write(out);
        let (permanent, text) = if self.read_only {
            (Vec::new(), "read-only")
        } else {
            all.push("\\*".into());
            (all, "flags stored")
        };
        Response::Untagged {
            status: Status::Ok,
            code: Some(&Code::PermanentFlags(permanent)),
            text,
        }
        .write(out);
    }

    /// Forget a message that left the view.
    pub fn remove_at(&mut self, i: usize) {
        let uid = self.uids.remove(i);
        self.flags.remove(i);
        self.modseqs.remove(i);
        if let Ok(r) = self.recent.binary_search(&uid) {
            self.recent.remove(r);
        }
    }
}

/// RFC 3501 §3: the states of a connection, each carrying what it knows.
#[derive(Debug)]
pub enum State {
    NotAuthenticated,
    Authenticated { user: AuthedUser },
    Selected { user: AuthedUser, selected: Box<Selected> },
    Logout,
}

impl State {
    pub fn user(&self) -> Option<&AuthedUser> {
        match self {
            State::Authenticated { user } | State::Selected { user, .. } => Some(user),
            _ => None,
        }
    }
}

pub use crate::wire::response::{Code, Status};

/// A command's tagged answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: Status,
    pub code: Option<Code>,
    pub text: String,
}

impl Reply {
    pub fn ok(text: impl Into<String>) -> Reply {
        Reply {
            status: Status::Ok,
            code: None,
            text: text.into(),
        }
    }

    pub fn no(text: impl Into<String>) -> Reply {
        Reply {
            status: Status::No,
            code: None,
            text: text.into(),
        }
    }

    pub fn bad(text: impl Into<String>) -> Reply {
        Reply {
            status: Status::Bad,
            code: None,
            text: text.into(),
        }
    }

    pub fn code(mut self, code: Code) -> Reply {
        self.code = Some(code);
        self
    }

    /// The reply as the tagged status response completing command `tag` (RFC 3501 §7.1).
    pub fn tagged<'a>(&'a self, tag: &'a str) -> Response<'a> {
        Response::Tagged {
            tag,
            status: self.status,
            code: self.code.as_ref(),
            text: &self.text,
        }
    }
}

/// Why a command stopped: an answer to send, or a broken connection.
#[derive(Debug)]
pub enum Failure {
    Reply(Reply),
    /// The tagged answer was already sent (STARTTLS, COMPRESS: it must precede the switch).
    Answered,
    Io(std::io::Error),
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Io(e)
    }
}

impl From<Reply> for Failure {
    fn from(r: Reply) -> Self {
        Failure::Reply(r)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Reply(store_error(e))
    }
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        Failure::Reply(store_error(StoreError::Db(e)))
    }
}

impl From<quota::QuotaError> for Failure {
    fn from(e: quota::QuotaError) -> Self {
        Failure::Reply(store_error(StoreError::Quota(e)))
    }
}

/// A store error in IMAP's words (RFC 5530 response codes).
pub fn store_error(e: StoreError) -> Reply {
    match e {
        StoreError::NoSuchMailbox => Reply::no("no such mailbox").code(Code::NonExistent),
        StoreError::AlreadyExists => Reply::no("mailbox already exists").code(Code::AlreadyExists),
        StoreError::Invalid(text) => Reply::no(text).code(Code::Cannot),
        // RFC 5530 §3: LIMIT, a hard limit of the server (mailboxes, name depth or length).
        StoreError::Limit(text) => Reply::no(text).code(Code::Limit),
        e if e.is_over_quota() => Reply::no("over quota").code(Code::OverQuota),
        // RFC 5530 §3 OVERQUOTA ("would be over quota after the operation"): the remedy a client
        // offers (free space) is the same whether the user's quota or the disk is full; Dovecot
        // answers a full disk the same way. The text tells them apart.
        e if e.is_disk_full() => {
            tracing::warn!("write refused, disk full: {e}");
            Reply::no("Not enough disk space").code(Code::OverQuota)
        }
        // RFC 5530 §3 UNAVAILABLE: a subsystem (the database, restarting) is down for now.
        e if e.is_unavailable() => {
            tracing::warn!("database unavailable: {e}");
            Reply::no("the mail store is unavailable, try again shortly").code(Code::Unavailable)
        }
        e => {
            tracing::error!("store error: {e}");
            Reply::no("internal error, try again later").code(Code::ServerBug)
        }
    }
}

pub type CmdResult = Result<Reply, Failure>;

/// Whether the loop goes on after a command.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

/// Everything one connection holds.
pub struct Session {
    pub ctx: Arc<Context>,
    pub conn: Conn,
    pub peer: SocketAddr,
    pub state: State,
    pub tls: TlsAcceptor,
    pub shutdown: Shutdown,
    pub events: broadcast::Receiver<Event>,
    /// RFC 7162 §3.1: CONDSTORE was enabled (ENABLE, SELECT (CONDSTORE), a MODSEQ fetch ...).
    pub condstore: bool,
    /// RFC 7162 §3.2.3: ENABLE QRESYNC was given (implies `condstore`): expunges are announced
    /// as `* VANISHED` and SELECT takes the QRESYNC parameter.
    pub qresync: bool,
    /// RFC 6855: UTF8=ACCEPT was enabled.
    pub utf8: bool,
    /// RFC 5465: the NOTIFY SET in force (`None`: none, or NOTIFY NONE, or an overflow).
    pub notify: Option<notify::Notify>,
    /// RFC 9051: ENABLE IMAP4rev2 was given; the session answers as IMAP4rev2 where it differs
    /// from IMAP4rev1 (docs/ARCHITECTURE.md lists each difference of RFC 9051 Appendix E).
    pub rev2: bool,
    /// Quota reserved for the messages of the APPEND whose literals are being read, one per
    /// message (MULTIAPPEND: the total is charged) (docs/ARCHITECTURE.md, "Contracts": quota,
    /// reserve first).
    pub reservations: Vec<Reservation>,
    /// The memory budget for literals shared by all sessions, and this command's share of it.
    literal_budget: budget::LiteralBudget,
    literal_held: Option<tokio::sync::OwnedSemaphorePermit>,
    garbage: u32,
}

impl Session {
    pub fn new(
        ctx: Arc<Context>,
        conn: Conn,
        peer: SocketAddr,
        tls: TlsAcceptor,
        literal_budget: budget::LiteralBudget,
        shutdown: Shutdown,
    ) -> Session {
        let events = ctx.events.subscribe();
        Session {
            ctx,
            conn,
            peer,
            state: State::NotAuthenticated,
            tls,
            shutdown,
            events,
            condstore: false,
            qresync: false,
            utf8: false,
            notify: None,
            rev2: false,
            reservations: Vec::new(),
            literal_budget,
            literal_held: None,
            garbage: 0,
        }
    }

    /// Whether passwords may be sent now (RFC 3501 §6.2.3 LOGINDISABLED otherwise).
    pub fn may_authenticate(&self) -> bool {
        use shared::auth::{Channel, password_may_cross};
        let channel = if self.conn.is_tls() {
            Channel::Tls
        } else {
            Channel::Plain
        };
        password_may_cross(channel, self.peer.ip(), &self.ctx.config.auth)
    }

    /// RFC 5182 §2.1: a SEARCH (or SORT) with SAVE that fails leaves `$` empty.
    fn forget_failed_save(&mut self, saves: bool, result: &Result<Reply, Failure>) {
        if saves
            && !matches!(result, Ok(reply) if reply.status == Status::Ok)
            && let State::Selected { selected, .. } = &mut self.state
        {
            selected.saved.clear();
        }
    }

    /// The CAPABILITY list for the current state (RFC 3501 §7.2.1). Each extension appears only
    /// when it is implemented and tested.
    pub fn capabilities(&self) -> String {
        // RFC 9051 §7.2.2: IMAP4rev2 beside IMAP4rev1; a client picks it with ENABLE.
        let mut caps = vec![
            "IMAP4rev1",
            "IMAP4rev2",
            "LITERAL+",
            "SASL-IR",
            "ID",
            "ENABLE",
            "IDLE",
            "NAMESPACE",
        ];
        match &self.state {
            State::NotAuthenticated => {
                if !self.conn.is_tls() {
                    caps.push("STARTTLS");
                }
                if self.may_authenticate() {
                    caps.push("AUTH=PLAIN");
                } else {
                    caps.push("LOGINDISABLED");
                }
            }
            _ => {
                caps.extend([
                    "UIDPLUS",
                    "MOVE",
                    "MULTIAPPEND",
                    "UNSELECT",
                    "CHILDREN",
                    // RFC 5258 and RFC 5819.
                    "LIST-EXTENDED",
                    "LIST-STATUS",
                    "SPECIAL-USE",
                    "CREATE-SPECIAL-USE",
                    "QUOTA",
                    "QUOTA=RES-STORAGE",
                    // RFC 8438 STATUS SIZE.
                    "STATUS=SIZE",
                    "UTF8=ACCEPT",
                    // RFC 5032 OLDER / YOUNGER search keys.
                    "WITHIN",
                    // RFC 4731 SEARCH RETURN (MIN MAX ALL COUNT).
                    "ESEARCH",
                    // RFC 5182 SEARCH RETURN (SAVE) and `$`.
                    "SEARCHRES",
                    "SORT",
                    "SORT=DISPLAY",
                    // RFC 5267 §3 SORT RETURN (...), §4 RETURN (UPDATE PARTIAL CONTEXT) and
                    // CANCELUPDATE on SEARCH and SORT.
                    "ESORT",
                    "CONTEXT=SEARCH",
                    "CONTEXT=SORT",
                    "THREAD=ORDEREDSUBJECT",
                    "THREAD=REFERENCES",
                    // RFC 5465.
                    "NOTIFY",
                    // RFC 3516 FETCH BINARY[], BINARY.SIZE[] and APPEND of a literal8.
                    "BINARY",
                    // RFC 4469 APPEND ... CATENATE (TEXT / URL parts).
                    "CATENATE",
                    // RFC 5464: server and mailbox entries (METADATA-SERVER is the subset).
                    "METADATA",
                ]);
                if self.ctx.config.imap.condstore {
                    // RFC 7162 §3.1 and §3.2.
                    caps.extend(["CONDSTORE", "QRESYNC"]);
                }
                if self.ctx.config.imap.compress && !self.conn.is_compressed() {
                    caps.push("COMPRESS=DEFLATE");
                }
            }
        }
        caps.join(" ")
    }

    /// A CONDSTORE enabling command (RFC 7162 §3.1: ENABLE, SELECT (CONDSTORE), STATUS
    /// HIGHESTMODSEQ, FETCH MODSEQ or CHANGEDSINCE, SEARCH MODSEQ, STORE UNCHANGEDSINCE). BAD
    /// when CONDSTORE is not offered. The first one with a mailbox selected announces its
    /// HIGHESTMODSEQ (the SELECT response had none the client would have read), as Dovecot does.
    pub async fn enable_condstore(&mut self) -> Result<(), Failure> {
        if !self.ctx.config.imap.condstore {
            return Err(Failure::Reply(Reply::bad("CONDSTORE is not offered")));
        }
        if std::mem::replace(&mut self.condstore, true) {
            return Ok(());
        }
        let highest = match &self.state {
            State::Selected { selected, .. } => Some(selected.known_modseq.max(1)),
            _ => None,
        };
        if let Some(highest) = highest {
            let code = Code::HighestModSeq(highest);
            self.respond(Response::Untagged {
                status: Status::Ok,
                code: Some(&code),
                text: "highest",
            })
            .await?;
        }
        Ok(())
    }

    /// Queue one response (wire/response.rs writes it).
    pub async fn respond(&mut self, response: Response<'_>) -> std::io::Result<()> {
        self.conn.send(&response.to_bytes()).await
    }

    async fn tagged(&mut self, tag: &str, reply: &Reply) -> std::io::Result<()> {
        self.respond(reply.tagged(tag)).await
    }

    /// A mailbox name from the client: modified UTF-7 unless UTF8=ACCEPT is on (RFC 6855 §3).
    pub fn mailbox_in(&self, raw: &str) -> Result<String, Reply> {
        if self.utf8 {
            return Ok(raw.to_string());
        }
        // RFC 3501 §5.1.3: without UTF8=ACCEPT names are 7-bit, international characters in
        // modified UTF-7; RFC 6855 §3 allows raw UTF-8 only after ENABLE UTF8=ACCEPT. Taking raw
        // 8-bit bytes anyway would list the name back in modified UTF-7, under another name than
        // the client sent (mbsync 1.4 then makes a duplicate folder). A name the server cannot
        // accept is NO (RFC 3501 §6.3.3 "NO - create failure"), as Dovecot answers, not BAD.
        if !raw.is_ascii() {
            tracing::info!(peer = %self.peer, "mailbox name with 8-bit characters refused without UTF8=ACCEPT");
            return Err(Reply::no(
                "mailbox name has 8-bit characters: send it in modified UTF-7 (RFC 3501 5.1.3) or ENABLE UTF8=ACCEPT first",
            )
            .code(Code::Cannot));
        }
        mutf7::decode(raw).ok_or_else(|| {
            tracing::info!(peer = %self.peer, "mailbox name that is not valid modified UTF-7 refused");
            Reply::no("mailbox name is not valid modified UTF-7").code(Code::Cannot)
        })
    }

    /// A mailbox name for the client, as a quoted string or literal.
    pub fn mailbox_out(&self, name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let text = if self.utf8 {
            name.to_string()
        } else {
            mutf7::encode(name)
        };
        crate::wire::encode::string(&mut out, text.as_bytes());
        out
    }

    /// How long the client may stay silent now. RFC 9051 §5.4's 30 minutes at least is for
    /// authenticated sessions; before login (`imap.login_timeout_secs`) it is short, so idle
    /// connections cannot hold the slots real users need.
    pub fn idle_timeout(&self) -> Duration {
        let imap = &self.ctx.config.imap;
        match self.state {
            State::NotAuthenticated => Duration::from_secs(imap.login_timeout_secs.min(imap.idle_timeout_secs)),
            _ => Duration::from_secs(imap.idle_timeout_secs),
        }
    }

    /// Serve the connection until LOGOUT, EOF, a fatal error or shutdown.
    pub async fn run(mut self) {
        // The process's event listener stays connected for this session's life (IDLE, NOTIFY
        // and the sync after each command hear of other processes' changes through it), and
        // is connected before the greeting when it had been given up: whatever this session
        // reads afterwards is either in that read or announced to it (shared::events).
        let _listening = self.ctx.events.listening().await;
        // RFC 3501 §7.1.1: the greeting, with the capabilities so clients need not ask.
        let code = Code::Capability(self.capabilities());
        let greeting = Response::Untagged {
            status: Status::Ok,
            code: Some(&code),
            text: "tinydc IMAP ready",
        };
        if self.respond(greeting).await.is_err() {
            return;
        }
        loop {
            if self.conn.flush().await.is_err() {
                break;
            }
            let shutdown = self.shutdown.clone();
            let deadline = tokio::time::Instant::now() + self.idle_timeout();
            // RFC 5465 §3.1: in NOTIFY mode, notifications go out while no command is in
            // progress too.
            if self.notify.is_some() {
                match self.notify_between_commands(deadline).await {
                    Ok(()) => {}
                    Err(Failure::Io(e)) => {
                        tracing::debug!(peer = %self.peer, "connection ended: {e}");
                        break;
                    }
                    Err(Failure::Reply(r)) => tracing::warn!(peer = %self.peer, "NOTIFY: {}", r.text),
                    Err(Failure::Answered) => {}
                }
            }
            let read = tokio::select! {
                _ = shutdown.cancelled() => {
                    // RFC 3501 §7.1.5: BYE before the server closes the connection.
                    let _ = self.respond(Response::Bye("server shutting down")).await;
                    let _ = self.conn.flush().await;
                    break;
                }
                read = tokio::time::timeout_at(deadline, self.read_command()) => read,
            };
            let input = match read {
                Err(_) => {
                    tracing::info!(peer = %self.peer, authenticated = self.state.user().is_some(), "idle timeout");
                    let _ = self.respond(Response::Bye("idle for too long")).await;
                    let _ = self.conn.flush().await;
                    break;
                }
                Ok(Err(e)) => {
                    tracing::debug!(peer = %self.peer, "connection ended: {e}");
                    break;
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(Input::Handled))) => {
                    if self.garbage >= MAX_GARBAGE {
                        break;
                    }
                    continue;
                }
                Ok(Ok(Some(Input::Close))) => {
                    let _ = self.conn.flush().await;
                    break;
                }
                Ok(Ok(Some(Input::Command(bytes)))) => bytes,
            };
            let parsed = parse::parse_command(&input);
            // RFC 5182 §2.1: a SEARCH with SAVE refused as BAD empties `$` too.
            if parsed.is_err()
                && parse::asks_to_save(&input)
                && let State::Selected { selected, .. } = &mut self.state
            {
                selected.saved.clear();
            }
            // The command owns its literals now; a large APPEND is not held twice.
            drop(input);
            let flow = match parsed {
                Ok(command) => {
                    self.garbage = 0;
                    self.execute(command).await
                }
                Err(e) => {
                    self.garbage += 1;
                    tracing::info!(peer = %self.peer, "bad command: {}", e.message);
                    let tag = e.tag.as_deref().unwrap_or("*");
                    let reply = Reply::bad(format!("{} (command not understood)", e.message));
                    match self.tagged(tag, &reply).await {
                        Ok(()) => Flow::Continue,
                        Err(_) => Flow::Close,
                    }
                }
            };
            self.release_reservation().await;
            // The command and its literals are gone: their memory goes back to the budget.
            self.literal_held = None;
            if flow == Flow::Close || self.garbage >= MAX_GARBAGE {
                if self.garbage >= MAX_GARBAGE {
                    tracing::warn!(peer = %self.peer, "too many bad commands: disconnecting");
                    let _ = self.respond(Response::Bye("too many bad commands")).await;
                }
                let _ = self.conn.flush().await;
                break;
            }
        }
        self.release_reservation().await;
    }

    async fn release_reservation(&mut self) {
        let ids: Vec<i64> = self.reservations.drain(..).map(|r| r.id).collect();
        if let Err(e) = quota::release_ids(&self.ctx.db, &ids).await {
            tracing::warn!("releasing quota reservations: {e}");
        }
    }

    /// Read one whole command: its line and literals (RFC 3501 §4.3, RFC 7888), asking for
    /// synchronizing literals with a continuation request, and refusing over-long lines,
    /// literals over the limit and APPENDs over quota before their bytes are read.
    async fn read_command(&mut self) -> std::io::Result<Option<Input>> {
        let max_line = self.ctx.config.imap.max_line_length as usize;
        // Before login only small literals (a user name, a password) have any use.
        let configured = match self.state {
            State::NotAuthenticated => max_line as u64,
            _ => self.ctx.config.imap.max_literal_size,
        };
        let max_literal = configured.max(NON_SYNC_LITERAL_FLOOR);
        // The whole command (line, literals, and the lines between them) stays within this
        // (at least 4096 octets of literal and a line: lines are at least 1024 long).
        let max_command = configured.saturating_add(max_line as u64 * 4);
        self.literal_held = None;
        // Reservations left by a command refused while its literals were read.
        self.release_reservation().await;
        let mut buf = Vec::new();
        let mut lines = 0;
        loop {
            let line = match self.conn.read_line(max_line).await? {
                Line::Eof => return Ok(None),
                Line::TooLong => {
                    self.garbage += 1;
                    tracing::info!(peer = %self.peer, "line too long");
                    let tag = parse::peek_tag(&buf).unwrap_or_else(|| "*".into());
                    self.tagged(&tag, &Reply::bad("line too long")).await?;
                    return Ok(Some(Input::Handled));
                }
                Line::Line(line) => line,
            };
            buf.extend_from_slice(&line);
            lines += 1;
            if lines > 1000 || buf.len() as u64 > max_command {
                self.garbage += 1;
                // RFC 3501 §7.1.5: BYE, then the connection closes.
                self.respond(Response::Bye("command too large")).await?;
                return Ok(Some(Input::Close));
            }
            let Some(literal) = frame::literal_at_end(&line) else {
                return Ok(Some(Input::Command(buf)));
            };
            let tag = parse::peek_tag(&buf).unwrap_or_else(|| "*".into());
            // Checked before reading: each literal alone may be under the limit while the
            // command holding several of them is not.
            if literal.size > max_literal || (buf.len() as u64).saturating_add(literal.size) > max_command {
                tracing::info!(peer = %self.peer, size = literal.size, "literal too large");
                if literal.synchronizing {
                    // RFC 7889 §4: refuse before the client sends it.
                    self.tagged(&tag, &Reply::no("literal too large").code(Code::TooBig))
                        .await?;
                    return Ok(Some(Input::Handled));
                }
                // RFC 7888 §5: a non-synchronizing literal over the limit is answered with a
                // tagged response carrying TOOBIG; §4: its bytes are on their way, so the server
                // either reads and drops them (a small one) or says BYE and closes (a large one).
                self.garbage += 1;
                let refusal = Reply::bad("non-synchronizing literal too large").code(Code::TooBig);
                if literal.size <= MAX_DISCARDED_LITERAL {
                    self.discard_command(literal.size, max_literal).await?;
                    self.tagged(&tag, &refusal).await?;
                    return Ok(Some(Input::Handled));
                }
                self.tagged(&tag, &refusal).await?;
                self.respond(Response::Bye("literal too large")).await?;
                return Ok(Some(Input::Close));
            }
            if let Some(refusal) = self.metadata_literal_refusal(&buf, literal.size) {
                if !literal.synchronizing {
                    self.discard_command(literal.size, max_literal).await?;
                }
                self.tagged(&tag, &refusal).await?;
                return Ok(Some(Input::Handled));
            }
            // The memory budget shared by all connections (session/budget.rs).
            let Some(permit) = self.literal_budget.take(literal.size).await else {
                tracing::warn!(peer = %self.peer, size = literal.size, "literal refused: literal memory budget spent");
                if !literal.synchronizing {
                    self.discard_command(literal.size, max_literal).await?;
                }
                let refusal = Reply::no("server busy, try again later").code(Code::Unavailable);
                self.tagged(&tag, &refusal).await?;
                return Ok(Some(Input::Handled));
            };
            match self.literal_held.as_mut() {
                Some(held) => held.merge(permit),
                None => self.literal_held = Some(permit),
            }
            if let Some(refusal) = self.reserve_for_append(&buf, &line, literal.size).await {
                if !literal.synchronizing {
                    self.discard_command(literal.size, max_literal).await?;
                }
                self.tagged(&tag, &refusal).await?;
                return Ok(Some(Input::Handled));
            }
            if literal.synchronizing {
                // RFC 3501 §7.5: the continuation request for a synchronizing literal.
                self.respond(Response::Continue("go ahead")).await?;
                self.conn.flush().await?;
            }
            self.conn.read_exact(literal.size as usize, &mut buf).await?;
        }
    }

    /// A refused command's LITERAL+ literal of `size` bytes is on its way (RFC 7888 §4): read
    /// and drop it and the rest of the command, keeping none of it. A later synchronizing
    /// literal ends the command (the client waits for a `+` that does not come).
    async fn discard_command(&mut self, size: u64, max_literal: u64) -> std::io::Result<()> {
        let max_line = self.ctx.config.imap.max_line_length as usize;
        self.conn.skip(size).await?;
        for _ in 0..1000 {
            let Line::Line(line) = self.conn.read_line(max_line).await? else {
                return Ok(());
            };
            match frame::literal_at_end(&line) {
                Some(next) if !next.synchronizing && next.size <= max_literal => self.conn.skip(next.size).await?,
                _ => return Ok(()),
            }
        }
        Ok(())
    }

    /// When `line` announces a message literal of an APPEND, reserve its size in the user's
    /// quota, next to the reservations of the command's earlier messages (MULTIAPPEND, RFC 3502:
    /// the quota must hold them all); `Some(reply)` refuses it (RFC 9208 §4.1 OVERQUOTA), or
    /// refuses a message past [`MAX_APPEND_MESSAGES`] (RFC 5530 LIMIT).
    async fn reserve_for_append(&mut self, buf: &[u8], line: &[u8], size: u64) -> Option<Reply> {
        let user_id = self.state.user()?.id;
        let mut words = buf.splitn(3, |&b| b == b' ');
        let _tag = words.next()?;
        if !words.next()?.eq_ignore_ascii_case(b"APPEND") {
            return None;
        }
        // `tag APPEND {n}`: this literal is the mailbox name, not the message.
        let after_verb = words.next()?;
        if after_verb.starts_with(b"{") && buf.len() == line.len() {
            return None;
        }
        if self.reservations.len() >= MAX_APPEND_MESSAGES {
            tracing::info!(peer = %self.peer, user_id, "APPEND refused: more than {MAX_APPEND_MESSAGES} messages");
            return Some(Reply::no(format!("at most {MAX_APPEND_MESSAGES} messages in one APPEND")).code(Code::Limit));
        }
        // A user this process saw without a limit, none set since: the limit is not read again.
        let epoch = self.ctx.events.limits_epoch();
        let known = self.ctx.mail.known_limits();
        match quota::reserve_known(&self.ctx.db, known, epoch, user_id, size).await {
            Ok(reservation) => {
                self.reservations.push(reservation);
                None
            }
            Err(quota::QuotaError::Exceeded { .. }) => {
                tracing::info!(peer = %self.peer, user_id, size, "APPEND refused: over quota");
                Some(Reply::no("message does not fit in the quota").code(Code::OverQuota))
            }
            Err(e) if e.is_disk_full() => {
                tracing::warn!(peer = %self.peer, user_id, size, "APPEND refused: {e}");
                Some(Reply::no("Not enough disk space").code(Code::OverQuota))
            }
            Err(e) => Some(store_error(StoreError::Quota(e))),
        }
    }

    /// The one gate (RFC 3501 §6): which command may run in which state.
    fn allowed(&self, body: &CommandBody) -> bool {
        use CommandBody as C;
        match body {
            C::Capability | C::Noop | C::Logout | C::Id => true,
            C::StartTls | C::Authenticate { .. } | C::Login { .. } => matches!(self.state, State::NotAuthenticated),
            C::Select { .. }
            | C::Examine { .. }
            | C::Create { .. }
            | C::Delete { .. }
            | C::Rename { .. }
            | C::Subscribe { .. }
            | C::Unsubscribe { .. }
            | C::List { .. }
            | C::Lsub { .. }
            | C::Status { .. }
            | C::Append { .. }
            | C::Idle
            | C::Enable(_)
            | C::Compress(_)
            | C::GetQuota(_)
            | C::GetQuotaRoot(_)
            | C::Namespace
            | C::Notify(_)
            | C::GetMetadata { .. }
            | C::SetMetadata { .. } => matches!(self.state, State::Authenticated { .. } | State::Selected { .. }),
            C::Check
            | C::Close
            | C::Unselect
            | C::Expunge
            | C::UidExpunge(_)
            | C::Search { .. }
            | C::Sort { .. }
            | C::CancelUpdate(_)
            | C::Thread { .. }
            | C::Fetch { .. }
            | C::Store { .. }
            | C::Copy { .. }
            | C::Move { .. } => matches!(self.state, State::Selected { .. }),
        }
    }

    async fn execute(&mut self, command: Command) -> Flow {
        let Command { tag, body } = command;
        let name = body.name();
        if !self.allowed(&body) {
            tracing::info!(peer = %self.peer, "{name} not allowed in this state");
            let reply = Reply::bad(format!("{name} not allowed now"));
            return match self.tagged(&tag, &reply).await {
                Ok(()) => Flow::Continue,
                Err(_) => Flow::Close,
            };
        }
        // RFC 3501 §7.4.1: no EXPUNGE responses while answering FETCH, STORE or SEARCH (the
        // UID forms may have them); RFC 5256 §3: nor SORT and THREAD.
        let expunge_ok = !matches!(
            body,
            CommandBody::Fetch { uid: false, .. }
                | CommandBody::Store { uid: false, .. }
                | CommandBody::Search { uid: false, .. }
                | CommandBody::Sort { uid: false, .. }
                | CommandBody::Thread { uid: false, .. }
        );
        let mut body = body;
        self.resolve_saved(&mut body);
        let own = self.own_events(&body);
        self.trust_clock();
        let result = self.dispatch(&tag, body).await;
        self.recheck_clock();
        let reply = match result {
            Ok(reply) => reply,
            Err(Failure::Reply(reply)) => reply,
            Err(Failure::Answered) => return Flow::Continue,
            Err(Failure::Io(e)) => {
                tracing::debug!(peer = %self.peer, "{name}: connection error: {e}");
                return Flow::Close;
            }
        };
        if reply.status != Status::Ok {
            tracing::info!(peer = %self.peer, "{name}: {:?} {}", reply.status, reply.text);
        } else {
            self.remember_own(own);
        }
        if matches!(self.state, State::Logout) {
            let _ = self.tagged(&tag, &reply).await;
            return Flow::Close;
        }
        if matches!(self.state, State::Selected { .. })
            && !self.view_is_current()
            && let Err(e) = self.sync_after_command(expunge_ok, &reply).await
        {
            match e {
                Failure::Io(_) => return Flow::Close,
                Failure::Answered => {}
                Failure::Reply(r) => tracing::warn!("sync after {name}: {}", r.text),
            }
        }
        match self.tagged(&tag, &reply).await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Close,
        }
    }

    async fn dispatch(&mut self, tag: &str, body: CommandBody) -> CmdResult {
        use CommandBody as C;
        match body {
            C::Capability => self.cmd_capability().await,
            C::Noop | C::Check => Ok(Reply::ok(format!("{} completed", body.name()))),
            C::Logout => self.cmd_logout().await,
            C::StartTls => self.cmd_starttls(tag).await,
            C::Authenticate { mechanism, initial } => self.cmd_authenticate(&mechanism, initial).await,
            C::Login { user, password } => self.cmd_login(&user, &password).await,
            C::Select {
                mailbox,
                condstore,
                qresync,
            } => self.cmd_select(&mailbox, false, condstore, qresync).await,
            C::Examine {
                mailbox,
                condstore,
                qresync,
            } => self.cmd_select(&mailbox, true, condstore, qresync).await,
            C::Create { mailbox, special_use } => self.cmd_create(&mailbox, &special_use).await,
            C::Delete { mailbox } => self.cmd_delete(&mailbox).await,
            C::Rename { from, to } => self.cmd_rename(&from, &to).await,
            C::Subscribe { mailbox } => self.cmd_subscribe(&mailbox, true).await,
            C::Unsubscribe { mailbox } => self.cmd_subscribe(&mailbox, false).await,
            C::List {
                reference,
                patterns,
                options,
            } => self.cmd_list(&reference, &patterns, &options).await,
            C::Lsub { reference, pattern } => self.cmd_lsub(&reference, &pattern).await,
            C::Status { mailbox, items } => self.cmd_status(&mailbox, &items).await,
            C::Append { mailbox, messages } => self.cmd_append(&mailbox, messages).await,
            C::Close => self.cmd_close(true).await,
            C::Unselect => self.cmd_close(false).await,
            C::Expunge => self.cmd_expunge(None).await,
            C::UidExpunge(set) => self.cmd_expunge(Some(set)).await,
            C::Search {
                uid,
                charset,
                key,
                ret,
                update_fetch,
            } => {
                let result = self
                    .cmd_search(tag, uid, charset.as_deref(), &key, ret, update_fetch)
                    .await;
                self.forget_failed_save(ret.is_some_and(|r| r.save), &result);
                result
            }
            C::Sort {
                uid,
                criteria,
                charset,
                key,
                ret,
                update_fetch,
            } => {
                let result = self
                    .cmd_sort(tag, uid, &criteria, &charset, &key, ret, update_fetch)
                    .await;
                // RFC 5182 §2.4: SORT's SAVE follows the same rule.
                self.forget_failed_save(ret.is_some_and(|r| r.save), &result);
                result
            }
            C::CancelUpdate(tags) => self.cmd_cancel_update(&tags),
            C::Thread {
                uid,
                algorithm,
                charset,
                key,
            } => self.cmd_thread(uid, algorithm, &charset, &key).await,
            C::Fetch {
                uid,
                set,
                items,
                changed_since,
                vanished,
            } => self.cmd_fetch(uid, &set, items, changed_since, vanished).await,
            C::Store {
                uid,
                set,
                op,
                silent,
                flags,
                unchanged_since,
            } => self.cmd_store(uid, &set, op, silent, &flags, unchanged_since).await,
            C::Copy { uid, set, mailbox } => self.cmd_copy(uid, &set, &mailbox, false).await,
            C::Move { uid, set, mailbox } => self.cmd_copy(uid, &set, &mailbox, true).await,
            C::Idle => self.cmd_idle().await,
            C::Enable(caps) => self.cmd_enable(&caps).await,
            C::Compress(mechanism) => self.cmd_compress(tag, &mechanism).await,
            C::GetQuota(root) => self.cmd_getquota(&root).await,
            C::GetQuotaRoot(mailbox) => self.cmd_getquotaroot(&mailbox).await,
            C::Namespace => self.cmd_namespace().await,
            C::Id => self.cmd_id().await,
            C::Notify(set) => self.cmd_notify(set).await,
            C::GetMetadata {
                mailbox,
                options,
                entries,
            } => self.cmd_getmetadata(&mailbox, options, &entries).await,
            C::SetMetadata { mailbox, entries } => self.cmd_setmetadata(&mailbox, entries).await,
        }
    }

    /// The user (for commands the gate allows only after login).
    pub fn user(&self) -> Result<AuthedUser, Failure> {
        self.state
            .user()
            .cloned()
            .ok_or_else(|| Failure::Reply(Reply::bad("not authenticated")))
    }

    /// The selected mailbox (for commands the gate allows only in the selected state).
    pub fn selected(&self) -> Result<&Selected, Failure> {
        match &self.state {
            State::Selected { selected, .. } => Ok(selected),
            _ => Err(Failure::Reply(Reply::bad("no mailbox selected"))),
        }
    }

    /// The (sequence number, UID) pairs a set names, in order. Sequence numbers past the end
    /// are an error (RFC 3501 §9 seq-number); UIDs that do not exist are skipped.
    pub fn resolve(&self, uid: bool, set: &SequenceSet) -> Result<Vec<(u32, u32)>, Failure> {
        let selected = self.selected()?;
        let count = selected.uids.len() as u32;
        if uid {
            let ranges = set.ranges(selected.max_uid());
            return Ok(selected
                .uids
                .iter()
                .enumerate()
                .filter(|(_, u)| ranges.contains(**u))
                .map(|(i, u)| (i as u32 + 1, *u))
                .collect());
        }
        if count == 0 || !set.within(count) {
            return Err(Failure::Reply(Reply::bad("no such message sequence number")));
        }
        let ranges = set.ranges(count);
        Ok(selected
            .uids
            .iter()
            .enumerate()
            .filter(|(i, _)| ranges.contains(*i as u32 + 1))
            .map(|(i, u)| (i as u32 + 1, *u))
            .collect())
    }

    pub fn selected_mut(&mut self) -> Result<&mut Selected, Failure> {
        match &mut self.state {
            State::Selected { selected, .. } => Ok(selected),
            _ => Err(Failure::Reply(Reply::bad("no mailbox selected"))),
        }
    }
}

/// What reading a command gave.
enum Input {
    Command(Vec<u8>),
    /// Refused and answered already (line too long, literal too large, over quota).
    Handled,
    Close,
}
