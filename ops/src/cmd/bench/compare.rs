//! `tinydc bench all --compare`: every figure of issue #12's table, measured with the very same
//! client code against tinydc and against the classic stack ([`super::peers`]: Dovecot, Postfix
//! delivering into Dovecot by LMTP, Apache mod_dav), alternating (tinydc first in even rounds,
//! the peer first in odd ones) in one run, over plain loopback sockets on both sides (tinydc's
//! WebDAV on its loopback HTTP listener, as behind a reverse proxy). Each figure is the median
//! of `--rounds`; the ratio says how tinydc fares (> 1: tinydc is better, whichever way the
//! figure counts). A peer that is not installed shows "not installed", never a number.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::http::{Body, Https};
use super::imap::{Imap, THUNDERBIRD_HEADERS, is_fetch};
use super::memory::{pss_kib, with_children};
use super::peers::{ClassicStack, Users};
use super::smtp::{Port, deliver};
use super::suite::{DAV_USER, IMAP_USER, PASSWORD, SMTP_USER, Suite};
use super::{Part, SuiteArgs, message};

/// How the binaries measured were built (the daemons are this `tinydc`, run under their names): a
/// debug build is several times slower and bigger, so the figures say which it was.
const BUILD: &str = if cfg!(debug_assertions) { "debug" } else { "release" };

/// Which way a figure is better.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Better {
    Higher,
    Lower,
}

/// One measured value of a figure.
struct Sample {
    name: String,
    unit: &'static str,
    better: Better,
    value: f64,
}

fn sample(name: impl Into<String>, unit: &'static str, better: Better, value: f64) -> Sample {
    Sample {
        name: name.into(),
        unit,
        better,
        value,
    }
}

/// A figure's values on both sides, over the rounds.
struct Figure {
    name: String,
    unit: &'static str,
    better: Better,
    tinydc: Vec<f64>,
    /// `Err(why)` when the classic side has no number (not installed, no database).
    classic: Result<Vec<f64>, String>,
}

#[derive(Default)]
struct Table {
    figures: Vec<Figure>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Tinydc,
    Classic,
}

impl Table {
    fn figure(&mut self, s: &Sample) -> &mut Figure {
        let at = match self.figures.iter().position(|f| f.name == s.name) {
            Some(i) => i,
            None => {
                self.figures.push(Figure {
                    name: s.name.clone(),
                    unit: s.unit,
                    better: s.better,
                    tinydc: Vec::new(),
                    classic: Ok(Vec::new()),
                });
                self.figures.len() - 1
            }
        };
        &mut self.figures[at]
    }

    fn record(&mut self, side: Side, samples: &[Sample]) {
        for s in samples {
            let figure = self.figure(s);
            match side {
                Side::Tinydc => figure.tinydc.push(s.value),
                Side::Classic => {
                    if let Ok(values) = &mut figure.classic {
                        values.push(s.value);
                    }
                }
            }
        }
    }

    /// The classic side has no number for these figures, and why.
    fn absent(&mut self, samples: &[Sample], why: &str) {
        for s in samples {
            self.figure(s).classic = Err(why.to_string());
        }
    }
}

fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// tinydc's figure against the classic one, > 1 when tinydc is better.
fn ratio(better: Better, tinydc: f64, classic: f64) -> Option<f64> {
    let r = match better {
        Better::Higher => tinydc / classic,
        Better::Lower => classic / tinydc,
    };
    r.is_finite().then_some(r)
}

/// Small ratios keep two significant digits (0.0083×, not 0.00×), down to 0.00001×.
fn show_ratio(r: f64) -> String {
    let digits = if r >= 0.1 {
        2
    } else {
        (-r.log10()).ceil().clamp(0.0, 4.0) as usize + 1
    };
    format!("{r:.digits$}×")
}

fn show_value(value: f64, unit: &str) -> String {
    let digits = if value >= 100.0 || value == value.trunc() {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.digits$} {unit}")
}

/// What the run measures: the sizes of issue #12's table unless changed.
struct Plan<'a> {
    args: &'a SuiteArgs,
    part: Part,
    /// Users of the concurrent IMAP workload, one per client.
    mixed_users: Vec<String>,
}

pub async fn run(part: Part, args: SuiteArgs) -> anyhow::Result<()> {
    let mixed_users: Vec<String> = (0..args.clients)
        .map(|n| format!("mixed{n}@{}", super::suite::DOMAIN))
        .collect();
    let plan = Plan {
        args: &args,
        part,
        mixed_users,
    };
    // Taken over from here on, so that a Ctrl-C (or SIGTERM) while the two sides start is
    // answered at the select below by stopping everything, never by leaving peers running.
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let suite = Suite::start_with_users(args.keep, &plan.mixed_users).await?;
    let hash = shared::auth::hash_password(PASSWORD).await;
    let mut mail_users: Vec<&str> = vec![SMTP_USER, IMAP_USER];
    mail_users.extend(plan.mixed_users.iter().map(String::as_str));
    let users = Users {
        mail: &mail_users,
        dav: DAV_USER,
        password: PASSWORD,
        argon2_hash: &hash,
    };
    let classic = match ClassicStack::start(&users).await {
        Ok(c) => c,
        Err(e) => {
            let _ = suite.stop().await;
            return Err(e);
        }
    };
    let result = tokio::select! {
        r = measure(&plan, &suite, &classic) => r,
        _ = interrupt.recv() => Err(anyhow::anyhow!("interrupted")),
        _ = terminate.recv() => Err(anyhow::anyhow!("terminated")),
    };
    let complaints = suite.complaints();
    if !complaints.is_empty() {
        println!("tinydc's daemons logged {} warnings or errors:", complaints.len());
        for line in complaints.iter().take(20) {
            println!("  {line}");
        }
    }
    let stopped_classic = classic.stop().await;
    let stopped = suite.stop().await;
    result.and(stopped_classic).and(stopped)
}

/// The pause between two sections of the comparison, in seconds (shorter when the settle time
/// is, as with `--quick`).
const SECTION_PAUSE_SECS: u64 = 10;

async fn measure(plan: &Plan<'_>, suite: &Suite, classic: &ClassicStack) -> anyhow::Result<()> {
    let args = plan.args;
    let mut table = Table::default();
    let started = chrono::Utc::now();
    let load_before = super::load_average();
    println!(
        "classic stack: IMAP {}, SMTP {}, WebDAV {}",
        where_(&classic.imap),
        where_(&classic.smtp),
        where_(&classic.dav)
    );

    let settle = args.settle_secs.unwrap_or(30);
    // Long enough for the daemons' database pools to close what starting opened.
    let idle = settle.max(args.idle_secs);
    tokio::time::sleep(Duration::from_secs(idle)).await;
    memory(&mut table, None, suite, classic, &format!("idle, {idle} s after start"));

    let tinydc_dav_root = suite.config.files_dir().join(DAV_USER);
    let dav_http = suite.addr_dav_http();
    let sections = [Part::Smtp, Part::Imap, Part::Dav]
        .into_iter()
        .filter(|s| plan.part == Part::All || plan.part == *s);
    // Section by section, each side in turn (tinydc first in even rounds), so that the load
    // others put on the machine falls on both columns alike.
    for (s, section) in sections.enumerate() {
        if s > 0 {
            // Work a section leaves behind (Postfix's queue and Dovecot's LMTP finishing,
            // PostgreSQL's autovacuum and checkpoint after thousands of inserts, the kernel's
            // writeback) would otherwise fall on whichever side runs first in the next one:
            // always tinydc, in round 1 (issue #12: both sides' first header download and
            // SEARCH after the SMTP rounds measured up to half as fast as their next).
            tokio::time::sleep(Duration::from_secs(SECTION_PAUSE_SECS.min(settle))).await;
        }
        for round in 0..args.rounds {
            // Cycles per second of this round's closed-loop mixed IMAP load, per side.
            let mut closed_rates: Vec<f64> = Vec::new();
            let order = if round % 2 == 0 {
                [Side::Tinydc, Side::Classic]
            } else {
                [Side::Classic, Side::Tinydc]
            };
            for side in order {
                let label = match side {
                    Side::Tinydc => "tinydc",
                    Side::Classic => "the classic stack",
                };
                let (smtp, imap, dav, root) = match side {
                    Side::Tinydc => (
                        Ok(suite.addr_smtp()),
                        Ok(suite.addr_imap()),
                        Ok(dav_http),
                        tinydc_dav_root.clone(),
                    ),
                    Side::Classic => (
                        classic.smtp.clone(),
                        classic.imap.clone(),
                        classic.dav.clone(),
                        classic.dav_root.clone(),
                    ),
                };
                // A section the peer cannot run is filled in once tinydc's names are known (below).
                match section {
                    Part::Smtp => {
                        if let (Ok(smtp), Ok(imap)) = (&smtp, &imap) {
                            let s = smtp_delivered(*smtp, *imap, args)
                                .await
                                .with_context(|| format!("SMTP against {label}"))?;
                            table.record(side, &s);
                        }
                    }
                    Part::Imap => {
                        if let Ok(imap) = &imap {
                            let s = imap_single(*imap, args, round)
                                .await
                                .with_context(|| format!("IMAP against {label}"))?;
                            table.record(side, &s);
                            let (s, rate) = imap_mixed(*imap, &plan.mixed_users, args, None)
                                .await
                                .with_context(|| format!("the concurrent IMAP workload against {label}"))?;
                            table.record(side, &s);
                            closed_rates.push(rate);
                        }
                    }
                    _ => {
                        if let Ok(dav) = &dav {
                            let s = webdav(*dav, &root, args, round)
                                .await
                                .with_context(|| format!("WebDAV against {label}"))?;
                            table.record(side, &s);
                        }
                    }
                }
            }
            if section == Part::Imap && !closed_rates.is_empty() {
                // Latencies at equal offered load: both sides again, every client paced to the
                // same cycle rate, below what the slower side sustained closed-loop (a side
                // that answers faster would otherwise be measured under a heavier load).
                let slowest = closed_rates.iter().copied().fold(f64::INFINITY, f64::min);
                let per_client = PACED_SHARE * slowest / plan.mixed_users.len() as f64;
                closed_rates.clear();
                if per_client.is_finite() && per_client > 0.0 {
                    let interval = Duration::from_secs_f64(1.0 / per_client);
                    for side in order {
                        let imap = match side {
                            Side::Tinydc => Ok(suite.addr_imap()),
                            Side::Classic => classic.imap.clone(),
                        };
                        if let Ok(imap) = imap {
                            let (s, _) = imap_mixed(imap, &plan.mixed_users, args, Some(interval))
                                .await
                                .context("the paced IMAP workload")?;
                            table.record(side, &s);
                            if round + 1 == args.rounds {
                                memory(
                                    &mut table,
                                    Some(side),
                                    suite,
                                    classic,
                                    "right after the mixed IMAP load",
                                );
                            }
                        }
                    }
                }
            }
            println!(
                "  {} round {} of {} done",
                section_name(section),
                round + 1,
                args.rounds
            );
        }
    }
    // Figures the classic side could not run: same names as tinydc's, marked with the reason.
    for (which, why) in [("smtp", &classic.smtp), ("imap", &classic.imap), ("dav", &classic.dav)] {
        if let Err(why) = why {
            let names: Vec<Sample> = table
                .figures
                .iter()
                .filter(|f| section_of(&f.name) == which)
                .map(|f| sample(f.name.clone(), f.unit, f.better, 0.0))
                .collect();
            table.absent(&names, why);
        }
    }

    tokio::time::sleep(Duration::from_secs(settle)).await;
    memory(&mut table, None, suite, classic, &format!("{settle} s after the load"));

    print_table(&table, args);
    println!(
        "(started {}, {} build of tinydc, load average {} before and {} after, {} cores; medians of {} round(s))",
        started.format("%Y-%m-%d %H:%M UTC"),
        BUILD,
        load_before,
        super::load_average(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.rounds
    );
    if let Some(path) = &args.json {
        write_json(path, &table, args, started, &load_before)?;
        println!("results written to {}", path.display());
    }
    Ok(())
}

fn where_(addr: &Result<SocketAddr, String>) -> String {
    match addr {
        Ok(a) => a.to_string(),
        Err(why) => why.clone(),
    }
}

/// The section a figure belongs to, from the first word of its name.
fn section_of(name: &str) -> &'static str {
    match name.split_whitespace().next() {
        Some("SMTP") => "smtp",
        Some("IMAP") => "imap",
        Some("WebDAV") => "dav",
        _ => "memory",
    }
}

/// PSS of tinydc's daemons and its PostgreSQL against the classic stack's processes (`side`:
/// only that one's, as when one side has just finished a workload).
fn memory(table: &mut Table, side: Option<Side>, suite: &Suite, classic: &ClassicStack, when: &str) {
    let name = format!("memory (PSS) of the three daemons, {when}");
    let mut detail = Vec::new();
    if side != Some(Side::Classic) {
        let daemons: Vec<(&str, u64)> = suite
            .daemons
            .iter()
            .map(|d| (d.name, pss_kib(d.pid).unwrap_or(0)))
            .collect();
        let kib: u64 = daemons.iter().map(|(_, k)| k).sum();
        table.record(
            Side::Tinydc,
            &[sample(&name, "MiB", Better::Lower, kib as f64 / 1024.0)],
        );
        detail.extend(
            daemons
                .iter()
                .map(|(n, k)| format!("{} {:.1}", n.trim_start_matches("tinydc-"), *k as f64 / 1024.0)),
        );
        if let Some(postmaster) = suite.postgres_pid() {
            let pids = with_children(postmaster);
            let kib: u64 = pids.iter().filter_map(|&p| pss_kib(p)).sum();
            let s = sample(
                format!("memory (PSS) of the private PostgreSQL, {when}"),
                "MiB",
                Better::Lower,
                kib as f64 / 1024.0,
            );
            detail.push(format!(
                "PostgreSQL {:.1} ({} processes)",
                kib as f64 / 1024.0,
                pids.len()
            ));
            table.record(Side::Tinydc, std::slice::from_ref(&s));
            table.absent(&[s], "(no database)");
        }
    }
    if side != Some(Side::Tinydc) {
        let peers = classic.memory();
        detail.extend(
            peers
                .iter()
                .map(|(n, k, p)| format!("{n} {:.1} ({p} processes)", *k as f64 / 1024.0)),
        );
        if peers.len() == 3 {
            let kib: u64 = peers.iter().map(|(_, k, _)| k).sum();
            table.record(
                Side::Classic,
                &[sample(&name, "MiB", Better::Lower, kib as f64 / 1024.0)],
            );
        } else {
            let running: Vec<&str> = peers.iter().map(|(n, _, _)| *n).collect();
            table.absent(
                &[sample(&name, "MiB", Better::Lower, 0.0)],
                &format!("incomplete (running: {})", running.join(", ")),
            );
        }
    }
    println!("  memory {when}: {} MiB", detail.join(", "));
}

fn section_name(section: Part) -> &'static str {
    match section {
        Part::Smtp => "SMTP",
        Part::Imap => "IMAP",
        _ => "WebDAV",
    }
}

fn print_table(table: &Table, args: &SuiteArgs) {
    println!();
    println!(
        "{:<72} {:>16} {:>22} {:>8}",
        "figure (same client, same machine, same run)", "tinydc", "classic stack", "ratio"
    );
    for f in &table.figures {
        let t = median(&f.tinydc);
        let (c, c_text) = match &f.classic {
            Ok(v) => {
                let m = median(v);
                (m, m.map_or("-".to_string(), |m| show_value(m, f.unit)))
            }
            Err(why) => (None, why.clone()),
        };
        let r = match (t, c) {
            (Some(t), Some(c)) => ratio(f.better, t, c).map_or("-".into(), show_ratio),
            _ => "".into(),
        };
        let t_text = t.map_or("-".to_string(), |t| show_value(t, f.unit));
        println!("{:<72} {t_text:>16} {c_text:>22} {r:>8}", f.name);
    }
    println!(
        "(ratio > 1: tinydc is better; {} messages of {} B, {} small files of {} B, {} MiB file, {} IMAP clients for {} s)",
        args.messages,
        args.size,
        args.files,
        args.small_size,
        args.put_size >> 20,
        args.clients,
        args.mixed_secs
    );
}

fn write_json(
    path: &Path,
    table: &Table,
    args: &SuiteArgs,
    started: chrono::DateTime<chrono::Utc>,
    load_before: &str,
) -> anyhow::Result<()> {
    let figures: Vec<serde_json::Value> = table
        .figures
        .iter()
        .map(|f| {
            let t = median(&f.tinydc);
            let (classic, why, c) = match &f.classic {
                Ok(v) => (Some(v.clone()), None, median(v)),
                Err(why) => (None, Some(why.clone()), None),
            };
            serde_json::json!({
                "figure": f.name,
                "unit": f.unit,
                "better": if f.better == Better::Higher { "higher" } else { "lower" },
                "tinydc": f.tinydc,
                "tinydc_median": t,
                "classic": classic,
                "classic_median": c,
                "classic_missing": why,
                "ratio": t.zip(c).and_then(|(t, c)| ratio(f.better, t, c)),
            })
        })
        .collect();
    let doc = serde_json::json!({
        "started": started.to_rfc3339(),
        "tinydc_build": BUILD,
        "load_average_before": load_before,
        "load_average_after": super::load_average(),
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "rounds": args.rounds,
        "messages": args.messages,
        "message_size": args.size,
        "smtp_connections": args.connections,
        "files": args.files,
        "small_file_size": args.small_size,
        "large_file_size": args.put_size,
        "imap_clients": args.clients,
        "mixed_seconds": args.mixed_secs,
        "figures": figures,
    });
    std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

/// SMTP: `messages` over `connections` at once with PIPELINING, timed until the last one is
/// in the recipient's mailbox as IMAP sees it (Postfix answers 250 once queued; tinydc once
/// stored: both count only when the message can be read).
async fn smtp_delivered(smtp: SocketAddr, imap: SocketAddr, args: &SuiteArgs) -> anyhow::Result<Vec<Sample>> {
    let mut watcher = Imap::connect(imap, SMTP_USER, PASSWORD).await?;
    let before = messages_in(&mut watcher, "INBOX").await?;
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new((0..args.messages).map(|n| message(n, args.size, SMTP_USER)).collect());
    let connections = args.connections.min(args.messages);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let bodies = bodies.clone();
        tasks.push(tokio::spawn(async move {
            let mine: Vec<usize> = (c..bodies.len()).step_by(connections).collect();
            deliver(smtp, Port::Mx, &bodies, &mine).await
        }));
    }
    for task in tasks {
        task.await.context("an SMTP client task failed")??;
    }
    let accepted = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let now = messages_in(&mut watcher, "INBOX").await?;
        if now >= before + args.messages {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {} accepted messages reached the mailbox within 300 s",
                now - before,
                args.messages
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered = started.elapsed();
    watcher.logout().await?;
    let n = args.messages as f64;
    Ok(vec![
        sample(
            format!(
                "SMTP {} × {} B over {connections} connections, delivered into the mailbox",
                args.messages, args.size
            ),
            "msg/s",
            Better::Higher,
            n / delivered.as_secs_f64(),
        ),
        sample(
            "SMTP the same, accepted (250 after DATA)",
            "msg/s",
            Better::Higher,
            n / accepted.as_secs_f64(),
        ),
    ])
}

/// `STATUS mailbox (MESSAGES)` (RFC 9051 section 6.3.11).
async fn messages_in(imap: &mut Imap, mailbox: &str) -> anyhow::Result<usize> {
    let responses = imap
        .command(format!("STATUS \"{mailbox}\" (MESSAGES)").as_bytes())
        .await?;
    responses
        .iter()
        .find_map(|r| {
            let text = std::str::from_utf8(r).ok()?;
            let at = text.find("MESSAGES ")?;
            text[at + 9..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        })
        .context("STATUS without MESSAGES")
}

/// One IMAP session: APPEND both ways, then the reads a mail client does on that mailbox.
async fn imap_single(addr: SocketAddr, args: &SuiteArgs, round: usize) -> anyhow::Result<Vec<Sample>> {
    let mut imap = Imap::connect(addr, IMAP_USER, PASSWORD).await?;
    let n = args.messages;
    let bodies: Vec<Vec<u8>> = (0..n).map(|i| message(i, args.size, IMAP_USER)).collect();
    let sync_box = format!("round{round}-sync");
    let plus_box = format!("round{round}-plus");
    imap.command(format!("CREATE \"{sync_box}\"").as_bytes()).await?;
    imap.command(format!("CREATE \"{plus_box}\"").as_bytes()).await?;
    let mut out = Vec::new();

    let started = Instant::now();
    for body in &bodies {
        imap.append_sync(&sync_box, body).await.context("APPEND")?;
    }
    out.push(sample(
        "IMAP APPEND in one session, synchronizing literals (as python imaplib)",
        "msg/s",
        Better::Higher,
        n as f64 / started.elapsed().as_secs_f64(),
    ));
    let started = Instant::now();
    for body in &bodies {
        // RFC 7888 LITERAL+: one round trip per APPEND, each answered before the next.
        let mut cmd = format!("APPEND \"{plus_box}\" {{{}+}}\r\n", body.len()).into_bytes();
        cmd.extend_from_slice(body);
        imap.command(&cmd).await.context("APPEND with LITERAL+")?;
    }
    out.push(sample(
        "IMAP APPEND in one session, LITERAL+",
        "msg/s",
        Better::Higher,
        n as f64 / started.elapsed().as_secs_f64(),
    ));

    let exists = imap.select(&sync_box).await?;
    if exists != n {
        bail!("SELECT says {exists} EXISTS after {n} APPENDs");
    }
    let mut times = Vec::new();
    for _ in 0..args.repeat {
        let started = Instant::now();
        let responses = imap.command(THUNDERBIRD_HEADERS.as_bytes()).await?;
        times.push(started.elapsed().as_secs_f64());
        let fetched = responses.iter().filter(|r| is_fetch(r)).count();
        if fetched != n {
            bail!("the header download answered {fetched} FETCH responses for {n} messages");
        }
    }
    out.push(sample(
        format!("IMAP header download of {n} messages (Thunderbird's UID FETCH)"),
        "msg/s",
        Better::Higher,
        n as f64 / median(&times).unwrap_or(f64::NAN),
    ));

    let mut times = Vec::new();
    for _ in 0..args.repeat.div_ceil(2) {
        let started = Instant::now();
        let mut bytes = 0;
        for first in (1..=n).step_by(500) {
            let last = (first + 499).min(n);
            let responses = imap
                .command(format!("FETCH {first}:{last} BODY.PEEK[]").as_bytes())
                .await?;
            let fetched: Vec<&Vec<u8>> = responses.iter().filter(|r| is_fetch(r)).collect();
            if fetched.len() != last + 1 - first {
                bail!(
                    "FETCH {first}:{last} BODY.PEEK[] answered {} FETCH responses",
                    fetched.len()
                );
            }
            bytes += fetched.iter().map(|r| r.len()).sum::<usize>();
        }
        if bytes < n * args.size {
            bail!(
                "the full body fetch returned {bytes} bytes for {n} messages of {} B",
                args.size
            );
        }
        times.push(started.elapsed().as_secs_f64());
    }
    out.push(sample(
        format!("IMAP full body fetch of {n} messages (BODY.PEEK[], 500 per command)"),
        "msg/s",
        Better::Higher,
        n as f64 / median(&times).unwrap_or(f64::NAN),
    ));

    let mut times = Vec::new();
    for r in 0..args.repeat {
        let wanted = (r * 7919 + 1) % n;
        let started = Instant::now();
        let responses = imap
            .command(format!("SEARCH SUBJECT \"message number {wanted}\"").as_bytes())
            .await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        let hit = responses
            .iter()
            .filter_map(|r| {
                std::str::from_utf8(r)
                    .ok()?
                    .strip_prefix("* SEARCH")
                    .map(str::to_string)
            })
            .flat_map(|s| s.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .any(|id| id == (wanted + 1).to_string());
        if !hit {
            bail!(
                "SEARCH SUBJECT \"message number {wanted}\" did not find message {}",
                wanted + 1
            );
        }
    }
    out.push(sample(
        format!("IMAP SEARCH SUBJECT over {n} messages"),
        "ms",
        Better::Lower,
        median(&times).unwrap_or(f64::NAN),
    ));

    let mut resync = Vec::new();
    let mut store = Vec::new();
    for r in 0..args.repeat {
        let started = Instant::now();
        let responses = imap.command(b"UID FETCH 1:* (UID FLAGS)").await?;
        resync.push(started.elapsed().as_secs_f64());
        let fetched = responses.iter().filter(|r| is_fetch(r)).count();
        if fetched != n {
            bail!("the flag resync answered {fetched} FETCH responses for {n} messages");
        }
        let sign = if r % 2 == 0 { '+' } else { '-' };
        let started = Instant::now();
        let responses = imap
            .command(format!("STORE 1:* {sign}FLAGS (\\Flagged)").as_bytes())
            .await?;
        store.push(started.elapsed().as_secs_f64());
        let changed = responses.iter().filter(|r| is_fetch(r)).count();
        if changed != n {
            bail!("STORE 1:* {sign}FLAGS answered {changed} FETCH responses for {n} messages");
        }
    }
    out.push(sample(
        format!("IMAP flag resync of {n} messages (UID FETCH 1:* (UID FLAGS))"),
        "msg/s",
        Better::Higher,
        n as f64 / median(&resync).unwrap_or(f64::NAN),
    ));
    out.push(sample(
        format!("IMAP STORE 1:* ±FLAGS (\\Flagged) on {n} messages"),
        "msg/s",
        Better::Higher,
        n as f64 / median(&store).unwrap_or(f64::NAN),
    ));
    imap.logout().await?;
    Ok(out)
}

/// The commands of the concurrent workload, in the order one session sends them.
const MIXED: [&str; 6] = ["LOGIN", "SELECT", "APPEND", "FETCH", "STORE", "EXPUNGE"];
/// Messages each client's mailbox holds while the workload runs.
const MIXED_MAILBOX: usize = 20;

/// `clients` sessions at once for `mixed_secs`, each its own user, each looping: connect and
/// LOGIN, SELECT INBOX, APPEND one message, FETCH the headers of all, STORE \Deleted on the new
/// one, EXPUNGE, LOGOUT. A failed command ends its session (the client starts a new one).
///
/// Closed loop (`pace` None): each client starts its next cycle as soon as the last one ends;
/// gives the cycles per second a side sustains (and returns that rate) and the errors. Paced
/// (`pace` Some): each client starts a cycle every `pace`, so both sides get the same offered
/// load; gives each command's median and 90th percentile latency at that load, and the errors.
async fn imap_mixed(
    addr: SocketAddr,
    users: &[String],
    args: &SuiteArgs,
    pace: Option<Duration>,
) -> anyhow::Result<(Vec<Sample>, f64)> {
    // Every mailbox starts with the same messages, untimed.
    for user in users {
        let mut imap = Imap::connect(addr, user, PASSWORD).await?;
        let have = imap.select("INBOX").await?;
        if have > 0 {
            imap.command(b"STORE 1:* +FLAGS.SILENT (\\Deleted)").await?;
            imap.command(b"EXPUNGE").await?;
        }
        let bodies: Vec<Vec<u8>> = (0..MIXED_MAILBOX).map(|n| message(n, args.size, user)).collect();
        imap.append_pipelined("INBOX", &bodies, 8).await?;
        imap.logout().await?;
    }
    let duration = Duration::from_secs(args.mixed_secs);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for (c, user) in users.iter().enumerate() {
        let user = user.clone();
        let body = message(10_000 + c, args.size, &user);
        // Paced clients start spread over one interval, not all at the same instant.
        let offset = pace.map_or(Duration::ZERO, |p| p.mul_f64(c as f64 / users.len() as f64));
        tasks.push(tokio::spawn(async move {
            mixed_client(addr, &user, &body, deadline, pace, offset).await
        }));
    }
    let mut latencies: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut errors = 0;
    let mut cycles = 0;
    let mut first_error = None;
    for task in tasks {
        let result = task.await.context("an IMAP client task failed")?;
        for (cmd, mut l) in result.latencies {
            latencies.entry(cmd).or_default().append(&mut l);
        }
        errors += result.errors;
        cycles += result.cycles;
        first_error = first_error.or(result.first_error);
    }
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(e) = first_error {
        println!("  the concurrent IMAP workload had {errors} errors; the first: {e}");
    }
    let rate = cycles as f64 / elapsed;
    let mut out = Vec::new();
    let what = format!("IMAP mixed load, {} clients, {} s", users.len(), args.mixed_secs);
    match pace {
        None => {
            out.push(sample(
                format!("{what}, closed loop: cycles per second"),
                "/s",
                Better::Higher,
                rate,
            ));
            out.push(sample(
                format!("{what}, closed loop: errors"),
                "",
                Better::Lower,
                errors as f64,
            ));
        }
        Some(_) => {
            // The rate is chosen from this run's closed-loop figures, so it may differ from
            // round to round: the figure names say it is the same on both sides, not its value.
            let what = format!("{what}, paced to the same cycle rate on both sides:");
            for cmd in MIXED {
                let mut l = latencies.remove(cmd).unwrap_or_default();
                out.push(sample(
                    format!("{what} {cmd} median latency"),
                    "ms",
                    Better::Lower,
                    median(&l).unwrap_or(f64::NAN),
                ));
                out.push(sample(
                    format!("{what} {cmd} 90th percentile"),
                    "ms",
                    Better::Lower,
                    percentile(&mut l, 0.9).unwrap_or(f64::NAN),
                ));
            }
            out.push(sample(
                format!("{what} cycles per second (offered)"),
                "/s",
                Better::Higher,
                rate,
            ));
            out.push(sample(format!("{what} errors"), "", Better::Lower, errors as f64));
        }
    }
    Ok((out, rate))
}

/// The `q` quantile (0..=1, nearest rank) of `values`, or None when empty.
fn percentile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

/// Share of the slower side's closed-loop cycle rate the paced run offers to both sides: enough
/// to load them, below saturation so latencies are not queueing times.
const PACED_SHARE: f64 = 0.7;

/// What one mixed-load client saw.
struct MixedResult {
    latencies: BTreeMap<&'static str, Vec<f64>>,
    /// Complete cycles (LOGIN to LOGOUT without an error).
    cycles: usize,
    errors: usize,
    first_error: Option<String>,
}

async fn mixed_client(
    addr: SocketAddr,
    user: &str,
    body: &[u8],
    deadline: Instant,
    pace: Option<Duration>,
    offset: Duration,
) -> MixedResult {
    let mut result = MixedResult {
        latencies: BTreeMap::new(),
        cycles: 0,
        errors: 0,
        first_error: None,
    };
    let mut append = format!("APPEND INBOX {{{}+}}\r\n", body.len()).into_bytes();
    append.extend_from_slice(body);
    let commands: [(&str, &[u8]); 5] = [
        ("SELECT", b"SELECT INBOX"),
        ("APPEND", &append),
        (
            "FETCH",
            b"FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (From To Subject Date Message-ID)])",
        ),
        // The message just appended is the last one (RFC 9051 section 9: `*`).
        ("STORE", b"STORE * +FLAGS (\\Deleted)"),
        ("EXPUNGE", b"EXPUNGE"),
    ];
    // A paced client that falls behind starts its next cycle at once, without bursts to catch up.
    let mut ticks = pace.map(|p| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + offset, p);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    while Instant::now() < deadline {
        if let Some(ticks) = &mut ticks {
            ticks.tick().await;
            if Instant::now() >= deadline {
                break;
            }
        }
        let latencies = &mut result.latencies;
        let session = async {
            let started = Instant::now();
            let mut imap = Imap::connect(addr, user, PASSWORD).await.map_err(|e| ("LOGIN", e))?;
            latencies
                .entry("LOGIN")
                .or_default()
                .push(started.elapsed().as_secs_f64() * 1000.0);
            for (name, command) in commands {
                let started = Instant::now();
                imap.command(command).await.map_err(|e| (name, e))?;
                latencies
                    .entry(name)
                    .or_default()
                    .push(started.elapsed().as_secs_f64() * 1000.0);
            }
            imap.logout().await.map_err(|e| ("LOGOUT", e))
        };
        match session.await {
            Ok(()) => result.cycles += 1,
            Err((name, e)) => {
                result.errors += 1;
                result.first_error.get_or_insert_with(|| format!("{name}: {e:#}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    result
}

/// WebDAV over plain HTTP on one keep-alive connection.
async fn webdav(addr: SocketAddr, root: &Path, args: &SuiteArgs, round: usize) -> anyhow::Result<Vec<Sample>> {
    let mut dav = Https::connect_plain(addr, DAV_USER, PASSWORD).await?;
    let mut out = Vec::new();
    let large = format!("/round{round}-large.bin");
    let chunk = super::dav::noise(1 << 20);
    let started = Instant::now();
    let put = dav
        .request(
            "PUT",
            &large,
            &[("Content-Type", "application/octet-stream")],
            Body::Repeat {
                chunk: &chunk,
                length: args.put_size,
            },
            true,
        )
        .await
        .context("the large PUT")?;
    let elapsed = started.elapsed().as_secs_f64();
    expect(&put, &[201, 204], "the large PUT")?;
    let stored: PathBuf = root.join(&large[1..]);
    let on_disk = std::fs::metadata(&stored).map(|m| m.len()).unwrap_or(0);
    if on_disk != args.put_size {
        bail!(
            "PUT of {} bytes answered {} but {} holds {on_disk}",
            args.put_size,
            put.status,
            stored.display()
        );
    }
    let mib = args.put_size >> 20;
    out.push(sample(
        format!("WebDAV PUT of one {mib} MiB file"),
        "MB/s",
        Better::Higher,
        args.put_size as f64 / elapsed / 1e6,
    ));
    let started = Instant::now();
    let get = dav.request("GET", &large, &[], Body::Bytes(&[]), false).await?;
    let elapsed = started.elapsed().as_secs_f64();
    expect(&get, &[200], "the large GET")?;
    if get.length != args.put_size {
        bail!("GET sent {} bytes of a {}-byte file", get.length, args.put_size);
    }
    out.push(sample(
        format!("WebDAV GET of the {mib} MiB file"),
        "MB/s",
        Better::Higher,
        args.put_size as f64 / elapsed / 1e6,
    ));
    let delete = dav.request("DELETE", &large, &[], Body::Bytes(&[]), true).await?;
    expect(&delete, &[200, 204], "DELETE of the large file")?;

    let folder = format!("/round{round}-folder/");
    let mkcol = dav.request("MKCOL", &folder, &[], Body::Bytes(&[]), true).await?;
    expect(&mkcol, &[201], "MKCOL")?;
    let small = super::dav::noise(args.small_size);
    let files = args.files;
    let started = Instant::now();
    for i in 0..files {
        let path = format!("{folder}file-{i:05}.txt");
        let put = dav
            .request(
                "PUT",
                &path,
                &[("Content-Type", "text/plain")],
                Body::Bytes(&small),
                true,
            )
            .await?;
        expect(&put, &[201, 204], &format!("PUT {path}"))?;
    }
    out.push(sample(
        format!("WebDAV PUT of {files} × {} B, one by one", args.small_size),
        "files/s",
        Better::Higher,
        files as f64 / started.elapsed().as_secs_f64(),
    ));
    let started = Instant::now();
    for i in 0..files {
        let path = format!("{folder}file-{i:05}.txt");
        let get = dav.request("GET", &path, &[], Body::Bytes(&[]), false).await?;
        expect(&get, &[200], &format!("GET {path}"))?;
        if get.length != args.small_size as u64 {
            bail!("GET {path} sent {} bytes of {}", get.length, args.small_size);
        }
    }
    out.push(sample(
        format!("WebDAV GET of the {files} files, one by one"),
        "files/s",
        Better::Higher,
        files as f64 / started.elapsed().as_secs_f64(),
    ));
    // What a sync client (rclone) asks for, then allprop (no body, RFC 4918 section 9.1).
    let named = br#"<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:"><d:prop><d:displayname/><d:getlastmodified/><d:getcontentlength/><d:resourcetype/><d:getcontenttype/><d:getetag/></d:prop></d:propfind>"#;
    for (label, body) in [("named properties", &named[..]), ("allprop", &b""[..])] {
        let mut times = Vec::new();
        for _ in 0..args.repeat {
            let headers: &[(&str, &str)] = if body.is_empty() {
                &[("Depth", "1")]
            } else {
                &[("Depth", "1"), ("Content-Type", "application/xml")]
            };
            let started = Instant::now();
            let listing = dav
                .request("PROPFIND", &folder, headers, Body::Bytes(body), true)
                .await?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            expect(&listing, &[207], "PROPFIND Depth 1")?;
            let responses = super::dav::count_responses(&listing.body);
            if responses != files + 1 {
                bail!("PROPFIND Depth 1 of {files} files has {responses} responses");
            }
        }
        out.push(sample(
            format!("WebDAV PROPFIND Depth 1 of {files} files, {label}"),
            "ms",
            Better::Lower,
            median(&times).unwrap_or(f64::NAN),
        ));
    }
    let started = Instant::now();
    let delete = dav.request("DELETE", &folder, &[], Body::Bytes(&[]), true).await?;
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    expect(&delete, &[200, 204], "DELETE of the folder")?;
    let gone = dav
        .request("PROPFIND", &folder, &[("Depth", "0")], Body::Bytes(&[]), true)
        .await?;
    expect(&gone, &[404], "PROPFIND of the deleted folder")?;
    out.push(sample(
        format!("WebDAV DELETE of a folder of {files} files"),
        "ms",
        Better::Lower,
        elapsed,
    ));
    Ok(out)
}

fn expect(response: &super::http::Response, allowed: &[u16], what: &str) -> anyhow::Result<()> {
    if allowed.contains(&response.status) {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&response.body[..response.body.len().min(300)]).to_string();
    bail!("{what} answered {} {}", response.status, text.trim());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut values: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        assert_eq!(percentile(&mut values, 0.9), Some(9.0));
        assert_eq!(percentile(&mut values, 0.5), Some(5.0));
        assert_eq!(percentile(&mut values, 1.0), Some(10.0));
        assert_eq!(percentile(&mut [3.0], 0.9), Some(3.0));
        assert_eq!(percentile(&mut [], 0.9), None);
    }

    #[test]
    fn ratios_say_how_tinydc_fares_either_way() {
        assert_eq!(ratio(Better::Higher, 300.0, 100.0), Some(3.0));
        assert_eq!(ratio(Better::Lower, 10.0, 20.0), Some(2.0));
        assert_eq!(ratio(Better::Lower, 0.0, 0.0), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[]), None);
        assert_eq!(show_ratio(1.234), "1.23×");
        assert_eq!(show_ratio(0.0083), "0.0083×");
        assert_eq!(show_ratio(0.0), "0.00000×");
    }

    #[test]
    fn a_missing_peer_is_a_reason_not_a_number() {
        let mut table = Table::default();
        let s = [sample("IMAP x", "ms", Better::Lower, 5.0)];
        table.record(Side::Tinydc, &s);
        table.absent(&s, "not installed");
        table.record(Side::Classic, &s);
        assert_eq!(table.figures.len(), 1);
        assert_eq!(table.figures[0].classic, Err("not installed".to_string()));
        assert_eq!(section_of("IMAP x"), "imap");
    }
}
