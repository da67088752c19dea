//! `bento status`: the fleet's state, read from the server layout alone.
//!
//! Per host it reads `current`, the current generation's `manifest.json` (its `created`
//! time and expected `system`), the names in `logs/`, and only the newest report (an older
//! one too when the newest is unreadable). Report names carry their generation and time
//! (`report-<generation:08>-<time>.json`), so the newest is found without opening the rest.
//!
//! A host reports only when something happens: an idle, up-to-date host stays silent. So a
//! host is *stale* when a generation published for it has not been picked up within
//! `status.stale_after` poll intervals, not merely because its last report is old.

pub mod diff;
pub mod host_file;
pub mod log;
pub mod prometheus;
mod reports;
pub use reports::Point;
mod seen;
mod signers;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::fleet::config::Config;
use crate::server_dir::{Kind, ServerDir};
use crate::sign::AdminKeys;
use crate::status::host_file::{read_file, Content, Problem};
use crate::status::reports::{newest_report, Newest};
pub use crate::status::signers::Signers;
use crate::time::{parse_rfc3339, rfc3339};
use crate::wire::host_dir::{CURRENT_FILE, GENERATIONS_DIR, LOGS_DIR, SIGNATURE_LIMIT};
use crate::wire::manifest::{MANIFEST_FILE, SIGNATURE_FILE};
use crate::wire::mode::DeployMode;
use crate::wire::report::{Report, State, Unhealthy};

/// The version of the `--json` shape.
pub const FORMAT: u32 = 1;

pub use host_file::limits;

/// A host's derived state. The order is severity: problems first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The current generation's rebuild or activation failed.
    Failed,
    /// The current generation was switched to, lost the server, and was rolled back.
    RolledBack,
    /// The current generation was switched to, failed a health check, and was rolled back.
    UnhealthyRolledBack,
    /// The host refused the current bundle (signature, hash, downgrade, path).
    Rejected,
    /// The newest report cannot be read (partial, not JSON, another host's).
    BadReport,
    /// `current` does not hold a generation number.
    BadCurrent,
    /// The current generation's download was cut short; the host retries next run.
    Interrupted,
    /// A generation waits longer than `stale_after` poll intervals: the host is not polling.
    Stale,
    /// Published, but the host never reported anything.
    NeverSeen,
    /// A new generation is published and not picked up yet (within the allowed time).
    Pending,
    /// Nothing is published for the host yet.
    Unpublished,
    /// The host applied its current generation.
    UpToDate,
}

impl Status {
    /// Every status, in severity order.
    pub const ALL: [Status; 12] = [
        Status::Failed,
        Status::RolledBack,
        Status::UnhealthyRolledBack,
        Status::Rejected,
        Status::BadReport,
        Status::BadCurrent,
        Status::Interrupted,
        Status::Stale,
        Status::NeverSeen,
        Status::Pending,
        Status::Unpublished,
        Status::UpToDate,
    ];

    /// The name used in the table, JSON and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Status::Failed => "failed",
            Status::RolledBack => "rolled-back",
            Status::UnhealthyRolledBack => "unhealthy-rolled-back",
            Status::Rejected => "rejected",
            Status::BadReport => "bad-report",
            Status::BadCurrent => "bad-current",
            Status::Interrupted => "interrupted",
            Status::Stale => "stale",
            Status::NeverSeen => "never-seen",
            Status::Pending => "pending",
            Status::Unpublished => "unpublished",
            Status::UpToDate => "up-to-date",
        }
    }

    /// Whether a host in this state makes `bento status` exit non-zero: its current
    /// generation did not apply.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Status::Failed | Status::RolledBack | Status::UnhealthyRolledBack | Status::Rejected
        )
    }

    /// Whether this state needs an admin's look (everything but pending, unpublished and
    /// up to date).
    pub fn is_problem(self) -> bool {
        self < Status::Pending
    }
}

/// One host's row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    /// The host's name.
    pub host: String,
    /// Whether the fleet repo defines it (false: a directory on the server only).
    pub in_fleet: bool,
    /// The derived state.
    pub status: Status,
    /// The generation `current` names.
    pub expected_generation: Option<u64>,
    /// That generation's expected system path (`bento build`), when recorded.
    pub expected_system: Option<String>,
    /// The admins whose valid signatures that generation's manifest carries, by name
    /// (empty when the admins' keys were not read).
    #[serde(default)]
    pub signers: Vec<String>,
    /// How that generation gets the host its system: its sources (`source`), or the built
    /// system (`closure`).
    pub mode: Option<DeployMode>,
    /// When that generation was published (its manifest's `created`).
    pub published: Option<String>,
    /// Seconds since then.
    pub published_ago_seconds: Option<u64>,
    /// The generation of the newest readable report.
    pub reported_generation: Option<u64>,
    /// That report's state.
    pub reported_state: Option<State>,
    /// The system the host runs according to it (`system_after`, else `system_before`).
    pub reported_system: Option<String>,
    /// When it was made.
    pub reported_at: Option<String>,
    /// Seconds since then.
    pub reported_ago_seconds: Option<u64>,
    /// When the host last polled: its heartbeat (`logs/seen.json`), or its newest report
    /// when that is later. `None` when neither is there (or an agent without heartbeats).
    pub seen_at: Option<String>,
    /// Seconds since then.
    pub seen_ago_seconds: Option<u64>,
    /// Expected minus reported generation (a host that never reported counts as 0).
    pub generation_lag: Option<i64>,
    /// The newest readable report's file name in `logs/`.
    pub report_file: Option<String>,
    /// The error that report carries.
    pub error: Option<String>,
    /// The health check that failed, when that report is of a generation rolled back for
    /// it: the check and its first line of output (the host's words).
    pub failed_check: Option<Unhealthy>,
    /// What on the server could not be read, and how to fix it.
    pub problem: Option<String>,
    /// The command that reaches the host (`[hosts.<name>]` of bento.toml).
    pub ssh: Option<String>,
    /// The IP addresses the host's heartbeat names (untrusted: only valid, reachable IP
    /// addresses are kept, at most [`crate::reach::MAX_ADDRESSES`]).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// The sshd port the host's heartbeat names.
    #[serde(default)]
    pub ssh_port: Option<u16>,
    /// Its newest reports, newest first (only when [`Options::timeline`] asks for them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<Point>,
}

/// The whole fleet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetStatus {
    /// Always [`FORMAT`].
    pub format: u32,
    /// When the status was taken, RFC 3339 UTC.
    pub time: String,
    /// The server root read.
    pub server_root: String,
    /// A pending generation older than this makes its host stale.
    pub stale_after_seconds: u64,
    /// One row per host, problems first, then by name.
    pub hosts: Vec<HostStatus>,
    /// How many hosts are in each state (every state listed, zeros too).
    pub totals: BTreeMap<String, usize>,
}

impl FleetStatus {
    /// Whether any host failed to apply its current generation.
    pub fn any_failure(&self) -> bool {
        self.hosts.iter().any(|h| h.status.is_failure())
    }
}

/// What judging hosts needs besides the server layout.
#[derive(Clone, Debug)]
pub struct Options {
    /// A pending generation older than this (seconds) makes its host stale.
    pub stale_secs: u64,
    /// Host name → its `ssh` line.
    pub ssh: BTreeMap<String, String>,
    /// Now, in seconds since the epoch.
    pub now: u64,
    /// The fleet's admin keys, to name who signed each current generation (`None`: not
    /// looked at).
    pub admins: Option<std::sync::Arc<Signers>>,
    /// How many of each host's newest reports to read for a timeline (0: none).
    pub timeline: usize,
}

impl Options {
    /// From `bento.toml`, at the current time.
    pub fn from_config(config: &Config) -> Options {
        Options {
            stale_secs: config.status.stale_secs(),
            ssh: config
                .hosts
                .iter()
                .filter_map(|(name, h)| Some((name.clone(), h.ssh_command()?)))
                .collect(),
            now: crate::time::now(),
            admins: None,
            timeline: 0,
        }
    }

    /// From `bento.toml` and the fleet's admin keys (`keys/admins/`), at the current time,
    /// reading `timeline` of each host's newest reports.
    pub fn for_fleet(fleet_root: &Path, config: &Config, timeline: usize) -> Options {
        let admins = bento_secrets::fleet::admin_keys(fleet_root)
            .ok()
            .map(|admins| std::sync::Arc::new(Signers::new(AdminKeys::new(&admins))));
        Options {
            admins,
            timeline,
            ..Options::from_config(config)
        }
    }
}

/// The fleet's host names: its registered hosts, one per `keys/hosts/<name>.pub` (every
/// host `bento deploy` publishes has one). Neither key contents nor rules are read, and no
/// flake is evaluated: a fleet whose secrets are in a bad state, or a machine without Nix,
/// still gets a status, fast.
pub fn fleet_hosts(fleet_root: &Path) -> Result<Vec<String>, Error> {
    let keys_dir = fleet_root.join(bento_secrets::fleet::HOST_KEYS_DIR);
    let entries = match std::fs::read_dir(&keys_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(keys_dir.display().to_string(), e)),
    };
    let mut hosts: Vec<String> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let host = name.strip_suffix(".pub")?;
            bento_secrets::names::HostName::is_valid(host).then(|| host.to_owned())
        })
        .collect();
    hosts.sort_unstable();
    Ok(hosts)
}

/// The most entries read from a server root: one per host, and the cache.
const ROOT_ENTRIES: usize = 1_000_000;

/// The server root as [`ServerDir`] reads it, and how it is shown.
#[derive(Clone, Copy)]
pub struct Root<'a> {
    /// The root directory.
    pub dir: &'a dyn ServerDir,
    /// Its path or URL, for messages and `server_root` of the JSON.
    pub shown: &'a str,
}

/// The fleet's hosts (see [`fleet_hosts`]) and their status (see [`scan`]); the fleet and
/// the server root are listed at the same time.
pub fn fleet_status(fleet_root: &Path, root: Root<'_>, options: &Options) -> Result<FleetStatus, Error> {
    let (fleet, on_server) = rayon::join(|| fleet_hosts(fleet_root), || server_dirs(root));
    Ok(scan_listed(root, &fleet?, on_server?, options))
}

/// Reads the state of every fleet host, plus every host directory on the server that the
/// fleet does not define.
pub fn scan(root: Root<'_>, fleet: &[String], options: &Options) -> Result<FleetStatus, Error> {
    let on_server = server_dirs(root)?;
    Ok(scan_listed(root, fleet, on_server, options))
}

/// The entries of the server root that are valid host names.
fn server_dirs(root: Root<'_>) -> Result<Vec<String>, Error> {
    Ok(root
        .dir
        .entries_at_most("", ROOT_ENTRIES)
        .map_err(|e| Error::io(root.shown, e))?
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| bento_secrets::names::HostName::is_valid(name))
        .collect())
}

fn scan_listed(root: Root<'_>, fleet: &[String], on_server: Vec<String>, options: &Options) -> FleetStatus {
    let known: BTreeSet<&str> = fleet.iter().map(String::as_str).collect();
    let mut names: Vec<(String, bool)> = fleet.iter().map(|h| (h.clone(), true)).collect();
    for name in on_server {
        if known.contains(name.as_str()) {
            continue;
        }
        // A directory of the server root is a host when it holds a `current` (the file,
        // or the link a publishing account's layout has) or a `logs/` directory.
        let Ok(dir) = root.dir.dir(&name) else { continue };
        let current = matches!(dir.kind(CURRENT_FILE), Ok(Some(Kind::File | Kind::Link)));
        if current || matches!(dir.kind(LOGS_DIR), Ok(Some(Kind::Dir))) {
            names.push((name, false));
        }
    }
    let mut hosts: Vec<HostStatus> = names
        .par_iter()
        .map(|(name, in_fleet)| read_host(root.dir, name, *in_fleet, options))
        .collect();
    hosts.sort_by(|a, b| (a.status, &a.host).cmp(&(b.status, &b.host)));
    if let Some(signers) = &options.admins {
        signers.save();
    }
    let mut totals: BTreeMap<String, usize> = Status::ALL.iter().map(|s| (s.name().to_owned(), 0)).collect();
    for h in &hosts {
        *totals.entry(h.status.name().to_owned()).or_default() += 1;
    }
    FleetStatus {
        format: FORMAT,
        time: rfc3339(options.now),
        server_root: root.shown.to_owned(),
        stale_after_seconds: options.stale_secs,
        hosts,
        totals,
    }
}

/// The state of one host of the server root (for `bento diff`); an error when the server
/// has no directory for it.
pub fn host(root: Root<'_>, name: &str, options: &Options) -> Result<HostStatus, Error> {
    if !bento_secrets::names::HostName::is_valid(name) || root.dir.dir(name).is_err() {
        let on_server = server_dirs(root).unwrap_or_default();
        return Err(Error::input(
            format!("{}/{}", root.shown.trim_end_matches('/'), name.escape_default()),
            format!(
                "no such host `{}` on the server{}: check the name, or --server-root / --target",
                name.escape_default(),
                bento_secrets::suggest::hint(name, on_server.iter().map(String::as_str))
            ),
        ));
    }
    Ok(read_host(root.dir, name, true, options))
}

fn read_host(root: &dyn ServerDir, name: &str, in_fleet: bool, options: &Options) -> HostStatus {
    let mut problems = Vec::new();
    let dir = match root.dir(name) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        opened => noted(opened.map_err(Problem::HostDir), &mut problems),
    };
    let dir = dir.as_deref();
    let current = noted(dir.map_or(Ok(None), read_current), &mut problems).flatten();
    // Up to here, every problem is one of the host directory or its `current`.
    let bad_current = !problems.is_empty();
    let published = current
        .zip(dir)
        .and_then(|(g, dir)| noted(read_published(dir, g, options.admins.as_deref()), &mut problems));
    let newest = dir.map_or_else(Newest::default, |dir| newest_report(dir, name, options.timeline));
    problems.extend(newest.problems);
    let report = newest.report;
    let reported_secs = report.as_ref().and_then(|(_, r)| parse_rfc3339(&r.time));
    let heartbeat = noted(
        dir.map_or(Ok(None), |dir| crate::status::seen::read_heartbeat(dir, name)),
        &mut problems,
    )
    .flatten();
    let heartbeat_secs = heartbeat.as_ref().map(|b| b.secs);
    // Last contact: the heartbeat, or the newest report when later (it ends the run the
    // heartbeat began). Without a heartbeat, none is known.
    let seen = heartbeat_secs.map(|beat| beat.max(reported_secs.unwrap_or(0)));
    let published_secs = published.as_ref().and_then(|p| parse_rfc3339(&p.created));
    let ago = |t: Option<u64>| t.map(|t| options.now.saturating_sub(t));
    let status = if bad_current {
        Status::BadCurrent
    } else if newest.newest_is_bad {
        Status::BadReport
    } else {
        let derived = derive(
            current,
            ago(published_secs),
            report.as_ref().map(|(_, r)| (r, ago(reported_secs))),
            options.stale_secs,
        );
        unless_unseen(derived, ago(seen), options.stale_secs)
    };
    let r = report.as_ref().map(|(_, r)| r);
    HostStatus {
        host: name.to_owned(),
        in_fleet,
        status,
        expected_generation: current,
        expected_system: published.as_ref().and_then(|p| p.system.clone()),
        signers: published.as_ref().map(|p| p.signers.clone()).unwrap_or_default(),
        mode: published.as_ref().map(Published::mode),
        published: published.as_ref().map(|p| p.created.clone()),
        published_ago_seconds: ago(published_secs),
        reported_generation: r.map(|r| r.generation),
        reported_state: r.map(|r| r.state),
        reported_system: r.and_then(|r| r.system_after.clone().or_else(|| r.system_before.clone())),
        reported_at: r.map(|r| r.time.clone()),
        reported_ago_seconds: ago(reported_secs),
        seen_at: seen.map(rfc3339),
        seen_ago_seconds: ago(seen),
        generation_lag: current.map(|g| {
            // Saturating: a report is untrusted input, its generation may be anything.
            let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            signed(g).saturating_sub(signed(r.map_or(0, |r| r.generation)))
        }),
        report_file: report.as_ref().map(|(file, _)| file.clone()),
        error: r.and_then(|r| r.error.clone()),
        failed_check: r.and_then(|r| r.health.clone()),
        problem: (!problems.is_empty()).then(|| {
            let texts: Vec<String> = problems.iter().map(Problem::to_string).collect();
            texts.join("; ")
        }),
        ssh: options.ssh.get(name).cloned(),
        addresses: heartbeat
            .as_ref()
            .map(|b| b.addresses.clone())
            .unwrap_or_default(),
        ssh_port: heartbeat.and_then(|b| b.ssh_port),
        timeline: newest.recent,
    }
}

/// What `read` found, or nothing with its problem added to `problems`.
fn noted<T>(read: Result<T, Problem>, problems: &mut Vec<Problem>) -> Option<T> {
    read.map_err(|problem| problems.push(problem)).ok()
}

/// The state from the facts: the current generation, how long ago it was published, and
/// the newest report with its age.
pub fn derive(
    current: Option<u64>,
    published_ago: Option<u64>,
    report: Option<(&Report, Option<u64>)>,
    stale_secs: u64,
) -> Status {
    let Some(current) = current else {
        return Status::Unpublished;
    };
    let Some((report, reported_ago)) = report else {
        return Status::NeverSeen;
    };
    let overdue = |ago: Option<u64>| ago.is_some_and(|a| a >= stale_secs);
    if report.generation < current {
        return if overdue(published_ago) {
            Status::Stale
        } else {
            Status::Pending
        };
    }
    // The report is about the current generation (or a newer one, when `current` was
    // moved back by hand: the host judges that one next run).
    match report.state {
        State::Failed => Status::Failed,
        State::RolledBack if report.health.is_some() => Status::UnhealthyRolledBack,
        State::RolledBack => Status::RolledBack,
        State::Refused => Status::Rejected,
        State::Interrupted if overdue(reported_ago) => Status::Stale,
        State::Interrupted => Status::Interrupted,
        State::Applied | State::SecretsUpdated | State::SelfUpdated => Status::UpToDate,
    }
}

/// A host whose heartbeat (`seen_ago`: seconds since it last polled) is older than
/// `stale_secs` is `stale`, however fine its last report: it stopped polling. A specific
/// problem (failed, rolled back, ...) stays what it is.
pub fn unless_unseen(status: Status, seen_ago: Option<u64>, stale_secs: u64) -> Status {
    let quiet = seen_ago.is_some_and(|a| a >= stale_secs);
    match status {
        Status::UpToDate | Status::Pending | Status::Interrupted if quiet => Status::Stale,
        other => other,
    }
}

fn read_current(dir: &dyn ServerDir) -> Result<Option<u64>, Problem> {
    // `current`, or the one link accepted, `current -> generations/current` (not followed:
    // its target is read as a regular file).
    let rel = match dir.read_link(CURRENT_FILE) {
        Ok(target) if target == std::path::Path::new(crate::wire::host_dir::CURRENT_LINK) => {
            crate::wire::host_dir::CURRENT_LINK
        }
        _ => CURRENT_FILE,
    };
    let Some(bytes) = read_file(dir, rel, crate::wire::host_dir::CURRENT_LIMIT)? else {
        return Ok(None);
    };
    crate::wire::host_dir::parse_generation(&bytes)
        .map(Some)
        .ok_or(Problem::NotAGeneration)
}

#[derive(Deserialize)]
struct Published {
    created: String,
    system: Option<String>,
    /// Only the paths matter: whether it carries configuration sources.
    #[serde(default)]
    files: BTreeMap<String, serde::de::IgnoredAny>,
    /// Who signed it (filled after parsing).
    #[serde(skip)]
    signers: Vec<String>,
}

impl Published {
    fn mode(&self) -> DeployMode {
        let has_config = self.files.keys().any(|p| p.starts_with("config/"));
        DeployMode::of_bundle(has_config, self.system.is_some())
    }
}

/// The current generation's manifest; with `admins`, who of them signed it.
fn read_published(
    dir: &dyn ServerDir,
    generation: u64,
    admins: Option<&Signers>,
) -> Result<Published, Problem> {
    let rel = format!("{GENERATIONS_DIR}/{generation}/{MANIFEST_FILE}");
    let Some(bytes) = read_file(dir, &rel, crate::wire::host_dir::MANIFEST_LIMIT)? else {
        return Err(Problem::ManifestMissing { rel });
    };
    let mut published: Published = serde_json::from_slice(&bytes).map_err(|e| Problem::Content {
        rel,
        content: Content::json("a manifest", &e),
    })?;
    if let Some(admins) = admins {
        let rel = format!("{GENERATIONS_DIR}/{generation}/{SIGNATURE_FILE}");
        if let Ok(Some(sig)) = read_file(dir, &rel, SIGNATURE_LIMIT) {
            published.signers = admins.of(&bytes, &sig);
        }
    }
    Ok(published)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(generation: u64, state: State) -> Report {
        Report {
            format: 1,
            host: "h".into(),
            generation,
            previous_generation: None,
            state,
            time: "2026-01-01T00:00:00Z".into(),
            system_before: None,
            system_after: None,
            system_expected: None,
            duration_ms: 1,
            bytes: 1,
            error: None,
            health: None,
            secrets_changed: Vec::new(),
            note: None,
            kernel_changed: false,
            agent: "test".into(),
        }
    }

    #[test]
    fn derives_every_state() {
        let stale = 2700;
        let d = |current, published, r: Option<(&Report, Option<u64>)>| derive(current, published, r, stale);
        assert_eq!(d(None, None, None), Status::Unpublished);
        assert_eq!(d(Some(1), Some(10), None), Status::NeverSeen);
        let applied = report(1, State::Applied);
        assert_eq!(
            d(Some(1), Some(10), Some((&applied, Some(99_999)))),
            Status::UpToDate
        );
        assert_eq!(d(Some(2), Some(10), Some((&applied, Some(10)))), Status::Pending);
        assert_eq!(d(Some(2), Some(2700), Some((&applied, Some(10)))), Status::Stale);
        assert_eq!(d(Some(2), None, Some((&applied, Some(10)))), Status::Pending);
        for (state, status) in [
            (State::Failed, Status::Failed),
            (State::RolledBack, Status::RolledBack),
            (State::Refused, Status::Rejected),
            (State::SecretsUpdated, Status::UpToDate),
            (State::SelfUpdated, Status::UpToDate),
            (State::Interrupted, Status::Interrupted),
        ] {
            assert_eq!(d(Some(1), Some(10), Some((&report(1, state), Some(10)))), status);
        }
        let cut = report(1, State::Interrupted);
        assert_eq!(d(Some(1), Some(10), Some((&cut, Some(3000)))), Status::Stale);
    }

    #[test]
    fn statuses_are_ordered_and_named() {
        let mut sorted = Status::ALL;
        sorted.sort();
        assert_eq!(sorted, Status::ALL);
        for s in Status::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.name());
        }
        assert!(Status::Failed.is_failure() && !Status::BadReport.is_failure());
        assert!(Status::NeverSeen.is_problem() && !Status::Pending.is_problem());
    }
}
