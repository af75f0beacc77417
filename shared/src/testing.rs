//! Real PostgreSQL for tests: one throwaway private cluster per test binary (fsync off), a fresh
//! database per test cloned from a migrated template. With `DATABASE_URL` set, that server is
//! used instead (databases named `tinydc_t_*` are created on it).
//!
//! The throwaway cluster lives in a temp folder and is stopped and removed by a small guardian
//! process when the test binary exits, however it exits.
//!
//! One policy for outside programs ([`require_tool`]): a test that needs one (a real client such
//! as swaks or litmus, or the PostgreSQL server binaries) fails, naming the program and how to
//! install it, when it is missing; it never passes by skipping. `scripts/install-test-deps`
//! installs all of them.
//!
//! Compiled only with the `testing` feature, which the workspace's crates enable in their
//! dev-dependencies only: release binaries do not contain this module.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgPool};

use crate::accounts;
use crate::config::Config;
use crate::context::Context;
use crate::pg::{Durability, PrivateCluster};

/// How to get every outside program the tests use, named in each failure.
pub const INSTALL_HINT: &str = "install every test prerequisite with `scripts/install-test-deps` \
     (or run the tests with `scripts/test`, which does that first)";

/// The Debian package that provides `tool` (the names `scripts/install-test-deps` installs).
pub fn debian_package(tool: &str) -> &str {
    match tool {
        "mbsync" => "isync",
        "pebble-challtestsrv" => "pebble",
        "initdb" | "pg_ctl" | "postgres" => "postgresql",
        "kill" | "pkill" | "ps" => "procps",
        "systemd-analyze" => "systemd",
        other => other,
    }
}

/// Whether `tool` is an executable on `PATH` (or an executable path).
fn on_path(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    let executable =
        |p: &std::path::Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if tool.contains('/') {
        return executable(std::path::Path::new(tool));
    }
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(tool))))
}

/// The test needs the outside program `tool` (swaks, litmus, mbsync, rclone, curl, python3...):
/// panics, naming it, its Debian package and the install command, when it is not on `PATH`.
/// Never skips: a test that cannot run its client has not passed.
#[track_caller]
pub fn require_tool(tool: &str) {
    if !on_path(tool) {
        panic!(
            "this test needs `{tool}`, which is not installed (Debian package `{pkg}`: \
             apt-get install {pkg}); {INSTALL_HINT}",
            pkg = debian_package(tool)
        );
    }
}

/// [`require_tool`] for several programs at once.
#[track_caller]
pub fn require_tools(tools: &[&str]) {
    for tool in tools {
        require_tool(tool);
    }
}

/// The test needs the PostgreSQL server binaries (it starts a private cluster of its own, as
/// `tinydc` does): panics with how to install them when they are missing.
#[track_caller]
pub fn require_postgres_binaries() {
    if let Err(e) = crate::pg::find_bin_dir() {
        panic!("this test needs the PostgreSQL server binaries ({e}); {INSTALL_HINT}");
    }
}

struct Server {
    /// Options for the server's maintenance database (`postgres`).
    admin: PgConnectOptions,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            let options = PgConnectOptions::from_str(&url).expect("DATABASE_URL is a PostgreSQL URL");
            return Server {
                admin: options.database("postgres"),
            };
        }
        let root = tempfile::Builder::new()
            .prefix("tinydc-test-pg-")
            .tempdir_in("/tmp")
            .expect("temp dir for the test cluster")
            .keep();
        let cluster = PrivateCluster::new(&root.join("pg"))
            .unwrap_or_else(|e| panic!("the tests need the PostgreSQL server binaries ({e}); {INSTALL_HINT}"));
        // The temp dir is ours; PostgreSQL may run as another user and must reach its folder.
        set_traversable(&root);
        cluster
            .init(Durability::Throwaway)
            .expect("initdb for the test cluster");
        spawn_guardian(&cluster, &root);
        Server {
            admin: cluster.connect_options().database("postgres"),
        }
    })
}

fn set_traversable(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
}

/// A `sh` that waits for our end of a pipe to close (we exited), then stops the cluster
/// immediately and removes its folder.
fn spawn_guardian(cluster: &PrivateCluster, root: &std::path::Path) {
    let script = format!(
        "read _ignored; pid=$(head -n1 '{pidfile}' 2>/dev/null); \
         if [ -n \"$pid\" ]; then kill -QUIT \"$pid\" 2>/dev/null; \
         for i in $(seq 50); do kill -0 \"$pid\" 2>/dev/null || break; sleep 0.1; done; fi; \
         rm -rf '{root}'",
        pidfile = cluster.data_dir().join("postmaster.pid").display(),
        root = root.display()
    );
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawning the test cluster guardian");
    // Keep the write end open for the life of the process; never write to it.
    let stdin = child.stdin.take().expect("piped stdin");
    std::mem::forget(stdin);
    std::mem::forget(child);
    let _ = std::io::stdout().flush();
}

use std::os::unix::process::CommandExt as _;

fn unique_name(prefix: &str) -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().r#gen();
    format!("{prefix}_{}_{n:016x}", std::process::id())
}

/// The migrated template database of this test process (created once).
async fn template() -> &'static str {
    static TEMPLATE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let name = unique_name("tinydc_tpl");
            let mut admin = server().admin.connect().await.expect("connect to the test server");
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut admin)
                .await
                .expect("create template");
            admin.close().await.ok();
            let pool = crate::db::pool(server().admin.clone().database(&name), 2, Duration::from_secs(10))
                .await
                .expect("connect to the template");
            crate::db::migrate(&pool).await.expect("migrate the template");
            pool.close().await;
            name
        })
        .await
}

/// A fresh, migrated, empty database for one test.
pub async fn test_db() -> PgPool {
    let template = template().await;
    let name = unique_name("tinydc_t");
    let mut admin = server().admin.connect().await.expect("connect to the test server");
    // CREATE DATABASE ... TEMPLATE fails while another session is connected to the template;
    // that only happens during the template's own creation, so a short retry is enough.
    let mut tries = 0;
    loop {
        match sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .execute(&mut admin)
            .await
        {
            Ok(_) => break,
            Err(e) if tries < 50 => {
                tries += 1;
                tracing::debug!("retrying CREATE DATABASE: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("create test database: {e}"),
        }
    }
    admin.close().await.ok();
    crate::db::pool(server().admin.clone().database(&name), 20, Duration::from_secs(10))
        .await
        .expect("connect to the test database")
}

/// A data directory in a temp folder with default config (listeners on 127.0.0.1 port 0,
/// plaintext allowed on loopback), a self-signed certificate for `localhost`, the domain
/// `example.test`, and a fresh database.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub context: Arc<Context>,
}

impl TestEnv {
    /// Build one.
    pub async fn new() -> TestEnv {
        TestEnv::with_listener_idle(crate::events::LISTENER_IDLE_RELEASE).await
    }

    /// Build one whose context's event listener gives its connection up `listener_idle` after
    /// the last interest in it.
    pub async fn with_listener_idle(listener_idle: Duration) -> TestEnv {
        crate::tls::install_crypto_provider();
        let dir = tempfile::tempdir().expect("temp data dir");
        let text = "[server]\nhostname = \"localhost\"\ndomain = \"example.test\"\n\
                    [smtp]\nmx_listen = \"127.0.0.1:0\"\nsubmission_listen = \"127.0.0.1:0\"\nsubmissions_listen = \"127.0.0.1:0\"\n\
                    [imap]\nlisten = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\n\
                    [dav]\nhttps_listen = \"127.0.0.1:0\"\n";
        std::fs::write(dir.path().join(crate::config::CONFIG_FILE), text).expect("write test config");
        let config = Config::load(dir.path()).expect("test config is valid");
        crate::tls::generate_self_signed(
            &["localhost".to_string(), "127.0.0.1".to_string()],
            &config.tls.cert_file,
            &config.tls.key_file,
        )
        .expect("test certificate");
        let db = test_db().await;
        accounts::add_domain(&db, "example.test")
            .await
            .expect("add test domain");
        let context = Context::with_listener_idle(config, db, listener_idle)
            .await
            .expect("test context");
        TestEnv { dir, context }
    }

    /// Add a user with a password and an optional quota limit (bytes).
    pub async fn add_user(&self, address: &str, password: &str, quota: Option<u64>) -> accounts::User {
        accounts::add_user(&self.context.db, address, password, quota)
            .await
            .expect("add test user")
    }
}

/// Certificate swaps as an operator (certbot, ACME) makes them, and TLS clients that show which
/// certificate a server presented.
pub mod certs {
    use std::net::SocketAddr;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName};
    use tokio::net::TcpStream;
    use tokio_rustls::TlsConnector;
    use tokio_rustls::client::TlsStream;

    use crate::config::Config;

    /// Long enough for every daemon's [`crate::tls::CertStore`] to look at the files again.
    pub const RELOAD_WAIT: Duration = Duration::from_millis(2_500);

    fn replace(path: &Path, bytes: &[u8]) {
        let tmp = path.with_extension("swap");
        std::fs::write(&tmp, bytes).expect("write the new file");
        std::fs::rename(&tmp, path).expect("rename the new file into place");
    }

    /// The certificate the config's file holds now.
    pub fn current(config: &Config) -> CertificateDer<'static> {
        CertificateDer::pem_file_iter(&config.tls.cert_file)
            .expect("read the certificate")
            .next()
            .expect("a certificate")
            .expect("a valid certificate")
    }

    /// Replace the config's certificate and key with a new self-signed pair for `names` (a new
    /// key, so a new serial and signature), key first then certificate, each written beside
    /// and renamed into place. Returns the new certificate.
    pub fn replace_pair(config: &Config, names: &[&str]) -> CertificateDer<'static> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let pair = rcgen::generate_simple_self_signed(names).expect("generate a certificate");
        replace(&config.tls.key_file, pair.key_pair.serialize_pem().as_bytes());
        replace(&config.tls.cert_file, pair.cert.pem().as_bytes());
        pair.cert.der().clone()
    }

    /// A TLS client that trusts `certs` (as roots) and nothing else.
    pub fn client(certs: &[CertificateDer<'static>]) -> TlsConnector {
        crate::tls::install_crypto_provider();
        let mut roots = rustls::RootCertStore::empty();
        for c in certs {
            roots.add(c.clone()).expect("a usable root");
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }

    /// Connect with TLS to `addr` as `localhost`; the stream and the certificate it presented.
    pub async fn connect(addr: SocketAddr, client: &TlsConnector) -> (TlsStream<TcpStream>, CertificateDer<'static>) {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from("localhost").expect("a name");
        let tls = tokio::time::timeout(Duration::from_secs(10), client.connect(name, tcp))
            .await
            .expect("TLS handshake in time")
            .expect("TLS handshake");
        let cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .expect("the server presented a certificate")
            .clone()
            .into_owned();
        (tls, cert)
    }
}

/// The statements sqlx sends to PostgreSQL, as its own statement log names them (the `summary`
/// of each `sqlx::query` event), for tests that count a command's round trips. Process-wide:
/// [`statements::capture`] installs the one global subscriber of the test binary, so a test of
/// this kind is the only test of its file. Statements of the tasks that run after the answers
/// (the blob settler, `settle_bodies`; the batched usage folds, `fold_usage`) are not counted:
/// they are no command's cost.
pub mod statements {
    use std::sync::Mutex;

    use tracing::field::{Field, Visit};
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::{Context, SubscriberExt as _};

    static STATEMENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

    struct Statements;

    struct Summary(String);

    impl Visit for Summary {
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == "summary" {
                self.0 = value.to_string();
            }
        }
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "summary" {
                self.0 = format!("{value:?}");
            }
        }
    }

    impl<S> tracing_subscriber::Layer<S> for Statements
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
            let after_answers = ctx
                .event_scope(event)
                .is_some_and(|mut scope| scope.any(|span| matches!(span.name(), "settle_bodies" | "fold_usage")));
            if event.metadata().target() == "sqlx::query" && !after_answers {
                let mut summary = Summary(String::new());
                event.record(&mut summary);
                STATEMENTS.lock().unwrap_or_else(|e| e.into_inner()).push(summary.0);
            }
        }
    }

    /// Start recording (once per test binary: it sets the global subscriber).
    pub fn capture() {
        let filter = tracing_subscriber::filter::Targets::new()
            .with_target("sqlx::query", tracing::Level::DEBUG)
            .with_target("shared::blobs", tracing::Level::DEBUG)
            .with_target("shared::quota", tracing::Level::DEBUG);
        let subscriber = tracing_subscriber::registry().with(Statements.with_filter(filter));
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber of this test binary");
    }

    /// The statements recorded since the last call, oldest first.
    pub fn taken() -> Vec<String> {
        std::mem::take(&mut *STATEMENTS.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
