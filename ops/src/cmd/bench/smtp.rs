//! SMTP: delivery into one local mailbox from several connections at once, each using
//! PIPELINING (RFC 2920): MAIL, RCPT and DATA in one write, then the message. A message counts
//! once its `250` after the final dot is read (by then it is fsynced and committed); afterwards
//! IMAP must see every message.
//!
//! Two runs: on the MX port, as mail from the internet arrives (smtpd checks SPF, DKIM and DMARC
//! for each message, so the machine's DNS resolver is part of the figure), and on the submission
//! port with AUTH, as a user's own mail to a local address (no DNS).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;

use super::imap::Imap;
use super::suite::{PASSWORD, SMTP_USER, Suite};
use super::wire::{Conn, show};
use super::{SuiteArgs, figure, median_ms, message, message_from};

/// Which listener a run talks to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Port {
    Mx,
    Submission,
}

pub async fn run(suite: &Suite, args: &SuiteArgs) -> anyhow::Result<()> {
    let mut delivered = 0;
    for port in [Port::Mx, Port::Submission] {
        let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
            (0..args.messages)
                .map(|n| match port {
                    Port::Mx => message(n, args.size, SMTP_USER),
                    Port::Submission => message_from(n, args.size, SMTP_USER, SMTP_USER),
                })
                .collect(),
        );
        let addr = match port {
            Port::Mx => suite.addr_smtp(),
            Port::Submission => suite.config.smtp.submission_listen.context("submission is off")?,
        };
        let connections = args.connections.min(args.messages);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..connections {
            let bodies = bodies.clone();
            tasks.push(tokio::spawn(async move {
                let mine: Vec<usize> = (c..bodies.len()).step_by(connections).collect();
                deliver(addr, port, &bodies, &mine).await
            }));
        }
        let mut latencies = Vec::with_capacity(args.messages);
        for task in tasks {
            latencies.extend(task.await.context("an SMTP client task failed")??);
        }
        let elapsed = started.elapsed();
        let what = match port {
            Port::Mx => "MX delivery (SPF/DKIM/DMARC checked)",
            Port::Submission => "submission (AUTH) to a local mailbox",
        };
        figure(
            &format!("smtp   {what}, {connections} connections"),
            format!("{:.0} messages/s", args.messages as f64 / elapsed.as_secs_f64()),
        );
        let slow = latencies.iter().filter(|d| **d > Duration::from_secs(1)).count();
        let median = median_ms(&mut latencies);
        println!(
            "       ({} messages of {} B; each: median {median:.1} ms, slowest {:.0} ms{})",
            args.messages,
            args.size,
            latencies[latencies.len() - 1].as_secs_f64() * 1000.0,
            if slow > 0 {
                format!(", {slow} waited over 1 s")
            } else {
                String::new()
            }
        );

        delivered += args.messages;
        let mut imap = Imap::login(suite, SMTP_USER).await?;
        let exists = imap.select("INBOX").await?;
        imap.logout().await?;
        if exists != delivered {
            bail!("smtpd acknowledged {delivered} messages in all but IMAP shows {exists} in {SMTP_USER}'s INBOX");
        }
    }
    Ok(())
}

/// One connection delivering the messages numbered `mine`; how long each took.
pub(super) async fn deliver(
    addr: SocketAddr,
    port: Port,
    bodies: &[Vec<u8>],
    mine: &[usize],
) -> anyhow::Result<Vec<Duration>> {
    let mut conn = Conn::connect(addr).await?;
    expect(&mut conn, 220, "the greeting").await?;
    conn.send(b"EHLO bench.sender.test\r\n").await?;
    let ehlo = expect(&mut conn, 250, "EHLO").await?;
    if !ehlo
        .iter()
        .any(|l| l.get(4..).is_some_and(|k| k.starts_with(b"PIPELINING")))
    {
        bail!("smtpd does not offer PIPELINING");
    }
    if port == Port::Submission {
        // RFC 4954 with PLAIN (RFC 4616): allowed without TLS from loopback by the default config.
        let plain = base64::engine::general_purpose::STANDARD.encode(format!("\0{SMTP_USER}\0{PASSWORD}"));
        conn.send(format!("AUTH PLAIN {plain}\r\n").as_bytes()).await?;
        expect(&mut conn, 235, "AUTH PLAIN").await?;
    }
    let mut latencies = Vec::with_capacity(mine.len());
    for &n in mine {
        let started = Instant::now();
        let from = match port {
            Port::Mx => format!("sender{}@sender.test", n % 17),
            Port::Submission => SMTP_USER.to_string(),
        };
        conn.send(format!("MAIL FROM:<{from}>\r\nRCPT TO:<{SMTP_USER}>\r\nDATA\r\n").as_bytes())
            .await?;
        expect(&mut conn, 250, "MAIL FROM").await?;
        expect(&mut conn, 250, "RCPT TO").await?;
        expect(&mut conn, 354, "DATA").await?;
        // The bodies never have a line starting with a dot: nothing to stuff (RFC 5321 section 4.5.2).
        let mut data = Vec::with_capacity(bodies[n].len() + 3);
        data.extend_from_slice(&bodies[n]);
        data.extend_from_slice(b".\r\n");
        conn.send(&data).await?;
        expect(&mut conn, 250, "the end of DATA").await?;
        latencies.push(started.elapsed());
    }
    conn.send(b"QUIT\r\n").await?;
    expect(&mut conn, 221, "QUIT").await?;
    Ok(latencies)
}

/// Read one (possibly multi-line) reply; an error unless its code is `code`.
async fn expect(conn: &mut Conn, code: u16, after: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut lines = Vec::new();
    loop {
        let line = conn.line().await?;
        let last = line.get(3) != Some(&b'-');
        lines.push(line);
        if last {
            break;
        }
    }
    let first = &lines[0];
    let got: Option<u16> = std::str::from_utf8(&first[..first.len().min(3)])
        .ok()
        .and_then(|c| c.parse().ok());
    if got != Some(code) {
        let text: Vec<String> = lines.iter().map(|l| show(l)).collect();
        bail!("smtpd answered {after} with `{}` (expected {code})", text.join(" / "));
    }
    Ok(lines)
}
