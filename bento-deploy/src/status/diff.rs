//! `bento diff HOST`: the closure diff between the system a host runs (its newest report)
//! and the one its current generation expects, through `nvd` when it is installed, else
//! `nix store diff-closures`.

use std::ffi::OsStr;
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
