//! The bundles installed on this host, `<state_dir>/bundles/<g>`: what changed between
//! two of them, reading one back, pruning the old ones.

use std::collections::BTreeMap;
use std::path::Path;

use crate::agent::fetch::Running;
use crate::wire::digest::Sha256;
use crate::wire::manifest::{Manifest, FORMAT, MANIFEST_FILE};

/// What changed between the applied bundle and the new one.
#[derive(Default)]
pub(super) struct Changes {
    pub config: bool,
    pub secrets: Vec<String>,
}

/// What changed: config files or the expected system; which secrets.
pub(super) fn diff(old: Option<&Manifest>, new: &Manifest) -> Changes {
    fn config_files(m: &Manifest) -> BTreeMap<&str, &str> {
        m.files
            .iter()
            .filter(|(p, _)| p.starts_with("config/"))
            .map(|(p, h)| (p.as_str(), h.as_str()))
            .collect()
    }
    let Some(old) = old else {
        return Changes {
            config: true,
            secrets: new.secrets.iter().map(|s| s.name.clone()).collect(),
        };
    };
    let config = config_files(old) != config_files(new) || old.system != new.system;
    let mut secrets: Vec<String> = changed(&old.secrets, &new.secrets, |s| &s.name)
        .map(str::to_owned)
        .collect();
    // A template is rendered by `bento activate` too: its changes are named `templates/<name>`.
    let templates = changed(&old.templates, &new.templates, |t| &t.name);
    secrets.extend(templates.map(|name| format!("templates/{name}")));
    Changes { config, secrets }
}

/// The names of the items of `new` not in `old` as they are, then of those of `old` whose
/// name `new` lacks.
fn changed<'a, T: PartialEq>(
    old: &'a [T],
    new: &'a [T],
    name: fn(&T) -> &String,
) -> impl Iterator<Item = &'a str> {
    let added = new.iter().filter(|n| !old.contains(n));
    let dropped = old
        .iter()
        .filter(move |o| !new.iter().any(|n| name(n) == name(o)));
    added.chain(dropped).map(move |item| name(item).as_str())
}

pub(super) fn installed_manifest(state_dir: &Path, g: u64) -> Option<Manifest> {
    let bytes = std::fs::read(state_dir.join("bundles").join(g.to_string()).join(MANIFEST_FILE)).ok()?;
    Manifest::parse(&bytes).ok()
}

/// Generation `g`'s installed `manifest.json`, as descent is checked against it.
pub(super) fn running(state_dir: &Path, g: u64) -> Option<Running> {
    let bytes = std::fs::read(state_dir.join("bundles").join(g.to_string()).join(MANIFEST_FILE)).ok()?;
    Some(Running {
        hash: Sha256::of(&bytes),
        before_history: Manifest::parse(&bytes).is_ok_and(|m| m.format < FORMAT),
    })
}

/// Keeps the newest `keep` bundles, and always the current and the applied one.
pub(super) fn prune(bundles: &Path, keep: usize, current: u64, applied: Option<u64>) {
    let Ok(entries) = std::fs::read_dir(bundles) else {
        return;
    };
    let mut gens: Vec<u64> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    gens.sort_unstable();
    let cut = gens.len().saturating_sub(keep.max(1));
    for g in &gens[..cut] {
        if *g != current && Some(*g) != applied {
            let _ = std::fs::remove_dir_all(bundles.join(g.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(config_hash: &str, secrets: &[(&str, &str)], system: Option<&str>) -> Manifest {
        let mut files = serde_json::Map::new();
        files.insert("config/configuration.nix".into(), config_hash.repeat(64).into());
        let specs: Vec<serde_json::Value> = secrets
            .iter()
            .map(|(name, hash)| {
                files.insert(format!("secrets/{name}.age"), hash.repeat(64).into());
                serde_json::json!({
                    "name": name, "file": format!("secrets/{name}.age"), "sha256": hash.repeat(64),
                    "owner": "root", "mode": "0400",
                })
            })
            .collect();
        let json = serde_json::json!({
            "format": 1, "host": "web1", "generation": 1, "created": "2026-11-26T05:00:00Z",
            "git_commit": null, "system": system, "files": files, "secrets": specs,
        });
        Manifest::parse(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn a_first_bundle_changes_everything() {
        let new = manifest("a", &[("db", "1"), ("tls", "2")], None);
        let c = diff(None, &new);
        assert!(c.config);
        assert_eq!(c.secrets, ["db", "tls"]);
    }

    #[test]
    fn changed_added_and_removed_secrets_are_named_and_config_is_separate() {
        let old = manifest("a", &[("db", "1"), ("gone", "2"), ("same", "3")], None);
        let new = manifest("a", &[("db", "4"), ("new", "5"), ("same", "3")], None);
        let c = diff(Some(&old), &new);
        assert!(!c.config);
        assert_eq!(c.secrets, ["db", "new", "gone"]);
        let c = diff(
            Some(&old),
            &manifest("b", &[("db", "1"), ("gone", "2"), ("same", "3")], None),
        );
        assert!(c.config && c.secrets.is_empty());
    }

    #[test]
    fn a_new_expected_system_is_a_config_change() {
        let old = manifest("a", &[], Some("/nix/store/aaa-system"));
        let new = manifest("a", &[], Some("/nix/store/bbb-system"));
        assert!(diff(Some(&old), &new).config);
        assert!(!diff(Some(&old), &old.clone()).config);
    }

    #[test]
    fn pruning_keeps_the_newest_the_current_and_the_applied() {
        let dir = tempfile::tempdir().unwrap();
        for g in 1..=6 {
            std::fs::create_dir(dir.path().join(g.to_string())).unwrap();
        }
        std::fs::create_dir(dir.path().join(".7.staging")).unwrap();
        prune(dir.path(), 2, 6, Some(2));
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, [".7.staging", "2", "5", "6"]);
    }
}
