//! What the agent remembers between runs, `<state_dir>/state.json`, and how a run's end
//! changes it; the state directory itself, root's alone.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use rustix::fs::{Mode, OFlags, CWD};
use rustix::io::Errno;

use serde::{Deserialize, Serialize};

use crate::agent::error::AgentError;
use crate::wire::report::State;

/// What the agent remembers between runs, in `<state_dir>/state.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// The generation applied (installed and switched to).
    pub applied: Option<u64>,
    /// The last generation that failed; not retried until a newer one appears.
    pub failed: Option<u64>,
    /// A generation applied with a new kernel, whose health is to be checked again once the
    /// host runs that kernel (after the reboot the run started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recheck: Option<Recheck>,
}

/// A health check due after a reboot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recheck {
    /// The generation applied before the reboot.
    pub generation: u64,
    /// The one applied before it, to go back to when the check fails.
    pub previous: Option<u64>,
}

impl AgentState {
    /// The state after a run about `generation` that ended in `state`: a success makes
    /// it the applied one; a failure or a rollback marks it failed (not retried until a
    /// newer one, or `--force`); a refusal or an interruption changes nothing, so the
    /// next run tries again.
    pub fn after(&self, generation: u64, state: State) -> AgentState {
        match state {
            s if s.is_success() => AgentState {
                applied: Some(generation),
                failed: None,
                recheck: None,
            },
            State::Failed | State::RolledBack => AgentState {
                failed: Some(generation),
                ..self.clone()
            },
            _ => self.clone(),
        }
    }
}

/// The agent's state; none yet on a fresh host. An unreadable state is an error, never
/// taken as "nothing applied": that would lift the refusal of older generations.
pub(super) fn load(state_dir: &Path) -> Result<AgentState, AgentError> {
    let path = state_dir.join("state.json");
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(AgentState::default()),
        Err(source) => return Err(AgentError::Local { path, source }),
    };
    serde_json::from_slice(&bytes).map_err(|source| AgentError::StateUnreadable { path, source })
}

/// The directories under the state dir that hold what a local user must not see (the
/// installed bundles' secret names, the queued reports).
const PRIVATE_DIRS: [&str; 2] = ["bundles", "outbox"];

/// Creates the state dir 0700, or makes an existing one 0700 (older versions left it,
/// `bundles/` and `outbox/` 0755: any local user could list the secrets' names); the same
/// for `bundles/` and `outbox/`. A state dir owned by another user is refused.
pub(super) fn prepare_dir(state_dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)?;
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let dir = rustix::fs::openat(CWD, state_dir, flags, Mode::empty())?;
    let me = rustix::process::geteuid().as_raw();
    let owner = rustix::fs::fstat(&dir)?.st_uid;
    if owner != me {
        return Err(std::io::Error::other(format!(
            "owned by uid {owner}, not by the agent (uid {me}); give it to the agent's user or \
             set another state_dir"
        )));
    }
    rustix::fs::fchmod(&dir, Mode::from_raw_mode(0o700))?;
    for name in PRIVATE_DIRS {
        match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        let sub = rustix::fs::openat(&dir, name, flags | OFlags::NOFOLLOW, Mode::empty())?;
        rustix::fs::fchmod(&sub, Mode::from_raw_mode(0o700))?;
    }
    Ok(())
}

pub(super) fn save(state_dir: &Path, state: &AgentState) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    bento_secrets::atomic::write_atomic(&state_dir.join("state.json"), &json, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: AgentState = AgentState {
        applied: Some(3),
        failed: Some(4),
        recheck: None,
    };

    #[test]
    fn a_success_applies_and_clears_the_failure() {
        for state in [State::Applied, State::SecretsUpdated, State::SelfUpdated] {
            let after = BEFORE.after(5, state);
            assert_eq!(
                after,
                AgentState {
                    applied: Some(5),
                    failed: None,
                    recheck: None,
                },
                "{state:?}"
            );
        }
    }

    #[test]
    fn a_failure_or_rollback_marks_the_generation_and_keeps_the_applied_one() {
        for state in [State::Failed, State::RolledBack] {
            let after = BEFORE.after(5, state);
            assert_eq!(
                after,
                AgentState {
                    applied: Some(3),
                    failed: Some(5),
                    recheck: None,
                },
                "{state:?}"
            );
        }
    }

    #[test]
    fn a_refusal_or_interruption_changes_nothing_so_the_next_run_tries_again() {
        for state in [State::Refused, State::Interrupted] {
            assert_eq!(BEFORE.after(5, state), BEFORE, "{state:?}");
        }
    }

    #[test]
    fn the_state_dir_and_its_private_dirs_become_0700() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("var-bento");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        // An older install: everything 0755.
        for p in [state.clone(), state.join("bundles"), state.join("outbox")] {
            std::fs::create_dir_all(&p).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        prepare_dir(&state).unwrap();
        for p in [state.clone(), state.join("bundles"), state.join("outbox")] {
            assert_eq!(mode(&p), 0o700, "{}", p.display());
        }
        // A fresh one is made 0700 at once.
        let fresh = dir.path().join("fresh/state");
        prepare_dir(&fresh).unwrap();
        assert_eq!((mode(&fresh), mode(&fresh.join("outbox"))), (0o700, 0o700));
    }

    #[test]
    fn a_missing_state_is_empty_and_an_unreadable_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), AgentState::default());
        save(dir.path(), &BEFORE).unwrap();
        assert_eq!(load(dir.path()).unwrap(), BEFORE);
        std::fs::write(dir.path().join("state.json"), "{").unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(matches!(e, AgentError::StateUnreadable { .. }), "{e}");
        assert!(
            e.to_string().contains("delete it to accept any generation again"),
            "{e}"
        );
    }
}
