//! How an activation is asked for: which phase, which bundle and root, what to do with units.

use std::path::PathBuf;

use crate::ramfs::FsKind;
use crate::units::UnitControl;

/// Which secrets an activation handles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    /// Secrets marked `needed_for_users`, before users exist: root-only, in
    /// `<root>/secrets-for-users`.
    Users,
    /// All other secrets, in `<root>/secrets`.
    #[default]
    Secrets,
}

/// How to activate.
#[derive(Clone, Debug)]
pub struct Options {
    /// The installed bundle (holding `manifest.json` and `secrets/`).
    pub bundle: PathBuf,
    /// The activation root, `/run/bento` on a host.
    pub root: PathBuf,
    /// The host's private keys.
    pub identities: Vec<PathBuf>,
    /// Which secrets.
    pub phase: Phase,
    /// Report what would change, change nothing.
    pub dry_run: bool,
    /// How many previous generations to keep.
    pub keep: usize,
    /// Which RAM filesystem to mount.
    pub fs: FsKind,
    /// Mount the RAM filesystem (off only for unprivileged test or demo runs).
    pub mount: bool,
    /// What to do with the units of changed secrets: restart them with `systemctl` (or
    /// queue their restart with `systemctl --no-block`), or leave them.
    pub units: UnitControl,
}
