//! age encryption and the keys it uses: ciphertext in memory, the age file format, identities, recipient keys, plugins, passphrase prompts.

pub mod crypt;
pub mod extend;
pub mod format;
pub mod identity;
pub mod keys;
pub mod plugin_path;
pub mod prompt;
pub(crate) mod ssh_ed25519;
