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
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bento_secrets::accounts::Owner;

use crate::confined::Confined;
use crate::error::Error;
use crate::manifest::{MANIFEST_FILE, SIGNATURE_FILE};
use crate::server_dir::{Kind, ServerDir};
pub use crate::wire::host_dir::{
    parse_generation, CURRENT_FILE, CURRENT_LIMIT, CURRENT_LINK, GENERATIONS_DIR, LOGS_DIR, MANIFEST_LIMIT,
    SIGNATURE_LIMIT,
};

/// The lock that keeps two deploys from publishing into one root at once.
const LOCK_FILE: &str = ".bento-deploy.lock";
/// Prefix of generations being written.
pub(crate) const STAGING_PREFIX: &str = ".new-";
/// Prefix of the temp file that replaces `current` (locally).
const CURRENT_TEMP: &str = ".current.new";
/// Prefix of every temp file that replaces a pointer (`current`, `generations/current`),
/// locally or over sftp.
pub(crate) const POINTER_TEMP_PREFIX: &str = ".current";

/// Whether `name`, an entry of `generations/` or of the host's directory, is what an
/// interrupted deploy left (a staging dir, a pointer's temp file), local or remote alike.
pub(crate) fn is_leftover(name: &str) -> bool {
    name.starts_with(STAGING_PREFIX) || name.starts_with(POINTER_TEMP_PREFIX)
}

/// The generation an entry of `generations/` is: a directory named by its number. (A
/// file or a link with a number for a name is not one, wherever the layout is read.)
pub(crate) fn generation_of(name: &str, kind: Kind) -> Option<u64> {
    (kind == Kind::Dir).then(|| name.parse().ok()).flatten()
}

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
        let gens = self.dir.join(GENERATIONS_DIR);
        ensure_dir(&gens, 0o755, None)?;
        // Where a publishing account owns generations/ (`bento server setup`), logs/ is
        // readable by its group too, as the setup makes it: 2750, setgid.
        let publisher = std::fs::symlink_metadata(&gens)
            .ok()
            .filter(|m| root && m.uid() != 0)
            .map(|m| m.gid());
        let (mode, owner) = match (publisher, logs_owner) {
            (Some(gid), Some(host)) => (0o2750, Some(Owner { uid: host.uid, gid })),
            (_, host) => (0o700, host),
        };
        ensure_dir(&self.dir.join(LOGS_DIR), mode, owner.filter(|_| root))?;
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

    /// The exact bytes of generation `g`'s `manifest.json` and its `manifest.sig`, when
    /// both are there (regular files, read without following links, bounded).
    pub fn signed_manifest(&self, g: u64) -> Option<(Vec<u8>, String)> {
        let dir = format!("{GENERATIONS_DIR}/{g}");
        let confined = self.confined().ok()?;
        let bytes = confined
            .read(&format!("{dir}/{MANIFEST_FILE}"), MANIFEST_LIMIT)
            .ok()?;
        let sig = confined
            .read(&format!("{dir}/{SIGNATURE_FILE}"), SIGNATURE_LIMIT)
            .ok()?;
        Some((bytes, String::from_utf8(sig).ok()?))
    }

    /// The directory of generation `g`.
    pub fn generation_dir(&self, g: u64) -> PathBuf {
        self.dir.join(GENERATIONS_DIR).join(g.to_string())
    }

    /// The generations present, ascending.
    pub fn generations(&self) -> Result<Vec<u64>, Error> {
        let shown = self.shown(GENERATIONS_DIR);
        let listed = ServerDir::entries_at_most(&self.confined()?, GENERATIONS_DIR, MAX_ENTRIES);
        let entries = match listed {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(Error::input(
                    shown,
                    format!("holds more than {MAX_ENTRIES} entries; remove what bento did not write there"),
                ))
            }
            Err(e) => return Err(Error::io(shown, e)),
        };
        let mut out: Vec<u64> = entries
            .iter()
            .filter_map(|(name, kind)| generation_of(name, *kind))
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    /// Writes a generation and the new `current` into temp files, unsynced; nothing is
    /// visible until [`Staged::install`] and [`Staged::switch`].
    ///
    /// Where a publishing account owns `generations/` (`bento server setup`), it can rename,
    /// replace or plant anything there at any moment, so nothing is written by path: the
    /// staging dir is made 0700 and opened without following links, checked to be root's
    /// own (so the account can neither enter it nor swap another in), and everything below
    /// is created through directory descriptors, exclusively. Ownership (handed to the
    /// account, which must be able to prune it later) and modes are set on open
    /// descriptors; the staging dir itself is opened up (0755, handed over) last, when
    /// nothing more is written in it. Whatever the account swaps in, root writes only into
    /// what it made.
    pub fn stage(&self, generation: u64, files: &[(&str, &[u8])]) -> Result<Staged, Error> {
        let gens_shown = self.shown(GENERATIONS_DIR);
        let host = self.confined()?;
        let gens = host.dir(GENERATIONS_DIR).map_err(|e| Error::io(&gens_shown, e))?;
        let stat = gens.stat().map_err(|e| Error::io(&gens_shown, e))?;
        let hand_to = (is_root() && stat.st_uid != 0).then_some((stat.st_uid, stat.st_gid));
        let (tmp_name, tmp) = unique(
            |name| gens.create_own_dir(name, 0o700),
            &format!("{STAGING_PREFIX}{generation}"),
        )
        .map_err(|e| Error::io(&gens_shown, e))?;
        let mut staged = Staged {
            host: self.clone(),
            generation,
            gens,
            tmp: Some(tmp_name),
            pointer_dir: None,
            current_tmp: String::new(),
        };
        let shown = |rel: &str| self.shown(&format!("{GENERATIONS_DIR}/{generation}/{rel}"));
        let own = |fd: &dyn Fn(u32, u32) -> std::io::Result<()>| match hand_to {
            Some((uid, gid)) => fd(uid, gid),
            None => Ok(()),
        };
        for (rel, bytes) in files {
            let (parent, name) = match rel.rsplit_once('/') {
                Some((parent, name)) => (Some(parent), name),
                None => (None, *rel),
            };
            let written = (|| {
                let dir = match parent {
                    Some(parent) => Some(make_dirs(&tmp, parent, hand_to)?),
                    None => None,
                };
                let mut file = dir.as_ref().unwrap_or(&tmp).create_new_file(name, 0o644)?;
                own(&|uid, gid| crate::confined::set_owner(&file, uid, gid))?;
                file.write_all(bytes)
            })();
            written.map_err(|e| Error::io(shown(rel), e))?;
        }
        // The pointer's temp file, in the pointer's own directory.
        let pointer = self.pointer()?;
        let (pointer_dir, pointer_shown) = if pointer == CURRENT_LINK {
            (None, gens_shown.clone())
        } else {
            (Some(host), self.path().display().to_string())
        };
        let (current_tmp, mut file) = {
            let dir = pointer_dir.as_ref().unwrap_or(&staged.gens);
            unique(|name| dir.create_new_file(name, 0o644), CURRENT_TEMP)
                .map_err(|e| Error::io(&pointer_shown, e))?
        };
        // Known to the stage from now on: removed with it if anything fails.
        staged.pointer_dir = pointer_dir;
        staged.current_tmp = current_tmp;
        own(&|uid, gid| crate::confined::set_owner(&file, uid, gid))
            .and_then(|()| file.write_all(format!("{generation}\n").as_bytes()))
            .map_err(|e| Error::io(&pointer_shown, e))?;
        // Last: the staging dir opened up and handed over; root writes nothing more in it.
        own(&|uid, gid| tmp.set_owner(uid, gid))
            .and_then(|()| tmp.set_mode(0o755))
            .map_err(|e| Error::io(&gens_shown, e))?;
        Ok(staged)
    }

    /// Removes generations beyond the newest `keep` (never `current`), and temp dirs left
    /// by an interrupted deploy. Returns the generations removed. Removal goes through
    /// directory descriptors and follows no link (see [`Confined::remove_tree`]).
    pub fn prune(&self, keep: usize, current: u64) -> Result<Vec<u64>, Error> {
        let mut removed = Vec::new();
        let gens_shown = self.shown(GENERATIONS_DIR);
        let gens = self
            .confined()?
            .dir(GENERATIONS_DIR)
            .map_err(|e| Error::io(&gens_shown, e))?;
        for g in to_prune(&self.generations()?, keep, current) {
            gens.remove_tree(&g.to_string())
                .map_err(|e| Error::io(self.generation_dir(g).display().to_string(), e))?;
            removed.push(g);
        }
        self.remove_leftovers()?;
        Ok(removed)
    }

    /// Removes what an interrupted deploy left: staging dirs and a half-made `current`.
    /// Touches nothing when there is nothing to remove.
    pub fn remove_leftovers(&self) -> Result<(), Error> {
        let host = self.confined()?;
        let gens = match host.dir(GENERATIONS_DIR) {
            Ok(gens) => gens,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(self.shown(GENERATIONS_DIR), e)),
        };
        for (dir, rel) in [(&gens, GENERATIONS_DIR), (&host, "")] {
            let entries = ServerDir::entries_at_most(dir, "", MAX_ENTRIES)
                .map_err(|e| Error::io(self.shown(rel), e))?;
            for (name, _) in entries.iter().filter(|(name, _)| is_leftover(name)) {
                dir.remove_tree(name).map_err(|e| {
                    Error::io(self.shown(rel).trim_end_matches('/').to_owned() + "/" + name, e)
                })?;
            }
        }
        Ok(())
    }
}

/// The most entries bento reads of a host's `generations/` (a few generations and the
/// leftovers of interrupted deploys are expected; whoever writes it chooses).
pub const MAX_ENTRIES: usize = 10_000;

/// Calls `make` with fresh names `<prefix>-<pid>-<n>` until one is free; returns the name
/// and what `make` made.
fn unique<T>(make: impl Fn(&str) -> std::io::Result<T>, prefix: &str) -> std::io::Result<(String, T)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut last = None;
    for _ in 0..64 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{}-{n}", std::process::id());
        match make(&name) {
            Ok(made) => return Ok((name, made)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free temp name")))
}

/// The directory `rel` below `top` (made by this process, so no one else can enter it),
/// made component by component where missing (0755, handed to `hand_to`).
fn make_dirs(top: &Confined, rel: &str, hand_to: Option<(u32, u32)>) -> std::io::Result<Confined> {
    let mut dir: Option<Confined> = None;
    for component in rel.split('/') {
        let at = dir.as_ref().unwrap_or(top);
        let next = match at.create_own_dir(component, 0o755) {
            Ok(made) => {
                if let Some((uid, gid)) = hand_to {
                    made.set_owner(uid, gid)?;
                }
                made
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => at.dir(component)?,
            Err(e) => return Err(e),
        };
        dir = Some(next);
    }
    dir.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty directory path"))
}

/// A generation written to temp files, not yet visible.
#[derive(Debug)]
pub struct Staged {
    host: HostDir,
    generation: u64,
    /// The host's `generations/`, open.
    gens: Confined,
    /// The staging dir's name in `generations/`; removed on drop unless installed.
    tmp: Option<String>,
    /// The directory of the pointer the temp replaces: the host dir (`current`), or
    /// `None` for `generations/` (`generations/current`).
    pointer_dir: Option<Confined>,
    /// The temp file's name there.
    current_tmp: String,
}

impl Staged {
    /// The generation number.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Renames the (synced) temp dir to `generations/<g>`, never over an existing entry.
    pub fn install(&mut self) -> Result<(), Error> {
        let target = self.host.generation_dir(self.generation);
        let shown = target.display().to_string();
        let Some(tmp) = self.tmp.as_deref() else {
            return Ok(());
        };
        match self.gens.rename(tmp, &self.generation.to_string(), false) {
            Ok(()) => {
                self.tmp = None;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::input(
                shown,
                "already exists; was it written by hand? remove it",
            )),
            Err(e) => Err(Error::io(&shown, e)),
        }
    }

    /// Replaces `current` with the new generation's number, by rename.
    pub fn switch(&self) -> Result<(), Error> {
        let (dir, name, shown) = match &self.pointer_dir {
            Some(host) => (host, CURRENT_FILE, self.host.shown(CURRENT_FILE)),
            None => (&self.gens, CURRENT_FILE, self.host.shown(CURRENT_LINK)),
        };
        dir.rename(&self.current_tmp, name, true)
            .map_err(|e| Error::io(shown, e))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = self.gens.remove_tree(&tmp);
            if !self.current_tmp.is_empty() {
                let dir = self.pointer_dir.as_ref().unwrap_or(&self.gens);
                let _ = dir.remove_tree(&self.current_tmp);
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staging_dir_swapped_for_a_link_or_a_foreign_dir_gets_nothing_written() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = ServerRoot::open(dir.path()).unwrap();
        let host = root.host("h");
        host.prepare(None).unwrap();
        let gens = Confined::open(&host.path().join(GENERATIONS_DIR)).unwrap();
        // What the owner of generations/ could swap in after the mkdir: a link, a file.
        std::os::unix::fs::symlink(outside.path(), host.path().join("generations/link")).unwrap();
        let e = gens.create_own_dir("link", 0o700).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        // Staging leaves nothing but its own files, and nothing outside.
        let mut staged = host
            .stage(1, &[("secrets/a.age", b"a"), ("manifest.json", b"{}")])
            .unwrap();
        staged.install().unwrap();
        staged.switch().unwrap();
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        let mode = std::fs::metadata(host.generation_dir(1)).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o755);
        let mode = std::fs::metadata(host.generation_dir(1).join("secrets/a.age"))
            .unwrap()
            .mode()
            & 0o7777;
        assert_eq!(mode, 0o644);
        // A second install of the same number is refused, not merged.
        std::fs::create_dir(host.path().join("generations/2")).unwrap();
        let mut again = host.stage(2, &[("manifest.json", b"{}")]).unwrap();
        let e = again.install().unwrap_err().to_string();
        assert!(e.contains("already exists"), "{e}");
        drop(again);
        let left: Vec<_> = std::fs::read_dir(host.path().join(GENERATIONS_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(left.is_empty(), "{left:?}");
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
        let left = std::fs::read_dir(host.path()).unwrap().filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(CURRENT_TEMP)
        });
        assert_eq!(left.count(), 0);
    }

    #[test]
    fn generations_and_leftovers_are_read_as_over_sftp() {
        let dir = tempfile::tempdir().unwrap();
        let root = ServerRoot::open(dir.path()).unwrap();
        let host = root.host("h");
        host.prepare(None).unwrap();
        let gens = host.path().join(GENERATIONS_DIR);
        std::fs::create_dir(gens.join("3")).unwrap();
        // Not generations: a file, a link with a number for a name.
        std::fs::write(gens.join("4"), "").unwrap();
        std::os::unix::fs::symlink("3", gens.join("5")).unwrap();
        assert_eq!(host.generations().unwrap(), [3]);
        // What an interrupted remote deploy leaves goes as a local one's does.
        std::fs::create_dir(gens.join(".new-6-77-abc")).unwrap();
        std::fs::write(gens.join(".current.6.77.tmp"), "6\n").unwrap();
        host.remove_leftovers().unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&gens)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["3", "4", "5"]);
    }

    #[test]
    fn a_local_deploy_keeps_logs_readable_by_the_publishing_account() {
        if !is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = ServerRoot::open(dir.path()).unwrap();
        let host = root.host("h");
        let gens = host.path().join(GENERATIONS_DIR);
        std::fs::create_dir_all(&gens).unwrap();
        std::os::unix::fs::chown(&gens, Some(64980), Some(64980)).unwrap();
        host.prepare(Some(Owner {
            uid: 64991,
            gid: 64990,
        }))
        .unwrap();
        let logs = std::fs::metadata(host.path().join(LOGS_DIR)).unwrap();
        assert_eq!(
            (logs.uid(), logs.gid(), logs.mode() & 0o7777),
            (64991, 64980, 0o2750)
        );
        // Without the account, the host's alone.
        let other = root.host("o");
        other
            .prepare(Some(Owner {
                uid: 64991,
                gid: 64990,
            }))
            .unwrap();
        let logs = std::fs::metadata(other.path().join(LOGS_DIR)).unwrap();
        assert_eq!(
            (logs.uid(), logs.gid(), logs.mode() & 0o7777),
            (64991, 64990, 0o700)
        );
    }

    #[test]
    fn a_second_deploy_is_refused_while_one_runs() {
        let dir = tempfile::tempdir().unwrap();
        let _first = ServerRoot::open(dir.path()).unwrap();
        let e = ServerRoot::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("another `bento deploy`"), "{e}");
    }
}
