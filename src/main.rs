//! The `bento` binary: parses the command line, calls the libraries, prints.

mod activate;
mod admin;
mod agent;
mod cli;
mod deploy;
mod flake;
mod host;
mod html;
mod locate;
mod output;
mod secret;
mod ssh;
mod status;
mod trigger;

use std::path::PathBuf;
use std::process::ExitCode;

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
    let cli = Cli::parse_args();
    match run(cli) {
        Ok(code) => code,
        // Whoever reads stdout stopped reading (`bento manpage | head -1`): what they
        // wanted has been written, so end quietly, with the status of a process killed by
        // SIGPIPE (128 + 13) as `cat` or `git` would, so a pipeline still sees it.
        Err(e) if broken_pipe(&e) => ExitCode::from(BROKEN_PIPE_EXIT),
        Err(e) => {
            output::error(&one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The exit status after stdout was closed by its reader: 128 + SIGPIPE.
const BROKEN_PIPE_EXIT: u8 = 141;

/// Whether a write to a closed pipe is anywhere in the error's chain.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // An agenix `--rules secrets.nix` and a status read from `--server-root` need no fleet.
    let lenient = match &cli.command {
        Command::Secret(args) => args.rules.is_some(),
        Command::Status(args) => args.server.server_root.is_some(),
        Command::Diff(args) => args.server.server_root.is_some(),
        Command::Log(args) => args.server.server_root.is_some(),
        _ => false,
    };
    let fleet = || locate::fleet_root(cli.fleet.clone(), lenient);
    match cli.command {
        // `init` makes a fleet where it is told to, never in a parent of the current dir.
        Command::Init => init(&cli.fleet.clone().unwrap_or_else(|| PathBuf::from("."))),
        Command::Completions { shell } => {
            // Generated in memory: the generator panics on a failed write.
            let mut script = Vec::new();
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "bento",
                &mut script,
            );
            output::write_stdout(&script)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Manpage => {
            let mut page = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut page)?;
            output::write_stdout(&page)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Host(cmd) => host::run(&fleet()?, cmd),
        Command::Admin(cmd) => admin::run(&fleet()?, cmd),
        Command::Secret(cmd) => secret::run(&fleet()?, cmd, cli.verbose),
        Command::Activate(args) => activate::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Trigger(args) => trigger::run(args),
        Command::Deploy(args) => deploy::deploy(&fleet()?, args),
        Command::Rollout(args) => deploy::rollout(&fleet()?, args),
        Command::Approve(args) => deploy::approve(&fleet()?, args),
        Command::Build(args) => deploy::build(&fleet()?, args),
        Command::Server(args) => deploy::server(&fleet()?, args),
        Command::Status(args) => status::status(&fleet()?, args),
        Command::Diff(args) => status::diff(&fleet()?, args),
        Command::Log(args) => status::log(&fleet()?, args),
        Command::Ssh(args) => ssh::run(&fleet()?, args),
        Command::FlakeUpdate(args) => flake::update(&fleet()?, args),
    }
}

fn init(root: &std::path::Path) -> anyhow::Result<ExitCode> {
    let written = bento_deploy::fleet::init::init(root)?;
    for file in &written {
        output::note(&format!("wrote {file}"));
    }
    output::ok(&format!(
        "new fleet in {}; next: `bento admin add NAME --key FILE` (you), `bento host add NAME --key FILE` \
         (each host), rules in secrets/secrets.toml",
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
