//! The binary cache's directory on the server, `<root>/cache`: where the cache content that
//! [`crate::publish::cache`] makes with Nix is written, locally or over sftp alike (one
//! [`ServerDir`]).
//!
//! No link is followed (`cache/` and `cache/nar/` must be real directories), every file is
//! written under a fresh temp name then renamed over its name (a planted link there is
//! replaced, not written through), listings are bounded. A publishing account cannot
//! create `cache/` in the (root-owned) root: `bento server setup` or
//! `services.bento-server.cache.enable` makes it, owned by that account.

use std::collections::HashSet;
use std::io;
use std::path::Path;

use crate::error::Error;
use crate::layout::join;
use crate::server_dir::{Kind, ServerDir};
pub use crate::wire::narinfo::NAR_DIR;

/// The cache's directory under the server root.
pub const CACHE_DIR: &str = "cache";
/// The most entries read from one directory of the cache: past this, the deploy stops.
pub const LIST_LIMIT: usize = 1 << 20;

/// What to do when the cache's directories are not there as they should be.
const SETUP: &str = "apply `bento server setup` on the server (with [cache], it makes <root>/cache and \
                     cache/nar owned by the publishing account), or set \
                     `services.bento-server.cache.enable` with nix/server.nix";

/// Whether `name` is the temp file of a put that never finished: `.<name>.<…>.tmp`, the
/// names [`ServerDir::replace_from`] creates (exclusively) before its rename.
pub fn is_leftover(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp") && !name.contains('/')
}

/// The cache directory being filled. Names in it are content hashes (`nar/<filehash>.nar.xz`)
/// or store path hashes (`<hash>.narinfo`), so a file once there is never rewritten.
///
/// [`crate::publish::cache::fill`] calls, in order: [`CacheDir::list`] (what is there
/// already), [`CacheDir::put`] for `nix-cache-info` (when missing) and each new NAR,
/// [`CacheDir::sync`], then [`CacheDir::put`] for each new `.narinfo`, references before
/// the paths that refer to them, and [`CacheDir::sync`]: a reader never sees a `.narinfo`
/// whose NAR, or whose references' `.narinfo`, is missing.
pub struct CacheDir {
    dir: Box<dyn ServerDir>,
    shown: String,
}

impl CacheDir {
    /// Opens `cache/` of the server root `root` (shown as `root_shown`), creating it and
    /// its `nar/` (0755: the web server reads them) where missing and allowed; a link or a
    /// file at either is refused.
    pub fn open(root: &dyn ServerDir, root_shown: &str) -> Result<CacheDir, Error> {
        let shown = format!("{}/{CACHE_DIR}", root_shown.trim_end_matches('/'));
        let dir = ensure_dir(root, CACHE_DIR, &shown)?;
        ensure_dir(dir.as_ref(), NAR_DIR, &format!("{shown}/{NAR_DIR}"))?;
        Ok(CacheDir { dir, shown })
    }

    fn shown_at(&self, rel: &str) -> String {
        join(&self.shown, rel)
    }

    /// The names of the regular files in `dir` of the cache (`""`: its top, or
    /// [`NAR_DIR`]); a missing directory is empty.
    pub fn list(&self, dir: &str) -> Result<HashSet<String>, Error> {
        if !dir.is_empty() && dir != NAR_DIR {
            return Err(Error::input(self.shown_at(dir), "not a directory of the cache"));
        }
        let entries = match self.dir.entries_at_most(dir, LIST_LIMIT) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashSet::new()),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(Error::input(
                    self.shown_at(dir),
                    format!("{e}: move old files out of it, or start a new cache"),
                ))
            }
            Err(e) => return Err(Error::input(self.shown_at(dir), e.to_string())),
        };
        Ok(entries
            .into_iter()
            .filter(|(_, kind)| *kind == Kind::File)
            .map(|(name, _)| name)
            .collect())
    }

    /// Writes the cache file `rel` (`nix-cache-info`, `<hash>.narinfo`, `nar/<file>`) with
    /// the content of the local file `from`, atomically.
    pub fn put(&self, rel: &str, from: &Path) -> Result<(), Error> {
        let shown = self.shown_at(rel);
        check_cache_rel(rel).map_err(|e| Error::input(&shown, e.to_string()))?;
        let mut source = std::fs::File::open(from).map_err(|e| Error::io(from.display().to_string(), e))?;
        self.dir.replace_from(rel, &mut source, 0o644).map_err(|e| {
            Error::input(
                &shown,
                format!(
                    "{}; run `bento deploy` again (nothing names this file yet)",
                    e.to_string().trim_end_matches('.')
                ),
            )
        })
    }

    /// Makes everything put so far durable before anything later is put.
    pub fn sync(&self) -> Result<(), Error> {
        self.dir.sync().map_err(|e| Error::io(&self.shown, e))
    }

    /// Removes `rel`, a temp file an interrupted [`CacheDir::put`] left (see
    /// [`is_leftover`]); never anything a link points to.
    pub fn remove_leftover(&self, rel: &str) -> Result<(), Error> {
        let shown = self.shown_at(rel);
        let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        if !is_leftover(name) || !(dir.is_empty() || dir == NAR_DIR) {
            return Err(Error::input(&shown, "not a temp file of the cache"));
        }
        let removed = match dir {
            "" => self.dir.remove_tree(name),
            dir => self.dir.dir(dir).and_then(|d| d.remove_tree(name)),
        };
        removed.map_err(|e| Error::input(&shown, e.to_string()))
    }

    /// The regular file `rel` of the cache, at most `limit` bytes; `None` when missing.
    pub fn read(&self, rel: &str, limit: u64) -> Result<Option<Vec<u8>>, Error> {
        match self.dir.read(rel, limit) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::input(self.shown_at(rel), e.to_string())),
        }
    }

    /// The cache as shown to the user (`/srv/bento/cache`).
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

/// Refuses any cache file but a name of its top or `nar/<name>`, neither hidden.
fn check_cache_rel(rel: &str) -> io::Result<()> {
    let name = rel.strip_prefix(&format!("{NAR_DIR}/")).unwrap_or(rel);
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing cache file `{}`", rel.escape_default()),
        ));
    }
    Ok(())
}

/// The directory `name` of `parent`, made (0755) when missing and the account may; a
/// link or a file there is refused.
fn ensure_dir(parent: &dyn ServerDir, name: &str, shown: &str) -> Result<Box<dyn ServerDir>, Error> {
    let failed = |e: io::Error| Error::input(shown, e.to_string());
    let refuse =
        |what: &str| Error::input(shown, format!("{what}, not a directory: remove it, then {SETUP}"));
    match parent.kind(name).map_err(failed)? {
        Some(Kind::Dir) => {}
        Some(Kind::Link) => return Err(refuse("is a symlink")),
        Some(_) => return Err(refuse("is a file")),
        None => match parent.create_dir(name) {
            Ok(made) => made.seal(0o755).map_err(failed)?,
            // Made by another deploy meanwhile.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(Error::input(
                    shown,
                    format!("missing, and the publishing account may not create it: {SETUP}"),
                ))
            }
            Err(e) => return Err(failed(e)),
        },
    }
    parent.dir(name).map_err(|e| match e.kind() {
        io::ErrorKind::InvalidData => refuse("is a symlink"),
        _ => failed(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server_dir::LocalDir;
    use std::os::unix::fs::symlink;

    fn open(root: &Path) -> Result<CacheDir, Error> {
        CacheDir::open(&LocalDir::open(root).unwrap(), &root.display().to_string())
    }

    #[test]
    fn the_cache_never_writes_through_a_link() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let src = outside.path().join("src");
        std::fs::write(&src, "narinfo").unwrap();

        // `<root>/cache` a symlink: refused, nothing created where it points.
        symlink(outside.path(), root.path().join(CACHE_DIR)).unwrap();
        let e = open(root.path()).err().unwrap().to_string();
        assert!(e.contains("symlink"), "{e}");
        assert!(!outside.path().join(NAR_DIR).exists());
        std::fs::remove_file(root.path().join(CACHE_DIR)).unwrap();

        // A planted link at a file's name is replaced, its target left alone.
        let cache = open(root.path()).unwrap();
        let target = outside.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        symlink(&target, root.path().join("cache/x.narinfo")).unwrap();
        cache.put("x.narinfo", &src).unwrap();
        cache.sync().unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(
            std::fs::read_to_string(root.path().join("cache/x.narinfo")).unwrap(),
            "narinfo"
        );
        // Only regular files count as present.
        std::fs::create_dir(root.path().join("cache/d.narinfo")).unwrap();
        assert_eq!(cache.list("").unwrap(), HashSet::from(["x.narinfo".to_owned()]));
        assert!(cache.list(NAR_DIR).unwrap().is_empty());

        // `nar` a symlink: its files are refused.
        std::fs::remove_dir(root.path().join("cache/nar")).unwrap();
        symlink(outside.path(), root.path().join("cache/nar")).unwrap();
        assert!(cache.put("nar/a.nar.xz", &src).is_err());
        assert!(!outside.path().join("a.nar.xz").exists());
        assert!(open(root.path()).is_err());
    }

    #[test]
    fn only_the_caches_own_names_are_written_or_removed() {
        assert!(check_cache_rel("nix-cache-info").is_ok());
        assert!(check_cache_rel("nar/abc.nar.xz").is_ok());
        for bad in [
            "../x",
            "nar/../../etc/passwd",
            "nar/.x.tmp",
            "a/b",
            "",
            "nar/",
            "/abs",
        ] {
            assert!(check_cache_rel(bad).is_err(), "{bad}");
        }
        let root = tempfile::tempdir().unwrap();
        let cache = open(root.path()).unwrap();
        std::fs::write(root.path().join("cache/nar/.a.nar.1.tmp"), "").unwrap();
        std::fs::write(root.path().join("cache/keep.narinfo"), "").unwrap();
        assert!(cache.remove_leftover("keep.narinfo").is_err());
        assert!(cache.remove_leftover("../cache/.x.tmp").is_err());
        cache.remove_leftover("nar/.a.nar.1.tmp").unwrap();
        assert!(!root.path().join("cache/nar/.a.nar.1.tmp").exists());
        assert!(root.path().join("cache/keep.narinfo").exists());
    }
}
