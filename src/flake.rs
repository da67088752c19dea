//! `bento flake-update [INPUT]`: updates the lock of every flake in the fleet (its own
//! `flake.nix` and each `hosts/<dir>/flake.nix`) through `nix`, and names those whose
//! `flake.lock` changed, so the next `bento build` / `bento deploy` picks them up.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use crate::cli::FlakeUpdateArgs;
use crate::output;

/// The first Nix release whose `nix flake update` takes input names (and `--flake`).
const INPUTS_AS_ARGS: (u32, u32) = (2, 19);

/// One flake of the fleet: its directory and how it is named in messages.
struct Flake {
    dir: PathBuf,
    /// The host directory's name, or `None` for the fleet's own flake.
    host: Option<String>,
}

impl Flake {
    fn shown(&self) -> String {
        match &self.host {
            Some(h) => format!("{}/{h}/flake.nix", bento_deploy::fleet::hosts::HOSTS_DIR),
            None => "flake.nix".into(),
        }
    }
}

pub fn update(fleet: &Path, args: FlakeUpdateArgs) -> anyhow::Result<ExitCode> {
    if let Some(input) = &args.input {
        if input.is_empty() || input.starts_with('-') || input.contains(char::is_whitespace) {
            anyhow::bail!("`{}` is not a flake input name", input.escape_default());
        }
    }
    let flakes = flakes(fleet)?;
    if flakes.is_empty() {
        anyhow::bail!(
            "{}: no flake.nix here nor in any {}/<name>/: nothing to update",
            fleet.display(),
            bento_deploy::fleet::hosts::HOSTS_DIR
        );
    }
    let new_nix = nix_version()? >= INPUTS_AS_ARGS;
    let mut changed = Vec::new();
    for flake in &flakes {
        let lock = flake.dir.join("flake.lock");
        let before = std::fs::read(&lock).ok();
        let dir = std::fs::canonicalize(&flake.dir).map_err(|e| anyhow::anyhow!("{}: {e}", flake.shown()))?;
        // A plain directory, as `bento build` names it: inside a git repository Nix reads
        // it as `git+file:` (tracked files only, so nothing stray is copied to the
        // world-readable store), else as `path:`.
        let reference = dir.display().to_string();
        let mut cmd = Command::new("nix");
        cmd.args(["--extra-experimental-features", "nix-command flakes"]);
        match (&args.input, new_nix) {
            (None, true) => cmd.args(["flake", "update", "--flake", &reference]),
            (None, false) => cmd.args(["flake", "update", &reference]),
            (Some(input), true) => cmd.args(["flake", "update", "--flake", &reference, "--", input]),
            (Some(input), false) => cmd.args(["flake", "lock", "--update-input", input, &reference]),
        };
        let ran = cmd
            .status()
            .map_err(|e| anyhow::anyhow!("{}: running nix: {e} (flake-update needs Nix)", flake.shown()))?;
        if !ran.success() {
            anyhow::bail!(
                "{}: updating its lock failed ({ran}; nix's message is above){}",
                flake.shown(),
                if changed.is_empty() {
                    String::new()
                } else {
                    format!("; already updated: {}", changed.join(", "))
                }
            );
        }
        if std::fs::read(&lock).ok() != before {
            let name = flake
                .host
                .clone()
                .unwrap_or_else(|| "the fleet's own flake".into());
            output::outln!(
                "{name}: {} changed",
                flake.shown().replace("flake.nix", "flake.lock")
            )?;
            changed.push(name);
        }
    }
    if changed.is_empty() {
        output::ok(&format!("no lock changed ({} flakes)", flakes.len()));
    } else {
        output::ok(&format!(
            "{} of {} locks changed; `bento build` and `bento deploy` pick them up",
            changed.len(),
            flakes.len()
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// The fleet's flakes: its own, then each host directory's, by name.
fn flakes(fleet: &Path) -> anyhow::Result<Vec<Flake>> {
    let mut flakes = Vec::new();
    if fleet.join("flake.nix").is_file() {
        flakes.push(Flake {
            dir: fleet.to_path_buf(),
            host: None,
        });
    }
    let hosts = fleet.join(bento_deploy::fleet::hosts::HOSTS_DIR);
    let entries = match std::fs::read_dir(&hosts) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(flakes),
        Err(e) => anyhow::bail!("{}: {e}", hosts.display()),
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
fn nix_version() -> anyhow::Result<(u32, u32)> {
    let out = Command::new("nix")
        .arg("--version")
        .output()
        .map_err(|e| anyhow::anyhow!("running nix: {e} (flake-update needs Nix on PATH)"))?;
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
        _ => anyhow::bail!(
            "`nix --version` said `{}`: not a version bento knows",
            text.trim()
        ),
    }
}
