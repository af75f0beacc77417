//! Speed regressions that come from how bytes cross the socket, measured from outside with real
//! clients against the real server. Each bound is several times what the fixed server takes on a
//! loaded 2-core machine, and well below what the fault it guards against costs.

mod common;

use std::time::Duration;

use common::*;
use tokio::process::Command;

/// python's imaplib writes a synchronizing literal and its closing CRLF as two writes with
/// Nagle's algorithm on: the CRLF waits until the literal is acknowledged. With the server's
/// delayed ACK (40 ms on Linux) each APPEND took over 40 ms (21 messages/s); the server now
/// acknowledges at once (TCP_QUICKACK after each read, shared::net::Stream::ack_now).
#[tokio::test]
async fn imaplib_synchronizing_appends_do_not_wait_for_delayed_acks() {
    shared::testing::require_tool("python3");
    let server = Server::start().await;
    let count = 40;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/append_sync.py");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new("python3")
            .arg(script)
            .arg("127.0.0.1")
            .arg(server.plain.port().to_string())
            .arg(USER)
            .arg(PASS)
            .arg(count.to_string())
            .output(),
    )
    .await
    .expect("imaplib finished in time")
    .expect("python3 started");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    let elapsed: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("ELAPSED "))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no timing in: {text}"));
    // 40 delayed ACKs alone are 1.6 s; the fixed server needs a few ms per APPEND.
    assert!(
        elapsed < 1.0,
        "{count} APPENDs with synchronizing literals took {elapsed:.3} s (delayed ACKs?)"
    );
}
