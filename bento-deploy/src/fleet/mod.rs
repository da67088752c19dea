//! The admin's side of a fleet: its settings (`bento.toml`), its hosts, the bundle
//! assembled for each, the systems built for them, what the server needs to serve them
//! (`bento server setup`), and `bento init`. Publishing lives in [`crate::publish`].

pub mod build;
pub mod bundle;
pub mod config;
pub mod flake_update;
pub mod hosts;
pub mod init;
pub mod location;
pub mod server;
pub mod ssh;
pub mod workspace;
