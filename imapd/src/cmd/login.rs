//! LOGIN (RFC 3501 §6.2.3), and the login outcome shared with AUTHENTICATE.

use shared::auth::AuthError;

use crate::session::{CmdResult, Code, Reply, Session, State};

impl Session {
    pub(crate) async fn cmd_login(&mut self, user: &str, password: &str) -> CmdResult {
        if !self.may_authenticate() {
            // RFC 3501 §6.2.3: LOGINDISABLED means LOGIN must fail without TLS.
            return Ok(Reply::no("use STARTTLS first").code(Code::PrivacyRequired));
        }
        self.log_in(user, password).await
    }

    /// Check the password through the shared (throttled) auth, answering in RFC 5530 terms.
    pub(crate) async fn log_in(&mut self, user: &str, password: &str) -> CmdResult {
        match self.ctx.auth.login(user, password, self.peer.ip()).await {
            Ok(authed) => {
                tracing::info!(peer = %self.peer, user = authed.address, "logged in");
                self.state = State::Authenticated { user: authed };
                let caps = self.capabilities();
                Ok(Reply::ok("logged in").code(Code::Capability(caps)))
            }
            Err(AuthError::Invalid) => Ok(Reply::no("invalid credentials").code(Code::AuthenticationFailed)),
            Err(AuthError::Throttled { .. }) => {
                Ok(Reply::no("too many failed logins, try again later").code(Code::Unavailable))
            }
            // RFC 5530 §3: UNAVAILABLE, "temporary failure ... try again later".
            Err(AuthError::Busy) => Ok(Reply::no("server busy, try again later").code(Code::Unavailable)),
            Err(AuthError::Internal(e)) => {
                tracing::error!("login: {e}");
                Ok(Reply::no("authentication unavailable").code(Code::Unavailable))
            }
        }
    }
}
