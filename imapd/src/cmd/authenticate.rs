//! AUTHENTICATE PLAIN (RFC 3501 §6.2.2, RFC 4616), with an initial response (SASL-IR, RFC 4959).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::session::conn::Line;
use crate::session::{CmdResult, Code, Failure, Reply, Session};
use crate::wire::response::Response;

impl Session {
    pub(crate) async fn cmd_authenticate(&mut self, mechanism: &str, initial: Option<String>) -> CmdResult {
        if mechanism != "PLAIN" {
            return Ok(Reply::no("unsupported mechanism").code(Code::Cannot));
        }
        if !self.may_authenticate() {
            return Ok(Reply::no("use STARTTLS first").code(Code::PrivacyRequired));
        }
        let response = match initial {
            // RFC 4959 §3: "=" is an empty initial response.
            Some(text) if text == "=" => String::new(),
            Some(text) => text,
            None => {
                self.respond(Response::Continue("")).await?;
                self.conn.flush().await?;
                let max = self.ctx.config.imap.max_line_length as usize;
                // Not authenticated yet: the answer must come within the short login timeout.
                let Ok(line) = tokio::time::timeout(self.idle_timeout(), self.conn.read_line(max)).await else {
                    tracing::info!(peer = %self.peer, "AUTHENTICATE: no response in time");
                    self.respond(Response::Bye("authentication timed out")).await?;
                    self.conn.flush().await?;
                    return Err(Failure::Io(std::io::ErrorKind::TimedOut.into()));
                };
                match line? {
                    Line::Line(line) => {
                        let text = String::from_utf8_lossy(&line).trim_end().to_string();
                        if text == "*" {
                            return Ok(Reply::bad("authentication cancelled"));
                        }
                        text
                    }
                    Line::TooLong => return Ok(Reply::bad("response too long")),
                    Line::Eof => return Err(Failure::Io(std::io::ErrorKind::UnexpectedEof.into())),
                }
            }
        };
        let Ok(decoded) = STANDARD.decode(response.as_bytes()) else {
            return Ok(Reply::bad("invalid base64"));
        };
        let Some((user, password)) = shared::auth::parse_sasl_plain(&decoded) else {
            return Ok(Reply::no("malformed PLAIN response").code(Code::AuthenticationFailed));
        };
        self.log_in(&user, &password).await
    }
}
