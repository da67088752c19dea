//! The local trigger: a connection starts an agent run and streams its output. It listens
//! on a unix socket (`trigger_socket`, default `/run/bento/trigger.sock`), mode 0600 for
//! root alone or 0660 with group `trigger_group`; each connection's peer is checked too
//! (`SO_PEERCRED`: root, or a member of that group). TCP on 127.0.0.1:51337, which any
//! local user can reach, only when `trigger_tcp = true`.
//!
//! A client is never in the run's way: the run writes into a pipe (or socket pair) that [`relay`] always
//! drains, passing on to the client what it can take (a bounded buffer; a slow client
//! loses output, a client gone gets none), and a connection that sends no request within
//! [`REQUEST_DEADLINE`] is dropped.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use rustix::fs::Mode;
use rustix::net::AddressFamily;

use crate::agent::config::AgentConfig;

/// The TCP address of the trigger, when `trigger_tcp = true`.
pub const TCP_ADDRESS: &str = "127.0.0.1:51337";

/// What can go wrong setting up or accepting a trigger connection; each one line.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// `trigger_group` names no group of this host.
    #[error("{config}: trigger_group `{group}` is not a group on this host; create it or fix the name")]
    UnknownGroup {
        /// The agent.toml, as shown.
        config: String,
        /// The group's name.
        group: String,
    },
    /// Creating or binding a socket failed.
    #[error("{path}: {source}")]
    Socket {
        /// The socket's path or address.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Something that is not a socket is where the socket goes.
    #[error("{path} exists and is not a socket; remove it or set another trigger_socket")]
    NotASocket {
        /// The path.
        path: String,
    },
    /// The peer may not trigger a run.
    #[error("{0}")]
    Refused(String),
}

/// Who may trigger a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    /// `trigger_group` and its gid: its members may, besides root.
    pub group: Option<(String, u32)>,
    /// Whether connections over TCP (from any local user) are accepted.
    pub tcp: bool,
}

impl Access {
    /// The access rules of `config` (read from `shown`), the group looked up.
    pub fn of(config: &AgentConfig, shown: &Path) -> Result<Access, TriggerError> {
        let group = match &config.trigger_group {
            None => None,
            Some(name) => {
                let unknown = || TriggerError::UnknownGroup {
                    config: shown.display().to_string(),
                    group: name.clone(),
                };
                let group = nix::unistd::Group::from_name(name)
                    .map_err(|_| unknown())?
                    .ok_or_else(unknown)?;
                Some((name.clone(), group.gid.as_raw()))
            }
        };
        Ok(Access {
            group,
            tcp: config.trigger_tcp,
        })
    }

    /// The socket file's mode: 0660 with a group, else 0600.
    pub fn socket_mode(&self) -> u32 {
        if self.group.is_some() {
            0o660
        } else {
            0o600
        }
    }

    /// Checks the peer of the connected socket `conn`: over a unix socket, root or a
    /// member of the group (its primary or supplementary groups when it connected); over
    /// TCP, anyone when `tcp` is on. Anything else is refused with the reason.
    pub fn check_peer(&self, conn: BorrowedFd<'_>) -> Result<(), TriggerError> {
        let refused = |why: String| Err(TriggerError::Refused(why));
        let family = match rustix::net::getsockname(conn) {
            Ok(addr) => addr.address_family(),
            Err(_) => return refused("the connection is not a socket".into()),
        };
        if family == AddressFamily::INET || family == AddressFamily::INET6 {
            if self.tcp {
                return Ok(());
            }
            return refused("the trigger does not accept TCP connections (trigger_tcp is off)".into());
        }
        if family != AddressFamily::UNIX {
            return refused("the connection is not a unix or TCP socket".into());
        }
        let cred = rustix::net::sockopt::socket_peercred(conn)
            .map_err(|e| TriggerError::Refused(format!("cannot read the peer's credentials: {e}")))?;
        let uid = cred.uid.as_raw();
        if uid == 0 {
            return Ok(());
        }
        let who = format!("uid {uid} (pid {})", cred.pid.as_raw_pid());
        let Some((name, gid)) = &self.group else {
            return refused(format!("{who} is not root (no trigger_group is set)"));
        };
        if cred.gid.as_raw() == *gid || peer_groups(conn).is_ok_and(|groups| groups.contains(gid)) {
            return Ok(());
        }
        refused(format!("{who} is neither root nor in group {name}"))
    }
}

/// The supplementary groups the peer had when it connected (`SO_PEERGROUPS`, Linux 4.13+).
///
/// The one `unsafe` of the workspace: neither rustix nor nix offers `SO_PEERGROUPS`, and
/// the alternative (`/proc/<pid>/status` of the peer's pid) could read another process's
/// groups once that pid is reused.
#[allow(unsafe_code)]
fn peer_groups(conn: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    use nix::libc;
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `groups` is a writable buffer of `len` bytes, which the kernel fills with
        // at most that many bytes and sets `len` to what it wrote (or needs).
        let rc = unsafe {
            libc::getsockopt(
                conn.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let count = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(count);
            return Ok(groups);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ERANGE) && count > groups.len() {
            groups.resize(count, 0);
            continue;
        }
        return Err(err);
    }
}

/// Binds the trigger's unix socket at `path`, owned by root (and the group), with the
/// mode of `access`. It is created under a umask that leaves it 0600 until its group and
/// mode are set, so no one else can connect in between. A stale socket there is replaced;
/// anything else there is refused. A missing parent directory is created (0755).
pub fn listen_unix(path: &Path, access: &Access) -> Result<UnixListener, TriggerError> {
    let shown = || path.display().to_string();
    let io_err = |source: io::Error| TriggerError::Socket {
        path: shown(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path).map_err(io_err)?,
        Ok(_) => return Err(TriggerError::NotASocket { path: shown() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(io_err)?;
    }
    let old = rustix::process::umask(Mode::from_raw_mode(0o177));
    let bound = UnixListener::bind(path);
    rustix::process::umask(old);
    let listener = bound.map_err(io_err)?;
    if let Some((_, gid)) = &access.group {
        std::os::unix::fs::lchown(path, None, Some(*gid)).map_err(io_err)?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(access.socket_mode())).map_err(io_err)?;
    Ok(listener)
}

/// Binds the TCP trigger ([`TCP_ADDRESS`]); only called when `trigger_tcp = true`.
pub fn listen_tcp() -> Result<std::net::TcpListener, TriggerError> {
    std::net::TcpListener::bind(TCP_ADDRESS).map_err(|source| TriggerError::Socket {
        path: TCP_ADDRESS.into(),
        source,
    })
}

/// How long a connection has to send its whole request; then it is dropped, no run.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// Reads a request's head (up to a blank line, at most 8 KiB) so the client is not cut
/// off by an unread request; what it asks does not matter. Whether a request came: false
/// when the client sent nothing in [`REQUEST_DEADLINE`] (in all, not per byte), closed
/// without a word, or sent more than 8 KiB without a blank line.
pub fn read_request_head<C: io::Read + AsFd>(conn: &mut C) -> bool {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            return true;
        }
        if head.len() >= 8192 {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let _ = rustix::net::sockopt::set_socket_timeout(
            conn.as_fd(),
            rustix::net::sockopt::Timeout::Recv,
            Some(left.max(Duration::from_millis(1))),
        );
        match conn.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            // The client is done sending: a request if it said anything.
            Ok(_) => return !head.is_empty(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Reads, without waiting, what the client sent already (at most 8 KiB): a connection
/// closed on unread data is reset, and the client would lose the answer written to it.
pub fn read_what_was_sent<C: io::Read + AsFd>(conn: &mut C) {
    if rustix::io::ioctl_fionbio(conn.as_fd(), true).is_ok() {
        let mut sent = [0u8; 8192];
        let _ = conn.read(&mut sent);
        let _ = rustix::io::ioctl_fionbio(conn.as_fd(), false);
    }
}

/// At most this much of a run's output waits for a slow client; more is dropped.
pub const RELAY_BUFFER: usize = 1 << 20;

/// How long one write to the client may block before the relay looks again.
const SEND_TIMEOUT: Duration = Duration::from_millis(500);

/// How long the output left over when the run ends may take to reach the client.
const FINISH_GRACE: Duration = Duration::from_secs(5);

/// What became of a run's output on its way to the client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Relayed {
    /// Bytes dropped because the client read too slowly (or was gone).
    pub dropped: u64,
    /// The client hung up (or stopped reading past the end of the run).
    pub client_gone: bool,
}

#[derive(Default)]
struct Pending {
    bytes: VecDeque<u8>,
    ended: bool,
    dropped: u64,
    gone: bool,
}

/// Copies a run's output from `from` (the read end of the pipe the run writes to) to the
/// client `to`, until `from` ends. The run never waits for the client: `from` is always
/// drained; at most [`RELAY_BUFFER`] bytes wait for a slow client and the rest is dropped;
/// a client that hangs up gets nothing more (no signal, no panic: the write's error is
/// taken as its leaving). When the run's output ends, what is still waiting has
/// a few seconds to go out.
pub fn relay<R, W>(mut from: R, to: &mut W) -> Relayed
where
    R: io::Read + Send,
    W: io::Write + AsFd,
{
    let _ = rustix::net::sockopt::set_socket_timeout(
        to.as_fd(),
        rustix::net::sockopt::Timeout::Send,
        Some(SEND_TIMEOUT),
    );
    let pending = Mutex::new(Pending::default());
    let changed = Condvar::new();
    let lock = || pending.lock().unwrap_or_else(|p| p.into_inner());
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut chunk = [0u8; 8192];
            loop {
                let n = match from.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                let mut p = lock();
                let room = if p.gone { 0 } else { RELAY_BUFFER - p.bytes.len() };
                let kept = n.min(room);
                p.bytes.extend(&chunk[..kept]);
                p.dropped += (n - kept) as u64;
                changed.notify_all();
            }
            lock().ended = true;
            changed.notify_all();
        });
        let mut finish_by = None;
        loop {
            let chunk: Vec<u8> = {
                let mut p = lock();
                while p.bytes.is_empty() && !p.ended {
                    p = changed.wait(p).unwrap_or_else(|e| e.into_inner());
                }
                if p.bytes.is_empty() {
                    break;
                }
                if p.ended {
                    let by = *finish_by.get_or_insert_with(|| Instant::now() + FINISH_GRACE);
                    if Instant::now() >= by {
                        let left = p.bytes.len() as u64;
                        p.dropped += left;
                        p.bytes.clear();
                        p.gone = true;
                        break;
                    }
                }
                let (front, _) = p.bytes.as_slices();
                front[..front.len().min(8192)].to_vec()
            };
            match to.write(&chunk) {
                Ok(n) if n > 0 => {
                    lock().bytes.drain(..n);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                    ) => {}
                // Gone (EPIPE, reset, or a write of nothing): the rest is drained, dropped.
                _ => {
                    let mut p = lock();
                    p.gone = true;
                    p.dropped += p.bytes.len() as u64;
                    p.bytes.clear();
                    while !p.ended {
                        p = changed.wait(p).unwrap_or_else(|e| e.into_inner());
                        p.dropped += p.bytes.len() as u64;
                        p.bytes.clear();
                    }
                    break;
                }
            }
        }
    });
    let p = pending.into_inner().unwrap_or_else(|p| p.into_inner());
    Relayed {
        dropped: p.dropped,
        client_gone: p.gone,
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};

    use super::*;

    /// A writer of `total` bytes, as a run's output.
    fn run_output(total: usize) -> (UnixStream, std::thread::JoinHandle<()>) {
        let (reader, mut writer) = UnixStream::pair().unwrap();
        let handle = std::thread::spawn(move || {
            let line = [b'x'; 1000];
            let mut sent = 0;
            while sent < total {
                writer
                    .write_all(&line)
                    .expect("the relay always drains the run's output");
                sent += line.len();
            }
        });
        (reader, handle)
    }

    #[test]
    fn a_client_that_never_reads_loses_output_never_stalls_the_run() {
        let (mut ours, _theirs_kept_open_unread) = {
            let (a, b) = UnixStream::pair().unwrap();
            (a, b)
        };
        let (reader, writer) = run_output(8 << 20);
        let started = Instant::now();
        let relayed = relay(reader, &mut ours);
        writer.join().unwrap();
        assert!(relayed.dropped > 0, "{relayed:?}");
        assert!(started.elapsed() < FINISH_GRACE + Duration::from_secs(5));
    }

    #[test]
    fn a_client_that_hangs_up_gets_nothing_more_and_the_run_goes_on() {
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        drop(theirs);
        let (reader, writer) = run_output(4_000_000);
        let relayed = relay(reader, &mut ours);
        writer.join().unwrap();
        assert!(relayed.client_gone, "{relayed:?}");
        assert_eq!(relayed.dropped, 4_000_000);
    }

    #[test]
    fn a_reading_client_gets_everything_in_order() {
        let (mut ours, mut theirs) = UnixStream::pair().unwrap();
        // Less than the buffer: a client that reads loses nothing, however fast the run.
        let (reader, writer) = run_output(1_000_000);
        let client = std::thread::spawn(move || {
            let mut all = Vec::new();
            theirs.read_to_end(&mut all).unwrap();
            all
        });
        let relayed = relay(reader, &mut ours);
        drop(ours);
        writer.join().unwrap();
        assert_eq!(relayed, Relayed::default());
        let all = client.join().unwrap();
        assert_eq!(all.len(), 1_000_000);
        assert!(all.iter().all(|&b| b == b'x'));
    }

    #[test]
    fn a_request_that_never_comes_is_given_up_at_the_deadline() {
        let (mut ours, mut theirs) = UnixStream::pair().unwrap();
        let started = Instant::now();
        assert!(!read_request_head(&mut ours));
        assert!(started.elapsed() >= REQUEST_DEADLINE);
        assert!(started.elapsed() < REQUEST_DEADLINE + Duration::from_secs(2));
        theirs.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(read_request_head(&mut ours));
    }
}
