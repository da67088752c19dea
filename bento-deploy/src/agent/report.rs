//! What a host tells the fleet after each run: a JSON report (and, when commands ran, a
//! compressed log) in its `logs/` directory on the server. A report that cannot be
//! uploaded waits in `<state_dir>/outbox/` and goes with the next run.
//!
//! Every poll also rewrites a small heartbeat, `logs/seen.json`, even when nothing
//! changed, so `bento status` can tell an idle, healthy host from one that stopped
//! polling.
//!
//! Reports never carry secret material: names of secrets, never their content.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::transport::Transport;

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
}

/// The outbox of reports not yet uploaded.
pub fn outbox(state_dir: &Path) -> PathBuf {
    state_dir.join("outbox")
}

/// The heartbeat's file name in `logs/` (not a report name: status lists reports by their
/// `report-` prefix).
pub const HEARTBEAT_FILE: &str = "seen.json";

/// What a host says at every poll: that it polled, when, what it runs, and where it
/// listens for ssh.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// [`FORMAT`].
    pub format: u32,
    /// The host.
    pub host: String,
    /// When it polled, RFC 3339 UTC (the host's clock).
    pub time: String,
    /// The generation it had applied when it polled.
    pub applied: Option<u64>,
    /// The agent's version.
    pub agent: String,
    /// The host's IP addresses, loopback and link-local left out (see
    /// [`crate::reach::local_addresses`]); empty from an agent that predates them.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Its sshd port (`ssh_port` of agent.toml).
    #[serde(default)]
    pub ssh_port: Option<u16>,
}

/// Where the heartbeat goes, relative to the host's directory.
pub fn heartbeat_path() -> String {
    format!("{}/{HEARTBEAT_FILE}", crate::layout::LOGS_DIR)
}

/// The heartbeat of this poll, as JSON: a few hundred bytes, rewritten in `logs/` by
/// every poll, with the host's current addresses and sshd port so an admin can reach it
/// (`bento ssh`).
pub fn heartbeat(host: &str, applied: Option<u64>, ssh_port: u16) -> std::io::Result<Vec<u8>> {
    let heartbeat = Heartbeat {
        format: FORMAT,
        host: host.to_owned(),
        time: crate::time::now_rfc3339(),
        applied,
        agent: env!("CARGO_PKG_VERSION").to_owned(),
        addresses: crate::reach::local_addresses(),
        ssh_port: Some(ssh_port),
    };
    serde_json::to_vec(&heartbeat).map_err(std::io::Error::other)
}

/// Queues a report (and its log) in the outbox.
pub fn queue(state_dir: &Path, report: &Report, log: &[u8]) -> std::io::Result<()> {
    let dir = outbox(state_dir);
    // 0700: report names and logs are root's alone.
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700).create(&dir)?;
    let name = report.file_name();
    if !log.is_empty() {
        bento_secrets::atomic::write_atomic(&dir.join(log_name(&name)), &gzip(log)?, 0o600)?;
    }
    let json = serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?;
    bento_secrets::atomic::write_atomic(&dir.join(&name), &json, 0o600)
}

fn log_name(report_name: &str) -> String {
    report_name.replace("report-", "log-").replace(".json", ".txt.gz")
}

fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes)?;
    enc.finish()
}

/// Uploads every queued report and log to `logs/`, oldest first; what was uploaded is
/// removed from the outbox. Stops at the first failure (the rest waits).
pub fn flush(state_dir: &Path, transport: &mut dyn Transport) -> std::io::Result<usize> {
    let dir = outbox(state_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(0);
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    // Logs before their report, so a report never names a log that is not there yet.
    names.sort_by_key(|n| {
        (
            n.replace("log-", "report-").replace(".txt.gz", ".json"),
            n.starts_with("report-"),
        )
    });
    let mut sent = 0;
    for name in names {
        let path = dir.join(&name);
        let bytes = std::fs::read(&path)?;
        transport.write(&format!("{}/{name}", crate::layout::LOGS_DIR), &bytes)?;
        std::fs::remove_file(&path)?;
        sent += 1;
    }
    Ok(sent)
}
