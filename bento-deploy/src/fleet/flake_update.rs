//! `bento flake-update [INPUT]`: updates the lock of every flake in the fleet (its own
//! `flake.nix` and each `hosts/<dir>/flake.nix`) through `nix`, and says which
//! `flake.lock` changed, so the next `bento build` / `bento deploy` picks them up.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use crate::fleet::hosts::HOSTS_DIR;

/// The first Nix release whose `nix flake update` takes input names (and `--flake`).
const INPUTS_AS_ARGS: (u32, u32) = (2, 19);

/// Why a flake's lock could not be updated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlakeUpdateError {
    /// INPUT is empty, an option, or holds a space.
    #[error("`{}` is not a flake input name", .0.escape_default())]
    BadInput(String),
    /// Neither the fleet nor any host directory has a `flake.nix`.
    #[error("{}: no flake.nix here nor in any {HOSTS_DIR}/<name>/: nothing to update", .0.display())]
    NoFlake(PathBuf),
    /// The fleet's `hosts/` could not be listed.
    #[error("{}: {source}", .path.display())]
    Hosts {
        /// `hosts/`.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A flake's directory could not be resolved.
    #[error("{shown}: {source}")]
    Dir {
        /// The flake, as shown.
        shown: String,
        /// Why.
        source: std::io::Error,
    },
    /// `nix` could not be started.
    #[error("{shown}running nix: {source} (flake-update needs Nix{})", if .shown.is_empty() { " on PATH" } else { "" })]
    NoNix {
        /// The flake (`"<flake>: "`), or empty when asking nix its version.
        shown: String,
        /// Why.
        source: std::io::Error,
    },
    /// `nix --version` printed something else than a version.
    #[error("`nix --version` said `{0}`: not a version bento knows")]
    NixVersion(String),
    /// nix failed on this flake (its message went to stderr).
    #[error("{shown}: updating its lock failed ({status}; nix's message is above)")]
    Failed {
        /// The flake, as shown.
        shown: String,
        /// nix's exit status.
        status: ExitStatus,
    },
}

/// One flake of the fleet: its directory and how it is named in messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flake {
    dir: PathBuf,
    /// The host directory's name, or `None` for the fleet's own flake.
    host: Option<String>,
}

impl Flake {
    /// `hosts/<name>/flake.nix`, or `flake.nix` for the fleet's own.
    pub fn shown(&self) -> String {
        match &self.host {
            Some(h) => format!("{HOSTS_DIR}/{h}/flake.nix"),
            None => "flake.nix".into(),
        }
    }

    /// The host's name, or "the fleet's own flake".
    pub fn name(&self) -> String {
        self.host
            .clone()
            .unwrap_or_else(|| "the fleet's own flake".into())
    }
}

/// What to update: every flake of the fleet, and every input or only one.
#[derive(Debug)]
pub struct FlakeUpdate {
    /// The fleet's flakes: its own, then each host directory's, by name.
    pub flakes: Vec<Flake>,
    input: Option<String>,
    /// Whether nix takes input names as arguments (2.19 and later).
    new_nix: bool,
}

impl FlakeUpdate {
    /// The flakes of the fleet at `fleet`, the input checked, nix's version asked.
    pub fn plan(fleet: &Path, input: Option<&str>) -> Result<FlakeUpdate, FlakeUpdateError> {
        if let Some(input) = input {
            if input.is_empty() || input.starts_with('-') || input.contains(char::is_whitespace) {
                return Err(FlakeUpdateError::BadInput(input.to_owned()));
            }
        }
        let flakes = flakes(fleet)?;
        if flakes.is_empty() {
            return Err(FlakeUpdateError::NoFlake(fleet.to_path_buf()));
        }
        Ok(FlakeUpdate {
            flakes,
            input: input.map(str::to_owned),
            new_nix: nix_version()? >= INPUTS_AS_ARGS,
        })
    }

    /// Updates `flake`'s lock; whether its `flake.lock` changed.
    pub fn update(&self, flake: &Flake) -> Result<bool, FlakeUpdateError> {
        let lock = flake.dir.join("flake.lock");
        let before = std::fs::read(&lock).ok();
        let dir = std::fs::canonicalize(&flake.dir).map_err(|source| FlakeUpdateError::Dir {
            shown: flake.shown(),
            source,
        })?;
        // A plain directory, as `bento build` names it: inside a git repository Nix reads
        // it as `git+file:` (tracked files only, so nothing stray is copied to the
        // world-readable store), else as `path:`.
        let reference = dir.display().to_string();
        let mut cmd = Command::new("nix");
        cmd.args(["--extra-experimental-features", "nix-command flakes"]);
        match (&self.input, self.new_nix) {
            (None, true) => cmd.args(["flake", "update", "--flake", &reference]),
            (None, false) => cmd.args(["flake", "update", &reference]),
            (Some(input), true) => cmd.args(["flake", "update", "--flake", &reference, "--", input]),
            (Some(input), false) => cmd.args(["flake", "lock", "--update-input", input, &reference]),
        };
        let status = cmd.status().map_err(|source| FlakeUpdateError::NoNix {
            shown: format!("{}: ", flake.shown()),
            source,
        })?;
        if !status.success() {
            return Err(FlakeUpdateError::Failed {
                shown: flake.shown(),
                status,
            });
        }
        Ok(std::fs::read(&lock).ok() != before)
    }
}

/// The fleet's flakes: its own, then each host directory's, by name.
fn flakes(fleet: &Path) -> Result<Vec<Flake>, FlakeUpdateError> {
    let mut flakes = Vec::new();
    if fleet.join("flake.nix").is_file() {
        flakes.push(Flake {
            dir: fleet.to_path_buf(),
            host: None,
        });
    }
    let hosts = fleet.join(HOSTS_DIR);
    let entries = match std::fs::read_dir(&hosts) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(flakes),
        Err(source) => return Err(FlakeUpdateError::Hosts { path: hosts, source }),
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| bento_secrets::names::HostName::is_valid(n) && hosts.join(n).join("flake.nix").is_file())
        .collect();
    names.sort_unstable();
    flakes.extend(names.into_iter().map(|name| Flake {
        dir: hosts.join(&name),
        host: Some(name),
    }));
    Ok(flakes)
}

/// The (major, minor) version of `nix` on PATH (`nix (Nix) 2.8.0`).
fn nix_version() -> Result<(u32, u32), FlakeUpdateError> {
    let out = Command::new("nix")
        .arg("--version")
        .output()
        .map_err(|source| FlakeUpdateError::NoNix {
            shown: String::new(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().last().unwrap_or_default();
    let mut parts = version.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u32>()
    });
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => Ok((major, minor)),
        _ => Err(FlakeUpdateError::NixVersion(text.trim().to_owned())),
    }
}
