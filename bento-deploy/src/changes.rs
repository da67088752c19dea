//! What one manifest changes against another, as `bento approve` and `bento log` show it:
//! configuration files, secrets and templates by name, who can decrypt a secret, the system.

use std::collections::BTreeMap;

use bento_secrets::RecipientKey;
use serde::Serialize;

use crate::wire::manifest::Manifest;

/// What a generation changes against another (a pending one against the one `current`
/// names, one of the history against the one before it).
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
    /// Per secret added or changed: who can decrypt it, read from its file's header (see
    /// [`KeyNames::recipients`]); filled by `bento approve`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub recipients: BTreeMap<String, RecipientChange>,
}

/// Who can decrypt a secret before and after a generation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RecipientChange {
    /// In the generation `current` names (`None`: the secret is new).
    pub before: Option<Vec<String>>,
    /// In the pending generation.
    pub after: Vec<String>,
}

/// The fleet's keys by the tag age writes in their stanzas, to name who an age file is
/// encrypted to.
#[derive(Clone, Debug, Default)]
pub struct KeyNames {
    by_tag: BTreeMap<String, String>,
}

impl KeyNames {
    /// The ssh keys of the fleet's hosts and admins (name → keys, as `Fleet` has them).
    pub fn new<'a>(owners: impl IntoIterator<Item = (&'a String, &'a Vec<RecipientKey>)>) -> KeyNames {
        let mut by_tag = BTreeMap::new();
        for (name, keys) in owners {
            for tag in keys.iter().filter_map(RecipientKey::ssh_tag) {
                by_tag.insert(tag.to_owned(), name.clone());
            }
        }
        KeyNames { by_tag }
    }

    /// Who the age file `bytes` is encrypted to, from its header: fleet keys by name (ssh
    /// stanzas carry their key's tag), an ssh key the fleet does not have by its tag, and
    /// the number of age (X25519) recipients, which a header does not name.
    pub fn recipients(&self, bytes: &[u8]) -> Vec<String> {
        let Ok(stanzas) = bento_secrets::format::stanzas(bytes) else {
            return vec!["(not an age file)".into()];
        };
        let mut names: Vec<String> = Vec::new();
        let mut anonymous = 0;
        for stanza in &stanzas {
            match (stanza.tag.as_str(), stanza.args.first()) {
                ("ssh-ed25519" | "ssh-rsa", Some(tag)) => {
                    let name = match self.by_tag.get(tag) {
                        Some(name) => name.clone(),
                        None => format!("an ssh key not in the fleet (tag {})", tag.escape_default()),
                    };
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
                ("X25519", _) => anonymous += 1,
                _ => {}
            }
        }
        names.sort();
        if anonymous > 0 {
            names.push(format!(
                "{anonymous} age key{}",
                if anonymous == 1 { "" } else { "s" }
            ));
        }
        names
    }
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
