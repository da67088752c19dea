//! The bundles installed on this host, `<state_dir>/bundles/<g>`: what changed between
//! two of them, reading one back, pruning the old ones.

use std::collections::BTreeMap;
use std::path::Path;

use crate::manifest::{Manifest, MANIFEST_FILE};

/// What changed between the applied bundle and the new one.
#[derive(Default)]
pub(super) struct Changes {
    pub config: bool,
    pub secrets: Vec<String>,
}

/// What changed: config files or the expected system; which secrets.
pub(super) fn diff(old: Option<&Manifest>, new: &Manifest) -> Changes {
    let config_files = |m: &Manifest| -> BTreeMap<String, String> {
        m.files
            .iter()
            .filter(|(p, _)| p.starts_with("config/"))
            .map(|(p, h)| (p.clone(), h.clone()))
            .collect()
    };
    let Some(old) = old else {
        return Changes {
            config: true,
            secrets: new.secrets.iter().map(|s| s.name.clone()).collect(),
        };
    };
    let config = config_files(old) != config_files(new) || old.system != new.system;
    let mut secrets: Vec<String> = Vec::new();
    for s in &new.secrets {
        if !old.secrets.contains(s) {
            secrets.push(s.name.clone());
        }
    }
    for s in &old.secrets {
        if !new.secrets.iter().any(|n| n.name == s.name) {
            secrets.push(s.name.clone());
        }
    }
    // A template is rendered by `bento activate` too: its changes are named `templates/<name>`.
    for t in &new.templates {
        if !old.templates.contains(t) {
            secrets.push(format!("templates/{}", t.name));
        }
    }
    for t in &old.templates {
        if !new.templates.iter().any(|n| n.name == t.name) {
            secrets.push(format!("templates/{}", t.name));
        }
    }
    Changes { config, secrets }
}

pub(super) fn installed_manifest(state_dir: &Path, g: u64) -> Option<Manifest> {
    let bytes = std::fs::read(state_dir.join("bundles").join(g.to_string()).join(MANIFEST_FILE)).ok()?;
    Manifest::parse(&bytes).ok()
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
