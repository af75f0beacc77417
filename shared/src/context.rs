//! What every daemon holds: the config, the database pool, the stores, auth and events.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use crate::auth::Auth;
use crate::blobs::BlobStore;
use crate::config::Config;
use crate::events::Events;
use crate::mailstore::MailStore;

/// Shared state of one process.
pub struct Context {
    pub config: Arc<Config>,
    pub db: PgPool,
    pub blobs: BlobStore,
    pub mail: MailStore,
    pub auth: Auth,
    pub events: Events,
}

impl Context {
    /// Build a context over an open pool (schema already migrated) and start listening for events.
    pub async fn new(config: Config, db: PgPool) -> anyhow::Result<Arc<Context>> {
        Context::with_listener_idle(config, db, crate::events::LISTENER_IDLE_RELEASE).await
    }

    /// [`Context::new`] whose event listener gives its connection up `listener_idle` after the
    /// last interest in it (tests; daemons use [`crate::events::LISTENER_IDLE_RELEASE`]).
    pub async fn with_listener_idle(
        config: Config,
        db: PgPool,
        listener_idle: Duration,
    ) -> anyhow::Result<Arc<Context>> {
        Context::build(config, db, listener_idle, crate::events::BACKLOG).await
    }

    async fn build(
        config: Config,
        db: PgPool,
        listener_idle: Duration,
        event_backlog: usize,
    ) -> anyhow::Result<Arc<Context>> {
        let blobs = BlobStore::new(config.blobs_dir()).with_min_free(config.server.min_free_space);
        // Before anything reads a blob: bodies a crash left pending get their files back
        // (blobs.rs module docs).
        crate::blobs::settle_all(&db, &blobs).await?;
        let events = Events::start_with_backlog(&db, listener_idle, event_backlog).await?;
        crate::quota::guard_disk(
            &db,
            vec![config.data_dir.clone(), config.blobs_dir(), config.files_dir()],
            config.server.min_free_space,
        );
        Ok(Arc::new(Context {
            mail: MailStore::new(db.clone(), blobs.clone()).with_limits(config.imap.mailbox_limits()),
            auth: Auth::new(db.clone(), &config.auth),
            config: Arc::new(config),
            db,
            blobs,
            events,
        }))
    }

    /// Connect to the configured database (waiting up to `wait` for it), migrate, and build.
    pub async fn open(config: Config, wait: Duration) -> anyhow::Result<Arc<Context>> {
        Context::open_with_event_backlog(config, wait, crate::events::BACKLOG).await
    }

    /// [`Context::open`] whose event broadcast holds `event_backlog` events
    /// ([`crate::events::BACKLOG`]: what a daemon's receivers need).
    pub async fn open_with_event_backlog(
        config: Config,
        wait: Duration,
        event_backlog: usize,
    ) -> anyhow::Result<Arc<Context>> {
        let db = crate::db::connect(&config, wait).await?;
        Context::build(config, db, crate::events::LISTENER_IDLE_RELEASE, event_backlog).await
    }

    /// `DATA/files/<address>`: a user's WebDAV tree.
    pub fn user_files_dir(&self, address: &str) -> std::path::PathBuf {
        self.config.files_dir().join(address)
    }
}
