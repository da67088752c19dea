//! `bento rollout`: publishes the fleet wave by wave (`[rollout] waves`), each wave as
//! `bento deploy` publishes those hosts, and goes on only when every host of the wave
//! reports its new generation applied and healthy — read from the server as `bento status`
//! reads it. The first failure, or a wave past `wait` with more than `max_unreached` hosts
//! silent, stops it: later waves keep their generation.
//!
//! Its state is `.bento/rollout.json`, written atomically after each step, so a rollout
//! killed at any point resumes where it was: a wave already published is not published
//! again (and were it, deploy would find nothing changed). A rollout over a fleet whose
//! content changed since it started is refused unless restarted. One rollout per fleet at a
//! time: `.bento/rollout.lock`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::fleet::location::Location;
use crate::fleet::workspace::Workspace;
use crate::publish::{self, Options};
use crate::sign::Signer;
use crate::status::{self, Root};
use crate::time::{now, now_rfc3339};
use crate::wire::report::State;

/// The rollout's state, in the fleet repo.
pub const STATE_FILE: &str = ".bento/rollout.json";
/// The lock one rollout holds.
const LOCK_FILE: &str = ".bento/rollout.lock";
/// The version of the state file's shape.
const FORMAT: u32 = 1;

/// Where a rollout is: its waves and what happened to each.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// The file's format: 1.
    pub format: u32,
    /// The digest of what the fleet publishes ([`publish::content_digest`]) when it started.
    pub fleet: String,
    /// When it started, RFC 3339 UTC.
    pub started: String,
    /// The waves, in order.
    pub waves: Vec<Wave>,
}

/// One wave of a rollout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wave {
    /// Its hosts.
    pub hosts: Vec<String>,
    /// Where it is.
    pub state: WaveState,
    /// When it was published (seconds since the epoch).
    pub published_at: Option<u64>,
    /// Host → the generation published for it.
    pub generations: BTreeMap<String, u64>,
    /// Host → what it reported (`applied`, `healthy`, `failed: …`, `unreached`), once known.
    pub hosts_state: BTreeMap<String, String>,
}

/// Where a wave is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WaveState {
    /// Not published yet.
    Waiting,
    /// Published; its hosts are being waited for.
    Published,
    /// Every host reported its new generation applied (or was allowed not to report).
    Healthy,
    /// A host failed, or too many did not report in time: the rollout stopped here.
    Failed,
}

/// What a rollout tells as it goes; waves are numbered from 1.
pub enum Event<'a> {
    /// A wave was published.
    Published {
        /// The wave.
        index: usize,
        /// How many waves.
        of: usize,
        /// Its hosts.
        hosts: &'a [String],
    },
    /// A host of a wave reported its new generation: `applied`, or `failed: …`.
    Host {
        /// The wave.
        index: usize,
        /// The host.
        host: &'a str,
        /// What it reported.
        what: &'a str,
    },
    /// A wave is being waited for: how many of its hosts are where (after every read of
    /// the server; a terminal's live view).
    Waiting {
        /// The wave.
        index: usize,
        /// How many waves.
        of: usize,
        /// Hosts without a report of their new generation yet.
        pending: usize,
        /// Hosts that applied it.
        applied: usize,
        /// Hosts that failed it.
        failed: usize,
        /// Seconds left of `wait`.
        left: u64,
    },
    /// A wave is healthy.
    Healthy {
        /// The wave.
        index: usize,
        /// How many waves.
        of: usize,
    },
}

/// Why a rollout stopped; one line each.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RolloutError {
    /// No `[rollout] waves` in bento.toml.
    #[error("bento.toml has no [rollout] waves: list them, e.g. waves = [[\"web1\"], [\"@web\"], [\"*\"]]")]
    NoWaves,
    /// A wave names what is not a host or group of the fleet.
    #[error("rollout.waves: `{0}` is neither a host of the fleet, nor @GROUP of secrets.toml, nor \"*\"")]
    Unknown(String),
    /// Another rollout holds the lock.
    #[error("another `bento rollout` is running on this fleet ({LOCK_FILE}); wait for it, or stop it")]
    Busy,
    /// The fleet changed since the rollout started.
    #[error(
        "the fleet changed since this rollout started ({}): run `bento rollout --restart` to roll \
         the new content out from the first wave",
        started
    )]
    Changed {
        /// When the old rollout started.
        started: String,
    },
    /// A wave failed.
    #[error("wave {index} of {of} stopped: {why}; later waves keep their generation")]
    Stopped {
        /// 1-based.
        index: usize,
        /// How many waves.
        of: usize,
        /// The hosts and why, joined.
        why: String,
    },
    /// The state file is unreadable.
    #[error("{STATE_FILE}: {0}; delete it to start over (`bento rollout --restart`)")]
    State(String),
    /// Publishing or reading the server failed.
    #[error(transparent)]
    Deploy(#[from] Error),
}

/// The waves of bento.toml, resolved to hosts: names, `@group`s, `*` (every host not in an
/// earlier wave); a host named twice goes in its first wave.
pub fn waves(
    spec: &[Vec<String>],
    hosts: &[String],
    groups: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<Vec<String>>, RolloutError> {
    if spec.is_empty() {
        return Err(RolloutError::NoWaves);
    }
    let known: BTreeSet<&str> = hosts.iter().map(String::as_str).collect();
    let mut placed = BTreeSet::new();
    let mut out = Vec::new();
    for wave in spec {
        let mut members = Vec::new();
        for item in wave {
            let names: Vec<&str> = match item.as_str() {
                "*" => hosts.iter().map(String::as_str).collect(),
                group if group.starts_with('@') => groups
                    .get(&group[1..])
                    .ok_or_else(|| RolloutError::Unknown(item.clone()))?
                    .iter()
                    .map(String::as_str)
                    .filter(|h| known.contains(h))
                    .collect(),
                host if known.contains(host) => vec![host],
                _ => return Err(RolloutError::Unknown(item.clone())),
            };
            for name in names {
                if placed.insert(name.to_owned()) {
                    members.push(name.to_owned());
                }
            }
        }
        if !members.is_empty() {
            out.push(members);
        }
    }
    Ok(out)
}

/// Reads `.bento/rollout.json`; `None` when there is none.
pub fn load(root: &Path) -> Result<Option<Rollout>, RolloutError> {
    use bento_secrets::fleet_files::{read, Kind};
    match read(&root.join(STATE_FILE), Kind::Toml) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RolloutError::State(e.to_string())),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(RolloutError::State(e.to_string())),
    }
}

fn save(root: &Path, rollout: &Rollout) -> Result<(), RolloutError> {
    bento_secrets::fleet_lock::ensure_state_dir(root).map_err(|e| RolloutError::State(e.to_string()))?;
    let mut bytes = serde_json::to_vec_pretty(rollout).unwrap_or_default();
    bytes.push(b'\n');
    bento_secrets::atomic::write_atomic(&root.join(STATE_FILE), &bytes, 0o644)
        .map_err(|e| RolloutError::State(e.to_string()))
}

/// How often the server is read while a wave is waited for.
fn poll_interval(location: &Location) -> Duration {
    match location {
        // A status read of a local root is some 10 ms for 100 hosts.
        Location::Local(_) => Duration::from_millis(100),
        // A new connection each time: every 2 s.
        Location::Remote(_) | Location::S3(_) => Duration::from_secs(2),
    }
}

/// Runs (or resumes) the rollout of the fleet to `options.location`.
pub fn run(
    workspace: &Workspace,
    options: &Options,
    restart: bool,
    signer: &(dyn Fn() -> Result<Signer, Error> + Sync),
    event: &dyn Fn(Event<'_>),
) -> Result<Rollout, RolloutError> {
    let root = &workspace.root;
    bento_secrets::fleet_lock::ensure_state_dir(root).map_err(|e| RolloutError::State(e.to_string()))?;
    // Never through a link a fleet repo could carry at that name.
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(root.join(LOCK_FILE))
        .map_err(|e| RolloutError::State(e.to_string()))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|_| RolloutError::Busy)?;

    let all: Vec<String> = workspace
        .hosts(&[], &options.nix)?
        .into_iter()
        .map(|h| h.name)
        .collect();
    let fleet = publish::content_digest(workspace, options)?;
    let mut rollout = match load(root)? {
        Some(old) if !restart && old.fleet != fleet && !finished(&old) => {
            return Err(RolloutError::Changed { started: old.started })
        }
        Some(old) if !restart && old.fleet == fleet => old,
        _ => Rollout {
            format: FORMAT,
            fleet,
            started: now_rfc3339(),
            waves: waves(
                &workspace.config.rollout.waves,
                &all,
                &workspace.fleet.rules.groups,
            )?
            .into_iter()
            .map(|hosts| Wave {
                hosts,
                state: WaveState::Waiting,
                published_at: None,
                generations: BTreeMap::new(),
                hosts_state: BTreeMap::new(),
            })
            .collect(),
        },
    };
    save(root, &rollout)?;
    let of = rollout.waves.len();
    for index in 0..of {
        match rollout.waves[index].state {
            WaveState::Healthy => continue,
            WaveState::Failed => return Err(stopped(&rollout, index)),
            WaveState::Waiting => {
                let wave_options = Options {
                    hosts: rollout.waves[index].hosts.clone(),
                    ..options.clone()
                };
                let reports = publish::deploy(workspace, &wave_options, signer, &())?;
                let wave = &mut rollout.waves[index];
                wave.generations = reports.iter().map(|r| (r.host.clone(), r.generation)).collect();
                wave.published_at = Some(now());
                wave.state = WaveState::Published;
                save(root, &rollout)?;
                event(Event::Published {
                    index: index + 1,
                    of,
                    hosts: &rollout.waves[index].hosts,
                });
            }
            WaveState::Published => {}
        }
        wait_for(workspace, options, &mut rollout, index, event)?;
        save(root, &rollout)?;
        if rollout.waves[index].state == WaveState::Failed {
            return Err(stopped(&rollout, index));
        }
        event(Event::Healthy { index: index + 1, of });
    }
    Ok(rollout)
}

/// Whether every wave is healthy.
fn finished(rollout: &Rollout) -> bool {
    rollout.waves.iter().all(|w| w.state == WaveState::Healthy)
}

fn stopped(rollout: &Rollout, index: usize) -> RolloutError {
    let why: Vec<String> = rollout.waves[index]
        .hosts_state
        .iter()
        .filter(|(_, s)| *s != "applied")
        // What the host said (its report's error, a check's output): escaped, one line.
        .map(|(h, s)| format!("{h}: {}", bento_secrets::error::escape_controls(s)))
        .collect();
    RolloutError::Stopped {
        index: index + 1,
        of: rollout.waves.len(),
        why: why.join("; "),
    }
}

/// Reads the wave's hosts from the server until each reported its generation applied,
/// one failed, or `wait` is over.
fn wait_for(
    workspace: &Workspace,
    options: &Options,
    rollout: &mut Rollout,
    index: usize,
    event: &dyn Fn(Event<'_>),
) -> Result<(), RolloutError> {
    let config = &workspace.config;
    let rollout_len = rollout.waves.len();
    let wave = &mut rollout.waves[index];
    let waited = now().saturating_sub(wave.published_at.unwrap_or_else(now));
    let wait = config
        .rollout
        .wait
        .duration()
        .saturating_sub(Duration::from_secs(waited));
    let until = Instant::now() + wait;
    let status_options = status::Options::from_config(config);
    loop {
        let server = options.location.open(&workspace.root, config)?;
        let shown = options.location.shown();
        let root = Root {
            dir: server.dir(),
            shown: &shown,
        };
        let fleet_status = status::scan(root, &wave.hosts, &status_options)?;
        for h in fleet_status.hosts.iter().filter(|h| wave.hosts.contains(&h.host)) {
            let Some(&target) = wave.generations.get(&h.host) else {
                continue;
            };
            let what = match (h.reported_generation, h.reported_state) {
                (Some(g), Some(state)) if g >= target && state.is_success() => "applied".to_owned(),
                (Some(g), Some(State::Failed | State::RolledBack | State::Refused)) if g == target => {
                    let why = h
                        .failed_check
                        .as_ref()
                        .map(|c| format!("health check failed ({}): {}", c.check, c.output))
                        .or_else(|| h.error.clone())
                        .unwrap_or_else(|| h.status.name().to_owned());
                    format!("{}: {why}", h.status.name())
                }
                _ => continue,
            };
            if wave.hosts_state.get(&h.host) != Some(&what) {
                event(Event::Host {
                    index: index + 1,
                    host: &h.host,
                    what: &what,
                });
                wave.hosts_state.insert(h.host.clone(), what);
            }
        }
        let applied = wave.hosts_state.values().filter(|s| *s == "applied").count();
        let failures = wave.hosts_state.len() - applied;
        event(Event::Waiting {
            index: index + 1,
            of: rollout_len,
            pending: wave.hosts.len() - wave.hosts_state.len(),
            applied,
            failed: failures,
            left: until.saturating_duration_since(Instant::now()).as_secs(),
        });
        if failures > 0 {
            wave.state = WaveState::Failed;
            return Ok(());
        }
        if applied == wave.hosts.len() {
            wave.state = WaveState::Healthy;
            return Ok(());
        }
        if Instant::now() >= until {
            let unreached: Vec<String> = wave
                .hosts
                .iter()
                .filter(|h| !wave.hosts_state.contains_key(*h))
                .cloned()
                .collect();
            // Within max_unreached, they count as allowed, not as failed.
            let (state, what) = match unreached.len() <= config.rollout.max_unreached {
                true => (WaveState::Healthy, "unreached (allowed by max_unreached)"),
                false => (
                    WaveState::Failed,
                    "unreached: no report of its new generation within rollout.wait",
                ),
            };
            for host in unreached {
                wave.hosts_state.insert(host, what.into());
            }
            wave.state = state;
            return Ok(());
        }
        std::thread::sleep(
            poll_interval(&options.location).min(until.saturating_duration_since(Instant::now())),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn what_a_host_said_is_escaped_in_the_stop_line() {
        let wave = Wave {
            hosts: strings(&["web1"]),
            state: WaveState::Failed,
            published_at: Some(1),
            generations: BTreeMap::from([("web1".to_owned(), 2)]),
            hosts_state: BTreeMap::from([("web1".to_owned(), "failed: \u{1b}[2Jgone\nline".to_owned())]),
        };
        let rollout = Rollout {
            format: FORMAT,
            fleet: String::new(),
            started: String::new(),
            waves: vec![wave],
        };
        let line = stopped(&rollout, 0).to_string();
        assert!(!line.contains(['\u{1b}', '\n']), "{line}");
        assert!(line.contains("web1: failed: \\u{1b}[2Jgone"), "{line}");
    }

    #[test]
    fn waves_resolve_names_groups_and_the_rest() {
        let hosts = strings(&["db1", "web1", "web2", "web3"]);
        let groups = BTreeMap::from([("web".to_owned(), strings(&["web1", "web2", "web3", "gone"]))]);
        let spec = vec![strings(&["web1"]), strings(&["@web"]), strings(&["*"])];
        assert_eq!(
            waves(&spec, &hosts, &groups).unwrap(),
            [strings(&["web1"]), strings(&["web2", "web3"]), strings(&["db1"])]
        );
        assert!(matches!(waves(&[], &hosts, &groups), Err(RolloutError::NoWaves)));
        for bad in ["@nope", "mail1"] {
            let e = waves(&[strings(&[bad])], &hosts, &groups).unwrap_err();
            assert!(matches!(e, RolloutError::Unknown(ref s) if s == bad), "{e}");
        }
    }
}
