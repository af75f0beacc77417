//! ENABLE (RFC 5161) for CONDSTORE and QRESYNC (RFC 7162 §3.1, §3.2.3), UTF8=ACCEPT
//! (RFC 6855 §3) and IMAP4rev2 (RFC 9051 §6.3.1).

use crate::session::{CmdResult, Reply, Session, State};
use crate::wire::response::Response;

impl Session {
    pub(crate) async fn cmd_enable(&mut self, caps: &[String]) -> CmdResult {
        let mut enabled = Vec::new();
        for cap in caps {
            match cap.as_str() {
                "CONDSTORE" if self.ctx.config.imap.condstore && !self.condstore => {
                    self.enable_condstore().await?;
                    enabled.push("CONDSTORE");
                }
                // RFC 7162 §3.2.3: QRESYNC implies CONDSTORE.
                "QRESYNC" if self.ctx.config.imap.condstore && !self.qresync => {
                    self.enable_condstore().await?;
                    self.qresync = true;
                    enabled.push("QRESYNC");
                }
                // RFC 9051 §6.3.1: a server offering both revisions answers as IMAP4rev1 until
                // the client enables IMAP4rev2.
                "IMAP4REV2" if !self.rev2 => {
                    self.rev2 = true;
                    // RFC 9051 §5.1: IMAP4rev2 mailbox names are UTF-8 ("this differs from
                    // IMAP4rev1"), and strings may carry UTF-8 (§4.3, the ENVELOPE of 8-bit
                    // headers): what UTF8=ACCEPT turns on in IMAP4rev1.
                    self.utf8 = true;
                    // Enabled with a mailbox selected: what this view claimed as \Recent is no
                    // longer shown (RFC 9051 has no \Recent).
                    if let State::Selected { selected, .. } = &mut self.state {
                        selected.recent.clear();
                    }
                    enabled.push("IMAP4rev2");
                }
                "UTF8=ACCEPT" if !self.utf8 => {
                    self.utf8 = true;
                    enabled.push("UTF8=ACCEPT");
                }
                _ => {}
            }
        }
        self.respond(Response::Enabled(&enabled)).await?;
        Ok(Reply::ok("ENABLE completed"))
    }
}
