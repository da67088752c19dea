//! The server layout that `bento deploy` publishes into:
//!
//! ```text
//! <root>/<host>/                  root-owned 0755 (an OpenSSH chroot)
//! <root>/<host>/current           the generation the host should run, as decimal text;
//!                                 or a root-made link `current -> generations/current`
//! <root>/<host>/generations/<g>/  config/, secrets/*.age, manifest.json, manifest.sig
//! <root>/<host>/logs/             0700, owned by the host's sftp user when it exists
//! ```
//!
//! A generation is written into a hidden temp dir next to the others, synced, then
//! renamed into place; only then is `current` replaced (by rename), so `current` always
//! names a complete generation.
//!
//! Where admins publish over sftp (`[deploy] target`), a publishing account that is not
//! root owns each host's `generations/`, but cannot write the host directory itself (an
//! OpenSSH chroot must be root's). There `current` is a link made by root,
//! `current -> generations/current`, and the pointer that publishing replaces is
//! `generations/current`. That link is the only one readers accept (never following it:
//! they recognise its text and read `generations/current`); a local deploy into such a
//! root replaces `generations/current` too, so both ways of publishing agree.

use std::fs::{DirBuilder, File};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bento_secrets::accounts::Owner;

use crate::confined::Confined;
use crate::error::Error;
use crate::manifest::{Manifest, MANIFEST_FILE};

/// A host's pointer to its current generation.
pub const CURRENT_FILE: &str = "current";
/// The one link a host directory may hold: `current` pointing at this (relative) path,
/// where the publishing account keeps the pointer.
pub const CURRENT_LINK: &str = "generations/current";
/// The directory of a host's generations.
pub const GENERATIONS_DIR: &str = "generations";
/// The directory a host writes its reports into.
pub const LOGS_DIR: &str = "logs";

// The most a reader takes of the unsigned files of a host directory (the agent, status):
// whoever writes the server directory chooses their size.
/// The most `current` may hold: a generation number and a newline need a few bytes.
pub const CURRENT_LIMIT: u64 = 4 * 1024;
/// The most `manifest.json` may hold (a manifest of thousands of files is well below).
pub const MANIFEST_LIMIT: u64 = 4 * 1024 * 1024;
/// The most `manifest.sig` may hold (an SSHSIG is under 2 KiB, even with RSA-4096).
pub const SIGNATURE_LIMIT: u64 = 64 * 1024;
/// The lock that keeps two deploys from publishing into one root at once.
const LOCK_FILE: &str = ".bento-deploy.lock";
/// Prefix of generations being written.
pub(crate) const STAGING_PREFIX: &str = ".new-";
/// The temp file that replaces `current`.
const CURRENT_TEMP: &str = ".current.new";

/// The server root, locked for this process.
#[derive(Debug)]
pub struct ServerRoot {
    root: PathBuf,
    _lock: File,
}

impl ServerRoot {
    /// Opens (creating it 0755 if needed) and locks the server root.
    pub fn open(root: &Path) -> Result<ServerRoot, Error> {
        let shown = root.display().to_string();
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(root)
            .map_err(|e| Error::io(&shown, e))?;
        let lock_path = root.join(LOCK_FILE);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(lock_path.display().to_string(), e))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(|_| {
            Error::input(
                shown,
                "another `bento deploy` is publishing here; wait for it to finish",
            )
        })?;
        Ok(ServerRoot {
            root: root.to_path_buf(),
            _lock: lock,
        })
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The directory of one host.
    pub fn host(&self, name: &str) -> HostDir {
        HostDir {
            root: self.root.clone(),
            name: name.to_owned(),
            dir: self.root.join(name),
        }
    }

    /// Flushes everything written so far under the root to disk (one `syncfs`).
    pub fn sync(&self) -> Result<(), Error> {
        let dir = File::open(&self.root).map_err(|e| Error::io(self.root.display().to_string(), e))?;
        rustix::fs::syncfs(&dir).map_err(|e| Error::io(self.root.display().to_string(), e.into()))
    }
}

/// Whether this process runs as root (and so can and must set ownership).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// One host's directory on the server.
#[derive(Clone, Debug)]
pub struct HostDir {
    root: PathBuf,
    name: String,
    dir: PathBuf,
}

impl HostDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn shown(&self, rel: &str) -> String {
        self.dir.join(rel).display().to_string()
    }

    /// Creates what is missing of the host's directories and fixes their ownership: the
    /// host dir root-owned 0755 (when running as root), `logs/` 0700 and owned by
    /// `logs_owner`. Changes nothing that is already right.
    pub fn prepare(&self, logs_owner: Option<Owner>) -> Result<(), Error> {
        let root = is_root();
        ensure_dir(&self.dir, 0o755, root.then_some(Owner { uid: 0, gid: 0 }))?;
        ensure_dir(&self.dir.join(GENERATIONS_DIR), 0o755, None)?;
        ensure_dir(&self.dir.join(LOGS_DIR), 0o700, logs_owner.filter(|_| root))?;
        Ok(())
    }

    /// The host directory, opened beneath the root: nothing below is reached through a
    /// link.
    fn confined(&self) -> Result<Confined, Error> {
        Confined::open(&self.root)
            .and_then(|root| root.dir(&self.name))
            .map_err(|e| Error::io(self.dir.display().to_string(), e))
    }

    /// Where the pointer to the current generation lives: `current`, or
    /// [`CURRENT_LINK`] when `current` is that link. Any other link is refused.
    fn pointer(&self) -> Result<&'static str, Error> {
        match self.confined()?.read_link(CURRENT_FILE) {
            Ok(target) if target == Path::new(CURRENT_LINK) => Ok(CURRENT_LINK),
            Ok(target) => Err(Error::input(
                self.shown(CURRENT_FILE),
                format!(
                    "is a link to `{}`; the only link bento accepts here is `current -> {CURRENT_LINK}`: remove it",
                    target.display().to_string().escape_default()
                ),
            )),
            // Not there, or not a link (EINVAL): the pointer is `current` itself.
            Err(_) => Ok(CURRENT_FILE),
        }
    }

    /// The generation `current` names, if any (read without following links, bounded).
    pub fn current(&self) -> Result<Option<u64>, Error> {
        let rel = self.pointer()?;
        match self.confined()?.read(rel, CURRENT_LIMIT) {
            Ok(bytes) => parse_generation(&bytes).map(Some).ok_or_else(|| {
                Error::input(
                    self.shown(rel),
                    "does not hold a generation number; fix it by hand (it names a dir of generations/)",
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(self.shown(rel), e)),
        }
    }

    /// The manifest of generation `g`, when it is there and valid.
    pub fn manifest(&self, g: u64) -> Option<Manifest> {
        let rel = format!("{GENERATIONS_DIR}/{g}/{MANIFEST_FILE}");
        let bytes = self.confined().ok()?.read(&rel, MANIFEST_LIMIT).ok()?;
        Manifest::parse(&bytes).ok()
    }

    /// The directory of generation `g`.
    pub fn generation_dir(&self, g: u64) -> PathBuf {
        self.dir.join(GENERATIONS_DIR).join(g.to_string())
    }

    /// The generations present, ascending.
    pub fn generations(&self) -> Result<Vec<u64>, Error> {
        let dir = self.dir.join(GENERATIONS_DIR);
        let mut out: Vec<u64> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io(dir.display().to_string(), e)),
        };
        out.sort_unstable();
        Ok(out)
    }

    /// Writes a generation and the new `current` into temp files, unsynced; nothing is
    /// visible until [`Staged::install`] and [`Staged::switch`].
    pub fn stage(&self, generation: u64, files: &[(&str, &[u8])]) -> Result<Staged, Error> {
        let generations = self.dir.join(GENERATIONS_DIR);
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{STAGING_PREFIX}{generation}-"))
            .tempdir_in(&generations)
            .map_err(|e| Error::io(generations.display().to_string(), e))?;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io(tmp.path().display().to_string(), e))?;
        for (rel, bytes) in files {
            let path = tmp.path().join(rel);
            let shown = self.shown(&format!("{GENERATIONS_DIR}/{generation}/{rel}"));
            if let Some(parent) = path.parent() {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent)
                    .map_err(|e| Error::io(&shown, e))?;
            }
            write_new(&path, bytes).map_err(|e| Error::io(&shown, e))?;
        }
        let pointer = self.pointer()?;
        let current = self.dir.join(pointer);
        let current_tmp = current.with_file_name(CURRENT_TEMP);
        write_new(&current_tmp, format!("{generation}\n").as_bytes())
            .map_err(|e| Error::io(current_tmp.display().to_string(), e))?;
        // Where a publishing account owns generations/ (`bento server setup`), what root
        // writes there becomes its too, or it could not prune it later.
        let owner = std::fs::symlink_metadata(&generations)
            .map_err(|e| Error::io(generations.display().to_string(), e))?;
        if is_root() && owner.uid() != 0 {
            for path in [tmp.path(), &current_tmp] {
                chown_tree(path, owner.uid(), owner.gid())
                    .map_err(|e| Error::io(path.display().to_string(), e))?;
            }
        }
        Ok(Staged {
            host: self.clone(),
            generation,
            tmp: Some(tmp),
            current_tmp,
            current,
        })
    }

    /// Removes generations beyond the newest `keep` (never `current`), and temp dirs left
    /// by an interrupted deploy. Returns the generations removed.
    pub fn prune(&self, keep: usize, current: u64) -> Result<Vec<u64>, Error> {
        let mut removed = Vec::new();
        for g in to_prune(&self.generations()?, keep, current) {
            let dir = self.generation_dir(g);
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
            removed.push(g);
        }
        self.remove_leftovers()?;
        Ok(removed)
    }

    /// Removes what an interrupted deploy left: staging dirs and a half-made `current`.
    /// Touches nothing when there is nothing to remove.
    pub fn remove_leftovers(&self) -> Result<(), Error> {
        let dir = self.dir.join(GENERATIONS_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(dir.display().to_string(), e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(dir.display().to_string(), e))?;
            if entry.file_name().to_string_lossy().starts_with(STAGING_PREFIX) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let _ = std::fs::remove_file(self.dir.join(CURRENT_TEMP));
        let _ = std::fs::remove_file(dir.join(CURRENT_TEMP));
        Ok(())
    }
}

/// A generation written to temp files, not yet visible.
#[derive(Debug)]
pub struct Staged {
    host: HostDir,
    generation: u64,
    /// Removed on drop unless installed.
    tmp: Option<tempfile::TempDir>,
    current_tmp: PathBuf,
    /// The pointer the temp replaces: `current` or `generations/current`.
    current: PathBuf,
}

impl Staged {
    /// The generation number.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Renames the (synced) temp dir to `generations/<g>`.
    pub fn install(&mut self) -> Result<(), Error> {
        let target = self.host.generation_dir(self.generation);
        let shown = target.display().to_string();
        let Some(tmp) = self.tmp.take() else {
            return Ok(());
        };
        if target.exists() {
            return Err(Error::input(
                shown,
                "already exists; was it written by hand? remove it",
            ));
        }
        let path = tmp.keep();
        std::fs::rename(&path, &target).map_err(|e| {
            let _ = std::fs::remove_dir_all(&path);
            Error::io(&shown, e)
        })
    }

    /// Replaces `current` with the new generation's number, by rename.
    pub fn switch(&self) -> Result<(), Error> {
        std::fs::rename(&self.current_tmp, &self.current)
            .map_err(|e| Error::io(self.current.display().to_string(), e))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.tmp.is_some() {
            let _ = std::fs::remove_file(&self.current_tmp);
        }
    }
}

/// Creates `path` with `mode` if missing; sets `owner` (and `mode`) when they differ.
fn ensure_dir(path: &Path, mode: u32, owner: Option<Owner>) -> Result<(), Error> {
    let shown = || path.display().to_string();
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            DirBuilder::new()
                .mode(mode)
                .create(path)
                .map_err(|e| Error::io(shown(), e))?;
            // The umask may have cleared bits of `mode`.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io(shown(), e))?;
            std::fs::symlink_metadata(path).map_err(|e| Error::io(shown(), e))?
        }
        Err(e) => return Err(Error::io(shown(), e)),
    };
    if !meta.is_dir() {
        return Err(Error::input(shown(), "is not a directory; move it away"));
    }
    if let Some(owner) = owner {
        if (meta.uid(), meta.gid()) != (owner.uid, owner.gid) {
            std::os::unix::fs::lchown(path, Some(owner.uid), Some(owner.gid))
                .map_err(|e| Error::io(shown(), e))?;
        }
        if meta.mode() & 0o7777 != mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io(shown(), e))?;
        }
    }
    Ok(())
}

/// Hands `path` and, for a directory, everything below it to `uid:gid` (links are
/// changed themselves, never followed).
fn chown_tree(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Creates a new file (0644) holding `bytes`, replacing a leftover temp file. The leftover
/// is removed first and the file created exclusively (`O_EXCL`): where a publishing account
/// owns `generations/`, it could have planted a link there, and root must never write
/// through it.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)?;
    f.write_all(bytes)
}

/// Of `generations` (ascending), those beyond the newest `keep`, never `current`: what a
/// deploy prunes, locally or on a remote root.
pub(crate) fn to_prune(generations: &[u64], keep: usize, current: u64) -> Vec<u64> {
    let cut = generations.len().saturating_sub(keep);
    generations[..cut]
        .iter()
        .copied()
        .filter(|&g| g != current)
        .collect()
}

/// The generation number a `current` file holds (surrounding whitespace allowed).
pub fn parse_generation(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planted_link_at_a_temp_name_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("shadow");
        std::fs::write(&target, "keep").unwrap();
        let tmp = dir.path().join(".current.new");
        std::os::unix::fs::symlink(&target, &tmp).unwrap();
        write_new(&tmp, b"7\n").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(std::fs::read_to_string(&tmp).unwrap(), "7\n");
        assert!(!std::fs::symlink_metadata(&tmp).unwrap().is_symlink());
    }

    #[test]
    fn stage_install_switch_prune() {
        let dir = tempfile::tempdir().unwrap();
        let root = ServerRoot::open(dir.path()).unwrap();
        let host = root.host("web1");
        host.prepare(None).unwrap();
        assert_eq!(host.current().unwrap(), None);
        for g in 1..=5 {
            let mut staged = host
                .stage(g, &[("config/a.nix", b"a"), ("manifest.json", b"{}")])
                .unwrap();
            // Nothing visible before install and switch.
            assert!(!host.generation_dir(g).exists());
            root.sync().unwrap();
            staged.install().unwrap();
            staged.switch().unwrap();
            assert_eq!(host.current().unwrap(), Some(g));
            host.prune(3, g).unwrap();
        }
        assert_eq!(host.generations().unwrap(), [3, 4, 5]);
        assert_eq!(
            std::fs::read(host.generation_dir(5).join("config/a.nix")).unwrap(),
            b"a"
        );
        let names: Vec<_> = std::fs::read_dir(host.path().join(GENERATIONS_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }

    #[test]
    fn a_dropped_stage_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = ServerRoot::open(dir.path()).unwrap();
        let host = root.host("h");
        host.prepare(None).unwrap();
        drop(host.stage(1, &[("config/x", b"x")]).unwrap());
        assert!(host.generations().unwrap().is_empty());
        assert_eq!(
            std::fs::read_dir(host.path().join(GENERATIONS_DIR))
                .unwrap()
                .count(),
            0
        );
        assert!(!host.path().join(CURRENT_TEMP).exists());
    }

    #[test]
    fn a_second_deploy_is_refused_while_one_runs() {
        let dir = tempfile::tempdir().unwrap();
        let _first = ServerRoot::open(dir.path()).unwrap();
        let e = ServerRoot::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("another `bento deploy`"), "{e}");
    }
}
