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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use ssh_key::PublicKey;

use crate::agent_command::Job;
use crate::agent_config::AgentConfig;
use crate::agent_connect::connect;
use crate::agent_fetch::{Fetch, Step};
use crate::layout::{CURRENT_FILE, CURRENT_LIMIT};
use crate::manifest::{Manifest, MANIFEST_FILE};
use crate::report::{self, Report, State};
use crate::transport::Transport;

/// What the agent remembers between runs, in `<state_dir>/state.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// The generation applied (installed and switched to).
    pub applied: Option<u64>,
    /// The last generation that failed; not retried until a newer one appears.
    pub failed: Option<u64>,
}

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

/// A failure before anything was applied: the run cannot even start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AgentError(pub String);

pub(crate) fn err(msg: impl Into<String>) -> AgentError {
    AgentError(msg.into())
}

/// Runs one pull.
pub fn run(config: &AgentConfig, opts: &RunOptions) -> Result<Outcome, AgentError> {
    let started = Instant::now();
    let trusted = trusted_keys(config)?;
    std::fs::create_dir_all(&config.state_dir)
        .map_err(|e| err(format!("{}: {e}", config.state_dir.display())))?;
    let _lock = lock(&config.state_dir)?;
    // From here: the lock is held, so the run must end.
    let deadline = Instant::now() + Duration::from_secs(config.run_timeout);
    let mut state = load_state(&config.state_dir)?;
    let mut transport = connect(config, deadline)?;
    // Reports of earlier runs that could not be sent go first, then the heartbeat, sent
    // side by side with the read of `current` (a no-change poll then waits for the server
    // as long as the heartbeat takes, not for both). The reports and the heartbeat are best
    // effort: the run itself does not depend on them.
    let _ = report::flush(&config.state_dir, transport.as_mut());
    let read = match report::heartbeat(&config.host, state.applied, config.ssh_port) {
        Ok(beat) => {
            transport
                .write_and_read((&report::heartbeat_path(), &beat), (CURRENT_FILE, CURRENT_LIMIT))
                .1
        }
        Err(_) => transport.read(CURRENT_FILE, CURRENT_LIMIT),
    };
    let current = match read {
        Ok(bytes) => parse_generation(&bytes)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Outcome::NothingPublished),
        Err(e) => return Err(err(format!("reading `current` on the server: {e}"))),
    };
    if Some(current) == state.applied {
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

    let mut run = Run {
        config,
        started,
        deadline,
        generation: current,
        previous: state.applied,
        system_before: current_system(config),
        log: Vec::new(),
    };
    let (state_after, outcome) = match run.fetch_and_apply(transport.as_mut(), &trusted, &state) {
        Ok((s, changed)) => (s, Ok(changed)),
        Err((s, e)) => (s, Err(e)),
    };
    let new_state = match state_after {
        State::Applied | State::SecretsUpdated | State::SelfUpdated => AgentState {
            applied: Some(current),
            failed: None,
        },
        State::Failed | State::RolledBack => AgentState {
            failed: Some(current),
            ..state.clone()
        },
        State::Refused | State::Interrupted => state.clone(),
    };
    state = new_state;
    save_state(&config.state_dir, &state).map_err(|e| err(format!("{}: {e}", config.state_dir.display())))?;

    let report = conclude(&run, state_after, outcome, transport.as_mut())?;
    Ok(Outcome::Ran(Box::new(report)))
}

/// The end of every run that reports: the report, queued and sent, then a reboot when
/// the policy and the kernel call for one.
fn conclude(
    run: &Run,
    state: State,
    outcome: Result<Vec<String>, String>,
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
    report::queue(&config.state_dir, report, log).map_err(|e| {
        err(format!(
            "queueing the report in {}: {e}",
            config.state_dir.display()
        ))
    })?;
    let _ = report::flush(&config.state_dir, transport);
    Ok(())
}

/// How long the report's upload may take once the run is over, its deadline passed or not
/// (at most `run_timeout`).
const REPORT_GRACE: Duration = Duration::from_secs(30);

/// One run at a time (the timer and the trigger may meet).
fn lock(state_dir: &Path) -> Result<std::fs::File, AgentError> {
    let path = state_dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| err(format!("{}: {e}", path.display())))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| err(format!("locking {}: {e}", path.display())))?;
    Ok(file)
}

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
    let mut run = Run {
        config,
        started,
        deadline,
        generation,
        previous: Some(generation),
        system_before: current_system(config),
        log: Vec::new(),
    };
    let mut extra = rebuild_target(&config_dir, &config.host);
    extra.extend(["--recreate-lock-file".into(), "--no-write-lock-file".into()]);
    let result = run.command("self-update", &config.rebuild, &extra);
    let (state, outcome) = match result {
        Ok(()) if current_system(config) == run.system_before => return Ok(None),
        Ok(()) => (State::SelfUpdated, Ok(Vec::new())),
        Err(e) => (State::Failed, Err(e)),
    };
    conclude(&run, state, outcome, transport).map(Some)
}

/// What the rebuild command is given to build this host: `--flake DIR#host` for a flake,
/// else `-I nixos-config=DIR/configuration.nix`.
fn rebuild_target(config_dir: &Path, host: &str) -> Vec<String> {
    if config_dir.join("flake.nix").exists() {
        vec!["--flake".into(), format!("{}#{host}", config_dir.display())]
    } else {
        vec![
            "-I".into(),
            format!("nixos-config={}", config_dir.join("configuration.nix").display()),
        ]
    }
}

/// The parts of a system that need a reboot to take effect.
const BOOT_PARTS: [&str; 3] = ["kernel", "initrd", "kernel-modules"];

/// Did the running system's kernel, initrd or modules move away from the booted ones?
fn kernel_changed(config: &AgentConfig) -> bool {
    BOOT_PARTS.iter().any(|part| {
        let now = std::fs::canonicalize(config.current_system.join(part)).ok();
        let booted = std::fs::canonicalize(config.booted_system.join(part)).ok();
        now.is_some() && booted.is_some() && now != booted
    })
}

/// After the report is out: reboot (kexec) when the policy says so and the kernel changed.
fn reboot_if_due(config: &AgentConfig, report: &Report) {
    if !report.kernel_changed {
        return;
    }
    if let Some(command) = config.reboot_command() {
        let mut words = command.split_whitespace();
        if let Some(program) = words.next() {
            eprintln!("bento: the kernel changed; running `{command}`");
            let _ = Command::new(program).args(words).status();
        }
    }
}

fn trusted_keys(config: &AgentConfig) -> Result<Vec<PublicKey>, AgentError> {
    config
        .trusted_keys
        .iter()
        .map(|line| crate::agent_config::trusted_key(line).map_err(|e| err(format!("trusted_keys: {e}"))))
        .collect()
}

fn parse_generation(bytes: &[u8]) -> Result<u64, AgentError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| err("the server's `current` is not a generation number"))
}

/// One run about generation `generation`.
struct Run<'a> {
    config: &'a AgentConfig,
    started: Instant,
    /// Commands still running then are stopped.
    deadline: Instant,
    generation: u64,
    previous: Option<u64>,
    /// The running system when the run started.
    system_before: Option<String>,
    /// Output of the commands run (rebuild, activate, rollback).
    log: Vec<u8>,
}

/// What changed between the applied bundle and the new one.
#[derive(Default)]
struct Changes {
    config: bool,
    secrets: Vec<String>,
}

impl Run<'_> {
    fn fetch_and_apply(
        &mut self,
        transport: &mut dyn Transport,
        trusted: &[PublicKey],
        state: &AgentState,
    ) -> Result<(State, Vec<String>), (State, String)> {
        let manifest = self.fetch(transport, trusted, state)?;
        let old = state
            .applied
            .and_then(|g| installed_manifest(&self.config.state_dir, g));
        let changes = diff(old.as_ref(), &manifest);
        let previous_link = std::fs::read_link(self.current_link()).ok();
        self.switch_current().map_err(|e| (State::Failed, e))?;

        // On failure, `current` names what it named before (or nothing, as before).
        let restore = |run: &Self| {
            let _ = match &previous_link {
                Some(target) => bento_secrets::atomic::symlink(target, &run.current_link()),
                None => std::fs::remove_file(run.current_link()),
            };
        };
        if changes.config {
            if let Err(e) = self.rebuild() {
                restore(self);
                return Err((State::Failed, e));
            }
            if !self.server_reachable() {
                // The rollback puts the host back: it gets a full run_timeout of its own.
                let deadline = Instant::now() + Duration::from_secs(self.config.run_timeout);
                let rolled = self.command_until("rollback", &self.config.rollback.clone(), &[], deadline);
                restore(self);
                let how = rolled
                    .err()
                    .map_or(String::new(), |e| format!(" (the rollback failed too: {e})"));
                return Err((
                    State::RolledBack,
                    format!("the server was unreachable after the switch; rolled back{how}"),
                ));
            }
            Ok((State::Applied, changes.secrets))
        } else if !changes.secrets.is_empty() || old.is_none() {
            if let Err(e) = self.activate() {
                restore(self);
                return Err((State::Failed, e));
            }
            Ok((State::SecretsUpdated, changes.secrets))
        } else {
            Ok((State::Applied, Vec::new())) // same content under a new number: nothing to run
        }
    }

    /// Downloads and checks generation `self.generation` into `<state_dir>/bundles/<g>`.
    fn fetch(&mut self, t: &mut dyn Transport, trusted: &[PublicKey], state: &AgentState) -> Step<Manifest> {
        let bundles = self.config.state_dir.join("bundles");
        let manifest = Fetch {
            bundles: &bundles,
            host: &self.config.host,
            generation: self.generation,
            applied: state.applied,
            trusted,
            run_timeout: self.config.run_timeout,
        }
        .run(t)?;
        prune_bundles(&bundles, self.config.keep_bundles, self.generation, state.applied);
        Ok(manifest)
    }

    fn current_link(&self) -> PathBuf {
        self.config.state_dir.join("current")
    }

    fn switch_current(&self) -> Result<(), String> {
        bento_secrets::atomic::symlink(
            Path::new(&format!("bundles/{}", self.generation)),
            &self.current_link(),
        )
        .map_err(|e| format!("switching {}: {e}", self.current_link().display()))
    }

    /// The rebuild command with `--flake …#host` or `-I nixos-config=…` appended.
    fn rebuild(&mut self) -> Result<(), String> {
        let extra = rebuild_target(&self.current_link().join("config"), &self.config.host);
        self.command("rebuild", &self.config.rebuild.clone(), &extra)
    }

    /// Activates the new bundle's secrets without a rebuild: the configured `activate`
    /// command, or this binary's `activate` for the users phase, then for the other
    /// secrets, both with the configured identity. Both phases run even when the first
    /// fails; the first failure is the run's error.
    fn activate(&mut self) -> Result<(), String> {
        if let Some(command) = self.config.activate.clone() {
            return self.command("activate", &command, &[]);
        }
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let base = format!(
            "{} activate --bundle {} --root {} -i {}",
            exe.display(),
            self.current_link().display(),
            self.config.secrets_root.display(),
            self.config.identity.display()
        );
        let users = self.command("activate", &format!("{base} --phase users"), &[]);
        let secrets = self.command("activate", &base, &[]);
        users.and(secrets)
    }

    /// Runs a configured command line (split on whitespace) until the run's deadline: its
    /// output is shown live on stderr and kept for the log.
    fn command(&mut self, what: &str, line: &str, extra: &[String]) -> Result<(), String> {
        self.command_until(what, line, extra, self.deadline)
    }

    fn command_until(
        &mut self,
        what: &str,
        line: &str,
        extra: &[String],
        deadline: Instant,
    ) -> Result<(), String> {
        Job {
            what,
            line,
            extra,
            deadline,
            run_timeout: self.config.run_timeout,
        }
        .run(&mut self.log)
    }

    /// After a switch: can this host still reach its server? Asked with a deadline of its
    /// own: the run's may have passed during a long rebuild, and that must not pass for a
    /// lost server.
    fn server_reachable(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(self.config.connect_timeout) + REPORT_GRACE;
        connect(self.config, deadline)
            .and_then(|mut t| {
                t.read(CURRENT_FILE, CURRENT_LIMIT)
                    .map_err(|e| err(e.to_string()))
            })
            .is_ok()
    }

    fn report(&self, state: State, outcome: Result<Vec<String>, String>, bytes: u64) -> Report {
        let system_after = current_system(self.config);
        let expected = installed_manifest(&self.config.state_dir, self.generation).and_then(|m| m.system);
        let (secrets_changed, error) = match outcome {
            Ok(names) => (names, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        Report {
            format: report::FORMAT,
            host: self.config.host.clone(),
            generation: self.generation,
            previous_generation: self.previous,
            state,
            time: crate::manifest::now_rfc3339(),
            system_before: self.system_before.clone(),
            system_after,
            system_expected: expected,
            duration_ms: self.started.elapsed().as_millis() as u64,
            bytes,
            error,
            secrets_changed,
            kernel_changed: matches!(state, State::Applied | State::SelfUpdated)
                && kernel_changed(self.config),
            agent: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// What changed: config files or the expected system; which secrets.
fn diff(old: Option<&Manifest>, new: &Manifest) -> Changes {
    let config_files = |m: &Manifest| -> BTreeMap<String, String> {
        m.files
            .iter()
            .filter(|(p, _)| p.starts_with("config/"))
            .map(|(p, h)| (p.clone(), h.clone()))
            .collect()
    };
    let Some(old) = old else {
        return Changes {
            config: true,
            secrets: new.secrets.iter().map(|s| s.name.clone()).collect(),
        };
    };
    let config = config_files(old) != config_files(new) || old.system != new.system;
    let mut secrets: Vec<String> = Vec::new();
    for s in &new.secrets {
        if !old.secrets.contains(s) {
            secrets.push(s.name.clone());
        }
    }
    for s in &old.secrets {
        if !new.secrets.iter().any(|n| n.name == s.name) {
            secrets.push(s.name.clone());
        }
    }
    // A template is rendered by `bento activate` too: its changes are named `templates/<name>`.
    for t in &new.templates {
        if !old.templates.contains(t) {
            secrets.push(format!("templates/{}", t.name));
        }
    }
    for t in &old.templates {
        if !new.templates.iter().any(|n| n.name == t.name) {
            secrets.push(format!("templates/{}", t.name));
        }
    }
    Changes { config, secrets }
}

fn installed_manifest(state_dir: &Path, g: u64) -> Option<Manifest> {
    let bytes = std::fs::read(state_dir.join("bundles").join(g.to_string()).join(MANIFEST_FILE)).ok()?;
    Manifest::parse(&bytes).ok()
}

/// The running system (the `current_system` symlink's target), when known.
fn current_system(config: &AgentConfig) -> Option<String> {
    std::fs::read_link(&config.current_system)
        .ok()
        .map(|p| p.display().to_string())
}

/// Keeps the newest `keep` bundles, and always the current and the applied one.
fn prune_bundles(bundles: &Path, keep: usize, current: u64, applied: Option<u64>) {
    let Ok(entries) = std::fs::read_dir(bundles) else {
        return;
    };
    let mut gens: Vec<u64> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    gens.sort_unstable();
    let cut = gens.len().saturating_sub(keep.max(1));
    for g in &gens[..cut] {
        if *g != current && Some(*g) != applied {
            let _ = std::fs::remove_dir_all(bundles.join(g.to_string()));
        }
    }
}

/// The agent's state; none yet on a fresh host. An unreadable state is an error, never
/// taken as "nothing applied": that would lift the refusal of older generations.
fn load_state(state_dir: &Path) -> Result<AgentState, AgentError> {
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

fn save_state(state_dir: &Path, state: &AgentState) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    bento_secrets::atomic::write_atomic(&state_dir.join("state.json"), &json, 0o600)
}
