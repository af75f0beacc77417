//! The real tinydc-smtpd binary is killed with SIGKILL while several clients send: every
//! message that got 250 is in the store, whole, and nothing half-written is visible, also when
//! an operating-system crash would have lost the files of the bodies not yet settled (small
//! bodies are made durable by their commit, `blob_pending`; the restart writes them back;
//! one client sends bodies over that size, whose files are fsynced before their commit).
//! Then it restarts on the same data and exits 0 on SIGTERM.

mod common;

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shared::process::{Signal, send_signal};
use shared::testing::TestEnv;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// A `[database] url` for the test's database (its throwaway cluster listens on a socket).
fn database_url(env: &TestEnv) -> String {
    let options = env.context.db.connect_options();
    let db = options.get_database().expect("test database name");
    match options.get_socket() {
        Some(socket) => format!(
            "postgres://{}@localhost:{}/{db}?host={}",
            options.get_username(),
            options.get_port(),
            socket.display()
        ),
        None => {
            let base = std::env::var("DATABASE_URL").expect("TCP test database comes from DATABASE_URL");
            let (server, _) = base.rsplit_once('/').expect("DATABASE_URL has a database");
            format!("{server}/{db}")
        }
    }
}

/// Start the binary and wait for its MX address.
async fn spawn(dir: &std::path::Path) -> (Child, std::net::SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tinydc-smtpd"))
        .arg("--data")
        .arg(dir)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start tinydc-smtpd");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("listening on ").nth(1)
                && rest.contains("(smtp mx)")
            {
                return rest.split(' ').next().unwrap().parse().unwrap();
            }
        }
        panic!("tinydc-smtpd exited before listening");
    })
    .await
    .expect("tinydc-smtpd listens within 60 s");
    // Keep draining the log so the daemon never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

/// Lines of a body: about 24 KiB, committed with its bytes in `blob_pending`
/// (`shared::blobs::PENDING_MAX` is 64 KiB).
const BODY_LINES: usize = 400;
/// Lines of the bodies client [`LARGE_CLIENT`] sends: about 96 KiB, over `PENDING_MAX`, so its
/// file is fsynced before the commit (the other path of a delivery).
const LARGE_BODY_LINES: usize = 1600;
const LARGE_CLIENT: usize = 3;

fn message(subject: &str) -> String {
    let mut m = format!("From: <x@example.org>\r\nTo: <alice@example.test>\r\nSubject: {subject}\r\n\r\n");
    let lines = if subject.starts_with(&format!("crash-{LARGE_CLIENT}-")) {
        LARGE_BODY_LINES
    } else {
        BODY_LINES
    };
    for i in 0..lines {
        m.push_str(&format!(
            "line {i} of {subject} ........................................\r\n"
        ));
    }
    m.push_str("END-OF-MESSAGE\r\n");
    m
}

async fn read_reply(stream: &mut BufReader<TcpStream>) -> Option<u16> {
    let mut line = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return line.get(..3)?.parse().ok();
        }
    }
}

/// Send messages one after another until the server dies; record the acknowledged ones.
async fn sender(addr: std::net::SocketAddr, client: usize, acked: Arc<Mutex<Vec<String>>>) {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return;
    };
    let mut s = BufReader::new(stream);
    if read_reply(&mut s).await != Some(220) {
        return;
    }
    let _ = s.get_mut().write_all(b"EHLO crash.test\r\n").await;
    if read_reply(&mut s).await != Some(250) {
        return;
    }
    for n in 0.. {
        let subject = format!("crash-{client}-{n}");
        let cmd = b"MAIL FROM:<x@example.org>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n";
        if s.get_mut().write_all(cmd).await.is_err() {
            return;
        }
        for code in [250, 250, 354] {
            if read_reply(&mut s).await != Some(code) {
                return;
            }
        }
        let data = format!("{}.\r\n", message(&subject));
        if s.get_mut().write_all(data.as_bytes()).await.is_err() {
            return;
        }
        match read_reply(&mut s).await {
            Some(250) => acked.lock().unwrap().push(subject),
            _ => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_message() {
    let env = TestEnv::new().await;
    let alice = env.add_user("alice@example.test", "pw", None).await.id;
    let dir = env.dir.path().to_path_buf();
    let config_path = dir.join(shared::config::CONFIG_FILE);
    let mut text = std::fs::read_to_string(&config_path).unwrap();
    text.push_str(&format!("[database]\nurl = \"{}\"\n", database_url(&env)));
    let text = text.replace("[smtp]\n", "[smtp]\nconnections_per_ip_per_minute = 10000\n");
    std::fs::write(&config_path, text).unwrap();

    let (mut child, addr) = spawn(&dir).await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..4).map(|c| tokio::spawn(sender(addr, c, acked.clone()))).collect();
    // Let some messages through, then kill the daemon mid-flight.
    for _ in 0..600 {
        if acked.lock().unwrap().len() >= 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    send_signal(child.id().expect("running"), Signal::Kill).unwrap();
    let _ = child.wait().await;
    for c in clients {
        let _ = c.await;
    }
    let acked: Vec<String> = acked.lock().unwrap().clone();
    assert!(acked.len() >= 10, "too few messages before the kill: {}", acked.len());
    let large = format!("crash-{LARGE_CLIENT}-");
    assert!(
        acked.iter().any(|s| s.starts_with(&large)),
        "no large body acknowledged before the kill"
    );

    // A killed client's statements already sent still run to their end in PostgreSQL (a
    // delivery's one statement, the settler's deletion of settled rows after their fsyncs).
    // Wait for them, so the list below is what the database holds for good: a row deleted
    // after it was read would be one whose file was fsynced, which the damage below must not
    // touch (an operating-system crash could not have damaged it).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let busy: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
               AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction')",
        )
        .fetch_one(&env.context.db)
        .await
        .unwrap();
        if busy == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the killed daemon's statements never ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The bodies whose files were not fsynced yet at the kill: what an operating-system crash
    // could leave of each (no file, an empty one, one cut short). Only the database has them.
    let pending: Vec<String> = sqlx::query_scalar("SELECT id FROM blob_pending")
        .fetch_all(&env.context.db)
        .await
        .unwrap();
    for (i, id) in pending.iter().enumerate() {
        let path = env.context.blobs.path(&shared::blobs::BlobId(id.clone()));
        // A small body's file is written beside its commit (shared::blobs `start_unsynced`):
        // the kill may have come before it was, which is the first kind of damage already.
        if !path.exists() {
            continue;
        }
        match i % 3 {
            0 => std::fs::remove_file(&path).unwrap(),
            1 => std::fs::write(&path, b"").unwrap(),
            _ => {
                let bytes = std::fs::read(&path).unwrap();
                std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
            }
        }
    }
    eprintln!("{} bodies were pending at the kill; their files damaged", pending.len());

    // Restart on the same data (it settles the pending bodies before it listens).
    let (mut child, addr) = spawn(&dir).await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM blob_pending")
        .fetch_one(&env.context.db)
        .await
        .unwrap();
    assert_eq!(left, 0, "bodies still pending after the restart");

    // Every acknowledged message is stored, and every stored message is whole.
    let mail = &env.context.mail;
    let inbox = mail.mailbox(alice, "INBOX").await.unwrap();
    let states = mail.message_states(alice, inbox.id).await.unwrap();
    let uids: Vec<u32> = states.iter().map(|s| s.uid).collect();
    let mut stored = HashSet::new();
    for m in mail.fetch(alice, inbox.id, &uids).await.unwrap() {
        let bytes = env
            .context
            .blobs
            .read(&m.blob)
            .await
            .expect("every stored message has its blob");
        assert_eq!(bytes.len() as u64, m.size);
        let text = String::from_utf8(bytes).unwrap();
        let subject = text
            .split("Subject: ")
            .nth(1)
            .unwrap()
            .split("\r\n")
            .next()
            .unwrap()
            .to_string();
        assert!(
            text.ends_with(&message(&subject)),
            "stored message {subject} is not whole"
        );
        stored.insert(subject);
    }
    for subject in &acked {
        assert!(stored.contains(subject), "{subject} got 250 but is not stored");
    }
    eprintln!("{} acknowledged, {} stored", acked.len(), stored.len());

    // It serves again and exits 0 on SIGTERM.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut greeting = [0u8; 3];
    s.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"220");
    drop(s);
    send_signal(child.id().unwrap(), Signal::Term).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit after SIGTERM: {status}");
}
