//! `bento trigger`: start an agent run through the trigger socket and stream its output
//! (the client, default); `--listen` serves the socket(s) itself; `--inetd` serves one
//! connection on stdin/stdout (systemd socket activation with `Accept=yes`).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};

use anyhow::Context;
use bento_deploy::agent::config::AgentConfig;
use bento_deploy::agent::trigger::{self, Access};

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
        return Ok(match serve(std::fs::File::from(conn), &access, &args.config)? {
            Served::Ran(true) => ExitCode::SUCCESS,
            Served::Ran(false) => ExitCode::FAILURE,
            Served::Refused(why) => {
                output::error(&format!("trigger refused: {why}"));
                ExitCode::FAILURE
            }
        });
    }
    let socket = args.socket.unwrap_or_else(|| config.trigger_socket.clone());
    if args.listen {
        return listen(&config, &args.config, &socket);
    }
    client(&socket)
}

/// The client: asks the trigger for a run and copies the page to stdout.
fn client(socket: &Path) -> anyhow::Result<ExitCode> {
    let shown = socket.display();
    let mut conn = UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => anyhow::anyhow!(
            "{shown}: permission denied: only root and members of trigger_group (agent.toml) may trigger a run"
        ),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => anyhow::anyhow!(
            "{shown}: nobody listens there: is the trigger running (bento-trigger.socket, or `bento trigger --listen`)?"
        ),
        _ => anyhow::anyhow!("{shown}: {e}"),
    })?;
    conn.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .with_context(|| format!("{shown}: sending the request"))?;
    let mut page = BufReader::new(conn);
    let mut status = String::new();
    page.read_line(&mut status)
        .with_context(|| format!("{shown}: reading the answer"))?;
    let mut header = String::new();
    while page.read_line(&mut header).is_ok_and(|n| n > 0) && !header.trim_end().is_empty() {
        header.clear();
    }
    let mut body = String::new();
    if !status.starts_with("HTTP/1.1 200") {
        let _ = page.read_to_string(&mut body);
        let why = body
            .trim()
            .strip_prefix("refused: ")
            .unwrap_or(body.trim())
            .to_owned();
        if status.is_empty() {
            anyhow::bail!("{shown}: the trigger closed the connection without an answer");
        }
        anyhow::bail!("the trigger refused: {why}");
    }
    let mut out = std::io::stdout().lock();
    let mut last = String::new();
    let mut line = String::new();
    while page.read_line(&mut line)? > 0 {
        out.write_all(line.as_bytes())?;
        out.flush()?;
        if !line.trim().is_empty() {
            last = line.trim().to_owned();
        }
        line.clear();
    }
    match last.as_str() {
        "done" => Ok(ExitCode::SUCCESS),
        "FAILED" => Ok(ExitCode::FAILURE),
        _ => anyhow::bail!("{shown}: the connection ended before the run did"),
    }
}

/// Listens on the unix socket (and on TCP when `trigger_tcp = true`) until killed; each
/// connection is served on its own thread.
fn listen(config: &AgentConfig, config_path: &Path, socket: &Path) -> anyhow::Result<ExitCode> {
    let access = Access::of(config, config_path)?;
    let unix = trigger::listen_unix(socket, &access)?;
    let tcp = if access.tcp {
        Some(trigger::listen_tcp()?)
    } else {
        None
    };
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
    let config_path = config_path.to_path_buf();
    if let Some(tcp) = tcp {
        let (access, config_path) = (access.clone(), config_path.clone());
        std::thread::spawn(move || {
            for conn in tcp.incoming().flatten() {
                spawn_serve(conn, access.clone(), config_path.clone());
            }
        });
    }
    for conn in unix.incoming() {
        match conn {
            Ok(conn) => spawn_serve(conn, access.clone(), config_path.clone()),
            Err(e) => output::warn(&format!("{}: accepting a connection: {e}", socket.display())),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn spawn_serve<C>(conn: C, access: Access, config_path: PathBuf)
where
    C: Read + Write + AsFd + Send + 'static,
{
    std::thread::spawn(move || match serve(conn, &access, &config_path) {
        Ok(Served::Refused(why)) => output::warn(&format!("trigger refused: {why}")),
        Ok(Served::Ran(_)) => {}
        Err(e) => output::warn(&format!("trigger connection: {e:#}")),
    });
}

/// What became of a connection.
enum Served {
    /// The peer may not trigger a run: why.
    Refused(String),
    /// A run happened; whether it succeeded.
    Ran(bool),
}

/// Serves one connection: checks the peer, reads the request (whatever it is), answers
/// with a plain-text page that streams a `bento agent --once` run. A refused peer gets a
/// 403 with the reason, and no run.
fn serve<C: Read + Write + AsFd>(mut conn: C, access: &Access, config_path: &Path) -> anyhow::Result<Served> {
    let allowed = access.check_peer(conn.as_fd());
    trigger::read_request_head(&mut conn);
    if let Err(refused) = allowed {
        let _ = conn.write_all(
            format!(
                "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n\
                 refused: {refused}\n"
            )
            .as_bytes(),
        );
        return Ok(Served::Refused(refused.to_string()));
    }
    conn.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n",
    )?;
    conn.flush()?;
    let to_client = || -> anyhow::Result<Stdio> { Ok(Stdio::from(conn.as_fd().try_clone_to_owned()?)) };
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(["agent", "--once", "--config"])
        .arg(config_path)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(to_client()?)
        .stderr(to_client()?)
        .status()?;
    writeln!(conn, "\n{}", if status.success() { "done" } else { "FAILED" })?;
    Ok(Served::Ran(status.success()))
}
