//! DATA (RFC 5321 §4.1.1.4): 354, then the dot-stuffed message up to CRLF.CRLF.

use crate::limits::Held;
use crate::parser::DataDecoder;
use crate::reply::Reply;
use crate::session::Session;
use crate::session::io::ReadError;

impl Session {
    pub async fn data(&mut self) -> Option<Reply> {
        self.send(&Reply::new(354, "", "Start mail input; end with <CRLF>.<CRLF>"));
        let limit = self.server.ctx.config.smtp.max_message_size as usize;
        let mut decoder = DataDecoder::new(limit);
        let timeout = self.data_timeout();
        let mut held = Held::default();
        loop {
            let (used, done) = decoder.feed(self.conn.pending());
            self.conn.consume(used);
            self.server.memory.grow(&mut held, decoder.body.len()).await;
            if done {
                break;
            }
            let shutdown = self.shutdown.clone();
            let filled = tokio::select! {
                r = self.conn.fill(timeout) => r,
                _ = shutdown.cancelled() => Err(ReadError::Closed),
            };
            match filled {
                Ok(()) => {}
                Err(ReadError::Timeout) => {
                    tracing::info!(peer = %self.peer, "data timeout");
                    self.closing = true;
                    self.reset().await;
                    return Some(Reply::new(421, "4.4.2", "Timeout waiting for data"));
                }
                Err(_) => {
                    // The client went away mid-message: nothing was stored.
                    self.closing = true;
                    self.reset().await;
                    return None;
                }
            }
        }
        if decoder.too_big {
            self.reset().await;
            return Some(Reply::new(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            ));
        }
        if decoder.bare_newline {
            // RFC 5321 §2.3.8: lines end with CRLF only; a bare CR or LF is refused rather than
            // guessed at (guessing is what makes SMTP smuggling possible).
            self.reset().await;
            return Some(Reply::new(554, "5.6.0", "Bare CR or LF in message (RFC 5321 2.3.8)"));
        }
        let reply = self.finish_message(decoder.body).await;
        drop(held);
        Some(reply)
    }
}
