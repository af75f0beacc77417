//! One file per command (or family of forms): each adds its handler to [`crate::session::Session`].

mod append;
mod authenticate;
mod capability;
mod close;
mod compress;
mod copy;
mod create;
mod delete;
mod enable;
mod expunge;
mod fetch;
mod id;
mod idle;
mod list;
mod login;
mod logout;
mod namespace;
mod quota;
mod rename;
mod search;
pub(crate) mod select;
pub(crate) mod sort;
mod starttls;
mod status;
mod store;
mod subscribe;
mod thread;
