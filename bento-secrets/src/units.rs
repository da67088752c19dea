//! What an activation does with the units of changed secrets: restart them with
//! `systemctl`, hand them to NixOS's `switch-to-configuration` (from NixOS activation,
//! where `systemctl` must not be called and is not even on `PATH`), or leave them (at
//! boot, where they start after activation anyway). A restart is only reported as done
//! when `systemctl` said so.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Where NixOS's `switch-to-configuration` looks for units that activation asks it to
/// restart or reload.
pub const NIXOS_RUN_DIR: &str = "/run/nixos";

/// The list of units to restart, under [`NIXOS_RUN_DIR`].
pub const RESTART_LIST: &str = "activation-restart-list";

/// The list of units to reload, under [`NIXOS_RUN_DIR`].
pub const RELOAD_LIST: &str = "activation-reload-list";

/// The `systemctl` of the running NixOS system, tried before `PATH`.
pub const NIXOS_SYSTEMCTL: &str = "/run/current-system/sw/bin/systemctl";

/// How units are restarted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnitControl {
    /// `PROGRAM try-restart UNIT…` and `PROGRAM try-reload-or-restart UNIT…`.
    Systemctl(String),
    /// Appended, one per line, to `<dir>/activation-restart-list` and
    /// `<dir>/activation-reload-list`: `switch-to-configuration` restarts them after
    /// activation.
    Queue(PathBuf),
    /// Not restarted.
    Leave,
}

/// What was done with the units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Handled {
    /// `systemctl` restarted them.
    Restarted,
    /// Handed to `switch-to-configuration`, which restarts them after activation.
    Queued,
    /// Left alone, as asked.
    NotRestarted,
    /// A dry run: nothing was done.
    WouldRestart,
}

/// `systemctl` by absolute path where NixOS has it (activation and services may run
/// with a `PATH` that lacks it), else from `PATH`.
pub fn default_systemctl() -> String {
    if Path::new(NIXOS_SYSTEMCTL).exists() {
        NIXOS_SYSTEMCTL.to_owned()
    } else {
        "systemctl".to_owned()
    }
}

/// Restarts `restart` and reloads `reload` as `control` says. The error is one line
/// naming the command or the list file; nothing is claimed done when it fails.
pub fn hand_over(control: &UnitControl, restart: &[String], reload: &[String]) -> Result<Handled, String> {
    match control {
        UnitControl::Leave => Ok(Handled::NotRestarted),
        UnitControl::Queue(dir) => {
            for (list, units) in [(RESTART_LIST, restart), (RELOAD_LIST, reload)] {
                if !units.is_empty() {
                    append(&dir.join(list), units)?;
                }
            }
            Ok(Handled::Queued)
        }
        UnitControl::Systemctl(program) => {
            for (verb, units) in [("try-restart", restart), ("try-reload-or-restart", reload)] {
                if units.is_empty() {
                    continue;
                }
                // Units are `UnitName`s (checked in the rules and again in the manifest):
                // none starts with `-`, so none is read as an option.
                let status = std::process::Command::new(program)
                    .arg(verb)
                    .args(units)
                    .status()
                    .map_err(|e| format!("could not run `{program}`: {e}; pass --systemctl PROGRAM"))?;
                if !status.success() {
                    return Err(format!(
                        "`{program} {verb} {}` failed ({status})",
                        units.join(" ")
                    ));
                }
            }
            Ok(Handled::Restarted)
        }
    }
}

/// Appends one unit per line to `path` (created 0644 if missing, never through a symlink).
fn append(path: &Path, units: &[String]) -> Result<(), String> {
    let shown = path.display();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(|e| format!("{shown}: {e}"))?;
    let text: String = units.iter().map(|u| format!("{u}\n")).collect();
    file.write_all(text.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| format!("{shown}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_units_are_appended_one_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("nixos");
        let q = UnitControl::Queue(run.clone());
        let units = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(hand_over(&q, &units(&["a.service"]), &[]), Ok(Handled::Queued));
        assert_eq!(
            hand_over(&q, &units(&["b.service", "c.service"]), &units(&["d.service"])),
            Ok(Handled::Queued)
        );
        let restart = std::fs::read_to_string(run.join(RESTART_LIST)).unwrap();
        assert_eq!(restart, "a.service\nb.service\nc.service\n");
        let reload = std::fs::read_to_string(run.join(RELOAD_LIST)).unwrap();
        assert_eq!(reload, "d.service\n");
    }

    #[test]
    fn a_failing_systemctl_is_an_error_not_a_restart() {
        let units = vec!["a.service".to_string()];
        let err = hand_over(&UnitControl::Systemctl("false".into()), &units, &[]).unwrap_err();
        assert!(err.contains("`false try-restart a.service` failed"), "{err}");
        let err = hand_over(
            &UnitControl::Systemctl("/nonexistent/systemctl".into()),
            &units,
            &[],
        )
        .unwrap_err();
        assert!(err.contains("could not run"), "{err}");
    }
}
