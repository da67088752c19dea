//! The fleet repository on disk: its keys and rules loaded together, bounded reads of its files, the edit lock, the ciphertexts and `recipients.lock`, and agenix fleets read or imported.

pub mod adminkeys;
pub mod agenix;
pub mod fleet;
pub mod fleet_files;
pub mod fleet_lock;
pub mod hostkeys;
pub mod import;
pub mod recipients_lock;
pub mod store;
