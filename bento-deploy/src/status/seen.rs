//! `bento status`: reading a host's heartbeat, `logs/seen.json` — when it last polled, and
//! where it says it can be reached (checked: the host writes the file).

use crate::server_dir::ServerDir;
use crate::status::host_file::{limits, read_file, Content, Problem};
use crate::time::parse_rfc3339;
use crate::wire::heartbeat::{Claimed, HEARTBEAT_FILE};
use crate::wire::host_dir::LOGS_DIR;

/// A heartbeat, checked.
pub(crate) struct Seen {
    /// When the host says it last polled (seconds since the epoch).
    pub(crate) secs: u64,
    /// Its reachable IP addresses.
    pub(crate) addresses: Vec<String>,
    /// Its sshd port.
    pub(crate) ssh_port: Option<u16>,
}

/// The host's heartbeat; `Ok(None)` when it has none (an agent that predates heartbeats).
pub(crate) fn read_heartbeat(dir: &dyn ServerDir, host: &str) -> Result<Option<Seen>, Problem> {
    let rel = format!("{LOGS_DIR}/{HEARTBEAT_FILE}");
    let Some(bytes) = read_file(dir, &rel, limits::HEARTBEAT)? else {
        return Ok(None);
    };
    let bad = |content| {
        Problem::Heartbeat(Box::new(Problem::Content {
            rel: rel.clone(),
            content,
        }))
    };
    let beat: Claimed = serde_json::from_slice(&bytes).map_err(|e| bad(Content::json("a heartbeat", &e)))?;
    if beat.host != host {
        return Err(bad(Content::HeartbeatOfAnotherHost));
    }
    let secs = parse_rfc3339(&beat.time).ok_or_else(|| bad(Content::NotRfc3339))?;
    Ok(Some(Seen {
        secs,
        addresses: crate::reach::valid_addresses(&beat.addresses),
        ssh_port: crate::reach::valid_port(&beat.ssh_port),
    }))
}
