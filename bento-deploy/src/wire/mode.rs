//! How a host gets its system, as `bento.toml` (`[deploy] mode`, `[hosts.NAME] mode`) and
//! the host's agent.toml (`mode`) both say it.

use serde::{Deserialize, Serialize};

/// How a host gets its system.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeployMode {
    /// The bundle carries the configuration's sources; the host evaluates and builds them
    /// (`nixos-rebuild`).
    #[default]
    Source,
    /// The bundle names the system the admin built and signed; the host fetches the store
    /// paths it lacks from its own cache on the server and switches to it, building nothing.
    Closure,
}

impl DeployMode {
    /// The mode a bundle was published for: closure when it names a system and carries no
    /// configuration sources.
    pub fn of_bundle(has_config: bool, has_system: bool) -> DeployMode {
        match (has_config, has_system) {
            (false, true) => DeployMode::Closure,
            _ => DeployMode::Source,
        }
    }

    /// As written in the files: `source` or `closure`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeployMode::Source => "source",
            DeployMode::Closure => "closure",
        }
    }
}

impl std::fmt::Display for DeployMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
