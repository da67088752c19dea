//! The errors of the deploy library; each renders as one line naming the file.

use std::io;

/// Anything that can go wrong reading fleet settings or laying out a fleet.
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
}

impl Error {
    pub(crate) fn input(line: Option<usize>, msg: impl Into<String>) -> Self {
        Error::Config {
            line,
            msg: msg.into(),
        }
    }
}
