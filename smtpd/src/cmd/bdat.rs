//! BDAT (RFC 3030 CHUNKING): exactly `size` octets follow, no dot-stuffing; LAST ends the message.

use crate::reply::Reply;
use crate::session::io::ReadError;
use crate::session::{Session, State};

impl Session {
    pub async fn bdat(&mut self, size: usize, last: bool) -> Option<Reply> {
        let limit = self.server.ctx.config.smtp.max_message_size as usize;
        // Whether the chunk can be kept; it is read in any case to stay in step (§2).
        let keep = match &self.state {
            State::Mail(tx) if !tx.recipients.is_empty() => {
                tx.chunk_error.is_none() && tx.chunks.as_ref().map_or(0, Vec::len).saturating_add(size) <= limit
            }
            _ => false,
        };
        if keep && let State::Mail(tx) = &mut self.state {
            // Take the memory before reading, so the budget bounds what is buffered.
            let total = tx.chunks.as_ref().map_or(0, Vec::len) + size;
            self.server.memory.grow(&mut tx.held, total).await;
        }
        // A kept chunk is read straight onto the message so far (no second copy).
        let mut chunks = match &mut self.state {
            State::Mail(tx) if keep => tx.chunks.take().unwrap_or_default(),
            _ => Vec::new(),
        };
        if keep {
            // Bounded: `keep` means the total is within the limit and its memory is held.
            chunks.reserve(size);
        }
        let mut left = size;
        let timeout = self.data_timeout();
        while left > 0 {
            if self.conn.pending().is_empty() {
                let shutdown = self.shutdown.clone();
                let filled = tokio::select! {
                    r = self.conn.fill(timeout) => r,
                    _ = shutdown.cancelled() => Err(ReadError::Closed),
                };
                if let Err(e) = filled {
                    self.closing = true;
                    self.reset().await;
                    return matches!(e, ReadError::Timeout)
                        .then(|| Reply::new(421, "4.4.2", "Timeout waiting for data"));
                }
            }
            let n = self.conn.pending().len().min(left);
            if keep {
                chunks.extend_from_slice(&self.conn.pending()[..n]);
            }
            self.conn.consume(n);
            left -= n;
        }
        let State::Mail(tx) = &mut self.state else {
            return Some(Reply::new(503, "5.5.1", "Need MAIL before BDAT"));
        };
        if tx.recipients.is_empty() {
            return Some(Reply::new(554, "5.5.1", "No valid recipients"));
        }
        if keep {
            tx.chunks = Some(chunks);
        } else {
            tx.chunks.get_or_insert_with(Vec::new);
        }
        if !keep && tx.chunk_error.is_none() {
            tx.chunk_error = Some(Reply::new(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            ));
        }
        if !last {
            return Some(match &tx.chunk_error {
                Some(e) => e.clone(),
                None => Reply::new(250, "2.0.0", format!("{size} octets received")),
            });
        }
        if let Some(error) = tx.chunk_error.take() {
            self.reset().await;
            return Some(error);
        }
        let body = tx.chunks.take().unwrap_or_default();
        // finish_message drops the transaction, and with it the memory it held.
        Some(self.finish_message(body).await)
    }
}
