//! The hex SHA-256 digests a manifest names its files by, made by `bento deploy` and
//! checked by the agent: bento-secrets' own, which activation checks them with.

pub use bento_secrets::digest::{hex, sha256_hex, Sha256};
