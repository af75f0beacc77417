//! `tinydc bench`: figures anyone can rerun, measured on a throwaway data directory with full
//! durability (fsync on, as in production). Nothing here touches an existing install.
//!
//! `store` drives the mail store in-process. The others ([`suite`]) start the real daemons (this
//! `tinydc` under each daemon's name, as `tinydc up` does) on free 127.0.0.1 ports and talk to
//! them over real sockets as mail and file clients do.
//!
//! `all --compare` ([`compare`]) measures the classic stack in the same run: where Debian's
//! Dovecot, Postfix and Apache (mod_dav) are installed (`scripts/install-bench-deps`), it starts
//! them on free loopback ports with a throwaway configuration ([`peers`]) and runs the very same
//! workload code against tinydc and against them, alternating, printing both columns and the ratio.

mod compare;
mod dav;
mod http;
mod imap;
mod memory;
mod peers;
mod smtp;
mod soak;
mod store;
mod suite;
mod wire;

use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Deliver messages through the shared mail store (blob fsync + one transaction each),
    /// from several writers at once, as smtpd and imapd do.
    Store {
        /// Messages to deliver.
        #[arg(long, default_value_t = 2000)]
        messages: usize,
        /// Writers delivering at the same time.
        #[arg(long, default_value_t = 8)]
        writers: usize,
        /// Size of each message in bytes.
        #[arg(long, default_value_t = 4096)]
        size: usize,
    },
    /// Every figure below on one throwaway install with the real daemons: SMTP delivery, IMAP
    /// APPEND and header download, WebDAV PUT and PROPFIND, then idle memory. With `--compare`,
    /// issue #12's whole table against Dovecot, Postfix and Apache mod_dav started beside it
    /// (`scripts/install-bench-deps` installs them).
    All(SuiteArgs),
    /// SMTP delivery on the MX port (PIPELINING, several connections): messages/s into one mailbox.
    Smtp(SuiteArgs),
    /// IMAP APPEND in one session (messages/s), then Thunderbird's header download (ms).
    Imap(SuiteArgs),
    /// WebDAV over HTTPS: PUT of one large file (MB/s), PROPFIND Depth 1 of a folder of small files (ms).
    Dav(SuiteArgs),
    /// Memory (PSS) of the three daemons, idle after start.
    Idle(SuiteArgs),
    /// Load and faults for a fixed time under `tinydc up`: IMAP sessions idling and syncing,
    /// SMTP senders, WebDAV clients, a daemon and PostgreSQL SIGKILLed midway; then every
    /// acknowledged item is looked for (none may be missing). Reports errors, PSS peaks and
    /// recovery times.
    Soak(soak::SoakArgs),
}

/// Knobs of the daemon benchmarks; the defaults are the workloads the README's figures use.
#[derive(Args, Clone, Debug)]
pub struct SuiteArgs {
    /// Messages delivered over SMTP, and appended over IMAP.
    #[arg(long, default_value_t = 2000)]
    pub messages: usize,
    /// Size of each message in bytes.
    #[arg(long, default_value_t = 4096)]
    pub size: usize,
    /// SMTP connections delivering at the same time.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Repetitions of the header download and of the PROPFIND (the median is reported).
    #[arg(long, default_value_t = 7)]
    pub repeat: usize,
    /// Size of the file PUT over WebDAV (`256M`, `1G`, bytes).
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    pub put_size: u64,
    /// Small files in the folder that PROPFIND lists.
    #[arg(long, default_value_t = 1000)]
    pub files: usize,
    /// Size of each small file in bytes.
    #[arg(long, default_value_t = 4096)]
    pub small_size: usize,
    /// Seconds the daemons are left alone before their memory is read.
    #[arg(long, default_value_t = 5)]
    pub idle_secs: u64,
    /// Keep the throwaway data directory (and the daemons' logs in it) instead of removing it.
    #[arg(long)]
    pub keep: bool,
    /// Measure the classic stack in the same run: Dovecot (IMAP, LMTP), Postfix (delivering into
    /// Dovecot) and Apache 2.4 mod_dav, started on free loopback ports with a throwaway config,
    /// the same workloads alternating with tinydc's; both columns and the ratio. Needs root.
    #[arg(long)]
    pub compare: bool,
    /// With --compare: write every result (each round's values, medians, ratios) as JSON here.
    #[arg(long, requires = "compare")]
    pub json: Option<std::path::PathBuf>,
    /// With --compare: rounds of every workload on each side (the median is shown).
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// With --compare: concurrent IMAP clients of the mixed workload.
    #[arg(long, default_value_t = 10)]
    pub clients: usize,
    /// With --compare: seconds the mixed IMAP workload runs on each side.
    #[arg(long, default_value_t = 20)]
    pub mixed_secs: u64,
    /// With --compare: seconds after the start and after the load before memory is read (the
    /// daemons' database pools close connections idle for shared::db::POOL_IDLE_TIMEOUT).
    /// [default: 30, 2 with --quick]
    #[arg(long)]
    pub settle_secs: Option<u64>,
    /// Small sizes for a quick check that everything runs (200 messages, 100 files, a 16 MiB
    /// file, 4 clients for 3 s, 3 repetitions, short waits); the figures mean little.
    #[arg(long)]
    pub quick: bool,
}

fn parse_size(text: &str) -> Result<u64, String> {
    shared::size::parse_size(text).map_err(|e| e.to_string())
}

/// Which parts of the suite run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    All,
    Smtp,
    Imap,
    Dav,
    Idle,
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    let (part, args) = match command {
        BenchCommand::Store {
            messages,
            writers,
            size,
        } => return store::store(messages, writers.max(1), size).await,
        BenchCommand::All(a) => (Part::All, a),
        BenchCommand::Smtp(a) => (Part::Smtp, a),
        BenchCommand::Imap(a) => (Part::Imap, a),
        BenchCommand::Dav(a) => (Part::Dav, a),
        BenchCommand::Idle(a) => (Part::Idle, a),
        BenchCommand::Soak(a) => return soak::run(a).await,
    };
    let args = if args.quick {
        SuiteArgs {
            messages: 200,
            files: 100,
            put_size: 16 << 20,
            clients: 4,
            mixed_secs: 3,
            repeat: 3,
            idle_secs: 1,
            settle_secs: args.settle_secs.or(Some(2)),
            ..args
        }
    } else {
        args
    };
    let args = SuiteArgs {
        messages: args.messages.max(1),
        connections: args.connections.max(1),
        repeat: args.repeat.max(1),
        files: args.files.max(1),
        size: args.size.max(512),
        small_size: args.small_size.max(1),
        rounds: args.rounds.max(1),
        clients: args.clients.max(1),
        mixed_secs: args.mixed_secs.max(1),
        settle_secs: args.settle_secs.or(Some(30)),
        ..args
    };
    println!(
        "tinydc bench on {} cores, load average {} (other work on the machine skews the figures)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    if args.compare {
        if part == Part::Idle {
            anyhow::bail!("--compare measures memory as part of `all`, `smtp`, `imap` or `dav`");
        }
        return compare::run(part, args).await;
    }
    let suite = suite::Suite::start(args.keep).await?;
    let work = async {
        if matches!(part, Part::All | Part::Idle) {
            memory::run(&suite, &args, true).await?;
        }
        if matches!(part, Part::All | Part::Smtp) {
            smtp::run(&suite, &args).await?;
        }
        if matches!(part, Part::All | Part::Imap) {
            imap::run(&suite, &args).await?;
        }
        if matches!(part, Part::All | Part::Dav) {
            dav::run(&suite, &args).await?;
        }
        if part != Part::Idle {
            memory::run(&suite, &args, false).await?;
        }
        let complaints = suite.complaints();
        if !complaints.is_empty() {
            println!("the daemons logged {} warnings or errors:", complaints.len());
            for line in complaints.iter().take(20) {
                println!("  {line}");
            }
        }
        anyhow::Ok(())
    };
    let result = tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    let stopped = suite.stop().await;
    result.and(stopped)
}

/// The 1-minute load average, as /proc/loadavg has it.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// One figure per line. The classic stack's figures are measured in the same run by `--compare`
/// ([`compare`]), never printed from memory.
fn figure(what: &str, value: String) {
    println!("{what:<62} {value:>16}");
}

/// The median of some durations, in milliseconds.
fn median_ms(samples: &mut [std::time::Duration]) -> f64 {
    samples.sort();
    let n = samples.len();
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    if n % 2 == 1 {
        ms(samples[n / 2])
    } else {
        (ms(samples[n / 2 - 1]) + ms(samples[n / 2])) / 2.0
    }
}

/// A mail message as a mail client would send it: the headers Thunderbird downloads, a
/// text body padded to `size` bytes, CRLF line ends, no line starting with a dot.
fn message(n: usize, size: usize, to: &str) -> Vec<u8> {
    message_from(n, size, &format!("Bench Sender <sender{}@sender.test>", n % 17), to)
}

/// [`message`] with its own From.
fn message_from(n: usize, size: usize, from: &str, to: &str) -> Vec<u8> {
    let mut raw = format!(
        "From: {from}\r\n\
         To: {to}\r\n\
         Cc: team@sender.test\r\n\
         Subject: Benchmark message number {n}\r\n\
         Date: Tue, 24 Nov 2026 03:{m:02}:{sec:02} +0000\r\n\
         Message-ID: <bench.{n}@sender.test>\r\n\
         References: <bench.{p}@sender.test>\r\n\
         In-Reply-To: <bench.{p}@sender.test>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n",
        m = (n / 60) % 60,
        sec = n % 60,
        p = n.saturating_sub(1),
    )
    .into_bytes();
    while raw.len() < size {
        raw.extend_from_slice(
            format!("line {} of benchmark message {n}, some words to read\r\n", raw.len()).as_bytes(),
        );
    }
    raw
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn median_of_odd_and_even_counts() {
        let ms = Duration::from_millis;
        assert_eq!(median_ms(&mut [ms(5), ms(1), ms(3)]), 3.0);
        assert_eq!(median_ms(&mut [ms(4), ms(1), ms(2), ms(3)]), 2.5);
    }

    #[test]
    fn messages_are_valid_for_smtp_data() {
        let m = message(42, 4096, "alice@example.test");
        assert!(m.len() >= 4096);
        let text = std::str::from_utf8(&m).unwrap();
        assert!(text.split("\r\n").all(|l| !l.starts_with('.')));
        assert!(!text.replace("\r\n", "").contains('\n'));
        assert!(text.ends_with("\r\n"));
    }
}
