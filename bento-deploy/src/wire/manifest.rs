//! `manifest.json`, the signed description of a bundle: the type and its checks live in
//! [`bento_secrets::manifest`] (activation reads the same document); its times are written
//! by [`crate::time`].

pub use bento_secrets::manifest::{Manifest, ManifestError, FORMAT, MANIFEST_FILE, SIGNATURE_FILE};
