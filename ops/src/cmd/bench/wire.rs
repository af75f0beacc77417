//! Line-oriented client plumbing shared by the SMTP and IMAP benchmarks: every read has a
//! deadline, so a daemon that stops answering fails the benchmark instead of hanging it.

use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How long one reply may take before the benchmark gives up.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// Run `fut`, failing after `limit` with `what` in the error.
pub async fn within<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => bail!("{what}: no answer within {} s", limit.as_secs()),
    }
}

/// A plain TCP connection read line by line.
pub struct Conn {
    io: BufReader<TcpStream>,
    /// The longest line accepted (a broken server must not make us buffer forever).
    max_line: usize,
}

impl Conn {
    pub async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<Conn> {
        let stream = within(Duration::from_secs(10), "connect", async {
            TcpStream::connect(addr)
                .await
                .with_context(|| format!("connecting to {addr}"))
        })
        .await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            io: BufReader::with_capacity(64 * 1024, stream),
            max_line: 1 << 20,
        })
    }

    pub async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.io
            .get_mut()
            .write_all(bytes)
            .await
            .context("writing to the server")
    }

    /// One line with its CRLF; EOF is an error.
    pub async fn line(&mut self) -> anyhow::Result<Vec<u8>> {
        let mut line = Vec::new();
        let io = &mut self.io;
        let n = within(REPLY_TIMEOUT, "reading a reply", async {
            io.read_until(b'\n', &mut line).await.context("reading from the server")
        })
        .await?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        if line.len() > self.max_line {
            bail!("a reply line of {} bytes", line.len());
        }
        Ok(line)
    }

    /// Exactly `n` bytes (an IMAP literal).
    pub async fn exact(&mut self, n: usize, into: &mut Vec<u8>) -> anyhow::Result<()> {
        let start = into.len();
        into.resize(start + n, 0);
        let io = &mut self.io;
        within(REPLY_TIMEOUT, "reading a literal", async {
            io.read_exact(&mut into[start..]).await.context("reading a literal")
        })
        .await?;
        Ok(())
    }
}

/// Lossy text of a reply, without its line end, for error messages.
pub fn show(line: &[u8]) -> String {
    String::from_utf8_lossy(line).trim_end().to_string()
}
