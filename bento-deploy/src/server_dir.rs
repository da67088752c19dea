//! A server directory, read the same way wherever it is: on this machine ([`Confined`])
//! or behind the publishing account's sftp session ([`crate::publish::remote::RemoteDir`]).
//!
//! What `bento status`, `bento diff` and `bento ssh` read (`current`, manifests, a host's
//! `logs/`) is written by others — a host writes its own `logs/` — so every read here is
//! bounded, of a regular file only, and no symlink is followed: a link is refused, or read
//! as a link. Where the server is comes from [`crate::fleet::location`].

use std::io;
use std::path::PathBuf;

use crate::confined::Confined;

/// What a path on the server is, not following a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Link,
    /// Anything else (FIFO, socket, device).
    Other,
}

impl Kind {
    fn of(t: rustix::fs::FileType) -> Kind {
        use rustix::fs::FileType;
        match t {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Link,
            _ => Kind::Other,
        }
    }
}

/// Reading a directory of the server. Relative paths (`a/b`) stay below it: empty,
/// absolute, `.` and `..` components are refused.
pub trait ServerDir: Sync {
    /// The whole regular file `rel`, refused (kind `FileTooLarge`) past `limit` bytes; a
    /// link, FIFO, device or directory is refused (kind `InvalidData`).
    fn read(&self, rel: &str, limit: u64) -> io::Result<Vec<u8>>;
    /// The text of the symlink `rel`, never followed.
    fn read_link(&self, rel: &str) -> io::Result<PathBuf>;
    /// What `rel` is; `None` when nothing is there.
    fn kind(&self, rel: &str) -> io::Result<Option<Kind>>;
    /// The entries of the directory `rel` (`""`: this one) whose names are UTF-8, with
    /// their kinds; refused (kind `InvalidData`) past `limit` entries.
    fn entries_at_most(&self, rel: &str, limit: usize) -> io::Result<Vec<(String, Kind)>>;
    /// The directory `rel` below this one; a link is refused.
    fn dir(&self, rel: &str) -> io::Result<Box<dyn ServerDir + '_>>;
}

impl ServerDir for Confined {
    fn read(&self, rel: &str, limit: u64) -> io::Result<Vec<u8>> {
        Confined::read(self, rel, limit)
    }

    fn read_link(&self, rel: &str) -> io::Result<PathBuf> {
        Confined::read_link(self, rel)
    }

    fn kind(&self, rel: &str) -> io::Result<Option<Kind>> {
        match Confined::kind(self, rel) {
            Ok(t) => Ok(Some(Kind::of(t))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn entries_at_most(&self, rel: &str, limit: usize) -> io::Result<Vec<(String, Kind)>> {
        let listed = Confined::entries_at_most(self, rel, limit)?;
        let mut entries = Vec::with_capacity(listed.len());
        for entry in listed {
            let Ok(name) = entry.name.into_string() else {
                continue;
            };
            let kind = match entry.kind {
                Some(t) => Kind::of(t),
                // The file system did not say: asked, not following a link.
                None => {
                    let path = if rel.is_empty() {
                        name.clone()
                    } else {
                        format!("{rel}/{name}")
                    };
                    ServerDir::kind(self, &path)?.unwrap_or(Kind::Other)
                }
            };
            entries.push((name, kind));
        }
        Ok(entries)
    }

    fn dir(&self, rel: &str) -> io::Result<Box<dyn ServerDir + '_>> {
        Ok(Box::new(Confined::dir(self, rel)?))
    }
}
