//! The run lock: one run at a time on a host (the timer and the trigger may meet).

use std::path::Path;

use crate::agent::error::AgentError;

/// One run at a time (the timer and the trigger may meet).
pub(super) fn lock(state_dir: &Path) -> Result<std::fs::File, AgentError> {
    let path = state_dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| AgentError::Local {
            path: path.clone(),
            source,
        })?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).map_err(|e| AgentError::Lock {
        path: path.clone(),
        source: e.into(),
    })?;
    Ok(file)
}
