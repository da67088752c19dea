//! The server layout that `bento deploy` publishes into:
//!
//! ```text
//! <root>/<host>/                  root-owned 0755 (an OpenSSH chroot)
//! <root>/<host>/current           the generation the host should run, as decimal text;
//!                                 or a root-made link `current -> generations/current`
//! <root>/<host>/generations/<g>/  config/, secrets/*.age, manifest.json, manifest.sig
//! <root>/<host>/generations/history/<sha256>.json, .sig
//!                                 every manifest that was current (never pruned)
//! <root>/<host>/logs/             0700, owned by the host's sftp user when it exists
//! ```
//!
//! A generation is written into a hidden temp dir next to the others, synced, then
//! renamed into place; only then is `current` replaced (by rename), so `current` always
//! names a complete generation. The policy is written once, over a [`ServerDir`]: a local
//! root and a remote one follow it alike.
//!
//! Where admins publish over sftp (`[deploy] target`), a publishing account that is not
//! root owns each host's `generations/`, but cannot write the host directory itself (an
//! OpenSSH chroot must be root's). There `current` is a link made by root,
//! `current -> generations/current`, and the pointer that publishing replaces is
//! `generations/current`. That link is the only one readers accept (never following it:
//! they recognise its text and read `generations/current`); a local deploy into such a
//! root replaces `generations/current` too, so both ways of publishing agree.

use std::collections::BTreeMap;
use std::fs::{DirBuilder, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bento_secrets::accounts::Owner;

use crate::error::Error;
use crate::manifest::{MANIFEST_FILE, SIGNATURE_FILE};
use crate::server_dir::{Kind, LocalDir, ServerDir};
use crate::wire::digest::Sha256;
use crate::wire::history::{HISTORY_DIR, HISTORY_NAME, MAX_HISTORY_FILES};
pub use crate::wire::host_dir::{
    parse_generation, CURRENT_FILE, CURRENT_LIMIT, CURRENT_LINK, GENERATIONS_DIR, LOGS_DIR, MANIFEST_LIMIT,
    SIGNATURE_LIMIT,
};
use crate::wire::mode::DeployMode;

/// A closure host's own binary cache, in its directory.
pub const HOST_CACHE_DIR: &str = "cache";
/// The lock that keeps two deploys from publishing into one root at once.
const LOCK_FILE: &str = ".bento-deploy.lock";
/// Prefix of generations being written.
pub(crate) const STAGING_PREFIX: &str = ".new-";
/// Prefix of the temp file that replaces a pointer.
const CURRENT_TEMP: &str = ".current.new";
/// Prefix of every temp file that replaces a pointer (`current`, `generations/current`),
/// this version's and older ones'.
pub(crate) const POINTER_TEMP_PREFIX: &str = ".current";
/// What to do after a failed operation on a host directory.
const RETRY: &str = "run `bento deploy` again (the host keeps its current generation)";
/// How a root that lacks the layout for publishing over sftp gets it.
const SETUP: &str = "apply `bento server setup` on the server (the publishing account owns each \
                     host's generations/, and current links to generations/current)";

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

/// A server root on this machine, locked for this process.
#[derive(Debug)]
pub struct ServerRoot {
    root: PathBuf,
    dir: LocalDir,
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
                &shown,
                "another `bento deploy` is publishing here; wait for it to finish",
            )
        })?;
        let dir = LocalDir::open(root).map_err(|e| Error::io(&shown, e))?;
        Ok(ServerRoot {
            root: root.to_path_buf(),
            dir,
            _lock: lock,
        })
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The root, open.
    pub fn dir(&self) -> &LocalDir {
        &self.dir
    }

    /// Creates what is missing of `host`'s directories and fixes their ownership: the host
    /// dir root-owned 0755 (when running as root), `logs/` 0700 and owned by `logs_owner`,
    /// and for a `closure` host its `cache/` and `cache/nar/`. Changes nothing that is
    /// already right.
    pub fn prepare(&self, host: &str, logs_owner: Option<Owner>, closure: DeployMode) -> Result<(), Error> {
        let dir = self.root.join(host);
        let root = is_root();
        ensure_dir(&dir, 0o755, root.then_some(Owner { uid: 0, gid: 0 }))?;
        let gens = dir.join(GENERATIONS_DIR);
        ensure_dir(&gens, 0o755, None)?;
        // Where a publishing account owns generations/ (`bento server setup`), logs/ is
        // readable by its group too, as the setup makes it: 2750, setgid.
        let publisher = std::fs::symlink_metadata(&gens)
            .ok()
            .filter(|m| root && m.uid() != 0)
            .map(|m| Owner {
                uid: m.uid(),
                gid: m.gid(),
            });
        let (mode, owner) = match (publisher, logs_owner) {
            (Some(publisher), Some(host)) => (
                0o2750,
                Some(Owner {
                    gid: publisher.gid,
                    ..host
                }),
            ),
            (_, host) => (0o700, host),
        };
        ensure_dir(&dir.join(LOGS_DIR), mode, owner.filter(|_| root))?;
        if closure == DeployMode::Closure {
            // Where a publishing account owns generations/, it owns the host's cache too
            // (it links the closure into it when it publishes).
            // That account may plant anything in cache/: nar/ is made and fixed through
            // directory descriptors, never by path.
            let shown = dir.join(HOST_CACHE_DIR).display().to_string();
            let made = self
                .dir
                .confined()
                .dir(host)
                .and_then(|host| own_dir(&host, HOST_CACHE_DIR, publisher))
                .and_then(|cache| own_dir(&cache, crate::wire::narinfo::NAR_DIR, publisher));
            made.map_err(|e| Error::io(&shown, e))?;
        }
        Ok(())
    }
}

/// `rel` below `dir`, as a path or as shown in messages; either may be empty.
pub(crate) fn join(dir: &str, rel: &str) -> String {
    match (dir, rel) {
        ("", rel) => rel.to_owned(),
        (dir, "") => dir.to_owned(),
        (dir, rel) => format!("{dir}/{rel}"),
    }
}

/// Whether this process runs as root (and so can and must set ownership).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// One host's directory on the server, wherever the server is.
#[derive(Clone)]
pub struct HostDir {
    dir: Arc<dyn ServerDir>,
    /// The directory as shown in messages.
    shown: String,
}

impl HostDir {
    /// The directory of host `name` in the server root `root`, shown as `root_shown`.
    pub fn open(root: &dyn ServerDir, root_shown: &str, name: &str) -> Result<HostDir, Error> {
        let shown = format!("{}/{name}", root_shown.trim_end_matches('/'));
        match root.dir(name) {
            Ok(dir) => Ok(HostDir {
                dir: Arc::from(dir),
                shown,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(Error::input(shown, format!("no such directory; {SETUP}")))
            }
            // Shown as a directory: `…/web1/`.
            Err(e) => Err(Error::input(format!("{shown}/"), format!("{e}; {RETRY}"))),
        }
    }

    fn shown(&self, rel: &str) -> String {
        join(&self.shown, rel)
    }

    /// One error line about `rel`: what failed and what to do.
    fn failed(&self, rel: &str, e: io::Error) -> Error {
        failed(self.shown(rel), e)
    }

    /// Checks the layout that `bento server setup` makes for publishing as an account that
    /// is not root: `generations/` a directory, `current` the link to
    /// `generations/current`. Writes nothing.
    pub fn check_publishable(&self) -> Result<(), Error> {
        let kind = |rel| self.dir.kind(rel).map_err(|e| self.failed(rel, e));
        if kind(GENERATIONS_DIR)? != Some(Kind::Dir) {
            return Err(Error::input(
                self.shown(GENERATIONS_DIR),
                format!("not a directory there; {SETUP}"),
            ));
        }
        let link = match kind(CURRENT_FILE)? {
            Some(Kind::Link) => self
                .dir
                .read_link(CURRENT_FILE)
                .map_err(|e| self.failed(CURRENT_FILE, e))?,
            _ => PathBuf::new(),
        };
        if link != Path::new(CURRENT_LINK) {
            return Err(Error::input(
                self.shown(CURRENT_FILE),
                format!("is not the link `current -> {CURRENT_LINK}`; {SETUP}"),
            ));
        }
        Ok(())
    }

    /// Where the pointer to the current generation lives: `current`, or
    /// [`CURRENT_LINK`] when `current` is that link. Any other link is refused.
    fn pointer(&self) -> Result<&'static str, Error> {
        match self.dir.read_link(CURRENT_FILE) {
            Ok(target) if target == Path::new(CURRENT_LINK) => Ok(CURRENT_LINK),
            Ok(target) => Err(Error::input(
                self.shown(CURRENT_FILE),
                format!(
                    "is a link to `{}`; the only link bento accepts here is `current -> {CURRENT_LINK}`: remove it",
                    target.display().to_string().escape_default()
                ),
            )),
            // Not there, or not a link: the pointer is `current` itself.
            Err(_) => Ok(CURRENT_FILE),
        }
    }

    /// The generation `current` names, if any (read without following links, bounded).
    pub fn current(&self) -> Result<Option<u64>, Error> {
        let rel = self.pointer()?;
        match self.dir.read(rel, CURRENT_LIMIT) {
            Ok(bytes) => parse_generation(&bytes).map(Some).ok_or_else(|| {
                Error::input(
                    self.shown(rel),
                    "does not hold a generation number; fix it by hand (it names a dir of generations/)",
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.failed(rel, e)),
        }
    }

    /// The exact bytes of generation `g`'s `manifest.json` and its `manifest.sig`, when
    /// both are there in a real directory (regular files, no link followed, bounded).
    pub fn signed_manifest(&self, g: u64) -> Option<(Vec<u8>, String)> {
        let dir = self.dir.dir(&format!("{GENERATIONS_DIR}/{g}")).ok()?;
        let bytes = dir.read(MANIFEST_FILE, MANIFEST_LIMIT).ok()?;
        let sig = dir.read(SIGNATURE_FILE, SIGNATURE_LIMIT).ok()?;
        Some((bytes, String::from_utf8(sig).ok()?))
    }

    /// The entries of `generations/` (`None`: it is missing), at most [`MAX_ENTRIES`];
    /// past that, one line saying what to remove.
    fn generation_entries(&self) -> Result<Option<Vec<(String, Kind)>>, Error> {
        match self.dir.entries_at_most(GENERATIONS_DIR, MAX_ENTRIES) {
            Ok(entries) => Ok(Some(entries)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Err(Error::input(
                self.shown(GENERATIONS_DIR),
                format!("{e}: refused; remove what bento did not write there"),
            )),
            Err(e) => Err(self.failed(GENERATIONS_DIR, e)),
        }
    }

    /// Makes `current` name generation `g` (which must be installed): a temp file beside
    /// the pointer, renamed over it.
    pub fn point_at(&self, g: u64) -> Result<(), Error> {
        let pointer = self.pointer()?;
        let dir: Arc<dyn ServerDir> = match pointer {
            CURRENT_LINK => self.gens()?,
            _ => self.dir.clone(),
        };
        let text = format!("{g}\n");
        if dir.renames_copy() {
            return dir
                .replace_from(CURRENT_FILE, &mut text.as_bytes(), 0o644)
                .map_err(|e| self.failed(pointer, e));
        }
        let (tmp, ()) = unique(|name| dir.create_new(name, text.as_bytes(), 0o644), CURRENT_TEMP)
            .map_err(|e| self.failed(pointer, e))?;
        dir.sync().map_err(|e| self.failed(pointer, e))?;
        dir.rename(&tmp, CURRENT_FILE, true).map_err(|e| {
            let _ = dir.remove_tree(&tmp);
            self.failed(pointer, e)
        })
    }

    /// Keeps `manifest` and its `signatures` in the host's history
    /// (`generations/history/<sha256>.json` and `.sig`; see [`crate::wire::history`]),
    /// before a generation that names it as `previous` becomes current. Rewrites only what
    /// differs.
    pub fn record_history(&self, manifest: &[u8], signatures: &str) -> Result<(), Error> {
        let hash = Sha256::of(manifest);
        let gens = self.gens()?;
        let history = match gens.dir(HISTORY_NAME) {
            Ok(dir) => dir,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let made = gens.create_dir(HISTORY_NAME).or_else(|e| match e.kind() {
                    // Another deploy made it meanwhile.
                    io::ErrorKind::AlreadyExists => gens.dir(HISTORY_NAME),
                    _ => Err(e),
                });
                let made = made.map_err(|e| self.failed(HISTORY_DIR, e))?;
                made.seal(0o755).map_err(|e| self.failed(HISTORY_DIR, e))?;
                made
            }
            Err(e) => return Err(self.failed(HISTORY_DIR, e)),
        };
        for (name, bytes, limit) in [
            (format!("{hash}.json"), manifest, MANIFEST_LIMIT),
            (format!("{hash}.sig"), signatures.as_bytes(), SIGNATURE_LIMIT),
        ] {
            if history.read(&name, limit).ok().as_deref() == Some(bytes) {
                continue;
            }
            history
                .replace_from(&name, &mut &bytes[..], 0o644)
                .map_err(|e| self.failed(&format!("{HISTORY_DIR}/{name}"), e))?;
        }
        history.sync().map_err(|e| self.failed(HISTORY_DIR, e))
    }

    /// A bounded read of `rel` in the host's directory, no link followed.
    pub fn read(&self, rel: &str, limit: u64) -> io::Result<Vec<u8>> {
        self.dir.read(rel, limit)
    }

    /// The hashes the host's history holds manifests of (their `<sha256>.json` names),
    /// at most [`MAX_HISTORY_FILES`] files.
    pub fn history(&self) -> Result<Vec<Sha256>, Error> {
        match self.dir.entries_at_most(HISTORY_DIR, MAX_HISTORY_FILES) {
            Ok(entries) => Ok(entries
                .into_iter()
                .filter_map(|(name, _)| name.strip_suffix(".json").and_then(|h| h.parse().ok()))
                .collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(self.failed(HISTORY_DIR, e)),
        }
    }

    /// Replaces generation `g`'s `manifest.sig` with `signatures`, atomically.
    pub fn replace_signatures(&self, g: u64, signatures: &str) -> Result<(), Error> {
        let rel = format!("{GENERATIONS_DIR}/{g}/{SIGNATURE_FILE}");
        self.dir
            .replace_from(&rel, &mut signatures.as_bytes(), 0o644)
            .map_err(|e| self.failed(&rel, e))
    }

    /// The generations present, ascending.
    pub fn generations(&self) -> Result<Vec<u64>, Error> {
        let mut out: Vec<u64> = self
            .generation_entries()?
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(name, kind)| generation_of(&name, kind))
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    /// `generations/`, open.
    fn gens(&self) -> Result<Arc<dyn ServerDir>, Error> {
        self.dir
            .dir(GENERATIONS_DIR)
            .map(Arc::from)
            .map_err(|e| self.failed(GENERATIONS_DIR, e))
    }

    /// Writes a generation and the new `current` into temp files, unsynced; nothing is
    /// visible until [`Staged::install`] and [`Staged::switch`].
    ///
    /// Whoever owns `generations/` (a publishing account, when root publishes locally into
    /// a root laid out by `bento server setup`) can rename, replace or plant anything there
    /// at any moment, so nothing is written by path: the staging dir is made exclusively,
    /// private until sealed, and everything below it is created through it, exclusively
    /// (see [`ServerDir::create_dir`]). It is sealed (0755) last, when nothing more is
    /// written in it.
    pub fn stage(&self, generation: u64, files: &[(&str, &[u8])]) -> Result<Staged, Error> {
        let gens = self.gens()?;
        if gens.renames_copy() {
            return self.stage_in_place(gens, generation, files);
        }
        let (tmp_name, tmp) = unique(
            |name| gens.create_dir(name),
            &format!("{STAGING_PREFIX}{generation}"),
        )
        .map_err(|e| self.failed(GENERATIONS_DIR, e))?;
        let mut staged = Staged {
            shown: self.shown.clone(),
            generation,
            gens: gens.clone(),
            tmp: Some(tmp_name),
            pointer_dir: gens,
            pointer: CURRENT_LINK,
            current_tmp: None,
            written: Vec::new(),
        };
        let dirs = self.write_files(tmp.as_ref(), generation, files)?;
        // The pointer's temp file, in the pointer's own directory.
        staged.pointer = self.pointer()?;
        if staged.pointer == CURRENT_FILE {
            staged.pointer_dir = self.dir.clone();
        }
        let text = format!("{generation}\n");
        let (current_tmp, ()) = unique(
            |name| staged.pointer_dir.create_new(name, text.as_bytes(), 0o644),
            CURRENT_TEMP,
        )
        .map_err(|e| self.failed(staged.pointer, e))?;
        staged.current_tmp = Some(current_tmp);
        for dir in dirs.values() {
            dir.seal(0o755).map_err(|e| self.failed(GENERATIONS_DIR, e))?;
        }
        // Last: the staging dir opened up; nothing more is written in it.
        tmp.seal(0o755).map_err(|e| self.failed(GENERATIONS_DIR, e))?;
        Ok(staged)
    }

    /// Claims generation `g`, or the first free one above it, for this deploy, where the
    /// server does not refuse a second writer of the same name (object storage without
    /// conditional writes; elsewhere `g` as it is): a claim object of its own in
    /// `generations/<g>/`, then a listing. Of two deploys claiming at once, at least one
    /// sees the other's claim (a store reads its own writes), and whoever sees another
    /// claim withdraws and tries the next number, after a random pause.
    pub fn claim(&self, g: u64) -> Result<u64, Error> {
        use ssh_key::rand_core::RngCore;
        let gens = self.gens()?;
        if !gens.renames_copy() {
            return Ok(g);
        }
        let me = format!(
            ".claim-{}-{:016x}",
            std::process::id(),
            ssh_key::rand_core::OsRng.next_u64()
        );
        let mut g = g;
        for attempt in 0..64u64 {
            let name = g.to_string();
            let rel = format!("{GENERATIONS_DIR}/{name}");
            let taken = |dir: &dyn ServerDir| -> Result<bool, Error> {
                let entries = dir
                    .entries_at_most("", MAX_ENTRIES)
                    .map_err(|e| self.failed(&rel, e))?;
                Ok(entries.iter().any(|(n, _)| *n != me))
            };
            let dir = gens.dir(&name).map_err(|e| self.failed(&rel, e))?;
            if taken(dir.as_ref())? {
                g += 1;
                continue;
            }
            dir.create_new(&me, b"", 0o644)
                .map_err(|e| self.failed(&rel, e))?;
            if !taken(dir.as_ref())? {
                return Ok(g);
            }
            let _ = dir.remove_tree(&me);
            g += 1;
            let pause = 10 + ssh_key::rand_core::OsRng.next_u64() % (20 * (attempt + 1));
            std::thread::sleep(std::time::Duration::from_millis(pause));
        }
        Err(Error::input(
            self.shown(GENERATIONS_DIR),
            "no generation number could be claimed: are other deploys running? run `bento deploy` again",
        ))
    }

    /// [`HostDir::stage`] where a rename would be a copy (object storage): the generation
    /// is written straight into `generations/<g>/`, each object created only where none is
    /// (so two deploys cannot mix their files), and [`Staged::switch`] replaces `current`
    /// by one write. A deploy cut short leaves a generation that `current` never named;
    /// the next deploy takes the number after it, and pruning removes it in time.
    fn stage_in_place(
        &self,
        gens: Arc<dyn ServerDir>,
        generation: u64,
        files: &[(&str, &[u8])],
    ) -> Result<Staged, Error> {
        use md5::Digest;
        // Claimed by [`HostDir::claim`]: its claim object is there, nothing else.
        let top = gens
            .dir(&generation.to_string())
            .map_err(|e| self.failed(GENERATIONS_DIR, e))?;
        self.write_files(top.as_ref(), generation, files)?;
        let written = files
            .iter()
            .map(|(rel, bytes)| {
                let md5 = crate::wire::digest::hex(md5::Md5::digest(bytes).as_slice());
                (rel.to_string(), md5)
            })
            .collect();
        Ok(Staged {
            shown: self.shown.clone(),
            generation,
            gens: gens.clone(),
            tmp: None,
            pointer_dir: self.dir.clone(),
            pointer: CURRENT_FILE,
            current_tmp: None,
            written,
        })
    }

    /// Writes `files` (paths below `top`, generation `generation`'s directory) as new
    /// files, making their directories; returns those directories, still to be sealed.
    fn write_files<'f>(
        &self,
        top: &dyn ServerDir,
        generation: u64,
        files: &[(&'f str, &[u8])],
    ) -> Result<BTreeMap<&'f str, Box<dyn ServerDir>>, Error> {
        let mut dirs = BTreeMap::new();
        for (rel, bytes) in files {
            let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
            let written = make_dirs(top, &mut dirs, parent).and_then(|()| {
                let dir = dirs.get(parent).map_or(top, |d| d.as_ref());
                dir.create_new(name, bytes, 0o644)
            });
            written.map_err(|e| self.failed(&format!("{GENERATIONS_DIR}/{generation}/{rel}"), e))?;
        }
        Ok(dirs)
    }

    /// Removes generations beyond the newest `keep` (never one of `current`: the one
    /// `current` names, and one pending approval), and what an interrupted deploy left. Returns the generations removed. No link is followed.
    pub fn prune(&self, keep: usize, current: &[u64]) -> Result<Vec<u64>, Error> {
        let removed = to_prune(&self.generations()?, keep, current);
        if !removed.is_empty() {
            let gens = self.gens()?;
            for g in &removed {
                gens.remove_tree(&g.to_string())
                    .map_err(|e| self.failed(&format!("{GENERATIONS_DIR}/{g}"), e))?;
            }
        }
        self.remove_leftovers()?;
        Ok(removed)
    }

    /// Removes what an interrupted deploy left: staging dirs and half-made pointers, in
    /// `generations/` and (from older versions) the host directory. Touches nothing when
    /// there is nothing to remove.
    pub fn remove_leftovers(&self) -> Result<(), Error> {
        // Object storage: nothing is written under a temp name (see `stage_in_place`).
        if self.dir.renames_copy() {
            return Ok(());
        }
        let Some(entries) = self.generation_entries()? else {
            return Ok(());
        };
        let gens = self.gens()?;
        for (name, _) in entries.iter().filter(|(name, _)| is_leftover(name)) {
            gens.remove_tree(name)
                .map_err(|e| self.failed(&format!("{GENERATIONS_DIR}/{name}"), e))?;
        }
        let top = self
            .dir
            .entries_at_most("", MAX_ENTRIES)
            .map_err(|e| self.failed("", e))?;
        for (name, _) in top.iter().filter(|(name, _)| is_leftover(name)) {
            self.dir.remove_tree(name).map_err(|e| self.failed(name, e))?;
        }
        Ok(())
    }
}

/// A write or read of `shown` that failed: run the deploy again.
fn failed(shown: String, e: io::Error) -> Error {
    let why = e.to_string();
    Error::input(shown, format!("{}; {RETRY}", why.trim_end_matches('.')))
}

/// The most entries bento reads of a host's `generations/` (a few generations and the
/// leftovers of interrupted deploys are expected; whoever writes it chooses).
pub const MAX_ENTRIES: usize = 10_000;

/// Calls `make` with fresh names `<prefix>-<pid>-<n>` until one is free; returns the name
/// and what `make` made.
fn unique<T>(make: impl Fn(&str) -> io::Result<T>, prefix: &str) -> io::Result<(String, T)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut last = None;
    for _ in 0..64 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{}-{n}", std::process::id());
        match make(&name) {
            Ok(made) => return Ok((name, made)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free temp name")))
}

/// Makes the directory `rel` (and those above it) below `top` where `dirs` does not have
/// it yet, each through its parent, exclusively; `""` is `top` itself.
fn make_dirs<'r>(
    top: &dyn ServerDir,
    dirs: &mut BTreeMap<&'r str, Box<dyn ServerDir>>,
    rel: &'r str,
) -> io::Result<()> {
    if rel.is_empty() || dirs.contains_key(rel) {
        return Ok(());
    }
    let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
    make_dirs(top, dirs, parent)?;
    let made = dirs.get(parent).map_or(top, |d| d.as_ref()).create_dir(name)?;
    dirs.insert(rel, made);
    Ok(())
}

/// A generation written to temp names, not yet visible; removed when dropped uninstalled.
pub struct Staged {
    /// The host directory as shown in messages.
    shown: String,
    generation: u64,
    /// The host's `generations/`.
    gens: Arc<dyn ServerDir>,
    /// The staging dir's name in `generations/`; `None` once installed.
    tmp: Option<String>,
    /// The directory of the pointer the temp file replaces, and its name there.
    pointer_dir: Arc<dyn ServerDir>,
    pointer: &'static str,
    /// The temp file's name there.
    current_tmp: Option<String>,
    /// Written in place: each file and the MD5 of what was written, checked against the
    /// store before `current` names the generation.
    written: Vec<(String, String)>,
}

impl Staged {
    /// The generation number.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn failed(&self, rel: &str, e: io::Error) -> Error {
        failed(format!("{}/{rel}", self.shown), e)
    }

    /// Renames the (synced) temp dir to `generations/<g>`, never over an existing entry.
    pub fn install(&mut self) -> Result<(), Error> {
        let Some(tmp) = self.tmp.as_deref() else {
            return Ok(());
        };
        let target = self.generation.to_string();
        match self.gens.rename(tmp, &target, false) {
            Ok(()) => {
                self.tmp = None;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(Error::input(
                format!("{}/{GENERATIONS_DIR}/{target}", self.shown),
                "already exists; was it written by hand, or is another deploy running? remove it",
            )),
            Err(e) => Err(self.failed(&format!("{GENERATIONS_DIR}/{target}"), e)),
        }
    }

    /// Replaces the pointer with the new generation's number, by rename.
    pub fn switch(&self) -> Result<(), Error> {
        // Written in place (object storage): the pointer is replaced by one write.
        if self.gens.renames_copy() {
            // A store that does not refuse a second writer (conditional writes unhonoured)
            // could hold another deploy's files here: only what this deploy wrote, whole,
            // gets `current`.
            let g = self.generation.to_string();
            let rel = format!("{GENERATIONS_DIR}/{g}");
            if let Some(held) = self.gens.md5s(&g).map_err(|e| self.failed(&rel, e))? {
                let changed = self
                    .written
                    .iter()
                    .find(|(file, md5)| held.get(file) != Some(md5));
                if let Some((file, _)) = changed {
                    return Err(Error::input(
                        format!("{}/{rel}/{file}", self.shown),
                        "changed while this deploy wrote it (another deploy at the same time?): \
                         current is left as it was; run `bento deploy` again",
                    ));
                }
            }
            let text = format!("{}\n", self.generation);
            return self
                .pointer_dir
                .replace_from(CURRENT_FILE, &mut text.as_bytes(), 0o644)
                .map_err(|e| self.failed(self.pointer, e));
        }
        let Some(tmp) = &self.current_tmp else {
            return Ok(());
        };
        self.pointer_dir
            .rename(tmp, CURRENT_FILE, true)
            .map_err(|e| self.failed(self.pointer, e))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = self.gens.remove_tree(&tmp);
            if let Some(current_tmp) = &self.current_tmp {
                let _ = self.pointer_dir.remove_tree(current_tmp);
            }
        }
    }
}

/// The directory `name` of `parent`, made 0755 where missing (a link there is refused),
/// given to `owner` and 0755 when it is not already: all through its descriptor.
fn own_dir(
    parent: &crate::confined::Confined,
    name: &str,
    owner: Option<Owner>,
) -> io::Result<crate::confined::Confined> {
    let dir = parent.create_dir(name, 0o755)?;
    let stat = dir.stat()?;
    if let Some(o) = owner.filter(|o| (stat.st_uid, stat.st_gid) != (o.uid, o.gid)) {
        dir.set_owner(o.uid, o.gid)?;
    }
    if stat.st_mode & 0o7777 != 0o755 {
        dir.set_mode(0o755)?;
    }
    Ok(dir)
}

/// Creates `path` with `mode` if missing; sets `owner` (and `mode`) when they differ.
fn ensure_dir(path: &Path, mode: u32, owner: Option<Owner>) -> Result<(), Error> {
    let shown = path.display().to_string();
    let io_err = |e: io::Error| Error::io(&shown, e);
    let set_mode = || std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => DirBuilder::new()
            .mode(mode)
            .create(path)
            // The umask may have cleared bits of `mode`.
            .and_then(|()| set_mode())
            .and_then(|()| std::fs::symlink_metadata(path)),
        meta => meta,
    }
    .map_err(io_err)?;
    if !meta.is_dir() {
        return Err(Error::input(shown, "is not a directory; move it away"));
    }
    let Some(owner) = owner else {
        return Ok(());
    };
    if (meta.uid(), meta.gid()) != (owner.uid, owner.gid) {
        std::os::unix::fs::lchown(path, Some(owner.uid), Some(owner.gid)).map_err(io_err)?;
    }
    if meta.mode() & 0o7777 != mode {
        set_mode().map_err(io_err)?;
    }
    Ok(())
}

/// Of `generations` (ascending), those beyond the newest `keep`, never `current`.
pub(crate) fn to_prune(generations: &[u64], keep: usize, current: &[u64]) -> Vec<u64> {
    let cut = generations.len().saturating_sub(keep);
    generations[..cut]
        .iter()
        .copied()
        .filter(|g| !current.contains(g))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::confined::Confined;

    /// `name`'s directory of `root`, made ready as a deploy does.
    fn host(root: &ServerRoot, name: &str) -> HostDir {
        root.prepare(name, None, DeployMode::Source).unwrap();
        HostDir::open(root.dir(), &root.path().display().to_string(), name).unwrap()
    }

    #[test]
    fn a_staging_dir_swapped_for_a_link_or_a_foreign_dir_gets_nothing_written() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = ServerRoot::open(dir.path()).unwrap();
        let host = host(&root, "h");
        let path = root.path().join("h");
        let gens = Confined::open(&path.join(GENERATIONS_DIR)).unwrap();
        // What the owner of generations/ could swap in after the mkdir: a link, a file.
        std::os::unix::fs::symlink(outside.path(), path.join("generations/link")).unwrap();
        let e = gens.create_own_dir("link", 0o700).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        // Staging leaves nothing but its own files, and nothing outside.
        let mut staged = host
            .stage(1, &[("secrets/a.age", b"a"), ("manifest.json", b"{}")])
            .unwrap();
        staged.install().unwrap();
        staged.switch().unwrap();
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        let mode = std::fs::metadata(path.join("generations/1")).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o755);
        let mode = std::fs::metadata(path.join("generations/1/secrets/a.age"))
            .unwrap()
            .mode()
            & 0o7777;
        assert_eq!(mode, 0o644);
        // A second install of the same number is refused, not merged.
        std::fs::create_dir(path.join("generations/2")).unwrap();
        let mut again = host.stage(2, &[("manifest.json", b"{}")]).unwrap();
        let e = again.install().unwrap_err().to_string();
        assert!(e.contains("already exists"), "{e}");
        drop(again);
        let left: Vec<_> = std::fs::read_dir(path.join(GENERATIONS_DIR))
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
        let host = host(&root, "web1");
        let path = root.path().join("web1");
        assert_eq!(host.current().unwrap(), None);
        for g in 1..=5 {
            let mut staged = host
                .stage(g, &[("config/a.nix", b"a"), ("manifest.json", b"{}")])
                .unwrap();
            // Nothing visible before install and switch.
            assert!(!path.join(format!("generations/{g}")).exists());
            root.dir().sync().unwrap();
            staged.install().unwrap();
            staged.switch().unwrap();
            assert_eq!(host.current().unwrap(), Some(g));
            host.prune(3, &[g]).unwrap();
        }
        assert_eq!(host.generations().unwrap(), [3, 4, 5]);
        assert_eq!(
            std::fs::read(path.join("generations/5/config/a.nix")).unwrap(),
            b"a"
        );
        let names: Vec<_> = std::fs::read_dir(path.join(GENERATIONS_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }

    #[test]
    fn a_dropped_stage_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = ServerRoot::open(dir.path()).unwrap();
        let host = host(&root, "h");
        let path = root.path().join("h");
        drop(host.stage(1, &[("config/x", b"x")]).unwrap());
        assert!(host.generations().unwrap().is_empty());
        assert_eq!(std::fs::read_dir(path.join(GENERATIONS_DIR)).unwrap().count(), 0);
        let left = std::fs::read_dir(&path).unwrap().filter(|e| {
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
        let host = host(&root, "h");
        let gens = root.path().join("h").join(GENERATIONS_DIR);
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
        let gens = root.path().join("h").join(GENERATIONS_DIR);
        std::fs::create_dir_all(&gens).unwrap();
        std::os::unix::fs::chown(&gens, Some(64980), Some(64980)).unwrap();
        root.prepare(
            "h",
            Some(Owner {
                uid: 64991,
                gid: 64990,
            }),
            DeployMode::Source,
        )
        .unwrap();
        let logs = std::fs::metadata(root.path().join("h").join(LOGS_DIR)).unwrap();
        assert_eq!(
            (logs.uid(), logs.gid(), logs.mode() & 0o7777),
            (64991, 64980, 0o2750)
        );
        // Without the account, the host's alone.
        root.prepare(
            "o",
            Some(Owner {
                uid: 64991,
                gid: 64990,
            }),
            DeployMode::Source,
        )
        .unwrap();
        let logs = std::fs::metadata(root.path().join("o").join(LOGS_DIR)).unwrap();
        assert_eq!(
            (logs.uid(), logs.gid(), logs.mode() & 0o7777),
            (64991, 64990, 0o700)
        );
    }

    #[test]
    fn a_closure_hosts_cache_is_made_through_descriptors_and_a_planted_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = ServerRoot::open(dir.path()).unwrap();
        root.prepare("h", None, DeployMode::Closure).unwrap();
        let cache = root.path().join("h").join(HOST_CACHE_DIR);
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_eq!((mode(&cache), mode(&cache.join("nar"))), (0o755, 0o755));
        // Whoever owns cache/ swaps nar/ for a link to a directory of its choosing.
        std::fs::remove_dir(cache.join("nar")).unwrap();
        std::fs::set_permissions(outside.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(outside.path(), cache.join("nar")).unwrap();
        assert!(root.prepare("h", None, DeployMode::Closure).is_err());
        assert_eq!(mode(outside.path()), 0o700, "the link was followed");
    }

    #[test]
    fn a_second_deploy_is_refused_while_one_runs() {
        let dir = tempfile::tempdir().unwrap();
        let _first = ServerRoot::open(dir.path()).unwrap();
        let e = ServerRoot::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("another `bento deploy`"), "{e}");
    }
}
