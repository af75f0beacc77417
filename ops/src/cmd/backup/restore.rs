//! `tinydc restore --from DIR --data D [--snapshot NAME]`: a working data directory, built from
//! a backup's latest complete snapshot (or the one named), on a fresh machine.
//!
//! D must not exist or be empty. The tree (config, tls/, acme/, files/) is copied, every blob
//! the dump refers to is copied and checked against its sha256 name, a new private cluster is
//! made exactly as `tinydc init` makes one (`PrivateCluster::init`), and `pg_restore` loads the
//! dump: UIDVALIDITY, UIDs, MODSEQs and flags come back as they were, so clients need not
//! resync. Then what only meant something on the old machine is settled, so the store starts
//! clean: davd's journal rows (they name the old disk's temp files and inodes) and WebDAV locks
//! (a client's session state) are dropped, reservations of writers that no longer exist are
//! released, dead properties of resources absent from the restored tree are pruned (a file
//! deleted or moved after the dump was taken), unreferenced blob rows are swept, a folder under
//! files/ of a user the dump does not know is moved to `unclaimed-files/`, and each user's usage
//! is recounted from what was restored. `tinydc.toml` is written last: an interrupted restore
//! leaves no config, so `tinydc up --data D` refuses it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use shared::Config;
use shared::blobs::BlobStore;
use shared::config::CONFIG_FILE;
use shared::pg::{Durability, PrivateCluster};
use shared::size::format_size;

use super::snapshot::{
    self, BLOB_LIST, BLOBS, DUMP, Progress, Snapshot, TEMP_PREFIX, TREE, blob_path, copy_file, sync_dir, sync_tree_dirs,
};

/// Where restore puts user folders the dump has no user for.
const UNCLAIMED: &str = "unclaimed-files";

#[derive(Args)]
pub struct RestoreArgs {
    /// The backup folder written by `tinydc backup --to`.
    #[arg(long, value_name = "DIR")]
    from: PathBuf,
    /// Restore this snapshot (a folder name under DIR/snapshots) instead of the latest.
    #[arg(long, value_name = "NAME")]
    snapshot: Option<String>,
}

pub async fn run(data: &Path, explicit_data: bool, args: RestoreArgs) -> anyhow::Result<()> {
    if !explicit_data {
        bail!("restore needs the new data directory: tinydc restore --from DIR --data D");
    }
    let data = std::path::absolute(data)?;
    let from = std::path::absolute(&args.from)?;
    let chosen = choose(&from, args.snapshot.as_deref())?;
    let created = match std::fs::read_dir(&data) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                let hint = if data.join(CONFIG_FILE).exists() {
                    ""
                } else {
                    " (an interrupted restore leaves it without tinydc.toml: remove it and restore again)"
                };
                bail!(
                    "{} exists and is not empty; restore builds a new data directory and never overwrites one{hint}",
                    data.display()
                );
            }
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
            true
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", data.display())),
    };
    eprintln!("restore: snapshot {} into {}", chosen.manifest.name, data.display());
    let result = restore(&from, &chosen, &data).await;
    if result.is_err() {
        // Leave nothing half-made behind, so the same command can simply be run again.
        if created {
            let _ = std::fs::remove_dir_all(&data);
        } else if let Ok(entries) = std::fs::read_dir(&data) {
            for entry in entries.flatten() {
                let path = entry.path();
                let _ = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
            }
        }
    }
    result
}

/// The snapshot to restore: the named one, which must be complete, or the latest complete.
fn choose(from: &Path, name: Option<&str>) -> anyhow::Result<Snapshot> {
    if !from.join(snapshot::SNAPSHOTS).is_dir() {
        bail!("{} is not a tinydc backup folder (no snapshots/)", from.display());
    }
    match name {
        Some(name) => {
            if name.contains('/') || name.starts_with('.') {
                bail!("{name:?} is not a snapshot name");
            }
            snapshot::read_complete(&from.join(snapshot::SNAPSHOTS).join(name)).with_context(|| {
                format!(
                    "snapshot {name} in {} is missing or incomplete (an interrupted backup)",
                    from.display()
                )
            })
        }
        None => snapshot::complete_snapshots(from)
            .pop()
            .with_context(|| format!("{} holds no complete snapshot", from.display())),
    }
}

async fn restore(from: &Path, chosen: &Snapshot, data: &Path) -> anyhow::Result<()> {
    // Nobody may start the suite on D while it is being built.
    let _lock = shared::process::DataLock::acquire(data)?;
    // Before copying anything: when root, the cluster's user must reach D.
    crate::cmd::init::check_reachable_by_postgres(data)?;
    let mut progress = Progress::new("restore");

    // The tree: config, certificates, ACME account, files.
    let tree = chosen.dir.join(TREE);
    let (tree_files, tree_bytes, progress_back) = {
        let tree = tree.clone();
        let data = data.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let counts = copy_tree(&tree, &data, &mut progress)?;
            anyhow::Ok((counts.0, counts.1, progress))
        })
        .await??
    };
    progress = progress_back;
    // The config is read from the snapshot and written into D last of all: until then D is
    // not a data directory, so `tinydc up` refuses an interrupted restore.
    let config_src = tree.join(CONFIG_FILE);
    let config_text =
        std::fs::read_to_string(&config_src).with_context(|| format!("reading {}", config_src.display()))?;
    let config = Config::parse(&config_text, data)
        .map_err(|problems| anyhow::anyhow!("the snapshot's config has problems: {}", problems.join("; ")))?;
    if !config.uses_private_cluster() {
        bail!("the snapshot's config names an external database; restore makes a private cluster only");
    }

    // The blobs the dump refers to, each checked against its name.
    let blobs = snapshot::read_blob_list(&chosen.dir.join(BLOB_LIST))?;
    let (blob_bytes, progress_back) = {
        let source = from.join(BLOBS);
        let target = config.blobs_dir();
        tokio::task::spawn_blocking(move || {
            let bytes = copy_blobs(&source, &target, &blobs, &mut progress)?;
            anyhow::Ok((bytes, progress))
        })
        .await??
    };
    progress = progress_back;

    // A new private cluster, made as `tinydc init` makes one, then the dump.
    progress.phase("creating the database");
    let cluster = PrivateCluster::new(&config.pg_dir())?;
    cluster.init(Durability::Full)?;
    let loaded = load(&cluster, &chosen.dir.join(DUMP), &config, &mut progress).await;
    let stopped = cluster.stop();
    let settled = loaded?;
    stopped.context("stopping the private PostgreSQL")?;
    sync_tree_dirs(data)?;
    let mut file = File::open(&config_src)?;
    let meta = file.metadata()?;
    copy_file(&mut file, &meta, &data.join(CONFIG_FILE))?;
    sync_dir(data)?;

    println!("restored snapshot {} into {}", chosen.manifest.name, data.display());
    println!(
        "  database: {} dump loaded; {} users",
        format_size(chosen.manifest.dump_bytes),
        settled.users
    );
    println!(
        "  blobs: {} checked and copied ({})",
        chosen.manifest.blobs,
        format_size(blob_bytes)
    );
    println!("  files: {tree_files} copied ({})", format_size(tree_bytes));
    println!(
        "  settled: {} dead properties of absent files pruned, {} locks and {} journal rows dropped, \
         {} users' usage corrected",
        settled.props_pruned, settled.locks, settled.journal, settled.corrected
    );
    if settled.unclaimed > 0 {
        println!(
            "  {} folders of users unknown to the dump moved to {UNCLAIMED}/",
            settled.unclaimed
        );
    }
    println!("next: tinydc --data {} up", data.display());
    Ok(())
}

/// What settling the restored database did.
struct Settled {
    users: usize,
    props_pruned: u64,
    locks: u64,
    journal: u64,
    corrected: u64,
    unclaimed: u64,
}

/// pg_restore the dump into the new cluster's empty database, then settle what belonged to the
/// old machine (see the module comment).
async fn load(
    cluster: &PrivateCluster,
    dump: &Path,
    config: &Config,
    progress: &mut Progress,
) -> anyhow::Result<Settled> {
    progress.phase("loading the database dump");
    let file = File::open(dump).with_context(|| format!("opening {}", dump.display()))?;
    let mut cmd = cluster.client_command("pg_restore");
    // The dump arrives on stdin (opened by us), so the user pg_restore runs as (the postgres
    // user when we are root) needs no access to the backup folder.
    cmd.args(["--exit-on-error", "--single-transaction", "--no-password", "-d"])
        .arg(shared::pg::DB_NAME)
        .stdin(Stdio::from(file))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let output = tokio::task::spawn_blocking(move || cmd.output())
        .await?
        .context("running pg_restore")?;
    if !output.status.success() {
        bail!(
            "pg_restore failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }

    progress.phase("settling the restored database");
    // Connecting runs the migrations this binary knows (a newer tinydc restoring an older dump).
    let db = shared::db::connect(config, Duration::from_secs(30)).await?;
    let settled = async {
        let journal = davd::journal::forget_all(&db).await?;
        let locks = davd::locks::clear_all(&db).await?;
        shared::quota::release_stale(&db).await?;
        let users = shared::accounts::list_users(&db).await?;
        let mut props_pruned = 0;
        let mut corrected = 0;
        let keys = davd::props::all_keys(&db).await?;
        for user in &users {
            let root = config.files_dir().join(&user.address);
            std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
            for key in keys
                .iter()
                .filter(|(id, _)| *id == user.id)
                .map(|(_, key)| key.as_str())
            {
                if !resource_exists(&root, key) {
                    tracing::info!(user = %user.address, key, "pruning dead properties of an absent resource");
                    let mut tx = db.begin().await?;
                    davd::props::delete_tree(&mut tx, user.id, key).await?;
                    tx.commit().await?;
                    props_pruned += 1;
                }
            }
            if shared::quota::recalc(&db, user.id, &root).await?.corrected() {
                corrected += 1;
            }
        }
        // A folder of a user the dump does not know (added after the dump was taken): kept for
        // the admin, but outside files/, where no daemon would serve it.
        let known: std::collections::HashSet<&str> = users.iter().map(|u| u.address.as_str()).collect();
        let mut unclaimed = 0;
        for entry in std::fs::read_dir(config.files_dir())?.flatten() {
            let name = entry.file_name();
            if !known.contains(name.to_string_lossy().as_ref()) {
                let aside = config.data_dir.join(UNCLAIMED);
                std::fs::create_dir_all(&aside)?;
                std::fs::rename(entry.path(), aside.join(&name))?;
                eprintln!(
                    "restore: files/{} belongs to no user in the dump; moved to {UNCLAIMED}/",
                    name.to_string_lossy()
                );
                unclaimed += 1;
            }
        }
        // Rows of bodies nobody refers to: their files were not copied.
        BlobStore::new(config.blobs_dir()).sweep(&db, Duration::ZERO).await?;
        anyhow::Ok(Settled {
            users: users.len(),
            props_pruned,
            locks,
            journal,
            corrected,
            unclaimed,
        })
    }
    .await;
    db.close().await;
    settled
}

/// Whether the resource whose property key is `key` (davd's URL-encoded path, davd/src/paths.rs)
/// exists under `root`, without following symbolic links.
fn resource_exists(root: &Path, key: &str) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let mut path = root.to_path_buf();
    for segment in key.split('/').filter(|s| !s.is_empty()) {
        let name = davd::paths::decode_segment(segment);
        if name.is_empty() || name.contains(&b'/') || name == b".." || name == b"." {
            return false;
        }
        path.push(std::ffi::OsStr::from_bytes(&name));
    }
    path.symlink_metadata().is_ok_and(|m| m.is_file() || m.is_dir())
}

/// Copy the snapshot's tree into the data directory. Returns (files, bytes).
fn copy_tree(tree: &Path, data: &Path, progress: &mut Progress) -> anyhow::Result<(u64, u64)> {
    progress.phase("copying files, config and certificates");
    let mut stack = vec![PathBuf::new()];
    let (mut files, mut bytes) = (0, 0);
    while let Some(rel) = stack.pop() {
        let src = tree.join(&rel);
        let meta = src
            .symlink_metadata()
            .with_context(|| format!("reading {}", src.display()))?;
        let dst = data.join(&rel);
        if meta.is_dir() {
            std::fs::create_dir_all(&dst).with_context(|| format!("creating {}", dst.display()))?;
            for entry in std::fs::read_dir(&src).with_context(|| format!("listing {}", src.display()))? {
                let name = entry?.file_name();
                let config = rel.as_os_str().is_empty() && name == CONFIG_FILE;
                if !config && !name.to_string_lossy().starts_with(TEMP_PREFIX) {
                    stack.push(rel.join(name));
                }
            }
        } else if meta.is_file() {
            let mut file = File::open(&src).with_context(|| format!("opening {}", src.display()))?;
            let meta = file.metadata()?;
            let copied = copy_file(&mut file, &meta, &dst).with_context(|| format!("copying {}", src.display()))?;
            files += 1;
            bytes += copied.bytes;
            progress.files += 1;
            progress.bytes += copied.bytes;
            progress.tick();
        }
    }
    progress.report();
    Ok((files, bytes))
}

/// Copy the listed blobs from the backup into the data directory's blob folder, checking each
/// one's sha256 against its name as it is read. Returns the bytes copied.
fn copy_blobs(source: &Path, target: &Path, blobs: &[(String, u64)], progress: &mut Progress) -> anyhow::Result<u64> {
    progress.phase("copying and checking message bodies");
    let temp_dir = target.join("tmp");
    std::fs::create_dir_all(&temp_dir)?;
    let mut shards = std::collections::BTreeSet::new();
    let mut total = 0;
    for (id, size) in blobs {
        let src_path = blob_path(source, id);
        let mut src = File::open(&src_path)
            .with_context(|| format!("message body {id} is missing from the backup ({})", src_path.display()))?;
        let meta = src.metadata()?;
        let temp = temp_dir.join(format!("{TEMP_PREFIX}{id}"));
        let copied = copy_file(&mut src, &meta, &temp)?;
        if copied.sha256 != *id || copied.bytes != *size {
            let _ = std::fs::remove_file(&temp);
            bail!(
                "message body {} in the backup is damaged (sha256 {}, {} bytes; expected {size} bytes)",
                src_path.display(),
                copied.sha256,
                copied.bytes
            );
        }
        let dst = blob_path(target, id);
        let shard = dst.parent().context("blob paths have a folder")?;
        std::fs::create_dir_all(shard)?;
        std::fs::rename(&temp, &dst).with_context(|| format!("renaming into {}", dst.display()))?;
        shards.insert(shard.to_path_buf());
        total += copied.bytes;
        progress.files += 1;
        progress.bytes += copied.bytes;
        progress.tick();
    }
    for shard in shards {
        sync_dir(&shard)?;
    }
    progress.report();
    Ok(total)
}
