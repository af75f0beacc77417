//! A tiny SMTP sink for outbound tests: answers RCPT with scripted codes and keeps what it
//! receives.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// What the sink got: (MAIL FROM, RCPT TO, message).
pub type Received = (String, String, String);

#[derive(Clone)]
pub struct Sink {
    pub addr: SocketAddr,
    /// Replies to RCPT, used in order; "250 OK" once empty.
    pub rcpt_replies: Arc<Mutex<VecDeque<String>>>,
    pub received: Arc<Mutex<Vec<Received>>>,
}

impl Sink {
    pub async fn start() -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sink = Sink {
            addr: listener.local_addr().unwrap(),
            rcpt_replies: Arc::default(),
            received: Arc::default(),
        };
        let s = sink.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = s.session(stream).await;
                });
            }
        });
        sink
    }

    pub fn script(&self, replies: &[&str]) {
        self.rcpt_replies
            .lock()
            .unwrap()
            .extend(replies.iter().map(|r| r.to_string()));
    }

    async fn session(&self, stream: tokio::net::TcpStream) -> std::io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        write.write_all(b"220 sink.test ESMTP\r\n").await?;
        let (mut from, mut to) = (String::new(), String::new());
        let mut line = String::new();
        loop {
            line.clear();
            if read.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let upper = line.to_ascii_uppercase();
            let reply = if upper.starts_with("EHLO") {
                "250-sink.test\r\n250 8BITMIME".to_string()
            } else if upper.starts_with("MAIL FROM:") {
                from = line[10..].trim().trim_matches(['<', '>']).to_string();
                "250 OK".into()
            } else if upper.starts_with("RCPT TO:") {
                to = line[8..].trim().trim_matches(['<', '>']).to_string();
                self.rcpt_replies
                    .lock()
                    .unwrap()
                    .pop_front()
                    .unwrap_or_else(|| "250 OK".into())
            } else if upper.starts_with("DATA") {
                write.write_all(b"354 go\r\n").await?;
                let mut message = String::new();
                loop {
                    line.clear();
                    if read.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    message.push_str(line.strip_prefix('.').unwrap_or(&line));
                }
                self.received.lock().unwrap().push((from.clone(), to.clone(), message));
                "250 OK queued".into()
            } else if upper.starts_with("QUIT") {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            } else {
                "250 OK".into()
            };
            write.write_all(format!("{reply}\r\n").as_bytes()).await?;
        }
    }

    /// Wait until `n` messages arrived (or panic after 30 s).
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        for _ in 0..300 {
            {
                let got = self.received.lock().unwrap();
                if got.len() >= n {
                    return got.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the sink did not get {n} messages");
    }
}
