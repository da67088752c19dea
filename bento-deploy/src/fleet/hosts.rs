//! The hosts of a fleet: every `hosts/<name>/` directory. A directory with
//! `configuration.nix` is one host of that name; a directory with `flake.nix` holds the
//! hosts its `nixosConfigurations` name (listed with `nix flake show --json`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use bento_secrets::names::HostName;
use bento_secrets::Fleet;
use rayon::prelude::*;

use crate::error::Error;

/// Where host configurations live, relative to the fleet root.
pub const HOSTS_DIR: &str = "hosts";

/// How a host's system is described.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `configuration.nix`, built with `-I nixos-config=…`.
    Plain,
    /// One `nixosConfigurations.<name>` of a `flake.nix`.
    Flake,
}

/// One host of the fleet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// The host's name: its directory, or its `nixosConfigurations` attribute.
    pub name: String,
    /// Its configuration directory (absolute, or relative to the current dir).
    pub dir: PathBuf,
    /// The directory as shown to the user: `hosts/<dir>`.
    pub shown: String,
    /// Plain or flake.
    pub kind: Kind,
}

/// Lists every host of the fleet, sorted by name, each with a public key in
/// `keys/hosts/`. `nix` is the program used to list a flake's configurations.
pub fn discover(root: &Path, fleet: &Fleet, nix: &str) -> Result<Vec<Host>, Error> {
    let dir = root.join(HOSTS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(HOSTS_DIR, e)),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(HOSTS_DIR, e))?;
        let name = entry.file_name();
        let shown = format!("{HOSTS_DIR}/{}", name.to_string_lossy());
        let path = entry.path();
        // The entry's type comes with the listing; only symlinks need a stat.
        let is_dir = match entry.file_type() {
            Ok(t) if t.is_dir() => true,
            Ok(t) if !t.is_symlink() => false,
            _ => path.is_dir(),
        };
        if name.to_string_lossy().starts_with('.') || !is_dir {
            continue;
        }
        let Some(name) = name.to_str().filter(|n| HostName::is_valid(n)) else {
            return Err(Error::input(
                shown,
                "bad host directory name: rename it using letters, digits, `.`, `_` and `-`",
            ));
        };
        dirs.push((name.to_owned(), path, shown));
    }
    dirs.sort();

    // What each directory defines: a few stats per directory (and a `nix flake show` per
    // flake), so they run in parallel; the results are merged in name order, so the
    // first problem reported does not depend on timing.
    let defined: Vec<Result<Vec<(String, Kind)>, Error>> = dirs
        .par_iter()
        .map(|(dir_name, path, shown)| defines(dir_name, path, shown, fleet, nix))
        .collect();
    let mut hosts: BTreeMap<String, Host> = BTreeMap::new();
    for ((_, path, shown), found) in dirs.into_iter().zip(defined) {
        for (name, kind) in found? {
            if let Some(first) = hosts.get(&name) {
                return Err(Error::input(
                    shown,
                    format!(
                        "host `{name}` is also defined by {}; keep one of them",
                        first.shown
                    ),
                ));
            }
            if !fleet.hosts.contains_key(&name) {
                return Err(Error::input(
                    shown.clone(),
                    format!(
                        "host `{name}` has no public key: add keys/hosts/{name}.pub \
                         (its /etc/ssh/ssh_host_ed25519_key.pub)"
                    ),
                ));
            }
            let host = Host {
                name: name.clone(),
                dir: path.clone(),
                shown: shown.clone(),
                kind,
            };
            hosts.insert(name, host);
        }
    }
    Ok(hosts.into_values().collect())
}

/// The hosts one `hosts/<dir>/` defines: itself for a `configuration.nix`, the
/// `nixosConfigurations` of a `flake.nix`.
fn defines(
    dir_name: &str,
    path: &Path,
    shown: &str,
    fleet: &Fleet,
    nix: &str,
) -> Result<Vec<(String, Kind)>, Error> {
    if path.join("flake.nix").is_file() {
        let names = match flake_configurations(path, shown, nix) {
            Ok(names) => names,
            // Listing needs nix and the flake's inputs. When that fails offline (or
            // without nix), a flake dir named after a registered host is taken to
            // define that host, as a one-host flake does.
            Err(_) if fleet.hosts.contains_key(dir_name) => vec![dir_name.to_owned()],
            Err(e) => return Err(e),
        };
        Ok(names.into_iter().map(|name| (name, Kind::Flake)).collect())
    } else if path.join("configuration.nix").is_file() {
        Ok(vec![(dir_name.to_owned(), Kind::Plain)])
    } else {
        Err(Error::input(
            shown,
            "holds neither configuration.nix nor flake.nix; add one, or remove the directory",
        ))
    }
}

/// Keeps only the hosts named in `wanted` (all when empty). An unknown name is an error
/// (with the closest name, for a typo), and so is a fleet where no host is configured
/// at all: a build or deploy of nothing says what to create rather than doing nothing.
pub fn select(hosts: Vec<Host>, wanted: &[String], fleet: &Fleet) -> Result<Vec<Host>, Error> {
    if hosts.is_empty() && wanted.is_empty() {
        return Err(nothing_configured(fleet));
    }
    for name in wanted {
        if hosts.iter().any(|h| &h.name == name) {
            continue;
        }
        if fleet.hosts.contains_key(name) {
            return Err(Error::input(
                format!("{HOSTS_DIR}/{name}"),
                format!(
                    "host `{name}` has a key but no configuration: create {HOSTS_DIR}/{name}/configuration.nix \
                     (or a flake.nix defining nixosConfigurations.{name})"
                ),
            ));
        }
        let known = hosts
            .iter()
            .map(|h| h.name.as_str())
            .chain(fleet.hosts.keys().map(String::as_str));
        return Err(Error::input(
            format!("{HOSTS_DIR}/{name}"),
            format!(
                "no such host `{name}`{}: add {HOSTS_DIR}/{name}/configuration.nix, or check the name",
                bento_secrets::suggest::hint(name, known)
            ),
        ));
    }
    Ok(hosts
        .into_iter()
        .filter(|h| wanted.is_empty() || wanted.contains(&h.name))
        .collect())
}

/// The registered hosts (`keys/hosts/`) that no `hosts/` directory configures.
pub fn unconfigured<'a>(fleet: &'a Fleet, configured: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let configured: Vec<&str> = configured.into_iter().collect();
    fleet
        .hosts
        .keys()
        .map(String::as_str)
        .filter(|h| !configured.contains(h))
        .collect()
}

/// The error for a fleet without any configured host: what to create, for which hosts.
fn nothing_configured(fleet: &Fleet) -> Error {
    if fleet.hosts.is_empty() {
        return Error::input(
            HOSTS_DIR,
            format!(
                "no hosts in this fleet yet: register one with `bento host add NAME --key FILE`, \
                 then write its {HOSTS_DIR}/NAME/configuration.nix (or a flake.nix)"
            ),
        );
    }
    let names: Vec<&str> = fleet.hosts.keys().map(String::as_str).collect();
    Error::input(
        HOSTS_DIR,
        format!(
            "no host has a configuration, so there is nothing to do: {} {} registered (keys/hosts/) \
             but {HOSTS_DIR}/ configures none; create {HOSTS_DIR}/<name>/configuration.nix \
             (or {HOSTS_DIR}/<name>/flake.nix) for each",
            names.join(", "),
            if names.len() == 1 { "is" } else { "are" }
        ),
    )
}

/// The names of a flake's `nixosConfigurations`, through `nix flake show --json`.
fn flake_configurations(dir: &Path, shown: &str, nix: &str) -> Result<Vec<String>, Error> {
    let abs = std::path::absolute(dir).map_err(|e| Error::io(shown, e))?;
    let output = Command::new(nix)
        .args(["--extra-experimental-features", "nix-command flakes"])
        .args(["flake", "show", "--json", "--no-write-lock-file"])
        .arg(format!("path:{}", abs.display()))
        .output();
    let output = match output {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::input(
                format!("{shown}/flake.nix"),
                format!(
                    "listing a flake's nixosConfigurations needs `{nix}`, which is not on PATH: \
                     install Nix, or use a configuration.nix"
                ),
            ))
        }
        Err(e) => return Err(Error::io(format!("{shown}/flake.nix: running {nix}"), e)),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(Error::input(
            format!("{shown}/flake.nix"),
            format!("`nix flake show` failed: {}", last.trim()),
        ));
    }
    parse_flake_show(&output.stdout).map_err(|e| Error::input(format!("{shown}/flake.nix"), e.to_string()))
}

/// Why `nix flake show --json`'s output names no usable host.
#[derive(Debug, thiserror::Error)]
enum FlakeShowError {
    #[error("unreadable `nix flake show --json` output: {0}")]
    Unreadable(#[from] serde_json::Error),
    #[error("defines no nixosConfigurations; add one per host")]
    NoConfigurations,
    #[error("nixosConfigurations.{0}: bad host name (use letters, digits, `.`, `_` and `-`)")]
    BadName(String),
}

/// The `nixosConfigurations` names in the JSON of `nix flake show --json`.
fn parse_flake_show(json: &[u8]) -> Result<Vec<String>, FlakeShowError> {
    let value: serde_json::Value = serde_json::from_slice(json)?;
    let configs = value
        .get("nixosConfigurations")
        .and_then(|v| v.as_object())
        .filter(|configs| !configs.is_empty())
        .ok_or(FlakeShowError::NoConfigurations)?;
    match configs.keys().find(|name| !HostName::is_valid(name)) {
        Some(bad) => Err(FlakeShowError::BadName(bad.clone())),
        None => Ok(configs.keys().cloned().collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_flake_show;

    #[test]
    fn reads_flake_show_output() {
        let json = br#"{"nixosConfigurations":{"web1":{"type":"nixos-configuration"},"web2":{}}}"#;
        assert_eq!(parse_flake_show(json).unwrap(), ["web1", "web2"]);
        assert!(parse_flake_show(br#"{"packages":{}}"#)
            .unwrap_err()
            .to_string()
            .contains("no nixosConfigurations"));
        assert!(parse_flake_show(br#"{"nixosConfigurations":{"../x":{}}}"#)
            .unwrap_err()
            .to_string()
            .contains("bad host name"));
    }
}
