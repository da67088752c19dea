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
use crate::layout::{
    generation_of, is_leftover, parse_generation, CURRENT_FILE, CURRENT_LIMIT, CURRENT_LINK, GENERATIONS_DIR,
    MANIFEST_LIMIT, MAX_ENTRIES, POINTER_TEMP_PREFIX, SIGNATURE_LIMIT, STAGING_PREFIX,
};
use crate::manifest::{MANIFEST_FILE, SIGNATURE_FILE};
use crate::server_dir::{Kind, ServerDir};
use crate::sftp::{SftpTransport, SshTarget};
use crate::transport::{ServerUrl, Transport};

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

/// A generation uploaded under its temp name, not yet visible.
#[derive(Debug)]
pub struct RemoteStaged {
    host: String,
    generation: u64,
    /// The temp dir, relative to the root; `None` once renamed into place.
    tmp: Option<String>,
}

impl RemoteStaged {
    /// The generation number.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// What to do after a failed operation on a remote host directory.
const RETRY: &str = "run `bento deploy` again (the host keeps its current generation)";

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

    fn shown(&self, host: &str, rel: &str) -> String {
        let root = self.url.to_string();
        format!("{}/{host}/{rel}", root.trim_end_matches('/'))
    }

    /// One error line about `host`'s `rel`: what failed and what to do.
    fn failed(&self, host: &str, rel: &str, e: io::Error) -> Error {
        let why = e.to_string();
        Error::input(
            self.shown(host, rel),
            format!("{}; {RETRY}", why.trim_end_matches('.')),
        )
    }

    /// Checks that `host`'s directory is laid out for publishing over sftp: `generations/`
    /// a directory, `current` the link to `generations/current`. Writes nothing.
    pub fn check_host(&self, host: &str) -> Result<(), Error> {
        let setup = "apply `bento server setup` on the server (the publishing account owns each \
                     host's generations/, and current links to generations/current)";
        let generations = format!("{host}/{GENERATIONS_DIR}");
        let current = format!("{host}/{CURRENT_FILE}");
        let (gen_kind, cur_kind) = self
            .with(|c| Ok((c.kind(&generations)?, c.kind(&current)?)))
            .map_err(|e| self.failed(host, "", e))?;
        if gen_kind != Some(Kind::Dir) {
            return Err(Error::input(
                self.shown(host, GENERATIONS_DIR),
                format!("not a directory there; {setup}"),
            ));
        }
        let link = match cur_kind {
            Some(Kind::Link) => self
                .with(|c| c.read_link(&current))
                .map_err(|e| self.failed(host, CURRENT_FILE, e))?,
            _ => PathBuf::new(),
        };
        if link != Path::new(CURRENT_LINK) {
            return Err(Error::input(
                self.shown(host, CURRENT_FILE),
                format!("is not the link `current -> {CURRENT_LINK}`; {setup}"),
            ));
        }
        Ok(())
    }

    /// The generation `generations/current` names, if any (a regular file, bounded).
    pub fn current(&self, host: &str) -> Result<Option<u64>, Error> {
        let rel = format!("{host}/{CURRENT_LINK}");
        match self.with(|c| c.read(&rel, CURRENT_LIMIT)) {
            Ok(bytes) => parse_generation(&bytes).map(Some).ok_or_else(|| {
                Error::input(
                    self.shown(host, CURRENT_LINK),
                    "does not hold a generation number; fix it by hand (it names a dir of generations/)",
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.failed(host, CURRENT_LINK, e)),
        }
    }

    /// The exact bytes of generation `g`'s `manifest.json` and its `manifest.sig`, when
    /// both are there in a real directory (bounded reads, no link followed).
    pub fn signed_manifest(&self, host: &str, g: u64) -> Option<(Vec<u8>, String)> {
        let dir = format!("{host}/{GENERATIONS_DIR}/{g}");
        let (bytes, sig) = self
            .with(|c| {
                if c.kind(&dir)? != Some(Kind::Dir) {
                    return Err(io::Error::other("not a directory"));
                }
                let bytes = c.read(&format!("{dir}/{MANIFEST_FILE}"), MANIFEST_LIMIT)?;
                let sig = c.read(&format!("{dir}/{SIGNATURE_FILE}"), SIGNATURE_LIMIT)?;
                Ok((bytes, sig))
            })
            .ok()?;
        Some((bytes, String::from_utf8(sig).ok()?))
    }

    /// The names in `host`'s `generations/` with their kinds: at most
    /// [`MAX_ENTRIES`], each name at most [`crate::sftp::publisher::NAME_MAX`] bytes (whoever writes the server
    /// chooses them).
    fn generation_entries(&self, host: &str) -> Result<Vec<(String, Kind)>, Error> {
        self.listing(host, GENERATIONS_DIR)
    }

    /// The entries of `host`'s directory `rel`, bounded as [`RemoteRoot::generation_entries`];
    /// past a bound, one line saying what to remove.
    fn listing(&self, host: &str, rel: &str) -> Result<Vec<(String, Kind)>, Error> {
        let path = format!("{host}/{rel}");
        self.with(|c| c.entries_at_most(&path, MAX_ENTRIES))
            .map_err(|e| match e.kind() {
                io::ErrorKind::InvalidData => Error::input(
                    self.shown(host, rel),
                    format!("{e}: refused; remove what bento did not write there"),
                ),
                _ => self.failed(host, rel, e),
            })
    }

    /// The generations present, ascending.
    pub fn generations(&self, host: &str) -> Result<Vec<u64>, Error> {
        let mut out: Vec<u64> = self
            .generation_entries(host)?
            .into_iter()
            .filter_map(|(name, kind)| generation_of(&name, kind))
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    /// Removes what an interrupted upload left in `generations/`: staging dirs and temp
    /// pointers. Writes nothing when there is nothing to remove.
    pub fn remove_leftovers(&self, host: &str) -> Result<(), Error> {
        for (name, kind) in self.generation_entries(host)? {
            if is_leftover(&name) {
                let rel = format!("{GENERATIONS_DIR}/{name}");
                self.remove_tree(host, &rel, kind)?;
            }
        }
        Ok(())
    }

    /// Removes `rel` of `host`'s directory and, for a directory, all it holds (links are
    /// removed, never followed).
    fn remove_tree(&self, host: &str, rel: &str, kind: Kind) -> Result<(), Error> {
        let path = format!("{host}/{rel}");
        if kind == Kind::Dir {
            let entries = self.listing(host, rel)?;
            for (name, kind) in entries {
                self.remove_tree(host, &format!("{rel}/{name}"), kind)?;
            }
            self.with(|c| c.remove_dir(&path))
        } else {
            self.with(|c| c.remove_file(&path))
        }
        .map_err(|e| self.failed(host, rel, e))
    }

    /// Uploads a generation's files under a temp dir of `generations/`; nothing is
    /// visible until [`RemoteRoot::install`] and [`RemoteRoot::switch`].
    pub fn stage(&self, host: &str, generation: u64, files: &[(&str, &[u8])]) -> Result<RemoteStaged, Error> {
        let tmp = format!(
            "{GENERATIONS_DIR}/{STAGING_PREFIX}{generation}-{}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        );
        let mut made: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        let mkdir = |rel: &str| self.with(|c| c.mkdir(&format!("{host}/{rel}"), 0o755));
        mkdir(&tmp).map_err(|e| self.failed(host, &tmp, e))?;
        for (rel, bytes) in files {
            // Parent directories first, each once.
            for (i, _) in rel.match_indices('/') {
                if made.insert(rel[..i].to_owned()) {
                    let dir = format!("{tmp}/{}", &rel[..i]);
                    mkdir(&dir).map_err(|e| self.failed(host, &dir, e))?;
                }
            }
            let file = format!("{tmp}/{rel}");
            self.with(|c| c.create(&format!("{host}/{file}"), bytes, 0o644))
                .map_err(|e| self.failed(host, &file, e))?;
        }
        Ok(RemoteStaged {
            host: host.to_owned(),
            generation,
            tmp: Some(tmp),
        })
    }

    /// Renames an uploaded generation to `generations/<g>` (refused when that exists).
    pub fn install(&self, staged: &mut RemoteStaged) -> Result<(), Error> {
        let Some(tmp) = staged.tmp.clone() else {
            return Ok(());
        };
        let host = &staged.host;
        let target = format!("{GENERATIONS_DIR}/{}", staged.generation);
        let exists = self
            .with(|c| c.kind(&format!("{host}/{target}")))
            .map_err(|e| self.failed(host, &target, e))?;
        if exists.is_some() {
            return Err(Error::input(
                self.shown(host, &target),
                "already exists; was it written by hand, or is another deploy running? remove it",
            ));
        }
        self.with(|c| c.posix_rename(&format!("{host}/{tmp}"), &format!("{host}/{target}")))
            .map_err(|e| self.failed(host, &target, e))?;
        staged.tmp = None;
        Ok(())
    }

    /// Points `generations/current` at the installed generation: a temp file, then
    /// `posix-rename@openssh.com` over the old pointer.
    pub fn switch(&self, staged: &RemoteStaged) -> Result<(), Error> {
        let host = &staged.host;
        let tmp = format!(
            "{GENERATIONS_DIR}/{POINTER_TEMP_PREFIX}.{}.{}.tmp",
            staged.generation,
            std::process::id()
        );
        let text = format!("{}\n", staged.generation);
        self.with(|c| {
            let path = format!("{host}/{tmp}");
            // A leftover of the same name from an interrupted run of this very process id.
            let _ = c.remove_file(&path);
            c.create(&path, text.as_bytes(), 0o644)?;
            c.posix_rename(&path, &format!("{host}/{CURRENT_LINK}"))
        })
        .map_err(|e| self.failed(host, CURRENT_LINK, e))
    }

    /// Removes generations beyond the newest `keep` (never `current`), and what
    /// interrupted uploads left. Returns the generations removed.
    pub fn prune(&self, host: &str, keep: usize, current: u64) -> Result<Vec<u64>, Error> {
        let mut removed = Vec::new();
        for g in crate::layout::to_prune(&self.generations(host)?, keep, current) {
            self.remove_tree(host, &format!("{GENERATIONS_DIR}/{g}"), Kind::Dir)?;
            removed.push(g);
        }
        self.remove_leftovers(host)?;
        Ok(removed)
    }
}

/// A directory of a remote root, read as a [`ServerDir`] (`bento status`, `diff`, `ssh` over
/// the target); errors name paths as seen from it. A read refuses a final link; the
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

    fn dir(&self, rel: &str) -> io::Result<Box<dyn ServerDir + '_>> {
        crate::transport::check_rel(rel)?;
        let not = |kind, why: &str| io::Error::new(kind, format!("{}: {why}", rel.escape_default()));
        match self.kind(rel)? {
            Some(Kind::Dir) => Ok(Box::new(RemoteDir {
                root: self.root.clone(),
                prefix: match self.prefix.as_str() {
                    "" => rel.to_owned(),
                    prefix => format!("{prefix}/{rel}"),
                },
            })),
            Some(Kind::Link) => Err(not(io::ErrorKind::InvalidData, "refused: it is a symlink")),
            Some(_) => Err(not(io::ErrorKind::InvalidData, "refused: not a directory")),
            None => Err(not(io::ErrorKind::NotFound, "no such directory")),
        }
    }
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
