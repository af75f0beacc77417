//! IDLE (RFC 2177): wait for changes announced through the shared events (a delivery by
//! smtpd, a change by another session) and report them at once, until DONE. In NOTIFY mode
//! (RFC 5465 §4) each event goes to session/notify.rs, which tells what NOTIFY asked for.

use std::time::Duration;

use shared::events::Event;
use tokio::sync::broadcast::error::RecvError;

use crate::session::conn::Line;
use crate::session::{CmdResult, Failure, Reply, Session, State};
use crate::wire::response::Response;

impl Session {
    pub(crate) async fn cmd_idle(&mut self) -> CmdResult {
        // Events from before IDLE are covered by the sync below (in NOTIFY mode they are
        // told one by one, below).
        while self.notify.is_none()
            && !matches!(
                self.events.try_recv(),
                Err(tokio::sync::broadcast::error::TryRecvError::Empty
                    | tokio::sync::broadcast::error::TryRecvError::Closed)
            )
        {}
        self.respond(Response::Continue("idling")).await?;
        // RFC 5465 §4: in NOTIFY mode IDLE tells exactly what NOTIFY asked for.
        if self.notify.is_some() {
            self.notify_idle_start().await?;
        } else {
            self.sync(true).await?;
        }
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
                    if self.notify.is_some() && !matches!(event, Err(RecvError::Closed)) {
                        self.notify_event(event, true).await?;
                        self.conn.flush().await?;
                        continue;
                    }
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
