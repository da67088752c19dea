//! A server directory, read the same way wherever it is: on this machine ([`Confined`])
//! or behind the publishing account's sftp session ([`RemoteDir`]).
//!
//! What `bento status`, `bento diff` and `bento ssh` read (`current`, manifests, a host's
//! `logs/`) is written by others — a host writes its own `logs/` — so every read here is
//! bounded, of a regular file only, and no symlink is followed: a link is refused, or read
//! as a link. The admin names where the server is ([`Location`]): a local root, or an sftp
//! target, in the same order of precedence for every command.

use std::io;
use std::path::{Path, PathBuf};

use crate::confined::Confined;
use crate::error::Error;
use crate::fleet::config::Config;
use crate::publish::remote::{self, RemoteDir, RemoteRoot, RemoteUrl};

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

/// Where the server root is, as the admin named it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A directory on this machine.
    Local(PathBuf),
    /// A root behind sftp, as the publishing account sees it.
    Remote(RemoteUrl),
}

impl Location {
    /// The server of a command: `--target URL`, else `--server-root DIR`, else bento.toml's
    /// `deploy.target`, else its `server.root`. (Passing both options is refused by the
    /// command line.)
    pub fn choose(
        config: &Config,
        server_root: Option<&Path>,
        target: Option<&str>,
    ) -> Result<Location, Error> {
        let url = match (target, server_root) {
            (Some(url), _) => Some(("--target", url)),
            (None, Some(dir)) => return Ok(Location::Local(dir.to_path_buf())),
            (None, None) => config.deploy.target.as_deref().map(|url| ("deploy.target", url)),
        };
        match url {
            Some((what, url)) => RemoteUrl::parse(url)
                .map(Location::Remote)
                .map_err(|e| Error::input(what, e)),
            None => Ok(Location::Local(PathBuf::from(&config.server.root))),
        }
    }

    /// How it is shown in messages.
    pub fn shown(&self) -> String {
        match self {
            Location::Local(dir) => dir.display().to_string(),
            Location::Remote(url) => url.to_string(),
        }
    }

    /// Opens it for reading: the local directory, or a connection as the publishing account
    /// (the server's key pinned from the fleet's `keys/server_known_hosts`).
    pub fn open(&self, fleet_root: &Path, config: &Config) -> Result<Server, Error> {
        match self {
            Location::Local(dir) => Confined::open(dir).map(Server::Local).map_err(|e| {
                let shown = dir.display().to_string();
                match e.kind() {
                    io::ErrorKind::NotFound => Error::input(
                        shown,
                        "the server root does not exist: pass --server-root DIR or --target URL, \
                         or set server.root (deploy.target) in bento.toml",
                    ),
                    _ => Error::io(shown, e),
                }
            }),
            Location::Remote(url) => RemoteRoot::connect(
                url,
                &fleet_root.join(remote::KNOWN_HOSTS),
                config.login_key_path().as_deref(),
                "ssh",
                remote::Limits {
                    whole: config.deploy.timeout(),
                    request: config.deploy.request_timeout(),
                },
            )
            .map(|root| Server::Remote(RemoteDir::root(root))),
        }
    }
}

/// A server root, open for reading.
pub enum Server {
    /// On this machine.
    Local(Confined),
    /// Over sftp.
    Remote(RemoteDir),
}

impl Server {
    /// Its directory.
    pub fn dir(&self) -> &dyn ServerDir {
        match self {
            Server::Local(dir) => dir,
            Server::Remote(root) => root,
        }
    }
}
