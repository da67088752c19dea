//! Bento's secrets: the keys a fleet's secrets are encrypted to, the rules that say which
//! secret goes to whom, and standard age files written and read in memory.
//!
//! Plaintext lives only in [`zeroize::Zeroizing`] buffers and, while an admin edits, in a
//! private file on a RAM filesystem. No error message carries plaintext.

pub mod accounts;
pub mod activate;
#[cfg(test)]
mod activate_tests;
pub mod adminkeys;
pub mod agenix;
pub mod atomic;
pub mod crypt;
mod directory;
pub mod edit;
pub mod editor;
pub mod error;
pub mod extend;
pub mod file_attrs;
#[cfg(test)]
mod fixture;
pub mod fleet;
pub mod fleet_files;
pub mod fleet_lock;
pub mod format;
pub mod generate;
pub mod generator_kind;
pub mod hostkeys;
pub mod identity;
pub mod import;
pub mod keys;
pub mod listing;
pub mod manifest;
pub mod mode;
pub mod names;
pub mod plaintext;
pub mod plugin_path;
pub mod prompt;
pub mod ramfs;
pub mod recipients_lock;
pub mod rekey;
pub mod rules;
pub mod scratch;
pub mod secrets_tree;
pub mod spec;
mod ssh_ed25519;
pub mod store;
pub mod suggest;
pub mod template;
pub mod toml_text;
pub mod units;
pub mod verify;

pub use error::{Error, Result};
pub use fleet::Fleet;
pub use fleet_lock::FleetLock;
pub use identity::Identities;
pub use keys::RecipientKey;
pub use rules::{Rules, SecretRule};
