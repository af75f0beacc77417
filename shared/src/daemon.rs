//! Start-up shared by the three daemons: arguments, logging, crypto provider, config, database,
//! signals.
//!
//! Contract with `tinydc up` (and systemd units): a daemon is started as
//! `tinydc-<name> --data DIR` (or with `TINYDC_DATA` set), connects to the database (the private
//! cluster must already be running; it waits up to 30 s for it), migrates, binds its listeners,
//! logs each address it listens on, and exits 0 after SIGTERM or SIGINT once connections are done.
//! Started by `up` (with `TINYDC_SUPERVISED=stdin`), it also shuts down gracefully when its
//! standard input reaches end of file: `up` is gone, even if it was SIGKILLed, and a daemon
//! nobody supervises must not hold the ports the next `up` needs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;

use crate::config::Config;
use crate::context::Context;
use crate::net::{Shutdown, cancel_on_signals};

/// Log to stderr; `RUST_LOG` chooses the level (default `info`).
pub fn init_logging() {
    init_logging_with("info,sqlx=warn");
}

/// Log to stderr at `default_filter` unless `RUST_LOG` says otherwise.
pub fn init_logging_with(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    use std::io::IsTerminal as _;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // No colour codes in journald or a log file: only a terminal shows them as colour.
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// The data directory from `--data DIR`, `--data=DIR` or `TINYDC_DATA`.
pub fn data_dir_from_args(name: &str) -> anyhow::Result<PathBuf> {
    let mut args = std::env::args().skip(1);
    let mut data = std::env::var_os("TINYDC_DATA").map(PathBuf::from);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--data" => match args.next() {
                Some(dir) => data = Some(PathBuf::from(dir)),
                None => bail!("--data needs a directory"),
            },
            "-h" | "--help" => {
                println!(
                    "{name} {}: part of tinydc (started by `tinydc up`)\n\nUsage: {name} --data DIR\n\n\
                     Options:\n  --data DIR   the tinydc data directory (or set TINYDC_DATA)\n  -h, --help   this help\n  -V, --version",
                    env!("CARGO_PKG_VERSION")
                );
                std::process::exit(0);
            }
            "-V" | "--version" => {
                println!("{name} {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            other => match other.strip_prefix("--data=") {
                Some(dir) => data = Some(PathBuf::from(dir)),
                None => bail!("unknown argument {other:?} (see {name} --help)"),
            },
        }
    }
    data.ok_or_else(|| anyhow::anyhow!("no data directory: pass --data DIR or set TINYDC_DATA"))
}

/// Keep memory that large, short-lived buffers used (argon2 needs 19 MiB per password check)
/// from staying in the process after they are freed. glibc raises its mmap threshold after the
/// first such buffer is freed, so every later one comes from the heap and is kept; a fixed
/// threshold makes blocks of 1 MiB and more always mmapped, and unmapped when freed.
#[allow(unsafe_code)] // mallopt(3): a process-wide allocator setting with no safe equivalent.
pub fn return_large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; it is called once, before other threads
    // allocate heavily, and any value is valid for M_MMAP_THRESHOLD below 32 MiB.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Name this process `name` in /proc/PID/comm, which `ps`, `top` and the kernel's messages show:
/// started from the multi-call `tinydc` (as `/proc/self/exe`, by `tinydc up`) it would otherwise
/// be called `exe`. Must run on the main thread (PR_SET_NAME names the calling thread, and the
/// main thread's name is the process's). Best effort: a name is only cosmetic.
#[allow(unsafe_code)] // prctl(2): no safe std equivalent for naming the process.
pub fn name_this_process(name: &str) {
    #[cfg(target_os = "linux")]
    if let Ok(name) = std::ffi::CString::new(name) {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string (the kernel copies at most 16 bytes,
        // truncating longer names) from a pointer that stays valid for the call.
        unsafe {
            libc::prctl(libc::PR_SET_NAME, name.as_ptr());
        }
    }
}

/// Worker threads of a daemon's runtime at most (issue #12). Each worker keeps its own stack
/// pages, thread-local caches and allocator state resident even when the daemon is idle (about
/// 100 KiB each, measured), and the three daemons share the machine's cores with each other and
/// with PostgreSQL: on a 4-core Raspberry Pi, tokio's default of one worker per core gave each
/// daemon 4. Password checks run on threads of their own (`auth::work`) and file I/O on the
/// blocking pool, so two workers only carry the protocol work, which waits on the database
/// and the disk far more than it computes.
pub const MAX_WORKER_THREADS: usize = 2;

/// The multi-threaded tokio runtime a daemon runs on: all drivers enabled (as `#[tokio::main]`),
/// one worker per core up to [`MAX_WORKER_THREADS`]. Workers are named `tokio-worker` and the
/// blocking pool's threads `tokio-blocking` in /proc/PID/task/*/comm (tokio calls both
/// `tokio-rt-worker`): `build` starts the workers first, through the pool, so the first
/// `workers` threads it names are they.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = cores.min(MAX_WORKER_THREADS);
    let named = AtomicUsize::new(0);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name_fn(move || {
            if named.fetch_add(1, Ordering::Relaxed) < workers {
                "tokio-worker".to_string()
            } else {
                "tokio-blocking".to_string()
            }
        })
        .enable_all()
        .build()
}

/// Everything a daemon needs before binding: logging, crypto, config, database, signals.
/// `event_backlog`: the events its receivers may fall behind by (`crate::events::BACKLOG`; each
/// daemon's `EVENT_BACKLOG`). Call it on the main thread (`block_on` of [`runtime`]).
pub async fn start(name: &str, event_backlog: usize) -> anyhow::Result<(Arc<Context>, Shutdown)> {
    name_this_process(name);
    return_large_buffers_to_the_system();
    init_logging();
    crate::tls::install_crypto_provider();
    let data = data_dir_from_args(name)?;
    let config = Config::load(&data)?;
    let context = Context::open_with_event_backlog(config, Duration::from_secs(30), event_backlog).await?;
    // Take this process's quota owner lock and give back what crashed writers had reserved.
    crate::quota::start_owner(&context.db).await?;
    // Quota warnings whose check a crash cut short (after the write's commit) are sent now.
    if let Err(e) = crate::quota::warn::sweep(&context.mail).await {
        tracing::warn!("quota warning sweep at start: {e}");
    }
    let shutdown = Shutdown::new();
    cancel_on_signals(shutdown.clone());
    crate::process::exit_with_supervisor(shutdown.clone());
    Ok((context, shutdown))
}
