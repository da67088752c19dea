//! `bento agent`: one pull of a host's bundle, from poll to report.
//!
//! 1. One connection; send queued reports and rewrite the heartbeat (`logs/seen.json`);
//!    read `current`. Same generation as applied: stop (a few hundred bytes). A
//!    generation that failed before is not retried until a newer one appears.
//! 2. Download `manifest.json` + `manifest.sig`, check the signature against the pinned
//!    admin keys, the host name, the generation (strictly above the applied one: no
//!    downgrade or replay) and every path; download each file and check its SHA-256.
//! 3. Install into `<state_dir>/bundles/<g>` (staged, fsynced, renamed) and switch the
//!    `<state_dir>/current` symlink.
//! 4. Config changed: run the rebuild (whose activation runs `bento activate`); only
//!    secrets changed: run `bento activate` alone. After a switch, reconnect: if the
//!    server is gone, run the rollback. A failure puts `current` back.
//! 5. Report to `logs/` (queued in the outbox when the upload fails).
//!
//! The whole run has a deadline (`run_timeout`): a download still waiting on the server
//! then fails (`interrupted`), a command still running is stopped (`failed`).

mod apply;
pub mod backoff;
mod bundles;
mod closure;
mod command;
pub mod config;
mod connect;
mod error;
mod fetch;
mod health;
mod reboot;
pub mod report;
mod run_lock;
mod state;
pub mod trigger;

use std::time::{Duration, Instant};

use crate::agent::apply::{current_system, rebuild_target, Run};
use crate::agent::config::AgentConfig;
use crate::agent::connect::connect;
use crate::agent::reboot::reboot_if_due;
use crate::transport::Transport;
use crate::wire::host_dir::{CURRENT_FILE, CURRENT_LIMIT};
use crate::wire::report::{Report, State};
pub use command::{CaptureError, CommandError};
pub use error::{AgentError, Descent};
pub use state::AgentState;

/// What one run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing new on the server.
    UpToDate(u64),
    /// The server has no bundle for this host yet.
    NothingPublished,
    /// A generation that failed before: skipped until a newer one (or `--force`).
    SkippedFailed(u64),
    /// A run happened; its report.
    Ran(Box<Report>),
}

/// Options of one run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Retry a generation that failed.
    pub force: bool,
}

/// Runs one pull.
pub fn run(config: &AgentConfig, opts: &RunOptions) -> Result<Outcome, AgentError> {
    let started = Instant::now();
    let trusted = &config.trusted;
    let local = |source| AgentError::Local {
        path: config.state_dir.clone(),
        source,
    };
    // The deadline counts from the start: a lock held too long ends the run there.
    let deadline = started + Duration::from_secs(config.run_timeout);
    state::prepare_dir(&config.state_dir).map_err(local)?;
    let _lock = run_lock::lock(&config.state_dir, deadline, config.run_timeout)?;
    let mut state = state::load(&config.state_dir)?;
    let mut transport = connect(config, deadline)?;
    // Reports of earlier runs that could not be sent go first, then the heartbeat, sent
    // side by side with the read of `current` (a no-change poll then waits for the server
    // as long as the heartbeat takes, not for both). The reports and the heartbeat are best
    // effort: the run itself does not depend on them.
    let _ = report::flush(&config.state_dir, transport.as_mut());
    let first = match report::heartbeat(&config.host, state.applied, config.ssh_port) {
        Ok(beat) => {
            let write = (crate::wire::heartbeat::heartbeat_path(), beat);
            let read = (CURRENT_FILE, CURRENT_LIMIT);
            transport.write_and_read((&write.0, &write.1), read).1
        }
        Err(_) => transport.read(CURRENT_FILE, CURRENT_LIMIT),
    };
    let current = match crate::transport::current_or_link(transport.as_mut(), first) {
        Ok(bytes) => crate::wire::host_dir::parse_generation(&bytes).ok_or(AgentError::NotAGeneration)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Outcome::NothingPublished),
        Err(e) => return Err(AgentError::ReadCurrent(e)),
    };
    if let Some(pending) = state.recheck.filter(|r| state.applied == Some(r.generation)) {
        let (after, report) = recheck_after_reboot(config, pending, started, deadline, transport.as_mut())?;
        state::save(&config.state_dir, &after).map_err(local)?;
        return Ok(Outcome::Ran(Box::new(report)));
    }
    if Some(current) == state.applied {
        // Up to date, but with what? A `host` changed (mistyped) since is not this bundle's.
        if let Some(installed) = bundles::installed_manifest(&config.state_dir, current) {
            if installed.host.as_str() != config.host {
                return Err(AgentError::WrongHost {
                    bundle: installed.host.to_string(),
                    host: config.host.clone(),
                });
            }
        }
        if config.self_update {
            if let Some(report) = self_update(config, current, started, deadline, transport.as_mut())? {
                return Ok(Outcome::Ran(Box::new(report)));
            }
        }
        return Ok(Outcome::UpToDate(current));
    }
    if Some(current) == state.failed && !opts.force {
        return Ok(Outcome::SkippedFailed(current));
    }

    let mut run = Run::new(config, started, deadline, current, state.applied);
    let (state_after, outcome) = match run.fetch_and_apply(transport.as_mut(), trusted, &state) {
        Ok((s, changed)) => (s, Ok(changed)),
        Err(e) => (e.state(), Err(e)),
    };
    let applied_before = state.applied;
    state = state.after(current, state_after);
    // A new kernel and a reboot to come: the checks are made again once it runs.
    if state_after == State::Applied
        && config.health.any()
        && config.reboot_command().is_some()
        && reboot::kernel_changed(config)
    {
        state.recheck = Some(state::Recheck {
            generation: current,
            previous: applied_before,
        });
        run.note = Some("a new kernel: rebooting; the health checks run again after the reboot".into());
    }
    state::save(&config.state_dir, &state).map_err(local)?;

    let report = conclude(&run, state_after, outcome, transport.as_mut())?;
    Ok(Outcome::Ran(Box::new(report)))
}

/// The first run after a reboot into a generation's new kernel: its health checks again.
/// Passing, the generation is reported applied; failing, the previous bundle is current
/// again, the rollback runs (and, its kernel the old one, the reboot back), and the
/// generation is reported rolled back and not tried again.
fn recheck_after_reboot(
    config: &AgentConfig,
    pending: state::Recheck,
    started: Instant,
    deadline: Instant,
    transport: &mut dyn Transport,
) -> Result<(AgentState, Report), AgentError> {
    let mut run = Run::new(config, started, deadline, pending.generation, pending.previous);
    let Some(failure) = health::check(&config.health, deadline) else {
        run.note = Some("healthy after the reboot into its new kernel".into());
        let state = AgentState {
            applied: Some(pending.generation),
            failed: None,
            recheck: None,
        };
        return Ok((state, conclude(&run, State::Applied, Ok(Vec::new()), transport)?));
    };
    if let Some(previous) = pending.previous {
        let link = config.state_dir.join("current");
        let _ = bento_secrets::atomic::symlink(std::path::Path::new(&format!("bundles/{previous}")), &link);
    }
    let error = AgentError::Unhealthy {
        failure,
        rollback: run.rollback().err().map(|e| e.to_string()),
    };
    let state = AgentState {
        applied: pending.previous,
        failed: Some(pending.generation),
        recheck: None,
    };
    Ok((state, conclude(&run, State::RolledBack, Err(error), transport)?))
}

/// The end of every run that reports: the report, queued and sent, then a reboot when
/// the policy and the kernel call for one.
fn conclude(
    run: &Run,
    state: State,
    outcome: Result<Vec<String>, AgentError>,
    transport: &mut dyn Transport,
) -> Result<Report, AgentError> {
    let report = run.report(state, outcome, transport.bytes_transferred());
    // The report goes out even when the run's deadline has passed, if it can do so soon.
    let grace = REPORT_GRACE.min(Duration::from_secs(run.config.run_timeout));
    transport.set_deadline(Instant::now() + grace);
    send(run.config, &report, &run.log, transport)?;
    reboot_if_due(run.config, &report);
    Ok(report)
}

/// Queues the report and tries to upload it (with anything older still queued).
fn send(
    config: &AgentConfig,
    report: &Report,
    log: &[u8],
    transport: &mut dyn Transport,
) -> Result<(), AgentError> {
    report::queue(&config.state_dir, report, log).map_err(|source| AgentError::Queue {
        dir: config.state_dir.clone(),
        source,
    })?;
    let _ = report::flush(&config.state_dir, transport);
    Ok(())
}

/// How long the report's upload may take once the run is over, its deadline passed or not
/// (at most `run_timeout`).
const REPORT_GRACE: Duration = Duration::from_secs(30);

/// Nothing new was published: with a flake, rebuild with fresh inputs. A report only
/// when the system changed (or the attempt failed).
fn self_update(
    config: &AgentConfig,
    generation: u64,
    started: Instant,
    deadline: Instant,
    transport: &mut dyn Transport,
) -> Result<Option<Report>, AgentError> {
    let config_dir = config.state_dir.join("current").join("config");
    if !config_dir.join("flake.nix").exists() {
        return Ok(None);
    }
    let mut run = Run::new(config, started, deadline, generation, Some(generation));
    let mut extra = rebuild_target(&config_dir, &config.host);
    extra.extend(["--recreate-lock-file".into(), "--no-write-lock-file".into()]);
    let result = run.command("self-update", &config.rebuild, &extra);
    let (state, outcome) = match result {
        Ok(()) if current_system(config) == run.system_before => return Ok(None),
        Ok(()) => (State::SelfUpdated, Ok(Vec::new())),
        Err(e) => (State::Failed, Err(e.into())),
    };
    conclude(&run, state, outcome, transport).map(Some)
}
