//! A closure host's own binary cache, `<root>/<host>/cache/`: the part of the fleet's
//! cache (`<root>/cache`) that its kept generations' systems need, as hard links (never
//! copies), so that the host — chrooted to its directory — sees its own closure and
//! nothing of another host's.
//!
//! The closure of a system is read from the fleet cache itself, `.narinfo` by `.narinfo`
//! from the system's along their references: it is what the host will be able to fetch,
//! whatever the admin's own store still holds. NARs are linked before the `.narinfo`s that
//! name them, and all before any `current` names the system.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io;
use std::sync::Mutex;

use crate::error::Error;
use crate::layout::join;
use crate::publish::cache_dir::{CacheDir, CACHE_DIR};
use crate::server_dir::{Kind, ServerDir};
use crate::store_path::StorePath;
use crate::wire::narinfo::{narinfo_name, NarInfo, CACHE_INFO, NARINFO_LIMIT, NAR_DIR};

/// The most paths one closure may have.
const MAX_CLOSURE: usize = 1_000_000;
/// The most entries read of a host's cache directory.
const LIST_LIMIT: usize = 1 << 20;

/// Closures read from the fleet cache, each `.narinfo` once per deploy.
pub(crate) struct Closures<'a> {
    cache: &'a CacheDir,
    known: Mutex<BTreeMap<StorePath, NarInfo>>,
}

impl<'a> Closures<'a> {
    pub(crate) fn new(cache: &'a CacheDir) -> Closures<'a> {
        Closures {
            cache,
            known: Mutex::new(BTreeMap::new()),
        }
    }

    fn info(&self, path: &StorePath) -> Result<NarInfo, Error> {
        if let Some(info) = self.known.lock().unwrap_or_else(|e| e.into_inner()).get(path) {
            return Ok(info.clone());
        }
        let name = narinfo_name(path);
        let shown = format!("{}/{name}", self.cache.shown());
        let bytes = self.cache.read(&name, NARINFO_LIMIT)?.ok_or_else(|| {
            Error::input(
                &shown,
                format!("missing, though {path} is in a closure being deployed: run `bento deploy` again to fill the cache"),
            )
        })?;
        let info = NarInfo::parse(&bytes).map_err(|e| Error::input(&shown, e.to_string()))?;
        if info.store_path != *path {
            return Err(Error::input(
                &shown,
                format!(
                    "describes {}, not {path}: remove it and deploy again",
                    info.store_path
                ),
            ));
        }
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.clone(), info.clone());
        Ok(info)
    }

    /// Every path of `system`'s closure, with its `.narinfo`.
    pub(crate) fn of(&self, system: &StorePath) -> Result<Vec<NarInfo>, Error> {
        let mut seen = HashSet::from([system.clone()]);
        let mut queue = vec![system.clone()];
        let mut out = Vec::new();
        while let Some(path) = queue.pop() {
            let info = self.info(&path)?;
            for reference in &info.references {
                if seen.insert(reference.clone()) {
                    queue.push(reference.clone());
                }
            }
            if seen.len() > MAX_CLOSURE {
                return Err(Error::input(
                    self.cache.shown(),
                    format!("the closure of {system} has more than {MAX_CLOSURE} paths"),
                ));
            }
            out.push(info);
        }
        Ok(out)
    }
}

/// The names a host's cache holds for `closure`: `.narinfo`s at its top, NARs in `nar/`.
fn names(closure: &[NarInfo]) -> (BTreeSet<String>, BTreeSet<String>) {
    let narinfos = closure.iter().map(|i| narinfo_name(&i.store_path)).collect();
    let nars = closure.iter().map(|i| i.nar_file.clone()).collect();
    (narinfos, nars)
}

/// `host`'s cache in the server root `root` (shown as `root_shown`).
pub(crate) struct HostCache<'a> {
    root: &'a dyn ServerDir,
    host: &'a str,
    shown: String,
}

impl<'a> HostCache<'a> {
    pub(crate) fn new(root: &'a dyn ServerDir, root_shown: &str, host: &'a str) -> HostCache<'a> {
        HostCache {
            root,
            host,
            shown: format!("{}/{host}/{CACHE_DIR}", root_shown.trim_end_matches('/')),
        }
    }

    fn failed(&self, rel: &str, e: io::Error) -> Error {
        let hint = match e.kind() {
            io::ErrorKind::NotFound => {
                "; apply `bento server setup` (it makes each host's cache/ and cache/nar/)"
            }
            io::ErrorKind::Unsupported => {
                "; closure mode needs it to give each host its closure without copies"
            }
            _ => "; run `bento deploy` again (the host keeps its current generation)",
        };
        Error::input(
            join(&self.shown, rel),
            format!("{}{hint}", e.to_string().trim_end_matches('.')),
        )
    }

    /// The regular files of `rel` (`""`: the top, or `nar`).
    fn listing(&self, rel: &str) -> Result<BTreeSet<String>, Error> {
        let dir = join(&format!("{}/{CACHE_DIR}", self.host), rel);
        let entries = self
            .root
            .entries_at_most(&dir, LIST_LIMIT)
            .map_err(|e| self.failed(rel, e))?;
        Ok(entries
            .into_iter()
            .filter(|(_, kind)| *kind == Kind::File)
            .map(|(name, _)| name)
            .collect())
    }

    /// Whether the host's cache has `path`'s `.narinfo`.
    pub(crate) fn has(&self, path: &StorePath) -> Result<bool, Error> {
        let name = narinfo_name(path);
        let rel = format!("{}/{CACHE_DIR}/{name}", self.host);
        match self.root.kind(&rel) {
            Ok(kind) => Ok(kind == Some(Kind::File)),
            Err(e) => Err(self.failed(&name, e)),
        }
    }

    /// Links into the host's cache what `closure` needs and it lacks: the NARs, then the
    /// `.narinfo`s, then `nix-cache-info`. Returns how many paths were added.
    pub(crate) fn share(&self, closure: &[NarInfo]) -> Result<usize, Error> {
        let (narinfos, nars) = names(closure);
        let (have_top, have_nars) = (self.listing("")?, self.listing(NAR_DIR)?);
        let link = |rel: &str| {
            let (from, to) = (
                format!("{CACHE_DIR}/{rel}"),
                format!("{}/{CACHE_DIR}/{rel}", self.host),
            );
            match self.root.hard_link(&from, &to) {
                Ok(()) => Ok(()),
                // Linked meanwhile by a deploy of another generation: the same content.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(self.failed(rel, e)),
            }
        };
        for nar in nars.difference(&have_nars) {
            link(&format!("{NAR_DIR}/{nar}"))?;
        }
        let added: Vec<&String> = narinfos.difference(&have_top).collect();
        for narinfo in &added {
            link(narinfo)?;
        }
        if !have_top.contains(CACHE_INFO) {
            link(CACHE_INFO)?;
        }
        Ok(added.len())
    }

    /// Removes from the host's cache what none of `closures` (those of its kept
    /// generations) needs.
    pub(crate) fn prune(&self, closures: &[Vec<NarInfo>]) -> Result<(), Error> {
        let all: Vec<NarInfo> = closures.iter().flatten().cloned().collect();
        let (narinfos, nars) = names(&all);
        let host_cache = self
            .root
            .dir(&format!("{}/{CACHE_DIR}", self.host))
            .map_err(|e| self.failed("", e))?;
        for name in self.listing("")?.into_iter().filter(|n| n.ends_with(".narinfo")) {
            if !narinfos.contains(&name) {
                host_cache.remove_tree(&name).map_err(|e| self.failed(&name, e))?;
            }
        }
        let nar_dir = host_cache.dir(NAR_DIR).map_err(|e| self.failed(NAR_DIR, e))?;
        for name in self.listing(NAR_DIR)? {
            if !nars.contains(&name) {
                let rel = format!("{NAR_DIR}/{name}");
                nar_dir.remove_tree(&name).map_err(|e| self.failed(&rel, e))?;
            }
        }
        Ok(())
    }
}
