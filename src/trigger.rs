//! `bento trigger`: start an agent run through the trigger socket and stream its output
//! (the client, default); `--listen` serves the socket(s) itself; `--inetd` serves one
//! connection on stdin/stdout (systemd socket activation with `Accept=yes`). The work is
//! [`bento_deploy::agent::trigger`]'s.

use std::os::fd::AsFd;
use std::path::Path;
use std::process::ExitCode;

use bento_deploy::agent::config::AgentConfig;
use bento_deploy::agent::trigger::{self, Access, Served};

use crate::cli::TriggerArgs;
use crate::output;

pub fn run(args: TriggerArgs) -> anyhow::Result<ExitCode> {
    // The client needs agent.toml only to find the socket.
    if !args.listen && !args.inetd {
        if let Some(socket) = &args.socket {
            return client(socket);
        }
    }
    let config = AgentConfig::load(&args.config)?;
    if args.inetd {
        let access = Access::of(&config, &args.config)?;
        let conn = std::io::stdin().as_fd().try_clone_to_owned()?;
        return Ok(
            match trigger::serve_one(std::fs::File::from(conn), &access, &args.config, None)? {
                Served::Ran(true) => ExitCode::SUCCESS,
                Served::Ran(false) => ExitCode::FAILURE,
                Served::Refused(why) => {
                    output::error(&format!("trigger refused: {why}"));
                    ExitCode::FAILURE
                }
            },
        );
    }
    let socket = args.socket.unwrap_or_else(|| config.trigger_socket.clone());
    if args.listen {
        return listen(&config, &args.config, &socket);
    }
    client(&socket)
}

/// The client: the run's page on stdout; its success is the exit status.
fn client(socket: &Path) -> anyhow::Result<ExitCode> {
    let succeeded = trigger::client(socket, &mut std::io::stdout().lock())?;
    Ok(output::exit(succeeded))
}

/// Listens on the unix socket (and on TCP when `trigger_tcp = true`) until killed.
fn listen(config: &AgentConfig, config_path: &Path, socket: &Path) -> anyhow::Result<ExitCode> {
    let access = Access::of(config, config_path)?;
    let unix = trigger::listen_unix(socket, &access)?;
    let tcp = access.tcp.then(trigger::listen_tcp).transpose()?;
    let also = if tcp.is_some() {
        format!(" and {} (any local user)", trigger::TCP_ADDRESS)
    } else {
        String::new()
    };
    output::note(&format!(
        "trigger listening on {} (mode {:04o}{}){also}",
        socket.display(),
        access.socket_mode(),
        access
            .group
            .as_ref()
            .map_or(String::new(), |(name, _)| format!(", group {name}"))
    ));
    trigger::listen(unix, tcp, access, config_path, output::warn);
    Ok(ExitCode::SUCCESS)
}
