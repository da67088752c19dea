//! Bento's fleet side: the fleet settings in `bento.toml`, the hosts, their signed
//! bundles, publishing them into the server layout, building systems, what the server
//! needs to serve them, and how a host reaches the server (sftp or a local directory).

pub mod agent;
mod agent_command;
pub mod agent_config;
mod agent_connect;
mod agent_fetch;
pub mod backoff;
pub mod build;
pub mod bundle;
pub mod cache;
pub mod cache_sink;
pub mod config;
pub mod confined;
pub mod dirents;
pub mod error;
pub mod hosts;
pub mod init;
pub mod layout;
pub mod manifest;
pub mod publish;
pub mod reach;
pub mod remote;
pub mod remote_cache;
pub mod report;
pub mod server;
pub mod sftp;
pub mod sign;
pub mod status;
pub mod status_diff;
pub mod status_prometheus;
mod status_reports;
mod status_seen;
mod status_time;
pub mod store_path;
pub mod target;
pub mod transport;
pub mod trigger;

pub use config::Config;
pub use error::Error;
