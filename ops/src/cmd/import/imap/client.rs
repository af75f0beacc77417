//! The IMAP session of `tinydc import --imap`: connect (TLS, STARTTLS, or plain to loopback
//! only), log in, list the folders worth importing, and fetch each folder's messages in batches.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use rustls_pki_types::ServerName;

use super::proto::{
    Arg, Conn, Kind, Response, Stream, Value, check_tagged, decode_mailbox_name, is_bye, parse_internal_date,
};

/// How to reach the other server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// IMAPS: TLS from the first byte (RFC 8314), port 993 by default.
    Tls,
    /// STARTTLS (RFC 3501 section 6.2.1), port 143 by default.
    StartTls,
    /// No TLS: only to a loopback address, since the password would cross the network in clear.
    Plain,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub user: String,
    pub password: String,
    /// A PEM file of CA certificates trusted besides the system roots (a self-signed server).
    pub ca_file: Option<PathBuf>,
    /// Messages bigger than this are skipped (`[smtp] max_message_size`).
    pub max_message_size: u64,
    /// The longest wait for the server on any read or write.
    pub timeout: Duration,
}

/// `HOST[:PORT]`, `[v6]:PORT` or a bare IPv6 address; the default port follows the security.
pub fn parse_host_port(spec: &str, security: Security) -> Result<(String, u16)> {
    let default = if security == Security::Tls { 993 } else { 143 };
    let bad = || anyhow!("--imap {spec:?}: expected HOST or HOST:PORT");
    if let Some(rest) = spec.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if after.is_empty() => default,
            None => return Err(bad()),
        };
        return Ok((host.to_string(), port));
    }
    if spec.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok((spec.to_string(), default));
    }
    let (host, port) = match spec.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().map_err(|_| bad())?),
        None => (spec, default),
    };
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// A folder of the other server that will be imported.
#[derive(Debug, Clone)]
pub struct RemoteFolder {
    /// The name as the server spells it on the wire (modified UTF-7), for EXAMINE.
    pub wire: Vec<u8>,
    /// The server's name in UTF-8 with its hierarchy delimiter shown as '/'; names the source.
    pub remote: String,
    /// Our folder: `remote`, or the special folder (Sent, Drafts, Trash, Junk) it stands for.
    pub local: String,
    /// Gmail's "All Mail": only the messages in no other folder (archived) are imported, into
    /// Archive; the rest come through INBOX, Sent and the labels.
    pub archived_only: bool,
}

/// What EXAMINE and the size pass tell about a folder.
#[derive(Debug, Clone)]
pub struct FolderPlan {
    pub folder: RemoteFolder,
    pub uidvalidity: u32,
    /// Every message's UID and RFC822.SIZE, in UID order.
    pub messages: Vec<(u32, u64)>,
}

/// A message fetched from the other server.
pub struct Fetched {
    pub uid: u32,
    pub flags: Vec<String>,
    pub internal_date: Option<DateTime<Utc>>,
    pub raw: Vec<u8>,
}

// The bytes by their size only: a failed test or a log line must not print a whole message.
impl std::fmt::Debug for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetched")
            .field("uid", &self.uid)
            .field("flags", &self.flags)
            .field("internal_date", &self.internal_date)
            .field("raw_len", &self.raw.len())
            .finish()
    }
}

/// What a fetch step gives.
#[derive(Debug)]
pub enum Step {
    Message(Fetched),
    /// The message is bigger than max_message_size (known from its size or from its literal).
    TooBig {
        uid: u32,
        size: u64,
    },
    /// The server returned no body for it (expunged meanwhile, or the server failed it).
    Missing {
        uid: u32,
    },
}

pub struct Session {
    conn: Conn,
    capabilities: Vec<String>,
    pub host: String,
}

fn tls_config(ca_file: Option<&PathBuf>) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    shared::tls::add_system_roots(&mut roots, "import");
    if let Some(path) = ca_file {
        shared::tls::add_pem_roots(&mut roots, path, "--ca-file")?;
    }
    if roots.is_empty() {
        bail!("no CA certificates: the system has none (install ca-certificates) and no --ca-file was given");
    }
    let config = rustls::ClientConfig::builder_with_provider(shared::tls::provider())
        .with_safe_default_protocol_versions()
        .context("TLS setup")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Explain a failed handshake: an untrusted certificate is the usual case (self-signed server).
fn tls_error(e: std::io::Error, host: &str) -> anyhow::Error {
    let text = e.to_string();
    if text.contains("certificate") || text.contains("Certificate") {
        anyhow!(
            "TLS to {host}: the server's certificate is not trusted ({text}); for a server with a \
             self-signed or private CA certificate, pass that CA with --ca-file FILE.pem"
        )
    } else {
        anyhow!("TLS to {host}: {text}")
    }
}

async fn tls_wrap(tcp: Box<dyn Stream>, opts: &Options) -> Result<Box<dyn Stream>> {
    let config = tls_config(opts.ca_file.as_ref())?;
    let name = match opts.host.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(opts.host.clone()).map_err(|_| anyhow!("{:?} is not a host name", opts.host))?,
    };
    let connector = tokio_rustls::TlsConnector::from(config);
    let tls = tokio::time::timeout(opts.timeout, connector.connect(name, tcp))
        .await
        .map_err(|_| anyhow!("TLS to {}: no handshake within {}s", opts.host, opts.timeout.as_secs()))?
        .map_err(|e| tls_error(e, &opts.host))?;
    Ok(Box::new(tls))
}

impl Session {
    /// Connect, secure the connection and log in.
    pub async fn connect(opts: &Options) -> Result<Session> {
        let addrs: Vec<SocketAddr> =
            tokio::time::timeout(opts.timeout, tokio::net::lookup_host((opts.host.as_str(), opts.port)))
                .await
                .map_err(|_| anyhow!("looking up {}: no answer within {}s", opts.host, opts.timeout.as_secs()))?
                .with_context(|| format!("looking up {}", opts.host))?
                .collect();
        if addrs.is_empty() {
            bail!("{} has no address", opts.host);
        }
        if opts.security == Security::Plain && !addrs.iter().all(|a| a.ip().is_loopback()) {
            bail!(
                "refusing to send the password to {} without TLS: use --tls (port 993) or \
                 --starttls (port 143); plain IMAP is allowed only to a loopback address",
                opts.host
            );
        }
        let mut last = None;
        let mut tcp = None;
        for addr in &addrs {
            match tokio::time::timeout(opts.timeout, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    tcp = Some(s);
                    break;
                }
                Ok(Err(e)) => last = Some(anyhow!("connecting to {addr}: {e}")),
                Err(_) => {
                    last = Some(anyhow!(
                        "connecting to {addr}: no answer within {}s",
                        opts.timeout.as_secs()
                    ))
                }
            }
        }
        let tcp = tcp.ok_or_else(|| last.unwrap_or_else(|| anyhow!("no address")))?;
        let mut stream: Box<dyn Stream> = Box::new(tcp);
        if opts.security == Security::Tls {
            stream = tls_wrap(stream, opts).await?;
        }
        let mut conn = Conn::new(stream, opts.timeout, opts.max_message_size);
        let mut greeting = conn.read_response().await.context("reading the server's greeting")?;
        if greeting.kind() != Kind::Untagged || is_bye(&greeting) {
            bail!("the server refused the connection: {}", greeting.display());
        }
        let mut p = greeting.parser();
        let status = p.value()?.atom().map(str::to_ascii_uppercase);
        let code = p.response_code();
        match status.as_deref() {
            Some("OK") => {}
            // Already authenticated (RFC 3501 section 7.1.4): not something we asked for.
            _ => bail!("unexpected greeting: {}", greeting.display()),
        }
        let mut session = Session {
            conn,
            capabilities: Vec::new(),
            host: opts.host.clone(),
        };
        match code {
            Some(c) if c.to_ascii_uppercase().starts_with("CAPABILITY ") => session.set_capabilities(&c),
            _ => session.capability().await?,
        }
        if opts.security == Security::StartTls {
            if !session.has("STARTTLS") {
                bail!("{} does not offer STARTTLS: use --tls (port 993)", opts.host);
            }
            session.conn.run(&[Arg::Raw("STARTTLS")]).await?;
            // Anything the server sent after its OK and before the handshake would be read as
            // if it came over TLS: refuse it (the STARTTLS injection attack, CVE-2011-0411).
            if !session.conn.io.buffer().is_empty() {
                bail!("the server sent data after STARTTLS before the TLS handshake; refusing it");
            }
            let Session { conn, .. } = session;
            let plain = conn.io.into_inner();
            let tls = tls_wrap(plain, opts).await?;
            session = Session {
                conn: Conn::new(tls, opts.timeout, opts.max_message_size),
                capabilities: Vec::new(),
                host: opts.host.clone(),
            };
            // What the server said before TLS may have been forged: ask again (RFC 3501 6.2.1).
            session.capability().await?;
        }
        session.login(&opts.user, &opts.password).await?;
        session.capability().await?;
        session.conn.literal_plus = session.has("LITERAL+");
        Ok(session)
    }

    fn set_capabilities(&mut self, text: &str) {
        self.capabilities = text
            .split_ascii_whitespace()
            .skip(1)
            .map(str::to_ascii_uppercase)
            .collect();
    }

    fn has(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }

    async fn capability(&mut self) -> Result<()> {
        let untagged = self.conn.run(&[Arg::Raw("CAPABILITY")]).await?;
        for r in untagged {
            let text = String::from_utf8_lossy(&r.text[2..]).into_owned();
            if text.to_ascii_uppercase().starts_with("CAPABILITY ") {
                self.set_capabilities(&text);
            }
        }
        Ok(())
    }

    /// AUTHENTICATE PLAIN (RFC 4616) when offered, which carries any password; else LOGIN
    /// (RFC 3501 section 6.2.3) unless the server disabled it.
    async fn login(&mut self, user: &str, password: &str) -> Result<()> {
        let result = if self.has("AUTH=PLAIN") {
            use base64::Engine;
            let blob = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
            if self.has("SASL-IR") {
                // RFC 4959: the initial response on the command line.
                self.conn
                    .run(&[Arg::Raw("AUTHENTICATE PLAIN"), Arg::Raw(&blob)])
                    .await
                    .map(drop)
            } else {
                self.authenticate_plain(&blob).await
            }
        } else if self.has("LOGINDISABLED") {
            bail!("{} allows neither AUTHENTICATE PLAIN nor LOGIN here", self.host);
        } else {
            self.conn
                .run(&[
                    Arg::Raw("LOGIN"),
                    Arg::Str(user.as_bytes()),
                    Arg::Str(password.as_bytes()),
                ])
                .await
                .map(drop)
        };
        result.map_err(|e| anyhow!("logging in to {} as {user}: {e:#}", self.host))
    }

    async fn authenticate_plain(&mut self, blob: &str) -> Result<()> {
        let (tag, _) = self.conn.send(&[Arg::Raw("AUTHENTICATE PLAIN")]).await?;
        let mut sent = false;
        loop {
            let mut r = self.conn.read_response().await?;
            match r.kind() {
                Kind::Continuation if !sent => {
                    self.conn.send_line(blob.as_bytes()).await?;
                    sent = true;
                }
                // A second challenge: cancel (RFC 3501 section 6.2.2).
                Kind::Continuation => self.conn.send_line(b"*").await?,
                Kind::Untagged => {}
                Kind::Tagged(t) if t == tag => return check_tagged(&mut r),
                Kind::Tagged(_) => bail!("unexpected answer: {}", r.display()),
            }
        }
    }

    /// Every folder worth importing (RFC 3501 section 6.3.8 LIST; RFC 6154 SPECIAL-USE).
    pub async fn folders(&mut self) -> Result<Vec<RemoteFolder>> {
        let untagged = if self.has("SPECIAL-USE") {
            self.conn
                .run(&[Arg::Raw("LIST"), Arg::Str(b""), Arg::Raw("* RETURN (SPECIAL-USE)")])
                .await?
        } else {
            self.conn.run(&[Arg::Raw("LIST"), Arg::Str(b""), Arg::Raw("*")]).await?
        };
        let gmail = self.has("X-GM-EXT-1");
        let mut folders = Vec::new();
        for mut r in untagged {
            let mut p = r.parser();
            if !p.value()?.atom().is_some_and(|a| a.eq_ignore_ascii_case("LIST")) {
                continue;
            }
            let Value::List(attrs) = p.value()? else {
                bail!("malformed LIST response");
            };
            let attrs: Vec<String> = attrs
                .iter()
                .filter_map(Value::atom)
                .map(str::to_ascii_lowercase)
                .collect();
            let delimiter = match p.value()? {
                Value::Str(d) if d.len() == 1 => Some(d[0] as char),
                Value::Nil => None,
                _ => bail!("malformed LIST delimiter"),
            };
            let wire = match p.value()? {
                Value::Atom(a) => a.into_bytes(),
                Value::Str(s) => s,
                _ => bail!("malformed LIST name"),
            };
            if let Some(folder) = classify(&wire, delimiter, &attrs, gmail) {
                folders.push(folder);
            }
        }
        folders.sort_by(|a, b| a.remote.cmp(&b.remote));
        Ok(folders)
    }

    /// EXAMINE a folder (read-only, so \Seen is never set by us: RFC 3501 section 6.3.2): its
    /// UIDVALIDITY and how many messages it has.
    pub async fn examine(&mut self, folder: &RemoteFolder) -> Result<(u32, u64)> {
        let untagged = self
            .conn
            .run(&[Arg::Raw("EXAMINE"), Arg::Str(&folder.wire)])
            .await
            .with_context(|| format!("EXAMINE {}", folder.remote))?;
        let mut uidvalidity = None;
        let mut exists = 0;
        for mut r in untagged {
            let mut p = r.parser();
            let first = p.value()?;
            if first.atom().is_some_and(|a| a.eq_ignore_ascii_case("OK")) {
                if let Some(code) = p.response_code() {
                    let mut words = code.split_ascii_whitespace();
                    if words.next().is_some_and(|w| w.eq_ignore_ascii_case("UIDVALIDITY")) {
                        uidvalidity = words.next().and_then(|n| n.parse::<u32>().ok());
                    }
                }
            } else if let Some(n) = first.number()
                && p.value()?.atom().is_some_and(|a| a.eq_ignore_ascii_case("EXISTS"))
            {
                exists = n;
            }
        }
        // Without UIDVALIDITY the keys would not be stable across sessions (RFC 3501 2.3.1.1).
        let uidvalidity = uidvalidity.ok_or_else(|| anyhow!("{}: the server gave no UIDVALIDITY", folder.remote))?;
        Ok((uidvalidity, exists))
    }

    /// EXAMINE a folder and learn its UIDVALIDITY and every message's UID and size.
    pub async fn plan(&mut self, folder: &RemoteFolder) -> Result<FolderPlan> {
        let (uidvalidity, exists) = self.examine(folder).await?;
        let mut messages = Vec::new();
        if exists > 0 {
            // Gmail's labels of each message (X-GM-LABELS, Gmail's IMAP extensions): one with no
            // label but \Important or \Starred is archived, in no folder but All Mail.
            let command = if folder.archived_only {
                "UID FETCH 1:* (UID RFC822.SIZE X-GM-LABELS)"
            } else {
                "UID FETCH 1:* (UID RFC822.SIZE)"
            };
            // Streamed: one small response per message, however many there are.
            self.conn
                .run_with(&[Arg::Raw(command)], |mut r| {
                    if let Some(item) = fetch_items(&mut r)?
                        && let (Some(uid), Some(size)) = (item.uid, item.size)
                    {
                        if folder.archived_only {
                            let Some(labels) = &item.labels else {
                                bail!("{}: the server gave no X-GM-LABELS", folder.remote);
                            };
                            let elsewhere = labels.iter().any(|l| {
                                !l.eq_ignore_ascii_case("\\Important") && !l.eq_ignore_ascii_case("\\Starred")
                            });
                            if elsewhere {
                                return Ok(());
                            }
                        }
                        // A folder grows while we look, but not without end: a server that
                        // keeps answering cannot make us hold more than it said it has.
                        if messages.len() as u64 >= exists + SLACK {
                            bail!("the server listed more messages than the {exists} it said it has");
                        }
                        messages.push((uid, size));
                    }
                    Ok(())
                })
                .await
                .with_context(|| format!("listing {}", folder.remote))?;
        }
        messages.sort_unstable();
        messages.dedup_by_key(|m| m.0);
        Ok(FolderPlan {
            folder: folder.clone(),
            uidvalidity,
            messages,
        })
    }

    /// Start fetching `uids` (already EXAMINEd folder): at most a batch's worth.
    pub async fn fetch_batch(&mut self, uids: &[u32]) -> Result<Batch> {
        let set = uids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let command = format!("UID FETCH {set} (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])");
        let (tag, early) = self.conn.send(&[Arg::Raw(&command)]).await?;
        if !early.is_empty() {
            tracing::debug!(count = early.len(), "untagged responses before a fetch");
        }
        Ok(Batch {
            tag,
            pending: uids.to_vec(),
            done: false,
            // Flag updates may come besides the answers, but not forever.
            responses_left: uids.len() as u64 * 4 + SLACK,
        })
    }

    /// The next message of a batch, or None when the batch is over.
    pub async fn next(&mut self, batch: &mut Batch) -> Result<Option<Step>> {
        loop {
            if batch.done {
                return Ok(batch.pending.pop().map(|uid| Step::Missing { uid }));
            }
            let mut r = self.conn.read_response().await?;
            batch.responses_left = batch
                .responses_left
                .checked_sub(1)
                .ok_or_else(|| anyhow!("the server sent far more answers to a fetch than it was asked for"))?;
            match r.kind() {
                Kind::Tagged(t) if t == batch.tag => {
                    check_tagged(&mut r).context("fetching messages")?;
                    batch.done = true;
                }
                Kind::Tagged(_) | Kind::Continuation => bail!("unexpected answer: {}", r.display()),
                Kind::Untagged if is_bye(&r) => bail!("the server ended the session: {}", r.display()),
                Kind::Untagged => {
                    let Some(item) = fetch_items(&mut r)? else { continue };
                    let Some(uid) = item.uid else { continue };
                    let Some(pos) = batch.pending.iter().position(|&u| u == uid) else {
                        continue;
                    };
                    // Only a response carrying the body answers our fetch; others are flag updates.
                    match item.body {
                        Some(Value::Str(raw)) => {
                            batch.pending.remove(pos);
                            return Ok(Some(Step::Message(Fetched {
                                uid,
                                flags: item.flags,
                                internal_date: item.internal_date,
                                raw,
                            })));
                        }
                        Some(Value::TooBig(size)) => {
                            batch.pending.remove(pos);
                            return Ok(Some(Step::TooBig { uid, size }));
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    pub async fn logout(mut self) {
        let _ = self.conn.run(&[Arg::Raw("LOGOUT")]).await;
    }
}

/// A UID FETCH in flight.
pub struct Batch {
    tag: String,
    pending: Vec<u32>,
    done: bool,
    responses_left: u64,
}

/// Untagged responses allowed beyond what a command asked for (EXISTS, EXPUNGE, flag changes
/// from other sessions).
const SLACK: u64 = 1000;

struct FetchItems {
    uid: Option<u32>,
    size: Option<u64>,
    flags: Vec<String>,
    internal_date: Option<DateTime<Utc>>,
    body: Option<Value>,
    labels: Option<Vec<String>>,
}

/// The items of `* n FETCH (...)` (RFC 3501 section 7.4.2); None for any other response.
fn fetch_items(r: &mut Response) -> Result<Option<FetchItems>> {
    let mut p = r.parser();
    if p.value()?.number().is_none() || !p.value()?.atom().is_some_and(|a| a.eq_ignore_ascii_case("FETCH")) {
        return Ok(None);
    }
    let Value::List(items) = p.value()? else {
        bail!("malformed FETCH response");
    };
    let mut out = FetchItems {
        uid: None,
        size: None,
        flags: Vec::new(),
        internal_date: None,
        body: None,
        labels: None,
    };
    let mut items = items.into_iter();
    while let Some(name) = items.next() {
        let name = name.atom().map(str::to_ascii_uppercase).unwrap_or_default();
        let value = items.next().ok_or_else(|| anyhow!("FETCH item {name} has no value"))?;
        match name.as_str() {
            "UID" => out.uid = value.number().and_then(|n| u32::try_from(n).ok()),
            "RFC822.SIZE" => out.size = value.number(),
            "FLAGS" => {
                if let Value::List(flags) = value {
                    out.flags = flags
                        .iter()
                        .filter_map(Value::atom)
                        // \Recent belongs to the session, it cannot be stored (RFC 3501 2.3.2).
                        .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
                        .map(str::to_string)
                        .collect();
                }
            }
            "INTERNALDATE" => out.internal_date = value.bytes().and_then(parse_internal_date),
            "BODY[]" | "RFC822" => out.body = Some(value),
            "X-GM-LABELS" => {
                if let Value::List(labels) = value {
                    out.labels = Some(
                        labels
                            .iter()
                            .filter_map(Value::bytes)
                            .map(|l| String::from_utf8_lossy(l).into_owned())
                            .collect(),
                    );
                }
            }
            _ => {}
        }
    }
    Ok(Some(out))
}

/// Gmail's folders that hold no mail of their own (RFC 6154 \All, \Important, \Flagged):
/// every message in them is also in INBOX, Sent or a label, and starring is the \Flagged flag.
const GMAIL_VIRTUAL: &[&str] = &["all mail", "important", "starred"];

/// Decide whether a LIST entry is imported, and as what; None to skip it.
///
/// `gmail`: the server is Gmail (X-GM-EXT-1), whose "All Mail" holds the archived mail that is
/// in no other folder; it is read for that mail only (see [`RemoteFolder::archived_only`]).
pub fn classify(wire: &[u8], delimiter: Option<char>, attrs: &[String], gmail: bool) -> Option<RemoteFolder> {
    let decoded = decode_mailbox_name(wire);
    let has = |a: &str| attrs.iter().any(|x| x == a);
    // RFC 3501 section 7.2.2 \Noselect and RFC 5258 \NonExistent: not a mailbox.
    if has("\\noselect") || has("\\nonexistent") {
        return None;
    }
    // Our hierarchy delimiter is '/'. A '/' inside one of the server's levels cannot stay.
    let remote = match delimiter {
        Some('/') | None => decoded.clone(),
        Some(d) => decoded
            .split(d)
            .map(|part| part.replace('/', "_"))
            .collect::<Vec<_>>()
            .join("/"),
    };
    let remote = if remote.eq_ignore_ascii_case("INBOX") {
        "INBOX".to_string()
    } else {
        remote
    };
    let gmail_leaf = remote
        .strip_prefix("[Gmail]/")
        .or_else(|| remote.strip_prefix("[Google Mail]/"))
        .map(str::to_ascii_lowercase);
    let all_mail = has("\\all") || gmail_leaf.as_deref() == Some("all mail");
    if all_mail && gmail {
        return Some(RemoteFolder {
            wire: wire.to_vec(),
            remote,
            local: "Archive".to_string(),
            archived_only: true,
        });
    }
    if has("\\all") || has("\\important") || has("\\flagged") {
        return None;
    }
    if let Some(leaf) = &gmail_leaf
        && GMAIL_VIRTUAL.contains(&leaf.as_str())
    {
        return None;
    }
    let special = if has("\\sent") {
        Some("Sent")
    } else if has("\\drafts") {
        Some("Drafts")
    } else if has("\\trash") {
        Some("Trash")
    } else if has("\\junk") {
        Some("Junk")
    } else {
        // Gmail's own names, for a server that does not say SPECIAL-USE.
        match gmail_leaf.as_deref() {
            Some("sent mail") => Some("Sent"),
            Some("drafts") => Some("Drafts"),
            Some("trash") | Some("bin") => Some("Trash"),
            Some("spam") => Some("Junk"),
            _ => None,
        }
    };
    Some(RemoteFolder {
        wire: wire.to_vec(),
        local: special.map(str::to_string).unwrap_or_else(|| remote.clone()),
        remote,
        archived_only: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Not Gmail.
    fn c(wire: &[u8], delimiter: Option<char>, attrs: &[String]) -> Option<RemoteFolder> {
        classify(wire, delimiter, attrs, false)
    }

    #[test]
    fn gmail_all_mail_is_read_for_archived_mail_only() {
        let all = classify(b"[Gmail]/All Mail", Some('/'), &attrs(&["\\All"]), true).unwrap();
        assert!(all.archived_only);
        assert_eq!(all.local, "Archive");
        let all = classify(b"[Google Mail]/All Mail", Some('/'), &[], true).unwrap();
        assert!(all.archived_only);
        assert!(classify(b"[Gmail]/Starred", Some('/'), &attrs(&["\\Flagged"]), true).is_none());
        assert!(classify(b"[Gmail]/Important", Some('/'), &[], true).is_none());
        assert!(!classify(b"INBOX", Some('/'), &[], true).unwrap().archived_only);
    }

    fn attrs(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_ascii_lowercase()).collect()
    }

    #[test]
    fn gmail_folders_map() {
        assert!(c(b"[Gmail]", Some('/'), &attrs(&["\\Noselect", "\\HasChildren"])).is_none());
        assert!(c(b"[Gmail]/All Mail", Some('/'), &attrs(&["\\All"])).is_none());
        assert!(c(b"[Gmail]/All Mail", Some('/'), &[]).is_none());
        assert!(c(b"[Gmail]/Starred", Some('/'), &attrs(&["\\Flagged"])).is_none());
        assert!(c(b"[Gmail]/Important", Some('/'), &[]).is_none());
        let sent = c(b"[Gmail]/Sent Mail", Some('/'), &attrs(&["\\Sent"])).unwrap();
        assert_eq!(
            (sent.remote.as_str(), sent.local.as_str()),
            ("[Gmail]/Sent Mail", "Sent")
        );
        assert_eq!(c(b"[Google Mail]/Bin", Some('/'), &[]).unwrap().local, "Trash");
        assert_eq!(c(b"[Gmail]/Spam", Some('/'), &[]).unwrap().local, "Junk");
        assert_eq!(c(b"Gesendet", Some('/'), &attrs(&["\\Sent"])).unwrap().local, "Sent");
        assert_eq!(c(b"inbox", Some('/'), &[]).unwrap().local, "INBOX");
    }

    #[test]
    fn delimiters_map_to_slash() {
        let f = c(b"Work.Entw&APw-rfe", Some('.'), &[]).unwrap();
        assert_eq!(f.local, "Work/Entwürfe");
        assert_eq!(f.wire, b"Work.Entw&APw-rfe");
        assert_eq!(c(b"a/b.c", Some('.'), &[]).unwrap().local, "a_b/c");
    }

    #[test]
    fn host_ports() {
        assert_eq!(
            parse_host_port("imap.gmail.com", Security::Tls).unwrap(),
            ("imap.gmail.com".into(), 993)
        );
        assert_eq!(parse_host_port("h:1143", Security::Plain).unwrap(), ("h".into(), 1143));
        assert_eq!(
            parse_host_port("[::1]:44", Security::Plain).unwrap(),
            ("::1".into(), 44)
        );
        assert_eq!(parse_host_port("::1", Security::StartTls).unwrap(), ("::1".into(), 143));
        assert!(parse_host_port("h:x", Security::Tls).is_err());
        assert!(parse_host_port(":5", Security::Tls).is_err());
    }
}

/// A hostile or broken server, scripted over a real socket on loopback, against the real
/// client code: what it can make the importer hold or wait for is bounded.
#[cfg(test)]
mod hostile {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    use super::*;

    /// A server that greets, then answers each command line with `reply(tag, command)`, and
    /// hangs (keeps the connection, says nothing) when the reply is None.
    fn server(reply: impl Fn(&str, &str) -> Option<Vec<u8>> + Send + 'static) -> u16 {
        server_with("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hostile\r\n", reply)
    }

    fn server_with(greeting: &'static str, reply: impl Fn(&str, &str) -> Option<Vec<u8>> + Send + 'static) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let Ok((stream, _)) = listener.accept() else { return };
            let mut out = stream.try_clone().unwrap();
            let _ = out.write_all(greeting.as_bytes());
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { return };
                let (tag, command) = line.split_once(' ').unwrap_or((&line, ""));
                match reply(tag, command) {
                    Some(bytes) => {
                        if out.write_all(&bytes).is_err() {
                            return;
                        }
                    }
                    None => std::thread::sleep(Duration::from_secs(30)),
                }
            }
        });
        port
    }

    fn options(port: u16, security: Security) -> Options {
        Options {
            host: "127.0.0.1".into(),
            port,
            security,
            user: "u".into(),
            password: "p".into(),
            ca_file: None,
            max_message_size: 1000,
            timeout: Duration::from_secs(2),
        }
    }

    /// Logs in, lists one folder "F" holding UID 7 of size 10, and answers the body fetch
    /// with `body`.
    fn one_folder(body: &'static [u8]) -> impl Fn(&str, &str) -> Option<Vec<u8>> {
        move |tag, command| {
            let ok = format!("{tag} OK done\r\n").into_bytes();
            let c = command.to_ascii_uppercase();
            let mut r = Vec::new();
            if c.starts_with("LIST") {
                r.extend_from_slice(b"* LIST () \"/\" F\r\n");
            } else if c.starts_with("EXAMINE") {
                r.extend_from_slice(b"* 1 EXISTS\r\n* OK [UIDVALIDITY 42] ok\r\n");
            } else if c.starts_with("UID FETCH 1:*") {
                r.extend_from_slice(b"* 1 FETCH (UID 7 RFC822.SIZE 10)\r\n");
            } else if c.starts_with("UID FETCH 7 ") {
                r.extend_from_slice(body);
            }
            r.extend_from_slice(&ok);
            Some(r)
        }
    }

    async fn fetch_all(opts: &Options) -> Result<Vec<Step>> {
        let mut session = Session::connect(opts).await?;
        let mut steps = Vec::new();
        for folder in session.folders().await? {
            let plan = session.plan(&folder).await?;
            let uids: Vec<u32> = plan.messages.iter().map(|m| m.0).collect();
            let mut batch = session.fetch_batch(&uids).await?;
            while let Some(step) = session.next(&mut batch).await? {
                steps.push(step);
            }
        }
        Ok(steps)
    }

    #[tokio::test]
    async fn a_literal_larger_than_it_said_is_dropped_not_kept() {
        // RFC822.SIZE said 10; the literal is 5000, over max_message_size (1000).
        let body: &'static [u8] = Box::leak(
            [
                &b"* 1 FETCH (UID 7 FLAGS (\\Seen) BODY[] {5000}\r\n"[..],
                &vec![b'x'; 5000],
                b")\r\n",
            ]
            .concat()
            .into_boxed_slice(),
        );
        let port = server(one_folder(body));
        let steps = fetch_all(&options(port, Security::Plain)).await.unwrap();
        assert!(
            matches!(steps.as_slice(), [Step::TooBig { uid: 7, size: 5000 }]),
            "{steps:?}"
        );
    }

    #[tokio::test]
    async fn literals_of_one_answer_share_one_budget() {
        // Each literal is within max_message_size, together they are far over it (and over the
        // 64 KiB slack): the second is dropped, not held besides the first.
        let body: &'static [u8] = Box::leak(
            [
                &b"* 1 FETCH (UID 7 X-OTHER {90000}\r\n"[..],
                &vec![b'y'; 90000],
                b" BODY[] {90000}\r\n",
                &vec![b'x'; 90000],
                b")\r\n",
            ]
            .concat()
            .into_boxed_slice(),
        );
        let mut opts = options(server(one_folder(body)), Security::Plain);
        opts.max_message_size = 100_000;
        let steps = fetch_all(&opts).await.unwrap();
        assert!(
            matches!(steps.as_slice(), [Step::TooBig { uid: 7, size: 90000 }]),
            "{steps:?}"
        );
    }

    #[tokio::test]
    async fn login_sends_an_8bit_password_as_a_literal() {
        // No AUTH=PLAIN: LOGIN (RFC 3501 6.2.3); a password that cannot be quoted goes as a
        // synchronizing literal after the server's continuation (section 4.3).
        let greeting = "* OK [CAPABILITY IMAP4rev1] old server\r\n";
        let port = server_with(greeting, |tag, command| {
            if command == "LOGIN \"u\" {6}" {
                Some(b"+ go ahead\r\n".to_vec())
            } else if tag == "p\u{e4}\"ss" && command.is_empty() {
                // The literal's bytes and the end of the LOGIN line.
                Some(b"t1 OK logged in\r\n".to_vec())
            } else if command == "CAPABILITY" {
                Some(format!("* CAPABILITY IMAP4rev1\r\n{tag} OK\r\n").into_bytes())
            } else {
                Some(format!("{tag} BAD unexpected {command:?}\r\n").into_bytes())
            }
        });
        let mut opts = options(port, Security::Plain);
        opts.password = "p\u{e4}\"ss".into();
        Session::connect(&opts).await.unwrap();
    }

    #[tokio::test]
    async fn a_good_message_comes_through() {
        let port = server(one_folder(
            b"* 1 FETCH (UID 7 FLAGS (\\Seen \\Recent kw) INTERNALDATE \"01-Feb-2020 10:00:00 +0000\" BODY[] {10}\r\n0123456789)\r\n",
        ));
        let steps = fetch_all(&options(port, Security::Plain)).await.unwrap();
        let [Step::Message(m)] = steps.as_slice() else {
            panic!("{steps:?}")
        };
        assert_eq!((m.uid, m.raw.as_slice()), (7, &b"0123456789"[..]));
        assert_eq!(m.flags, vec!["\\Seen", "kw"]);
        assert_eq!(m.internal_date.unwrap().to_rfc3339(), "2020-02-01T10:00:00+00:00");
    }

    #[tokio::test]
    async fn an_endless_line_is_refused() {
        let port = server(|tag, command| {
            if command.starts_with("LIST") {
                let mut r = b"* LIST () \"/\" ".to_vec();
                r.extend(std::iter::repeat_n(b'a', super::super::proto::MAX_LINE + 10));
                r.extend_from_slice(format!("\r\n{tag} OK\r\n").as_bytes());
                Some(r)
            } else {
                Some(format!("{tag} OK\r\n").into_bytes())
            }
        });
        let e = fetch_all(&options(port, Security::Plain)).await.unwrap_err();
        assert!(format!("{e:#}").contains("longer than"), "{e:#}");
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let port = server(|tag, command| {
            if command.starts_with("LIST") {
                None
            } else {
                Some(format!("{tag} OK\r\n").into_bytes())
            }
        });
        let started = std::time::Instant::now();
        let e = fetch_all(&options(port, Security::Plain)).await.unwrap_err();
        assert!(format!("{e:#}").contains("sent nothing for 2s"), "{e:#}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn more_messages_than_it_has_is_refused() {
        let port = server(|tag, command| {
            let c = command.to_ascii_uppercase();
            let mut r = Vec::new();
            if c.starts_with("LIST") {
                r.extend_from_slice(b"* LIST () \"/\" F\r\n");
            } else if c.starts_with("EXAMINE") {
                r.extend_from_slice(b"* 1 EXISTS\r\n* OK [UIDVALIDITY 42] ok\r\n");
            } else if c.starts_with("UID FETCH 1:*") {
                for uid in 1..=5000 {
                    r.extend_from_slice(format!("* 1 FETCH (UID {uid} RFC822.SIZE 10)\r\n").as_bytes());
                }
            }
            r.extend_from_slice(format!("{tag} OK\r\n").as_bytes());
            Some(r)
        });
        let e = fetch_all(&options(port, Security::Plain)).await.unwrap_err();
        assert!(format!("{e:#}").contains("more messages than the 1"), "{e:#}");
    }

    #[tokio::test]
    async fn data_injected_before_the_tls_handshake_is_refused() {
        // CVE-2011-0411's pattern: the answer to STARTTLS and a forged line in one packet.
        let port = server_with("* OK hostile\r\n", |tag, command| {
            if command.eq_ignore_ascii_case("CAPABILITY") {
                Some(format!("* CAPABILITY IMAP4rev1 STARTTLS\r\n{tag} OK\r\n").into_bytes())
            } else if command.eq_ignore_ascii_case("STARTTLS") {
                Some(format!("{tag} OK begin TLS\r\n* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n").into_bytes())
            } else {
                Some(format!("{tag} BAD\r\n").into_bytes())
            }
        });
        shared::tls::install_crypto_provider();
        let e = Session::connect(&options(port, Security::StartTls))
            .await
            .err()
            .expect("refused");
        assert!(format!("{e:#}").contains("after STARTTLS"), "{e:#}");
    }

    #[tokio::test]
    async fn a_server_without_starttls_is_not_used_in_clear() {
        let port = server(|tag, _| Some(format!("{tag} OK\r\n").into_bytes()));
        let e = Session::connect(&options(port, Security::StartTls))
            .await
            .err()
            .expect("refused");
        assert!(format!("{e:#}").contains("does not offer STARTTLS"), "{e:#}");
    }
}

/// Gmail (X-GM-EXT-1) scripted over a real socket: what its "All Mail" contributes.
#[cfg(test)]
mod gmail {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    use super::*;

    #[tokio::test]
    async fn archived_mail_comes_from_all_mail_and_nothing_twice() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut out = stream.try_clone().unwrap();
            out.write_all(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR X-GM-EXT-1] Gimap ready\r\n")
                .unwrap();
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { return };
                let (tag, command) = line.split_once(' ').unwrap();
                let c = command.to_ascii_uppercase();
                let mut r = Vec::new();
                if c.starts_with("LIST") {
                    r.extend_from_slice(
                        b"* LIST (\\HasNoChildren) \"/\" \"INBOX\"\r\n\
                          * LIST (\\HasChildren \\Noselect) \"/\" \"[Gmail]\"\r\n\
                          * LIST (\\All \\HasNoChildren) \"/\" \"[Gmail]/All Mail\"\r\n\
                          * LIST (\\Flagged \\HasNoChildren) \"/\" \"[Gmail]/Starred\"\r\n\
                          * LIST (\\HasNoChildren \\Important) \"/\" \"[Gmail]/Important\"\r\n",
                    );
                } else if c.starts_with("EXAMINE") {
                    r.extend_from_slice(b"* 5 EXISTS\r\n* OK [UIDVALIDITY 9] ok\r\n");
                } else if c.starts_with("UID FETCH 1:* (UID RFC822.SIZE X-GM-LABELS)") {
                    r.extend_from_slice(
                        b"* 1 FETCH (X-GM-LABELS (\\Inbox) UID 1 RFC822.SIZE 10)\r\n\
                          * 2 FETCH (X-GM-LABELS () UID 2 RFC822.SIZE 20)\r\n\
                          * 3 FETCH (X-GM-LABELS (\\Important \\Starred) UID 3 RFC822.SIZE 30)\r\n\
                          * 4 FETCH (X-GM-LABELS (\"Fam&AO0-lia\") UID 4 RFC822.SIZE 40)\r\n\
                          * 5 FETCH (X-GM-LABELS (\\Sent \\Important) UID 5 RFC822.SIZE 50)\r\n",
                    );
                } else if c.starts_with("UID FETCH 1:*") {
                    r.extend_from_slice(b"* 1 FETCH (UID 1 RFC822.SIZE 10)\r\n");
                }
                r.extend_from_slice(format!("{tag} OK done\r\n").as_bytes());
                out.write_all(&r).unwrap();
            }
        });
        let opts = Options {
            host: "127.0.0.1".into(),
            port,
            security: Security::Plain,
            user: "u".into(),
            password: "p".into(),
            ca_file: None,
            max_message_size: 1000,
            timeout: Duration::from_secs(2),
        };
        let mut session = Session::connect(&opts).await.unwrap();
        let folders = session.folders().await.unwrap();
        let names: Vec<(&str, &str)> = folders.iter().map(|f| (f.remote.as_str(), f.local.as_str())).collect();
        assert_eq!(names, vec![("INBOX", "INBOX"), ("[Gmail]/All Mail", "Archive")]);
        let plan = session.plan(&folders[1]).await.unwrap();
        // Only 2 (no label) and 3 (important and starred, nothing else) are archived.
        assert_eq!(plan.messages, vec![(2, 20), (3, 30)]);
        let plan = session.plan(&folders[0]).await.unwrap();
        assert_eq!(plan.messages, vec![(1, 10)]);
    }
}
