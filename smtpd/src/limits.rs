//! Rate limits with governor: new connections per IP, messages per authenticated user.
//! (Failed logins are throttled by shared::auth; a session closes after a few failures.)

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use shared::config::SmtpConfig;

pub struct Limits {
    connections: DefaultKeyedRateLimiter<IpAddr>,
    messages: DefaultKeyedRateLimiter<i64>,
}

fn nonzero(n: u64) -> NonZeroU32 {
    NonZeroU32::new(n.clamp(1, u32::MAX as u64) as u32).expect("clamped to at least 1")
}

impl Limits {
    pub fn new(config: &SmtpConfig) -> Limits {
        Limits {
            connections: RateLimiter::keyed(Quota::per_minute(nonzero(config.connections_per_ip_per_minute))),
            messages: RateLimiter::keyed(Quota::per_hour(nonzero(config.messages_per_user_per_hour))),
        }
    }

    /// Whether `ip` may open another connection now.
    pub fn connection_allowed(&self, ip: IpAddr) -> bool {
        let ok = self.connections.check_key(&ip).is_ok();
        if self.connections.len() > 100_000 {
            self.connections.retain_recent();
        }
        ok
    }

    /// Whether the user may start another message now.
    pub fn message_allowed(&self, user_id: i64) -> bool {
        self.messages.check_key(&user_id).is_ok()
    }
}
