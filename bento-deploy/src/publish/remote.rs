//! Publishing to a remote server root over sftp (`[deploy] target` or `--target`):
//! one connection through the system `ssh` (the admin's ssh config and agent), the
//! server's key pinned from `keys/server_known_hosts`.
//!
//! The publishing account is not root, so it cannot write a host's directory (an OpenSSH
//! chroot, root's). It owns each host's `generations/`, and `current` is root's link
//! `current -> generations/current` (see [`crate::layout`]): a new generation is written
//! into `generations/.new-<g>-…`, renamed to `generations/<g>`, then
//! `generations/current` is replaced by `posix-rename@openssh.com`. Reads are bounded and
//! never follow a link; nothing is written for a host whose bundle did not change.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::error::Error;
use crate::server_dir::{Kind, ServerDir};
use crate::server_url::ServerUrl;
use crate::sftp::{SftpTransport, SshTarget};
use crate::transport::Transport;

/// Where the fleet's server keeps the pinned server key, relative to the fleet root.
pub const KNOWN_HOSTS: &str = "keys/server_known_hosts";

/// `sftp://user@address[:port]/absolute/root`: the server root as the publishing
/// account's sftp session sees it (`/` when the account is chrooted to the root).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteUrl {
    /// The ssh user.
    pub user: String,
    /// Host name or address.
    pub address: String,
    /// sshd port.
    pub port: u16,
    /// The server root on the server.
    pub root: String,
}

impl RemoteUrl {
    /// Parses `sftp://user@address[:port]/abs/root`; the error says what is wrong.
    pub fn parse(url: &str) -> Result<RemoteUrl, RemoteUrlError> {
        let shown = || url.escape_default().to_string();
        let rest = url
            .strip_prefix("sftp://")
            .ok_or_else(|| RemoteUrlError::Malformed(shown()))?;
        let Some(i) = rest.find('/') else {
            return Err(RemoteUrlError::NoRoot(shown()));
        };
        let (authority, root) = rest.split_at(i);
        let Ok(ServerUrl::Sftp { user, address, port }) = ServerUrl::parse(&format!("sftp://{authority}"))
        else {
            return Err(RemoteUrlError::Malformed(shown()));
        };
        let root = if root == "/" {
            root
        } else {
            root.trim_end_matches('/')
        };
        if root != "/" && !bento_secrets::names::AbsPath::is_valid(root) {
            return Err(RemoteUrlError::BadRoot(shown()));
        }
        Ok(RemoteUrl {
            user,
            address,
            port,
            root: root.to_owned(),
        })
    }
}

/// Why a remote target URL is refused; each names the URL, escaped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteUrlError {
    /// Not `sftp://user@address[:port]/…`.
    #[error("`{0}`: {expected}", expected = EXPECTED_URL)]
    Malformed(String),
    /// No server root after the address.
    #[error("`{0}`: name the server root: {expected}", expected = EXPECTED_URL)]
    NoRoot(String),
    /// The server root is not an absolute path without `..`.
    #[error("`{0}`: the server root must be an absolute path without `..` ({expected})", expected = EXPECTED_URL)]
    BadRoot(String),
}

const EXPECTED_URL: &str = "expected sftp://user@address:port/absolute/root";

impl std::fmt::Display for RemoteUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let address = if self.address.contains(':') {
            format!("[{}]", self.address)
        } else {
            self.address.clone()
        };
        write!(f, "sftp://{}@{address}:{}{}", self.user, self.port, self.root)
    }
}

/// How long a deploy to a remote root may take (`[deploy] timeout`), and how long the
/// server may stay silent while an answer is awaited (`[deploy] request_timeout`): a
/// stalled sftp subsystem, which ssh keep-alives do not notice, ends the deploy.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The whole deploy, from the connection on.
    pub whole: Duration,
    /// One exchange with the server, while it sends nothing.
    pub request: Duration,
}

/// An open connection to a remote server root.
pub struct RemoteRoot {
    url: RemoteUrl,
    /// One sftp session, one exchange at a time.
    conn: Mutex<SftpTransport>,
}

impl RemoteRoot {
    /// Connects with the system `ssh` (`ssh`: its program), pinning the server key(s) of
    /// `known_hosts`.
    pub fn connect(
        url: &RemoteUrl,
        known_hosts: &Path,
        login_key: Option<&Path>,
        ssh: &str,
        limits: Limits,
    ) -> Result<RemoteRoot, Error> {
        if !known_hosts.is_file() {
            return Err(Error::input(
                known_hosts.display().to_string(),
                format!(
                    "missing: put the server's host key there, in known_hosts format \
                     (`[{}]:{} ssh-ed25519 AAAA…`, checked out of band), to publish to {url}",
                    url.address, url.port
                ),
            ));
        }
        if let Some(key) = login_key.filter(|k| !k.is_file()) {
            return Err(Error::input(
                key.display().to_string(),
                format!(
                    "no such key file (deploy.login_key in bento.toml): the key that logs in to {url} \
                     as {}; fix the path, or remove login_key to use ssh's own",
                    url.user
                ),
            ));
        }
        let target = SshTarget {
            user: url.user.clone(),
            address: url.address.clone(),
            port: url.port,
            identity: login_key.map(Path::to_path_buf),
            known_hosts: known_hosts.to_path_buf(),
            connect_timeout: Duration::from_secs(30).min(limits.whole),
            ssh: ssh.to_owned(),
        };
        let conn = SftpTransport::connect(&target)
            .map_err(|e| {
                Error::input(
                    url.to_string(),
                    format!(
                        "{}; check the target, the server's key in keys/server_known_hosts and your ssh keys",
                        e.message.trim_end_matches('.')
                    ),
                )
            })?
            .with_base(Path::new(&url.root))
            .with_deadlines(
                std::time::Instant::now() + limits.whole,
                format!(
                    "the connection to the server lasted longer than deploy.timeout ({} s): stopped",
                    limits.whole.as_secs()
                ),
                limits.request,
            );
        Ok(RemoteRoot {
            url: url.clone(),
            conn: Mutex::new(conn),
        })
    }

    /// The target, for messages.
    pub fn url(&self) -> &RemoteUrl {
        &self.url
    }

    /// Runs `f` on the connection (one exchange at a time).
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut SftpTransport) -> io::Result<T>) -> io::Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut conn)
    }
}

/// A directory of a remote root as a [`ServerDir`] (`bento deploy`, `status`, `diff`, `ssh`
/// over the target); errors name paths as seen from it. A read refuses a final link; the
/// directories on the way are the root's or the publishing account's own (a host owns only
/// what is inside its `logs/`, never a name on the way to it), checked to be directories
/// when opened.
pub struct RemoteDir {
    root: std::sync::Arc<RemoteRoot>,
    /// Relative to the root; empty for the root itself.
    prefix: String,
}

impl RemoteDir {
    /// The whole root.
    pub fn root(root: RemoteRoot) -> RemoteDir {
        RemoteDir {
            root: std::sync::Arc::new(root),
            prefix: String::new(),
        }
    }

    /// The target, for messages.
    pub fn url(&self) -> &RemoteUrl {
        self.root.url()
    }

    /// The directory `rel` below this one, without looking.
    fn below(&self, rel: &str) -> RemoteDir {
        RemoteDir {
            root: self.root.clone(),
            prefix: crate::layout::join(&self.prefix, rel),
        }
    }

    /// Runs `f` on the connection, relative paths below this directory.
    fn with<T>(&self, f: impl FnOnce(&mut SftpTransport) -> io::Result<T>) -> io::Result<T> {
        match self.prefix.as_str() {
            "" => self.root.with(f),
            prefix => self.root.with(|c| c.in_dir(prefix, f)),
        }
    }
}

impl ServerDir for RemoteDir {
    fn read(&self, rel: &str, limit: u64) -> io::Result<Vec<u8>> {
        self.with(|c| c.read(rel, limit))
    }

    fn read_link(&self, rel: &str) -> io::Result<PathBuf> {
        self.with(|c| c.read_link(rel))
    }

    fn kind(&self, rel: &str) -> io::Result<Option<Kind>> {
        self.with(|c| c.kind(rel))
    }

    fn entries_at_most(&self, rel: &str, limit: usize) -> io::Result<Vec<(String, Kind)>> {
        self.with(|c| c.entries_at_most(rel, limit))
    }

    fn dir(&self, rel: &str) -> io::Result<Box<dyn ServerDir>> {
        crate::transport::check_rel(rel)?;
        let not = |kind, why: &str| io::Error::new(kind, format!("{}: {why}", rel.escape_default()));
        match self.kind(rel)? {
            Some(Kind::Dir) => Ok(Box::new(self.below(rel))),
            Some(Kind::Link) => Err(not(io::ErrorKind::InvalidData, "refused: it is a symlink")),
            Some(_) => Err(not(io::ErrorKind::InvalidData, "refused: not a directory")),
            None => Err(not(io::ErrorKind::NotFound, "no such directory")),
        }
    }

    fn create_dir(&self, name: &str) -> io::Result<Box<dyn ServerDir>> {
        self.with(|c| c.mkdir(name, 0o700))?;
        Ok(Box::new(self.below(name)))
    }

    fn seal(&self, mode: u32) -> io::Result<()> {
        let prefix = self.prefix.clone();
        self.root.with(|c| c.set_mode(&prefix, sftp_mode(mode)))
    }

    /// Flushed to disk as it is written, when the server can (`fsync@openssh.com`).
    fn create_new(&self, name: &str, bytes: &[u8], mode: u32) -> io::Result<()> {
        self.with(|c| c.create(name, bytes, sftp_mode(mode)))
    }

    fn replace_from(&self, rel: &str, from: &mut dyn io::Read, mode: u32) -> io::Result<()> {
        self.with(|c| c.upload(rel, from, sftp_mode(mode))).map(drop)
    }

    /// With `posix-rename@openssh.com`. Without `replace`, what is at `to` is looked at
    /// first: sftp has no rename that refuses to replace, so two publishers racing for one
    /// name are kept apart by their distinct temp names, not by this check.
    fn rename(&self, from: &str, to: &str, replace: bool) -> io::Result<()> {
        self.with(|c| {
            if !replace && c.kind(to)?.is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{}: already exists", to.escape_default()),
                ));
            }
            c.posix_rename(from, to)
        })
    }

    fn hard_link(&self, from: &str, to: &str) -> io::Result<()> {
        self.with(|c| c.hard_link(from, to))
    }

    fn remove_tree(&self, name: &str) -> io::Result<()> {
        self.with(|c| c.remove_tree(name))
    }

    /// Each file was flushed as it was written.
    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

/// A mode as sftp carries it (permission bits only).
fn sftp_mode(mode: u32) -> u16 {
    (mode & 0o7777) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = RemoteUrl::parse("sftp://bento-publish@bento.example.org:2222/").unwrap();
        assert_eq!(
            u,
            RemoteUrl {
                user: "bento-publish".into(),
                address: "bento.example.org".into(),
                port: 2222,
                root: "/".into()
            }
        );
        assert_eq!(u.to_string(), "sftp://bento-publish@bento.example.org:2222/");
        let u = RemoteUrl::parse("sftp://admin@[::1]/srv/bento/").unwrap();
        assert_eq!((u.port, u.root.as_str()), (22, "/srv/bento"));
        assert_eq!(u.to_string(), "sftp://admin@[::1]:22/srv/bento");
        for bad in [
            "sftp://host/srv",
            "sftp://a@host",
            "sftp://a@host:22/srv/../etc",
            "sftp://-oProxyCommand=x@h/srv",
            "file:///srv/bento",
            "sftp://a@h:0/srv",
        ] {
            assert!(RemoteUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
