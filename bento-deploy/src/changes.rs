//! What one manifest changes against another, as `bento approve` and `bento log` show it:
//! configuration files, secrets and templates by name, who can decrypt a secret, the system.

use std::collections::BTreeMap;

use bento_secrets::RecipientKey;
use serde::Serialize;

use crate::wire::digest::Sha256;
use crate::wire::manifest::Manifest;
use bento_secrets::spec::{SecretSpec, TemplateSpec};

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
    /// What `new` changes against `old` (`None`: the host's first generation).
    pub fn between(old: Option<&Manifest>, new: &Manifest) -> Changes {
        let files = diff(old.map(config_files).unwrap_or_default(), config_files(new));
        let secrets = diff(old.map(secrets).unwrap_or_default(), secrets(new));
        let templates = diff(old.map(templates).unwrap_or_default(), templates(new));
        let marked = |d: &[(char, &str)]| d.iter().map(|(mark, name)| format!("{mark} {name}")).collect();
        let only = |mark: char| -> Vec<String> {
            secrets
                .iter()
                .filter(|(m, _)| *m == mark)
                .map(|(_, name)| (*name).to_owned())
                .collect()
        };
        let old_system = old.and_then(|m| m.system.clone());
        Changes {
            files: marked(&files),
            secrets_added: only('+'),
            secrets_changed: only('~'),
            secrets_removed: only('-'),
            templates: marked(&templates),
            system: (old_system != new.system).then(|| (old_system, new.system.clone())),
            recipients: BTreeMap::new(),
        }
    }
}

/// Each name of `new` that `old` lacks (`+`) or holds otherwise (`~`), in `new`'s order,
/// then each name of `old` that `new` lacks (`-`), in name order.
fn diff<'m, V: PartialEq>(old: Vec<(&'m str, V)>, new: Vec<(&'m str, V)>) -> Vec<(char, &'m str)> {
    let old: BTreeMap<&str, V> = old.into_iter().collect();
    let mut marked: Vec<(char, &str)> = new
        .iter()
        .filter_map(|(name, v)| match old.get(name) {
            None => Some(('+', *name)),
            Some(o) if o != v => Some(('~', *name)),
            Some(_) => None,
        })
        .collect();
    let gone = old.keys().filter(|name| !new.iter().any(|(n, _)| n == *name));
    marked.extend(gone.map(|name| ('-', *name)));
    marked
}

/// The configuration files of a manifest with their hashes, by path.
fn config_files(m: &Manifest) -> Vec<(&str, &Sha256)> {
    let files = m.files.iter().filter(|(path, _)| path.starts_with("config/"));
    files.map(|(path, hash)| (path.as_str(), hash)).collect()
}

/// The secrets of a manifest, by name.
fn secrets(m: &Manifest) -> Vec<(&str, &SecretSpec)> {
    let mut secrets: Vec<_> = m.secrets.iter().map(|s| (s.name.as_str(), s)).collect();
    secrets.sort_by_key(|(name, _)| *name);
    secrets
}

/// The templates of a manifest, in its order.
fn templates(m: &Manifest) -> Vec<(&str, &TemplateSpec)> {
    m.templates.iter().map(|t| (t.name.as_str(), t)).collect()
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
