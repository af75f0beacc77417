//! An acknowledged STORE and EXPUNGE survive the postmaster's SIGKILL at the moment imapd
//! answered them: each commits (its WAL flushed, the private cluster keeps fsync and
//! synchronous_commit on) before the tagged OK is sent. `tinydc up` restarts the postmaster and
//! a new session sees both changes.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Suite, daemons_built, data_dir, ok};
use shared::process::{Signal, alive, send_signal};

const USER: &str = "alice@example.test";
const PASSWORD: &str = "alice-pw";

/// A plain IMAP session over a real socket.
struct Imap {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    tag: u32,
}

impl Imap {
    fn connect(port: u16) -> Result<Imap, String> {
        let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
        let mut greeting = String::new();
        reader.read_line(&mut greeting).map_err(|e| format!("greeting: {e}"))?;
        if !greeting.starts_with("* OK") {
            return Err(format!("greeting {greeting:?}"));
        }
        Ok(Imap { stream, reader, tag: 0 })
    }

    /// Send a command (and a literal after the continuation); the untagged lines and the
    /// tagged one, or what went wrong (a tagged reply other than OK included).
    fn command(&mut self, command: &str, literal: Option<&[u8]>) -> Result<(Vec<String>, String), String> {
        self.tag += 1;
        let tag = format!("t{}", self.tag);
        (&self.stream)
            .write_all(format!("{tag} {command}\r\n").as_bytes())
            .map_err(|e| e.to_string())?;
        let mut untagged = Vec::new();
        let mut literal = literal;
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).map_err(|e| format!("reply: {e}"))?;
            if n == 0 {
                return Err("connection closed".into());
            }
            if line.starts_with('+') {
                let body = literal.take().ok_or("a continuation without a literal")?;
                (&self.stream).write_all(body).map_err(|e| e.to_string())?;
                (&self.stream).write_all(b"\r\n").map_err(|e| e.to_string())?;
            } else if let Some(rest) = line.strip_prefix(&format!("{tag} ")) {
                return if rest.starts_with("OK") {
                    Ok((untagged, line))
                } else {
                    Err(format!("{command}: {line}"))
                };
            } else {
                untagged.push(line);
            }
        }
    }

    fn ok(&mut self, command: &str) -> Vec<String> {
        self.command(command, None).unwrap().0
    }
}

fn postmaster_pid(data: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data.join("pg/data/postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

#[test]
fn acknowledged_store_and_expunge_survive_a_killed_postmaster() {
    if !daemons_built() {
        return;
    }
    let (_dir, data) = data_dir();
    ok(&data, &["init", "--domain", "example.test"], None);
    ok(
        &data,
        &["user", "add", USER, "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    );
    let suite = Suite::start(&data);
    let mut imap = Imap::connect(suite.ports.imap).unwrap();
    imap.ok(&format!("LOGIN {USER} \"{PASSWORD}\""));
    for n in 1..=3 {
        let body = format!("From: b@example.test\r\nTo: {USER}\r\nSubject: message {n}\r\n\r\nbody {n}\r\n");
        imap.command(&format!("APPEND INBOX {{{}}}", body.len()), Some(body.as_bytes()))
            .unwrap();
    }
    imap.ok("SELECT INBOX");
    imap.ok("STORE 2 +FLAGS.SILENT (\\Deleted)");
    imap.ok("EXPUNGE");
    imap.ok("STORE 1 +FLAGS.SILENT (\\Flagged $Done)");
    // Killed the moment the last answer arrived: nothing after the OK can have helped.
    let old = postmaster_pid(&data).expect("postmaster.pid");
    send_signal(old, Signal::Kill).unwrap();
    let killed = Instant::now();
    drop(imap);

    // `up` starts a new postmaster; the daemons' pools reconnect to it.
    let fetched = loop {
        let attempt = Imap::connect(suite.ports.imap).and_then(|mut imap| {
            imap.command(&format!("LOGIN {USER} \"{PASSWORD}\""), None)?;
            imap.command("SELECT INBOX", None)?;
            Ok(imap.command("UID FETCH 1:* (FLAGS)", None)?.0)
        });
        match attempt {
            Ok(lines) if postmaster_pid(&data).is_some_and(|p| p != old && alive(p)) => break lines,
            Ok(_) => {}
            Err(e) => assert!(
                killed.elapsed() < Duration::from_secs(60),
                "no session 60 s after the postmaster was killed: {e}"
            ),
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "no new postmaster within 60 s"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let fetched: Vec<&str> = fetched.iter().map(|l| l.trim_end()).collect();
    assert_eq!(fetched.len(), 2, "UID 2 was expunged: {fetched:?}");
    assert!(
        fetched[0].contains("UID 1") && fetched[0].contains("\\Flagged") && fetched[0].contains("$Done"),
        "{fetched:?}"
    );
    assert!(
        fetched[1].contains("UID 3") && !fetched[1].contains("\\Deleted"),
        "{fetched:?}"
    );
    suite.stop();
}
