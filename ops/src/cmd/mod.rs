//! One module per noun of the command line.

pub mod alias;
pub mod backup;
pub mod bench;
pub mod check;
pub mod dkim;
pub mod dns;
pub mod doctor;
pub mod domain;
pub mod export;
pub mod import;
pub mod init;
pub mod mail_admin;
pub mod queue;
pub mod quota;
pub mod share;
pub mod status;
pub mod sweep;
pub mod up;
pub mod user;
