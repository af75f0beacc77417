//! Direct access to a data directory's store for tests that prepare or damage it on purpose:
//! its private PostgreSQL (started here, stopped on drop) and its mail store, as the daemons
//! would use them. `tinydc` commands run meanwhile find the cluster running and leave it be.

#![allow(dead_code)] // Each test file uses its own subset.

use std::path::Path;
use std::time::Duration;

use shared::Config;
use shared::blobs::BlobStore;
use shared::mailstore::MailStore;
use shared::pg::{Durability, PrivateCluster};
use sqlx::PgPool;

pub struct Store {
    pub rt: tokio::runtime::Runtime,
    pub config: Config,
    pub db: PgPool,
    pub mail: MailStore,
    cluster: PrivateCluster,
}

impl Store {
    /// Open the store of `data` (made by `tinydc init`).
    pub fn open(data: &Path) -> Store {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let config = Config::load(data).unwrap();
        let cluster = PrivateCluster::new(&config.pg_dir()).unwrap();
        cluster.start(Durability::Throwaway).unwrap();
        let db = rt
            .block_on(shared::db::connect(&config, Duration::from_secs(15)))
            .unwrap();
        let mail = MailStore::new(db.clone(), BlobStore::new(config.blobs_dir()));
        Store {
            rt,
            config,
            db,
            mail,
            cluster,
        }
    }

    /// Wait (up to 10 s) until every small body this store wrote has its file fsynced and has
    /// left `blob_pending` (`BlobStore::settle_later` runs about 100 ms after each write):
    /// a test that damages a body's file must do it after, or the next `tinydc` command writes
    /// the file back from the database (`blobs::settle_all`).
    pub fn settled(&self) {
        let until = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let pending = self.number("SELECT count(*) FROM blob_pending");
            if pending == 0 {
                return;
            }
            assert!(
                std::time::Instant::now() < until,
                "{pending} bodies still pending after 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A user's id.
    pub fn user_id(&self, address: &str) -> i64 {
        self.rt
            .block_on(shared::accounts::get_user(&self.db, address))
            .unwrap()
            .id
    }

    /// Run one SQL statement (test damage and setup), returning rows affected.
    pub fn sql(&self, statement: &str) -> u64 {
        self.rt
            .block_on(sqlx::query(statement).execute(&self.db))
            .unwrap_or_else(|e| panic!("{statement}: {e}"))
            .rows_affected()
    }

    /// One bigint from a query.
    pub fn number(&self, query: &str) -> i64 {
        self.rt
            .block_on(sqlx::query_scalar::<_, i64>(query).fetch_one(&self.db))
            .unwrap_or_else(|e| panic!("{query}: {e}"))
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let db = self.db.clone();
        self.rt.block_on(db.close());
        let _ = self.cluster.stop();
    }
}
