//! `[health]`: after a switch, or a secrets-only update, is the host well? The checks run
//! after `settle`, again every few seconds until they all pass or `timeout` is over (never
//! past the run's deadline; a check still running then is stopped with everything it
//! started). What a check prints is the host's: only its first line is kept, escaped and
//! bounded, for the report.

use std::time::{Duration, Instant};

use bento_secrets::error::escape_controls;

use crate::agent::command::{capture, first_line, Ended};
use crate::agent::config::{CommandLine, Health};
use crate::wire::report::Unhealthy;

/// How long to wait between two rounds of checks.
const AGAIN: Duration = Duration::from_secs(2);
/// The most characters of a check's output (or a unit list) kept for the report.
const SHOWN: usize = 200;

/// Runs the checks of `health` until they pass (`None`) or `timeout` ends, or the run's
/// `deadline`: then the last failure.
pub(super) fn check(health: &Health, deadline: Instant) -> Option<Unhealthy> {
    if !health.any() {
        return None;
    }
    let start = Instant::now();
    let until = (start + health.settle.duration() + health.timeout.duration()).min(deadline);
    sleep_until((start + health.settle.duration()).min(until));
    loop {
        let failure = round(health, until);
        if failure.is_none() || Instant::now() + AGAIN >= until {
            return failure;
        }
        sleep_until(Instant::now() + AGAIN);
    }
}

fn sleep_until(when: Instant) {
    std::thread::sleep(when.saturating_duration_since(Instant::now()));
}

/// One round: the failed units, then each command; the first failure.
fn round(health: &Health, until: Instant) -> Option<Unhealthy> {
    if health.failed_units {
        if let Some(failure) = failed_units(&health.systemctl, until) {
            return Some(failure);
        }
    }
    health.commands.iter().find_map(|line| command(line, until))
}

/// `systemctl --failed`: any unit listed fails the check.
fn failed_units(systemctl: &str, until: Instant) -> Option<Unhealthy> {
    let args = ["--failed", "--no-legend", "--plain", "--no-pager"].map(String::from);
    // The units listed, or why none could be (never empty).
    let output = match capture(systemctl, &args, until).stdout_if_success() {
        Ok(out) => out
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect::<Vec<_>>()
            .join(", "),
        Err(why) => why.to_string(),
    };
    (!output.is_empty()).then(|| Unhealthy {
        check: "failed units".into(),
        output: shown(&output),
    })
}

/// One command: it must exit 0 before `until`.
fn command(line: &CommandLine, until: Instant) -> Option<Unhealthy> {
    let captured = capture(line.program(), line.args(), until);
    let output = match &captured.ended {
        Ended::Exited(status) if status.success() => return None,
        // Its first line on stdout, else on stderr, else how it ended.
        Ended::Exited(status) => [&captured.stdout, &captured.stderr]
            .into_iter()
            .map(|out| first_line(out))
            .find(|line| !line.is_empty())
            .map_or_else(|| format!("({status})"), shown),
        Ended::Stopped => "(stopped: it did not end before the health timeout or the run's deadline)".into(),
        Ended::Broken(why) => shown(why),
    };
    Some(Unhealthy {
        check: shown(&format!("command: {line}")),
        output,
    })
}

/// `text` as a report may carry it: control characters escaped, at most [`SHOWN`]
/// characters.
fn shown(text: &str) -> String {
    let escaped = escape_controls(text);
    match escaped.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}…", &escaped[..cut]),
        None => escaped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::TimeSpan;

    fn health(commands: &[&[&str]], timeout: u64) -> Health {
        Health {
            commands: commands
                .iter()
                .map(|words| {
                    CommandLine::from_words(words[0].into(), words[1..].iter().map(|w| (*w).into()).collect())
                })
                .collect(),
            settle: TimeSpan::parse("1s", 10).unwrap(),
            timeout: TimeSpan::parse(&format!("{timeout}s"), 100).unwrap(),
            ..Health::default()
        }
    }

    #[test]
    fn passing_checks_are_healthy_and_no_checks_wait_for_nothing() {
        let far = Instant::now() + Duration::from_secs(60);
        assert_eq!(check(&health(&[&["true"]], 5), far), None);
        let started = Instant::now();
        assert_eq!(check(&Health::default(), far), None);
        assert!(started.elapsed() < Duration::from_millis(100));
    }

    #[test]
    fn a_failing_check_names_itself_and_its_first_line_escaped() {
        let far = Instant::now() + Duration::from_secs(60);
        let h = health(
            &[
                &["true"],
                &["sh", "-c", "printf 'down\\033[2J\\nmore\\n'; exit 7"],
            ],
            1,
        );
        let failure = check(&h, far).unwrap();
        assert_eq!(
            failure.check,
            "command: sh -c 'printf '\\''down\\033[2J\\nmore\\n'\\''; exit 7'"
        );
        assert_eq!(failure.output, "down\\u{1b}[2J");
        assert!(!failure.output.contains('\u{1b}'));
    }

    #[test]
    fn a_hanging_check_is_cut_at_the_deadline() {
        let started = Instant::now();
        let failure = check(
            &health(&[&["sleep", "30"]], 60),
            Instant::now() + Duration::from_secs(2),
        )
        .unwrap();
        assert!(failure.output.contains("stopped"), "{failure:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn failed_units_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let systemctl = dir.path().join("systemctl");
        std::fs::write(&systemctl, "#!/bin/sh\necho 'app.service loaded failed failed App'\necho 'db.service loaded failed failed DB'\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();
        let h = Health {
            failed_units: true,
            systemctl: systemctl.display().to_string(),
            ..health(&[], 1)
        };
        let failure = check(&h, Instant::now() + Duration::from_secs(60)).unwrap();
        assert_eq!(
            (failure.check.as_str(), failure.output.as_str()),
            ("failed units", "app.service, db.service")
        );
    }
}
