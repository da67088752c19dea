//! Bento's fleet side: the fleet settings in `bento.toml`, the hosts, their signed
//! bundles, publishing them into the server layout, building systems, what the server
//! needs to serve them, and how a host reaches the server (sftp or a local directory).
//!
//! Two programs share this crate, each in its own tree:
//! - the admin's: [`fleet`] (`bento.toml`, hosts, bundles, builds, server setup,
//!   `bento init`), [`publish`] (`bento deploy`: local or remote, the binary cache), and
//!   [`status`] (what the hosts reported);
//! - the host's: [`agent`] (one pull, its configuration, commands, reports, the trigger).
//!
//! What both read or write is in [`wire`] (the bundle's [`manifest`], a host directory's
//! names, the reports and the heartbeat): neither program's tree imports the other's.
//! Shared pieces sit at the top: the manifest's [`sign`]ature, the server [`layout`], the
//! [`transport`]s ([`sftp`], [`confined`]), [`reach`], [`store_path`] and [`time`].

pub mod agent;
pub mod changes;
pub mod confined;
pub mod dirents;
pub mod error;
pub mod fleet;
pub mod layout;
pub mod publish;
pub mod reach;
pub mod s3;
pub mod server_dir;
pub mod server_url;
pub mod sftp;
pub mod sign;
mod spans;
pub mod status;
pub mod store_path;
pub mod time;
pub mod transport;
pub mod wire;

pub use error::Error;
pub use fleet::config::Config;
pub use wire::manifest;
