//! Bento's secrets: the keys a fleet's secrets are encrypted to, the rules that say which
//! secret goes to whom, and standard age files written and read in memory.
//!
//! Plaintext lives only in [`zeroize::Zeroizing`] buffers and, while an admin edits, in a
//! private file on a RAM filesystem. No error message carries plaintext.

pub mod accounts;
pub mod activate;
#[cfg(test)]
mod activate_tests;
pub mod atomic;
mod crypto;
pub mod digest;
pub mod error;
#[cfg(test)]
mod fixture;
pub mod manifest;
pub mod names;
mod ops;
pub mod plaintext;
mod policy;
pub mod ramfs;
mod repo;
pub mod secrets_tree;
pub mod spec;
pub mod suggest;
pub mod units;

// The folders (crypto/, ops/, policy/, repo/) group modules by concept inside the crate;
// outside it each module has one path, the flat one it has always had.
use crypto::ssh_ed25519;
pub use crypto::{crypt, extend, format, identity, keys, plugin_path, prompt};
pub use ops::{edit, editor, generate, listing, rekey, scratch, verify};
use policy::directory;
pub use policy::{file_attrs, generator_kind, mode, rules, template, toml_text};
pub use repo::{adminkeys, agenix, fleet, fleet_files, fleet_lock, hostkeys, import, recipients_lock, store};

pub use error::{Error, Result};
pub use fleet::Fleet;
pub use fleet_lock::FleetLock;
pub use identity::Identities;
pub use keys::RecipientKey;
pub use rules::{Rules, SecretRule};
