//! The errors of the deploy library; each renders as one line naming the file and the fix.

use std::io;

/// Anything that can go wrong reading fleet settings, assembling, signing, publishing or
/// building bundles.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `bento.toml` is wrong.
    #[error("bento.toml{}: {msg}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Config {
        /// 1-based line, when known.
        line: Option<usize>,
        /// What is wrong and how to fix it.
        msg: String,
    },
    /// `bento init` found an existing fleet.
    #[error("{path} already exists: this is a fleet repo already; `bento init` changes nothing in it")]
    AlreadyAFleet {
        /// The existing file.
        path: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A fleet input (a host dir, a symlink, a key) is wrong; `path` names it.
    #[error("{path}: {msg}")]
    Input {
        /// The file or directory, as shown to the user.
        path: String,
        /// What is wrong and how to fix it.
        msg: String,
    },
    /// A manifest does not hold what a bundle must.
    #[error(transparent)]
    Manifest(#[from] bento_secrets::manifest::ManifestError),
    /// Signing or verifying a manifest failed.
    #[error(transparent)]
    Signature(#[from] crate::sign::SignatureError),
    /// Secrets are stale or missing: deploying would hand a host a wrong secret.
    #[error(
        "refusing to deploy: {count} secret{s} not encrypted as the rules say ({detail}); \
         run `bento secret verify` for details, then `bento secret rekey`",
        count = names.len(),
        s = if names.len() == 1 { " is" } else { "s are" }
    )]
    StaleSecrets {
        /// The secrets concerned.
        names: Vec<String>,
        /// One line per problem, joined with `; `.
        detail: String,
    },
    /// The secrets side of the fleet failed.
    #[error(transparent)]
    Secrets(#[from] bento_secrets::Error),
}

impl Error {
    /// An error about `bento.toml`, at `line` when known.
    pub(crate) fn config(line: Option<usize>, msg: impl Into<String>) -> Self {
        Error::Config {
            line,
            msg: msg.into(),
        }
    }

    /// An error about a fleet file or directory.
    pub(crate) fn input(path: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Input {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// An I/O error on `path`.
    pub(crate) fn io(path: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
