//! The command parser (RFC 3501 §9 grammar plus the extensions tinydc offers). No I/O: it takes
//! one whole command (the line and any literals, as the connection loop framed them, see
//! [`super::frame`]) and answers a [`Command`] or a [`ParseError`] with the text for `BAD`.
//!
//! This file holds the entry points and [`CommandBody`], and reads the commands whose
//! arguments are one or two plain words; the rest is split by command, beside `crate::cmd`:
//! `primitives` (atoms, strings, literals, numbers, flags, sequence sets, dates), `auth`
//! (AUTHENTICATE, LOGIN), `mailbox` (SELECT/EXAMINE, CREATE, LIST, LSUB, STATUS), `append`,
//! `fetch` (items and sections), `search` (keys), `store`, `copy` (COPY, MOVE), `id` and
//! `metadata` (GETMETADATA, SETMETADATA).

use chrono::{DateTime, FixedOffset};

use super::sequence::SequenceSet;

mod append;
mod auth;
mod copy;
mod fetch;
mod id;
mod mailbox;
mod metadata;
mod notify;
mod primitives;
mod search;
mod sort;
mod store;

pub use fetch::{BinarySection, FetchItem, Section, SectionText, part_spec, section_spec};
pub use mailbox::{ListOptions, QresyncParams, StatusItem};
pub use metadata::MetadataOptions;
pub use notify::{EventGroup, NotifyEvent, NotifyFilter, NotifySet};
use primitives::{PResult, Parser};
pub use primitives::{parse_date, parse_date_time};
pub use search::{SearchKey, SearchReturn, asks_to_save};
pub use sort::{SortCriterion, SortKey, ThreadAlgorithm};
pub use store::StoreOp;

/// A parsed command: its tag and what it asks.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub tag: String,
    pub body: CommandBody,
}

/// Why a command could not be read. `tag` is known when the line started with one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub tag: Option<String>,
    pub message: String,
}

/// One message of an APPEND: its flags, its internal date and its bytes (RFC 3502 §6.3.11
/// `append-message`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendMessage {
    pub flags: Vec<String>,
    pub date: Option<DateTime<FixedOffset>>,
    /// The message literal; empty when the message is given by `catenate`.
    pub message: Vec<u8>,
    /// `CATENATE (...)` (RFC 4469 §5): the parts the message is put together from.
    pub catenate: Option<Vec<CatPart>>,
}

/// One part of a CATENATE (RFC 4469 §5: `cat-part = text-literal / url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatPart {
    /// `TEXT literal`: these bytes.
    Text(Vec<u8>),
    /// `URL astring`: an IMAP URL (RFC 5092) to a message or a section of one.
    Url(String),
}

/// The parts one CATENATE may have: each URL reads a stored message, so they are bounded.
pub const MAX_CAT_PARTS: usize = 100;

/// What a command asks.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandBody {
    Capability,
    Noop,
    Logout,
    StartTls,
    /// `initial` is the SASL-IR (RFC 4959) text as sent (base64, or `=` for empty).
    Authenticate {
        mechanism: String,
        initial: Option<String>,
    },
    Login {
        user: String,
        password: String,
    },
    Select {
        mailbox: String,
        condstore: bool,
        qresync: Option<QresyncParams>,
    },
    Examine {
        mailbox: String,
        condstore: bool,
        qresync: Option<QresyncParams>,
    },
    /// `use_` holds RFC 6154 §5 CREATE-PARAMS USE attributes.
    Create {
        mailbox: String,
        special_use: Vec<String>,
    },
    Delete {
        mailbox: String,
    },
    Rename {
        from: String,
        to: String,
    },
    Subscribe {
        mailbox: String,
    },
    Unsubscribe {
        mailbox: String,
    },
    /// LIST, extended (RFC 5258 §3) or not: one pattern or several, with the selection and
    /// return options.
    List {
        reference: String,
        patterns: Vec<String>,
        options: ListOptions,
    },
    Lsub {
        reference: String,
        pattern: String,
    },
    Status {
        mailbox: String,
        items: Vec<StatusItem>,
    },
    /// One message, or several (MULTIAPPEND, RFC 3502), in command order.
    Append {
        mailbox: String,
        messages: Vec<AppendMessage>,
    },
    Check,
    Close,
    Unselect,
    Expunge,
    UidExpunge(SequenceSet),
    Search {
        uid: bool,
        charset: Option<String>,
        key: SearchKey,
        /// RFC 4731: `RETURN (...)` given, answered with ESEARCH.
        ret: Option<SearchReturn>,
        /// RFC 5465 §7: `UPDATE (fetch-att ...)`, fetched for new messages joining the result.
        update_fetch: Vec<FetchItem>,
    },
    /// RFC 5256 §3 (RFC 5957 for DISPLAYFROM/DISPLAYTO).
    Sort {
        uid: bool,
        criteria: Vec<SortCriterion>,
        charset: String,
        key: SearchKey,
        /// RFC 5267 §3 (ESORT) and §4 (CONTEXT=SORT): `RETURN (...)` given, answered with
        /// ESEARCH in sort order.
        ret: Option<SearchReturn>,
        /// RFC 5465 §7, as for `Search`.
        update_fetch: Vec<FetchItem>,
    },
    /// RFC 5267 §4.3.5: stop the updates of the searches with these tags.
    CancelUpdate(Vec<String>),
    /// RFC 5256 §3.
    Thread {
        uid: bool,
        algorithm: ThreadAlgorithm,
        charset: String,
        key: SearchKey,
    },
    Fetch {
        uid: bool,
        set: SequenceSet,
        items: Vec<FetchItem>,
        changed_since: Option<u64>,
        /// RFC 7162 §3.2.6: the VANISHED modifier (UID FETCH with CHANGEDSINCE only).
        vanished: bool,
    },
    Store {
        uid: bool,
        set: SequenceSet,
        op: StoreOp,
        silent: bool,
        flags: Vec<String>,
        unchanged_since: Option<u64>,
    },
    Copy {
        uid: bool,
        set: SequenceSet,
        mailbox: String,
    },
    Move {
        uid: bool,
        set: SequenceSet,
        mailbox: String,
    },
    Idle,
    Enable(Vec<String>),
    Compress(String),
    GetQuota(String),
    GetQuotaRoot(String),
    Namespace,
    Id,
    /// RFC 5465: `NOTIFY SET ...`, or `NOTIFY NONE` (`None`).
    Notify(Option<NotifySet>),
    /// RFC 5464 §4.2: entry names checked and lower-cased (`shared::metadata::entry_name`).
    GetMetadata {
        mailbox: String,
        options: MetadataOptions,
        entries: Vec<String>,
    },
    /// RFC 5464 §4.3: each entry's new value, None (NIL) to remove it; never a root name.
    SetMetadata {
        mailbox: String,
        entries: Vec<(String, Option<Vec<u8>>)>,
    },
}

impl CommandBody {
    /// The command's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            CommandBody::Capability => "CAPABILITY",
            CommandBody::Noop => "NOOP",
            CommandBody::Logout => "LOGOUT",
            CommandBody::StartTls => "STARTTLS",
            CommandBody::Authenticate { .. } => "AUTHENTICATE",
            CommandBody::Login { .. } => "LOGIN",
            CommandBody::Select { .. } => "SELECT",
            CommandBody::Examine { .. } => "EXAMINE",
            CommandBody::Create { .. } => "CREATE",
            CommandBody::Delete { .. } => "DELETE",
            CommandBody::Rename { .. } => "RENAME",
            CommandBody::Subscribe { .. } => "SUBSCRIBE",
            CommandBody::Unsubscribe { .. } => "UNSUBSCRIBE",
            CommandBody::List { .. } => "LIST",
            CommandBody::Lsub { .. } => "LSUB",
            CommandBody::Status { .. } => "STATUS",
            CommandBody::Append { .. } => "APPEND",
            CommandBody::Check => "CHECK",
            CommandBody::Close => "CLOSE",
            CommandBody::Unselect => "UNSELECT",
            CommandBody::Expunge => "EXPUNGE",
            CommandBody::UidExpunge(_) => "UID EXPUNGE",
            CommandBody::Search { .. } => "SEARCH",
            CommandBody::Sort { .. } => "SORT",
            CommandBody::Thread { .. } => "THREAD",
            CommandBody::CancelUpdate(_) => "CANCELUPDATE",
            CommandBody::Fetch { .. } => "FETCH",
            CommandBody::Store { .. } => "STORE",
            CommandBody::Copy { .. } => "COPY",
            CommandBody::Move { .. } => "MOVE",
            CommandBody::Idle => "IDLE",
            CommandBody::Enable(_) => "ENABLE",
            CommandBody::Compress(_) => "COMPRESS",
            CommandBody::GetQuota(_) => "GETQUOTA",
            CommandBody::GetQuotaRoot(_) => "GETQUOTAROOT",
            CommandBody::Namespace => "NAMESPACE",
            CommandBody::Id => "ID",
            CommandBody::Notify(_) => "NOTIFY",
            CommandBody::GetMetadata { .. } => "GETMETADATA",
            CommandBody::SetMetadata { .. } => "SETMETADATA",
        }
    }
}

/// Parse one whole command (line with CRLF, literals inline).
pub fn parse_command(input: &[u8]) -> Result<Command, ParseError> {
    let mut p = Parser {
        input,
        pos: 0,
        depth: 0,
    };
    let tag = p.tag().map_err(|message| ParseError { tag: None, message })?;
    let body = p
        .command_body()
        .and_then(|body| {
            p.crlf()?;
            Ok(body)
        })
        .map_err(|message| ParseError {
            tag: Some(tag.clone()),
            message,
        })?;
    Ok(Command { tag, body })
}

/// The tag at the start of a line, if there is a syntactically valid one.
pub fn peek_tag(input: &[u8]) -> Option<String> {
    Parser {
        input,
        pos: 0,
        depth: 0,
    }
    .tag()
    .ok()
}

impl<'a> Parser<'a> {
    fn command_body(&mut self) -> PResult<CommandBody> {
        let name = self.keyword()?;
        let body = match name.as_str() {
            "CAPABILITY" => CommandBody::Capability,
            "NOOP" => CommandBody::Noop,
            "LOGOUT" => CommandBody::Logout,
            "STARTTLS" => CommandBody::StartTls,
            "AUTHENTICATE" => self.authenticate()?,
            "LOGIN" => self.login()?,
            "SELECT" | "EXAMINE" => self.select(name.as_str())?,
            "CREATE" => self.create()?,
            "DELETE" => {
                self.sp()?;
                CommandBody::Delete {
                    mailbox: self.mailbox()?,
                }
            }
            "RENAME" => {
                self.sp()?;
                let from = self.mailbox()?;
                self.sp()?;
                let to = self.mailbox()?;
                CommandBody::Rename { from, to }
            }
            "SUBSCRIBE" => {
                self.sp()?;
                CommandBody::Subscribe {
                    mailbox: self.mailbox()?,
                }
            }
            "UNSUBSCRIBE" => {
                self.sp()?;
                CommandBody::Unsubscribe {
                    mailbox: self.mailbox()?,
                }
            }
            "LIST" => self.list()?,
            "LSUB" => self.lsub()?,
            "STATUS" => self.status()?,
            "APPEND" => self.append()?,
            "CHECK" => CommandBody::Check,
            "CLOSE" => CommandBody::Close,
            "UNSELECT" => CommandBody::Unselect,
            "EXPUNGE" => CommandBody::Expunge,
            "SEARCH" => self.search(false)?,
            "SORT" => self.sort(false)?,
            "THREAD" => self.thread(false)?,
            "CANCELUPDATE" => self.cancel_update()?,
            "FETCH" => self.fetch(false)?,
            "STORE" => self.store(false)?,
            "COPY" => self.copy_move(false, false)?,
            "MOVE" => self.copy_move(false, true)?,
            "UID" => {
                self.sp()?;
                match self.keyword()?.as_str() {
                    "FETCH" => self.fetch(true)?,
                    "STORE" => self.store(true)?,
                    "SEARCH" => self.search(true)?,
                    "SORT" => self.sort(true)?,
                    "THREAD" => self.thread(true)?,
                    "COPY" => self.copy_move(true, false)?,
                    "MOVE" => self.copy_move(true, true)?,
                    "EXPUNGE" => {
                        self.sp()?;
                        CommandBody::UidExpunge(self.sequence_set()?)
                    }
                    other => return Err(format!("unknown UID command {other}")),
                }
            }
            "IDLE" => CommandBody::Idle,
            "ENABLE" => {
                let mut caps = Vec::new();
                while self.try_sp() {
                    caps.push(self.atom()?.to_ascii_uppercase());
                }
                if caps.is_empty() {
                    return Err("ENABLE needs a capability".into());
                }
                CommandBody::Enable(caps)
            }
            "COMPRESS" => {
                self.sp()?;
                CommandBody::Compress(self.atom()?.to_ascii_uppercase())
            }
            "GETQUOTA" => {
                self.sp()?;
                CommandBody::GetQuota(self.astring()?)
            }
            "GETQUOTAROOT" => {
                self.sp()?;
                CommandBody::GetQuotaRoot(self.mailbox()?)
            }
            "NAMESPACE" => CommandBody::Namespace,
            "ID" => self.id()?,
            "NOTIFY" => self.notify()?,
            "GETMETADATA" => self.getmetadata()?,
            "SETMETADATA" => self.setmetadata()?,
            other => return Err(format!("unknown command {other}")),
        };
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> CommandBody {
        parse_command(s.as_bytes())
            .unwrap_or_else(|e| panic!("{s:?}: {e:?}"))
            .body
    }

    #[test]
    fn simple_commands() {
        assert_eq!(parse("a CAPABILITY\r\n"), CommandBody::Capability);
        assert_eq!(parse("a noop\r\n"), CommandBody::Noop);
        assert_eq!(
            parse("a LOGIN alice@example.test \"p a\\\"ss\"\r\n"),
            CommandBody::Login {
                user: "alice@example.test".into(),
                password: "p a\"ss".into()
            }
        );
        assert_eq!(
            parse("a LOGIN {5}\r\nalice {2+}\r\npw\r\n"),
            CommandBody::Login {
                user: "alice".into(),
                password: "pw".into()
            }
        );
        assert_eq!(
            parse("a AUTHENTICATE PLAIN AGEAYg==\r\n"),
            CommandBody::Authenticate {
                mechanism: "PLAIN".into(),
                initial: Some("AGEAYg==".into())
            }
        );
        assert_eq!(parse("a UID EXPUNGE 1:3\r\n").name(), "UID EXPUNGE");
        assert_eq!(parse("a ENABLE CONDSTORE UTF8=ACCEPT\r\n").name(), "ENABLE");
        assert_eq!(parse("a COMPRESS DEFLATE\r\n"), CommandBody::Compress("DEFLATE".into()));
        assert_eq!(parse("a ID (\"name\" \"tb\" \"version\" NIL)\r\n"), CommandBody::Id);
        assert_eq!(parse("a ID NIL\r\n"), CommandBody::Id);
    }

    #[test]
    fn create_with_use_and_list_options() {
        assert_eq!(
            parse("a CREATE Sent2 (USE (\\Sent))\r\n"),
            CommandBody::Create {
                mailbox: "Sent2".into(),
                special_use: vec!["\\Sent".into()]
            }
        );
        assert_eq!(
            parse("a LIST (SPECIAL-USE) \"\" *\r\n"),
            CommandBody::List {
                reference: "".into(),
                patterns: vec!["*".into()],
                options: ListOptions {
                    special_use: true,
                    ..ListOptions::default()
                }
            }
        );
        assert!(matches!(
            parse("a LIST \"\" % RETURN (SPECIAL-USE)\r\n"),
            CommandBody::List { .. }
        ));
    }

    /// RFC 5258 §6 and RFC 5819 §4: selection options, several patterns, return options with
    /// STATUS; what the grammar does not allow is BAD.
    #[test]
    fn list_extended() {
        let CommandBody::List {
            reference,
            patterns,
            options,
        } = parse(
            "a LIST (SUBSCRIBED RECURSIVEMATCH REMOTE) \"\" (\"INBOX\" Sent* {3+}\r\nA/%) RETURN (CHILDREN STATUS (MESSAGES SIZE DELETED) SPECIAL-USE)\r\n",
        )
        else {
            panic!()
        };
        assert_eq!(reference, "");
        assert_eq!(patterns, vec!["INBOX", "Sent*", "A/%"]);
        assert!(options.subscribed && options.recursive_match && options.return_subscribed);
        assert_eq!(
            options.status,
            Some(vec![StatusItem::Messages, StatusItem::Size, StatusItem::Deleted])
        );
        let CommandBody::List { options, .. } = parse("a LIST () \"\" % RETURN ()\r\n") else {
            panic!()
        };
        assert_eq!(options, ListOptions::default());
        for bad in [
            "a LIST (RECURSIVEMATCH) \"\" %\r\n",
            "a LIST (REMOTE RECURSIVEMATCH) \"\" %\r\n",
            "a LIST (FOO) \"\" %\r\n",
            "a LIST \"\" % RETURN (FOO)\r\n",
            "a LIST \"\" () \r\n",
            "a LIST \"\" (a b\r\n",
            "a LIST \"\" % RETURN (STATUS ())\r\n",
            "a LIST \"\" % RETURN (STATUS (MESSAGES) STATUS (UNSEEN))\r\n",
            "a LIST \"\" % RETURN CHILDREN\r\n",
        ] {
            assert!(parse_command(bad.as_bytes()).is_err(), "{bad}");
        }
        let many = format!("a LIST \"\" ({})\r\n", vec!["x"; 65].join(" "));
        assert!(parse_command(many.as_bytes()).is_err());
    }

    #[test]
    fn fetch_items() {
        let CommandBody::Fetch { uid, items, .. } =
            parse("a UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Subject)])\r\n")
        else {
            panic!()
        };
        assert!(uid);
        assert_eq!(items.len(), 4);
        let FetchItem::Section(s) = &items[3] else { panic!() };
        assert!(s.peek);
        assert_eq!(s.spec(), "HEADER.FIELDS (From To Subject)");
        let CommandBody::Fetch { items, .. } = parse("a FETCH 2 BODY[1.2.MIME]<10.20>\r\n") else {
            panic!()
        };
        let FetchItem::Section(s) = &items[0] else { panic!() };
        assert_eq!(s.part, vec![1, 2]);
        assert_eq!(s.partial, Some((10, 20)));
        assert_eq!(s.spec(), "1.2.MIME");
        // A literal8 stands only where RFC 3516 §4.2 puts it, not as a mailbox name.
        assert!(parse_command(b"a SELECT ~{5}\r\nINBOX\r\n").is_err());
        assert!(parse_command(b"a SELECT {5}\r\nINBOX\r\n").is_ok());
        // section-spec = section-msgtext / (section-part ["." section-text]) (RFC 3501 §9).
        for bad in [
            "a FETCH 1 BODY[1.]\r\n",
            "a FETCH 1 BODY[1HEADER]\r\n",
            "a FETCH 1 BODY[MIME]\r\n",
            "a FETCH 1 BODY[0]\r\n",
            "a FETCH 1 BODY[1.0]\r\n",
        ] {
            assert!(parse_command(bad.as_bytes()).is_err(), "{bad}");
        }
        let CommandBody::Fetch { items, .. } = parse("a FETCH 2 (BODY[3.TEXT] BODY[])\r\n") else {
            panic!()
        };
        let (FetchItem::Section(text), FetchItem::Section(whole)) = (&items[0], &items[1]) else {
            panic!()
        };
        assert_eq!((text.part.as_slice(), text.spec().as_str()), (&[3][..], "3.TEXT"));
        assert_eq!(whole.spec(), "");
        assert!(matches!(
            parse("a FETCH 1:* (FLAGS) (CHANGEDSINCE 12)\r\n"),
            CommandBody::Fetch {
                changed_since: Some(12),
                ..
            }
        ));
        assert!(matches!(
            parse("a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12 VANISHED)\r\n"),
            CommandBody::Fetch {
                changed_since: Some(12),
                vanished: true,
                ..
            }
        ));
        // RFC 7162 §3.2.6: VANISHED only in UID FETCH with CHANGEDSINCE.
        for bad in [
            "a FETCH 1:* (FLAGS) (CHANGEDSINCE 12 VANISHED)\r\n",
            "a UID FETCH 1:* (FLAGS) (VANISHED)\r\n",
            "a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 CHANGEDSINCE 2)\r\n",
        ] {
            assert!(parse_command(bad.as_bytes()).is_err(), "{bad}");
        }
        let CommandBody::Fetch { items, .. } = parse("a FETCH 1 FULL\r\n") else {
            panic!()
        };
        assert_eq!(items.len(), 5);
    }

    #[test]
    fn store_and_search() {
        assert!(matches!(
            parse("a UID STORE 1,3 (UNCHANGEDSINCE 5) +FLAGS.SILENT (\\Seen $Label1)\r\n"),
            CommandBody::Store {
                uid: true,
                op: StoreOp::Add,
                silent: true,
                unchanged_since: Some(5),
                ..
            }
        ));
        let CommandBody::Search { key, charset, .. } =
            parse("a SEARCH CHARSET UTF-8 OR FROM alice (SUBJECT {5}\r\ncafé) NOT 1:3 SINCE 1-Feb-2020\r\n")
        else {
            panic!()
        };
        assert_eq!(charset.as_deref(), Some("UTF-8"));
        let SearchKey::And(keys) = key else { panic!() };
        assert_eq!(keys.len(), 3);
        assert!(parse_command(b"a SEARCH NOT\r\n").is_err());
        let deep = format!("a SEARCH {}ALL{}\r\n", "(".repeat(100), ")".repeat(100));
        assert!(parse_command(deep.as_bytes()).is_err());
    }

    #[test]
    fn sort_and_thread() {
        let CommandBody::Sort {
            uid,
            criteria,
            charset,
            key,
            ret: None,
            ..
        } = parse("a UID SORT (REVERSE DATE subject DISPLAYFROM) utf-8 UNDELETED SINCE 1-Feb-2020\r\n")
        else {
            panic!()
        };
        assert!(uid);
        assert_eq!(charset, "UTF-8");
        assert_eq!(
            criteria,
            vec![
                SortCriterion {
                    key: SortKey::Date,
                    reverse: true
                },
                SortCriterion {
                    key: SortKey::Subject,
                    reverse: false
                },
                SortCriterion {
                    key: SortKey::DisplayFrom,
                    reverse: false
                },
            ]
        );
        assert!(matches!(key, SearchKey::And(k) if k.len() == 2));
        assert!(matches!(
            parse("a THREAD REFERENCES US-ASCII ALL\r\n"),
            CommandBody::Thread {
                uid: false,
                algorithm: ThreadAlgorithm::References,
                ..
            }
        ));
        // RFC 5256 §5: the charset is required, the criteria list may not be empty.
        assert!(parse_command(b"a SORT (DATE) ALL\r\n").is_err());
        assert!(parse_command(b"a SORT () UTF-8 ALL\r\n").is_err());
        assert!(parse_command(b"a SORT (REVERSE) UTF-8 ALL\r\n").is_err());
        assert!(parse_command(b"a THREAD JWZ UTF-8 ALL\r\n").is_err());
        let many = format!("a SORT ({}) UTF-8 ALL\r\n", vec!["DATE"; 40].join(" "));
        assert!(parse_command(many.as_bytes()).is_err());
    }

    #[test]
    fn return_options_of_rfc_5267() {
        let ret = |line: &str| match parse(line) {
            CommandBody::Search { ret, .. } | CommandBody::Sort { ret, .. } => ret.unwrap(),
            other => panic!("{other:?}"),
        };
        // §3.3: `RETURN ()` on SORT is ALL; §4.2: CONTEXT is only a hint.
        assert!(ret("E01 UID SORT RETURN () (REVERSE DATE) UTF-8 UNDELETED UNKEYWORD $Junk\r\n").all);
        assert!(ret("A01 SEARCH RETURN (CONTEXT) ALL\r\n").all);
        let r = ret("A02 UID SEARCH RETURN (COUNT PARTIAL 23500:24000) UNDELETED UNKEYWORD $Junk\r\n");
        assert_eq!((r.count, r.all, r.partial), (true, false, Some((23500, 24000))));
        // §4.4: "A range 500:400 is the same as 400:500".
        assert_eq!(
            ret("a SEARCH RETURN (PARTIAL 500:400) ALL\r\n").partial,
            Some((400, 500))
        );
        let r = ret("B01 UID SORT RETURN (UPDATE COUNT) (SUBJECT) UTF-8 KEYWORD $Junk\r\n");
        assert!(r.update && r.count && !r.all);
        // RFC 5465 §7's example and §8 `modifier-update`: UPDATE with fetch-atts.
        let fetch = |line: &str| match parse(line) {
            CommandBody::Search { update_fetch, .. } | CommandBody::Sort { update_fetch, .. } => update_fetch,
            other => panic!("{other:?}"),
        };
        let line = "a00 SEARCH RETURN (COUNT UPDATE (UID BODY[HEADER.FIELDS (TO FROM SUBJECT)])) FROM \"boss\"\r\n";
        let r = ret(line);
        assert!(r.update && r.count);
        let atts = fetch(line);
        assert_eq!(atts.len(), 2);
        assert_eq!(atts[0], FetchItem::Uid);
        assert_eq!(
            fetch("a SORT RETURN (UPDATE (FLAGS) ALL) (DATE) UTF-8 ALL\r\n").len(),
            1
        );
        assert!(fetch("a SEARCH RETURN (UPDATE) ALL\r\n").is_empty());
        assert!(parse_command(b"a SEARCH RETURN (UPDATE ()) ALL\r\n").is_err());
        assert!(parse_command(b"a SEARCH RETURN (UPDATE (NOSUCH)) ALL\r\n").is_err());
        // §4.4: one PARTIAL or ALL at most; the range is two non-zero numbers, no `*`.
        for bad in [
            "a SEARCH RETURN (PARTIAL 1:5 ALL) ALL\r\n",
            "a SEARCH RETURN (PARTIAL 1:5 PARTIAL 6:9) ALL\r\n",
            "a SEARCH RETURN (PARTIAL 0:5) ALL\r\n",
            "a SEARCH RETURN (PARTIAL 1:*) ALL\r\n",
            "a SEARCH RETURN (PARTIAL 5) ALL\r\n",
            "a SORT RETURN (NOSUCH) (DATE) UTF-8 ALL\r\n",
        ] {
            assert!(parse_command(bad.as_bytes()).is_err(), "{bad}");
        }
        assert_eq!(
            parse("B04 CANCELUPDATE \"B01\" \"B02\"\r\n"),
            CommandBody::CancelUpdate(vec!["B01".into(), "B02".into()])
        );
        assert!(parse_command(b"B04 CANCELUPDATE B01\r\n").is_err());
        assert!(parse_command(b"B04 CANCELUPDATE\r\n").is_err());
    }

    #[test]
    fn append_forms() {
        let CommandBody::Append { messages, .. } =
            parse("a APPEND Sent (\\Seen) \"24-Nov-2026 10:00:00 +0100\" {5+}\r\nhello\r\n")
        else {
            panic!()
        };
        let [
            AppendMessage {
                flags, date, message, ..
            },
        ] = &messages[..]
        else {
            panic!("one message: {messages:?}")
        };
        assert_eq!(flags, &vec!["\\Seen"]);
        assert_eq!(date.unwrap().to_rfc3339(), "2026-11-24T10:00:00+01:00");
        assert_eq!(message, b"hello");
        assert!(parse_date_time(b"24-Nov-2026 10:00:00 +0\xc3\xa90").is_none());
        assert!(matches!(
            parse("a APPEND INBOX UTF8 (~{2}\r\nhi)\r\n"),
            CommandBody::Append { .. }
        ));
    }

    #[test]
    fn catenate_forms() {
        // RFC 4469 §5's example.
        let CommandBody::Append { messages, .. } = parse(
            "A003 APPEND Drafts (\\Seen \\Draft $MDNSent) CATENATE (URL \"/Drafts;UIDVALIDITY=385759045/;UID=20/;section=HEADER\" TEXT {4}\r\n\r\n-- URL \"/Drafts;UIDVALIDITY=385759045/;UID=20/;section=1.MIME\")\r\n",
        ) else {
            panic!()
        };
        let [m] = &messages[..] else { panic!() };
        assert_eq!(m.flags.len(), 3);
        assert_eq!(
            m.catenate.as_deref(),
            Some(
                &[
                    CatPart::Url("/Drafts;UIDVALIDITY=385759045/;UID=20/;section=HEADER".into()),
                    CatPart::Text(b"\r\n--".to_vec()),
                    CatPart::Url("/Drafts;UIDVALIDITY=385759045/;UID=20/;section=1.MIME".into()),
                ][..]
            )
        );
        assert!(parse_command(b"a APPEND INBOX CATENATE ()\r\n").is_err());
        assert!(parse_command(b"a APPEND INBOX CATENATE (FOO x)\r\n").is_err());
        let many = " URL x".repeat(MAX_CAT_PARTS + 1);
        assert!(parse_command(format!("a APPEND INBOX CATENATE ({})\r\n", &many[1..]).as_bytes()).is_err());
        assert_eq!(section_spec(b"1.MIME"), Ok((vec![1], SectionText::Mime)));
        assert_eq!(
            section_spec(b"HEADER.FIELDS (From)"),
            Ok((vec![], SectionText::HeaderFields(vec!["From".into()])))
        );
        assert!(section_spec(b"1]<0.1>").is_err());
    }

    #[test]
    fn multiappend_forms() {
        // RFC 3502 §6.3.11's example, with LITERAL+ for the second message.
        let CommandBody::Append { mailbox, messages } = parse(
            "A003 APPEND saved-messages (\\Seen) {4}\r\nabcd (\\Seen) \"7-Feb-1994 22:43:04 -0800\" {3+}\r\nxyz UTF8 (~{2}\r\nhi)\r\n",
        ) else {
            panic!()
        };
        assert_eq!(mailbox, "saved-messages");
        let bodies: Vec<&[u8]> = messages.iter().map(|m| &m.message[..]).collect();
        assert_eq!(bodies, vec![&b"abcd"[..], b"xyz", b"hi"]);
        assert!(messages[0].date.is_none());
        assert!(messages[1].date.is_some());
        assert!(messages[2].flags.is_empty());
        // A bad date in the second message refuses the whole command (RFC 3502 §3).
        assert!(parse_command(b"a APPEND INBOX {1}\r\nx \"31-Feb-2026 10:00:00 +0000\" {1}\r\ny\r\n").is_err());
        // Something that is not a message after a message.
        assert!(parse_command(b"a APPEND INBOX {1}\r\nx (\\Seen)\r\n").is_err());
        assert!(parse_command(b"a APPEND INBOX {1}\r\nx  {1}\r\ny\r\n").is_err());
    }

    #[test]
    fn errors_keep_the_tag() {
        let e = parse_command(b"x1 FROB\r\n").unwrap_err();
        assert_eq!(e.tag.as_deref(), Some("x1"));
        assert!(parse_command(b"\r\n").unwrap_err().tag.is_none());
        assert!(parse_command(b"a LOGIN {10}\r\nab\r\n").is_err());
        assert!(parse_command(b"a FETCH 0 FLAGS\r\n").is_err());
    }

    #[test]
    fn select_qresync_parameters() {
        let CommandBody::Select {
            qresync: Some(q),
            condstore: true,
            ..
        } = parse(
            "a SELECT INBOX (CONDSTORE QRESYNC (67890007 20050715194045000 41,43:211,214:541 (1:3,5 41,43,45,50)))\r\n",
        )
        else {
            panic!()
        };
        assert_eq!((q.uidvalidity, q.modseq), (67890007, 20050715194045000));
        assert!(q.known_uids.is_some());
        assert_eq!(q.seq_match, vec![(1, 41), (2, 43), (3, 45), (5, 50)]);
        let CommandBody::Examine { qresync: Some(q), .. } = parse("a EXAMINE INBOX (QRESYNC (1 2))\r\n") else {
            panic!()
        };
        assert!(q.known_uids.is_none() && q.seq_match.is_empty());
        let CommandBody::Select { qresync: Some(q), .. } = parse("a SELECT INBOX (QRESYNC (1 2 (1 7)))\r\n") else {
            panic!()
        };
        assert_eq!(q.seq_match, vec![(1, 7)]);
        for bad in [
            "a SELECT INBOX (QRESYNC (0 2))\r\n",
            "a SELECT INBOX (QRESYNC (1 2 1:*))\r\n",
            "a SELECT INBOX (QRESYNC (1 2 1:9 (1:2 5)))\r\n",
            "a SELECT INBOX (QRESYNC (1 2 1:9 (1:* 1:*)))\r\n",
            "a SELECT INBOX (QRESYNC (1 2) QRESYNC (1 2))\r\n",
            "a SELECT INBOX (QRESYNC (1 9223372036854775808))\r\n",
        ] {
            assert!(parse_command(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
