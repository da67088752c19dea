//! How a host reaches its directory on the server: over sftp (through the system `ssh`,
//! so `~/.ssh/config`, ProxyCommand and ProxyJump apply), or as a local directory
//! (`file:///srv/bento`, for a server on the same machine, demos and tests).
//!
//! Paths are relative to the host's own directory (its sftp chroot): `current`,
//! `generations/7/manifest.json`, `logs/report-7.json`.

use std::io;
use std::path::{Path, PathBuf};

/// Where the server is, parsed from agent.toml's `server`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerUrl {
    /// `sftp://user@address:port`
    Sftp {
        /// The sftp user (`<user_prefix><host>`).
        user: String,
        /// Host name or address.
        address: String,
        /// Port.
        port: u16,
    },
    /// `file:///dir`: the server root; the host's directory is `<dir>/<host>`.
    Local(PathBuf),
}

impl ServerUrl {
    /// Parses `sftp://user@address[:port]` or `file:///absolute/dir`.
    pub fn parse(url: &str) -> Result<ServerUrl, String> {
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(format!(
                    "`{url}`: a file:// server needs an absolute path (file:///srv/bento)"
                ));
            }
            return Ok(ServerUrl::Local(PathBuf::from(path)));
        }
        let Some(rest) = url.strip_prefix("sftp://") else {
            return Err(format!(
                "`{url}`: expected sftp://user@address:port or file:///dir"
            ));
        };
        let (user, hostport) = rest
            .split_once('@')
            .ok_or_else(|| format!("`{url}`: name the sftp user: sftp://user@address:port"))?;
        // `[::1]:22`, `host:22`, or no port.
        let (address, port) = match hostport.strip_prefix('[').and_then(|h| h.split_once(']')) {
            Some((v6, rest)) => (v6, rest.strip_prefix(':')),
            None => match hostport.rsplit_once(':') {
                Some((a, p)) => (a, Some(p)),
                None => (hostport, None),
            },
        };
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| format!("`{url}`: bad port `{p}`"))?,
            None => 22,
        };
        let ok = |s: &str| !s.is_empty() && !s.contains(['/', ' ', '@']) && !s.starts_with('-');
        if !ok(user) || !ok(address) || port == 0 {
            return Err(format!("`{url}`: expected sftp://user@address:port"));
        }
        Ok(ServerUrl::Sftp {
            user: user.into(),
            address: address.into(),
            port,
        })
    }
}

/// Reading and writing files in the host's directory on the server.
pub trait Transport {
    /// Reads a whole file.
    fn read(&mut self, rel: &str) -> io::Result<Vec<u8>>;
    /// Lists a directory: (name, is_dir), sorted by name.
    fn list(&mut self, rel: &str) -> io::Result<Vec<(String, bool)>>;
    /// Writes a whole file (into `logs/`, the only writable place), replacing it.
    fn write(&mut self, rel: &str, bytes: &[u8]) -> io::Result<()>;
    /// How many bytes went over the wire so far (both ways), when known.
    fn bytes_transferred(&self) -> u64;
}

pub use crate::confined::check_rel;

/// A server directory on this machine.
pub struct LocalDir {
    dir: PathBuf,
    transferred: u64,
}

impl LocalDir {
    /// The host `host`'s directory under server root `root`.
    pub fn new(root: &Path, host: &str) -> LocalDir {
        LocalDir {
            dir: root.join(host),
            transferred: 0,
        }
    }
}

impl Transport for LocalDir {
    fn read(&mut self, rel: &str) -> io::Result<Vec<u8>> {
        check_rel(rel)?;
        let bytes = std::fs::read(self.dir.join(rel))?;
        self.transferred += bytes.len() as u64;
        Ok(bytes)
    }

    fn list(&mut self, rel: &str) -> io::Result<Vec<(String, bool)>> {
        check_rel(rel)?;
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.dir.join(rel))? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_symlink() {
                continue; // a bundle never holds symlinks
            }
            out.push((entry.file_name().to_string_lossy().into_owned(), kind.is_dir()));
        }
        out.sort();
        Ok(out)
    }

    fn write(&mut self, rel: &str, bytes: &[u8]) -> io::Result<()> {
        check_rel(rel)?;
        let path = self.dir.join(rel);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)?;
        self.transferred += bytes.len() as u64;
        Ok(())
    }

    fn bytes_transferred(&self) -> u64 {
        self.transferred
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            ServerUrl::parse("sftp://web1@bento.example.org:2222").unwrap(),
            ServerUrl::Sftp {
                user: "web1".into(),
                address: "bento.example.org".into(),
                port: 2222
            }
        );
        assert_eq!(
            ServerUrl::parse("sftp://web1@10.0.0.1").unwrap(),
            ServerUrl::Sftp {
                user: "web1".into(),
                address: "10.0.0.1".into(),
                port: 22
            }
        );
        assert_eq!(
            ServerUrl::parse("file:///srv/bento").unwrap(),
            ServerUrl::Local("/srv/bento".into())
        );
        for bad in [
            "ftp://x",
            "sftp://host",
            "file://relative",
            "sftp://-oProxyCommand=x@h",
            "sftp://a@b:99999",
        ] {
            assert!(ServerUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_cannot_escape() {
        for bad in ["../x", "/etc/passwd", "a//b", "a/./b", "", "a/.."] {
            assert!(check_rel(bad).is_err(), "{bad}");
        }
        assert!(check_rel("generations/3/config/configuration.nix").is_ok());
    }
}
