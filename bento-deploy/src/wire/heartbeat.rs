//! The heartbeat, `logs/seen.json`: rewritten by every poll of the agent, even when nothing
//! changed, so `bento status` can tell an idle, healthy host from one that stopped polling.

use serde::{Deserialize, Serialize};

use crate::wire::host_dir::LOGS_DIR;

/// The heartbeat's file name in `logs/` (not a report name: status lists reports by their
/// `report-` prefix).
pub const HEARTBEAT_FILE: &str = "seen.json";

/// Where the heartbeat goes, relative to the host's directory.
pub fn heartbeat_path() -> String {
    format!("{LOGS_DIR}/{HEARTBEAT_FILE}")
}

/// What a host says at every poll: that it polled, when, what it runs, and where it
/// listens for ssh. The type parameters are the fields' types as the agent writes them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat<
    Format = u32,
    Applied = Option<u64>,
    Agent = String,
    Addresses = Vec<String>,
    Port = Option<u16>,
> {
    /// [`crate::wire::report::FORMAT`].
    #[serde(default)]
    pub format: Format,
    /// The host.
    pub host: String,
    /// When it polled, RFC 3339 UTC (the host's clock).
    pub time: String,
    /// The generation it had applied when it polled.
    #[serde(default)]
    pub applied: Applied,
    /// The agent's version.
    #[serde(default)]
    pub agent: Agent,
    /// The host's IP addresses, loopback and link-local left out (see
    /// [`crate::reach::local_addresses`]); empty from an agent that predates them.
    #[serde(default)]
    pub addresses: Addresses,
    /// Its sshd port (`ssh_port` of agent.toml).
    #[serde(default)]
    pub ssh_port: Port,
}

impl Heartbeat {
    /// The heartbeat as the agent uploads it: compact JSON, a few hundred bytes.
    pub fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(self)
    }
}

/// A heartbeat as status reads it: the host wrote it, so all but `host` and `time` stay
/// JSON, to be checked one by one ([`crate::reach`]).
pub type Claimed =
    Heartbeat<serde_json::Value, serde_json::Value, serde_json::Value, serde_json::Value, serde_json::Value>;
