//! `bento agent`

use std::process::ExitCode;

use bento_deploy::agent::config::AgentConfig;
use bento_deploy::agent::{self, Outcome, RunOptions};
use bento_deploy::wire::report::Report;

use crate::cli::AgentArgs;
use crate::output;

pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let config = AgentConfig::load(&args.config)?;
    let outcome = agent::run(&config, &RunOptions { force: args.force })?;
    let (state, generation, line) = match outcome {
        Outcome::Ran(report) => return ran(&report, args.json),
        Outcome::UpToDate(g) => (
            "up-to-date",
            Some(g),
            format!("{}: up to date (bundle generation {g})", config.host),
        ),
        Outcome::NothingPublished => (
            "nothing-published",
            None,
            format!("{}: nothing published for this host yet", config.host),
        ),
        Outcome::SkippedFailed(g) => (
            "skipped",
            Some(g),
            format!(
                "{}: bundle generation {g} failed before; waiting for a newer one (or pass --force)",
                config.host
            ),
        ),
    };
    // Runs that did nothing still print one JSON document with `--json`: the same
    // `format`, `host`, `state` and `generation` as a report (see docs/reference.md).
    if args.json {
        let doc = serde_json::json!({
            "format": bento_deploy::wire::report::FORMAT,
            "host": config.host,
            "state": state,
            "generation": generation,
        });
        output::json(&doc)?;
    }
    output::note(&line);
    Ok(ExitCode::SUCCESS)
}

/// Prints the report of a run that did something.
fn ran(report: &Report, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        output::json(report)?;
    }
    let line = format!(
        "{}: bundle generation {} {}",
        report.host,
        report.generation,
        report.state.name()
    );
    if let Some(note) = &report.note {
        output::note(note);
    }
    if report.state.is_success() {
        output::ok(&format!("{line} in {} ms", report.duration_ms));
    } else {
        let error = report.error.as_deref().unwrap_or("failed");
        output::error(&format!("{line}: {error}"));
    }
    Ok(output::exit(report.state.is_success()))
}
