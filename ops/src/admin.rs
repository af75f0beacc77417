//! Database access for admin commands, with or without `tinydc up` running.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use shared::Config;
use shared::pg::{Durability, PrivateCluster};
use shared::process::DataLock;
use sqlx::PgPool;

/// An open admin session: the config and a migrated pool. If the command had to start the
/// private cluster, [`Admin::close`] stops it again.
pub struct Admin {
    pub config: Config,
    pub db: PgPool,
    started: Option<PrivateCluster>,
    /// The data directory's lock, held while this session runs the cluster it started (so an
    /// `up` started meanwhile refuses instead of having PostgreSQL stopped under it).
    _lock: Option<DataLock>,
}

impl Admin {
    /// Load the config of `data` and connect, starting the private cluster when needed.
    pub async fn open(data: &Path) -> anyhow::Result<Admin> {
        if !data.exists() {
            anyhow::bail!(
                "data directory {} does not exist (create it with `tinydc init --data {} --domain DOMAIN`)",
                data.display(),
                data.display()
            );
        }
        let config = Config::load(data)?;
        let mut started = None;
        let mut lock = None;
        if config.uses_private_cluster() {
            let cluster = PrivateCluster::new(&config.pg_dir())?;
            match DataLock::try_acquire(data)? {
                Ok(ours) => {
                    if cluster.start(Durability::Full)? {
                        started = Some(cluster);
                        lock = Some(ours);
                    }
                }
                // `tinydc up` (or another admin command) runs the cluster: never start a second
                // one, never stop theirs. If it is restarting PostgreSQL, the connect below waits.
                Err(holder) => tracing::debug!("the cluster is run by {holder}"),
            }
        }
        let db = match shared::db::connect(&config, Duration::from_secs(15)).await {
            Ok(db) => db,
            Err(e) => {
                if let Some(cluster) = &started {
                    let _ = cluster.stop();
                }
                return Err(e);
            }
        };
        // Before any command reads a blob file: bodies a crash left pending get their files back
        // (shared/src/blobs.rs module docs). A failure does not keep the admin tools from
        // running (they may be what frees the disk), but is reported.
        let blobs = shared::blobs::BlobStore::new(config.blobs_dir());
        if let Err(e) = shared::blobs::settle_all(&db, &blobs).await {
            tracing::warn!("message bodies left pending by a crash could not be made durable: {e:#}");
        }
        Ok(Admin {
            config,
            db,
            started,
            _lock: lock,
        })
    }

    /// Close the pool and stop the cluster if this session started it.
    pub async fn close(self) -> anyhow::Result<()> {
        self.db.close().await;
        if let Some(cluster) = self.started {
            cluster.stop().context("stopping the private PostgreSQL")?;
        }
        Ok(())
    }
}

/// Run `f` with an admin session, closing it whatever `f` returns.
pub async fn with_admin<T, F>(data: &Path, f: F) -> anyhow::Result<T>
where
    F: AsyncFnOnce(&Admin) -> anyhow::Result<T>,
{
    let admin = Admin::open(data).await?;
    let result = f(&admin).await;
    let closed = admin.close().await;
    let value = result?;
    closed?;
    Ok(value)
}
