//! AUTH PLAIN and LOGIN (RFC 4954, RFC 4616; LOGIN as draft-murchison-sasl-login).
//! The gate has already checked that a password may cross this connection.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use shared::auth::{AuthError, parse_sasl_plain};
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN};

use crate::reply::Reply;
use crate::session::io::ReadError;
use crate::session::{MAX_AUTH_FAILURES, Session};

/// Why a SASL exchange ended without credentials.
enum Exchange {
    Cancelled,
    BadEncoding,
    Gone,
}

impl Session {
    /// Send a 334 challenge and read the client's base64 answer (RFC 4954 §4).
    async fn challenge(&mut self, prompt: &str) -> Result<Vec<u8>, Exchange> {
        self.conn.write(format!("334 {prompt}\r\n").as_bytes());
        let limit = self.server.ctx.config.smtp.max_line_length as usize;
        let line = match self.conn.read_line(limit, self.command_timeout()).await {
            Ok(line) => line,
            Err(ReadError::TooLong) => return Err(Exchange::BadEncoding),
            Err(_) => return Err(Exchange::Gone),
        };
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        if text == "*" {
            return Err(Exchange::Cancelled);
        }
        decode(text)
    }

    pub async fn auth(&mut self, mechanism: u64, initial: String) -> Option<Reply> {
        let credentials = if mechanism == AUTH_PLAIN {
            let decoded = if initial.is_empty() {
                self.challenge("").await
            } else {
                decode(&initial)
            };
            decoded.and_then(|d| parse_sasl_plain(&d).ok_or(Exchange::BadEncoding))
        } else if mechanism == AUTH_LOGIN {
            let user = if initial.is_empty() {
                self.challenge("VXNlcm5hbWU6").await // "Username:"
            } else {
                decode(&initial)
            };
            match user {
                Ok(user) => match self.challenge("UGFzc3dvcmQ6").await {
                    // "Password:"
                    Ok(password) => Ok((
                        String::from_utf8_lossy(&user).into_owned(),
                        String::from_utf8_lossy(&password).into_owned(),
                    )),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            }
        } else {
            return Some(Reply::new(504, "5.5.4", "Unrecognized authentication type"));
        };
        let (address, password) = match credentials {
            Ok(c) => c,
            Err(Exchange::Cancelled) => return Some(Reply::new(501, "5.0.0", "Authentication cancelled")),
            Err(Exchange::BadEncoding) => return Some(Reply::new(501, "5.5.2", "Cannot decode response")),
            Err(Exchange::Gone) => {
                self.closing = true;
                return None;
            }
        };
        match self.server.ctx.auth.login(&address, &password, self.peer.ip()).await {
            Ok(user) => {
                tracing::info!(peer = %self.peer, user = user.address, "authenticated");
                self.user = Some(user);
                Some(Reply::new(235, "2.7.0", "Authentication successful"))
            }
            Err(AuthError::Invalid) => {
                self.auth_failures += 1;
                if self.auth_failures >= MAX_AUTH_FAILURES {
                    self.send(&Reply::new(535, "5.7.8", "Authentication credentials invalid"));
                    self.closing = true;
                    return Some(Reply::new(421, "4.7.0", "Too many failed logins, closing connection"));
                }
                Some(Reply::new(535, "5.7.8", "Authentication credentials invalid"))
            }
            Err(AuthError::Throttled { .. }) => {
                self.closing = true;
                Some(Reply::new(454, "4.7.0", "Too many failed logins, try again later"))
            }
            // RFC 4954 §6: 454 is a temporary failure; the client may try again shortly.
            Err(AuthError::Busy) => Some(Reply::new(454, "4.7.0", "Temporary authentication failure")),
            Err(AuthError::Internal(e)) => {
                tracing::error!("authentication unavailable: {e}");
                Some(Reply::new(454, "4.7.0", "Temporary authentication failure"))
            }
        }
    }
}

fn decode(text: &str) -> Result<Vec<u8>, Exchange> {
    // RFC 4954 §4: "=" is an empty initial response.
    if text == "=" {
        return Ok(Vec::new());
    }
    B64.decode(text.trim()).map_err(|_| Exchange::BadEncoding)
}
