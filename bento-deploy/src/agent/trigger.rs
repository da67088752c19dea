//! The local trigger: a connection starts an agent run and streams its output. It listens
//! on a unix socket (`trigger_socket`, default `/run/bento/trigger.sock`), mode 0600 for
//! root alone or 0660 with group `trigger_group`; each connection's peer is checked too
//! (`SO_PEERCRED`: root, or a member of that group). TCP on 127.0.0.1:51337, which any
//! local user can reach, only when `trigger_tcp = true`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;

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

/// How long a connection may take to send its request.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads a request's head (up to a blank line, at most 8 KiB, waiting at most 10 s) so the
/// client is not cut off by an unread request; what it asks does not matter.
pub fn read_request_head<C: io::Read + AsFd>(conn: &mut C) {
    let _ = rustix::net::sockopt::set_socket_timeout(
        conn.as_fd(),
        rustix::net::sockopt::Timeout::Recv,
        Some(REQUEST_TIMEOUT),
    );
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while head.len() < 8192 && !head.ends_with(b"\r\n\r\n") && !head.ends_with(b"\n\n") {
        match conn.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
}
