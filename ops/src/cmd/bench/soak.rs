//! `tinydc bench soak`: load and faults together, on a throwaway install run by the real
//! `tinydc up`. For a fixed time, IMAP sessions idle (IDLE) and sync and sometimes APPEND, SMTP
//! senders deliver to them on the MX port, WebDAV clients PUT files; a third of the way in a
//! daemon is SIGKILLed, two thirds in PostgreSQL's postmaster, and `up` must bring each back.
//! Every acknowledged item (SMTP 250 after DATA, APPEND OK, PUT 201/204) is recorded and looked
//! for at the end: the durability contract says none may be missing. It reports protocol errors
//! by kind, PSS peaks of the daemons and PostgreSQL, and how long each kill took to recover from.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use shared::process::{Signal, send_signal};
use tokio::task::JoinSet;

use super::http::{Body, Https};
use super::imap::Imap;
use super::memory::{pss_kib, with_children};
use super::suite::{DOMAIN, PASSWORD, Suite};
use super::wire::{Conn, show, within};
use crate::cmd::up::DAEMONS;

#[derive(Args, Clone, Debug)]
pub struct SoakArgs {
    /// How long the load runs, in seconds.
    #[arg(long, default_value_t = 120)]
    pub seconds: u64,
    /// IMAP sessions idling (IDLE), syncing and appending.
    #[arg(long, default_value_t = 200)]
    pub imap_sessions: usize,
    /// SMTP connections delivering on the MX port.
    #[arg(long, default_value_t = 20)]
    pub smtp_senders: usize,
    /// WebDAV clients uploading files.
    #[arg(long, default_value_t = 20)]
    pub dav_clients: usize,
    /// Mail users the sessions and deliveries are spread over.
    #[arg(long, default_value_t = 10)]
    pub users: usize,
    /// Pause of each SMTP sender and WebDAV client between two items, in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub pause_ms: u64,
    /// The daemon SIGKILLed a third of the way in.
    #[arg(long, default_value = "tinydc-imapd", value_parser = ["tinydc-smtpd", "tinydc-imapd", "tinydc-davd"])]
    pub kill_daemon: String,
    /// Keep the throwaway data directory (with up's log in `logs/up.log`).
    #[arg(long)]
    pub keep: bool,
}

/// How long one item (a delivery, an APPEND, a PUT, a login) may take before it counts as an error.
const ITEM_TIMEOUT: Duration = Duration::from_secs(60);
/// The size of each message and file.
const ITEM_SIZE: usize = 2048;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Proto {
    Smtp,
    Imap,
    Dav,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Smtp => "SMTP",
            Proto::Imap => "IMAP",
            Proto::Dav => "WebDAV",
        }
    }
}

/// Everything the clients saw.
#[derive(Default)]
struct Ledger {
    /// (user, Message-ID) of every message acknowledged by SMTP 250 or APPEND OK.
    mail: Mutex<Vec<(String, String)>>,
    /// (user, path) of every file acknowledged by PUT 201/204.
    files: Mutex<Vec<(String, String)>>,
    /// (protocol, when the acknowledged request started, when it was acknowledged): for
    /// recovery times.
    acks: Mutex<Vec<(Proto, Instant, Instant)>>,
    /// Errors by kind.
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Ledger {
    fn error(&self, proto: Proto, e: &anyhow::Error) {
        let kind = classify(&format!("{e:#}"));
        *self
            .errors
            .lock()
            .expect("not poisoned")
            .entry(format!("{}: {kind}", proto.name()))
            .or_default() += 1;
    }

    fn ack(&self, proto: Proto, started: Instant) {
        self.acks
            .lock()
            .expect("not poisoned")
            .push((proto, started, Instant::now()));
    }

    /// How long after `at` the first request of `proto` that started after `at` was acknowledged
    /// (a request in flight at the kill may have committed just before it).
    fn recovery(&self, proto: Proto, at: Instant) -> Option<Duration> {
        let acks = self.acks.lock().expect("not poisoned");
        acks.iter()
            .filter(|(p, started, _)| *p == proto && *started >= at)
            .map(|(_, _, acked)| acked.duration_since(at))
            .min()
    }
}

/// An error's kind: its reply code or status without the free text, so errors group.
fn classify(text: &str) -> String {
    let text = text.lines().next().unwrap_or_default();
    if let Some(i) = text.find(" with: ") {
        let reply = &text[i + 7..];
        // `b12 NO [UNAVAILABLE] text` -> `NO [UNAVAILABLE]`; `454 4.3.0 text` -> `454 4.3.0`.
        let words: Vec<&str> = reply.split_whitespace().collect();
        let skip = usize::from(text.starts_with("imapd"));
        return words.iter().skip(skip).take(2).copied().collect::<Vec<_>>().join(" ");
    }
    for known in [
        "Connection refused",
        "Connection reset",
        "closed the connection",
        "no answer within",
        "Broken pipe",
        "TLS handshake",
    ] {
        if text.contains(known) {
            return known.to_string();
        }
    }
    text.chars().take(80).collect()
}

pub async fn run(args: SoakArgs) -> anyhow::Result<()> {
    let users: Vec<String> = (0..args.users.max(1)).map(|i| format!("soak{i}@{DOMAIN}")).collect();
    println!(
        "tinydc bench soak: {} s, {} IMAP sessions, {} SMTP senders, {} WebDAV clients over {} users; \
         SIGKILL of {} at 1/3, of PostgreSQL at 2/3 (under tinydc up)",
        args.seconds,
        args.imap_sessions,
        args.smtp_senders,
        args.dav_clients,
        users.len(),
        args.kill_daemon,
    );
    println!(
        "machine: {} cores, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        super::load_average()
    );
    let suite = Arc::new(Suite::start_supervised(args.keep, &users).await?);
    let result = tokio::select! {
        r = soak(&suite, &args, &users) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    // Aborted client tasks let go of the suite a moment later.
    let mut suite = suite;
    let suite = loop {
        match Arc::try_unwrap(suite) {
            Ok(s) => break s,
            Err(shared) => {
                suite = shared;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let stopped = suite.stop().await;
    result.and(stopped)
}

async fn soak(suite: &Arc<Suite>, args: &SoakArgs, users: &[String]) -> anyhow::Result<()> {
    let ledger = Arc::new(Ledger::default());
    let begin = Instant::now();
    let deadline = begin + Duration::from_secs(args.seconds.max(3));
    let pause = Duration::from_millis(args.pause_ms);
    let mut clients = JoinSet::new();
    for i in 0..args.imap_sessions {
        let (suite, ledger, user) = (suite.clone(), ledger.clone(), users[i % users.len()].clone());
        // Staggered, so 200 logins (argon2 each) do not all land in the same instant.
        let start = Duration::from_millis(15 * i as u64);
        clients.spawn(async move {
            tokio::time::sleep(start).await;
            imap_session(&suite, &ledger, &user, i, deadline).await
        });
    }
    for i in 0..args.smtp_senders {
        let (suite, ledger, users) = (suite.clone(), ledger.clone(), users.to_vec());
        clients.spawn(async move { smtp_sender(&suite, &ledger, &users, i, deadline, pause).await });
    }
    for i in 0..args.dav_clients {
        let (suite, ledger, user) = (suite.clone(), ledger.clone(), users[i % users.len()].clone());
        clients.spawn(async move { dav_client(&suite, &ledger, &user, i, deadline, pause).await });
    }

    // Memory peaks, sampled every second while the load runs.
    let peaks: Arc<Mutex<BTreeMap<&'static str, u64>>> = Arc::default();
    let sampler = {
        let (suite, peaks) = (Arc::downgrade(suite), peaks.clone());
        tokio::spawn(async move {
            while let Some(suite) = suite.upgrade() {
                let mut sample = Vec::new();
                for name in DAEMONS {
                    if let Some(pid) = suite.daemon_pid(name) {
                        sample.push((name, pss_kib(pid).unwrap_or(0)));
                    }
                }
                if let Some(pm) = suite.postgres_pid() {
                    sample.push(("postgresql", with_children(pm).iter().filter_map(|&p| pss_kib(p)).sum()));
                }
                {
                    let mut peaks = peaks.lock().expect("not poisoned");
                    for (name, kib) in sample {
                        let peak = peaks.entry(name).or_default();
                        *peak = (*peak).max(kib);
                    }
                }
                drop(suite);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };

    // The faults.
    let third = Duration::from_secs(args.seconds.max(3)) / 3;
    tokio::time::sleep_until((begin + third).into()).await;
    let daemon = args.kill_daemon.as_str();
    let pid = suite
        .daemon_pid(daemon)
        .with_context(|| format!("{daemon} is not running"))?;
    send_signal(pid, Signal::Kill)?;
    let daemon_killed = Instant::now();
    println!("{:>6.1} s  SIGKILL {daemon} (pid {pid})", begin.elapsed().as_secs_f64());
    tokio::time::sleep_until((begin + third * 2).into()).await;
    let pm = suite.postgres_pid().context("PostgreSQL is not running")?;
    send_signal(pm, Signal::Kill)?;
    let pg_killed = Instant::now();
    println!(
        "{:>6.1} s  SIGKILL PostgreSQL's postmaster (pid {pm})",
        begin.elapsed().as_secs_f64()
    );

    tokio::time::sleep_until(deadline.into()).await;
    println!(
        "{:>6.1} s  load stops; waiting for requests in flight",
        begin.elapsed().as_secs_f64()
    );
    let drained = tokio::time::timeout(ITEM_TIMEOUT + Duration::from_secs(15), async {
        while clients.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        clients.abort_all();
        while clients.join_next().await.is_some() {}
        println!("        (some clients were still waiting for an answer and were stopped)");
    }
    sampler.abort();
    let _ = sampler.await;

    // Everything acknowledged must be there.
    let missing = verify(suite, &ledger, users).await?;

    let mail = ledger.mail.lock().expect("not poisoned").len();
    let files = ledger.files.lock().expect("not poisoned").len();
    let count = |p: Proto| {
        ledger
            .acks
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|(q, _, _)| *q == p)
            .count()
    };
    let appends = ledger
        .mail
        .lock()
        .expect("not poisoned")
        .iter()
        .filter(|(_, id)| id.starts_with("<soak.imap."))
        .count();
    println!();
    println!(
        "acknowledged: {} SMTP deliveries (250), {} APPENDs (OK), {} WebDAV PUTs (201/204); {} IMAP logins",
        count(Proto::Smtp),
        appends,
        count(Proto::Dav),
        count(Proto::Imap) - appends
    );
    println!(
        "missing after the run: {} of {} (messages {}, files {})",
        missing.len(),
        mail + files,
        mail,
        files
    );
    for m in missing.iter().take(20) {
        println!("  missing: {m}");
    }
    println!("protocol errors by kind:");
    let errors = ledger.errors.lock().expect("not poisoned").clone();
    if errors.is_empty() {
        println!("  none");
    }
    for (kind, n) in &errors {
        println!("  {n:>6}  {kind}");
    }
    println!("recovery (first acknowledged request, or IMAP login, started after the kill):");
    let show_recovery = |proto: Proto, at: Instant| match ledger.recovery(proto, at) {
        Some(d) => format!("{} {:.1} s", proto.name(), d.as_secs_f64()),
        None => format!("{} never", proto.name()),
    };
    let daemon_proto = match daemon {
        "tinydc-smtpd" => Proto::Smtp,
        "tinydc-davd" => Proto::Dav,
        _ => Proto::Imap,
    };
    println!("  SIGKILL {daemon}: {}", show_recovery(daemon_proto, daemon_killed));
    println!(
        "  SIGKILL PostgreSQL: {}, {}, {}",
        show_recovery(Proto::Smtp, pg_killed),
        show_recovery(Proto::Imap, pg_killed),
        show_recovery(Proto::Dav, pg_killed)
    );
    for line in suite
        .up_log()
        .lines()
        .filter(|l| l.contains("serving again") || l.contains("exited ("))
    {
        println!("  up: {}", line.trim());
    }
    println!("memory peaks (PSS, sampled each second):");
    for (name, kib) in peaks.lock().expect("not poisoned").iter() {
        println!("  {name:<14} {:>8.1} MiB", *kib as f64 / 1024.0);
    }
    if !missing.is_empty() {
        bail!("{} acknowledged items are missing", missing.len());
    }
    Ok(())
}

/// One IMAP session until `deadline`: log in, select INBOX, then over and over IDLE for a few
/// seconds (woken by deliveries), sync new messages' flags, and every fifth round APPEND one.
/// A broken session is counted and replaced by a new one.
async fn imap_session(suite: &Suite, ledger: &Ledger, user: &str, n: usize, deadline: Instant) {
    let mut round = 0u64;
    while Instant::now() < deadline {
        let started = Instant::now();
        let result = within(ITEM_TIMEOUT, "IMAP login", async {
            let mut imap = Conn::connect(suite.addr_imap()).await?;
            let greeting = imap.line().await?;
            if !greeting.starts_with(b"* OK") {
                bail!("imapd greeted with: {}", show(&greeting));
            }
            tagged(&mut imap, "l", &format!("LOGIN \"{user}\" \"{PASSWORD}\"")).await?;
            tagged(&mut imap, "s", "SELECT INBOX").await?;
            Ok(imap)
        })
        .await;
        let mut imap = match result {
            Ok(imap) => {
                // A login and SELECT answer from the database too: they count for recovery.
                ledger.ack(Proto::Imap, started);
                imap
            }
            Err(e) => {
                ledger.error(Proto::Imap, &e);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut last_uid = 0u64;
        let outcome: anyhow::Result<()> = async {
            while Instant::now() < deadline {
                round += 1;
                // IDLE (RFC 2177) for 2 to 6 s, or until something arrives.
                imap.send(b"i IDLE\r\n").await?;
                let cont = within(ITEM_TIMEOUT, "IDLE", imap.line()).await?;
                if !cont.starts_with(b"+") {
                    bail!("IDLE answered with: {}", show(&cont));
                }
                let idle = Duration::from_millis(2000 + (n as u64 * 397 + round * 211) % 4000);
                let _ = tokio::time::timeout(idle, imap.line()).await;
                imap.send(b"DONE\r\n").await?;
                wait_tagged(&mut imap, "i").await?;
                // Sync: what arrived since the last round (RFC 3501 section 6.4.8).
                let lines = tagged(&mut imap, "f", &format!("UID FETCH {}:* (UID FLAGS)", last_uid + 1)).await?;
                for line in lines {
                    if let Some(uid) = uid_of(&line) {
                        last_uid = last_uid.max(uid);
                    }
                }
                if round.is_multiple_of(5) {
                    let id = format!("<soak.imap.{n}.{round}@{DOMAIN}>");
                    let body = message(&id, user);
                    let started = Instant::now();
                    // LITERAL+ (RFC 7888): the literal follows without waiting for a continuation.
                    let mut cmd = format!("a APPEND INBOX {{{}+}}\r\n", body.len()).into_bytes();
                    cmd.extend_from_slice(&body);
                    cmd.extend_from_slice(b"\r\n");
                    imap.send(&cmd).await?;
                    wait_tagged(&mut imap, "a").await?;
                    ledger.mail.lock().expect("not poisoned").push((user.to_string(), id));
                    ledger.ack(Proto::Imap, started);
                }
            }
            let _ = imap.send(b"z LOGOUT\r\n").await;
            Ok(())
        }
        .await;
        if let Err(e) = outcome {
            ledger.error(Proto::Imap, &e);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Send `tag command`, read up to the tagged reply; its untagged lines, or an error unless OK.
async fn tagged(imap: &mut Conn, tag: &str, command: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    imap.send(format!("{tag} {command}\r\n").as_bytes()).await?;
    wait_tagged(imap, tag).await
}

async fn wait_tagged(imap: &mut Conn, tag: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    within(ITEM_TIMEOUT, "IMAP command", async {
        let mut untagged = Vec::new();
        loop {
            let line = imap.line().await?;
            if line.starts_with(tag.as_bytes()) && line.get(tag.len()) == Some(&b' ') {
                if line[tag.len() + 1..].starts_with(b"OK") {
                    return Ok(untagged);
                }
                bail!("imapd answered with: {}", show(&line));
            }
            untagged.push(line);
        }
    })
    .await
}

/// The UID in `* 5 FETCH (UID 17 FLAGS (\Seen))`.
fn uid_of(line: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(line).ok()?;
    let rest = &text[text.find("UID ")? + 4..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// One SMTP connection on the MX port until `deadline`, delivering one message after another
/// (each to one of the users, round robin). A refused or broken connection is counted and
/// replaced.
async fn smtp_sender(suite: &Suite, ledger: &Ledger, users: &[String], n: usize, deadline: Instant, pause: Duration) {
    let mut count = 0usize;
    while Instant::now() < deadline {
        let outcome: anyhow::Result<()> = async {
            let mut smtp = Conn::connect(suite.addr_smtp()).await?;
            reply(&mut smtp, "220").await?;
            smtp.send(b"EHLO soak.sender.test\r\n").await?;
            reply(&mut smtp, "250").await?;
            while Instant::now() < deadline {
                count += 1;
                let to = &users[(n + count) % users.len()];
                let id = format!("<soak.smtp.{n}.{count}@{DOMAIN}>");
                let started = Instant::now();
                within(ITEM_TIMEOUT, "SMTP delivery", async {
                    smtp.send(format!("MAIL FROM:<sender{n}@sender.test>\r\n").as_bytes())
                        .await?;
                    reply(&mut smtp, "250").await?;
                    smtp.send(format!("RCPT TO:<{to}>\r\n").as_bytes()).await?;
                    reply(&mut smtp, "250").await?;
                    smtp.send(b"DATA\r\n").await?;
                    reply(&mut smtp, "354").await?;
                    let mut data = message(&id, to);
                    data.extend_from_slice(b".\r\n");
                    smtp.send(&data).await?;
                    reply(&mut smtp, "250").await
                })
                .await?;
                ledger.mail.lock().expect("not poisoned").push((to.clone(), id));
                ledger.ack(Proto::Smtp, started);
                tokio::time::sleep(pause).await;
            }
            let _ = smtp.send(b"QUIT\r\n").await;
            Ok(())
        }
        .await;
        if let Err(e) = outcome {
            ledger.error(Proto::Smtp, &e);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Read one (possibly multi-line) SMTP reply; an error unless its code is `code`.
async fn reply(smtp: &mut Conn, code: &str) -> anyhow::Result<()> {
    loop {
        let line = within(ITEM_TIMEOUT, "SMTP reply", smtp.line()).await?;
        if line.len() < 4 || !line.starts_with(code.as_bytes()) {
            bail!("smtpd answered with: {}", show(&line));
        }
        if line[3] == b' ' {
            return Ok(());
        }
    }
}

/// One WebDAV client until `deadline`: PUT one new file after another into the user's share.
async fn dav_client(suite: &Suite, ledger: &Ledger, user: &str, n: usize, deadline: Instant, pause: Duration) {
    let mut count = 0usize;
    let body = vec![b'd'; ITEM_SIZE];
    while Instant::now() < deadline {
        let outcome: anyhow::Result<()> = async {
            let mut dav = within(
                ITEM_TIMEOUT,
                "WebDAV connect",
                Https::connect(suite.addr_dav(), &suite.config.tls.cert_file, user, PASSWORD),
            )
            .await?;
            while Instant::now() < deadline {
                count += 1;
                let path = format!("/soak-{n}-{count}.bin");
                let started = Instant::now();
                let response = within(
                    ITEM_TIMEOUT,
                    "WebDAV PUT",
                    dav.request("PUT", &path, &[], Body::Bytes(&body), false),
                )
                .await?;
                if !matches!(response.status, 201 | 204) {
                    bail!("davd answered PUT with: {}", response.status);
                }
                ledger
                    .files
                    .lock()
                    .expect("not poisoned")
                    .push((user.to_string(), path));
                ledger.ack(Proto::Dav, started);
                tokio::time::sleep(pause).await;
            }
            Ok(())
        }
        .await;
        if let Err(e) = outcome {
            ledger.error(Proto::Dav, &e);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// A small message with a Message-ID to find it by.
fn message(id: &str, to: &str) -> Vec<u8> {
    let mut raw = format!(
        "From: Soak <soak@sender.test>\r\nTo: {to}\r\nSubject: soak {id}\r\n\
         Date: Fri, 04 Dec 2026 12:00:00 +0000\r\nMessage-ID: {id}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    .into_bytes();
    while raw.len() < ITEM_SIZE {
        raw.extend_from_slice(b"a line of soak text to fill the message up to its size\r\n");
    }
    raw
}

/// Every acknowledged item that is not there: messages by Message-ID in each user's INBOX
/// (over IMAP), files by name in each user's share (a WebDAV PROPFIND).
async fn verify(suite: &Suite, ledger: &Ledger, users: &[String]) -> anyhow::Result<Vec<String>> {
    let mut missing = Vec::new();
    let mail = ledger.mail.lock().expect("not poisoned").clone();
    let files = ledger.files.lock().expect("not poisoned").clone();
    for user in users {
        let mut imap = within(ITEM_TIMEOUT, "verifying login", Imap::login(suite, user)).await?;
        imap.select("INBOX").await?;
        let responses = imap
            .command(b"UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
            .await
            .context("reading Message-IDs")?;
        let _ = imap.logout().await;
        let text: String = responses.iter().map(|r| String::from_utf8_lossy(r)).collect();
        let present: HashSet<&str> = text
            .split('<')
            .skip(1)
            .filter_map(|s| s.split_once('>').map(|(id, _)| id))
            .collect();
        for (_, id) in mail.iter().filter(|(u, _)| u == user) {
            if !present.contains(id.trim_matches(['<', '>'])) {
                missing.push(format!("message {id} for {user}"));
            }
        }

        let wanted: Vec<&String> = files.iter().filter(|(u, _)| u == user).map(|(_, p)| p).collect();
        if wanted.is_empty() {
            continue;
        }
        let mut dav = Https::connect(suite.addr_dav(), &suite.config.tls.cert_file, user, PASSWORD).await?;
        let listing = within(
            ITEM_TIMEOUT,
            "verifying PROPFIND",
            dav.request("PROPFIND", "/", &[("Depth", "1")], Body::Bytes(&[]), true),
        )
        .await?;
        if listing.status != 207 {
            bail!("PROPFIND / for {user} answered {}", listing.status);
        }
        let body = String::from_utf8_lossy(&listing.body);
        // Each <href> ends with the file's name (plain ASCII, never escaped).
        let names: HashSet<&str> = body
            .split("href>")
            .filter_map(|s| s.split_once("</").map(|(h, _)| h.rsplit('/').next().unwrap_or(h)))
            .collect();
        for path in wanted {
            if !names.contains(path.trim_start_matches('/')) {
                missing.push(format!("file {path} of {user}"));
            }
        }
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_group_by_reply_code() {
        assert_eq!(
            classify("imapd answered with: a NO [UNAVAILABLE] database unavailable"),
            "NO [UNAVAILABLE]"
        );
        assert_eq!(classify("smtpd answered with: 454 4.3.0 try again later"), "454 4.3.0");
        assert_eq!(
            classify("connecting to 127.0.0.1:1: Connection refused (os error 111)"),
            "Connection refused"
        );
        assert_eq!(uid_of(b"* 5 FETCH (UID 17 FLAGS (\\Seen))\r\n"), Some(17));
        assert_eq!(uid_of(b"* 5 EXISTS\r\n"), None);
    }
}
