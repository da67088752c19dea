//! What a host tells the fleet after each run: a JSON report in its `logs/` directory on
//! the server, named by generation and time, written by the agent and read by status.
//! Reports never carry secret material: names of secrets, never their content.

use serde::{Deserialize, Serialize};

/// The report format this version writes.
pub const FORMAT: u32 = 1;

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// A new configuration was switched to (and its secrets activated).
    Applied,
    /// Only secrets changed: they were activated, no rebuild.
    SecretsUpdated,
    /// The rebuild or the activation failed; the host runs what it ran before.
    Failed,
    /// The switch lost the server, so it was rolled back.
    RolledBack,
    /// The bundle was refused: bad signature, wrong hash, downgrade, bad path.
    Refused,
    /// Nothing was published, and the flake's inputs were updated and switched to.
    SelfUpdated,
    /// The download was cut short (the server went away): nothing applied, retried next run.
    Interrupted,
}

impl State {
    /// Whether the host now runs what the run was about: `applied`, `secrets-updated`
    /// or `self-updated`.
    pub fn is_success(self) -> bool {
        matches!(self, State::Applied | State::SecretsUpdated | State::SelfUpdated)
    }

    /// The state as a report writes it (`rolled-back`): a fleet page names tens of
    /// thousands, so not through serde.
    pub fn name(self) -> &'static str {
        match self {
            State::Applied => "applied",
            State::SecretsUpdated => "secrets-updated",
            State::Failed => "failed",
            State::RolledBack => "rolled-back",
            State::Refused => "refused",
            State::SelfUpdated => "self-updated",
            State::Interrupted => "interrupted",
        }
    }
}

/// One run's report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Always [`FORMAT`].
    pub format: u32,
    /// The host.
    pub host: String,
    /// The generation this run was about.
    pub generation: u64,
    /// The generation applied before the run.
    pub previous_generation: Option<u64>,
    /// How it ended.
    pub state: State,
    /// When it ended, RFC 3339 UTC.
    pub time: String,
    /// The running system before, when known.
    pub system_before: Option<String>,
    /// The running system after, when known.
    pub system_after: Option<String>,
    /// The system the bundle expects (`bento build`), when known.
    pub system_expected: Option<String>,
    /// How long the run took.
    pub duration_ms: u64,
    /// Bytes exchanged with the server.
    pub bytes: u64,
    /// What went wrong, in one line.
    pub error: Option<String>,
    /// Secrets added, changed or removed by the activation (names only): what the
    /// activation recorded it did, not what the bundle asked for.
    pub secrets_changed: Vec<String>,
    /// What else the run has to say (a rebuild that activated no secret, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The switch changed the kernel, initrd or modules: a reboot is due (or was started).
    pub kernel_changed: bool,
    /// The agent's version.
    pub agent: String,
    /// The health check that failed, when the run was rolled back for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Unhealthy>,
}

/// A health check that did not pass within `[health] timeout`: what it was and what it
/// said. Both are the host's words: escaped (one line, no control characters) and bounded
/// when written, and to be escaped again wherever they are shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unhealthy {
    /// The check: `command: <its command line>` or `failed units`.
    pub check: String,
    /// Its first line of output, or the failed units' names.
    pub output: String,
}

impl Report {
    /// The report's file name in `logs/`: sortable by generation and time.
    pub fn file_name(&self) -> String {
        format!(
            "report-{:08}-{}.json",
            self.generation,
            self.time.replace(':', "")
        )
    }

    /// The report as the agent uploads it: pretty JSON.
    pub fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec_pretty(self)
    }
}

/// The generation and time a report's file name carries (see [`Report::file_name`]):
/// status finds the newest report by name, without opening the rest.
pub fn parse_file_name(name: &str) -> Option<(&str, u64)> {
    let rest = name.strip_prefix("report-")?.strip_suffix(".json")?;
    let (generation, time) = rest.split_once('-')?;
    let generation = generation.parse().ok()?;
    (!time.is_empty()).then_some((time, generation))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_sort_by_time_then_generation() {
        assert_eq!(
            parse_file_name("report-00000003-2026-11-26T050000Z.json"),
            Some(("2026-11-26T050000Z", 3))
        );
        for bad in [
            "report-x-2026.json",
            "report-00000001-.json",
            "log-00000001-t.txt.gz",
            "report-1.json",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_states_name_is_what_reports_carry() {
        use State::*;
        for state in [
            Applied,
            SecretsUpdated,
            Failed,
            RolledBack,
            Refused,
            SelfUpdated,
            Interrupted,
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), state.name());
        }
    }
}
