//! `bento log`: each host's history, verified link by link.
//!
//! The walk starts at the manifest `current` names (which must carry a valid signature of
//! a fleet admin: it is what hosts are offered) and follows each manifest's `previous`
//! through `generations/history/` (see [`crate::wire::history`]) down to the host's first
//! manifest. The hash chain authenticates every older manifest by its successor; their
//! own signatures say who published them. What does not hold is a [`Problem`]: a missing
//! or edited link, signatures that no longer verify, a manifest in the history that is not
//! on the chain (a fork, or one planted).

use std::collections::BTreeSet;

use rayon::prelude::*;
use serde::{Serialize, Serializer};
use ssh_key::HashAlg;

use crate::changes::Changes;
use crate::error::Error;
use crate::layout::HostDir;
use crate::sign::{valid_signers, AdminKeys};
use crate::status::Root;
use crate::wire::digest::Sha256;
use crate::wire::history::{manifest_path, signature_path, Ancestor, Ancestors, LinkError};
use crate::wire::host_dir::SIGNATURE_LIMIT;
use crate::wire::manifest::Manifest;

/// One generation of a host's history.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    /// The generation number.
    pub generation: u64,
    /// When it was made (the manifest's `created`).
    pub created: String,
    /// The SHA-256 of its manifest: its name in the history.
    pub sha256: String,
    /// The fleet repo's commit it was made from, when recorded.
    pub git_commit: Option<String>,
    /// Who signed it: admin names, and `SHA256:…` for a valid signature by a key that is
    /// no admin's (an admin since removed, or not one at all).
    pub signers: Vec<String>,
    /// What it changed against the generation before it (everything, for the first);
    /// `None` when the generation before it could not be read (a broken link).
    pub changes: Option<Changes>,
}

/// What does not hold in a host's history.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// `current` names a generation whose manifest is not there.
    #[error("generation {0} (current) has no readable manifest.json and manifest.sig")]
    NoManifest(u64),
    /// The current manifest is not one a host accepts.
    #[error("generation {generation} (current): {why}")]
    BadManifest {
        /// The generation.
        generation: u64,
        /// Why.
        why: String,
    },
    /// The current manifest carries no valid signature of a fleet admin.
    #[error("generation {0} (current) carries no valid signature of a fleet admin: hosts refuse it")]
    HeadUnsigned(u64),
    /// An older manifest's signatures do not verify (its bytes are the chain's).
    #[error("generation {generation}: {path} holds no valid signature of it (the signatures were edited or removed)")]
    Unsigned {
        /// The generation.
        generation: u64,
        /// The signature file.
        path: String,
    },
    /// A link of the chain does not hold.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// A manifest of the history that the chain does not pass through.
    #[error(
        "{path} is not on the chain that current descends from: a fork, or a manifest planted in the history"
    )]
    Fork {
        /// Its path.
        path: String,
    },
}

impl Serialize for Problem {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A host's history, newest first.
#[derive(Debug, Serialize)]
pub struct HostLog {
    /// The host.
    pub host: String,
    /// The generation `current` names.
    pub current: Option<u64>,
    /// Its generations, from the current one down to the first.
    pub generations: Vec<Entry>,
    /// What does not hold; empty when every link was verified.
    pub problems: Vec<Problem>,
}

impl HostLog {
    /// Whether every link held.
    pub fn verified(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The history of each of `hosts` on the server `root`.
pub fn fleet_log(root: Root<'_>, hosts: &[String], admins: &AdminKeys) -> Result<Vec<HostLog>, Error> {
    hosts.par_iter().map(|h| host_log(root, h, admins)).collect()
}

/// Names who signed `bytes` in `signatures`.
fn signers(bytes: &[u8], signatures: &str, admins: &AdminKeys) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for key in valid_signers(bytes, signatures) {
        let name = match admins.name_of_key(&key) {
            Some(name) => name.to_owned(),
            None => key.fingerprint(HashAlg::Sha256).to_string(),
        };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// The history of `host`.
pub fn host_log(root: Root<'_>, host: &str, admins: &AdminKeys) -> Result<HostLog, Error> {
    let dir = HostDir::open(root.dir, root.shown, host)?;
    let mut log = HostLog {
        host: host.to_owned(),
        current: dir.current()?,
        generations: Vec::new(),
        problems: Vec::new(),
    };
    let Some(current) = log.current else {
        return Ok(log);
    };
    let Some((bytes, signatures)) = dir.signed_manifest(current) else {
        log.problems.push(Problem::NoManifest(current));
        return Ok(log);
    };
    let head = match Manifest::parse(&bytes) {
        Ok(m) if m.host.as_str() == host && m.generation == current => m,
        other => {
            let why = match other {
                Ok(m) => format!("it is host `{}`'s generation {}", m.host, m.generation),
                Err(e) => e.to_string(),
            };
            log.problems.push(Problem::BadManifest {
                generation: current,
                why,
            });
            return Ok(log);
        }
    };
    if !admins.signed(&bytes, &signatures) {
        log.problems.push(Problem::HeadUnsigned(current));
    }
    let mut chain: Vec<(Sha256, Manifest, Vec<String>)> = vec![(
        Sha256::of(&bytes),
        head.clone(),
        signers(&bytes, &signatures, admins),
    )];
    let mut complete = head.previous.is_none();
    for step in Ancestors::of(&head, |rel: &str, limit| dir.read(rel, limit)) {
        match step {
            Ok(a) => {
                complete |= a.manifest.previous.is_none();
                let names = ancestor_signers(&dir, &a, admins, &mut log.problems);
                chain.push((a.hash, a.manifest, names));
            }
            Err(e) => log.problems.push(e.into()),
        }
    }
    let on_chain: BTreeSet<&Sha256> = chain.iter().map(|(h, _, _)| h).collect();
    for hash in dir.history()? {
        if !on_chain.contains(&hash) {
            log.problems.push(Problem::Fork {
                path: manifest_path(&hash),
            });
        }
    }
    for (i, (hash, manifest, signers)) in chain.iter().enumerate() {
        let changes = match chain.get(i + 1) {
            Some((_, before, _)) => Some(Changes::between(Some(before), manifest)),
            None => complete.then(|| Changes::between(None, manifest)),
        };
        log.generations.push(Entry {
            generation: manifest.generation,
            created: manifest.created.clone(),
            sha256: hash.to_string(),
            git_commit: manifest.git_commit.clone(),
            signers: signers.clone(),
            changes,
        });
    }
    Ok(log)
}

/// Who signed an ancestor, from its signature file in the history; none is a problem.
fn ancestor_signers(
    dir: &HostDir,
    a: &Ancestor,
    admins: &AdminKeys,
    problems: &mut Vec<Problem>,
) -> Vec<String> {
    let path = signature_path(&a.hash);
    let sig = dir.read(&path, SIGNATURE_LIMIT).unwrap_or_default();
    let names = signers(&a.bytes, &String::from_utf8_lossy(&sig), admins);
    if names.is_empty() {
        problems.push(Problem::Unsigned {
            generation: a.manifest.generation,
            path,
        });
    }
    names
}
