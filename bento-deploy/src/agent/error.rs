//! The agent's errors: one enum for every way a run can fail, each one line, each
//! knowing the report [`State`] it stands for.

use std::io;
use std::path::PathBuf;

use crate::agent::command::CommandError;
use crate::sftp::ConnectError;
use crate::sign::SignatureError;
use crate::wire::report::State;

/// Anything that stops an agent run. The first group stops it before anything is
/// downloaded (no report is written: the command fails); the rest end a run, and the
/// report carries the message under [`AgentError::state`].
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A file or directory of the agent's own (the state dir, `state.json`) failed.
    #[error("{}: {source}", path.display())]
    Local {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The run lock could not be taken.
    #[error("locking {}: {source}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `state.json` exists but cannot be read as a state.
    #[error(
        "{}: unreadable ({source}); restore it, or delete it to accept any generation again",
        path.display()
    )]
    StateUnreadable {
        /// `<state_dir>/state.json`.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: serde_json::Error,
    },
    /// The server cannot be reached for good (host key, login).
    #[error(transparent)]
    Connect(ConnectError),
    /// The `identity` of agent.toml, the key this host logs in with, cannot be read: said
    /// before connecting, where the server would only answer "Permission denied".
    #[error(
        "{}: {source}: this is agent.toml's identity, the key this host logs in to the server \
         with (and decrypts its secrets with); point identity at the host's private key",
        path.display()
    )]
    Identity {
        /// The identity file.
        path: PathBuf,
        /// Why it cannot be read.
        #[source]
        source: io::Error,
    },
    /// The store credentials file (`s3_credentials`) cannot be used.
    #[error("s3_credentials {0}")]
    S3Credentials(crate::s3::credentials::CredentialsError),
    /// The server did not answer before the run's deadline.
    #[error(
        "{host}: interrupted: the server was not reachable before the run's deadline \
         (run_timeout = {run_timeout} s, {tries} attempts): {last}"
    )]
    Unreachable {
        /// This host.
        host: String,
        /// The agent's `run_timeout`.
        run_timeout: u64,
        /// Connection attempts made.
        tries: u32,
        /// The last attempt's failure.
        last: ConnectError,
    },
    /// Reading the server's `current` failed.
    #[error("reading `current` on the server: {0}")]
    ReadCurrent(#[source] io::Error),
    /// The server's `current` holds no generation number.
    #[error("the server's `current` is not a generation number")]
    NotAGeneration,
    /// The report could not be queued in the outbox.
    #[error("queueing the report in {}: {source}", dir.display())]
    Queue {
        /// The state dir.
        dir: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The server offers an older generation than the applied one.
    #[error(
        "the server offers bundle generation {offered}, older than the applied {applied}: \
         refused (downgrade or replay)"
    )]
    Downgrade {
        /// What `current` names.
        offered: u64,
        /// What this host runs.
        applied: u64,
    },
    /// The manifest does not descend from the one this host runs.
    #[error(
        "bundle generation {offered} does not descend from generation {applied} that this host runs: \
         {why}; refused (a fork of the history, or a server that rewrote it: see `bento log`)"
    )]
    NotDescendant {
        /// What `current` names.
        offered: u64,
        /// What this host runs.
        applied: u64,
        /// Where the chain of `previous` links fails.
        why: Descent,
    },
    /// The manifest's signature is not a trusted admin's.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The manifest is not one a host accepts.
    #[error(transparent)]
    Manifest(crate::Error),
    /// The bundle is another host's.
    #[error(
        "the bundle is for host `{bundle}`, not `{host}`: agent.toml's `host` must name this host \
         as the fleet does"
    )]
    WrongHost {
        /// The manifest's host.
        bundle: String,
        /// This host.
        host: String,
    },
    /// The manifest's generation is not the one `current` names.
    #[error("the manifest says bundle generation {manifest}, `current` says {current}")]
    WrongGeneration {
        /// The manifest's generation.
        manifest: u64,
        /// What `current` names.
        current: u64,
    },
    /// A file went past its signed size.
    #[error("{path}: larger than the signed size {size}")]
    TooLarge {
        /// The bundle path.
        path: bento_secrets::names::BundlePath,
        /// Its signed size.
        size: u64,
    },
    /// A file ended before its signed size.
    #[error("{path}: {got} bytes, the signed size is {size}")]
    Short {
        /// The bundle path.
        path: bento_secrets::names::BundlePath,
        /// Bytes received.
        got: u64,
        /// Its signed size.
        size: u64,
    },
    /// A file's content is not the signed one.
    #[error("{path}: SHA-256 differs from the signed manifest")]
    Hash {
        /// The bundle path.
        path: bento_secrets::names::BundlePath,
    },
    /// The server sent what no bundle holds (too large, not a regular file…).
    #[error("{0}")]
    BadDownload(#[source] io::Error),
    /// A download was cut short: the connection or the deadline.
    #[error(
        "downloading {rel}: {source}{}",
        run_timeout.map(|t| format!(" (run_timeout = {t} s)")).unwrap_or_default()
    )]
    Download {
        /// The path on the server.
        rel: String,
        /// The underlying error.
        #[source]
        source: io::Error,
        /// Set when the run's deadline cut it.
        run_timeout: Option<u64>,
    },
    /// Writing the bundle into the state dir failed.
    #[error("{what}: {source}")]
    Install {
        /// What was being written.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Pointing `<state_dir>/current` at the new bundle failed.
    #[error("switching {}: {source}", link.display())]
    Switch {
        /// The `current` symlink.
        link: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// This program's own path, needed to run `bento activate`, is unknown.
    #[error("{0}")]
    CurrentExe(#[source] io::Error),
    /// A configured command (rebuild, activate, self-update) failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// Closure mode: the agent and the bundle disagree on how the host gets its system.
    #[error("{}", mode_mismatch(*agent))]
    ModeMismatch {
        /// agent.toml's `mode`.
        agent: crate::wire::mode::DeployMode,
    },
    /// Closure mode: a path of the system's closure is not in this host's cache on the server.
    #[error(
        "{path} is not in this host's cache on the server (cache/ of its directory): nothing \
         switched; the admin deploys again (`bento deploy`) to give the host its closure"
    )]
    NotInCache {
        /// The store path.
        path: String,
    },
    /// Closure mode: a `.narinfo` of the host's cache is malformed.
    #[error("cache/{name}: {error}")]
    NarInfo {
        /// Its file name.
        name: String,
        /// What is wrong.
        #[source]
        error: crate::wire::narinfo::NarInfoError,
    },
    /// Closure mode: a `.narinfo` describes another path than its name says.
    #[error("cache/{name}: describes {path}, not the path its name is for")]
    NarInfoPath {
        /// Its file name.
        name: String,
        /// The path it describes.
        path: String,
    },
    /// Closure mode: more paths than any system has.
    #[error("the system's closure lacks more than {max} paths here: refused")]
    ClosureTooLarge {
        /// The bound.
        max: usize,
    },
    /// Closure mode: a NAR's size is not what its `.narinfo` says.
    #[error("{rel}: {got} bytes, its .narinfo says {size}")]
    NarSize {
        /// The path on the server.
        rel: String,
        /// Bytes received.
        got: u64,
        /// The size the `.narinfo` gives.
        size: u64,
    },
    /// Closure mode: asking the store which paths it has failed.
    #[error("asking the Nix store which paths it has: {0}")]
    Store(#[source] crate::agent::command::CaptureError),
    /// Closure mode: Nix refused to import the fetched paths (a signature by no pinned
    /// key, a NAR whose hash differs) or failed to.
    #[error("importing the system's closure: {0}; nothing switched")]
    Import(#[source] CommandError),
    /// A health check did not pass within `[health] timeout`: the generation was rolled
    /// back (the system, and the secrets to the previous bundle's).
    #[error(
        "health check failed ({}): {}; rolled back to the previous generation{}",
        failure.check,
        failure.output,
        rollback.as_ref().map(|e| format!(" (the rollback failed too: {e})")).unwrap_or_default()
    )]
    Unhealthy {
        /// The check and what it said.
        failure: crate::wire::report::Unhealthy,
        /// The rollback's own failure, if any.
        rollback: Option<String>,
    },
    /// The server was lost after the switch, so the rollback ran.
    #[error(
        "the server was unreachable after the switch; rolled back{}",
        rollback.as_ref().map(|e| format!(" (the rollback failed too: {e})")).unwrap_or_default()
    )]
    RolledBack {
        /// The rollback's own failure, if any.
        rollback: Option<CommandError>,
    },
}

/// Why a bundle does not suit this host's `mode`.
fn mode_mismatch(agent: crate::wire::mode::DeployMode) -> &'static str {
    match agent {
        crate::wire::mode::DeployMode::Source => {
            "this bundle is for a host in closure mode (it names a built system and carries no \
             configuration): set mode = \"closure\" in agent.toml (services.bento.mode), or \
             publish this host in source mode"
        }
        crate::wire::mode::DeployMode::Closure => {
            "this host is in closure mode, and the bundle names no built system: set mode = \
             \"closure\" for it in bento.toml, run `bento build`, and deploy again"
        }
    }
}

/// Why an offered manifest does not descend from the one a host runs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Descent {
    /// Its history reaches the applied generation (or one below) through another manifest.
    #[error(
        "its history passes generation {generation} through another manifest than the one this host runs"
    )]
    Forked {
        /// The generation where the chains part.
        generation: u64,
    },
    /// Its history ends without reaching the manifest this host runs.
    #[error("its history begins at generation {first} without reaching it")]
    Unrooted {
        /// The oldest generation of its history.
        first: u64,
    },
    /// More generations lie between than a host follows.
    #[error("more than {0} generations lie between")]
    TooFar(usize),
    /// A link of its history does not hold.
    #[error(transparent)]
    Link(crate::wire::history::LinkError),
}

impl AgentError {
    /// The report state of a run that ends with this error. For the errors that stop a
    /// run before it starts (no report is written), the state such a run would have:
    /// `interrupted` for the server's absence, `refused` for what the server or the
    /// configuration holds, `failed` for this host's own files.
    pub fn state(&self) -> State {
        use AgentError::*;
        match self {
            Unreachable { .. } | ReadCurrent(_) | Download { .. } => State::Interrupted,
            Connect(_)
            | NotAGeneration
            | Downgrade { .. }
            | NotDescendant { .. }
            | Signature(_)
            | Manifest(_)
            | WrongHost { .. }
            | WrongGeneration { .. }
            | TooLarge { .. }
            | Short { .. }
            | Hash { .. }
            | BadDownload(_)
            | ModeMismatch { .. }
            | NotInCache { .. }
            | NarInfo { .. }
            | NarInfoPath { .. }
            | ClosureTooLarge { .. }
            | NarSize { .. }
            | Import(_) => State::Refused,
            Local { .. }
            | Lock { .. }
            | StateUnreadable { .. }
            | Queue { .. }
            | Install { .. }
            | Identity { .. }
            | S3Credentials(_)
            | Switch { .. }
            | CurrentExe(_)
            | Store(_)
            | Command(_) => State::Failed,
            RolledBack { .. } | Unhealthy { .. } => State::RolledBack,
        }
    }

    /// A download error: the server's bad input is refused, anything else (a lost
    /// connection, the deadline) interrupts the run, to be retried.
    pub(crate) fn download(rel: &str, e: io::Error, run_timeout: u64) -> Self {
        match e.kind() {
            io::ErrorKind::FileTooLarge | io::ErrorKind::InvalidData => AgentError::BadDownload(e),
            kind => AgentError::Download {
                rel: rel.to_owned(),
                run_timeout: (kind == io::ErrorKind::TimedOut).then_some(run_timeout),
                source: e,
            },
        }
    }

    /// Writing `what` into the state dir failed.
    pub(crate) fn install(what: impl std::fmt::Display, source: io::Error) -> Self {
        AgentError::Install {
            what: what.to_string(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: io::ErrorKind) -> io::Error {
        io::Error::new(kind, "x")
    }

    #[test]
    fn download_errors_refuse_bad_input_and_interrupt_on_the_rest() {
        let e = AgentError::download("generations/3/config/a", io(io::ErrorKind::FileTooLarge), 60);
        assert_eq!(e.state(), State::Refused);
        let e = AgentError::download("generations/3/config/a", io(io::ErrorKind::InvalidData), 60);
        assert_eq!(e.state(), State::Refused);
        let e = AgentError::download("generations/3/config/a", io(io::ErrorKind::TimedOut), 60);
        assert_eq!(e.state(), State::Interrupted);
        assert_eq!(
            e.to_string(),
            "downloading generations/3/config/a: x (run_timeout = 60 s)"
        );
        let e = AgentError::download("generations/3/m", io(io::ErrorKind::ConnectionReset), 60);
        assert_eq!(e.state(), State::Interrupted);
        assert_eq!(e.to_string(), "downloading generations/3/m: x");
    }

    #[test]
    fn each_error_knows_its_report_state() {
        let refused = [
            AgentError::Downgrade {
                offered: 2,
                applied: 3,
            },
            AgentError::WrongHost {
                bundle: "a".into(),
                host: "b".into(),
            },
            AgentError::Hash {
                path: "config/p".parse().unwrap(),
            },
            AgentError::Signature(SignatureError::Untrusted),
            AgentError::NotAGeneration,
        ];
        for e in refused {
            assert_eq!(e.state(), State::Refused, "{e}");
            assert!(!e.state().is_success());
        }
        let failed = [
            AgentError::install("installing x", io(io::ErrorKind::Other)),
            AgentError::Command(CommandError::Stopped {
                what: "rebuild",
                run_timeout: 5,
            }),
        ];
        for e in failed {
            assert_eq!(e.state(), State::Failed, "{e}");
        }
        let rolled = AgentError::RolledBack {
            rollback: Some(CommandError::Stopped {
                what: "rollback",
                run_timeout: 5,
            }),
        };
        assert_eq!(rolled.state(), State::RolledBack);
        assert_eq!(
            rolled.to_string(),
            "the server was unreachable after the switch; rolled back (the rollback failed too: \
             the rollback command was stopped: the run took longer than run_timeout = 5 s)"
        );
        let rolled = AgentError::RolledBack { rollback: None };
        assert_eq!(
            rolled.to_string(),
            "the server was unreachable after the switch; rolled back"
        );
    }

    #[test]
    fn success_is_applied_secrets_updated_or_self_updated() {
        let all = [
            State::Applied,
            State::SecretsUpdated,
            State::SelfUpdated,
            State::Failed,
            State::RolledBack,
            State::Refused,
            State::Interrupted,
        ];
        let ok: Vec<State> = all.into_iter().filter(|s| s.is_success()).collect();
        assert_eq!(ok, [State::Applied, State::SecretsUpdated, State::SelfUpdated]);
    }
}
