//! What an activation did: the secrets added, changed, removed and failed, and its units.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::accounts::AccountError;
use crate::error::Error;
use crate::units::Handled;

/// Why a secret or a template is not ready to be written; each one line, the text of its
/// [`Failure`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotReady {
    /// Its file in the bundle cannot be read.
    #[error("{}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Its file is not what the manifest names.
    #[error("{0}: SHA-256 differs from the manifest; refused")]
    Tampered(String),
    /// Its owner or group is not on this host.
    #[error(transparent)]
    Owner(#[from] AccountError),
    /// The host's key is not among its recipients.
    #[error(
        "{file}: the host key ({tried}) cannot decrypt it; if the host key changed, update \
             keys/hosts/<host>.pub, rekey and deploy"
    )]
    HostKey {
        /// The ciphertext, as shown.
        file: String,
        /// The identity files tried.
        tried: String,
    },
    /// Decrypting it failed otherwise.
    #[error(transparent)]
    Decrypt(Error),
    /// The host's keys cannot be loaded (every secret fails alike).
    #[error(transparent)]
    Identities(Arc<Error>),
    /// A template that is not UTF-8.
    #[error("{0}: not UTF-8; refused")]
    NotUtf8(String),
    /// A template that does not parse: the parser's message.
    #[error("{file}: {why}")]
    Template {
        /// The template's file.
        file: String,
        /// What the parser said.
        why: String,
    },
    /// A template uses a secret the host does not have.
    #[error("uses secret {0}, which this host does not have")]
    NoSuchSecret(String),
    /// A template uses a secret that failed.
    #[error("uses secret {0}, which failed")]
    SecretFailed(String),
}

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

impl Report {
    /// The names (secrets, and templates as `templates/<name>`) whose content is new:
    /// added or changed. Their units are restarted or reloaded.
    pub fn touched(&self) -> std::collections::BTreeSet<&str> {
        self.added
            .iter()
            .chain(&self.changed)
            .map(String::as_str)
            .collect()
    }
}
