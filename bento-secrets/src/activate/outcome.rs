//! What an activation did: the secrets added, changed, removed and failed, and its units.

use serde::Serialize;

use crate::units::Handled;

/// A secret that failed, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The secret's name (escaped if it was not a valid name).
    pub name: String,
    /// Why, in one line.
    pub error: String,
    /// Whether its previous content was kept.
    pub kept_previous: bool,
}

/// What an activation did (or, with `dry_run`, would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// The generation switched to (`None` for a dry run).
    pub generation: Option<u64>,
    /// Secrets that are new.
    pub added: Vec<String>,
    /// Secrets whose content changed.
    pub changed: Vec<String>,
    /// Secrets no longer in the bundle.
    pub removed: Vec<String>,
    /// Secrets unchanged.
    pub unchanged: Vec<String>,
    /// Secrets whose content is unchanged but whose owner, group, mode or `path` changed:
    /// applied, without restarting or reloading their units (those follow the content).
    pub attributes_changed: Vec<String>,
    /// Whether this was the users phase (`needed_for_users` secrets only).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub for_users: bool,
    /// Secrets that failed.
    pub failed: Vec<Failure>,
    /// Units of added or changed secrets: restarted, queued, left or (dry run) that
    /// would be, as `units_handled` says.
    pub restart_units: Vec<String>,
    /// What was done with `restart_units` (absent when there were none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub units_handled: Option<Handled>,
    /// Why restarting them failed: nothing was restarted then, and the run fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub units_error: Option<String>,
    /// Units reloaded (or, in a dry run, that would be); none that is also restarted.
    pub reload_units: Vec<String>,
    /// Things the admin should know.
    pub warnings: Vec<String>,
    /// Whether this was a dry run.
    pub dry_run: bool,
}
