//! IMAP: APPEND in one session (messages/s), then the header download Thunderbird does when it
//! opens a folder (ms, median of several), on the plain port with LOGIN (plaintext is allowed
//! on loopback).

use std::time::Instant;

use anyhow::{Context as _, bail};

use super::suite::{IMAP_USER, PASSWORD, Suite};
use super::wire::{Conn, show};
use super::{SuiteArgs, figure, median_ms, message};

/// What Thunderbird asks for when it opens a folder (its default header list).
/// APPENDs in flight at once in the pipelined run.
const PIPELINE: usize = 8;

pub const THUNDERBIRD_HEADERS: &str = "UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])";

pub async fn run(suite: &Suite, args: &SuiteArgs) -> anyhow::Result<()> {
    let mut imap = Imap::login(suite, IMAP_USER).await?;

    let bodies: Vec<Vec<u8>> = (0..args.messages).map(|n| message(n, args.size, IMAP_USER)).collect();
    let started = Instant::now();
    for body in &bodies {
        // RFC 7888 LITERAL+: the message follows its length at once, one round trip per APPEND,
        // each acknowledged (fsynced and committed) before the next is sent.
        let mut cmd = format!("APPEND INBOX {{{}+}}\r\n", body.len()).into_bytes();
        cmd.extend_from_slice(body);
        imap.command(&cmd).await.context("APPEND")?;
    }
    let elapsed = started.elapsed();
    figure(
        &format!("imap   APPEND in one session ({} B each)", args.size),
        format!("{:.0} messages/s", args.messages as f64 / elapsed.as_secs_f64()),
    );

    let exists = imap.select("INBOX").await?;
    if exists != args.messages {
        bail!(
            "imapd: SELECT INBOX says {exists} EXISTS after {} APPENDs",
            args.messages
        );
    }
    // The same, pipelined, into another folder (so the header download below sees one set).
    imap.command(b"CREATE Pipelined").await?;
    let started = Instant::now();
    imap.append_pipelined("Pipelined", &bodies, PIPELINE).await?;
    let elapsed = started.elapsed();
    figure(
        &format!("imap   APPEND in one session, {PIPELINE} in flight (LITERAL+)"),
        format!("{:.0} messages/s", args.messages as f64 / elapsed.as_secs_f64()),
    );
    let exists = imap.select("Pipelined").await?;
    if exists != args.messages {
        bail!(
            "imapd: SELECT Pipelined says {exists} EXISTS after {} pipelined APPENDs",
            args.messages
        );
    }
    imap.select("INBOX").await?;

    let mut samples = Vec::new();
    for _ in 0..args.repeat {
        let started = Instant::now();
        let responses = imap.command(THUNDERBIRD_HEADERS.as_bytes()).await?;
        samples.push(started.elapsed());
        let fetched = responses.iter().filter(|r| is_fetch(r)).count();
        if fetched != args.messages {
            bail!(
                "imapd: the header UID FETCH answered {fetched} FETCH responses for {} messages",
                args.messages
            );
        }
        if let Some(bad) = responses
            .iter()
            .filter(|r| is_fetch(r))
            .find(|r| !contains(r, b"Message-ID: <bench."))
        {
            bail!(
                "imapd: a FETCH response without the Message-ID asked for: {}",
                show(&bad[..bad.len().min(300)])
            );
        }
    }
    let bytes: usize = imap.last_bytes;
    figure(
        &format!("imap   Thunderbird header download of {} messages", args.messages),
        format!("{:.1} ms", median_ms(&mut samples)),
    );
    println!(
        "       (median of {}; fastest {:.1} ms, slowest {:.1} ms; {:.0} KiB per download)",
        args.repeat,
        samples[0].as_secs_f64() * 1000.0,
        samples[samples.len() - 1].as_secs_f64() * 1000.0,
        bytes as f64 / 1024.0
    );
    imap.logout().await
}

pub fn is_fetch(response: &[u8]) -> bool {
    response.starts_with(b"* ") && response.windows(7).take(40).any(|w| w == b" FETCH ")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

/// A minimal IMAP client: tagged commands, untagged responses with their literals.
pub struct Imap {
    conn: Conn,
    tag: u64,
    /// Bytes received for the last command's responses.
    pub last_bytes: usize,
}

impl Imap {
    pub async fn login(suite: &Suite, user: &str) -> anyhow::Result<Imap> {
        Imap::connect(suite.addr_imap(), user, PASSWORD).await
    }

    /// Connect to any IMAP server on `addr` and LOGIN (RFC 9051 section 6.2.3).
    pub async fn connect(addr: std::net::SocketAddr, user: &str, password: &str) -> anyhow::Result<Imap> {
        let mut conn = Conn::connect(addr).await?;
        let greeting = conn.line().await?;
        if !greeting.starts_with(b"* OK") {
            bail!("imapd greeted with: {}", show(&greeting));
        }
        let mut imap = Imap {
            conn,
            tag: 0,
            last_bytes: 0,
        };
        imap.command(format!("LOGIN \"{user}\" \"{password}\"").as_bytes())
            .await
            .context("LOGIN")?;
        Ok(imap)
    }

    /// Send `tag command`, return the untagged responses; an error unless the answer is OK.
    pub async fn command(&mut self, command: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
        let tag = self.send(command).await?;
        self.finish(&tag, command).await
    }

    /// Send `tag command` without waiting; its tag.
    async fn send(&mut self, command: &[u8]) -> anyhow::Result<String> {
        self.tag += 1;
        let tag = format!("b{}", self.tag);
        let mut out = Vec::with_capacity(command.len() + 16);
        out.extend_from_slice(tag.as_bytes());
        out.push(b' ');
        out.extend_from_slice(command);
        out.extend_from_slice(b"\r\n");
        self.conn.send(&out).await?;
        Ok(tag)
    }

    /// Read responses up to `tag`'s; an error unless it is OK.
    async fn finish(&mut self, tag: &str, command: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
        let mut responses = Vec::new();
        self.last_bytes = 0;
        loop {
            let response = self.response().await?;
            self.last_bytes += response.len();
            if response.starts_with(tag.as_bytes()) && response.get(tag.len()) == Some(&b' ') {
                let status = &response[tag.len() + 1..];
                if !status.starts_with(b"OK") {
                    let shown = &command[..command.len().min(80)];
                    bail!(
                        "the server answered `{}` with: {}",
                        show(shown).lines().next().unwrap_or(""),
                        show(&response)
                    );
                }
                return Ok(responses);
            }
            if response.starts_with(b"+") {
                bail!(
                    "the server asked for a continuation we did not announce: {}",
                    show(&response)
                );
            }
            if response.starts_with(b"b") {
                bail!(
                    "the server answered out of order: {} while waiting for {tag}",
                    show(&response)
                );
            }
            responses.push(response);
        }
    }

    /// APPEND with a synchronizing literal (RFC 9051 section 4.3): the command line, then the
    /// message only after the server's `+` continuation, as python's imaplib does.
    pub async fn append_sync(&mut self, mailbox: &str, body: &[u8]) -> anyhow::Result<()> {
        let tag = self
            .send(format!("APPEND \"{mailbox}\" {{{}}}", body.len()).as_bytes())
            .await?;
        let go = self.conn.line().await?;
        if !go.starts_with(b"+") {
            bail!("APPEND with a synchronizing literal answered with: {}", show(&go));
        }
        let mut rest = Vec::with_capacity(body.len() + 2);
        rest.extend_from_slice(body);
        rest.extend_from_slice(b"\r\n");
        self.conn.send(&rest).await?;
        self.finish(&tag, b"APPEND (synchronizing literal)").await.map(|_| ())
    }

    /// APPEND every body with up to `window` commands in flight (LITERAL+ lets a client send
    /// the next before the last is answered); answers must come in order, each OK.
    pub async fn append_pipelined(&mut self, mailbox: &str, bodies: &[Vec<u8>], window: usize) -> anyhow::Result<()> {
        let mut in_flight = std::collections::VecDeque::new();
        for body in bodies {
            if in_flight.len() >= window {
                let tag: String = in_flight.pop_front().expect("not empty");
                self.finish(&tag, b"APPEND (pipelined)").await?;
            }
            let mut cmd = format!("APPEND \"{mailbox}\" {{{}+}}\r\n", body.len()).into_bytes();
            cmd.extend_from_slice(body);
            in_flight.push_back(self.send(&cmd).await?);
        }
        while let Some(tag) = in_flight.pop_front() {
            self.finish(&tag, b"APPEND (pipelined)").await?;
        }
        Ok(())
    }

    /// One response: a line, with any literals it announces and the rest of the line after them.
    async fn response(&mut self) -> anyhow::Result<Vec<u8>> {
        let mut response = Vec::new();
        loop {
            let line = self.conn.line().await?;
            let literal = literal_length(&line);
            response.extend_from_slice(&line);
            match literal {
                Some(n) => self.conn.exact(n, &mut response).await?,
                None => return Ok(response),
            }
        }
    }

    /// SELECT a mailbox; its message count.
    pub async fn select(&mut self, mailbox: &str) -> anyhow::Result<usize> {
        let responses = self.command(format!("SELECT \"{mailbox}\"").as_bytes()).await?;
        responses
            .iter()
            .find_map(|r| {
                let text = std::str::from_utf8(r).ok()?;
                let n = text.strip_prefix("* ")?.trim_end().strip_suffix(" EXISTS")?;
                n.parse().ok()
            })
            .context("SELECT without an EXISTS response")
    }

    pub async fn logout(mut self) -> anyhow::Result<()> {
        self.command(b"LOGOUT").await.map(|_| ())
    }
}

/// `{123}\r\n` (or `{123+}`) at a line's end: the literal that follows.
fn literal_length(line: &[u8]) -> Option<usize> {
    let line = line.strip_suffix(b"\r\n").or_else(|| line.strip_suffix(b"\n"))?;
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let digits = &inner[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_found_at_line_ends_only() {
        assert_eq!(literal_length(b"* 1 FETCH (BODY[HEADER] {42}\r\n"), Some(42));
        assert_eq!(literal_length(b"a APPEND INBOX {7+}\r\n"), Some(7));
        assert_eq!(literal_length(b"* OK [x] {no}\r\n"), None);
        assert_eq!(literal_length(b"* OK done\r\n"), None);
        assert!(is_fetch(b"* 12 FETCH (UID 12)\r\n"));
        assert!(!is_fetch(b"* 12 EXISTS\r\n"));
    }
}
