//! What the agent remembers between runs, `<state_dir>/state.json`, and how a run's end
//! changes it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::agent::{err, AgentError};

/// What the agent remembers between runs, in `<state_dir>/state.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// The generation applied (installed and switched to).
    pub applied: Option<u64>,
    /// The last generation that failed; not retried until a newer one appears.
    pub failed: Option<u64>,
}

/// The agent's state; none yet on a fresh host. An unreadable state is an error, never
/// taken as "nothing applied": that would lift the refusal of older generations.
pub(super) fn load(state_dir: &Path) -> Result<AgentState, AgentError> {
    let path = state_dir.join("state.json");
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(AgentState::default()),
        Err(e) => return Err(err(format!("{}: {e}", path.display()))),
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        err(format!(
            "{}: unreadable ({e}); restore it, or delete it to accept any generation again",
            path.display()
        ))
    })
}

pub(super) fn save(state_dir: &Path, state: &AgentState) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    bento_secrets::atomic::write_atomic(&state_dir.join("state.json"), &json, 0o600)
}
