//! Logging in: AUTHENTICATE with an optional initial response (RFC 3501 §6.2.2, RFC 4959)
//! and LOGIN (RFC 3501 §6.2.3).

use super::CommandBody;
use super::primitives::{PResult, Parser};

impl Parser<'_> {
    pub(super) fn authenticate(&mut self) -> PResult<CommandBody> {
        self.sp()?;
        let mechanism = self.atom()?.to_ascii_uppercase();
        let initial = if self.try_sp() {
            // RFC 4959: base64 or "=".
            let start = self.pos;
            while self
                .peek()
                .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
            {
                self.pos += 1;
            }
            if start == self.pos {
                return Err("bad initial response".into());
            }
            Some(String::from_utf8_lossy(&self.input[start..self.pos]).into_owned())
        } else {
            None
        };
        Ok(CommandBody::Authenticate { mechanism, initial })
    }

    pub(super) fn login(&mut self) -> PResult<CommandBody> {
        self.sp()?;
        let user = self.astring()?;
        self.sp()?;
        let password = self.astring()?;
        Ok(CommandBody::Login { user, password })
    }
}
