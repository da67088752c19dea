//! Bento's fleet side: the fleet settings in `bento.toml` and the layout of a new fleet
//! repository. Bundles, publishing, the agent and status build on this.

pub mod config;
pub mod error;
pub mod init;

pub use config::Config;
pub use error::Error;
