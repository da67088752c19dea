//! What an activation does with the units of changed secrets: restart and reload them
//! with `systemctl`, or leave them (at boot, where they start after activation anyway).
//! Inside a systemd unit (a switch, the agent, bento's own services) or from NixOS
//! activation, the jobs are queued with `--no-block`: waiting there for a unit that is
//! ordered after the caller would never end. A restart is only reported as done (or
//! queued) when `systemctl` said so.

use std::path::Path;

use serde::Serialize;

/// The `systemctl` of the running NixOS system, tried before `PATH`.
pub const NIXOS_SYSTEMCTL: &str = "/run/current-system/sw/bin/systemctl";

/// How units are restarted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnitControl {
    /// `PROGRAM try-restart UNIT…` and `PROGRAM try-reload-or-restart UNIT…`.
    Systemctl {
        /// The `systemctl` to run.
        program: String,
        /// Pass `--no-block`: queue the jobs, do not wait for them.
        no_block: bool,
    },
    /// Not restarted.
    Leave,
}

/// What was done with the units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Handled {
    /// `systemctl` restarted them.
    Restarted,
    /// `systemctl --no-block` queued their restart with systemd.
    Queued,
    /// Left alone, as asked.
    NotRestarted,
    /// A dry run: nothing was done.
    WouldRestart,
}

/// Why the units were not handed over; nothing is claimed done then.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnitsError {
    /// `systemctl` could not be started.
    #[error("could not run `{program}`: {source}; pass --systemctl PROGRAM")]
    Run {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `systemctl` ran and failed.
    #[error("`{command}` failed ({status})")]
    Failed {
        /// The command line, program and arguments.
        command: String,
        /// How it ended.
        status: std::process::ExitStatus,
    },
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

/// Whether this process runs inside a systemd unit: systemd sets `INVOCATION_ID` for
/// every process it starts for a unit.
pub fn inside_unit() -> bool {
    std::env::var_os("INVOCATION_ID").is_some_and(|v| !v.is_empty())
}

/// Restarts `restart` and reloads `reload` as `control` says. The error is one line
/// naming the command; nothing is claimed done when it fails.
pub fn hand_over(
    control: &UnitControl,
    restart: &[String],
    reload: &[String],
) -> Result<Handled, UnitsError> {
    let (program, no_block) = match control {
        UnitControl::Leave => return Ok(Handled::NotRestarted),
        UnitControl::Systemctl { program, no_block } => (program, *no_block),
    };
    for (verb, units) in [("try-restart", restart), ("try-reload-or-restart", reload)] {
        if units.is_empty() {
            continue;
        }
        let flags: &[&str] = if no_block { &["--no-block"] } else { &[] };
        // Units are `UnitName`s (checked in the rules and again in the manifest): none
        // starts with `-`, so none is read as an option.
        let status = std::process::Command::new(program)
            .args(flags)
            .arg(verb)
            .args(units)
            .status()
            .map_err(|source| UnitsError::Run {
                program: program.clone(),
                source,
            })?;
        if !status.success() {
            let shown: Vec<&str> = flags
                .iter()
                .copied()
                .chain([verb])
                .chain(units.iter().map(String::as_str))
                .collect();
            return Err(UnitsError::Failed {
                command: format!("{program} {}", shown.join(" ")),
                status,
            });
        }
    }
    Ok(if no_block {
        Handled::Queued
    } else {
        Handled::Restarted
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn systemctl(program: &str, no_block: bool) -> UnitControl {
        UnitControl::Systemctl {
            program: program.to_owned(),
            no_block,
        }
    }

    #[test]
    fn a_failing_systemctl_is_an_error_not_a_restart() {
        let units = vec!["a.service".to_string()];
        let err = hand_over(&systemctl("false", false), &units, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`false try-restart a.service` failed"), "{err}");
        let err = hand_over(&systemctl("false", true), &units, &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`false --no-block try-restart a.service` failed"),
            "{err}"
        );
        let err = hand_over(&systemctl("/nonexistent/systemctl", false), &units, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("could not run"), "{err}");
    }

    #[test]
    fn no_block_queues_and_blocking_restarts() {
        let units = vec!["a.service".to_string()];
        assert_eq!(
            hand_over(&systemctl("true", true), &units, &[]).map_err(|e| e.to_string()),
            Ok(Handled::Queued)
        );
        assert_eq!(
            hand_over(&systemctl("true", false), &units, &units).map_err(|e| e.to_string()),
            Ok(Handled::Restarted)
        );
        assert_eq!(
            hand_over(&UnitControl::Leave, &units, &[]).map_err(|e| e.to_string()),
            Ok(Handled::NotRestarted)
        );
    }
}
