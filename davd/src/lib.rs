//! tinydc-davd: a WebDAV share per person (docs/ARCHITECTURE.md "WebDAV"), on dav-server with
//! davd's own file system backend (fs/: atomic uploads, quota, dead properties in PostgreSQL),
//! a PostgreSQL lock system, HTTP Basic auth through the shared throttled login, and
//! Thunderbird autoconfig.
//!
//! `run(context, shutdown)` serves the configured listeners; tests use [`Server::bind`] to
//! learn the bound addresses first.

pub mod acme_http;
pub mod auth;
pub mod autoconfig;
pub mod checksum;
pub mod chunked;
pub mod fs;
pub mod journal;
pub mod locks;
pub mod mtime;
pub mod paths;
pub mod propfind;
pub mod props;
pub mod server;
pub mod share;
pub mod stage;
pub mod win32;
pub mod xmlcheck;
pub mod xmldoc;

pub use server::{Server, run};

/// davd's event broadcast ring (`shared::events::BACKLOG`): davd sends events (through
/// PostgreSQL) but nothing in it receives them, so the smallest ring does (issue #12: the
/// default's 80 KiB, written at start, were an idle daemon's largest allocation). A receiver
/// added here must raise it.
pub const EVENT_BACKLOG: usize = 1;
