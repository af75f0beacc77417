//! EHLO and HELO (RFC 5321 §4.1.1.1): greet, reset any transaction, list the extensions.

use crate::ListenerKind;
use crate::reply::Reply;
use crate::session::Session;

impl Session {
    pub async fn ehlo(&mut self, host: String, esmtp: bool) -> Reply {
        // §4.1.4: EHLO in the middle of a transaction resets it.
        self.reset().await;
        self.helo = Some(host.clone());
        self.esmtp = esmtp;
        let greeting = format!("{} greets {}", self.hostname(), host);
        if !esmtp {
            return Reply::new(250, "", greeting);
        }
        let mut lines = vec![greeting];
        lines.push("PIPELINING".into()); // RFC 2920
        lines.push(format!("SIZE {}", self.server.ctx.config.smtp.max_message_size)); // RFC 1870
        lines.push("8BITMIME".into()); // RFC 6152
        lines.push("ENHANCEDSTATUSCODES".into()); // RFC 2034
        lines.push("SMTPUTF8".into()); // RFC 6531
        lines.push("CHUNKING".into()); // RFC 3030
        if !self.tls {
            lines.push("STARTTLS".into()); // RFC 3207
        }
        // RFC 4954: AUTH only where users log in, and only once a password may be sent.
        if self.kind != ListenerKind::Mx && self.user.is_none() && self.may_send_password() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        Reply {
            code: 250,
            status: "",
            lines,
        }
    }
}
