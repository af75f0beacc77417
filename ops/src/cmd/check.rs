//! `tinydc check [--repair]`: prove the store is whole, or say what is not.
//!
//! Read-only by default; safe while the suite runs. The database facts are read in one
//! REPEATABLE READ snapshot, so a write committing meanwhile cannot make a count and its
//! references disagree. Blob files and WebDAV locks younger than the grace period are left out
//! (a delivery writes its blob before its row commits; a LOCK may precede its file).
//!
//! `--repair` fixes only what is safe, each through the function of the table's owner, taking
//! the row locks its writers take: stale quota reservations (`quota::release_stale`), reference
//! counts (`blobs::recount`), UIDNEXT/HIGHESTMODSEQ (`mailstore::repair_counters`), usage
//! (`quota::recalc`), properties and locks of paths that no longer exist (davd's `props`,
//! `locks`), then unreferenced old blobs (`BlobStore::sweep`). A missing or damaged body cannot be
//! repaired: the messages it belongs to are named (address, folder, UID).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use shared::blobs::{self, BlobHealth, BlobId, BlobStore};
use shared::mailstore::{self, CounterProblem};
use shared::quota;
use shared::size::format_size;

use crate::admin::{Admin, with_admin};

#[derive(Args)]
pub struct CheckArgs {
    /// Fix what can be fixed safely (usage, reference counts, counters, orphaned properties and
    /// locks, stale reservations, unreferenced bodies) and say what was done.
    #[arg(long)]
    repair: bool,
    /// Leave alone blob files and locks younger than this many minutes (writes in progress).
    #[arg(long, default_value_t = 60)]
    grace_minutes: u64,
}

/// Problems found and what became of them.
#[derive(Default)]
struct Report {
    problems: u64,
    repaired: u64,
    /// Problems that --repair cannot fix.
    unrepairable: u64,
}

impl Report {
    fn problem(&mut self, text: impl std::fmt::Display) {
        self.problems += 1;
        println!("problem: {text}");
    }

    fn cannot_repair(&mut self, text: impl std::fmt::Display) {
        self.problems += 1;
        self.unrepairable += 1;
        println!("problem: {text}");
    }

    fn repaired(&mut self, text: impl std::fmt::Display) {
        self.repaired += 1;
        println!("repaired: {text}");
    }
}

/// What the snapshot read: every fact compared below.
struct Snapshot {
    refs: Vec<blobs::RefCount>,
    counters: Vec<CounterProblem>,
    usage: Vec<(i64, String, u64, u64)>,
    mail_bytes: HashMap<i64, u64>,
}

pub async fn run(data: &Path, args: CheckArgs) -> anyhow::Result<()> {
    let grace = Duration::from_secs(args.grace_minutes.saturating_mul(60));
    with_admin(data, async |admin| check(admin, args.repair, grace).await).await
}

async fn check(admin: &Admin, repair: bool, grace: Duration) -> anyhow::Result<()> {
    let db = &admin.db;
    let store = BlobStore::new(admin.config.blobs_dir());
    let mut report = Report::default();

    let snapshot = {
        let mut tx = db.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let snapshot = Snapshot {
            refs: blobs::reference_counts(&mut tx, grace).await?,
            counters: mailstore::counter_problems(&mut tx).await?,
            usage: quota::recorded_usage(&mut tx).await?,
            mail_bytes: {
                // Mail usage is the messages plus the IMAP METADATA entries (shared/src/metadata.rs).
                let mut bytes = mailstore::mail_bytes_by_user(&mut tx).await?;
                for (user_id, entries) in shared::metadata::bytes_by_user(&mut tx).await? {
                    *bytes.entry(user_id).or_default() += entries;
                }
                bytes
            },
        };
        tx.commit().await?;
        snapshot
    };

    // 1. Reservations of writers that died.
    let stale = quota::count_stale(db).await?;
    if stale > 0 {
        report.problem(format!("{stale} quota reservation(s) of writers no longer running"));
        if repair {
            let released = quota::release_stale(db).await?;
            report.repaired(format!("released {released} stale reservation(s)"));
        }
    }

    // 2. Every body against its name and size; reference counts against references.
    let total: u64 = snapshot.refs.iter().map(|r| r.size.max(0) as u64).sum();
    let progress = ProgressBar::new(total);
    progress.set_style(
        ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} of bodies verified ({eta} left)")
            .expect("valid progress template"),
    );
    let mut damaged: Vec<(String, &'static str)> = Vec::new();
    let mut awaiting_sweep = 0u64;
    for r in &snapshot.refs {
        let id = BlobId(r.id.clone());
        if !BlobId::is_valid(&id.0) {
            // Never made into a path: a name like this can only come from a damaged table.
            progress.suspend(|| report.cannot_repair(format!("blob row {:?} does not name a blob", r.id)));
            continue;
        }
        let health = tokio::task::block_in_place(|| store.verify_blocking(&id, r.size.max(0) as u64))?;
        progress.inc(r.size.max(0) as u64);
        match health {
            BlobHealth::Whole => {}
            // A body whose last reference went may be swept meanwhile; only referenced ones count.
            _ if r.actual == 0 => {}
            BlobHealth::Missing => damaged.push((r.id.clone(), "missing")),
            BlobHealth::WrongSize(_) | BlobHealth::WrongHash => {
                damaged.push((r.id.clone(), "damaged (content does not match its hash)"))
            }
        }
        if r.recorded != r.actual {
            progress.suspend(|| {
                report.problem(format!(
                    "body {}: reference count {} but {} reference(s) exist",
                    r.id, r.recorded, r.actual
                ))
            });
            if repair && let Some((before, after)) = blobs::recount(db, &r.id).await? {
                progress.suspend(|| report.repaired(format!("body {}: reference count {before} -> {after}", r.id)));
            }
        } else if r.actual == 0 && r.zero_before_grace {
            awaiting_sweep += 1;
        }
    }
    progress.finish_and_clear();
    if !damaged.is_empty() {
        let ids: Vec<String> = damaged.iter().map(|d| d.0.clone()).collect();
        let mut conn = db.acquire().await?;
        let places = mailstore::messages_with_blobs(&mut conn, &ids).await?;
        let queued = queued_with_blobs(db, &ids).await?;
        for (id, what) in &damaged {
            let mut whose: Vec<String> = places
                .iter()
                .filter(|p| &p.blob_id == id)
                .map(|p| format!("{} {} uid {}", p.address, p.mailbox, p.uid))
                .collect();
            if let Some(n) = queued.get(id) {
                whose.push(format!("{n} outbound queue row(s)"));
            }
            tracing::error!(blob = %id, "message body {what}");
            report.cannot_repair(format!(
                "body {id} {what}; cannot be repaired (restore it from a backup); it belongs to: {}",
                whose.join(", ")
            ));
        }
    }

    // 3. Blob files the database does not know (a crash between a blob's write and its commit).
    let known: HashSet<String> = snapshot.refs.iter().map(|r| r.id.clone()).collect();
    let unknown = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.unknown_files(&known, grace)).await??
    };
    for (name, size) in &unknown {
        report.problem(format!(
            "body file {name} ({}) is referenced by nothing",
            format_size(*size)
        ));
    }
    if awaiting_sweep > 0 {
        println!("note: {awaiting_sweep} unreferenced bodies wait for `tinydc sweep`");
    }

    // 4. UID and MODSEQ counters.
    for c in &snapshot.counters {
        report.problem(format!(
            "{} {}: UIDNEXT {} with UIDs up to {}, HIGHESTMODSEQ {} with MODSEQs up to {}",
            c.address, c.name, c.uidnext, c.max_uid, c.highestmodseq, c.max_modseq
        ));
        if repair {
            mailstore::repair_counters(db, c.user_id, c.mailbox_id).await?;
            report.repaired(format!("{} {}: counters moved past the messages", c.address, c.name));
        }
    }

    // 5. Usage against what is stored: mail from the snapshot, files measured on disk.
    let files_dir = admin.config.files_dir();
    // A WebDAV write between its commit and its rename is charged but not on disk yet.
    let writing = davd::journal::users_with_pending_steps(db, &files_dir).await?;
    for (user_id, address, mail_recorded, files_recorded) in &snapshot.usage {
        let mail_actual = snapshot.mail_bytes.get(user_id).copied().unwrap_or(0);
        let root = files_dir.join(address);
        let mut files_actual = tokio::task::spawn_blocking(move || quota::tree_bytes(&root)).await?;
        if writing.contains(user_id) {
            println!("note: {address}: a WebDAV write is in progress; file usage not compared");
            files_actual = *files_recorded;
        }
        if mail_actual == *mail_recorded && files_actual == *files_recorded {
            continue;
        }
        report.problem(format!(
            "{address}: usage recorded as mail {mail_recorded} B, files {files_recorded} B; stored: mail {mail_actual} B, files {files_actual} B"
        ));
        if repair && writing.contains(user_id) {
            // Only the mail part is wrong; recalc would count the files too, mid-write.
            println!("note: {address}: not repaired while its WebDAV write is in progress; run again");
            report.unrepairable += 1;
        } else if repair {
            let recount = quota::recalc(db, *user_id, &files_dir.join(address)).await?;
            report.repaired(format!(
                "{address}: usage recounted: mail {} B, files {} B",
                recount.mail_after, recount.files_after
            ));
        }
    }

    // 6. Folders under DATA/files that belong to nobody.
    let addresses: HashSet<&str> = snapshot.usage.iter().map(|u| u.1.as_str()).collect();
    if let Ok(entries) = std::fs::read_dir(&files_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !addresses.contains(name.as_str()) {
                report.cannot_repair(format!(
                    "{} belongs to no user (not removed: move it away or add the user back)",
                    entry.path().display()
                ));
            }
        }
    }

    // 7. Dead properties and locks of paths that do not exist.
    check_dav(admin, &snapshot, repair, grace, &mut report).await?;

    // 8. Unreferenced bodies older than the grace period, as `tinydc sweep` removes them
    //    (after the counts above are right: a count of 0 is what lets a body go).
    if repair {
        let swept = store.sweep(db, grace).await?;
        if swept.blobs_removed > 0 || swept.temp_files_removed > 0 {
            report.repaired(format!(
                "removed {} unreferenced bodies ({}) and {} temp files",
                swept.blobs_removed,
                format_size(swept.bytes_freed),
                swept.temp_files_removed
            ));
        }
    }

    println!(
        "checked {} bodies ({}), {} users: {} problem(s){}",
        snapshot.refs.len(),
        format_size(total),
        snapshot.usage.len(),
        report.problems,
        if repair {
            format!(", {} repair(s) made", report.repaired)
        } else {
            String::new()
        }
    );
    if report.problems == 0 {
        return Ok(());
    }
    if repair {
        if report.unrepairable > 0 {
            bail!(
                "{} problem(s) cannot be repaired (see above); the rest were repaired",
                report.unrepairable
            );
        }
        return Ok(());
    }
    bail!(
        "{} problem(s) found (run `tinydc check --repair` to fix what can be fixed)",
        report.problems
    )
}

/// Outbound queue rows per blob id, among `ids`.
async fn queued_with_blobs(db: &sqlx::PgPool, ids: &[String]) -> anyhow::Result<HashMap<String, i64>> {
    Ok(shared::queue::count_by_blob(db, ids).await?.into_iter().collect())
}

async fn check_dav(
    admin: &Admin,
    snapshot: &Snapshot,
    repair: bool,
    grace: Duration,
    report: &mut Report,
) -> anyhow::Result<()> {
    let db = &admin.db;
    let files_dir = admin.config.files_dir();
    let address: HashMap<i64, &str> = snapshot.usage.iter().map(|u| (u.0, u.1.as_str())).collect();
    let in_flight = davd::journal::journal_paths(db).await?;
    let busy = |user_id: i64, key: &str| {
        let target = key_bytes(key);
        in_flight.iter().any(|(u, p)| {
            *u == user_id && (target == *p || target.starts_with(p) && target.get(p.len()) == Some(&b'/'))
        })
    };
    for (user_id, key) in davd::props::all_keys(db).await? {
        let Some(address) = address.get(&user_id) else { continue };
        let root = files_dir.join(address);
        if exists_in_tree(&root, &key) || busy(user_id, &key) {
            continue;
        }
        report.problem(format!("{address}: properties of {key}, which does not exist"));
        if repair {
            let mut tx = db.begin().await?;
            // Looked at again just before: a file made meanwhile keeps its properties.
            if !exists_in_tree(&root, &key) {
                davd::props::delete_tree(&mut tx, user_id, &key).await?;
                tx.commit().await?;
                report.repaired(format!("{address}: properties of {key} removed"));
            }
        }
    }
    for lock in davd::locks::all_locks(db, grace).await? {
        let Some(address) = address.get(&lock.user_id) else {
            continue;
        };
        let root = files_dir.join(address);
        let orphan = lock.old && !exists_in_tree(&root, &lock.path);
        if !lock.expired && !orphan {
            continue;
        }
        let why = if lock.expired {
            "expired"
        } else {
            "of a path that does not exist"
        };
        report.problem(format!("{address}: lock {} on {} {why}", lock.token, lock.path));
        if repair && davd::locks::remove(db, lock.user_id, &lock.token).await? {
            report.repaired(format!("{address}: lock {} removed", lock.token));
        }
    }
    Ok(())
}

/// A key's path inside the tree as raw bytes, without the leading '/'.
fn key_bytes(key: &str) -> Vec<u8> {
    let segments: Vec<Vec<u8>> = key
        .split('/')
        .filter(|s| !s.is_empty())
        .map(davd::paths::decode_segment)
        .collect();
    segments.join(&b'/')
}

/// Whether the resource of `key` exists under `root`, walked level by level without following
/// symbolic links (davd treats a link as absent); `.` and `..` levels never exist.
fn exists_in_tree(root: &Path, key: &str) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let mut path = PathBuf::from(root);
    if std::fs::symlink_metadata(&path).map(|m| !m.is_dir()).unwrap_or(true) {
        return false;
    }
    for segment in key.split('/').filter(|s| !s.is_empty()) {
        let name = davd::paths::decode_segment(segment);
        if name == b"." || name == b".." || name.contains(&b'/') || name.is_empty() {
            return false;
        }
        path.push(std::ffi::OsStr::from_bytes(&name));
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() || meta.is_file() => {}
            _ => return false,
        }
    }
    true
}
