//! tinydc's shared core, used by the three daemons (`tinydc-smtpd`, `tinydc-imapd`,
//! `tinydc-davd`) and the admin CLI (`tinydc`).
//!
//! Every module here keeps one of the contracts of docs/ARCHITECTURE.md: durability (blobs, mailstore),
//! quota (quota), isolation (every mailstore and quota call takes the user it acts for),
//! authentication (auth) and bad input (config reports every error at once).

pub mod accounts;
pub mod acme;
pub mod acme_https;
pub mod auth;
pub mod blobs;
pub mod config;
pub mod context;
pub mod daemon;
pub mod db;
pub mod dkim;
pub mod events;
pub mod gather;
pub mod header;
pub mod mailstore;
pub mod metadata;
pub mod mutf7;
pub mod net;
pub mod pg;
pub mod process;
pub mod queue;
pub mod quota;
pub mod shares;
pub mod size;
/// Test support (throwaway PostgreSQL, test environments, required outside tools): only with the
/// `testing` feature, which other crates enable in their dev-dependencies alone.
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;

pub use config::Config;
pub use context::Context;
