//! `bento diff HOST`: the closure diff between the system a host runs (its newest report)
//! and the one its current generation expects, through `nvd` when it is installed, else
//! `nix store diff-closures`.
//!
//! Neither may build or fetch anything: the systems come from files on the server (a
//! host's report, a manifest), and the diff is of what is already in the local store. So
//! nix runs with `max-jobs = 0` and `substitute = false`, as options and through
//! `NIX_CONFIG` (which nvd's own nix calls read too), and a `.drv` is refused by
//! [`StorePath`] before anything runs.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use crate::error::Error;
use crate::status::HostStatus;
use crate::store_path::StorePath;

/// The command that shows the diff: a program and its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffCommand {
    /// The program's path.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
}

/// What `bento diff` does for a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// The host runs the expected system: nothing to show.
    Same(String),
    /// Run this.
    Run(DiffCommand),
}

/// Decides what to run for `host`, looking for `nvd` then `nix` in `path` (a `PATH`-like
/// list of directories).
pub fn plan(host: &HostStatus, path: Option<&OsStr>) -> Result<Plan, Error> {
    let name = &host.host;
    let Some(running) = host.reported_system.as_deref() else {
        return Err(Error::input(
            name,
            "the running system is unknown: the host has no readable report naming its system yet (see `bento status`)",
        ));
    };
    let Some(expected) = host.expected_system.as_deref() else {
        let why = match host.expected_generation {
            Some(g) => format!(
                "bundle generation {g} records no expected system: run `bento build {name}`, then `bento deploy {name}`"
            ),
            None => format!("nothing is published for it yet: run `bento build {name}` and `bento deploy {name}`"),
        };
        return Err(Error::input(
            name,
            format!("the expected system is unknown: {why}"),
        ));
    };
    // Both come from files on the server: a host's report, a manifest. Only plain store
    // paths go to nix, and after `--`, so neither can be read as an option or a flake.
    let running = StorePath::parse(running).map_err(|e| {
        Error::input(
            name,
            format!("the host's report names a running system that is {e}: refused (a host's report is untrusted input)"),
        )
    })?;
    let expected = StorePath::parse(expected).map_err(|e| {
        Error::input(
            name,
            format!("the current generation's manifest names an expected system that is {e}: refused; run `bento build {name}` and `bento deploy {name}`"),
        )
    })?;
    if running == expected {
        return Ok(Plan::Same(running.to_string()));
    }
    let pair = ["--".to_owned(), running.to_string(), expected.to_string()];
    if let Some(nvd) = find_program("nvd", path) {
        return Ok(Plan::Run(DiffCommand {
            program: nvd,
            args: ["diff".to_owned()].into_iter().chain(pair).collect(),
        }));
    }
    if let Some(nix) = find_program("nix", path) {
        let args = [
            "--extra-experimental-features",
            "nix-command",
            "--option",
            "max-jobs",
            "0",
            "--option",
            "substitute",
            "false",
            "store",
            "diff-closures",
        ];
        return Ok(Plan::Run(DiffCommand {
            program: nix,
            args: args.iter().map(|a| (*a).to_owned()).chain(pair).collect(),
        }));
    }
    Err(Error::input(
        name,
        "comparing closures needs `nvd` or `nix` on PATH, and neither is there: install Nix (and optionally nvd)",
    ))
}

/// The settings that keep nix from building or fetching anything.
pub const NO_BUILDS: &str = "max-jobs = 0\nsubstitute = false\nbuilders =\n";

/// The `NIX_CONFIG` a diff command runs with: the caller's own (`existing`), then
/// [`NO_BUILDS`], which wins over anything before it.
pub fn nix_config(existing: Option<&OsStr>) -> OsString {
    let mut config = existing.map(OsStr::to_owned).unwrap_or_default();
    if !config.is_empty() {
        config.push("\n");
    }
    config.push(NO_BUILDS);
    config
}

/// The first executable file named `program` in the directories of `path`.
pub fn find_program(program: &str, path: Option<&OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path?)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(program))
        .find(|file| {
            std::fs::metadata(file).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Status;

    const RUNNING: &str = "/nix/store/0c7a0n8gdq7q2rcwmpv8yyhpjwxvlmvs-nixos-system-web1-1.0";
    const EXPECTED: &str = "/nix/store/1c7a0n8gdq7q2rcwmpv8yyhpjwxvlmvs-nixos-system-web1-2.0";

    fn host(running: &str, expected: &str) -> HostStatus {
        let mut h: HostStatus = serde_json::from_value(serde_json::json!({
            "host": "web1", "in_fleet": true, "status": Status::Pending,
        }))
        .unwrap();
        h.reported_system = Some(running.to_owned());
        h.expected_system = Some(expected.to_owned());
        h
    }

    fn bin_with(programs: &[&str]) -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for p in programs {
            let file = dir.path().join(p);
            std::fs::write(&file, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        dir
    }

    #[test]
    fn a_reported_or_expected_derivation_is_refused_before_anything_runs() {
        let bin = bin_with(&["nix"]);
        let drv = "/nix/store/0c7a0n8gdq7q2rcwmpv8yyhpjwxvlmvs-nixos-system-web1.drv";
        let e = plan(&host(drv, EXPECTED), Some(bin.path().as_os_str()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("derivation") && e.contains("untrusted"), "{e}");
        let e = plan(&host(RUNNING, drv), Some(bin.path().as_os_str()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("derivation"), "{e}");
    }

    #[test]
    fn nix_runs_with_building_and_substituting_off() {
        let bin = bin_with(&["nix"]);
        let Plan::Run(command) = plan(&host(RUNNING, EXPECTED), Some(bin.path().as_os_str())).unwrap() else {
            panic!("a diff to run");
        };
        let args = command.args.join(" ");
        assert!(
            args.contains("--option max-jobs 0 --option substitute false store diff-closures -- "),
            "{args}"
        );
        assert!(args.ends_with(&format!("-- {RUNNING} {EXPECTED}")), "{args}");
        let config = nix_config(Some(OsStr::new("store = /tmp/s\nmax-jobs = 8")));
        let config = config.to_str().unwrap();
        // Later lines win in nix.conf syntax: ours come last.
        assert!(config.starts_with("store = /tmp/s\nmax-jobs = 8\n"), "{config}");
        assert!(config.ends_with(NO_BUILDS), "{config}");
        assert_eq!(nix_config(None), NO_BUILDS);
    }
}
