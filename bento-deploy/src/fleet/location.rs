//! Where the server root is, as the admin named it — a local directory or an sftp target,
//! in the same order of precedence for every command that reads or writes it — and
//! opening it for reading as a [`ServerDir`].

use std::io;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::fleet::config::Config;
use crate::publish::remote::{self, RemoteDir, RemoteRoot, RemoteUrl};
use crate::s3::client::Client;
use crate::s3::credentials::S3Credentials;
use crate::s3::dir::S3Root;
use crate::s3::url::S3Url;
use crate::server_dir::{LocalDir, ServerDir};
use crate::status::Root;

/// How many hosts are read or published at once against object storage.
pub const S3_IN_FLIGHT: usize = 32;

/// Where the server root is, as the admin named it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A directory on this machine.
    Local(PathBuf),
    /// A root behind sftp, as the publishing account sees it.
    Remote(RemoteUrl),
    /// Object storage: each host's place named by the URL (see [`crate::s3`]).
    S3(S3Url),
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
            Some((what, url)) if url.starts_with("s3://") => S3Url::parse(url)
                .map(Location::S3)
                .map_err(|e| Error::input(what, e.to_string())),
            Some((what, url)) => RemoteUrl::parse(url)
                .map(Location::Remote)
                .map_err(|e| Error::input(what, e.to_string())),
            None => Ok(Location::Local(PathBuf::from(&config.server.root))),
        }
    }

    /// Runs `f` on a thread pool sized for this server: against object storage each host
    /// costs a few requests of a few milliseconds, spent waiting, so many more of them are
    /// in flight than there are cores; elsewhere the global pool.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        if let Location::S3(_) = self {
            if let Ok(pool) = rayon::ThreadPoolBuilder::new().num_threads(S3_IN_FLIGHT).build() {
                return pool.install(f);
            }
        }
        f()
    }

    /// How it is shown in messages.
    pub fn shown(&self) -> String {
        match self {
            Location::Local(dir) => dir.display().to_string(),
            Location::Remote(url) => url.to_string(),
            Location::S3(url) => url.to_string(),
        }
    }

    /// Opens it for reading: the local directory, or a connection as the publishing account
    /// (the server's key pinned from the fleet's `keys/server_known_hosts`).
    pub fn open(&self, fleet_root: &Path, config: &Config) -> Result<Server, Error> {
        match self {
            Location::Local(dir) => LocalDir::open(dir).map(Server::Local).map_err(|e| {
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
            Location::S3(url) => open_s3(url, config).map(|root| Server::S3(Box::new(root))),
        }
    }

    /// Opens it ([`Location::open`]) and reads it with `read`, as a status [`Root`];
    /// closed again after.
    pub fn read<T, E: From<Error>>(
        &self,
        fleet_root: &Path,
        config: &Config,
        read: impl FnOnce(Root<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let server = self.open(fleet_root, config)?;
        let shown = self.shown();
        read(Root {
            dir: server.dir(),
            shown: &shown,
        })
    }
}

/// The store of `url`, with the admin's credentials (the environment, else
/// `~/.aws/credentials`) and bento.toml's deploy timeouts.
pub fn open_s3(url: &S3Url, config: &Config) -> Result<S3Root, Error> {
    let credentials =
        S3Credentials::from_environment().map_err(|e| Error::input(url.to_string(), e.to_string()))?;
    let client = Client::new(
        url,
        &credentials,
        config.deploy.request_timeout(),
        config.deploy.timeout(),
    );
    Ok(S3Root::new(url.clone(), client))
}

/// A server root, open for reading.
pub enum Server {
    /// On this machine.
    Local(LocalDir),
    /// Over sftp.
    Remote(RemoteDir),
    /// Object storage.
    S3(Box<S3Root>),
}

impl Server {
    /// Its directory.
    pub fn dir(&self) -> &dyn ServerDir {
        match self {
            Server::Local(dir) => dir,
            Server::Remote(root) => root,
            Server::S3(root) => root.as_ref(),
        }
    }
}
