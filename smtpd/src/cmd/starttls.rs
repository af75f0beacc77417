//! STARTTLS (RFC 3207): answer 220, then handshake; the session starts over (§4.2: forget the
//! greeting and everything learned before TLS).

use crate::reply::Reply;
use crate::session::{Session, State};

impl Session {
    pub async fn starttls(&mut self) -> Option<Reply> {
        self.send(&Reply::new(220, "2.0.0", "Ready to start TLS"));
        let stream = match self.conn.take_for_tls().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(peer = %self.peer, "write before TLS failed: {e}");
                self.closing = true;
                return None;
            }
        };
        let timeout = shared::net::handshake_timeout(&self.server.ctx.config.net);
        match shared::net::handshake(&self.server.tls, stream, timeout).await {
            Ok(tls) => {
                self.conn.put_back(Box::new(tls));
                self.tls = true;
                self.helo = None;
                self.esmtp = false;
                self.state = State::Connected;
                None
            }
            Err(e) => {
                tracing::info!(peer = %self.peer, "TLS handshake failed: {e}");
                self.closing = true;
                None
            }
        }
    }
}
