//! How a host reaches its directory on the server: over sftp (through the system `ssh`,
//! so `~/.ssh/config`, ProxyCommand and ProxyJump apply), or as a local directory
//! (`file:///srv/bento`, for a server on the same machine, demos and tests).
//!
//! Paths are relative to the host's own directory (its sftp chroot): `current`,
//! `generations/7/manifest.json`, `logs/report-7.json`.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::confined::Confined;
use crate::wire::host_dir::{CURRENT_FILE, CURRENT_LIMIT, CURRENT_LINK};

/// Reading and writing files in the host's directory on the server.
///
/// The server is not trusted with anything but availability: every read is of a regular
/// file (a symlink, FIFO or device is refused) and has a limit, and a write never goes
/// through a file or link someone planted.
pub trait Transport {
    /// Copies the regular file `rel` into `sink`, refusing (kind `FileTooLarge`, before
    /// copying when the size is known up front) a file of more than `limit` bytes. Returns
    /// how many bytes were copied.
    fn read_to(&mut self, rel: &str, limit: u64, sink: &mut dyn Write) -> io::Result<u64>;
    /// Copies each regular file `rel` into its sink, as [`Transport::read_to`] does; a
    /// transport that can keeps several requests in flight (sftp: a few files at once), so
    /// many small files do not each wait a round trip. One result per file, in order.
    fn read_each(&mut self, files: &mut [Download<'_>]) -> Vec<io::Result<u64>> {
        files
            .iter_mut()
            .map(|d| self.read_to(d.rel, d.limit, &mut *d.sink))
            .collect()
    }
    /// Reads the whole regular file `rel`, of at most `limit` bytes.
    fn read(&mut self, rel: &str, limit: u64) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.read_to(rel, limit, &mut bytes)?;
        Ok(bytes)
    }
    /// Writes a whole file (into `logs/`, the only writable place), replacing it: under a
    /// fresh temp name, created exclusively, then renamed over `rel`.
    fn write(&mut self, rel: &str, bytes: &[u8]) -> io::Result<()>;
    /// The text of the symlink `rel` (never followed).
    fn read_link(&mut self, rel: &str) -> io::Result<PathBuf> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{}: cannot read links here", rel.escape_default()),
        ))
    }
    /// Writes `write` (as [`Transport::write`]) and reads `read` (as [`Transport::read`]):
    /// side by side where the transport can, waiting for the server once instead of twice.
    fn write_and_read(
        &mut self,
        write: (&str, &[u8]),
        read: (&str, u64),
    ) -> (io::Result<()>, io::Result<Vec<u8>>) {
        let written = self.write(write.0, write.1);
        (written, self.read(read.0, read.1))
    }
    /// How many bytes went over the wire so far (both ways), when known.
    fn bytes_transferred(&self) -> u64;
    /// From now on, operations still waiting on the server at `deadline` fail (kind
    /// `TimedOut`). A transport that cannot hang may ignore it.
    fn set_deadline(&mut self, deadline: Instant) {
        let _ = deadline;
    }
}

/// One file of [`Transport::read_each`]: where it is, its limit, where it goes.
pub struct Download<'a> {
    /// The path on the server.
    pub rel: &'a str,
    /// The most bytes accepted.
    pub limit: u64,
    /// Where the bytes go.
    pub sink: &'a mut (dyn Write + Send),
}

pub use crate::confined::check_rel;

/// Reads the host's `current` (at most [`CURRENT_LIMIT`] bytes): the regular file, or,
/// where a publishing account keeps the pointer, the one link a host directory may hold,
/// `current -> generations/current` (see [`crate::layout`]). That link is never followed:
/// its exact text is recognised and `generations/current` itself read, as a regular file.
/// (Over sftp the host's chroot would bound it anyway; a local directory has no chroot.)
/// Any other link is refused, with the error of reading `current`.
pub fn read_current(t: &mut dyn Transport) -> io::Result<Vec<u8>> {
    let first = t.read(CURRENT_FILE, CURRENT_LIMIT);
    current_or_link(t, first)
}

/// [`read_current`] after the read of `current` itself already gave `first` (the agent
/// reads it side by side with writing its heartbeat).
pub fn current_or_link(t: &mut dyn Transport, first: io::Result<Vec<u8>>) -> io::Result<Vec<u8>> {
    match first {
        Err(e) if e.kind() != io::ErrorKind::NotFound => match t.read_link(CURRENT_FILE) {
            Ok(target) if target == Path::new(CURRENT_LINK) => t.read(CURRENT_LINK, CURRENT_LIMIT),
            _ => Err(e),
        },
        other => other,
    }
}

/// The error of an operation cut short by the run's deadline (kind `TimedOut`).
pub fn deadline_passed() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the run's deadline passed")
}

/// A server directory on this machine (`file://`). The host's directory is opened beneath
/// the server root for every operation, and everything below it through [`Confined`]: no
/// symlink is followed, not even a host directory that is one.
pub struct FileTransport {
    root: PathBuf,
    host: String,
    transferred: u64,
}

impl FileTransport {
    /// The host `host`'s directory under server root `root`.
    pub fn new(root: &Path, host: &str) -> FileTransport {
        FileTransport {
            root: root.to_path_buf(),
            host: host.to_owned(),
            transferred: 0,
        }
    }

    /// The host's directory, opened now (a symlink is refused).
    fn dir(&self) -> io::Result<Confined> {
        let root = Confined::open(&self.root)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.root.display())))?;
        root.dir(&self.host)
    }
}

impl Transport for FileTransport {
    fn read_to(&mut self, rel: &str, limit: u64, sink: &mut dyn Write) -> io::Result<u64> {
        let copied = self.dir()?.read_to(rel, limit, sink)?;
        self.transferred += copied;
        Ok(copied)
    }

    fn write(&mut self, rel: &str, bytes: &[u8]) -> io::Result<()> {
        self.dir()?.replace(rel, bytes, 0o644)?;
        self.transferred += bytes.len() as u64;
        Ok(())
    }

    fn read_link(&mut self, rel: &str) -> io::Result<PathBuf> {
        self.dir()?.read_link(rel)
    }

    fn bytes_transferred(&self) -> u64 {
        self.transferred
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_escape() {
        for bad in ["../x", "/etc/passwd", "a//b", "a/./b", "", "a/.."] {
            assert!(check_rel(bad).is_err(), "{bad}");
        }
        assert!(check_rel("generations/3/config/configuration.nix").is_ok());
    }
}
