//! The metadata database: connecting (private cluster or configured URL) and the embedded
//! migrations, which every daemon and `tinydc` run at start.

use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use crate::config::Config;
use crate::pg::PrivateCluster;

/// Connection options for the configured database.
pub fn connect_options(config: &Config) -> anyhow::Result<PgConnectOptions> {
    match &config.database.url {
        Some(url) => PgConnectOptions::from_str(url).context("database.url is not a valid PostgreSQL URL"),
        None => Ok(PrivateCluster::new(&config.pg_dir())?.connect_options()),
    }
}

/// How long a pooled connection may sit unused before it is closed. Each open connection is a
/// PostgreSQL backend of several MiB, so a daemon's pool shrinks back to nothing within two of
/// these after a burst (sqlx reaps once per period; min_connections is 0) and, with the event
/// listeners given up too (`shared::events::LISTENER_IDLE_RELEASE`), an idle install keeps no
/// backend at all (issue #12's memory target). Opening a connection again
/// over the unix socket costs a few ms, once per burst.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A pooled connection unused for longer than this is checked with a round trip before it is
/// handed out (a server restarted meanwhile has closed it). sqlx's default checks every
/// connection at every acquire: one extra round trip to PostgreSQL before each statement or
/// transaction, though a connection in use moments ago is as good as it was then (issue #12:
/// that ping was a third of the round trips of an IMAP command). A connection that did break
/// within this time fails its statement; the command answers NO [UNAVAILABLE] and sqlx closes
/// the connection, as for a server that goes away mid-command.
pub const POOL_CHECK_AFTER_IDLE: Duration = Duration::from_secs(1);

/// PostgreSQL's plan cache setting for every pooled connection. sqlx prepares each statement
/// once per connection; by default PostgreSQL still plans it again at every execution whenever
/// its estimate of the generic plan is no cheaper than the custom plans it has made, which is
/// always the case for the `= ANY($1)` and `unnest($1)` array statements of the write paths.
/// Measured with `pg_stat_statements` (track_planning) over 200 mixed IMAP cycles: planning was
/// a third of PostgreSQL's time per cycle. Every statement here looks rows up by key, so the
/// plan made once per connection is the plan the values would get (PostgreSQL 15 documentation,
/// 20.7.4 "plan_cache_mode").
const PLAN_CACHE_MODE: (&str, &str) = ("plan_cache_mode", "force_generic_plan");

/// A pool over `options`, waiting up to `wait` for the server to accept connections.
pub async fn pool(options: PgConnectOptions, max_connections: u32, wait: Duration) -> anyhow::Result<PgPool> {
    let options = options.options([PLAN_CACHE_MODE]);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let attempt = PgPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(30))
            .idle_timeout(Some(POOL_IDLE_TIMEOUT))
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= POOL_CHECK_AFTER_IDLE {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options.clone())
            .await;
        match attempt {
            Ok(pool) => return Ok(pool),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e).context("cannot connect to the database");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Connect to the configured database and bring its schema up to date.
pub async fn connect(config: &Config, wait: Duration) -> anyhow::Result<PgPool> {
    let pool = pool(connect_options(config)?, config.database.max_connections, wait).await?;
    migrate(&pool).await?;
    Ok(pool)
}

/// Whether `e` means the database cannot be reached right now (restarting after a crash,
/// shutting down, the pool timed out): a transient failure the client should retry, not a bug.
/// SQLSTATE class 08 is "connection exception", 57P01-57P03 are admin shutdown, crash shutdown
/// and "cannot connect now" (PostgreSQL, Appendix A).
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03")),
        _ => false,
    }
}

/// Apply every migration not yet applied (safe to run from several processes at once: sqlx
/// takes an advisory lock). A schema newer than this binary is accepted: migrations only add,
/// so a daemon not yet upgraded keeps running beside an upgraded `tinydc`.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    // The schema, `shared/migrations/NNNN_*.sql`, embedded in every binary.
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await.context("applying database migrations")
}

/// At most this many connections a process keeps out of its pool between statements
/// ([`KeptConnections`]): about as many statements as run at once on a small machine, and
/// none while the pool is at its maximum (the rest of the process acquires from the pool).
pub const KEEP_MAX: usize = 4;

/// How long a kept connection waits for its next statement before it goes back to the pool: a
/// connection is back within twice this, so well within [`POOL_CHECK_AFTER_IDLE`], and the
/// pool's idle release ([`POOL_IDLE_TIMEOUT`]) still shrinks an idle process to no backend.
/// Short, because a statement that does not use kept connections and finds the pool at its
/// maximum waits for them (the mixed IMAP load runs a statement every few ms).
pub const KEEP_FOR: Duration = Duration::from_millis(200);

/// Pooled connections kept out of the pool between the statements of the commands that run
/// most often (an IMAP session's FETCH, STORE, EXPUNGE, APPEND).
///
/// sqlx 0.8 sends every connection it takes back into its pool a round trip to PostgreSQL
/// (Sync, then wait for ReadyForQuery: sqlx-core `pool/connection.rs`, `return_to_pool`), in a
/// task of its own, with no option to leave it out: one more wake-up of a PostgreSQL backend
/// and of a worker per command, on a machine of two cores that the commands' own statements
/// share (issue #12). A connection whose statement ended well is known to be idle at a
/// statement boundary, so [`Kept::done`] keeps it here for the next statement instead; one
/// that failed or whose future was dropped mid-statement goes back through the pool as before
/// (dropping a [`Kept`] without `done`), which flushes or closes it. A kept connection unused
/// for [`KEEP_FOR`] goes back to the pool (with that round trip, once per burst).
#[derive(Debug, Clone)]
pub struct KeptConnections {
    inner: std::sync::Arc<KeptInner>,
}

#[derive(Debug)]
struct KeptInner {
    pool: PgPool,
    state: std::sync::Mutex<KeptState>,
}

/// The kept connections with the moment each was last used, the one used last at the end, and
/// whether a task runs that sends the ones unused for [`KEEP_FOR`] back to the pool.
type KeptState = (Vec<(PoolConnection<Postgres>, Instant)>, bool);

/// A connection from [`KeptConnections::take`]; derefs to the connection. Dropped without
/// [`Kept::done`] (an error, a future dropped mid-statement) it goes back through the pool.
#[derive(Debug)]
pub struct Kept {
    conn: PoolConnection<Postgres>,
    home: std::sync::Arc<KeptInner>,
}

impl KeptConnections {
    pub fn new(pool: PgPool) -> KeptConnections {
        KeptConnections {
            inner: std::sync::Arc::new(KeptInner {
                pool,
                state: std::sync::Mutex::new((Vec::new(), false)),
            }),
        }
    }

    /// The pool the connections come from.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// A kept connection, or one from the pool.
    pub async fn take(&self) -> Result<Kept, sqlx::Error> {
        let kept = self.inner.lock().0.pop().map(|(conn, _)| conn);
        let conn = match kept {
            Some(conn) => conn,
            None => self.inner.pool.acquire().await?,
        };
        Ok(Kept {
            conn,
            home: self.inner.clone(),
        })
    }
}

impl KeptInner {
    fn lock(&self) -> std::sync::MutexGuard<'_, KeptState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Until none is kept: every [`KEEP_FOR`], send back to the pool those unused for as long.
    async fn send_back_unused(self: std::sync::Arc<Self>) {
        loop {
            tokio::time::sleep(KEEP_FOR).await;
            let (unused, finished) = {
                let mut state = self.lock();
                let (kept, running) = &mut *state;
                // Ascending by last use: `done` pushes at the end, `take` pops from it.
                let cut = kept.partition_point(|(_, since)| since.elapsed() >= KEEP_FOR);
                let unused: Vec<PoolConnection<Postgres>> = kept.drain(..cut).map(|(conn, _)| conn).collect();
                // Under the lock: the next `done` finds no task running and starts one.
                *running = !kept.is_empty();
                (unused, kept.is_empty())
            };
            // Dropped outside the lock: each goes back to the pool (sqlx's round trip).
            drop(unused);
            if finished {
                return;
            }
        }
    }
}

impl Drop for KeptInner {
    /// Outside a tokio runtime (the runtime of a command or a test ended before its mail store),
    /// giving a connection back to the pool would panic: sqlx spawns its release. The pool is
    /// going away with the process or the test then, so the kept connections are only closed.
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_ok() {
            return;
        }
        let kept = std::mem::take(&mut self.state.get_mut().unwrap_or_else(|e| e.into_inner()).0);
        for (conn, _) in kept {
            drop(conn.detach());
        }
    }
}

impl Kept {
    /// The statements on this connection ended well: keep it for the next one (or give it back
    /// to the pool when [`KEEP_MAX`] are kept or the pool is at its maximum).
    pub fn done(self) {
        let Kept { conn, home } = self;
        let pool = &home.pool;
        // Kept only while the pool may still open a connection for a statement that does not
        // use kept ones (a LOGIN's): at its maximum, such a statement would wait for a kept
        // connection to go back (10 IMAP sessions in a closed loop made a third fewer cycles).
        let spare = pool.size() < pool.options().get_max_connections();
        let mut state = home.lock();
        if !spare || state.0.len() >= KEEP_MAX {
            drop(state);
            drop(conn);
            return;
        }
        state.0.push((conn, Instant::now()));
        if !state.1 {
            state.1 = true;
            tokio::spawn(home.clone().send_back_unused());
        }
    }
}

impl std::ops::Deref for Kept {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for Kept {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}
