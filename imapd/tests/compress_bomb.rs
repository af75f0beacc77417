//! Item 11: a COMPRESS=DEFLATE stream (RFC 4978) that inflates ~1000:1 must not make the server
//! allocate what it inflates to. Its own test binary: it measures the process's peak memory.

mod common;

use std::time::Duration;

use common::*;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

fn deflate(c: &mut Compress, data: &[u8], out: &mut Vec<u8>) {
    let mut consumed = 0;
    loop {
        out.reserve(64 * 1024);
        let before = c.total_in();
        c.compress_vec(&data[consumed..], out, FlushCompress::None).unwrap();
        consumed += (c.total_in() - before) as usize;
        if consumed == data.len() {
            return;
        }
    }
}

fn flush(c: &mut Compress, out: &mut Vec<u8>) {
    loop {
        out.reserve(64 * 1024);
        c.compress_vec(&[], out, FlushCompress::Sync).unwrap();
        if out.len() < out.capacity() {
            return;
        }
    }
}

/// Read and inflate until a line starting with `prefix` arrives.
async fn expect_line(client: &mut Client, inflate: &mut Decompress, seen: &mut Vec<u8>, prefix: &str) -> String {
    let mut raw = [0u8; 8192];
    loop {
        // Complete lines only; the first one with the prefix is taken with those before it.
        while let Some(end) = seen.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = seen.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line).trim_end().to_string();
            if line.starts_with(prefix) {
                return line;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(30), client.stream.read(&mut raw))
            .await
            .unwrap_or_else(|_| panic!("no {prefix:?} in time; seen {:?}", String::from_utf8_lossy(seen)))
            .expect("read");
        assert!(n > 0, "connection closed; seen {:?}", String::from_utf8_lossy(seen));
        let mut out = Vec::with_capacity(64 * 1024);
        inflate
            .decompress_vec(&raw[..n], &mut out, FlushDecompress::Sync)
            .unwrap();
        seen.extend_from_slice(&out);
    }
}

async fn bomb(mut c: Client) {
    let mut deflater = Compress::new(Compression::best(), false);
    let mut inflater = Decompress::new(false);
    let mut seen = Vec::new();
    // 12 MiB of one byte and no line end: about 12 KiB on the wire.
    let block = vec![b'A'; 1 << 20];
    let mut wire = Vec::new();
    for _ in 0..12 {
        deflate(&mut deflater, &block, &mut wire);
    }
    deflate(&mut deflater, b"\r\nz1 NOOP\r\n", &mut wire);
    flush(&mut deflater, &mut wire);
    assert!(wire.len() < 1 << 20, "{}", wire.len());
    c.stream.write_all(&wire).await.unwrap();
    c.stream.flush().await.unwrap();
    let bad = expect_line(&mut c, &mut inflater, &mut seen, "* BAD").await;
    assert!(bad.contains("too long"), "{bad}");
    let ok = expect_line(&mut c, &mut inflater, &mut seen, "z1 ").await;
    assert!(ok.starts_with("z1 OK"), "{ok}");
}

#[tokio::test]
async fn a_deflate_bomb_is_inflated_in_small_pieces() {
    let server = Server::start().await;
    // Log in first: a login's password hash alone takes ~19 MiB for a moment.
    let mut clients = Vec::new();
    for _ in 0..2 {
        let mut c = server.login().await;
        c.ok("COMPRESS DEFLATE").await;
        clients.push(c);
    }
    let before = peak_rss_kib();
    let (first, second) = (clients.remove(0), clients.remove(0));
    tokio::join!(bomb(first), bomb(second));
    let grown = peak_rss_kib().saturating_sub(before);
    // Two bombs inflating each 16 KiB read whole would hold ~12 MiB each at once.
    assert!(grown < 8 * 1024, "peak memory grew by {grown} KiB");
}
