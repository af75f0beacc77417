//! The connection's bytes: plain TCP or TLS, optionally DEFLATE-compressed (RFC 4978), with a
//! bounded read buffer and a write buffer flushed in chunks (responses are streamed, never
//! built whole).

use std::io;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::time::Duration;

use shared::net::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

use crate::wire::frame;

/// Flush the write buffer once it holds this much.
const WRITE_CHUNK: usize = 64 * 1024;

/// Most bytes one read inflates from a COMPRESS=DEFLATE stream (RFC 4978). Deflate expands up
/// to ~1000:1, so a 16 KiB read could otherwise become 16 MiB in memory: the rest of the
/// compressed input waits in `raw_in` until these bytes are consumed.
const INFLATE_CHUNK: usize = 64 * 1024;

/// What reading a line gave.
pub enum Line {
    Line(Vec<u8>),
    /// The line was longer than allowed; it was discarded up to its end.
    TooLong,
    Eof,
}

/// One client connection.
pub struct Conn {
    /// TCP (its writes time out: shared::net) or TLS; None only after a failed STARTTLS.
    transport: Option<Stream>,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// Compressed bytes not inflated yet.
    raw_in: Vec<u8>,
    inflate: Option<Decompress>,
    deflate: Option<Compress>,
}

impl Conn {
    pub fn new(transport: Stream) -> Conn {
        Conn {
            transport: Some(transport),
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            raw_in: Vec::new(),
            inflate: None,
            deflate: None,
        }
    }

    pub fn is_tls(&self) -> bool {
        self.transport.as_ref().is_some_and(Stream::is_tls)
    }

    pub fn is_compressed(&self) -> bool {
        self.deflate.is_some()
    }

    /// Whether the client already sent more bytes than were consumed.
    pub fn has_buffered_input(&self) -> bool {
        !self.rbuf.is_empty() || !self.raw_in.is_empty()
    }

    async fn read_raw(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.transport.as_mut() {
            Some(s) => s.read(buf).await,
            None => Err(io::Error::new(io::ErrorKind::NotConnected, "no transport")),
        }
    }

    async fn write_raw(&mut self, buf: &[u8]) -> io::Result<()> {
        match self.transport.as_mut() {
            Some(s) => {
                s.write_all(buf).await?;
                s.flush().await
            }
            None => Err(io::Error::new(io::ErrorKind::NotConnected, "no transport")),
        }
    }

    /// Read more into the buffer; `Ok(false)` at end of stream.
    async fn fill(&mut self) -> io::Result<bool> {
        let mut tmp = [0u8; 16 * 1024];
        loop {
            // Compressed input already read (or output the inflater still holds) first, at
            // most INFLATE_CHUNK bytes of it.
            if let Some(inflate) = self.inflate.as_mut() {
                let before = self.rbuf.len();
                inflate_into(inflate, &mut self.raw_in, &mut self.rbuf, INFLATE_CHUNK)?;
                if self.rbuf.len() > before {
                    return Ok(true);
                }
            }
            let n = self.read_raw(&mut tmp).await?;
            if n == 0 {
                return Ok(false);
            }
            if let Some(s) = self.transport.as_ref() {
                s.ack_now();
            }
            if self.inflate.is_none() {
                self.rbuf.extend_from_slice(&tmp[..n]);
                return Ok(true);
            }
            self.raw_in.extend_from_slice(&tmp[..n]);
        }
    }

    /// Wait until the client has sent something (`Ok(true)`) or the stream ended (`Ok(false)`),
    /// consuming nothing: lets a session in NOTIFY mode (RFC 5465 §3.1) send notifications
    /// while no command is in progress. Cancel-safe: bytes read stay in the buffers.
    pub async fn wait_input(&mut self) -> io::Result<bool> {
        if self.has_buffered_input() {
            return Ok(true);
        }
        self.fill().await
    }

    /// Read one line (with its LF), at most `max` bytes.
    pub async fn read_line(&mut self, max: usize) -> io::Result<Line> {
        loop {
            if let Some(end) = frame::line_end(&self.rbuf) {
                if end > max {
                    self.rbuf.drain(..end);
                    return Ok(Line::TooLong);
                }
                return Ok(Line::Line(self.rbuf.drain(..end).collect()));
            }
            if self.rbuf.len() > max {
                // Discard until the end of this line, without keeping it.
                loop {
                    if let Some(end) = frame::line_end(&self.rbuf) {
                        self.rbuf.drain(..end);
                        return Ok(Line::TooLong);
                    }
                    self.rbuf.clear();
                    if !self.fill().await? {
                        return Ok(Line::Eof);
                    }
                }
            }
            if !self.fill().await? {
                return Ok(Line::Eof);
            }
        }
    }

    /// Read exactly `n` bytes (a literal).
    pub async fn read_exact(&mut self, mut n: usize, out: &mut Vec<u8>) -> io::Result<()> {
        loop {
            let take = self.rbuf.len().min(n);
            out.extend(self.rbuf.drain(..take));
            n -= take;
            if n == 0 {
                return Ok(());
            }
            if !self.fill().await? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Read and drop `n` bytes (a literal refused after it was announced with LITERAL+).
    pub async fn skip(&mut self, mut n: u64) -> io::Result<()> {
        loop {
            let take = (self.rbuf.len() as u64).min(n) as usize;
            self.rbuf.drain(..take);
            n -= take as u64;
            if n == 0 {
                return Ok(());
            }
            if !self.fill().await? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Queue bytes; flushes when the buffer is large.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.wbuf.extend_from_slice(bytes);
        if self.wbuf.len() >= WRITE_CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    /// Send everything queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.wbuf);
        match self.deflate.as_mut() {
            Some(deflate) => {
                let compressed = deflate_all(deflate, &data)?;
                self.write_raw(&compressed).await?;
            }
            None => self.write_raw(&data).await?,
        }
        let mut data = data;
        data.clear();
        if data.capacity() <= 4 * WRITE_CHUNK {
            self.wbuf = data;
        }
        Ok(())
    }

    /// RFC 3501 §6.2.1: after the OK, negotiate TLS, within `timeout` (a client that stalls
    /// the handshake loses the connection). Bytes the client pipelined after STARTTLS are
    /// dropped (they were sent in clear: a command injection attempt).
    pub async fn start_tls(&mut self, acceptor: &TlsAcceptor, timeout: Duration) -> io::Result<()> {
        self.flush().await?;
        self.rbuf.clear();
        let stream = self
            .transport
            .take()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "no transport"))?;
        self.transport = Some(stream.start_tls(acceptor, timeout).await?);
        Ok(())
    }

    /// RFC 4978: from now on both directions are raw DEFLATE.
    pub fn start_compress(&mut self) {
        // Anything already read after the COMPRESS line is compressed data.
        self.raw_in = std::mem::take(&mut self.rbuf);
        self.inflate = Some(Decompress::new(false));
        self.deflate = Some(Compress::new(Compression::default(), false));
    }
}

/// Inflate from `input` onto `out`, at most about `limit` bytes (a zip bomb must not allocate);
/// what is not consumed stays in `input`.
fn inflate_into(inflate: &mut Decompress, input: &mut Vec<u8>, out: &mut Vec<u8>, limit: usize) -> io::Result<()> {
    let mut chunk = [0u8; 8 * 1024];
    let mut consumed = 0;
    let mut produced = 0;
    while produced < limit {
        let (in_before, out_before) = (inflate.total_in(), inflate.total_out());
        let status = inflate
            .decompress(&input[consumed..], &mut chunk, FlushDecompress::Sync)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let used = (inflate.total_in() - in_before) as usize;
        let made = (inflate.total_out() - out_before) as usize;
        consumed += used;
        produced += made;
        out.extend_from_slice(&chunk[..made]);
        if status == Status::StreamEnd {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "compressed stream ended"));
        }
        if made == 0 && (used == 0 || consumed == input.len()) {
            break;
        }
    }
    input.drain(..consumed);
    Ok(())
}

fn deflate_all(deflate: &mut Compress, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    let mut consumed = 0;
    loop {
        out.reserve(data.len() / 2 + 1024);
        let before = deflate.total_in();
        deflate
            .compress_vec(&data[consumed..], &mut out, FlushCompress::Sync)
            .map_err(io::Error::other)?;
        consumed += (deflate.total_in() - before) as usize;
        // A sync flush is complete when input is consumed and there was room left over.
        if consumed == data.len() && out.len() < out.capacity() {
            return Ok(out);
        }
    }
}
