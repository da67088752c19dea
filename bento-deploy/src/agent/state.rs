//! What the agent remembers between runs, `<state_dir>/state.json`, and how a run's end
//! changes it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::agent::error::AgentError;
use crate::agent::report::State;

/// What the agent remembers between runs, in `<state_dir>/state.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// The generation applied (installed and switched to).
    pub applied: Option<u64>,
    /// The last generation that failed; not retried until a newer one appears.
    pub failed: Option<u64>,
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
    };

    #[test]
    fn a_success_applies_and_clears_the_failure() {
        for state in [State::Applied, State::SecretsUpdated, State::SelfUpdated] {
            let after = BEFORE.after(5, state);
            assert_eq!(
                after,
                AgentState {
                    applied: Some(5),
                    failed: None
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
                    failed: Some(5)
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
