//! Process control shared by `tinydc up`, the admin commands, the benchmarks and the daemons:
//! the one `send_signal`, liveness checks, the single-instance lock on a data directory, and
//! the supervisor pipe a daemon watches to exit when `tinydc up` dies.

use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// A signal, by name (only the ones tinydc sends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Graceful stop.
    Term,
    /// Graceful stop, as Ctrl-C sends it.
    Int,
    /// PostgreSQL's immediate shutdown.
    Quit,
    /// No way to refuse.
    Kill,
}

impl Signal {
    fn number(self) -> libc::c_int {
        match self {
            Signal::Term => libc::SIGTERM,
            Signal::Int => libc::SIGINT,
            Signal::Quit => libc::SIGQUIT,
            Signal::Kill => libc::SIGKILL,
        }
    }
}

/// kill(2): send `signal` to process `pid` (std can only SIGKILL its own children).
#[allow(unsafe_code)]
pub fn send_signal(pid: u32, signal: Signal) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| std::io::Error::from_raw_os_error(libc::ESRCH))?;
    if pid <= 0 {
        // 0 and negative pids address process groups: never meant here.
        return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: kill has no memory-safety preconditions; pid is a single positive process id.
    let rc = unsafe { libc::kill(pid, signal.number()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the `(comm)`, which may itself hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The command line of `pid`, arguments separated by NUL bytes, if it is alive.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None;
    }
    Some(
        raw.split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// Every live process whose binary is named `name` and whose arguments include `--data DIR`
/// (or `--data=DIR`) for exactly `data` (an absolute path).
pub fn find_by_data_dir(name: &str, data: &Path) -> Vec<u32> {
    let data = data.to_string_lossy();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let Some(args) = cmdline(pid) else { continue };
        let binary = args[0].rsplit('/').next().unwrap_or_default();
        let names_data = args.windows(2).any(|w| w[0] == "--data" && w[1] == data)
            || args.iter().any(|a| a.strip_prefix("--data=") == Some(&data));
        if binary == name && names_data && alive(pid) {
            found.push(pid);
        }
    }
    found
}

/// The file holding the single-instance lock of a data directory.
pub const LOCK_FILE: &str = "tinydc.lock";

/// An exclusive lock (flock(2)) on `DATA/tinydc.lock`, held by `tinydc up` for its lifetime and
/// by an admin command while it runs the private cluster itself. The file holds the owner's pid.
/// The kernel drops the lock when the owner exits, however it exits (SIGKILL included), so a
/// stale file never blocks anyone.
#[derive(Debug)]
pub struct DataLock {
    file: File,
    path: PathBuf,
}

/// Who holds a data directory's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its pid, if it wrote one.
    pub pid: Option<u32>,
    /// What it is (`tinydc up`, `tinydc user add ...`), if it is still alive.
    pub command: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.pid, &self.command) {
            (Some(pid), Some(cmd)) => write!(f, "pid {pid}, `{cmd}`"),
            (Some(pid), None) => write!(f, "pid {pid}"),
            (None, _) => write!(f, "a process that has not written its pid yet"),
        }
    }
}

impl DataLock {
    /// Take the lock of `data` without waiting. `Ok(Err(holder))` when another process holds it.
    pub fn try_acquire(data: &Path) -> anyhow::Result<Result<DataLock, Holder>> {
        let path = data.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let pid = text.trim().parse::<u32>().ok();
                let command = pid.and_then(cmdline).map(|args| {
                    let mut args = args;
                    if let Some(first) = args.first_mut() {
                        *first = first.rsplit('/').next().unwrap_or_default().to_string();
                    }
                    args.join(" ")
                });
                return Ok(Err(Holder { pid, command }));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
        // Ours now: record who we are for the next one who asks.
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        file.flush()?;
        Ok(Ok(DataLock { file, path }))
    }

    /// Take the lock of `data`, or fail with a message naming the process that holds it.
    pub fn acquire(data: &Path) -> anyhow::Result<DataLock> {
        match DataLock::try_acquire(data)? {
            Ok(lock) => Ok(lock),
            Err(holder) => bail!(
                "{} is in use by another tinydc ({holder}): only one `tinydc up` may run on a data directory; \
                 stop that one first",
                data.display()
            ),
        }
    }

    /// `DATA/tinydc.lock`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DataLock {
    fn drop(&mut self) {
        // Leave the file (removing it would race with a new owner); the lock goes with the fd.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// The environment variable `tinydc up` sets on the daemons it starts: their standard input is
/// then a pipe whose write end only `up` holds, and end of file means the supervisor is gone.
pub const SUPERVISOR_ENV: &str = "TINYDC_SUPERVISED";

/// In a daemon started by `tinydc up` (with [`SUPERVISOR_ENV`] set to `stdin`): cancel
/// `shutdown` when standard input reaches end of file, i.e. when `up` has exited, even by
/// SIGKILL. Does nothing for a daemon started by hand or by systemd, which keeps running.
/// (Unlike PR_SET_PDEATHSIG, a pipe does not fire when the thread that forked us exits.)
pub fn exit_with_supervisor(shutdown: tokio_util::sync::CancellationToken) {
    if std::env::var_os(SUPERVISOR_ENV).is_none_or(|v| v != "stdin") {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("supervisor-pipe".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 64];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => continue, // up never writes; ignore whatever arrives
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            tracing::warn!("the supervisor (tinydc up) is gone: shutting down");
            shutdown.cancel();
        });
    if let Err(e) = spawned {
        tracing::error!("cannot watch the supervisor pipe: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_reach_a_child_and_liveness_follows() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        assert!(alive(pid));
        send_signal(pid, Signal::Term).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGTERM)
        );
        assert!(!alive(pid));
        assert!(send_signal(pid, Signal::Kill).is_err());
        assert!(send_signal(0, Signal::Kill).is_err(), "never a process group");
    }

    #[test]
    fn a_second_lock_names_the_first_owner() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataLock::acquire(dir.path()).unwrap();
        // flock locks belong to the open file description: a second open in this process conflicts too.
        let holder = DataLock::try_acquire(dir.path()).unwrap().unwrap_err();
        assert_eq!(holder.pid, Some(std::process::id()));
        let err = DataLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
        drop(first);
        DataLock::acquire(dir.path()).expect("free again once dropped");
    }
}
