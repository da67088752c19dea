//! Who signed each host's current generation, for `bento status`.
//!
//! Checking an SSH signature costs more than everything else status reads of a host, and
//! a fleet's current generations rarely change between two status reads. So each verdict
//! is kept in this user's cache (`$XDG_CACHE_HOME/bento/signers.json`, else
//! `~/.cache/bento/signers.json`; a 0600 file in a 0700 directory), under the SHA-256 of
//! the admin keys, the manifest's bytes and its signatures' bytes: a hit is what a real
//! check of exactly those bytes against exactly those keys found. The file keeps the
//! entries of the last read only. A missing, unreadable or unwritable cache costs time,
//! never a wrong name.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::sign::AdminKeys;
use crate::wire::digest::hex;

/// The most of the cache file read: about 100 bytes per host.
const CACHE_LIMIT: u64 = 64 * 1024 * 1024;

/// The admins' keys and the verdicts known for them.
#[derive(Debug)]
pub struct Signers {
    admins: AdminKeys,
    /// SHA-256 of the admin keys (names and keys, in order).
    keys_digest: [u8; 32],
    /// What the cache held when loaded.
    known: HashMap<String, Vec<String>>,
    /// The verdicts of this read: what the cache holds next.
    used: Mutex<HashMap<String, Vec<String>>>,
    /// The cache file (`None`: no home to keep it in).
    path: Option<PathBuf>,
}

impl Signers {
    /// `admins`, with the verdicts of the cache in this user's cache directory.
    pub fn new(admins: AdminKeys) -> Signers {
        let path = std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|d| d.join("bento").join("signers.json"));
        Signers::at(admins, path)
    }

    /// `admins`, with the cache file `path`.
    pub fn at(admins: AdminKeys, path: Option<PathBuf>) -> Signers {
        let mut hasher = Sha256::new();
        for (name, key) in admins.named_keys() {
            hasher.update(name.as_bytes());
            hasher.update([0]);
            hasher.update(key.to_openssh().unwrap_or_default().as_bytes());
            hasher.update([0]);
        }
        let known = path.as_ref().and_then(|p| read_cache(p)).unwrap_or_default();
        Signers {
            admins,
            keys_digest: hasher.finalize().into(),
            known,
            used: Mutex::new(HashMap::new()),
            path,
        }
    }

    /// The admins whose valid signatures of `manifest` `signatures` holds, by name.
    pub fn of(&self, manifest: &[u8], signatures: &[u8]) -> Vec<String> {
        let mut hasher = Sha256::new();
        hasher.update(self.keys_digest);
        hasher.update((manifest.len() as u64).to_le_bytes());
        hasher.update(manifest);
        hasher.update(signatures);
        let key = hex(&hasher.finalize());
        let names = match self.known.get(&key) {
            Some(names) => names.clone(),
            None => self
                .admins
                .signers(manifest, &String::from_utf8_lossy(signatures)),
        };
        if let Ok(mut used) = self.used.lock() {
            used.insert(key, names.clone());
        }
        names
    }

    /// Writes this read's verdicts to the cache, when they differ from what it held.
    pub fn save(&self) {
        let (Some(path), Ok(used)) = (&self.path, self.used.lock()) else {
            return;
        };
        if *used == self.known {
            return;
        }
        let Some(dir) = path.parent() else { return };
        let made = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir);
        if let (Ok(()), Ok(bytes)) = (made, serde_json::to_vec(&*used)) {
            let _ = bento_secrets::atomic::write_atomic(path, &bytes, 0o600);
        }
    }
}

/// The cache's entries, when it is a regular file of this user holding them.
fn read_cache(path: &std::path::Path) -> Option<HashMap<String, Vec<String>>> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.uid() != rustix::process::geteuid().as_raw() {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(CACHE_LIMIT).read_to_end(&mut bytes).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_is_kept_and_found_only_for_the_same_bytes_and_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bento/signers.json");
        let key =
            ssh_key::PrivateKey::random(&mut ssh_key::rand_core::OsRng, ssh_key::Algorithm::Ed25519).unwrap();
        let line = key.public_key().to_openssh().unwrap();
        let admins = AdminKeys::new(
            &[(
                "alice".to_owned(),
                vec![bento_secrets::RecipientKey::parse(&line).unwrap()],
            )]
            .into(),
        );
        let sig = crate::sign::Signer::Key(Box::new(key)).sign(b"manifest").unwrap();

        let signers = Signers::at(admins.clone(), Some(path.clone()));
        assert_eq!(signers.of(b"manifest", sig.as_bytes()), ["alice"]);
        assert!(signers.of(b"other", sig.as_bytes()).is_empty());
        signers.save();
        let held: HashMap<String, Vec<String>> =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(held.len(), 2);

        // Read back: the same verdicts, from the cache.
        let again = Signers::at(admins, Some(path.clone()));
        assert_eq!(again.known, held);
        assert_eq!(again.of(b"manifest", sig.as_bytes()), ["alice"]);
        // Other admin keys: not the same entries.
        let none = Signers::at(AdminKeys::default(), Some(path));
        assert!(none.of(b"manifest", sig.as_bytes()).is_empty());
    }
}
