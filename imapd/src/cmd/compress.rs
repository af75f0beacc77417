//! COMPRESS DEFLATE (RFC 4978).

use crate::session::{CmdResult, Code, Failure, Reply, Session};

impl Session {
    pub(crate) async fn cmd_compress(&mut self, tag: &str, mechanism: &str) -> CmdResult {
        if !self.ctx.config.imap.compress {
            return Ok(Reply::bad("COMPRESS is not offered"));
        }
        if mechanism != "DEFLATE" {
            return Ok(Reply::bad("unknown compression mechanism"));
        }
        if self.conn.is_compressed() {
            return Ok(Reply::no("compression already active").code(Code::CompressionActive));
        }
        // RFC 4978 §3: the OK is the last uncompressed data.
        self.respond(Reply::ok("DEFLATE active").tagged(tag)).await?;
        self.conn.flush().await?;
        self.conn.start_compress();
        Err(Failure::Answered)
    }
}
