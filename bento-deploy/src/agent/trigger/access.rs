//! Who may trigger a run: root, members of `trigger_group` (checked on the connected
//! socket's peer, `SO_PEERCRED` and `SO_PEERGROUPS`), anyone over TCP when `trigger_tcp`
//! is on; and what setting up or accepting a connection can fail with.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

use rustix::net::AddressFamily;

use crate::agent::config::AgentConfig;

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
