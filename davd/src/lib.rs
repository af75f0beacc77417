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
