//! Bento's fleet side: the fleet settings in `bento.toml`, the layout of a new fleet
//! repository, and how a host reaches the server (sftp or a local directory).

pub mod agent_config;
pub mod config;
pub mod error;
pub mod init;
pub mod sftp;
pub mod transport;

pub use config::Config;
pub use error::Error;
