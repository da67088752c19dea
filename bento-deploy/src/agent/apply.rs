//! One run about one generation: fetch it, switch `current`, run the rebuild or the
//! activation, roll back when the server is lost after a switch, and the run's report.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bento_secrets::activate::{in_force, Record};
use ssh_key::PublicKey;

use crate::agent::bundles::{self, diff, installed_manifest};
use crate::agent::command::{CommandError, Job};
use crate::agent::config::{AgentConfig, CommandLine};
use crate::agent::connect::connect;
use crate::agent::error::AgentError;
use crate::agent::fetch::Fetch;
use crate::agent::health;
use crate::agent::reboot::kernel_changed;
use crate::agent::state::AgentState;
use crate::store_path::StorePath;
use crate::transport::Transport;
use crate::wire::manifest::Manifest;
use crate::wire::mode::DeployMode;
use crate::wire::report::{self, Report, State};

/// How long, beyond `connect_timeout`, the server may stay unreachable after a switch
/// before the switch is rolled back.
const REACHABLE_BUDGET: Duration = Duration::from_secs(120);

/// The names that went live since `before` was read ([`in_force`] under `root`): those
/// of every family whose generation moved; `None` when no activation ran in between.
fn went_live(before: &[Option<(u64, Record)>; 2], root: &Path) -> Option<Vec<String>> {
    let moved: Vec<Record> = before
        .iter()
        .zip(in_force(root))
        .filter_map(|(b, a)| a.filter(|(n, _)| b.as_ref().map(|(m, _)| m) != Some(n)))
        .map(|(_, record)| record)
        .collect();
    let names: std::collections::BTreeSet<String> = moved.iter().flat_map(Record::names).collect();
    (!moved.is_empty()).then(|| names.into_iter().collect())
}

/// One run about generation `generation`.
pub(super) struct Run<'a> {
    pub config: &'a AgentConfig,
    pub started: Instant,
    /// Commands still running then are stopped.
    pub deadline: Instant,
    pub generation: u64,
    pub previous: Option<u64>,
    /// The running system when the run started.
    pub system_before: Option<String>,
    /// Output of the commands run (rebuild, activate, rollback).
    pub log: Vec<u8>,
    /// Something the report should say beside its state (a rebuild that activated no
    /// secret, say).
    pub note: Option<String>,
}

impl<'a> Run<'a> {
    /// A run about `generation` (the applied one before it: `previous`), its report yet
    /// to be written.
    pub(super) fn new(
        config: &'a AgentConfig,
        started: Instant,
        deadline: Instant,
        generation: u64,
        previous: Option<u64>,
    ) -> Run<'a> {
        Run {
            config,
            started,
            deadline,
            generation,
            previous,
            system_before: current_system(config),
            log: Vec::new(),
            note: None,
        }
    }
}

impl Run<'_> {
    pub(super) fn fetch_and_apply(
        &mut self,
        transport: &mut dyn Transport,
        trusted: &[PublicKey],
        state: &AgentState,
    ) -> Result<(State, Vec<String>), AgentError> {
        let manifest = self.fetch(transport, trusted, state)?;
        let old = state
            .applied
            .and_then(|g| installed_manifest(&self.config.state_dir, g));
        let changes = diff(old.as_ref(), &manifest);
        let system = self.closure_system(&manifest)?;
        // Closure mode: the whole system is in this store before anything switches.
        if let (Some(system), true) = (&system, changes.config) {
            let fetched = self.fetch_closure(transport, system)?;
            if fetched.paths > 0 {
                self.note = Some(format!(
                    "{} store path{} fetched",
                    fetched.paths,
                    if fetched.paths == 1 { "" } else { "s" }
                ));
            }
        }
        let previous_link = std::fs::read_link(self.current_link()).ok();
        self.switch_current()?;

        // On failure, `current` names what it named before (or nothing, as before).
        let restore = |run: &Self| {
            let _ = match &previous_link {
                Some(target) => bento_secrets::atomic::symlink(target, &run.current_link()),
                None => std::fs::remove_file(run.current_link()),
            };
        };
        let before = in_force(&self.config.secrets_root);
        if changes.config {
            let switched = match &system {
                Some(system) => self.switch_system(system),
                None => self.rebuild().map_err(AgentError::from),
            };
            if let Err(e) = switched {
                restore(self);
                return Err(e);
            }
            if !self.server_reachable() {
                let rolled = self.rollback();
                restore(self);
                return Err(AgentError::RolledBack {
                    rollback: rolled.err(),
                });
            }
            // Services install the secrets: the switch reran them only if their units
            // changed. A failure here is the run's (the switch stays: no restore).
            if self.config.activate_after_rebuild && !changes.secrets.is_empty() {
                self.activate()?;
            }
            if let Some(failure) = health::check(&self.config.health, self.deadline) {
                // The previous bundle is current again before the system's rollback, whose
                // activation installs its secrets.
                restore(self);
                return Err(AgentError::Unhealthy {
                    failure,
                    rollback: self.rollback().err().map(|e| e.to_string()),
                });
            }
            // The rebuild's activation decrypts the secrets (the NixOS module runs `bento
            // activate`): what went live is what its records say, not what was expected.
            let live = went_live(&before, &self.config.secrets_root);
            if live.is_none() && !changes.secrets.is_empty() {
                self.note = Some(format!(
                    "the rebuild activated no secret (no `bento activate` ran under {}): {} changed \
                     secret{} not live; on NixOS enable services.bento, elsewhere set `activate` \
                     and a rebuild that runs it",
                    self.config.secrets_root.display(),
                    changes.secrets.len(),
                    if changes.secrets.len() == 1 {
                        " is"
                    } else {
                        "s are"
                    }
                ));
            }
            Ok((State::Applied, live.unwrap_or_default()))
        } else if !changes.secrets.is_empty() || old.is_none() {
            let result = self.activate();
            let live = went_live(&before, &self.config.secrets_root);
            if let Err(e) = result {
                restore(self);
                return Err(e);
            }
            if let Some(failure) = health::check(&self.config.health, self.deadline) {
                // The previous bundle's secrets, activated again (their units restarted).
                restore(self);
                let rollback = match previous_link.is_some() {
                    true => self.activate().err().map(|e| e.to_string()),
                    false => None,
                };
                return Err(AgentError::Unhealthy { failure, rollback });
            }
            // A configured `activate` command that records nothing (not bento's): as expected.
            Ok((State::SecretsUpdated, live.unwrap_or(changes.secrets)))
        } else {
            Ok((State::Applied, Vec::new())) // same content under a new number: nothing to run
        }
    }

    /// The system a closure-mode host switches to (`None` in source mode); a bundle that
    /// does not suit this host's mode is refused.
    fn closure_system(&self, manifest: &Manifest) -> Result<Option<StorePath>, AgentError> {
        let has_config = manifest.files.keys().any(|p| p.starts_with("config/"));
        match (self.config.mode, &manifest.system) {
            (DeployMode::Closure, Some(system)) => StorePath::parse(system).map(Some).map_err(|e| {
                AgentError::Manifest(crate::Error::input(
                    "manifest.json",
                    format!("system `{system}`: {e}"),
                ))
            }),
            (DeployMode::Closure, None) => Err(AgentError::ModeMismatch {
                agent: DeployMode::Closure,
            }),
            (DeployMode::Source, Some(_)) if !has_config => Err(AgentError::ModeMismatch {
                agent: DeployMode::Source,
            }),
            (DeployMode::Source, _) => Ok(None),
        }
    }

    /// Downloads and checks generation `self.generation` into `<state_dir>/bundles/<g>`.
    fn fetch(
        &mut self,
        t: &mut dyn Transport,
        trusted: &[PublicKey],
        state: &AgentState,
    ) -> Result<Manifest, AgentError> {
        let bundles = self.config.state_dir.join("bundles");
        let manifest = Fetch {
            bundles: &bundles,
            host: &self.config.host,
            generation: self.generation,
            applied: state.applied,
            running: state
                .applied
                .and_then(|g| bundles::running(&self.config.state_dir, g)),
            trusted,
            required_signatures: self.config.required_signatures,
            run_timeout: self.config.run_timeout,
        }
        .run(t)?;
        bundles::prune(&bundles, self.config.keep_bundles, self.generation, state.applied);
        Ok(manifest)
    }

    fn current_link(&self) -> PathBuf {
        self.config.state_dir.join("current")
    }

    fn switch_current(&self) -> Result<(), AgentError> {
        bento_secrets::atomic::symlink(
            Path::new(&format!("bundles/{}", self.generation)),
            &self.current_link(),
        )
        .map_err(|source| AgentError::Switch {
            link: self.current_link(),
            source,
        })
    }

    /// The rebuild command with `--flake …#host` or `-I nixos-config=…` appended.
    fn rebuild(&mut self) -> Result<(), CommandError> {
        let extra = rebuild_target(&self.current_link().join("config"), &self.config.host);
        self.command("rebuild", &self.config.rebuild.clone(), &extra)
    }

    /// Activates the new bundle's secrets without a rebuild: the configured `activate`
    /// command, or this binary's `activate` for the users phase, then for the other
    /// secrets, both with the configured identity. Both phases run even when the first
    /// fails; the first failure is the run's error.
    fn activate(&mut self) -> Result<(), AgentError> {
        if let Some(command) = self.config.activate.clone() {
            return Ok(self.command("activate", &command, &[])?);
        }
        let exe = std::env::current_exe().map_err(AgentError::CurrentExe)?;
        let base = CommandLine::from_words(
            exe.display().to_string(),
            vec![
                "activate".into(),
                "--bundle".into(),
                self.current_link().display().to_string(),
                "--root".into(),
                self.config.secrets_root.display().to_string(),
                "-i".into(),
                self.config.identity.display().to_string(),
            ],
        );
        let users = self.command("activate", &base, &["--phase".into(), "users".into()]);
        let secrets = self.command("activate", &base, &[]);
        Ok(users.and(secrets)?)
    }

    /// Runs a configured command line (split into words as a shell would) until the run's deadline: its
    /// output is shown live on stderr and kept for the log.
    pub(super) fn command(
        &mut self,
        what: &'static str,
        line: &CommandLine,
        extra: &[String],
    ) -> Result<(), CommandError> {
        self.command_until(what, line, extra, self.deadline)
    }

    /// Runs the rollback command. It puts the host back: it gets a full `run_timeout` of
    /// its own, whatever is left of the run's.
    pub(super) fn rollback(&mut self) -> Result<(), CommandError> {
        let deadline = Instant::now() + Duration::from_secs(self.config.run_timeout);
        self.command_until("rollback", &self.config.rollback.clone(), &[], deadline)
    }

    fn command_until(
        &mut self,
        what: &'static str,
        line: &CommandLine,
        extra: &[String],
        deadline: Instant,
    ) -> Result<(), CommandError> {
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
    /// lost server. Passing failures are retried for [`REACHABLE_BUDGET`] beyond the connect
    /// timeout: a server busy with many hosts at once (sshd's `MaxStartups` dropping
    /// connections) is not a lost one, and rolling back a good switch for it would be wrong.
    fn server_reachable(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(self.config.connect_timeout) + REACHABLE_BUDGET;
        connect(self.config, deadline).is_ok_and(|mut t| crate::transport::read_current(t.as_mut()).is_ok())
    }

    pub(super) fn report(
        &self,
        state: State,
        outcome: Result<Vec<String>, AgentError>,
        bytes: u64,
    ) -> Report {
        let system_after = current_system(self.config);
        let expected = installed_manifest(&self.config.state_dir, self.generation).and_then(|m| m.system);
        let health = match &outcome {
            Err(AgentError::Unhealthy { failure, .. }) => Some(failure.clone()),
            _ => None,
        };
        let (secrets_changed, error) = match outcome {
            Ok(names) => (names, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        Report {
            format: report::FORMAT,
            host: self.config.host.clone(),
            generation: self.generation,
            previous_generation: self.previous,
            state,
            time: crate::time::now_rfc3339(),
            system_before: self.system_before.clone(),
            system_after,
            system_expected: expected,
            duration_ms: self.started.elapsed().as_millis() as u64,
            bytes,
            error,
            secrets_changed,
            note: self.note.clone(),
            // After a rollback too: one after a reboot into a new kernel goes back to the old.
            kernel_changed: matches!(state, State::Applied | State::SelfUpdated | State::RolledBack)
                && kernel_changed(self.config),
            agent: env!("CARGO_PKG_VERSION").into(),
            health,
        }
    }
}

/// What the rebuild command is given to build this host: `--flake DIR#host` for a flake,
/// else `-I nixos-config=DIR/configuration.nix`.
pub(super) fn rebuild_target(config_dir: &Path, host: &str) -> Vec<String> {
    if config_dir.join("flake.nix").exists() {
        vec!["--flake".into(), format!("{}#{host}", config_dir.display())]
    } else {
        vec![
            "-I".into(),
            format!("nixos-config={}", config_dir.join("configuration.nix").display()),
        ]
    }
}

/// The running system (the `current_system` symlink's target), when known.
pub(super) fn current_system(config: &AgentConfig) -> Option<String> {
    std::fs::read_link(&config.current_system)
        .ok()
        .map(|p| p.display().to_string())
}
