//! Where `bento deploy` publishes: the server root as a directory of this machine, or a
//! remote one over sftp. Both follow one layout ([`crate::layout`]) over a [`ServerDir`]
//! and give the same guarantees, step by step: a host whose bundle did not change is only
//! read; a new generation is written under a temp name, renamed into place, and only then
//! does `current` name it; old generations are pruned last.

use bento_secrets::accounts::Owner;

use crate::error::Error;
use crate::fleet::config::Config;
use crate::fleet::location::Location;
use crate::layout::{HostDir, ServerRoot};
use crate::publish::cache_dir::CacheDir;
use crate::publish::remote::{self, RemoteDir, RemoteRoot};
use crate::s3::dir::S3Root;
use crate::server_dir::ServerDir;
use crate::wire::mode::DeployMode;

/// An open publishing target: a local root (locked for this process), or a remote one.
pub enum Target {
    /// A server root on this machine.
    Local(ServerRoot),
    /// A server root reached over sftp, as the publishing account.
    Remote(RemoteDir),
    /// Object storage (see [`crate::s3`]).
    S3(S3Root),
}

impl Target {
    /// Opens `location`: a local root is created where missing and locked; a remote one is
    /// connected to through the `ssh` program, its key pinned from the fleet at `fleet_root`.
    pub fn open(
        location: &Location,
        fleet_root: &std::path::Path,
        config: &Config,
        ssh: &str,
    ) -> Result<Target, Error> {
        Ok(match location {
            Location::Local(dir) => Target::Local(ServerRoot::open(dir)?),
            Location::Remote(url) => Target::Remote(RemoteDir::root(RemoteRoot::connect(
                url,
                &fleet_root.join(remote::KNOWN_HOSTS),
                config.login_key_path().as_deref(),
                ssh,
                remote::Limits {
                    whole: config.deploy.timeout(),
                    request: config.deploy.request_timeout(),
                },
            )?)),
            Location::S3(url) => Target::S3(crate::fleet::location::open_s3(url, config)?),
        })
    }

    /// The root directory.
    pub(crate) fn root(&self) -> &dyn ServerDir {
        match self {
            Target::Local(root) => root.dir(),
            Target::Remote(dir) => dir,
            Target::S3(root) => root,
        }
    }

    /// `host`'s directory, ready to publish into. Local: what is missing is created (the
    /// host's `cache/` too in closure `mode`) and `logs/` handed to `logs_owner`. Remote: the layout that `bento server setup` makes
    /// is checked (the publishing account cannot create a host's directory).
    pub fn host(&self, host: &str, logs_owner: Option<Owner>, mode: DeployMode) -> Result<HostDir, Error> {
        if let Target::Local(root) = self {
            root.prepare(host, logs_owner, mode)?;
        }
        let dir = HostDir::open(self.root(), &self.shown(), host)?;
        if let Target::Remote(_) = self {
            dir.check_publishable()?;
        }
        Ok(dir)
    }

    /// Makes what was written so far durable: one `syncfs` locally; remotely each file
    /// was already flushed (`fsync@openssh.com`) as it was written.
    pub fn sync(&self) -> Result<(), Error> {
        self.root().sync().map_err(|e| Error::io(self.shown(), e))
    }

    /// The binary cache `<root>/cache` of this target.
    pub fn cache(&self) -> Result<CacheDir, Error> {
        CacheDir::open(self.root(), &self.shown())
    }

    /// Where this is, for messages: the directory, or the sftp URL.
    pub fn shown(&self) -> String {
        match self {
            Target::Local(root) => root.path().display().to_string(),
            Target::Remote(dir) => dir.url().to_string(),
            Target::S3(root) => root.url().to_string(),
        }
    }
}
