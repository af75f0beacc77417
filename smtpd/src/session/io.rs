//! The connection under a session: plain TCP or TLS (from shared::net, whose writes time out
//! when the client stops reading), an input buffer of bounded size, and an
//! output buffer flushed when the client has nothing more pipelined (RFC 2920 §3.1).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Anything a session can talk over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// How reading a line ended badly.
#[derive(Debug)]
pub enum ReadError {
    /// The client closed the connection.
    Closed,
    /// No bytes within the timeout.
    Timeout,
    /// The line passed the limit; the rest of it was skipped.
    TooLong,
    Io(std::io::Error),
}

const READ_CHUNK: usize = 16 * 1024;

pub struct Conn {
    stream: Option<Box<dyn Io>>,
    buf: Vec<u8>,
    start: usize,
    out: Vec<u8>,
}

impl Conn {
    pub fn new(stream: Box<dyn Io>) -> Conn {
        Conn {
            stream: Some(stream),
            buf: Vec::with_capacity(READ_CHUNK),
            start: 0,
            out: Vec::new(),
        }
    }

    /// Bytes received but not consumed yet.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Read more bytes into the buffer (flushing replies first, since the client may be
    /// waiting for them).
    pub async fn fill(&mut self, timeout: Duration) -> Result<(), ReadError> {
        self.flush().await.map_err(ReadError::Io)?;
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + READ_CHUNK, 0);
        let Some(stream) = self.stream.as_mut() else {
            self.buf.truncate(old);
            return Err(ReadError::Closed);
        };
        let result = tokio::time::timeout(timeout, stream.read(&mut self.buf[old..])).await;
        match result {
            Err(_) => {
                self.buf.truncate(old);
                Err(ReadError::Timeout)
            }
            Ok(Err(e)) => {
                self.buf.truncate(old);
                Err(ReadError::Io(e))
            }
            Ok(Ok(0)) => {
                self.buf.truncate(old);
                Err(ReadError::Closed)
            }
            Ok(Ok(n)) => {
                self.buf.truncate(old + n);
                Ok(())
            }
        }
    }

    /// The next line including its LF, at most `limit` bytes. A longer line is skipped up to
    /// its LF and reported as `TooLong`, so the buffer never grows past the limit.
    pub async fn read_line(&mut self, limit: usize, timeout: Duration) -> Result<Vec<u8>, ReadError> {
        let mut skipping = false;
        loop {
            let pending = self.pending();
            if let Some(pos) = pending.iter().position(|&b| b == b'\n') {
                let line = pending[..=pos].to_vec();
                self.consume(pos + 1);
                if skipping || line.len() > limit {
                    return Err(ReadError::TooLong);
                }
                return Ok(line);
            }
            if pending.len() > limit {
                skipping = true;
                let n = pending.len();
                self.consume(n);
            }
            self.fill(timeout).await?;
        }
    }

    /// Queue bytes for the client.
    pub fn write(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Send queued bytes.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            let out = std::mem::take(&mut self.out);
            // No stream: a failed TLS handshake consumed it; nothing more can be said.
            let Some(stream) = self.stream.as_mut() else {
                return Ok(());
            };
            stream.write_all(&out).await?;
            stream.flush().await?;
        }
        Ok(())
    }

    /// Take the stream out for a TLS handshake. Anything the client pipelined after STARTTLS
    /// is dropped (RFC 3207 §4.2 / CVE-2011-0411: plaintext must not leak into the TLS session).
    pub async fn take_for_tls(&mut self) -> std::io::Result<Box<dyn Io>> {
        self.flush().await?;
        self.buf.clear();
        self.start = 0;
        self.stream
            .take()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotConnected, "no stream"))
    }

    pub fn put_back(&mut self, stream: Box<dyn Io>) {
        self.stream = Some(stream);
    }

    pub async fn shutdown(&mut self) {
        let _ = self.flush().await;
        if let Some(s) = self.stream.as_mut() {
            let _ = s.shutdown().await;
        }
    }
}
