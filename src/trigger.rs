//! `bento trigger`: start an agent run through the trigger socket and stream its output
//! (the client, default); `--listen` serves the socket(s) itself; `--inetd` serves one
//! connection on stdin/stdout (systemd socket activation with `Accept=yes`).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, TryLockError};

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
        return Ok(
            match serve(std::fs::File::from(conn), &access, &args.config, None)? {
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
/// connection is served on its own thread, at most [`MAX_CONNECTIONS`] at once, and one
/// run at a time: a request while a run goes on is refused (409), not queued.
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
    let shared = Arc::new(Shared {
        access,
        config_path: config_path.to_path_buf(),
        connections: AtomicUsize::new(0),
        run: Mutex::new(()),
    });
    if let Some(tcp) = tcp {
        let shared = shared.clone();
        std::thread::spawn(move || {
            for conn in tcp.incoming().flatten() {
                spawn_serve(conn, &shared);
            }
        });
    }
    for conn in unix.incoming() {
        match conn {
            Ok(conn) => spawn_serve(conn, &shared),
            Err(e) => output::warn(&format!("{}: accepting a connection: {e}", socket.display())),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// At most this many connections are served at once; more are refused (503) at once.
const MAX_CONNECTIONS: usize = 8;

/// What the listener's connections share.
struct Shared {
    access: Access,
    config_path: PathBuf,
    /// Connections being served.
    connections: AtomicUsize,
    /// Held by the connection whose run goes on.
    run: Mutex<()>,
}

/// One of the [`MAX_CONNECTIONS`]: given back when dropped.
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

fn spawn_serve<C>(mut conn: C, shared: &Arc<Shared>)
where
    C: Read + Write + AsFd + Send + 'static,
{
    if shared.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
        shared.connections.fetch_sub(1, Ordering::SeqCst);
        // Without waiting: what the client sent already is read (closing on unread data
        // would reset the connection before it reads the answer), and a fresh
        // connection's buffer takes the answer's few bytes.
        trigger::read_what_was_sent(&mut conn);
        answer(
            &mut conn,
            "503 Service Unavailable",
            &format!("too many connections (at most {MAX_CONNECTIONS}); try again later"),
        );
        output::warn(&format!(
            "trigger refused: too many connections (at most {MAX_CONNECTIONS})"
        ));
        return;
    }
    let slot = Slot(shared.clone());
    std::thread::spawn(move || {
        let shared = &slot.0;
        match serve(conn, &shared.access, &shared.config_path, Some(&shared.run)) {
            Ok(Served::Refused(why)) => output::warn(&format!("trigger refused: {why}")),
            Ok(Served::Ran(_)) => {}
            Err(e) => output::warn(&format!("trigger connection: {e:#}")),
        }
        drop(slot);
    });
}

/// What became of a connection.
enum Served {
    /// The peer may not trigger a run, or sent no request, or a run goes on: why.
    Refused(String),
    /// A run happened; whether it succeeded.
    Ran(bool),
}

/// A short plain-text answer that ends the connection.
fn answer<C: Write>(conn: &mut C, status: &str, why: &str) {
    let _ = conn.write_all(
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n\
             refused: {why}\n"
        )
        .as_bytes(),
    );
}

/// Serves one connection: checks the peer, reads the request (whatever it is), answers
/// with a plain-text page that streams a `bento agent --once` run. A refused peer gets a
/// 403 with the reason, and no run; a connection that sends no request in time is
/// dropped; with `run` (the listener's), a request while another run goes on gets a 409.
///
/// The run writes into a socket pair that [`trigger::relay`] drains: a client that stops
/// reading or hangs up loses output, and never stalls or stops the run.
fn serve<C: Read + Write + AsFd>(
    mut conn: C,
    access: &Access,
    config_path: &Path,
    run: Option<&Mutex<()>>,
) -> anyhow::Result<Served> {
    let allowed = access.check_peer(conn.as_fd());
    let asked = trigger::read_request_head(&mut conn);
    if let Err(refused) = allowed {
        answer(&mut conn, "403 Forbidden", &refused.to_string());
        return Ok(Served::Refused(refused.to_string()));
    }
    if !asked {
        return Ok(Served::Refused(format!(
            "no request within {} s; connection dropped",
            trigger::REQUEST_DEADLINE.as_secs()
        )));
    }
    let _running = match run.map(Mutex::try_lock) {
        Some(Err(TryLockError::WouldBlock)) => {
            let why = "a run is already in progress; try again when it ends";
            answer(&mut conn, "409 Conflict", why);
            return Ok(Served::Refused(why.into()));
        }
        Some(Ok(guard)) => Some(guard),
        Some(Err(TryLockError::Poisoned(p))) => Some(p.into_inner()),
        None => None,
    };
    // The request was made: a client gone already does not stop the run.
    let _ = conn.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n",
    );
    let _ = conn.flush();
    // The run's output: one end of a socket pair (a pipe would do as well), the other
    // end drained by the relay.
    let (output, into_output) = UnixStream::pair()?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["agent", "--once", "--config"])
        .arg(config_path)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(OwnedFd::from(into_output.try_clone()?))
        .stderr(OwnedFd::from(into_output))
        .spawn()?;
    let relayed = trigger::relay(output, &mut conn);
    let status = child.wait()?;
    if relayed.client_gone {
        return Ok(Served::Ran(status.success()));
    }
    if relayed.dropped > 0 {
        let _ = writeln!(
            conn,
            "\n({} bytes of output dropped: the client read too slowly)",
            relayed.dropped
        );
    }
    let _ = writeln!(conn, "\n{}", if status.success() { "done" } else { "FAILED" });
    Ok(Served::Ran(status.success()))
}
