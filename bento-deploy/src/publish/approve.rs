//! `bento approve`: the second half of the two-person rule. With `[deploy]
//! required_signatures = N` above 1, `bento deploy` installs each changed host's generation
//! signed by its deployer without moving `current`: it is pending. Another admin, on their
//! own checkout, reads what is pending on the server (a local root or an sftp target), sees
//! what it changes against what the host runs, checks the signatures already there, and
//! adds their own; once N distinct admins signed, `current` names it.
//!
//! A generation is only ever signed as it was shown: before signing, the pending manifest is
//! read again, and one that changed or was superseded by a newer deploy is refused.

use serde::Serialize;

use crate::changes::{Changes, KeyNames, RecipientChange};
use crate::error::Error;
use crate::layout::HostDir;
use crate::publish::target::Target;
use crate::sign::{AdminKeys, Signer};
use crate::wire::digest::Sha256;
use crate::wire::host_dir::GENERATIONS_DIR;
use crate::wire::manifest::Manifest;

/// The most of a secret's file read to name its recipients (its header is at the start;
/// the server chooses the size).
const SECRET_LIMIT: u64 = 64 * 1024 * 1024;

/// A host's generation waiting for more signatures.
#[derive(Clone, Serialize)]
pub struct Pending {
    /// The host.
    pub host: String,
    /// The pending generation.
    pub generation: u64,
    /// The generation `current` names.
    pub current: Option<u64>,
    /// The admins whose valid signatures it holds, by name.
    pub signers: Vec<String>,
    /// What it changes.
    pub changes: Changes,
    #[serde(skip)]
    bytes: Vec<u8>,
    #[serde(skip)]
    signatures: String,
    #[serde(skip)]
    dir: HostDir,
}

/// The generations pending on `target` for `hosts`: the newest generation of each host,
/// when it is above `current` and signed by at least one admin.
pub fn pending(
    target: &Target,
    hosts: &[String],
    admins: &AdminKeys,
    names: &KeyNames,
) -> Result<Vec<Pending>, Error> {
    let mut out = Vec::new();
    for host in hosts {
        let Ok(dir) = HostDir::open(target.root(), &target.shown(), host) else {
            continue; // nothing published for it
        };
        let current = dir.current()?;
        let Some(&newest) = dir.generations()?.last().filter(|&&g| Some(g) > current) else {
            continue;
        };
        let Some((bytes, signatures)) = dir.signed_manifest(newest) else {
            continue;
        };
        let signers = admins.signers(&bytes, &signatures);
        if signers.is_empty() {
            continue; // not something an admin of this fleet published
        }
        let manifest = Manifest::parse(&bytes)?;
        let old = current
            .and_then(|g| dir.signed_manifest(g))
            .filter(|(b, s)| admins.signed(b, s))
            .and_then(|(b, _)| Manifest::parse(&b).ok());
        let mut changes = Changes::between(old.as_ref(), &manifest);
        let recipients_in = |g: u64, m: &Manifest, name: &str| {
            let spec = m.secrets.iter().find(|s| s.name == name)?;
            let limit = m.size(&spec.file).unwrap_or(SECRET_LIMIT).min(SECRET_LIMIT);
            let bytes = dir
                .read(&format!("{GENERATIONS_DIR}/{g}/{}", spec.file), limit)
                .ok()?;
            Some(names.recipients(&bytes))
        };
        for name in changes.secrets_added.iter().chain(&changes.secrets_changed) {
            let before = current
                .zip(old.as_ref())
                .and_then(|(g, m)| recipients_in(g, m, name));
            let after = recipients_in(newest, &manifest, name).unwrap_or_else(|| vec!["(unreadable)".into()]);
            changes
                .recipients
                .insert(name.clone(), RecipientChange { before, after });
        }
        out.push(Pending {
            host: host.clone(),
            generation: newest,
            current,
            signers,
            changes,
            bytes,
            signatures,
            dir,
        });
    }
    Ok(out)
}

/// What an approval did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Approval {
    /// The admins who signed it now, by name.
    pub signers: Vec<String>,
    /// Whether `current` names it now.
    pub current: bool,
}

/// Adds `signer`'s signature (admin `me`) to `pending`, as shown; once `required`
/// distinct admins signed, makes it current. Refused when `me` signed it already, or when
/// the server no longer holds exactly it as the newest generation.
pub fn approve(
    pending: &Pending,
    me: &str,
    signer: &Signer,
    admins: &AdminKeys,
    required: usize,
) -> Result<Approval, Error> {
    let host = &pending.host;
    let g = pending.generation;
    if pending.signers.iter().any(|s| s == me) {
        return Err(Error::input(
            format!("host {host}"),
            format!("generation {g} is signed by {me} already: another admin must approve it"),
        ));
    }
    let newest = pending.dir.generations()?.last().copied();
    let now = pending.dir.signed_manifest(g);
    if newest != Some(g) || now.as_ref().map(|(b, _)| b) != Some(&pending.bytes) {
        return Err(Error::input(
            format!("host {host}"),
            format!(
                "generation {g} changed or was superseded by a newer deploy since it was shown: \
                 run `bento approve` again to review what is pending now"
            ),
        ));
    }
    // It must follow what the host runs now, or hosts refuse it as not descending.
    let base = pending
        .dir
        .current()?
        .and_then(|c| pending.dir.signed_manifest(c));
    let previous = Manifest::parse(&pending.bytes)?.previous;
    if previous != base.as_ref().map(|(bytes, _)| Sha256::of(bytes)) {
        return Err(Error::input(
            format!("host {host}"),
            format!(
                "generation {g} does not follow the generation `current` names (its `previous` is \
                 another manifest): hosts would refuse it; run `bento deploy` again"
            ),
        ));
    }
    let signatures = now.map(|(_, s)| s).unwrap_or_else(|| pending.signatures.clone());
    let mine = signer.sign(&pending.bytes)?;
    let mut all = signatures;
    if !all.ends_with('\n') && !all.is_empty() {
        all.push('\n');
    }
    all.push_str(&mine);
    pending.dir.replace_signatures(g, &all)?;
    let signers = admins.signers(&pending.bytes, &all);
    let current = signers.len() >= required;
    if current {
        if let Some((bytes, signatures)) = &base {
            pending.dir.record_history(bytes, signatures)?;
        }
        pending.dir.point_at(g)?;
        pending.dir.record_history(&pending.bytes, &all)?;
    }
    Ok(Approval { signers, current })
}
