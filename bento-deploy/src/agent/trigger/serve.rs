//! Serving the trigger: each connection on its own thread, at most [`MAX_CONNECTIONS`] at
//! once, one run at a time; a served request streams a `bento agent --once` run.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, TryLockError};

use super::access::Access;
use super::relay::relay;
use super::request::{read_request_head, read_what_was_sent, REQUEST_DEADLINE};

/// At most this many connections are served at once; more are refused (503) at once.
pub const MAX_CONNECTIONS: usize = 8;

/// What became of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Served {
    /// The peer may not trigger a run, or sent no request, or a run goes on: why.
    Refused(String),
    /// A run happened; whether it succeeded.
    Ran(bool),
}

/// What the listener's connections share.
struct Shared {
    access: Access,
    config_path: PathBuf,
    /// Connections being served.
    connections: AtomicUsize,
    /// Held by the connection whose run goes on.
    run: Mutex<()>,
    /// Says what went wrong with a connection (one line), as the program prints warnings.
    warn: fn(&str),
}

/// One of the [`MAX_CONNECTIONS`]: given back when dropped.
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves `unix` (and `tcp`, when given) until the process ends: each connection on its own
/// thread, at most [`MAX_CONNECTIONS`] at once, and one run at a time: a request while a
/// run goes on is refused (409), not queued. `warn` gets one line per refused or failed
/// connection.
pub fn listen(
    unix: UnixListener,
    tcp: Option<std::net::TcpListener>,
    access: Access,
    config_path: &Path,
    warn: fn(&str),
) {
    let shared = Arc::new(Shared {
        access,
        config_path: config_path.to_path_buf(),
        connections: AtomicUsize::new(0),
        run: Mutex::new(()),
        warn,
    });
    if let Some(tcp) = tcp {
        let shared = shared.clone();
        std::thread::spawn(move || {
            for conn in tcp.incoming().flatten() {
                spawn_serve(conn, &shared);
            }
        });
    }
    let shown = unix
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
        .unwrap_or_default();
    for conn in unix.incoming() {
        match conn {
            Ok(conn) => spawn_serve(conn, &shared),
            Err(e) => warn(&format!("{shown}: accepting a connection: {e}")),
        }
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
        read_what_was_sent(&mut conn);
        answer(
            &mut conn,
            "503 Service Unavailable",
            &format!("too many connections (at most {MAX_CONNECTIONS}); try again later"),
        );
        (shared.warn)(&format!(
            "trigger refused: too many connections (at most {MAX_CONNECTIONS})"
        ));
        return;
    }
    let slot = Slot(shared.clone());
    std::thread::spawn(move || {
        let shared = &slot.0;
        match serve_one(conn, &shared.access, &shared.config_path, Some(&shared.run)) {
            Ok(Served::Refused(why)) => (shared.warn)(&format!("trigger refused: {why}")),
            Ok(Served::Ran(_)) => {}
            Err(e) => (shared.warn)(&format!("trigger connection: {e}")),
        }
        drop(slot);
    });
}

/// The head of an answer with `status`: plain text, and the connection closed after it.
fn head(status: &str) -> String {
    format!("HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n")
}

/// A short plain-text answer that ends the connection.
fn answer<C: Write>(conn: &mut C, status: &str, why: &str) {
    let _ = conn.write_all(format!("{}refused: {why}\n", head(status)).as_bytes());
}

/// Serves one connection: checks the peer, reads the request (whatever it is), answers
/// with a plain-text page that streams a `bento agent --once` run of this very program. A
/// refused peer gets a 403 with the reason, and no run; a connection that sends no request
/// in time is dropped; with `run` (the listener's), a request while another run goes on
/// gets a 409.
///
/// The run writes into a socket pair that [`relay`] drains: a client that stops reading or
/// hangs up loses output, and never stalls or stops the run.
pub fn serve_one<C: Read + Write + AsFd>(
    mut conn: C,
    access: &Access,
    config_path: &Path,
    run: Option<&Mutex<()>>,
) -> io::Result<Served> {
    let allowed = access.check_peer(conn.as_fd());
    let asked = read_request_head(&mut conn);
    if let Err(refused) = allowed {
        answer(&mut conn, "403 Forbidden", &refused.to_string());
        return Ok(Served::Refused(refused.to_string()));
    }
    if !asked {
        return Ok(Served::Refused(format!(
            "no request within {} s; connection dropped",
            REQUEST_DEADLINE.as_secs()
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
    let _ = conn.write_all(head("200 OK").as_bytes());
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
    let relayed = relay(output, &mut conn);
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
