//! One file per command (RFC 5321 §4.1.1 and the extensions' RFCs).

pub mod auth;
pub mod bdat;
pub mod data;
pub mod ehlo;
pub mod mail;
pub mod noop;
pub mod quit;
pub mod rcpt;
pub mod rset;
pub mod starttls;
pub mod vrfy;
