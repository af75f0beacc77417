//! `tinydc`: the admin command line of tinydc, and the three daemons.
//!
//! A multi-call binary: started as `tinydc-smtpd`, `tinydc-imapd` or `tinydc-davd` (a link
//! under that name, or argv[0] set by `tinydc up`), it runs that daemon exactly as the daemon's
//! own binary does (`tinydc-imapd --data DIR`); under any other name it is the admin command
//! line. One executable shared by every process keeps one copy of its code in memory (issue #12).
//!
//! Every command works whether or not `tinydc up` is running: with the private cluster, a
//! command starts PostgreSQL for its own use when it is not running, and stops it afterwards.

mod admin;
mod cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// tinydc: mail (IMAP, SMTP) and file storage (WebDAV) for a family or a small business.
#[derive(Parser)]
#[command(name = "tinydc", version, about, propagate_version = true)]
struct Cli {
    /// The data directory (default: $TINYDC_DATA, else ./tinydc-data).
    #[arg(long, global = true, env = "TINYDC_DATA", value_name = "DIR")]
    data: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a data directory: config, self-signed certificate, private PostgreSQL, schema.
    Init(cmd::init::InitCommand),
    /// Run the suite: PostgreSQL (if private) and the three daemons, until Ctrl-C.
    Up,
    /// Add, change, delete and list users.
    #[command(subcommand)]
    User(cmd::user::UserCommand),
    /// Set and show storage quotas (mail + files).
    #[command(subcommand)]
    Quota(cmd::quota::QuotaCommand),
    /// Read-only links to a person's file or folder, for someone without an account:
    /// `share ADDRESS PATH [--expires 7d]` prints the URL; `share list [ADDRESS]`; `share revoke ID`.
    Share(cmd::share::ShareArgs),
    /// Mail domains served here.
    #[command(subcommand)]
    Domain(cmd::domain::DomainCommand),
    /// Aliases and catch-alls.
    #[command(subcommand)]
    Alias(cmd::alias::AliasCommand),
    /// DKIM signing keys for outgoing mail.
    #[command(subcommand)]
    Dkim(cmd::mail_admin::DkimCommand),
    /// The outbound mail queue.
    #[command(subcommand)]
    Queue(cmd::mail_admin::QueueCommand),
    /// Print the DNS records to publish for a domain (A/AAAA, MX, SPF, DKIM, DMARC, autoconfig, SRV).
    Dns {
        /// A mail domain served here.
        domain: String,
    },
    /// Show what is configured and whether the database is running.
    Status,
    /// Check the installation (listeners, certificate, DNS, disk, database, queue, quotas);
    /// exits non-zero when any check fails.
    Doctor(cmd::doctor::DoctorArgs),
    /// Bring old mail in: an mbox file (e.g. Google Takeout), a Maildir++ tree or another
    /// IMAP server, with folders, flags and dates; a rerun adds only what is missing.
    Import(cmd::import::ImportArgs),
    /// Remove unreferenced message bodies and leftover temp files (safe while running).
    Sweep(cmd::sweep::SweepArgs),
    /// Write a consistent snapshot (database, message bodies, files, config, certificates) into
    /// a backup folder while the suite runs; unchanged files and bodies are not copied again.
    Backup(cmd::backup::BackupArgs),
    /// Build a new data directory (--data D, which must not exist or be empty) from a backup's
    /// latest complete snapshot, private PostgreSQL included.
    Restore(cmd::backup::restore::RestoreArgs),
    /// Export one person's mail, every folder, as a Maildir++ tree or one mbox file per folder.
    Export(cmd::export::ExportArgs),
    /// Verify the store (blobs, reference counts, quota usage, WebDAV properties and locks,
    /// UID/MODSEQ counters); exits non-zero when anything is wrong. --repair fixes what is safe.
    Check(cmd::check::CheckArgs),
    /// Measure throughput on a throwaway data directory (prints messages/s, MB/s, RSS).
    #[command(subcommand)]
    Bench(cmd::bench::BenchCommand),
}

fn main() -> ExitCode {
    if let Some(daemon) = cmd::up::daemon_called_as() {
        return run_daemon(daemon);
    }
    let cli = Cli::parse();
    shared::tls::install_crypto_provider();
    // sqlx pool internals (a connection checked while the private cluster stops) are not the admin's business.
    shared::daemon::init_logging_with("warn,sqlx=error");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let explicit_data = cli.data.is_some();
    let data = cli.data.unwrap_or_else(|| PathBuf::from("tinydc-data"));
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Init(command) => cmd::init::run_command(&data, command).await,
            Command::Up => cmd::up::run(&data, explicit_data).await,
            Command::User(c) => cmd::user::run(&data, c).await,
            Command::Quota(c) => cmd::quota::run(&data, c).await,
            Command::Share(args) => cmd::share::run(&data, args).await,
            Command::Domain(c) => cmd::domain::run(&data, c).await,
            Command::Alias(c) => cmd::alias::run(&data, c).await,
            Command::Status => cmd::status::run(&data).await,
            Command::Doctor(args) => cmd::doctor::run(&data, args).await,
            Command::Dkim(c) => cmd::mail_admin::dkim(&data, c).await,
            Command::Queue(c) => cmd::mail_admin::queue(&data, c).await,
            Command::Dns { domain } => cmd::mail_admin::dns(&data, &domain).await,
            Command::Bench(c) => cmd::bench::run(c).await,
            Command::Import(args) => cmd::import::run(&data, args).await,
            Command::Sweep(args) => cmd::sweep::run(&data, args).await,
            Command::Backup(args) => cmd::backup::run(&data, args).await,
            Command::Restore(args) => cmd::backup::restore::run(&data, explicit_data, args).await,
            Command::Export(args) => cmd::export::run(&data, args).await,
            Command::Check(args) => cmd::check::run(&data, args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tinydc: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Run daemon `name` as its own `main` does: the daemons' runtime (`shared::daemon::runtime`),
/// then the same start-up and server as the daemon's binary.
fn run_daemon(name: &'static str) -> ExitCode {
    let runtime = match shared::daemon::runtime() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let event_backlog = match name {
        "tinydc-smtpd" => tinydc_smtpd::EVENT_BACKLOG,
        "tinydc-imapd" => tinydc_imapd::EVENT_BACKLOG,
        "tinydc-davd" => davd::EVENT_BACKLOG,
        _ => shared::events::BACKLOG,
    };
    let result = runtime.block_on(async move {
        let (context, shutdown) = shared::daemon::start(name, event_backlog).await?;
        match name {
            "tinydc-smtpd" => tinydc_smtpd::run(context, shutdown).await,
            "tinydc-imapd" => tinydc_imapd::run(context, shutdown).await,
            "tinydc-davd" => davd::run(context, shutdown).await,
            other => anyhow::bail!("{other} is not a tinydc daemon"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // As `main` returning the error prints it in the daemons' own binaries.
            eprintln!("Error: {e:?}");
            ExitCode::FAILURE
        }
    }
}
