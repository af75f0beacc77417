//! `tinydc backup --to DIR`: a consistent snapshot of a data directory, taken while the suite
//! runs (layout in [`snapshot`]).
//!
//! 1. The database first, in one transaction: a REPEATABLE READ transaction exports its
//!    snapshot (`pg_export_snapshot`), `pg_dump --snapshot` dumps exactly that state, and the
//!    same transaction lists the blobs it refers to (`shared::blobs::referenced`).
//! 2. Those blobs, each copied only if DIR/blobs lacks it (content-addressed and immutable, so
//!    a blob present is the right one), hashed as it is read (a damaged body fails the backup).
//! 3. The tree (config, tls/, acme/, files/): a file whose size, mode and modification time
//!    equal the previous snapshot's copy is hard-linked to it; any other is copied. davd's
//!    upload temp files are skipped: an upload is renamed into place whole, and a copy reads
//!    one open file, so a file being uploaded is in the snapshot whole (old or new) or absent.
//! 4. The MANIFEST, written last (see [`snapshot`]).
//! 5. With `--keep N`, older snapshots and the bodies no kept snapshot lists are removed.
//!
//! A body already in DIR/blobs is trusted by its size; `--verify` re-reads each one against its
//! sha256 name and copies a damaged one again (restore always checks every body it copies).
//!
//! Dead properties live in the dump, the files are copied after it: a file uploaded after the
//! dump is restored without the properties set later, and properties of a file deleted or moved
//! after the dump are pruned by `tinydc restore`, which also recounts file usage from the tree
//! it restored (restore.rs).

pub mod restore;
pub mod snapshot;

use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context as _, bail};
use clap::Args;
use shared::pg::PrivateCluster;
use shared::size::format_size;

use crate::admin::Admin;
use snapshot::{
    BLOB_LIST, BLOBS, DUMP, LOCK, MANIFEST, Manifest, PARTIAL, Progress, SNAPSHOTS, TEMP_PREFIX, TREE, TREE_ROOTS,
    blob_path, copy_file, sync_dir, sync_tree_dirs,
};

#[derive(Args)]
pub struct BackupArgs {
    /// The backup folder (made if missing); each backup adds a snapshot to it.
    #[arg(long, value_name = "DIR")]
    to: PathBuf,
    /// After this backup, keep only the newest N complete snapshots, and the message bodies
    /// they refer to (default: keep all).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    keep: Option<u32>,
    /// Also re-read every body already in the backup that this snapshot needs, and copy again
    /// any whose bytes no longer match its sha256 name (slow: reads the whole backup).
    #[arg(long)]
    verify: bool,
}

/// What a backup did, for the summary.
#[derive(Debug, Default)]
struct Totals {
    dump_bytes: u64,
    blobs: u64,
    blob_bytes: u64,
    blobs_copied: u64,
    blob_bytes_copied: u64,
    files: u64,
    file_bytes: u64,
    files_copied: u64,
    file_bytes_copied: u64,
    files_linked: u64,
    file_bytes_linked: u64,
    blobs_repaired: u64,
}

pub async fn run(data: &Path, args: BackupArgs) -> anyhow::Result<()> {
    let data = std::path::absolute(data)?;
    let to = std::path::absolute(&args.to)?;
    if to.starts_with(&data) {
        bail!("the backup folder {} is inside the data directory", to.display());
    }
    for dir in [to.clone(), to.join(SNAPSHOTS), to.join(BLOBS).join("tmp")] {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A backup holds password hashes, DKIM and TLS keys and everyone's mail: only its owner may
    // enter it. Best effort, like the file modes (a disk without Unix permissions refuses).
    {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o700)) {
            tracing::warn!("could not restrict {} to its owner: {e}", to.display());
        }
    }
    let lock = File::create(to.join(LOCK)).context("opening the backup folder's lock")?;
    if lock.try_lock().is_err() {
        bail!("another `tinydc backup` is writing to {}", to.display());
    }
    // We hold the lock: a `.partial` folder now is an interrupted backup's, never complete.
    remove_partials(&to);
    let previous = snapshot::complete_snapshots(&to).pop();
    let name = snapshot_name(&to);
    let partial = to.join(SNAPSHOTS).join(format!("{name}{PARTIAL}"));
    std::fs::create_dir(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let mut progress = Progress::new("backup");
    let mut totals = Totals::default();

    // 1. The database and the list of blobs it refers to, in one transaction.
    progress.phase("dumping the database");
    let admin = Admin::open(&data).await?;
    let dumped = dump(&admin, &partial).await;
    let closed = admin.close().await;
    let (blobs, postgresql, config) = dumped?;
    closed?;
    totals.dump_bytes = std::fs::metadata(partial.join(DUMP))?.len();
    eprintln!("backup: database dump {}", format_size(totals.dump_bytes));

    // 2. Blobs, then 3. the tree; file copying is blocking work.
    let work = {
        let to = to.clone();
        let partial = partial.clone();
        let previous = previous.as_ref().map(|s| s.dir.join(TREE));
        let blobs_dir = config.blobs_dir();
        let verify = args.verify;
        tokio::task::spawn_blocking(move || -> anyhow::Result<(Totals, Progress)> {
            copy_blobs(&blobs_dir, &to.join(BLOBS), &blobs, verify, &mut totals, &mut progress)?;
            copy_tree(
                &data,
                &partial.join(TREE),
                previous.as_deref(),
                &mut totals,
                &mut progress,
            )?;
            sync_tree_dirs(&partial)?;
            Ok((totals, progress))
        })
    };
    let (totals, _progress) = work.await??;
    if !config.tls.cert_file.starts_with(&config.data_dir) || !config.tls.key_file.starts_with(&config.data_dir) {
        eprintln!(
            "backup: warning: the certificate or key is outside the data directory ({}, {}) and is not in the backup",
            config.tls.cert_file.display(),
            config.tls.key_file.display()
        );
    }

    // 4. The manifest, last: then the snapshot gets its final name.
    let manifest = Manifest {
        name: name.clone(),
        created: chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        tinydc: env!("CARGO_PKG_VERSION").to_string(),
        postgresql,
        dump_bytes: totals.dump_bytes,
        blobs: totals.blobs,
        blob_bytes: totals.blob_bytes,
        files: totals.files,
        file_bytes: totals.file_bytes,
    };
    write_durably(&partial.join(MANIFEST), manifest.to_text().as_bytes())?;
    let done = to.join(SNAPSHOTS).join(&name);
    std::fs::rename(&partial, &done).with_context(|| format!("renaming {}", partial.display()))?;
    sync_dir(&to.join(SNAPSHOTS))?;
    let pruned = match args.keep {
        Some(keep) => Some(prune(&to, keep as usize)?),
        None => None,
    };
    drop(lock);

    println!("snapshot {name} complete in {}", done.display());
    println!("  database: {} dump", format_size(totals.dump_bytes));
    println!(
        "  blobs: {} copied ({}), {} already in the backup, {} in all ({})",
        totals.blobs_copied,
        format_size(totals.blob_bytes_copied),
        totals.blobs - totals.blobs_copied,
        totals.blobs,
        format_size(totals.blob_bytes)
    );
    if args.verify {
        println!(
            "  verified: every body already in the backup re-read; {} damaged ones copied again",
            totals.blobs_repaired
        );
    }
    println!(
        "  files: {} copied ({}), {} unchanged and linked ({}), {} in all ({})",
        totals.files_copied,
        format_size(totals.file_bytes_copied),
        totals.files_linked,
        format_size(totals.file_bytes_linked),
        totals.files,
        format_size(totals.file_bytes)
    );
    if let Some((snapshots, blobs, bytes)) = pruned {
        println!(
            "  pruned: {snapshots} older snapshots, {blobs} bodies no snapshot needs ({})",
            format_size(bytes)
        );
    }
    Ok(())
}

/// Remove the complete snapshots older than the newest `keep`, then the blobs in DIR/blobs
/// that no remaining complete snapshot lists. Runs under the backup folder's lock, after the
/// new snapshot is complete. Returns (snapshots, blobs, blob bytes) removed.
fn prune(to: &Path, keep: usize) -> anyhow::Result<(u64, u64, u64)> {
    let mut snapshots = snapshot::complete_snapshots(to);
    let old = snapshots.len().saturating_sub(keep);
    let mut removed = (0, 0, 0);
    for gone in snapshots.drain(..old) {
        // Rename away first: a crash mid-removal must not leave a folder that looks complete
        // but misses files (the manifest is inside it).
        let doomed = gone.dir.with_file_name(format!("{}{PARTIAL}", gone.manifest.name));
        std::fs::rename(&gone.dir, &doomed).with_context(|| format!("renaming {}", gone.dir.display()))?;
        std::fs::remove_dir_all(&doomed).with_context(|| format!("removing {}", doomed.display()))?;
        removed.0 += 1;
    }
    sync_dir(&to.join(SNAPSHOTS))?;
    let mut needed = std::collections::HashSet::new();
    for kept in &snapshots {
        for (id, _) in snapshot::read_blob_list(&kept.dir.join(BLOB_LIST))? {
            needed.insert(id);
        }
    }
    for shard in std::fs::read_dir(to.join(BLOBS))?.flatten() {
        if shard.file_name() == "tmp" || !shard.path().is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(shard.path())?.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if shared::blobs::BlobId::is_valid(&name) && !needed.contains(&name) {
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                std::fs::remove_file(entry.path())?;
                removed.1 += 1;
                removed.2 += size;
            }
        }
    }
    Ok(removed)
}

/// A UTC time name not taken yet (two backups in one second get `-2`, `-3`, ...).
fn snapshot_name(to: &Path) -> String {
    let base = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let taken =
        |n: &str| to.join(SNAPSHOTS).join(n).exists() || to.join(SNAPSHOTS).join(format!("{n}{PARTIAL}")).exists();
    let mut name = base.clone();
    let mut i = 2;
    while taken(&name) {
        name = format!("{base}-{i}");
        i += 1;
    }
    name
}

/// Remove what interrupted backups left: `.partial` snapshots and blob temp files.
fn remove_partials(to: &Path) {
    for entry in std::fs::read_dir(to.join(SNAPSHOTS)).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().ends_with(PARTIAL) {
            eprintln!("backup: removing {} (an interrupted backup)", entry.path().display());
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!("removing {}: {e}", entry.path().display());
            }
        }
    }
    for entry in std::fs::read_dir(to.join(BLOBS).join("tmp"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let _ = std::fs::remove_file(entry.path());
    }
}

/// Dump the database into `partial/database.dump` and list the blobs the same snapshot refers
/// to (written to `partial/blobs.list`). Returns the blobs, the PostgreSQL version, the config.
async fn dump(admin: &Admin, partial: &Path) -> anyhow::Result<(Vec<(String, u64)>, String, shared::Config)> {
    let config = admin.config.clone();
    if !config.uses_private_cluster() {
        bail!(
            "the config names an external database ([database] url): back it up with that server's own tools; \
             `tinydc backup` covers the private cluster"
        );
    }
    let cluster = PrivateCluster::new(&config.pg_dir())?;
    let postgresql = cluster.version()?;
    // One snapshot for the dump and the blob list: REPEATABLE READ sees one state for the whole
    // transaction, and pg_dump imports it (PostgreSQL docs, "Snapshot Synchronization Functions").
    let mut tx = admin.db.begin().await?;
    sqlx::raw_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let snapshot_id = sqlx::query_scalar!(r#"SELECT pg_export_snapshot() AS "id!""#)
        .fetch_one(&mut *tx)
        .await?;
    let blobs: Vec<(String, u64)> = shared::blobs::referenced(&mut tx)
        .await?
        .into_iter()
        .map(|(id, size)| (id.0, size))
        .collect();
    let list: String = blobs.iter().map(|(id, size)| format!("{id} {size}\n")).collect();
    write_durably(&partial.join(BLOB_LIST), list.as_bytes())?;

    let mut cmd = cluster.client_command("pg_dump");
    cmd.args(["--format=custom", "--no-password"])
        .arg(format!("--snapshot={snapshot_id}"));
    let target = partial.join(DUMP);
    let dumped = tokio::task::spawn_blocking(move || run_dump(cmd, &target)).await?;
    // The transaction must outlive pg_dump's import of its snapshot; it ends only now.
    tx.commit().await?;
    dumped?;
    Ok((blobs, postgresql, config))
}

/// Run pg_dump with its output into `target` (through a temp file, fsynced, renamed).
fn run_dump(mut cmd: std::process::Command, target: &Path) -> anyhow::Result<()> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running pg_dump")?;
    let mut stderr = child.stderr.take().context("pg_dump's stderr")?;
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut stdout = child.stdout.take().context("pg_dump's stdout")?;
    let dir = target.parent().context("the dump has a folder")?;
    let mut temp = tempfile::Builder::new().prefix(TEMP_PREFIX).tempfile_in(dir)?;
    let copied = std::io::copy(&mut stdout, temp.as_file_mut());
    let status = child.wait().context("waiting for pg_dump")?;
    let errors = errors.join().unwrap_or_default();
    if !status.success() {
        bail!("pg_dump failed ({status}): {}", errors.trim());
    }
    copied.context("writing the dump")?;
    temp.as_file().sync_all()?;
    temp.persist(target).map_err(|e| e.error)?;
    sync_dir(dir)?;
    Ok(())
}

/// Write `bytes` to `path` through a temp file, fsynced, renamed, folder fsynced.
fn write_durably(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().context("a file has a folder")?;
    let mut temp = tempfile::Builder::new().prefix(TEMP_PREFIX).tempfile_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Copy every blob of `blobs` from the data directory's `source` into the backup's `target`,
/// skipping those already there; each copy is checked against its name.
fn copy_blobs(
    source: &Path,
    target: &Path,
    blobs: &[(String, u64)],
    verify: bool,
    totals: &mut Totals,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    progress.phase("copying message bodies");
    let temp_dir = target.join("tmp");
    let mut touched = std::collections::BTreeSet::new();
    for (id, size) in blobs {
        totals.blobs += 1;
        totals.blob_bytes += size;
        let dst = blob_path(target, id);
        if dst.symlink_metadata().is_ok_and(|m| m.is_file() && m.len() == *size) {
            if !verify || snapshot::sha256_of(&dst)? == *id {
                progress.linked += 1;
                progress.tick();
                continue;
            }
            eprintln!("backup: {} is damaged; copying it again", dst.display());
            totals.blobs_repaired += 1;
        }
        let src_path = blob_path(source, id);
        let mut src = File::open(&src_path).with_context(|| {
            format!(
                "message body {id} is referenced by the database but cannot be read from {} \
                 (run `tinydc check`)",
                src_path.display()
            )
        })?;
        let meta = src.metadata()?;
        let shard = dst.parent().context("blob paths have a folder")?;
        std::fs::create_dir_all(shard)?;
        // Into tmp/ first, checked, then into place: a blob's name always means whole bytes.
        let temp = temp_dir.join(format!("{TEMP_PREFIX}{id}"));
        let copied = copy_file(&mut src, &meta, &temp)?;
        if copied.sha256 != *id {
            let _ = std::fs::remove_file(&temp);
            bail!(
                "message body {} is damaged (its sha256 is {}); run `tinydc check`",
                src_path.display(),
                copied.sha256
            );
        }
        std::fs::rename(&temp, &dst).with_context(|| format!("renaming into {}", dst.display()))?;
        touched.insert(shard.to_path_buf());
        totals.blobs_copied += 1;
        totals.blob_bytes_copied += copied.bytes;
        progress.files += 1;
        progress.bytes += copied.bytes;
        progress.tick();
    }
    for shard in touched {
        sync_dir(&shard)?;
    }
    progress.report();
    Ok(())
}

/// Mirror the data directory's [`TREE_ROOTS`] into `target`, linking unchanged files from the
/// previous snapshot's tree.
fn copy_tree(
    data: &Path,
    target: &Path,
    previous: Option<&Path>,
    totals: &mut Totals,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    progress.phase("copying files, config and certificates");
    std::fs::create_dir_all(target)?;
    // (path relative to the data directory) of what is left to visit.
    let mut stack: Vec<PathBuf> = TREE_ROOTS.iter().rev().map(PathBuf::from).collect();
    while let Some(rel) = stack.pop() {
        let src = data.join(&rel);
        let meta = match src.symlink_metadata() {
            Ok(meta) => meta,
            // Gone since it was listed (deleted or moved by a client): not in this snapshot.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", src.display())),
        };
        let dst = target.join(&rel);
        if meta.is_dir() {
            std::fs::create_dir_all(&dst).with_context(|| format!("creating {}", dst.display()))?;
            let entries = match std::fs::read_dir(&src) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("listing {}", src.display())),
            };
            let mut names: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
            names.sort();
            for name in names.into_iter().rev() {
                let text = name.to_string_lossy();
                // An upload in progress, or a temp file a crash left: never part of the tree.
                if text.starts_with(shared::quota::UPLOAD_TEMP_PREFIX) || text.starts_with(TEMP_PREFIX) {
                    continue;
                }
                stack.push(rel.join(name));
            }
        } else if meta.is_file() {
            copy_one(&src, &dst, previous.map(|p| p.join(&rel)), totals, progress)?;
        } else {
            // davd never makes symlinks and never follows one (davd/src/paths.rs).
            eprintln!("backup: skipping {} (not a regular file or folder)", src.display());
        }
    }
    progress.report();
    Ok(())
}

/// One file of the tree: linked from `previous` when unchanged, else copied.
fn copy_one(
    src: &Path,
    dst: &Path,
    previous: Option<PathBuf>,
    totals: &mut Totals,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    // Everything below is about this open file: if a client replaces the name meanwhile, the
    // snapshot still gets one whole version.
    let mut file = match File::open(src) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("opening {}", src.display())),
    };
    let meta = file.metadata()?;
    if let Some(prev) = previous
        && let Ok(old) = prev.symlink_metadata()
        && old.is_file()
        && old.len() == meta.len()
        && old.mode() == meta.mode()
        && old.modified().ok() == meta.modified().ok()
        && std::fs::hard_link(&prev, dst).is_ok()
    {
        totals.files += 1;
        totals.file_bytes += meta.len();
        totals.files_linked += 1;
        totals.file_bytes_linked += meta.len();
        progress.linked += 1;
        progress.tick();
        return Ok(());
    }
    let copied = copy_file(&mut file, &meta, dst).with_context(|| format!("copying {}", src.display()))?;
    totals.files += 1;
    totals.file_bytes += copied.bytes;
    totals.files_copied += 1;
    totals.file_bytes_copied += copied.bytes;
    progress.files += 1;
    progress.bytes += copied.bytes;
    progress.tick();
    Ok(())
}
