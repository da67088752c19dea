//! The errors of the secrets library.
//!
//! Every variant renders as one line that names the file (and line, where there is one)
//! and says how to fix it. No variant ever carries plaintext.

use std::io;

/// Anything that can go wrong while reading the fleet, encrypting or decrypting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file the admin wrote is wrong: rules, key files, identity files.
    #[error("{file}{}: {msg}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Input {
        /// The file, as shown to the user.
        file: String,
        /// 1-based line, when known.
        line: Option<usize>,
        /// What is wrong and how to fix it.
        msg: String,
    },

    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file, as shown to the user.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A secret was named that has no rule.
    #[error("no rule for secret `{name}` in {rules}{hint}; {fix}")]
    UnknownSecret {
        /// The secret's name.
        name: String,
        /// The rules file, as shown.
        rules: String,
        /// How to add one, in that file's format.
        fix: String,
        /// ` (did you mean …?)`, or empty (see [`crate::suggest::hint`]).
        hint: String,
    },

    /// `secret generate` was asked for a secret without a `generate` kind.
    #[error(
        "secret `{name}` has no `generate` kind in {rules}; add one to [secrets.{name}] \
         (e.g. generate = \"password:32\"), or set it with `bento secret edit {name}`"
    )]
    NotGenerated {
        /// The secret's name.
        name: String,
        /// The rules file, as shown.
        rules: String,
    },

    /// A secret could not be generated, or its public part derived.
    #[error("{file}: {detail}")]
    Generate {
        /// The file concerned, as shown.
        file: String,
        /// What went wrong.
        detail: String,
    },

    /// A secret has a rule but no ciphertext yet.
    #[error("{file} does not exist yet; create it with `{command} edit {name}`")]
    MissingCiphertext {
        /// The ciphertext file, as shown.
        file: String,
        /// The secret's name.
        name: String,
        /// `bento secret` as run on this fleet (see [`crate::Fleet::command`]).
        command: String,
    },

    /// None of the identities can open the file.
    #[error("{file}: none of the identities ({tried}) can decrypt it; {hint}")]
    NoMatchingIdentity {
        /// The ciphertext file, as shown.
        file: String,
        /// The identity files that were tried.
        tried: String,
        /// Who can decrypt it, and what to pass.
        hint: String,
    },

    /// The ciphertext is not a valid age file.
    #[error(
        "{file}: {detail}: the file is corrupt or truncated; restore it from git (`git checkout -- {file}`)"
    )]
    Corrupt {
        /// The ciphertext file, as shown.
        file: String,
        /// What age said about it.
        detail: String,
    },

    /// An age plugin binary is needed and missing.
    #[error("{what} needs the age plugin binary `{binary}`, which is not installed (not found in PATH)")]
    MissingPlugin {
        /// The recipient or identity that needs it.
        what: String,
        /// The binary's name.
        binary: String,
    },

    /// Encryption failed for another reason (a plugin error, say).
    #[error("encrypting {file}: {detail}")]
    Encrypt {
        /// The ciphertext file, as shown.
        file: String,
        /// What age said.
        detail: String,
    },

    /// No identity file was given or found.
    #[error("no identity to decrypt with: pass -i FILE, set BENTO_IDENTITY, or create ~/.ssh/id_ed25519")]
    NoIdentity,

    /// A passphrase-protected key could not be unlocked.
    #[error("{file}: {msg}")]
    Passphrase {
        /// The key file.
        file: String,
        /// Why.
        msg: String,
    },

    /// The editor's temp dir would not be on a RAM filesystem.
    #[error(
        "{dir} is not on a RAM filesystem (tmpfs/ramfs), so plaintext could reach the disk; \
             set XDG_RUNTIME_DIR to a tmpfs dir, or pass --unsafe-tmp to accept the risk"
    )]
    UnsafeTmp {
        /// The directory that was refused.
        dir: String,
    },

    /// `XDG_RUNTIME_DIR` is unset (or names no directory) and there is no RAM-backed
    /// directory to fall back on.
    #[error(
        "{why}, and {fallback} is not a RAM filesystem either, so the editor's plaintext could reach \
         the disk: set XDG_RUNTIME_DIR to a tmpfs directory of yours (a login session makes \
         /run/user/$UID), or pass --unsafe-tmp to accept the risk"
    )]
    NoRuntimeDir {
        /// What is wrong with `XDG_RUNTIME_DIR`.
        why: String,
        /// The directory tried instead.
        fallback: String,
    },

    /// The editor exited with an error or was killed.
    #[error("the editor `{editor}` {status}; {file} is unchanged")]
    Editor {
        /// The editor command.
        editor: String,
        /// How it ended.
        status: String,
        /// The ciphertext file, as shown.
        file: String,
    },

    /// Activation could not proceed at all (mount, full RAM filesystem, the tree).
    #[error("{msg}")]
    Activate {
        /// What happened and what state the host is in.
        msg: String,
    },

    /// A signal arrived while editing.
    #[error("interrupted; {file} is unchanged")]
    Interrupted {
        /// The ciphertext file, as shown.
        file: String,
    },

    /// Bento got SIGTERM or SIGHUP while the editor ran; the editor was ended.
    #[error("stopped by signal {signal}; the editor was ended and {file} is unchanged")]
    Signalled {
        /// The signal's number.
        signal: i32,
        /// The ciphertext file, as shown.
        file: String,
    },

    /// Something other than bento replaced the ciphertext while the editor was open.
    #[error(
        "{file} was changed by another program while the editor was open; your edit was not saved, \
         so as not to undo that change: see what changed (`git diff`), then run `{command} edit {name}` again"
    )]
    ChangedDuringEdit {
        /// The ciphertext file, as shown.
        file: String,
        /// The secret's name.
        name: String,
        /// `bento secret` as run on this fleet (see [`crate::Fleet::command`]).
        command: String,
    },

    /// `secret edit` read nothing from stdin.
    #[error("stdin is empty, so {file} is unchanged; pass --allow-empty if an empty secret is intended")]
    EmptyInput {
        /// The ciphertext file, as shown.
        file: String,
    },

    /// A secret to rekey has a file that is not an age file (empty, truncated).
    #[error(
        "{finding}; it cannot be rekeyed: restore it from git (`git checkout -- {file}`) \
         or set it anew with `{command} edit {name}`"
    )]
    CorruptSecret {
        /// The secret's name.
        name: String,
        /// `bento secret` as run on this fleet (see [`crate::Fleet::command`]).
        command: String,
        /// The ciphertext file, as shown.
        file: String,
        /// What verify says about it (naming the secret and the file).
        finding: String,
    },
}

impl Error {
    /// An [`Error::Input`].
    pub fn input(file: impl Into<String>, line: Option<usize>, msg: impl Into<String>) -> Self {
        Error::Input {
            file: file.into(),
            line,
            msg: escape_controls(&msg.into()),
        }
    }

    /// An [`Error::Io`].
    pub fn io(path: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// `text` on one line: line breaks and other control characters (which an input file can
/// smuggle in through a quoted `\n`) are shown escaped, so an error stays one line.
pub fn escape_controls(text: &str) -> String {
    if !text.contains(|c: char| c.is_control() && c != '\t') {
        return text.to_owned();
    }
    text.chars()
        .map(|c| match c {
            '\t' => c.to_string(),
            c if c.is_control() => c.escape_default().to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
