//! The IMAP wire format: framing, command parsing and response encoding, all without I/O.

pub mod encode;
pub mod fetch_response;
pub mod frame;
pub mod fuzz;
pub mod imap_url;
/// The codec lives in shared (import and export use it too).
pub use shared::mutf7;
pub mod parse;
pub mod response;
pub mod sequence;
