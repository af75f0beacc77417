//! Connection-level scenarios: greeting, CAPABILITY, LOGIN, AUTHENTICATE PLAIN (SASL-IR and
//! continuation), LOGINDISABLED, STARTTLS, implicit TLS, throttling, state gate, malformed
//! input and limits.

mod common;

use base64::Engine as _;
use common::*;
use tokio::net::TcpStream;

#[tokio::test]
async fn capability_login_logout() {
    let server = Server::start().await;
    let mut c = server.connect().await;
    let caps = c.ok("CAPABILITY").await;
    let line = caps.find("* CAPABILITY");
    assert!(line.contains("IMAP4rev1") && line.contains("STARTTLS") && line.contains("AUTH=PLAIN"));
    assert!(line.contains("SASL-IR") && line.contains("LITERAL+"));
    // Commands of later states are refused before login.
    c.bad("SELECT INBOX").await;
    c.no(&format!("LOGIN {USER} wrong")).await;
    let r = c.cmd(&format!("LOGIN {USER} wrong")).await;
    assert!(r.tagged.contains("[AUTHENTICATIONFAILED]"), "{r:?}");
    let r = c.ok(&format!("LOGIN {USER} \"{PASS}\"")).await;
    assert!(r.tagged.contains("[CAPABILITY IMAP4rev1"), "{r:?}");
    assert!(r.tagged.contains("UIDPLUS") && r.tagged.contains("MOVE"));
    c.bad(&format!("LOGIN {USER} \"{PASS}\"")).await;
    let r = c.ok("LOGOUT").await;
    assert!(r.has("* BYE"));
    assert!(c.closed().await);
}

#[tokio::test]
async fn authenticate_plain_both_ways() {
    let server = Server::start().await;
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("\0{USER}\0{PASS}"));
    let mut c = server.connect().await;
    c.ok(&format!("AUTHENTICATE PLAIN {b64}")).await;
    c.ok("SELECT INBOX").await;

    let mut c = server.connect().await;
    c.write(b"a1 AUTHENTICATE PLAIN\r\n").await;
    assert_eq!(c.raw_line().await, "+ ");
    c.write(format!("{b64}\r\n").as_bytes()).await;
    let r = c.until("a1").await;
    assert!(r.tagged.starts_with("a1 OK"), "{r:?}");

    let mut c = server.connect().await;
    c.write(b"a1 AUTHENTICATE PLAIN\r\n").await;
    assert_eq!(c.raw_line().await, "+ ");
    c.write(b"*\r\n").await;
    assert!(c.until("a1").await.tagged.starts_with("a1 BAD"));
    let bad = base64::engine::general_purpose::STANDARD.encode(format!("\0{USER}\0nope"));
    let r = c.no(&format!("AUTHENTICATE PLAIN {bad}")).await;
    assert!(r.tagged.contains("[AUTHENTICATIONFAILED]"));
    c.no("AUTHENTICATE CRAM-MD5").await;
}

#[tokio::test]
async fn logindisabled_until_starttls() {
    let server = Server::start_with(|c| c.auth.allow_plaintext_on_loopback = false, None).await;
    let mut c = server.connect().await;
    let caps = c.ok("CAPABILITY").await;
    assert!(caps.find("* CAPABILITY").contains("LOGINDISABLED"));
    assert!(!caps.find("* CAPABILITY").contains("AUTH=PLAIN"));
    let r = c.no(&format!("LOGIN {USER} \"{PASS}\"")).await;
    assert!(r.tagged.contains("PRIVACYREQUIRED"));
    drop(c);
    let connector = server.tls_connector();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    // Real STARTTLS flow over a concrete TcpStream.
    let mut tcp = TcpStream::connect(server.plain).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = [0u8; 4096];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"* OK"));
    // A command pipelined after STARTTLS was sent in clear and must be dropped.
    tcp.write_all(b"s1 STARTTLS\r\ns2 LOGOUT\r\n").await.unwrap();
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"s1 OK"), "{}", String::from_utf8_lossy(&buf[..n]));
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let mut c = Client::new(Box::new(tls));
    let caps = c.ok("CAPABILITY").await;
    let line = caps.find("* CAPABILITY");
    assert!(line.contains("AUTH=PLAIN") && !line.contains("STARTTLS") && !line.contains("LOGINDISABLED"));
    c.ok(&format!("LOGIN {USER} \"{PASS}\"")).await;
    c.ok("SELECT INBOX").await;
}

#[tokio::test]
async fn implicit_tls() {
    let server = Server::start_with(|c| c.auth.allow_plaintext_on_loopback = false, None).await;
    let tcp = TcpStream::connect(server.tls).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = server.tls_connector().connect(name, tcp).await.expect("TLS");
    let mut c = Client::new(Box::new(tls));
    assert!(c.line().await.starts_with("* OK"));
    c.ok(&format!("LOGIN {USER} \"{PASS}\"")).await;
    c.ok("LIST \"\" *").await;
    c.ok("LOGOUT").await;
}

#[tokio::test]
async fn failed_logins_are_throttled() {
    let server = Server::start().await;
    let mut c = server.connect().await;
    let mut throttled = false;
    for _ in 0..15 {
        let r = c.no(&format!("LOGIN {USER} wrong")).await;
        if r.tagged.contains("[UNAVAILABLE]") {
            throttled = true;
            break;
        }
    }
    assert!(throttled, "no throttling after 15 failures");
}

#[tokio::test]
async fn malformed_input() {
    let server = Server::start().await;
    let mut c = server.login().await;
    let r = c.bad("FROB").await;
    assert!(r.tagged.starts_with("t1 BAD") || r.tagged.contains("BAD"));
    c.bad("FETCH").await;
    c.bad("SELECT").await;
    c.bad("LIST \"unterminated").await;
    c.write(b"\r\n").await;
    assert!(c.raw_line().await.starts_with("* BAD"));
    // Still usable afterwards.
    c.ok("NOOP").await;
    // A line over the limit is refused, the connection kept.
    let long = format!("a1 NOOP {}\r\n", "x".repeat(70_000));
    c.write(long.as_bytes()).await;
    assert!(c.raw_line().await.contains("BAD"));
    c.ok("NOOP").await;
    // A literal over the limit is refused before it is sent.
    c.write(b"a2 APPEND INBOX {999999999999}\r\n").await;
    let line = c.raw_line().await;
    assert!(line.starts_with("a2 NO [TOOBIG]"), "{line}");
    c.ok("NOOP").await;
    // Repeated garbage disconnects.
    for _ in 0..10 {
        c.write(b"garbage garbage\r\n").await;
    }
    assert!(c.closed().await);
}

#[tokio::test]
async fn binary_garbage_does_not_hang() {
    let server = Server::start().await;
    let mut c = server.connect().await;
    c.write(&[0xff, 0x00, 0x10, b'\r', b'\n']).await;
    assert!(c.raw_line().await.contains("BAD"));
    c.write(b"x LOGIN {5}\r\n").await;
    assert!(c.raw_line().await.starts_with('+'));
    c.write(b"alice {3}\r\n").await;
    assert!(c.raw_line().await.starts_with('+'));
    c.write(b"xyz\r\n").await;
    let r = c.until("x").await;
    assert!(r.tagged.starts_with("x NO"), "{r:?}");
    // Before login, literals are limited to the line length.
    c.write(b"y LOGIN {1000000}\r\n").await;
    assert!(c.raw_line().await.starts_with("y NO [TOOBIG]"));
}

#[tokio::test]
async fn oversized_nonsync_literal_and_idle_timeout() {
    let server = Server::start_with(
        |c| {
            c.imap.max_literal_size = 1000;
            c.imap.idle_timeout_secs = 1;
        },
        None,
    )
    .await;
    let mut c = server.login().await;
    // LITERAL+ over the limit cannot be refused before it is sent: the server says BYE.
    c.write(b"a1 APPEND INBOX {5000+}\r\n").await;
    assert!(c.raw_line().await.starts_with("* BYE"));
    assert!(c.closed().await);
    // A silent client is logged out after idle_timeout_secs.
    let mut c = server.login().await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(c.raw_line().await.starts_with("* BYE"));
    assert!(c.closed().await);
}

#[tokio::test]
async fn several_literals_cannot_exceed_the_command_limit() {
    // Each literal is under max_literal_size; together they would pass the command limit
    // (max_literal_size + 4 lines), so the one that would is refused before it is sent.
    let server = Server::start_with(
        |c| {
            c.imap.max_literal_size = 1000;
            c.imap.max_line_length = 1024;
        },
        None,
    )
    .await;
    let mut c = server.login().await;
    c.write(b"r RENAME {1000}\r\n").await;
    let mut refused = None;
    for i in 0..10 {
        let line = c.raw_line().await;
        if !line.starts_with('+') {
            refused = Some((i, line));
            break;
        }
        c.write(&[b'a'; 1000]).await;
        c.write(b" {1000}\r\n").await;
    }
    let (i, line) = refused.expect("never refused");
    assert!(line.starts_with("r NO [TOOBIG]"), "{line}");
    assert!(i <= 5, "refused only after {i} literals");
    c.ok("NOOP").await;
}

/// The real binary, as `tinydc up` starts it: `tinydc-imapd --data DIR` logs one line per
/// listener, serves, and exits 0 after SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_and_stops_on_sigterm() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let env = shared::testing::TestEnv::new().await;
    env.add_user(USER, PASS, None).await;
    // Point the data directory's config at this test's database.
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
    let url = format!("postgres://{}@{host}", o.get_username());
    let config = env.dir.path().join(shared::config::CONFIG_FILE);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("[database]\nurl = \"{url}\"\n"));
    std::fs::write(&config, text).unwrap();

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tinydc-imapd"))
        .arg("--data")
        .arg(env.dir.path())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start tinydc-imapd");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut listening = Vec::new();
    let addr = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            eprintln!("{line}");
            if let Some(rest) = line.split("listening on ").nth(1) {
                listening.push(rest.to_string());
                if listening.len() == 2 {
                    let plain = listening
                        .iter()
                        .find(|l| l.contains("STARTTLS"))
                        .expect("STARTTLS listener");
                    let addr: std::net::SocketAddr = plain.split_whitespace().next().unwrap().parse().unwrap();
                    return addr;
                }
            }
        }
        panic!("tinydc-imapd exited before listening");
    })
    .await
    .expect("tinydc-imapd listens within 30 s");
    assert!(listening.iter().any(|l| l.contains("implicit TLS")), "{listening:?}");
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("{line}");
        }
    });
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut c = Client::new(Box::new(stream));
    assert!(c.line().await.starts_with("* OK"));
    c.ok(&format!("LOGIN {USER} \"{PASS}\"")).await;
    c.ok("SELECT INBOX").await;
    shared::process::send_signal(child.id().unwrap(), shared::process::Signal::Term).unwrap();
    // The open session is told goodbye, and the process exits 0.
    assert!(c.raw_line().await.starts_with("* BYE"));
    let status = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
