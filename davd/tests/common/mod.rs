//! Shared test harness: davd in-process over real HTTPS on 127.0.0.1:0 against a throwaway
//! PostgreSQL (shared::testing), driven by real clients (curl, litmus, rclone).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use shared::net::Shutdown;
use shared::testing::TestEnv;

pub const ALICE: &str = "alice@example.test";
pub const BOB: &str = "bob@example.test";
pub const PW: &str = "correct horse";

pub struct Dav {
    pub env: TestEnv,
    pub addr: SocketAddr,
    pub shutdown: Shutdown,
    task: tokio::task::JoinHandle<()>,
}

impl Dav {
    /// A fresh environment with alice (quota `alice_quota`) and bob, and davd serving it.
    pub async fn start(alice_quota: Option<u64>) -> Dav {
        let env = TestEnv::new().await;
        env.add_user(ALICE, PW, alice_quota).await;
        env.add_user(BOB, PW, None).await;
        Dav::serve(env).await
    }

    /// Serve an existing environment (a "restart" after `stop`).
    pub async fn serve(env: TestEnv) -> Dav {
        let server = davd::Server::bind(env.context.clone()).await.expect("bind davd");
        let addr = server.https_addr().expect("https listener");
        let shutdown = Shutdown::new();
        let s = shutdown.clone();
        let task = tokio::spawn(async move { server.run(s).await.expect("davd runs") });
        Dav {
            env,
            addr,
            shutdown,
            task,
        }
    }

    /// Stop the server and hand back the environment (database and data dir stay).
    pub async fn stop(self) -> TestEnv {
        self.shutdown.cancel();
        let _ = self.task.await;
        self.env
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{}", self.addr.port(), path)
    }

    pub fn files_dir(&self, address: &str) -> PathBuf {
        self.env.context.user_files_dir(address)
    }

    /// curl as `user` with extra arguments; the URL is the last argument.
    pub async fn curl(&self, user: &str, args: &[&str]) -> Reply {
        let mut all = vec!["-u".to_string(), format!("{user}:{PW}")];
        all.extend(args.iter().map(|s| s.to_string()));
        curl(&all).await
    }
}

/// One HTTP exchange as curl saw it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Raw header block(s), as received.
    pub headers: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The value of the last header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.headers
            .lines()
            .rfind(|l| l.to_ascii_lowercase().starts_with(&prefix))
            .map(|l| l[prefix.len()..].trim().to_string())
    }
}

/// The test needs the outside program `tool`: fails, naming it and how to install it, when it
/// is missing (`shared::testing::require_tool`); never skips. Always true (kept as a bool for
/// callers written as `if !require_tool(..) { return; }`).
#[track_caller]
pub fn require_tool(tool: &str) -> bool {
    shared::testing::require_tool(tool);
    true
}

/// Run curl (insecure: the test certificate is self-signed) and collect status, headers, body.
pub async fn curl(args: &[String]) -> Reply {
    shared::testing::require_tool("curl");
    let dir = tempfile::tempdir().unwrap();
    let (headers, body) = (dir.path().join("h"), dir.path().join("b"));
    let out = tokio::process::Command::new("curl")
        .args(["-k", "-s", "-S", "-D"])
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}"])
        .args(args)
        .output()
        .await
        .expect("run curl");
    let status = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
    Reply {
        status,
        headers: std::fs::read_to_string(&headers).unwrap_or_default(),
        body: std::fs::read(&body).unwrap_or_default(),
    }
}

/// Names in `dir` (to look for leftover temp files).
///
/// A folder DELETE is answered once the folder is renamed aside
/// (`.tinydc-upload-deleted-<uuid>`); its files are removed after the answer. This waits up to
/// 10 s for such folders to go, so a test sees the tree the DELETE leaves, and still fails on one
/// that is never removed.
pub fn names_in(dir: &std::path::Path) -> Vec<String> {
    let read = || {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|it| {
                it.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let set_aside = format!("{}deleted-", shared::quota::UPLOAD_TEMP_PREFIX);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let names = read();
        if !names.iter().any(|n| n.starts_with(&set_aside)) || std::time::Instant::now() > deadline {
            return names;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A user's file usage as stored.
pub async fn file_bytes(dav: &Dav, address: &str) -> u64 {
    let user = shared::accounts::get_user(&dav.env.context.db, address).await.unwrap();
    shared::quota::info(&dav.env.context.db, user.id)
        .await
        .unwrap()
        .file_bytes
}

/// Log lines of this test binary (everything at DEBUG and above), as text.
pub fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        buf
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The real binary on `env`'s data directory; its HTTPS port once it listens.
pub async fn spawn_davd(env: &shared::testing::TestEnv) -> (tokio::process::Child, u16) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tinydc-davd"))
        .arg("--data")
        .arg(env.dir.path())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start tinydc-davd");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let port = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            eprintln!("{line}");
            if let Some(rest) = line.split("listening on ").nth(1)
                && rest.contains("(webdav https)")
            {
                let addr: std::net::SocketAddr = rest.split_whitespace().next().unwrap().parse().unwrap();
                return addr.port();
            }
        }
        panic!("tinydc-davd exited before listening");
    })
    .await
    .expect("tinydc-davd listens within 30 s");
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("{line}");
        }
    });
    (child, port)
}

/// A test environment whose config the real binary can use (this test's database), with
/// `dav_extra` added to `[dav]`.
pub async fn binary_env(dav_extra: &str) -> shared::testing::TestEnv {
    let env = shared::testing::TestEnv::new().await;
    env.add_user(ALICE, PW, None).await;
    let o = env.context.db.connect_options();
    let host = match o.get_socket() {
        Some(dir) => format!(
            "localhost:{}/{}?host={}",
            o.get_port(),
            o.get_database().unwrap(),
            dir.display()
        ),
        None => format!("{}:{}/{}", o.get_host(), o.get_port(), o.get_database().unwrap()),
    };
    let config = env.dir.path().join(shared::config::CONFIG_FILE);
    let mut text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[dav]\n", &format!("[dav]\n{dav_extra}"));
    text.push_str(&format!(
        "[database]\nurl = \"postgres://{}@{host}\"\n",
        o.get_username()
    ));
    std::fs::write(&config, text).unwrap();
    env
}

/// A PROPFIND of `path` as alice.
pub async fn propfind(dav: &Dav, path: &str, depth: &str, body: &str) -> Reply {
    dav.curl(
        ALICE,
        &[
            "-X",
            "PROPFIND",
            "-H",
            &format!("Depth: {depth}"),
            "-H",
            "Content-Type: application/xml",
            "--data-binary",
            body,
            &dav.url(path),
        ],
    )
    .await
}

/// Run rclone with `args` (certificate unchecked, no config, one try), printing what it said.
pub async fn rclone<S: AsRef<str>>(args: &[S]) -> std::process::Output {
    shared::testing::require_tool("rclone");
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let out = tokio::process::Command::new("rclone")
        .args(&args)
        .args([
            "--no-check-certificate",
            "--config",
            "/dev/null",
            "--low-level-retries",
            "1",
            "--retries",
            "1",
        ])
        .output()
        .await
        .expect("run rclone");
    println!(
        "rclone {}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// An rclone remote for alice's files on `dav` (`vendor` as rclone names it), at `path`.
pub async fn rclone_remote(dav: &Dav, vendor: &str, path: &str) -> String {
    let obscured = tokio::process::Command::new("rclone")
        .args(["obscure", PW])
        .output()
        .await
        .unwrap();
    let pass = String::from_utf8_lossy(&obscured.stdout).trim().to_string();
    format!(
        ":webdav,url='https://localhost:{}/dav/{ALICE}/',vendor={vendor},user='{ALICE}',pass='{pass}':{path}",
        dav.addr.port()
    )
}

/// A MOVE or COPY (`method`) of `from` to `to`, as alice.
pub async fn transfer(dav: &Dav, method: &str, from: &str, to: &str) -> Reply {
    let destination = format!("Destination: {}", dav.url(to));
    dav.curl(ALICE, &["-X", method, "-H", &destination, &dav.url(from)])
        .await
}
