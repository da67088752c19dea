//! What the two programs exchange through the server: the bundle's [`manifest`], the names
//! and size limits of a host directory ([`host_dir`]), and what a host writes back — its
//! [`report`]s and its [`heartbeat`]; the hash chain of its manifests ([`history`]); a
//! closure host's view of its binary cache
//! ([`narinfo`]). The admin's side and the host's side meet only here.

pub mod digest;
pub mod heartbeat;
pub mod history;
pub mod host_dir;
pub mod mode;
pub mod narinfo;
pub mod report;

/// `manifest.json`, the signed description of a bundle: its type and checks are
/// bento-secrets' (activation reads the same document); its times are written by
/// [`crate::time`].
pub use bento_secrets::manifest;
