//! ENABLE (RFC 5161) for CONDSTORE (RFC 7162 §3.1) and UTF8=ACCEPT (RFC 6855 §3).

use crate::session::{CmdResult, Reply, Session};

impl Session {
    pub(crate) async fn cmd_enable(&mut self, caps: &[String]) -> CmdResult {
        let mut enabled = Vec::new();
        for cap in caps {
            match cap.as_str() {
                "CONDSTORE" if self.ctx.config.imap.condstore && !self.condstore => {
                    self.condstore = true;
                    enabled.push("CONDSTORE");
                }
                "UTF8=ACCEPT" if !self.utf8 => {
                    self.utf8 = true;
                    enabled.push("UTF8=ACCEPT");
                }
                _ => {}
            }
        }
        let mut line = String::from("ENABLED");
        for cap in enabled {
            line.push(' ');
            line.push_str(cap);
        }
        self.untagged(&line).await?;
        Ok(Reply::ok("ENABLE completed"))
    }
}
