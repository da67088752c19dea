//! The fleet repo as one admin command sees it, loaded once: its root, `bento.toml` and
//! the fleet (keys, rules, secrets).

use std::path::{Path, PathBuf};

use bento_secrets::Fleet;

use crate::error::Error;
use crate::fleet::config::Config;
use crate::fleet::hosts::{self, Host};
use crate::fleet::location::Location;

/// A loaded fleet repo.
pub struct Workspace {
    /// Where it is.
    pub root: PathBuf,
    /// `bento.toml`.
    pub config: Config,
    /// Keys, rules and secrets.
    pub fleet: Fleet,
}

impl Workspace {
    /// Loads `bento.toml` and the fleet at `root`.
    pub fn load(root: &Path) -> Result<Workspace, Error> {
        Ok(Workspace {
            root: root.to_path_buf(),
            config: Config::load(root)?,
            fleet: Fleet::load(root)?,
        })
    }

    /// The configured hosts (`hosts/`), only those of `wanted` when it is not empty; `nix`
    /// lists flakes' configurations.
    pub fn hosts(&self, wanted: &[String], nix: &str) -> Result<Vec<Host>, Error> {
        hosts::select(
            hosts::discover(&self.root, &self.fleet, nix)?,
            wanted,
            &self.fleet,
        )
    }

    /// Where the server is for this command (see [`Location::choose`]).
    pub fn location(&self, server_root: Option<&Path>, target: Option<&str>) -> Result<Location, Error> {
        Location::choose(&self.config, server_root, target)
    }
}
