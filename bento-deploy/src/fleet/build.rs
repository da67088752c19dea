//! `bento build`: builds each host's system with the configured command, a few hosts at a
//! time, and records the resulting system path in `.bento/expected.json` (with a digest
//! of the configuration it was built from), for `bento deploy` to put in the manifest.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::fleet::bundle::{config_digest, read_config};
use crate::fleet::config::Config;
use crate::fleet::hosts::{Host, Kind};
use crate::time::now_rfc3339;

/// Bento's local state in the fleet repo (git-ignored by its own `.gitignore`).
pub const STATE_DIR: &str = bento_secrets::fleet_lock::STATE_DIR;
/// The expected system of each built host.
pub const EXPECTED_FILE: &str = ".bento/expected.json";
/// How many lines of a failed build's log the summary shows.
pub const TAIL_LINES: usize = 20;

/// What `bento build` recorded: host → its last successful build.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    /// Host name → build.
    pub hosts: BTreeMap<String, Built>,
}

/// One host's successful build.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Built {
    /// The system's store path.
    pub system: String,
    /// The digest of the configuration files it was built from.
    pub config_sha256: String,
    /// When, RFC 3339 UTC.
    pub built: String,
}

impl Expected {
    /// Reads `.bento/expected.json`; a missing file is empty.
    pub fn load(root: &Path) -> Result<Expected, Error> {
        use bento_secrets::fleet_files::{read, Kind};
        match read(&root.join(EXPECTED_FILE), Kind::Toml) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::input(
                    EXPECTED_FILE,
                    format!("unreadable ({e}); delete it and run `bento build` again"),
                )
            }),
            Err(e) if e.is_not_found() => Ok(Expected::default()),
            Err(e) => Err(e.at(EXPECTED_FILE).into()),
        }
    }

    /// Writes `.bento/expected.json` atomically (and a `.gitignore` keeping `.bento/` out
    /// of git).
    pub fn save(&self, root: &Path) -> Result<(), Error> {
        bento_secrets::fleet_lock::ensure_state_dir(root)?;
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bento_secrets::atomic::write_atomic(&root.join(EXPECTED_FILE), &bytes, 0o644)
            .map_err(|e| Error::io(EXPECTED_FILE, e))
    }

    /// Whether `bento build` recorded a system for `host` at all (for any configuration).
    pub fn has_build(&self, host: &str) -> bool {
        self.hosts.contains_key(host)
    }

    /// The system recorded for `host`, if it was built from configuration `digest`.
    pub fn system_for(&self, host: &str, digest: &str) -> Option<&str> {
        self.hosts
            .get(host)
            .filter(|b| b.config_sha256 == digest)
            .map(|b| b.system.as_str())
    }
}

/// The outcome of one host's build.
#[derive(Clone, Debug, Serialize)]
pub struct BuildResult {
    /// The host.
    pub host: String,
    /// Whether the build command succeeded (and, for a real build, named a system).
    pub ok: bool,
    /// The system path, for a successful real build.
    pub system: Option<String>,
    /// The full log, relative to the fleet.
    pub log: String,
    /// The last lines of the log, for a failure.
    pub tail: Vec<String>,
    /// What went wrong, in one line, for a failure.
    pub error: Option<String>,
}

/// Builds `hosts` (at most `build.jobs` at once), calling `done` after each, and records
/// the systems of successful real builds; a failed host loses its recorded system.
pub fn build(
    root: &Path,
    config: &Config,
    hosts: &[Host],
    dry: bool,
    done: &(dyn Fn(&BuildResult) + Sync),
) -> Result<Vec<BuildResult>, Error> {
    let argv = config.build.argv(dry)?;
    // Every build, `--dry` too, works in `.bento/build/`: `.bento/` comes with the
    // `.gitignore` that keeps it out of git.
    bento_secrets::fleet_lock::ensure_state_dir(root)?;
    let published =
        bento_secrets::fleet_files::Tracked::of(root).map_err(|e| e.at(root.display().to_string()))?;
    let digests = hosts
        .iter()
        .map(|h| read_config(&published, h).map(|files| config_digest(&files)))
        .collect::<Result<Vec<_>, _>>()?;
    let abs_root = std::path::absolute(root).map_err(|e| Error::io(root.display().to_string(), e))?;

    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<BuildResult>>> = Mutex::new(vec![None; hosts.len()]);
    std::thread::scope(|scope| {
        for _ in 0..config.build.jobs.min(hosts.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(host) = hosts.get(i) else { break };
                let result = build_one(&abs_root, &argv, host, dry);
                done(&result);
                if let Ok(mut all) = results.lock() {
                    all[i] = Some(result);
                }
            });
        }
    });
    let results: Vec<BuildResult> = results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect();

    if !dry {
        let mut expected = Expected::load(root)?;
        let built = now_rfc3339();
        for (result, digest) in results.iter().zip(digests) {
            match &result.system {
                Some(system) if result.ok => {
                    expected.hosts.insert(
                        result.host.clone(),
                        Built {
                            system: system.clone(),
                            config_sha256: digest,
                            built: built.clone(),
                        },
                    );
                }
                _ => {
                    expected.hosts.remove(&result.host);
                }
            }
        }
        expected.save(root)?;
    }
    Ok(results)
}

/// Runs the build command for one host in `.bento/build/<host>/` (where `result` lands).
fn build_one(root: &Path, argv: &[String], host: &Host, dry: bool) -> BuildResult {
    let work_rel = format!("{STATE_DIR}/build/{}", host.name);
    let log_rel = format!("{work_rel}/build.log");
    let work = root.join(&work_rel);
    let mut result = BuildResult {
        host: host.name.clone(),
        ok: false,
        system: None,
        log: log_rel.clone(),
        tail: Vec::new(),
        error: None,
    };
    let fail = |mut r: BuildResult, msg: String| {
        r.error = Some(msg);
        r
    };
    if let Err(e) = std::fs::create_dir_all(&work) {
        return fail(result, format!("{work_rel}: {e}"));
    }
    let result_link = work.join("result");
    let _ = std::fs::remove_file(&result_link);

    let dir = std::path::absolute(&host.dir).unwrap_or_else(|_| host.dir.clone());
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    match host.kind {
        Kind::Flake => cmd.arg("--flake").arg(format!("{}#{}", dir.display(), host.name)),
        Kind::Plain => cmd.arg("-I").arg(format!(
            "nixos-config={}",
            dir.join("configuration.nix").display()
        )),
    };
    let output = cmd
        .current_dir(&work)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output();
    let output = match output {
        Ok(o) => o,
        Err(e) => {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (not found: install it, or set [build] command in bento.toml)"
            } else {
                ""
            };
            return fail(result, format!("cannot run `{}`: {e}{hint}", argv[0]));
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let log = format!("{stderr}{stdout}");
    if let Err(e) = std::fs::write(work.join("build.log"), &log) {
        return fail(result, format!("{log_rel}: {e}"));
    }
    if !output.status.success() {
        let lines: Vec<&str> = log.lines().collect();
        result.tail = lines[lines.len().saturating_sub(TAIL_LINES)..]
            .iter()
            .map(|l| l.to_string())
            .collect();
        return fail(result, format!("`{}` failed ({})", argv.join(" "), output.status));
    }
    if dry {
        result.ok = true;
        return result;
    }
    let system = std::fs::read_link(&result_link)
        .ok()
        .map(|p| p.display().to_string())
        .or_else(|| {
            stdout
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| l.starts_with("/nix/store/"))
                .map(str::to_owned)
        });
    match system.filter(|s| s.starts_with("/nix/store/") && !s.contains(char::is_whitespace)) {
        Some(system) => {
            result.ok = true;
            result.system = Some(system);
            result
        }
        None => fail(
            result,
            format!(
                "`{}` succeeded but named no system: no `result` link and no /nix/store path on stdout",
                argv.join(" ")
            ),
        ),
    }
}
