//! A tiny DNS server on 127.0.0.1 (UDP) answering from a fixed table of zone-file lines, so
//! `tinydc doctor` can be tested without sending a packet beyond loopback.
//! Wire format: RFC 1035 section 4; SRV: RFC 2782.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Answers until dropped.
pub struct FakeDns {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn type_code(name: &str) -> u16 {
    match name {
        "A" => 1,
        "CNAME" => 5,
        "PTR" => 12,
        "MX" => 15,
        "TXT" => 16,
        "AAAA" => 28,
        "SRV" => 33,
        other => panic!("fake DNS: no support for {other}"),
    }
}

fn encode_name(name: &str, out: &mut Vec<u8>) {
    for label in name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

/// The RDATA of `value` (zone-file form) for a record type.
fn encode_rdata(kind: &str, value: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let fields: Vec<&str> = value.split_whitespace().collect();
    match kind {
        "A" => out.extend_from_slice(&value.parse::<std::net::Ipv4Addr>().unwrap().octets()),
        "AAAA" => out.extend_from_slice(&value.parse::<std::net::Ipv6Addr>().unwrap().octets()),
        "CNAME" | "PTR" => encode_name(value, &mut out),
        "MX" => {
            out.extend_from_slice(&fields[0].parse::<u16>().unwrap().to_be_bytes());
            encode_name(fields[1], &mut out);
        }
        "SRV" => {
            for n in &fields[..3] {
                out.extend_from_slice(&n.parse::<u16>().unwrap().to_be_bytes());
            }
            encode_name(fields[3], &mut out);
        }
        "TXT" => {
            let text = value.trim().trim_matches('"').as_bytes();
            for chunk in text.chunks(255) {
                out.push(chunk.len() as u8);
                out.extend_from_slice(chunk);
            }
        }
        other => panic!("fake DNS: no support for {other}"),
    }
    out
}

impl FakeDns {
    /// Serve the records of `zone`: lines `name. IN TYPE value`; other lines (`;` comments) are ignored.
    pub fn start(zone: &str) -> FakeDns {
        let mut table: HashMap<String, Vec<(u16, Vec<u8>)>> = HashMap::new();
        for line in zone.lines() {
            let parts: Vec<&str> = line.splitn(4, ' ').collect();
            if line.starts_with(';') || parts.len() < 4 || parts[1] != "IN" {
                continue;
            }
            let name = parts[0].trim_end_matches('.').to_ascii_lowercase();
            table
                .entry(name)
                .or_default()
                .push((type_code(parts[2]), encode_rdata(parts[2], parts[3])));
        }
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = answer(&table, &buf[..n]) {
                    let _ = socket.send_to(&reply, peer);
                }
            }
        });
        FakeDns { addr, stop }
    }
}

/// A UDP socket on 127.0.0.1 that takes queries and never answers (a dead resolver).
pub fn silent_resolver() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").unwrap()
}

fn answer(table: &HashMap<String, Vec<(u16, Vec<u8>)>>, query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question: labels, then type and class.
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question_end = at + 4;
    let name = labels.join(".");
    let records: Vec<&Vec<u8>> = table
        .get(&name)
        .map(|rs| rs.iter().filter(|(t, _)| *t == qtype).map(|(_, d)| d).collect())
        .unwrap_or_default();
    let rcode: u8 = if table.contains_key(&name) { 0 } else { 3 }; // NXDOMAIN
    let mut reply = Vec::new();
    reply.extend_from_slice(&query[..2]); // ID
    reply.push(0x80 | (query[2] & 0x01)); // QR, and RD as asked
    reply.push(0x80 | rcode); // RA
    reply.extend_from_slice(&1u16.to_be_bytes());
    reply.extend_from_slice(&(records.len() as u16).to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]);
    reply.extend_from_slice(query.get(12..question_end)?);
    for rdata in records {
        reply.extend_from_slice(&[0xc0, 12]); // the name of the question
        reply.extend_from_slice(&qtype.to_be_bytes());
        reply.extend_from_slice(&1u16.to_be_bytes()); // IN
        reply.extend_from_slice(&60u32.to_be_bytes());
        reply.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        reply.extend_from_slice(rdata);
    }
    Some(reply)
}
