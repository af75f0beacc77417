//! Responses as types (RFC 3501 §7): status responses with their response codes, and the
//! untagged data lines that carry no message data, written to the wire form in this one place.
//! Commands build a [`Response`] (or a `session::Reply`, which becomes a tagged one) instead of
//! formatting lines by hand; strings inside data go through [`super::encode`]. FETCH
//! responses carrying message data are written by [`super::fetch_response`].

use std::fmt;

use super::encode;
use super::parse::StatusItem;

/// A status response's condition (RFC 3501 §7.1.1-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::No => "NO",
            Status::Bad => "BAD",
        }
    }
}

/// A response code, the bracketed part of a status response (`[UIDNEXT 4]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Code {
    // RFC 3501 §7.1.
    /// BADCHARSET with the charsets SEARCH does support.
    BadCharset(Vec<&'static str>),
    /// CAPABILITY with the capability list, space-separated.
    Capability(String),
    /// PERMANENTFLAGS: the flags a client may store for good (`\*`: new keywords too).
    PermanentFlags(Vec<String>),
    ReadOnly,
    ReadWrite,
    TryCreate,
    UidNext(u32),
    UidValidity(u32),
    /// The sequence number of the first unseen message.
    Unseen(usize),
    /// RFC 4315 §3 (UIDPLUS): the UIDs in sequence-set form (several after a MULTIAPPEND,
    /// RFC 4315 §3's `append-uid = uniqueid / uid-set`).
    AppendUid {
        uidvalidity: u32,
        uids: String,
    },
    /// The source and destination UID sets, already in sequence-set form.
    CopyUid {
        uidvalidity: u32,
        source: String,
        destination: String,
    },
    // RFC 7162 §3.1.2.1 and §3.1.3 (CONDSTORE).
    HighestModSeq(u64),
    /// The messages STORE UNCHANGEDSINCE left alone, in sequence-set form.
    Modified(String),
    /// RFC 7162 §3.2.11: the previously selected mailbox is closed (SELECT replaced it).
    Closed,
    // RFC 5530 §3.
    Unavailable,
    AuthenticationFailed,
    PrivacyRequired,
    ServerBug,
    Cannot,
    Limit,
    OverQuota,
    AlreadyExists,
    NonExistent,
    /// RFC 9051 §7.1: the mailbox has children, so it cannot be deleted.
    HasChildren,
    /// RFC 6154 §6: a special-use attribute the server does not support.
    UseAttr,
    /// RFC 4978 §4: COMPRESS while compression is already on.
    CompressionActive,
    /// RFC 7889 §4 (the code of RFC 4469): a literal over the server's limit.
    TooBig,
    /// RFC 5465 §5.8: notifications were dropped; NOTIFY is off (as after NOTIFY NONE).
    NotificationOverflow,
    /// RFC 5465 §3.1: an event the server does not support, with the ones it does.
    BadEvent(Vec<&'static str>),
    /// RFC 3516 §4.3: BINARY of a part whose Content-Transfer-Encoding cannot be decoded.
    UnknownCte,
    /// RFC 4469 §6: a CATENATE URL that is invalid or names nothing this user may read; the URL
    /// is written as url-resp-text (no `]`, CR or LF).
    BadUrl(String),
    /// RFC 5530 §3: the user may not do this (the server's /shared METADATA entries).
    NoPerm,
    // RFC 5464 §4.2.1 and §4.3.
    /// The size of the largest value GETMETADATA's MAXSIZE left out.
    MetadataLongEntries(u64),
    /// The largest value SETMETADATA accepts, in bytes.
    MetadataMaxSize(u64),
    /// The user has as many entries as the server allows.
    MetadataTooMany,
    /// RFC 5267 §4.3.1: the search with this tag is answered but will not be kept live.
    NoUpdate(String),
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Code::BadCharset(charsets) => write!(f, "BADCHARSET ({})", charsets.join(" ")),
            Code::Capability(caps) => write!(f, "CAPABILITY {caps}"),
            Code::PermanentFlags(flags) => write!(f, "PERMANENTFLAGS ({})", flags.join(" ")),
            Code::ReadOnly => f.write_str("READ-ONLY"),
            Code::ReadWrite => f.write_str("READ-WRITE"),
            Code::TryCreate => f.write_str("TRYCREATE"),
            Code::UidNext(n) => write!(f, "UIDNEXT {n}"),
            Code::UidValidity(n) => write!(f, "UIDVALIDITY {n}"),
            Code::Unseen(n) => write!(f, "UNSEEN {n}"),
            Code::AppendUid { uidvalidity, uids } => write!(f, "APPENDUID {uidvalidity} {uids}"),
            Code::CopyUid {
                uidvalidity,
                source,
                destination,
            } => write!(f, "COPYUID {uidvalidity} {source} {destination}"),
            Code::HighestModSeq(n) => write!(f, "HIGHESTMODSEQ {n}"),
            Code::Modified(set) => write!(f, "MODIFIED {set}"),
            Code::Closed => f.write_str("CLOSED"),
            Code::Unavailable => f.write_str("UNAVAILABLE"),
            Code::AuthenticationFailed => f.write_str("AUTHENTICATIONFAILED"),
            Code::PrivacyRequired => f.write_str("PRIVACYREQUIRED"),
            Code::ServerBug => f.write_str("SERVERBUG"),
            Code::Cannot => f.write_str("CANNOT"),
            Code::Limit => f.write_str("LIMIT"),
            Code::OverQuota => f.write_str("OVERQUOTA"),
            Code::AlreadyExists => f.write_str("ALREADYEXISTS"),
            Code::NonExistent => f.write_str("NONEXISTENT"),
            Code::HasChildren => f.write_str("HASCHILDREN"),
            Code::UseAttr => f.write_str("USEATTR"),
            Code::CompressionActive => f.write_str("COMPRESSIONACTIVE"),
            Code::TooBig => f.write_str("TOOBIG"),
            Code::NotificationOverflow => f.write_str("NOTIFICATIONOVERFLOW"),
            Code::BadEvent(events) => write!(f, "BADEVENT ({})", events.join(" ")),
            Code::UnknownCte => f.write_str("UNKNOWN-CTE"),
            Code::BadUrl(url) => {
                let text: String = url
                    .chars()
                    .map(|c| if matches!(c, ']' | '\r' | '\n' | '\0') { '?' } else { c })
                    .collect();
                write!(f, "BADURL {text}")
            }
            Code::NoPerm => f.write_str("NOPERM"),
            Code::MetadataLongEntries(n) => write!(f, "METADATA LONGENTRIES {n}"),
            Code::MetadataMaxSize(n) => write!(f, "METADATA MAXSIZE {n}"),
            Code::MetadataTooMany => f.write_str("METADATA TOOMANY"),
            // Tags are atoms (RFC 3501 §9): no quote or backslash to escape.
            Code::NoUpdate(tag) => write!(f, "NOUPDATE \"{tag}\""),
        }
    }
}

/// Bytes of UID set on one `* VANISHED` line.
const VANISHED_LINE_SET: usize = 8000;

/// One response line.
#[derive(Debug, Clone, Copy)]
pub enum Response<'a> {
    /// `tag OK [code] text`: a command's completion (RFC 3501 §7.1).
    Tagged {
        tag: &'a str,
        status: Status,
        code: Option<&'a Code>,
        text: &'a str,
    },
    /// `* OK [code] text`: status information outside a completion (RFC 3501 §7.1).
    Untagged {
        status: Status,
        code: Option<&'a Code>,
        text: &'a str,
    },
    /// `* BYE text`: the server is closing the connection (RFC 3501 §7.1.5).
    Bye(&'a str),
    /// `+ text`: a continuation request (RFC 3501 §7.5); AUTHENTICATE's challenge is
    /// base64 text, empty for PLAIN.
    Continue(&'a str),
    /// `* CAPABILITY ...` (RFC 3501 §7.2.1), the list space-separated.
    Capability(&'a str),
    /// `* FLAGS (...)`: the flags of the selected mailbox (RFC 3501 §7.2.6).
    Flags(&'a [String]),
    /// `* n EXISTS` (RFC 3501 §7.3.1).
    Exists(usize),
    /// `* n RECENT` (RFC 3501 §7.3.2).
    Recent(usize),
    /// `* n EXPUNGE` (RFC 3501 §7.4.1).
    Expunge(usize),
    /// `* VANISHED [(EARLIER)] uids` (RFC 7162 §3.2.10), the UIDs in sequence-set form.
    Vanished { earlier: bool, uids: &'a str },
    /// `* ENABLED ...` (RFC 5161 §3.2): what this ENABLE turned on, maybe nothing.
    Enabled(&'a [&'a str]),
    /// `* ID ("name" "tinydc" "version" ...)` (RFC 2971 §3.2).
    Id { name: &'a str, version: &'a str },
    /// `* LIST (attributes) "/" name` (RFC 3501 §7.2.2), or LSUB (§7.2.3); `name` is already
    /// a string in the client's encoding (`Session::mailbox_out`). `childinfo` (RFC 5258 §3.5):
    /// the selection options some of the name's children match, as `("CHILDINFO" (...))`.
    List {
        lsub: bool,
        attributes: &'a [&'a str],
        delimiter: char,
        name: &'a [u8],
        childinfo: &'a [&'a str],
    },
    /// `* STATUS name (MESSAGES 3 UIDNEXT 9)` (RFC 3501 §7.2.4); `name` as for `List`.
    Status {
        name: &'a [u8],
        items: &'a [(StatusItem, u64)],
    },
    /// `* SEARCH 2 5` (RFC 3501 §7.2.5), with RFC 7162 §3.1.5's `(MODSEQ n)` when given.
    Search { numbers: &'a [u32], modseq: Option<u64> },
    /// `* ESEARCH (TAG "a1") UID MIN 2 MAX 9 COUNT 4 ALL 2:4,9` (RFC 4731 §3.1), with RFC 7162
    /// §3.1.5's `MODSEQ n` last when given; `all` is already a compact sequence set.
    /// `partial` is RFC 5267 §4.4's `PARTIAL (m:n set)`, the set `None` (NIL) when no result
    /// falls in the range.
    ESearch {
        tag: &'a str,
        uid: bool,
        min: Option<u32>,
        max: Option<u32>,
        count: Option<usize>,
        all: Option<&'a str>,
        partial: Option<((u32, u32), Option<&'a str>)>,
        modseq: Option<u64>,
    },
    /// `* ESEARCH (TAG "B01") UID REMOVEFROM (0 32768) ADDTO (0 32769)` (RFC 5267 §4.3.3,
    /// §4.3.4): a live search's changes, each (added, context position, sequence set), in the
    /// order the client applies them; consecutive changes of one kind share one data item.
    ESearchUpdate {
        tag: &'a str,
        uid: bool,
        changes: &'a [(bool, u32, String)],
    },
    /// `* SORT 5 2 3` (RFC 5256 §4), with RFC 7162 §3.1.5's `(MODSEQ n)` when given.
    Sort { numbers: &'a [u32], modseq: Option<u64> },
    /// `* THREAD (2)(3 6 (4 23)(44 7 96))` (RFC 5256 §4): one thread per root.
    Thread(&'a Threads),
    /// `* NAMESPACE (("" "/")) NIL NIL` (RFC 2342 §5): one personal namespace, no others.
    Namespace { prefix: &'a str, delimiter: char },
    /// `* QUOTA root (STORAGE used limit)`, in KiB (RFC 9208 §5.1).
    Quota {
        root: &'a str,
        used_kib: u64,
        limit_kib: u64,
    },
    /// `* QUOTAROOT name root ...` (RFC 9208 §5.2); `name` as for `List`.
    QuotaRoot { name: &'a [u8], roots: &'a [&'a str] },
    /// `* METADATA mailbox (entry value ...)` (RFC 5464 §4.4.1); `mailbox` as for `List`,
    /// never an empty list of entries. A value holding NUL is sent as a literal8 (§5).
    Metadata {
        mailbox: &'a [u8],
        entries: &'a [(String, Option<Vec<u8>>)],
    },
    /// `* METADATA mailbox entry ...`: the unsolicited response naming changed entries without
    /// their values (RFC 5464 §4.4.2, `entry-list`: no parentheses); sent for NOTIFY's
    /// MailboxMetadataChange and ServerMetadataChange (RFC 5465 §5.6, §5.7). `mailbox` as for
    /// `List` (`""` for the server), never an empty list of entries.
    MetadataChanged { mailbox: &'a [u8], entries: &'a [String] },
    /// `* n FETCH (UID u FLAGS (...) MODSEQ (m))`: a message's flags after a change (RFC 3501
    /// §7.4.2, RFC 7162 §3.2). `flags` `None` leaves FLAGS out (STORE .SILENT with
    /// CONDSTORE); `recent` adds the session flag `\Recent` (RFC 3501 §2.3.2).
    FlagsFetch {
        seq: usize,
        uid: u32,
        flags: Option<&'a [String]>,
        recent: bool,
        modseq: Option<u64>,
    },
}

impl Response<'_> {
    /// Append the response, CRLF included.
    pub fn write(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        // Writing into a Vec cannot fail.
        let _ = match self {
            Response::Tagged {
                tag,
                status,
                code,
                text,
            } => status_line(out, tag, *status, *code, text),
            Response::Untagged { status, code, text } => status_line(out, "*", *status, *code, text),
            Response::Bye(text) => write!(out, "* BYE {text}"),
            Response::Continue(text) => write!(out, "+ {text}"),
            Response::Capability(caps) => write!(out, "* CAPABILITY {caps}"),
            Response::Flags(flags) => {
                out.extend_from_slice(b"* FLAGS ");
                encode::flag_list(out, flags);
                Ok(())
            }
            Response::Exists(n) => write!(out, "* {n} EXISTS"),
            Response::Recent(n) => write!(out, "* {n} RECENT"),
            Response::Expunge(n) => write!(out, "* {n} EXPUNGE"),
            Response::Vanished { earlier, uids } => {
                // Several lines when the set is long, each under RFC 7162 §4's 8192 octets
                // (the client takes the union; RFC 2683 §3.2.1.5 as updated).
                let earlier = if *earlier { " (EARLIER)" } else { "" };
                let mut rest: &str = uids;
                while rest.len() > VANISHED_LINE_SET
                    && let Some(cut) = rest[..VANISHED_LINE_SET].rfind(',')
                {
                    let _ = write!(out, "* VANISHED{earlier} {}\r\n", &rest[..cut]);
                    rest = &rest[cut + 1..];
                }
                write!(out, "* VANISHED{earlier} {rest}")
            }
            Response::Enabled(caps) => {
                out.extend_from_slice(b"* ENABLED");
                for cap in caps.iter() {
                    out.push(b' ');
                    out.extend_from_slice(cap.as_bytes());
                }
                Ok(())
            }
            Response::Id { name, version } => {
                out.extend_from_slice(b"* ID (\"name\" ");
                encode::string(out, name.as_bytes());
                out.extend_from_slice(b" \"version\" ");
                encode::string(out, version.as_bytes());
                out.push(b')');
                Ok(())
            }
            Response::List {
                lsub,
                attributes,
                delimiter,
                name,
                childinfo,
            } => {
                out.extend_from_slice(if *lsub { b"* LSUB (" } else { b"* LIST (" });
                out.extend_from_slice(attributes.join(" ").as_bytes());
                out.extend_from_slice(b") ");
                encode::string(out, delimiter.encode_utf8(&mut [0; 4]).as_bytes());
                out.push(b' ');
                out.extend_from_slice(name);
                if !childinfo.is_empty() {
                    out.extend_from_slice(b" (\"CHILDINFO\" (");
                    for (i, option) in childinfo.iter().enumerate() {
                        if i > 0 {
                            out.push(b' ');
                        }
                        encode::string(out, option.as_bytes());
                    }
                    out.extend_from_slice(b"))");
                }
                Ok(())
            }
            Response::Status { name, items } => {
                out.extend_from_slice(b"* STATUS ");
                out.extend_from_slice(name);
                out.extend_from_slice(b" (");
                for (i, (item, value)) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b' ');
                    }
                    let _ = write!(out, "{} {value}", status_item_name(*item));
                }
                out.push(b')');
                Ok(())
            }
            Response::Search { numbers, modseq } | Response::Sort { numbers, modseq } => {
                out.extend_from_slice(if matches!(self, Response::Search { .. }) {
                    b"* SEARCH"
                } else {
                    b"* SORT"
                });
                for n in numbers.iter() {
                    let _ = write!(out, " {n}");
                }
                match modseq {
                    Some(m) => write!(out, " (MODSEQ {m})"),
                    None => Ok(()),
                }
            }
            Response::ESearch {
                tag,
                uid,
                min,
                max,
                count,
                all,
                partial,
                modseq,
            } => {
                out.extend_from_slice(b"* ESEARCH (TAG ");
                encode::string(out, tag.as_bytes());
                out.push(b')');
                if *uid {
                    out.extend_from_slice(b" UID");
                }
                if let Some(n) = min {
                    let _ = write!(out, " MIN {n}");
                }
                if let Some(n) = max {
                    let _ = write!(out, " MAX {n}");
                }
                if let Some(n) = count {
                    let _ = write!(out, " COUNT {n}");
                }
                if let Some(set) = all {
                    let _ = write!(out, " ALL {set}");
                }
                if let Some(((low, high), set)) = partial {
                    let _ = write!(out, " PARTIAL ({low}:{high} {})", set.unwrap_or("NIL"));
                }
                match modseq {
                    Some(m) => write!(out, " MODSEQ {m}"),
                    None => Ok(()),
                }
            }
            Response::ESearchUpdate { tag, uid, changes } => {
                out.extend_from_slice(b"* ESEARCH (TAG ");
                encode::string(out, tag.as_bytes());
                out.push(b')');
                if *uid {
                    out.extend_from_slice(b" UID");
                }
                let mut open: Option<bool> = None;
                for (added, position, set) in changes.iter() {
                    if open != Some(*added) {
                        if open.is_some() {
                            out.push(b')');
                        }
                        out.extend_from_slice(if *added { b" ADDTO (" } else { b" REMOVEFROM (" });
                        open = Some(*added);
                    } else {
                        out.push(b' ');
                    }
                    let _ = write!(out, "{position} {set}");
                }
                if open.is_some() {
                    out.push(b')');
                }
                Ok(())
            }
            Response::Thread(threads) => {
                // RFC 5256 §5: thread-data = "THREAD" [SP 1*thread-list]
                out.extend_from_slice(b"* THREAD");
                if !threads.roots.is_empty() {
                    out.push(b' ');
                }
                for &root in &threads.roots {
                    out.push(b'(');
                    thread_members(out, threads, root);
                    out.push(b')');
                }
                Ok(())
            }
            Response::Namespace { prefix, delimiter } => {
                out.extend_from_slice(b"* NAMESPACE ((");
                encode::string(out, prefix.as_bytes());
                out.push(b' ');
                encode::string(out, delimiter.encode_utf8(&mut [0; 4]).as_bytes());
                out.extend_from_slice(b")) NIL NIL");
                Ok(())
            }
            Response::Quota {
                root,
                used_kib,
                limit_kib,
            } => {
                out.extend_from_slice(b"* QUOTA ");
                encode::string(out, root.as_bytes());
                write!(out, " (STORAGE {used_kib} {limit_kib})")
            }
            Response::QuotaRoot { name, roots } => {
                out.extend_from_slice(b"* QUOTAROOT ");
                out.extend_from_slice(name);
                for root in roots.iter() {
                    out.push(b' ');
                    encode::string(out, root.as_bytes());
                }
                Ok(())
            }
            Response::MetadataChanged { mailbox, entries } => {
                out.extend_from_slice(b"* METADATA ");
                out.extend_from_slice(mailbox);
                for name in *entries {
                    out.push(b' ');
                    entry_name(out, name);
                }
                Ok(())
            }
            Response::Metadata { mailbox, entries } => {
                out.extend_from_slice(b"* METADATA ");
                out.extend_from_slice(mailbox);
                out.extend_from_slice(b" (");
                for (i, (name, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(b' ');
                    }
                    entry_name(out, name);
                    out.push(b' ');
                    match value {
                        None => out.extend_from_slice(b"NIL"),
                        Some(v) if v.contains(&0) => {
                            let _ = write!(out, "~{{{}}}\r\n", v.len());
                            out.extend_from_slice(v);
                        }
                        Some(v) => encode::string(out, v),
                    }
                }
                out.push(b')');
                Ok(())
            }
            Response::FlagsFetch {
                seq,
                uid,
                flags,
                recent,
                modseq,
            } => {
                let _ = write!(out, "* {seq} FETCH (UID {uid}");
                if let Some(flags) = flags {
                    out.extend_from_slice(b" FLAGS ");
                    super::fetch_response::flag_list(out, flags, *recent);
                }
                if let Some(modseq) = modseq {
                    let _ = write!(out, " MODSEQ ({modseq})");
                }
                out.push(b')');
                Ok(())
            }
        };
        out.extend_from_slice(b"\r\n");
    }

    /// The response as bytes, CRLF included.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }
}

/// A METADATA entry name: printable ASCII (RFC 5464 §3.2), an atom when it can be, else a
/// quoted string.
fn entry_name(out: &mut Vec<u8>, name: &str) {
    if name
        .bytes()
        .all(|b| b > 0x20 && b < 0x7f && !b"(){%*\"\\]".contains(&b))
    {
        out.extend_from_slice(name.as_bytes());
    } else {
        encode::string(out, name.as_bytes());
    }
}

/// A STATUS data item's name (RFC 3501 §6.3.10, RFC 7162 §3.1.9).
fn status_item_name(item: StatusItem) -> &'static str {
    match item {
        StatusItem::Messages => "MESSAGES",
        StatusItem::Recent => "RECENT",
        StatusItem::UidNext => "UIDNEXT",
        StatusItem::UidValidity => "UIDVALIDITY",
        StatusItem::Unseen => "UNSEEN",
        StatusItem::HighestModSeq => "HIGHESTMODSEQ",
        StatusItem::Size => "SIZE",
        StatusItem::Deleted => "DELETED",
    }
}

/// `tag SP status SP ["[" code "]" SP] text` (RFC 3501 §9 resp-cond-state, resp-text).
fn status_line(out: &mut Vec<u8>, tag: &str, status: Status, code: Option<&Code>, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    write!(out, "{tag} {} ", status.as_str())?;
    if let Some(code) = code {
        write!(out, "[{code}] ")?;
    }
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

/// The threads of a THREAD response (RFC 5256 §4), kept flat so that neither writing nor
/// dropping a thread as deep as the mailbox is long recurses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Threads {
    pub nodes: Vec<ThreadNode>,
    /// The top of each thread, in the order they are answered.
    pub roots: Vec<usize>,
}

/// A message in a thread: `number` is `None` for a dummy that holds siblings together at the
/// top (`((3)(5))`); `children` index [`Threads::nodes`], in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadNode {
    pub number: Option<u32>,
    pub children: Vec<usize>,
}

/// RFC 5256 §5 `thread-members` / `thread-nested` of one node, without recursion: a single
/// child continues the list (`3 6`), several each get a `thread-list` of their own
/// (`3 (4 23)(44 7)`).
fn thread_members(out: &mut Vec<u8>, threads: &Threads, root: usize) {
    use std::io::Write;
    enum Step {
        Node(usize),
        Open,
        Close,
    }
    let mut stack = vec![Step::Node(root)];
    while let Some(step) = stack.pop() {
        let node = match step {
            Step::Open => {
                out.push(b'(');
                continue;
            }
            Step::Close => {
                out.push(b')');
                continue;
            }
            Step::Node(i) => &threads.nodes[i],
        };
        if let Some(n) = node.number {
            if out.last() != Some(&b'(') {
                out.push(b' ');
            }
            let _ = write!(out, "{n}");
        }
        match node.children.as_slice() {
            [] => {}
            [only] if node.number.is_some() => stack.push(Step::Node(*only)),
            children => {
                if node.number.is_some() {
                    out.push(b' ');
                }
                for &child in children.iter().rev() {
                    stack.push(Step::Close);
                    stack.push(Step::Node(child));
                    stack.push(Step::Open);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: Response<'_>) -> String {
        String::from_utf8(r.to_bytes()).unwrap()
    }

    #[test]
    fn unsolicited_metadata_of_rfc_5464_4_4_2() {
        // RFC 5464 §4.4.2's example: the entry names alone, no parentheses, no values.
        let entries = ["/shared/comment".to_string(), "/private/comment".to_string()];
        assert_eq!(
            text(Response::MetadataChanged {
                mailbox: b"\"INBOX\"",
                entries: &entries
            }),
            "* METADATA \"INBOX\" /shared/comment /private/comment\r\n"
        );
        // RFC 5465 §5.7: the server's entries, mailbox "".
        let entries = ["/private/a b".to_string()];
        assert_eq!(
            text(Response::MetadataChanged {
                mailbox: b"\"\"",
                entries: &entries
            }),
            "* METADATA \"\" \"/private/a b\"\r\n"
        );
    }

    #[test]
    fn thread_response_syntax() {
        // RFC 5256 §4's example: (2)(3 6 (4 23)(44 7 96)), and a dummy on top: ((8)(9 10)).
        let node = |number, children: &[usize]| ThreadNode {
            number,
            children: children.to_vec(),
        };
        let threads = Threads {
            nodes: vec![
                node(Some(2), &[]),
                node(Some(3), &[2]),
                node(Some(6), &[3, 5]),
                node(Some(4), &[4]),
                node(Some(23), &[]),
                node(Some(44), &[6]),
                node(Some(7), &[7]),
                node(Some(96), &[]),
                node(None, &[9, 10]),
                node(Some(8), &[]),
                node(Some(9), &[11]),
                node(Some(10), &[]),
            ],
            roots: vec![0, 1, 8],
        };
        assert_eq!(
            text(Response::Thread(&threads)),
            "* THREAD (2)(3 6 (4 23)(44 7 96))((8)(9 10))\r\n"
        );
        assert_eq!(text(Response::Thread(&Threads::default())), "* THREAD\r\n");
        assert_eq!(
            text(Response::Sort {
                numbers: &[3, 1],
                modseq: None
            }),
            "* SORT 3 1\r\n"
        );
    }

    #[test]
    fn status_responses() {
        let code = Code::AppendUid {
            uidvalidity: 7,
            uids: "42".into(),
        };
        assert_eq!(
            text(Response::Tagged {
                tag: "a1",
                status: Status::Ok,
                code: Some(&code),
                text: "APPEND completed"
            }),
            "a1 OK [APPENDUID 7 42] APPEND completed\r\n"
        );
        assert_eq!(
            text(Response::Tagged {
                tag: "a2",
                status: Status::Bad,
                code: None,
                text: "line too long"
            }),
            "a2 BAD line too long\r\n"
        );
        let code = Code::PermanentFlags(vec!["\\Seen".into(), "\\*".into()]);
        assert_eq!(
            text(Response::Untagged {
                status: Status::Ok,
                code: Some(&code),
                text: "flags stored"
            }),
            "* OK [PERMANENTFLAGS (\\Seen \\*)] flags stored\r\n"
        );
        assert_eq!(text(Response::Bye("logging out")), "* BYE logging out\r\n");
        assert_eq!(text(Response::Continue("")), "+ \r\n");
        assert_eq!(text(Response::Continue("idling")), "+ idling\r\n");
    }

    #[test]
    fn codes() {
        let cases = [
            (
                Code::BadCharset(vec!["UTF-8", "US-ASCII"]),
                "BADCHARSET (UTF-8 US-ASCII)",
            ),
            (Code::PermanentFlags(Vec::new()), "PERMANENTFLAGS ()"),
            (
                Code::CopyUid {
                    uidvalidity: 3,
                    source: "1:2".into(),
                    destination: "7:8".into(),
                },
                "COPYUID 3 1:2 7:8",
            ),
            (Code::Modified("4,6".into()), "MODIFIED 4,6"),
            (Code::HighestModSeq(9), "HIGHESTMODSEQ 9"),
            (Code::Closed, "CLOSED"),
            (Code::ReadOnly, "READ-ONLY"),
            (Code::OverQuota, "OVERQUOTA"),
            (Code::TooBig, "TOOBIG"),
            (Code::UnknownCte, "UNKNOWN-CTE"),
            (Code::BadUrl("/INBOX/;UID=1".into()), "BADURL /INBOX/;UID=1"),
            // url-resp-text has no "]" (RFC 4469 §6), nor CR or LF.
            (Code::BadUrl("/a]b\r\n".into()), "BADURL /a?b??"),
        ];
        for (code, wire) in cases {
            assert_eq!(code.to_string(), wire);
        }
    }

    #[test]
    fn data() {
        assert_eq!(text(Response::Exists(3)), "* 3 EXISTS\r\n");
        assert_eq!(text(Response::Expunge(2)), "* 2 EXPUNGE\r\n");
        assert_eq!(
            text(Response::Vanished {
                earlier: true,
                uids: "1:3,7"
            }),
            "* VANISHED (EARLIER) 1:3,7\r\n"
        );
        // A long set is split at commas into lines under 8192 octets, nothing lost.
        let uids: Vec<String> = (1..5000).map(|n| (n * 2).to_string()).collect();
        let long = text(Response::Vanished {
            earlier: false,
            uids: &uids.join(","),
        });
        let lines: Vec<&str> = long.split_terminator("\r\n").collect();
        assert!(lines.len() > 1);
        let mut back = Vec::new();
        for line in lines {
            assert!(line.len() < 8192);
            back.extend(line.strip_prefix("* VANISHED ").unwrap().split(','));
        }
        assert_eq!(back, uids);
        assert_eq!(
            text(Response::Flags(&["\\Seen".into(), "$x".into()])),
            "* FLAGS (\\Seen $x)\r\n"
        );
        assert_eq!(text(Response::Enabled(&[])), "* ENABLED\r\n");
        assert_eq!(text(Response::Enabled(&["CONDSTORE"])), "* ENABLED CONDSTORE\r\n");
        assert_eq!(
            text(Response::Id {
                name: "tinydc",
                version: "0.1.0"
            }),
            "* ID (\"name\" \"tinydc\" \"version\" \"0.1.0\")\r\n"
        );
        assert_eq!(
            text(Response::List {
                lsub: false,
                attributes: &["\\HasNoChildren", "\\Sent"],
                delimiter: '/',
                name: b"\"Sent\"",
                childinfo: &[],
            }),
            "* LIST (\\HasNoChildren \\Sent) \"/\" \"Sent\"\r\n"
        );
        assert_eq!(
            text(Response::List {
                lsub: false,
                attributes: &["\\NonExistent"],
                delimiter: '/',
                name: b"\"Foo\"",
                childinfo: &["SUBSCRIBED"],
            }),
            "* LIST (\\NonExistent) \"/\" \"Foo\" (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n"
        );
        assert_eq!(
            text(Response::Status {
                name: b"INBOX",
                items: &[(StatusItem::Messages, 3), (StatusItem::UidNext, 9)],
            }),
            "* STATUS INBOX (MESSAGES 3 UIDNEXT 9)\r\n"
        );
        assert_eq!(
            text(Response::Search {
                numbers: &[],
                modseq: None
            }),
            "* SEARCH\r\n"
        );
        assert_eq!(
            text(Response::Search {
                numbers: &[2, 5],
                modseq: Some(7)
            }),
            "* SEARCH 2 5 (MODSEQ 7)\r\n"
        );
        assert_eq!(
            text(Response::ESearch {
                tag: "a1",
                uid: true,
                min: Some(2),
                max: Some(9),
                count: Some(4),
                all: Some("2:4,9"),
                partial: None,
                modseq: Some(12),
            }),
            "* ESEARCH (TAG \"a1\") UID MIN 2 MAX 9 COUNT 4 ALL 2:4,9 MODSEQ 12\r\n"
        );
        // RFC 5267 §4.4 and §4.3.3, §4.3.4 examples.
        assert_eq!(
            text(Response::ESearch {
                tag: "A04",
                uid: true,
                min: None,
                max: None,
                count: None,
                all: None,
                partial: Some(((24000, 24500), None)),
                modseq: None,
            }),
            "* ESEARCH (TAG \"A04\") UID PARTIAL (24000:24500 NIL)\r\n"
        );
        let changes = [
            (false, 0, "32768".to_string()),
            (true, 1, "2733".to_string()),
            (true, 1, "2731:2732".to_string()),
        ];
        assert_eq!(
            text(Response::ESearchUpdate {
                tag: "C01",
                uid: true,
                changes: &changes,
            }),
            "* ESEARCH (TAG \"C01\") UID REMOVEFROM (0 32768) ADDTO (1 2733 1 2731:2732)\r\n"
        );
        assert_eq!(Code::NoUpdate("B02".into()).to_string(), "NOUPDATE \"B02\"");
        assert_eq!(
            text(Response::Namespace {
                prefix: "",
                delimiter: '/'
            }),
            "* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n"
        );
        assert_eq!(
            text(Response::Quota {
                root: "",
                used_kib: 10,
                limit_kib: 100
            }),
            "* QUOTA \"\" (STORAGE 10 100)\r\n"
        );
        assert_eq!(
            text(Response::QuotaRoot {
                name: b"INBOX",
                roots: &[""]
            }),
            "* QUOTAROOT INBOX \"\"\r\n"
        );
        let flags = ["\\Seen".to_string()];
        assert_eq!(
            text(Response::FlagsFetch {
                seq: 2,
                uid: 9,
                flags: Some(&flags),
                recent: true,
                modseq: Some(4)
            }),
            "* 2 FETCH (UID 9 FLAGS (\\Seen \\Recent) MODSEQ (4))\r\n"
        );
        assert_eq!(
            text(Response::FlagsFetch {
                seq: 2,
                uid: 9,
                flags: Some(&[]),
                recent: false,
                modseq: None
            }),
            "* 2 FETCH (UID 9 FLAGS ())\r\n"
        );
        assert_eq!(
            text(Response::FlagsFetch {
                seq: 2,
                uid: 9,
                flags: None,
                recent: false,
                modseq: Some(4)
            }),
            "* 2 FETCH (UID 9 MODSEQ (4))\r\n"
        );
    }
}
