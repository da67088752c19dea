//! The record kept beside each generation of what its activation changed, and the
//! activations in force under a root.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;

use super::outcome::Report;
use crate::secrets_tree::{self, Tree, FOR_USERS, SECRETS};

/// Per generation: what the activation that made it changed (names only), so that whoever
/// started it (the agent, around a rebuild that activates) can tell what went live.
pub const RECORD_FILE: &str = ".activation.json";

/// What one activation changed, by name: kept beside its generation ([`RECORD_FILE`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Record {
    /// Secrets (and `templates/<name>`) added.
    pub added: Vec<String>,
    /// Secrets whose content changed.
    pub changed: Vec<String>,
    /// Secrets whose owner, group, mode or path alone changed.
    pub attributes_changed: Vec<String>,
    /// Secrets no longer there.
    pub removed: Vec<String>,
    /// Secrets that failed (their previous content kept, when there was one).
    pub failed: Vec<String>,
}

impl Record {
    pub(super) fn of(report: &Report) -> Record {
        Record {
            added: report.added.clone(),
            changed: report.changed.clone(),
            attributes_changed: report.attributes_changed.clone(),
            removed: report.removed.clone(),
            failed: report.failed.iter().map(|f| f.name.clone()).collect(),
        }
    }

    /// Every name that changed in some way, sorted, once.
    pub fn names(&self) -> Vec<String> {
        let all: BTreeSet<&String> = self
            .added
            .iter()
            .chain(&self.changed)
            .chain(&self.attributes_changed)
            .chain(&self.removed)
            .collect();
        all.into_iter().cloned().collect()
    }
}

/// The activations in force under `root`: per family (users phase, secrets), its current
/// generation number and that activation's [`Record`]. A family never activated (or a root
/// that does not exist) is `None`; a record unreadable (a generation from an older bento)
/// is an empty one.
pub fn in_force(root: &Path) -> [Option<(u64, Record)>; 2] {
    let Ok(tree) = Tree::open(root) else {
        return [None, None];
    };
    [FOR_USERS, SECRETS].map(|family| {
        let n = tree.current(family)?;
        let record = tree
            .open_generation(family, n)
            .ok()
            .and_then(|dir| secrets_tree::read_file(&dir, RECORD_FILE).ok().flatten())
            .and_then(|(bytes, _)| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        Some((n, record))
    })
}
