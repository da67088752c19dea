//! The decrypt phase of activation: each secret of the bundle read, checked against its
//! hash, decrypted with the host's keys and given its resolved owner.

use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;
use zeroize::Zeroizing;

use super::options::{Options, Phase};
use super::outcome::NotReady;
use crate::accounts::{self, Owner};
use crate::error::Error;
use crate::identity::Identities;
use crate::prompt::Prompt;
use crate::recipients_lock::sha256_hex;
use crate::spec::SecretSpec;

/// Owner of the users phase's secrets and of the bookkeeping files.
pub const ROOT: Owner = Owner { uid: 0, gid: 0 };

/// A secret ready to be written: plaintext and resolved owner; or why it is not.
pub type Prepared = std::result::Result<(Zeroizing<Vec<u8>>, Owner), NotReady>;

/// Activation never asks anything: host keys are not passphrase-protected.
struct NoPrompt;
impl Prompt for NoPrompt {
    fn passphrase(&self, _: &str) -> Option<Zeroizing<String>> {
        None
    }
}

/// Every secret of `specs` prepared, across cores, in order; all fail alike when the
/// host's keys cannot be loaded.
pub fn decrypt_all(specs: &[SecretSpec], opts: &Options) -> Vec<Prepared> {
    if specs.is_empty() {
        return Vec::new();
    }
    match Identities::load_with(&opts.identities, Arc::new(NoPrompt)) {
        Ok(ids) => specs
            .par_iter()
            .map(|spec| prepare(spec, opts.phase, &opts.bundle, &ids))
            .collect(),
        Err(e) => {
            let e = Arc::new(e);
            specs
                .iter()
                .map(|_| Err(NotReady::Identities(e.clone())))
                .collect()
        }
    }
}

/// Reads, checks and decrypts one secret, and resolves its owner. Secrets for the users
/// phase are root's whatever their spec says, and their owners may not exist yet: they are
/// not looked up.
fn prepare(spec: &SecretSpec, phase: Phase, bundle: &Path, ids: &Identities) -> Prepared {
    let file = bundle.join(&spec.file);
    let ciphertext = std::fs::read(&file).map_err(|source| NotReady::Read { path: file, source })?;
    if sha256_hex(&ciphertext) != spec.sha256 {
        return Err(NotReady::Tampered(spec.file.clone()));
    }
    let owner = match phase {
        Phase::Users => ROOT,
        Phase::Secrets => accounts::resolve(&spec.owner, spec.group.as_deref())?,
    };
    let plain = crate::crypt::decrypt(&ciphertext, ids, &spec.file, "this host").map_err(|e| match e {
        Error::NoMatchingIdentity { file, tried, .. } => NotReady::HostKey { file, tried },
        other => NotReady::Decrypt(other),
    })?;
    Ok((plain, owner))
}
