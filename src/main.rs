//! The `bento` binary: parses the command line, calls the libraries, prints.

mod activate;
mod agent;
mod cli;
mod deploy;
mod host;
mod output;
mod secret;
mod status;
mod trigger;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        output::error(&format!(
            "internal error{at}: {msg} (this is a bug in bento; please report it)"
        ));
    }));
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            output::error(&one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let fleet = cli.fleet.unwrap_or_else(|| PathBuf::from("."));
    match cli.command {
        Command::Init => init(&fleet),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "bento",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Manpage => {
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Host(cmd) => host::run(&fleet, cmd),
        Command::Secret(cmd) => secret::run(&fleet, cmd, cli.verbose),
        Command::Activate(args) => activate::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Trigger(args) => trigger::run(args),
        Command::Deploy(args) => deploy::deploy(&fleet, args),
        Command::Build(args) => deploy::build(&fleet, args),
        Command::Server(args) => deploy::server(&fleet, args),
        Command::Status(args) => status::status(&fleet, args),
        Command::Diff(args) => status::diff(&fleet, args),
    }
}

fn init(root: &std::path::Path) -> anyhow::Result<ExitCode> {
    let written = bento_deploy::init::init(root)?;
    for file in &written {
        output::note(&format!("wrote {file}"));
    }
    output::ok(&format!(
        "new fleet in {}; next: add host keys to keys/hosts/, your key to keys/admins/, rules to secrets/secrets.toml",
        root.display()
    ));
    Ok(ExitCode::SUCCESS)
}

/// The error and its causes on one line, skipping causes the message already includes.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}
