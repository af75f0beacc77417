//! STARTTLS (RFC 3501 §6.2.1).

use crate::session::{CmdResult, Failure, Reply, Session};

impl Session {
    /// The tagged OK is sent here, before the handshake; the answer returned afterwards is
    /// never written (see `Failure::Io` on a failed handshake).
    pub(crate) async fn cmd_starttls(&mut self, tag: &str) -> CmdResult {
        if self.conn.is_tls() {
            return Ok(Reply::bad("TLS is already active"));
        }
        self.respond(Reply::ok("begin TLS negotiation now").tagged(tag)).await?;
        let acceptor = self.tls.clone();
        let timeout = shared::net::handshake_timeout(&self.ctx.config.net);
        if let Err(e) = self.conn.start_tls(&acceptor, timeout).await {
            tracing::info!(peer = %self.peer, "TLS handshake failed: {e}");
            return Err(Failure::Io(e));
        }
        Err(Failure::Answered)
    }
}
