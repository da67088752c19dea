//! A host's history on the server: every manifest that was its `current` is kept in
//! `generations/history/<sha256>.json` (with its signatures in `<sha256>.sig`), named by
//! the SHA-256 of its exact bytes and never pruned. Each manifest names the one before it
//! (`previous`), so the signed manifest a host is offered commits to all of its ancestors:
//! following the links back through this directory proves (or disproves) that it descends
//! from the one a host runs, however many generations the server pruned in between.
//!
//! The agent walks the links down to the manifest it runs; `bento log` walks them down to
//! the host's first manifest. Both read through [`Ancestors`], which checks each link: the
//! file is there, its bytes hash to its name, it is this host's, and it is older than the
//! manifest that named it. Whoever writes the server chooses what is in the directory, so
//! every read is bounded and nothing is trusted but the hashes.

use std::io;

use crate::wire::digest::Sha256;
use crate::wire::host_dir::MANIFEST_LIMIT;
use crate::wire::manifest::{Manifest, ManifestError};

/// The directory of a host's history, relative to its directory on the server.
pub const HISTORY_DIR: &str = "generations/history";
/// Its name inside `generations/`.
pub const HISTORY_NAME: &str = "history";

/// The most files of a history bento lists: two per generation that was current.
pub const MAX_HISTORY_FILES: usize = 200_000;

/// Where the manifest with SHA-256 `hash` is kept, relative to the host's directory.
pub fn manifest_path(hash: &Sha256) -> String {
    format!("{HISTORY_DIR}/{hash}.json")
}

/// Where the signatures of the manifest with SHA-256 `hash` are kept.
pub fn signature_path(hash: &Sha256) -> String {
    format!("{HISTORY_DIR}/{hash}.sig")
}

/// A link of the chain that does not hold.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The manifest a link names is not on the server.
    #[error("{path} is missing (generation {child} names it as its previous manifest)")]
    Missing {
        /// Its path in the host directory.
        path: String,
        /// The generation whose manifest names it.
        child: u64,
    },
    /// The file is there but its bytes do not hash to its name.
    #[error("{path} was edited: its bytes do not hash to its name")]
    Edited {
        /// Its path in the host directory.
        path: String,
    },
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Unreadable {
        /// Its path in the host directory.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file is not a manifest.
    #[error("{path}: {source}")]
    Malformed {
        /// Its path in the host directory.
        path: String,
        /// Why.
        #[source]
        source: ManifestError,
    },
    /// The manifest is another host's.
    #[error("{path} is host `{host}`'s manifest, not this host's")]
    OtherHost {
        /// Its path in the host directory.
        path: String,
        /// The host it names.
        host: String,
    },
    /// The manifest is not older than the one that names it.
    #[error("{path} is generation {generation}, not older than generation {child} that names it")]
    NotOlder {
        /// Its path in the host directory.
        path: String,
        /// Its generation.
        generation: u64,
        /// The generation whose manifest names it.
        child: u64,
    },
}

/// One ancestor: a manifest of the history, checked against the link that named it.
#[derive(Debug)]
pub struct Ancestor {
    /// The SHA-256 of its bytes (its name in the history).
    pub hash: Sha256,
    /// Its exact bytes.
    pub bytes: Vec<u8>,
    /// The manifest.
    pub manifest: Manifest,
}

/// The ancestors of a manifest, newest first, each read through `read` (a bounded read of
/// a path relative to the host's directory) and checked. Ends after the first manifest
/// with no `previous`, or after the first link that does not hold.
pub struct Ancestors<R> {
    read: R,
    host: String,
    next: Option<Sha256>,
    child: u64,
    broken: bool,
}

impl<R: FnMut(&str, u64) -> io::Result<Vec<u8>>> Ancestors<R> {
    /// The ancestors of `manifest`.
    pub fn of(manifest: &Manifest, read: R) -> Ancestors<R> {
        Ancestors {
            read,
            host: manifest.host.to_string(),
            next: manifest.previous.clone(),
            child: manifest.generation,
            broken: false,
        }
    }

    /// The hash the next step reads (`None`: the chain's first manifest was reached).
    pub fn next_hash(&self) -> Option<&Sha256> {
        self.next.as_ref().filter(|_| !self.broken)
    }

    fn step(&mut self, hash: Sha256) -> Result<Ancestor, LinkError> {
        let path = manifest_path(&hash);
        let bytes = (self.read)(&path, MANIFEST_LIMIT).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => LinkError::Missing {
                path: path.clone(),
                child: self.child,
            },
            _ => LinkError::Unreadable {
                path: path.clone(),
                source,
            },
        })?;
        if Sha256::of(&bytes) != hash {
            return Err(LinkError::Edited { path });
        }
        let manifest = Manifest::parse(&bytes).map_err(|source| LinkError::Malformed {
            path: path.clone(),
            source,
        })?;
        if manifest.host.as_str() != self.host {
            return Err(LinkError::OtherHost {
                path,
                host: manifest.host.to_string(),
            });
        }
        if manifest.generation >= self.child {
            return Err(LinkError::NotOlder {
                path,
                generation: manifest.generation,
                child: self.child,
            });
        }
        self.child = manifest.generation;
        self.next = manifest.previous.clone();
        Ok(Ancestor {
            hash,
            bytes,
            manifest,
        })
    }
}

impl<R: FnMut(&str, u64) -> io::Result<Vec<u8>>> Iterator for Ancestors<R> {
    type Item = Result<Ancestor, LinkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.broken {
            return None;
        }
        let hash = self.next.take()?;
        let step = self.step(hash);
        self.broken = step.is_err();
        Some(step)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A manifest of `host` at `generation` following `previous`, and its bytes.
    fn link(host: &str, generation: u64, previous: Option<&Sha256>) -> (Sha256, Vec<u8>) {
        let json = serde_json::json!({
            "format": 2, "host": host, "generation": generation,
            "created": "2026-12-01T00:00:00Z", "git_commit": null, "system": null,
            "previous": previous.map(|p| p.to_string()), "files": {}, "secrets": [],
        });
        let bytes = json.to_string().into_bytes();
        (Sha256::of(&bytes), bytes)
    }

    fn walk(head: &[u8], history: &BTreeMap<String, Vec<u8>>) -> Vec<Result<u64, String>> {
        let head = Manifest::parse(head).unwrap();
        Ancestors::of(&head, |path: &str, _| {
            history
                .get(path)
                .cloned()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        })
        .map(|a| a.map(|a| a.manifest.generation).map_err(|e| e.to_string()))
        .collect()
    }

    #[test]
    fn a_chain_is_walked_to_its_first_manifest_and_each_broken_link_is_named() {
        let (h1, m1) = link("web1", 1, None);
        let (h2, m2) = link("web1", 2, Some(&h1));
        let (_, m5) = link("web1", 5, Some(&h2));
        let mut history: BTreeMap<String, Vec<u8>> =
            [(manifest_path(&h1), m1.clone()), (manifest_path(&h2), m2)].into();
        assert_eq!(walk(&m5, &history), [Ok(2), Ok(1)]);

        history.remove(&manifest_path(&h1));
        let got = walk(&m5, &history);
        assert!(
            matches!(&got[..], [Ok(2), Err(e)] if e.contains("missing") && e.contains("generation 2")),
            "{got:?}"
        );

        let mut edited = m1.clone();
        edited.extend_from_slice(b" ");
        history.insert(manifest_path(&h1), edited);
        let got = walk(&m5, &history);
        assert!(
            matches!(&got[..], [Ok(2), Err(e)] if e.contains("was edited")),
            "{got:?}"
        );

        let (h_other, other) = link("db1", 1, None);
        let (_, m3) = link("web1", 3, Some(&h_other));
        history.insert(manifest_path(&h_other), other);
        let got = walk(&m3, &history);
        assert!(matches!(&got[..], [Err(e)] if e.contains("`db1`")), "{got:?}");

        let (h9, m9) = link("web1", 9, None);
        let (_, m4) = link("web1", 4, Some(&h9));
        history.insert(manifest_path(&h9), m9);
        let got = walk(&m4, &history);
        assert!(matches!(&got[..], [Err(e)] if e.contains("not older")), "{got:?}");
    }
}
