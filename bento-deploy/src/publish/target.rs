//! Where `bento deploy` publishes: the server root as a directory of this machine, or a
//! remote one over sftp. Both give the same guarantees, step by step: a host whose bundle
//! did not change is only read; a new generation is written under a temp name, renamed into
//! place, and only then does `current` name it; old generations are pruned last.

use bento_secrets::accounts::Owner;

use crate::error::Error;
use crate::layout::{self, ServerRoot};
use crate::publish::cache_sink::{CacheSink, LocalCache};
use crate::publish::remote::{RemoteRoot, RemoteStaged};
use crate::publish::remote_cache::RemoteCache;

/// An open (and, when local, locked) publishing target.
pub enum Target {
    /// A server root on this machine.
    Local(ServerRoot),
    /// A server root reached over sftp.
    Remote(Box<RemoteRoot>),
}

/// A generation written under a temp name, not yet visible; it knows its own target.
pub enum Staged<'a> {
    /// In a local root.
    Local(layout::Staged),
    /// In a remote root.
    Remote(&'a RemoteRoot, RemoteStaged),
}

impl Staged<'_> {
    /// The generation number.
    pub fn generation(&self) -> u64 {
        match self {
            Staged::Local(s) => s.generation(),
            Staged::Remote(_, s) => s.generation(),
        }
    }

    /// Renames the generation into place.
    pub fn install(&mut self) -> Result<(), Error> {
        match self {
            Staged::Local(s) => s.install(),
            Staged::Remote(remote, s) => remote.install(s),
        }
    }

    /// Points the host's `current` at the installed generation, by rename.
    pub fn switch(&self) -> Result<(), Error> {
        match self {
            Staged::Local(s) => s.switch(),
            Staged::Remote(remote, s) => remote.switch(s),
        }
    }
}

impl Target {
    /// Makes `host`'s directory ready to publish into. Local: creates what is missing and
    /// hands `logs/` to `logs_owner`. Remote: checks the layout that `bento server setup`
    /// makes (the publishing account cannot create a host's directory).
    pub fn prepare(&self, host: &str, logs_owner: Option<Owner>) -> Result<(), Error> {
        match self {
            Target::Local(root) => root.host(host).prepare(logs_owner),
            Target::Remote(remote) => remote.check_host(host),
        }
    }

    /// The generation `host`'s `current` names, if any.
    pub fn current(&self, host: &str) -> Result<Option<u64>, Error> {
        match self {
            Target::Local(root) => root.host(host).current(),
            Target::Remote(remote) => remote.current(host),
        }
    }

    /// The exact bytes of `host`'s generation `g`'s manifest and its signature, when both
    /// are there (unverified: whoever writes the server chose them).
    pub fn signed_manifest(&self, host: &str, g: u64) -> Option<(Vec<u8>, String)> {
        match self {
            Target::Local(root) => root.host(host).signed_manifest(g),
            Target::Remote(remote) => remote.signed_manifest(host, g),
        }
    }

    /// `host`'s generations, ascending.
    pub fn generations(&self, host: &str) -> Result<Vec<u64>, Error> {
        match self {
            Target::Local(root) => root.host(host).generations(),
            Target::Remote(remote) => remote.generations(host),
        }
    }

    /// Removes what an interrupted deploy left in `host`'s directory.
    pub fn remove_leftovers(&self, host: &str) -> Result<(), Error> {
        match self {
            Target::Local(root) => root.host(host).remove_leftovers(),
            Target::Remote(remote) => remote.remove_leftovers(host),
        }
    }

    /// Writes generation `g` of `host` (`files`: path in the bundle, bytes) under a temp name.
    pub fn stage(&self, host: &str, g: u64, files: &[(&str, &[u8])]) -> Result<Staged<'_>, Error> {
        match self {
            Target::Local(root) => root.host(host).stage(g, files).map(Staged::Local),
            Target::Remote(remote) => remote.stage(host, g, files).map(|s| Staged::Remote(remote, s)),
        }
    }

    /// Makes what was written so far durable: one `syncfs` locally; remotely each file
    /// was already flushed (`fsync@openssh.com`) as it was written.
    pub fn sync(&self) -> Result<(), Error> {
        match self {
            Target::Local(root) => root.sync(),
            Target::Remote(_) => Ok(()),
        }
    }

    /// Removes `host`'s generations beyond the newest `keep` (never `current`) and
    /// leftovers; returns the generations removed.
    pub fn prune(&self, host: &str, keep: usize, current: u64) -> Result<Vec<u64>, Error> {
        match self {
            Target::Local(root) => root.host(host).prune(keep, current),
            Target::Remote(remote) => remote.prune(host, keep, current),
        }
    }

    /// The binary cache `<root>/cache` of this target: a local directory, or the remote
    /// one over the same sftp connection.
    pub fn cache(&self) -> Result<Box<dyn CacheSink + '_>, Error> {
        Ok(match self {
            Target::Local(root) => Box::new(LocalCache::open(root.path())?),
            Target::Remote(remote) => Box::new(RemoteCache::open(remote)?),
        })
    }

    /// Where this is, for messages: the directory, or the sftp URL.
    pub fn shown(&self) -> String {
        match self {
            Target::Local(root) => root.path().display().to_string(),
            Target::Remote(remote) => remote.url().to_string(),
        }
    }
}
