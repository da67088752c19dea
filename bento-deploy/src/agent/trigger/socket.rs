//! The trigger's listening sockets: the unix socket, created with its mode and group, and
//! the TCP one when `trigger_tcp = true`.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;

use rustix::fs::Mode;

use super::access::{Access, TriggerError};

/// The TCP address of the trigger, when `trigger_tcp = true`.
pub const TCP_ADDRESS: &str = "127.0.0.1:51337";

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
