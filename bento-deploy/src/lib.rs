//! Bento's fleet side: the fleet settings in `bento.toml`, the hosts, their signed
//! bundles, publishing them into the server layout, building systems, and what the server
//! needs to serve them.

pub mod build;
pub mod bundle;
pub mod config;
pub mod error;
pub mod hosts;
pub mod init;
pub mod layout;
pub mod manifest;
pub mod publish;
pub mod server;
pub mod sign;

pub use config::Config;
pub use error::Error;
