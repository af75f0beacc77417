//! One SMTP session: the state enum, the one gate that decides which command is allowed when,
//! and the connection loop. Each command's handler lives in `cmd/<verb>.rs`.

pub mod io;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shared::auth::AuthedUser;
use shared::net::Shutdown;
use shared::quota::Reservation;
use smtp_proto::Request;

use crate::parser::{CommandError, parse_command};
use crate::reply::Reply;
use crate::{ListenerKind, Server};
use io::{Conn, ReadError};

/// Syntax errors and refused commands tolerated before the client is disconnected.
pub const MAX_ERRORS: u32 = 10;
/// Failed AUTH attempts in one session before it is closed.
pub const MAX_AUTH_FAILURES: u32 = 3;

/// Where a session is (RFC 5321 §4.1.4 ordering).
#[derive(Debug)]
pub enum State {
    /// Connected, no EHLO/HELO yet.
    Connected,
    /// Greeted, no mail transaction.
    Ready,
    /// Inside a transaction: MAIL given, maybe recipients and BDAT chunks.
    Mail(Transaction),
}

/// One mail transaction.
#[derive(Debug, Default)]
pub struct Transaction {
    /// The reverse-path ("" for the null sender of bounces).
    pub from: String,
    /// SIZE= from MAIL, 0 when not given.
    pub size: u64,
    pub smtputf8: bool,
    /// The authenticated user's own addresses, read once at MAIL for the From check at the end
    /// (empty on the MX port).
    pub senders: Vec<String>,
    pub recipients: Vec<Recipient>,
    /// The message so far when BDAT chunks are coming (RFC 3030).
    pub chunks: Option<Vec<u8>>,
    /// A refusal decided while reading BDAT chunks, answered at the LAST chunk.
    pub chunk_error: Option<Reply>,
    /// The memory budget held by `chunks`.
    pub held: crate::limits::Held,
}

/// An accepted recipient.
#[derive(Debug)]
pub struct Recipient {
    pub address: String,
    pub target: Target,
}

/// Where an accepted recipient's copy goes.
#[derive(Debug)]
pub enum Target {
    /// Local users, each with the quota reserved at RCPT.
    Local(Vec<Reservation>),
    /// Another domain: queued for outbound delivery (submission only).
    Remote,
}

/// One connection.
pub struct Session {
    pub server: Arc<Server>,
    pub kind: ListenerKind,
    pub peer: SocketAddr,
    pub conn: Conn,
    pub tls: bool,
    pub helo: Option<String>,
    pub esmtp: bool,
    pub user: Option<AuthedUser>,
    pub state: State,
    pub errors: u32,
    pub auth_failures: u32,
    pub closing: bool,
    pub shutdown: Shutdown,
}

impl Session {
    pub fn new(
        server: Arc<Server>,
        kind: ListenerKind,
        peer: SocketAddr,
        conn: Conn,
        tls: bool,
        shutdown: Shutdown,
    ) -> Session {
        Session {
            server,
            kind,
            peer,
            conn,
            tls,
            helo: None,
            esmtp: false,
            user: None,
            state: State::Connected,
            errors: 0,
            auth_failures: 0,
            closing: false,
            shutdown,
        }
    }

    /// How long to wait for the next command (or SASL answer). The MX keeps RFC 5321
    /// §4.5.3.2.7's five minutes (`smtp.command_timeout_secs`); submission before AUTH gets
    /// the short `smtp.login_timeout_secs`, so idle connections cannot hold the slots.
    pub fn command_timeout(&self) -> Duration {
        let smtp = &self.server.ctx.config.smtp;
        if self.kind != ListenerKind::Mx && self.user.is_none() {
            return Duration::from_secs(smtp.login_timeout_secs.min(smtp.command_timeout_secs));
        }
        Duration::from_secs(smtp.command_timeout_secs)
    }

    pub fn data_timeout(&self) -> Duration {
        Duration::from_secs(self.server.ctx.config.smtp.data_timeout_secs)
    }

    pub fn hostname(&self) -> &str {
        &self.server.ctx.config.server.hostname
    }

    /// Queue a reply.
    pub fn send(&mut self, reply: &Reply) {
        if reply.code >= 500 {
            tracing::info!(peer = %self.peer, code = reply.code, "refused: {}", reply.lines.join(" "));
        }
        self.conn.write(&reply.to_wire());
    }

    /// Whether a password may be sent now: over TLS, or on loopback when the config allows it.
    pub fn may_send_password(&self) -> bool {
        use shared::auth::{Channel, password_may_cross};
        let channel = if self.tls { Channel::Tls } else { Channel::Plain };
        password_may_cross(channel, self.peer.ip(), &self.server.ctx.config.auth)
    }

    /// Read a command line, answering shutdown while waiting.
    async fn read_command(&mut self) -> Result<Vec<u8>, ReadError> {
        let limit = self.server.ctx.config.smtp.max_line_length as usize;
        let timeout = self.command_timeout();
        let shutdown = self.shutdown.clone();
        tokio::select! {
            line = self.conn.read_line(limit, timeout) => line,
            _ = shutdown.cancelled() => Err(ReadError::Closed),
        }
    }

    /// Run the session to its end.
    pub async fn run(mut self) {
        let greeting = Reply::new(220, "", format!("{} ESMTP tinydc", self.hostname()));
        self.send(&greeting);
        while !self.closing {
            let line = match self.read_command().await {
                Ok(line) => line,
                Err(ReadError::Closed) => {
                    if self.shutdown.is_cancelled() {
                        self.send(&Reply::new(421, "4.3.2", "Service shutting down"));
                    }
                    break;
                }
                Err(ReadError::Timeout) => {
                    tracing::info!(peer = %self.peer, "command timeout");
                    self.send(&Reply::new(421, "4.4.2", "Timeout waiting for a command"));
                    break;
                }
                Err(ReadError::TooLong) => {
                    tracing::info!(peer = %self.peer, "command line too long");
                    self.refuse(CommandError::TooLong.reply());
                    continue;
                }
                Err(ReadError::Io(e)) => {
                    tracing::debug!(peer = %self.peer, "read error: {e}");
                    break;
                }
            };
            match parse_command(&line) {
                Ok(request) => self.dispatch(request).await,
                Err(e) => {
                    tracing::info!(peer = %self.peer, "bad command {:?}: {e:?}", String::from_utf8_lossy(&line[..line.len().min(80)]));
                    self.refuse(e.reply());
                }
            }
        }
        self.conn.shutdown().await;
        self.reset().await;
    }

    /// Answer a refusal and count it; too many and the client is dropped (RFC 5321 §4.2.4
    /// allows closing on abuse with 421).
    pub fn refuse(&mut self, reply: Reply) {
        self.send(&reply);
        self.errors += 1;
        if self.errors >= MAX_ERRORS {
            tracing::warn!(peer = %self.peer, "too many errors: disconnecting");
            self.send(&Reply::new(421, "4.7.0", "Too many errors, closing connection"));
            self.closing = true;
        }
    }

    /// Drop the transaction and give back reserved quota.
    pub async fn reset(&mut self) {
        if let State::Mail(tx) = std::mem::replace(&mut self.state, State::Ready) {
            for r in tx.recipients {
                if let Target::Local(reservations) = r.target {
                    for reservation in reservations {
                        let _ = shared::quota::release(&self.server.ctx.db, reservation).await;
                    }
                }
            }
        } else if matches!(self.state, State::Ready) || self.helo.is_some() {
            self.state = State::Ready;
        } else {
            self.state = State::Connected;
        }
    }

    /// The gate: whether `request` is allowed now, else the reply that refuses it.
    fn gate(&self, request: &Request<String>) -> Result<(), Reply> {
        let greeted = !matches!(self.state, State::Connected);
        let in_mail = matches!(self.state, State::Mail(_));
        let chunking = matches!(&self.state, State::Mail(tx) if tx.chunks.is_some());
        let bad_sequence = |text: &str| Err(Reply::new(503, "5.5.1", text.to_string()));
        match request {
            Request::Ehlo { .. } | Request::Helo { .. } | Request::Noop { .. } | Request::Quit | Request::Rset => {
                Ok(())
            }
            Request::Vrfy { .. } => Ok(()),
            Request::StartTls => {
                if self.tls {
                    bad_sequence("TLS already active")
                } else if !greeted || !self.esmtp {
                    bad_sequence("Send EHLO first")
                } else if in_mail {
                    bad_sequence("STARTTLS not allowed inside a transaction")
                } else {
                    Ok(())
                }
            }
            Request::Auth { .. } => {
                if self.kind == ListenerKind::Mx {
                    Err(Reply::new(502, "5.5.1", "AUTH not available on this port"))
                } else if !greeted || !self.esmtp {
                    bad_sequence("Send EHLO first")
                } else if self.user.is_some() {
                    bad_sequence("Already authenticated")
                } else if in_mail {
                    bad_sequence("AUTH not allowed inside a transaction")
                } else if !self.may_send_password() {
                    // RFC 4954 §4 / RFC 3207: 538 when the mechanism needs encryption first.
                    Err(Reply::new(538, "5.7.11", "Encryption required: use STARTTLS first"))
                } else {
                    Ok(())
                }
            }
            Request::Mail { .. } => {
                if !greeted {
                    bad_sequence("Send EHLO/HELO first")
                } else if in_mail {
                    bad_sequence("Nested MAIL command")
                } else if self.kind != ListenerKind::Mx && self.user.is_none() {
                    Err(Reply::new(530, "5.7.0", "Authentication required"))
                } else {
                    Ok(())
                }
            }
            Request::Rcpt { .. } => {
                if !in_mail {
                    bad_sequence("Need MAIL before RCPT")
                } else if chunking {
                    bad_sequence("RCPT not allowed during BDAT")
                } else {
                    Ok(())
                }
            }
            Request::Data => match &self.state {
                State::Mail(tx) if tx.chunks.is_some() => bad_sequence("DATA not allowed after BDAT"),
                State::Mail(tx) if tx.recipients.is_empty() => Err(Reply::new(554, "5.5.1", "No valid recipients")),
                State::Mail(_) => Ok(()),
                _ => bad_sequence("Need MAIL and RCPT before DATA"),
            },
            // BDAT's sequence errors are answered after its chunk is read (cmd/bdat.rs).
            Request::Bdat { .. } => Ok(()),
            _ => Err(Reply::new(502, "5.5.1", "Command not implemented")),
        }
    }

    async fn dispatch(&mut self, request: Request<String>) {
        if let Err(reply) = self.gate(&request) {
            self.refuse(reply);
            return;
        }
        let reply = match request {
            Request::Ehlo { host } => Some(self.ehlo(host, true).await),
            Request::Helo { host } => Some(self.ehlo(host, false).await),
            Request::Mail { from } => Some(self.mail(from).await),
            Request::Rcpt { to } => Some(self.rcpt(to).await),
            Request::Data => self.data().await,
            Request::Bdat { chunk_size, is_last } => self.bdat(chunk_size, is_last).await,
            Request::Rset => Some(self.rset().await),
            Request::Noop { .. } => Some(self.noop()),
            Request::Vrfy { value } => Some(self.vrfy(value)),
            Request::Quit => Some(self.quit()),
            Request::StartTls => self.starttls().await,
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(mechanism, initial_response).await,
            _ => Some(Reply::new(502, "5.5.1", "Command not implemented")),
        };
        if let Some(reply) = reply {
            if reply.code >= 500 {
                self.refuse(reply);
            } else {
                self.send(&reply);
            }
        }
    }
}
