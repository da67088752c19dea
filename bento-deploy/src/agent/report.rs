//! Sending what a host tells the fleet: a run's report (see [`crate::wire::report`]) and,
//! when commands ran, its compressed log, into `logs/` on the server. A report that cannot
//! be uploaded waits in `<state_dir>/outbox/` and goes with the next run. Every poll also
//! rewrites the heartbeat ([`crate::wire::heartbeat`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::transport::Transport;
use crate::wire::heartbeat::Heartbeat;
use crate::wire::report::{Report, FORMAT};

/// The outbox of reports not yet uploaded.
pub fn outbox(state_dir: &Path) -> PathBuf {
    state_dir.join("outbox")
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
    heartbeat.to_json().map_err(std::io::Error::other)
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
    let json = report.to_json().map_err(std::io::Error::other)?;
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
pub fn flush(state_dir: &Path, transport: &mut dyn Transport) -> std::io::Result<()> {
    let dir = outbox(state_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
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
    for name in names {
        let path = dir.join(&name);
        let bytes = std::fs::read(&path)?;
        transport.write(&format!("{}/{name}", crate::wire::host_dir::LOGS_DIR), &bytes)?;
        std::fs::remove_file(&path)?;
    }
    Ok(())
}
