//! IDLE (RFC 2177): wait for changes announced through the shared events (a delivery by
//! smtpd, a change by another session) and report them at once, until DONE.

use std::time::Duration;

use shared::events::Event;
use tokio::sync::broadcast::error::RecvError;

use crate::session::conn::Line;
use crate::session::{CmdResult, Failure, Reply, Session, State};
use crate::wire::response::Response;

impl Session {
    pub(crate) async fn cmd_idle(&mut self) -> CmdResult {
        // Events from before IDLE are covered by the sync below.
        while !matches!(
            self.events.try_recv(),
            Err(tokio::sync::broadcast::error::TryRecvError::Empty
                | tokio::sync::broadcast::error::TryRecvError::Closed)
        ) {}
        self.respond(Response::Continue("idling")).await?;
        self.sync(true).await?;
        self.conn.flush().await?;
        let timeout = Duration::from_secs(self.ctx.config.imap.idle_timeout_secs);
        let max_line = self.ctx.config.imap.max_line_length as usize;
        let deadline = tokio::time::Instant::now() + timeout;
        let shutdown = self.shutdown.clone();
        loop {
            let watched = match &self.state {
                State::Selected { user, selected } => Some((user.id, selected.mailbox.id)),
                _ => None,
            };
            tokio::select! {
                line = self.conn.read_line(max_line) => {
                    return match line? {
                        Line::Line(l) if l.trim_ascii().eq_ignore_ascii_case(b"DONE") => Ok(Reply::ok("IDLE terminated")),
                        Line::Line(_) | Line::TooLong => Ok(Reply::bad("expected DONE")),
                        Line::Eof => Err(Failure::Io(std::io::ErrorKind::UnexpectedEof.into())),
                    };
                }
                event = self.events.recv() => {
                    let relevant = match event {
                        Ok(Event::Mailbox { user_id, mailbox_id }) => watched == Some((user_id, mailbox_id)),
                        Ok(_) => false,
                        Err(RecvError::Lagged(_)) => true,
                        Err(RecvError::Closed) => {
                            // No more events: fall back to waiting for DONE alone.
                            tokio::time::sleep_until(deadline).await;
                            false
                        }
                    };
                    if relevant {
                        self.sync(true).await?;
                        self.conn.flush().await?;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    self.respond(Response::Bye("idle for too long")).await?;
                    self.conn.flush().await?;
                    return Err(Failure::Io(std::io::ErrorKind::TimedOut.into()));
                }
                _ = shutdown.cancelled() => {
                    self.respond(Response::Bye("server shutting down")).await?;
                    self.conn.flush().await?;
                    return Err(Failure::Io(std::io::ErrorKind::ConnectionAborted.into()));
                }
            }
        }
    }
}
