//! One module per noun of the command line.

pub mod alias;
pub mod bench;
pub mod dkim;
pub mod dns;
pub mod doctor;
pub mod domain;
pub mod import;
pub mod init;
pub mod mail_admin;
pub mod queue;
pub mod quota;
pub mod status;
pub mod sweep;
pub mod up;
pub mod user;
