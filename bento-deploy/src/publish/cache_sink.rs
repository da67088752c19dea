//! Where the binary cache's files go: the seam between building the cache content (with
//! Nix, on the admin's machine, see [`crate::publish::cache`]) and writing it to the server.
//!
//! [`LocalCache`] writes `<root>/cache` on this machine through [`Confined`]: no symlink
//! followed, every file written under an exclusive temp name, synced, then renamed into
//! place. A remote target implements [`CacheSink`] the same way over its transport.

use std::collections::HashSet;
use std::path::Path;

use rustix::fs::FileType;

use crate::confined::Confined;
use crate::error::Error;

/// The cache's directory under the server root.
pub const CACHE_DIR: &str = "cache";
/// The NARs' directory inside the cache.
pub const NAR_DIR: &str = "nar";

/// The cache directory being filled. Names in it are content hashes (`nar/<filehash>.nar.xz`)
/// or store path hashes (`<hash>.narinfo`), so a file once there is never rewritten.
///
/// [`crate::publish::cache::fill`] calls, in order: [`CacheSink::list`] (what is there already),
/// [`CacheSink::put`] for `nix-cache-info` (when missing) and each new NAR,
/// [`CacheSink::sync`], then [`CacheSink::put`] for each new `.narinfo`, references before
/// the paths that refer to them, and [`CacheSink::sync`]: a reader never sees a
/// `.narinfo` whose NAR, or whose references' `.narinfo`, is missing.
pub trait CacheSink: Sync {
    /// The names of the regular files in `dir` of the cache (`""`: its top, or
    /// [`NAR_DIR`]); a missing directory is empty.
    fn list(&self, dir: &str) -> Result<HashSet<String>, Error>;
    /// Writes the cache file `rel` (`nix-cache-info`, `<hash>.narinfo`,
    /// `nar/<file>`) with the content of the local file `from`, atomically: complete
    /// under a temp name first, then renamed; never written through a link.
    fn put(&self, rel: &str, from: &Path) -> Result<(), Error>;
    /// Makes everything put so far durable before anything later is put.
    fn sync(&self) -> Result<(), Error>;
    /// Removes `rel`, a temp file an interrupted [`CacheSink::put`] left (see
    /// [`is_leftover`]); never anything a link points to.
    fn remove_leftover(&self, rel: &str) -> Result<(), Error>;
    /// The cache as shown to the user (`/srv/bento/cache`).
    fn shown(&self) -> String;
}

/// Whether `name` is the temp file of a put that never finished: `.<name>.<…>.tmp`, the
/// names both the local and the sftp writer create (exclusively) before their rename.
pub fn is_leftover(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp") && !name.contains('/')
}

/// `<root>/cache` on this machine.
pub struct LocalCache {
    dir: Confined,
    shown: String,
}

impl LocalCache {
    /// Opens `<server_root>/cache`, creating it and its `nar/` (0755: the HTTP server
    /// reads it) when missing; a symlink at either is refused.
    pub fn open(server_root: &Path) -> Result<LocalCache, Error> {
        let shown = server_root.join(CACHE_DIR).display().to_string();
        let root =
            Confined::open(server_root).map_err(|e| Error::io(server_root.display().to_string(), e))?;
        let dir = root
            .create_dir(CACHE_DIR, 0o755)
            .map_err(|e| Error::io(&shown, e))?;
        dir.create_dir(NAR_DIR, 0o755)
            .map_err(|e| Error::io(format!("{shown}/{NAR_DIR}"), e))?;
        Ok(LocalCache { dir, shown })
    }
}

impl CacheSink for LocalCache {
    fn list(&self, dir: &str) -> Result<HashSet<String>, Error> {
        let shown = || format!("{}/{dir}", self.shown);
        let entries = match self.dir.entries(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
            Err(e) => return Err(Error::io(shown(), e)),
        };
        Ok(entries
            .into_iter()
            // A listing that gives no type (rare file systems): taken as a file.
            .filter(|e| matches!(e.kind, Some(FileType::RegularFile) | None))
            .filter_map(|e| e.name.into_string().ok())
            .collect())
    }

    fn put(&self, rel: &str, from: &Path) -> Result<(), Error> {
        let mut source = std::fs::File::open(from).map_err(|e| Error::io(from.display().to_string(), e))?;
        self.dir
            .replace_with(rel, 0o644, |file| std::io::copy(&mut source, file).map(|_| ()))
            .map_err(|e| Error::io(format!("{}/{rel}", self.shown), e))
    }

    fn sync(&self) -> Result<(), Error> {
        self.dir.sync().map_err(|e| Error::io(&self.shown, e))
    }

    fn remove_leftover(&self, rel: &str) -> Result<(), Error> {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        if !is_leftover(name) {
            return Err(Error::input(
                format!("{}/{rel}", self.shown),
                "not a temp file of the cache",
            ));
        }
        self.dir
            .remove_file(rel)
            .map_err(|e| Error::io(format!("{}/{rel}", self.shown), e))
    }

    fn shown(&self) -> String {
        self.shown.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn the_local_cache_never_writes_through_a_link() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let src = outside.path().join("src");
        std::fs::write(&src, "narinfo").unwrap();

        // `<root>/cache` a symlink: refused, nothing created where it points.
        symlink(outside.path(), root.path().join(CACHE_DIR)).unwrap();
        let e = LocalCache::open(root.path()).err().unwrap().to_string();
        assert!(e.contains("symlink"), "{e}");
        assert!(!outside.path().join(NAR_DIR).exists());
        std::fs::remove_file(root.path().join(CACHE_DIR)).unwrap();

        // A planted link at a file's name is replaced, its target left alone.
        let cache = LocalCache::open(root.path()).unwrap();
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
        assert!(LocalCache::open(root.path()).is_err());
    }
}
