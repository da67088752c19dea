//! `bento agent`

use std::process::ExitCode;

use bento_deploy::agent::{self, Outcome, RunOptions};
use bento_deploy::agent_config::AgentConfig;
use bento_deploy::report::State;

use crate::cli::AgentArgs;
use crate::output;

pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let config = AgentConfig::load(&args.config).map_err(anyhow::Error::msg)?;
    let outcome = agent::run(&config, &RunOptions { force: args.force })?;
    let report = match outcome {
        Outcome::UpToDate(g) => {
            output::note(&format!("{}: up to date (generation {g})", config.host));
            return Ok(ExitCode::SUCCESS);
        }
        Outcome::NothingPublished => {
            output::note(&format!("{}: nothing published for this host yet", config.host));
            return Ok(ExitCode::SUCCESS);
        }
        Outcome::SkippedFailed(g) => {
            output::note(&format!(
                "{}: generation {g} failed before; waiting for a newer one (or pass --force)",
                config.host
            ));
            return Ok(ExitCode::SUCCESS);
        }
        Outcome::Ran(report) => report,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    let state = serde_json::to_value(report.state)?
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let line = format!("{}: generation {} {state}", report.host, report.generation);
    match (&report.state, &report.error) {
        (State::Applied | State::SecretsUpdated | State::SelfUpdated, _) => {
            output::ok(&format!("{line} in {} ms", report.duration_ms));
            Ok(ExitCode::SUCCESS)
        }
        (_, error) => {
            output::error(&format!("{line}: {}", error.as_deref().unwrap_or("failed")));
            Ok(ExitCode::FAILURE)
        }
    }
}
