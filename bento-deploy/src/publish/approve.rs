//! `bento approve`: the second half of the two-person rule. With `[deploy]
//! required_signatures = N` above 1, `bento deploy` installs each changed host's generation
//! signed by its deployer without moving `current`: it is pending. Another admin, on their
//! own checkout, reads what is pending on the server (a local root or an sftp target), sees
//! what it changes against what the host runs, checks the signatures already there, and
//! adds their own; once N distinct admins signed, `current` names it.
//!
//! A generation is only ever signed as it was shown: before signing, the pending manifest is
//! read again, and one that changed or was superseded by a newer deploy is refused.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::Error;
use crate::layout::HostDir;
use crate::publish::target::Target;
use crate::sign::{AdminKeys, Signer};
use crate::wire::manifest::Manifest;

/// What a pending generation changes against the one `current` names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    /// Configuration files added, changed or removed (`+ path`, `~ path`, `- path`).
    pub files: Vec<String>,
    /// Secrets added, by name.
    pub secrets_added: Vec<String>,
    /// Secrets whose ciphertext or attributes changed, by name.
    pub secrets_changed: Vec<String>,
    /// Secrets removed, by name.
    pub secrets_removed: Vec<String>,
    /// Templates added, changed or removed (`+ name`, `~ name`, `- name`).
    pub templates: Vec<String>,
    /// The expected system before and after, when it changes.
    pub system: Option<(Option<String>, Option<String>)>,
}

impl Changes {
    /// What `new` changes against `old` (nothing current: everything is new).
    pub fn between(old: Option<&Manifest>, new: &Manifest) -> Changes {
        let empty = BTreeMap::new();
        let old_files = old.map_or(&empty, |m| &m.files);
        let mut files = Vec::new();
        for (path, hash) in new.files.iter().filter(|(p, _)| p.starts_with("config/")) {
            match old_files.get(path.as_str()) {
                None => files.push(format!("+ {path}")),
                Some(h) if h != hash => files.push(format!("~ {path}")),
                Some(_) => {}
            }
        }
        for path in old_files.keys().filter(|p| p.starts_with("config/")) {
            if !new.files.contains_key(path.as_str()) {
                files.push(format!("- {path}"));
            }
        }
        let old_secrets: BTreeMap<&str, _> = old
            .map(|m| m.secrets.iter().map(|s| (s.name.as_str(), s)).collect())
            .unwrap_or_default();
        let new_secrets: BTreeMap<&str, _> = new.secrets.iter().map(|s| (s.name.as_str(), s)).collect();
        let mut changes = Changes {
            files,
            ..Changes::default()
        };
        for (name, spec) in &new_secrets {
            match old_secrets.get(name) {
                None => changes.secrets_added.push((*name).to_owned()),
                Some(old) if old != spec => changes.secrets_changed.push((*name).to_owned()),
                Some(_) => {}
            }
        }
        changes.secrets_removed = old_secrets
            .keys()
            .filter(|n| !new_secrets.contains_key(*n))
            .map(|n| (*n).to_owned())
            .collect();
        let old_templates: BTreeMap<&str, _> = old
            .map(|m| m.templates.iter().map(|t| (t.name.as_str(), t)).collect())
            .unwrap_or_default();
        for t in &new.templates {
            match old_templates.get(t.name.as_str()) {
                None => changes.templates.push(format!("+ {}", t.name)),
                Some(o) if *o != t => changes.templates.push(format!("~ {}", t.name)),
                Some(_) => {}
            }
        }
        for name in old_templates.keys() {
            if !new.templates.iter().any(|t| t.name == *name) {
                changes.templates.push(format!("- {name}"));
            }
        }
        let old_system = old.and_then(|m| m.system.clone());
        if old_system != new.system {
            changes.system = Some((old_system, new.system.clone()));
        }
        changes
    }
}

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
pub fn pending(target: &Target, hosts: &[String], admins: &AdminKeys) -> Result<Vec<Pending>, Error> {
    let mut out = Vec::new();
    for host in hosts {
        let dir = match HostDir::open(target.root(), &target.shown(), host) {
            Ok(dir) => dir,
            Err(_) => continue, // nothing published for it
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
        out.push(Pending {
            host: host.clone(),
            generation: newest,
            current,
            signers,
            changes: Changes::between(old.as_ref(), &manifest),
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
        pending.dir.point_at(g)?;
    }
    Ok(Approval { signers, current })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(config: &[(&str, &str)], system: Option<&str>) -> Manifest {
        let files: serde_json::Map<String, serde_json::Value> = config
            .iter()
            .map(|(p, h)| ((*p).to_owned(), serde_json::json!(h.repeat(64))))
            .collect();
        let sizes: serde_json::Map<String, serde_json::Value> = config
            .iter()
            .map(|(p, _)| ((*p).to_owned(), serde_json::json!(1)))
            .collect();
        let json = serde_json::json!({
            "format": 1, "host": "web1", "generation": 1, "created": "2026-01-01T00:00:00Z",
            "git_commit": null, "system": system, "files": files, "sizes": sizes, "secrets": [],
        });
        Manifest::parse(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn changes_name_files_and_the_system() {
        let old = manifest(
            &[("config/a.nix", "a"), ("config/b.nix", "b")],
            Some("/nix/store/0c7a0n8gdq7q2rcwmpv8yyhpjwxvlmvs-x"),
        );
        let new = manifest(&[("config/a.nix", "c"), ("config/c.nix", "d")], None);
        let c = Changes::between(Some(&old), &new);
        assert_eq!(c.files, ["~ config/a.nix", "+ config/c.nix", "- config/b.nix"]);
        assert!(c.system.is_some());
        assert_eq!(Changes::between(Some(&new), &new), Changes::default());
    }
}
