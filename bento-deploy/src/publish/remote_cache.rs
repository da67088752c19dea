//! The binary cache of a remote target: `<root>/cache` filled over the deploy's own sftp
//! connection ([`RemoteRoot`]), as the publishing account.
//!
//! The same guarantees as [`crate::publish::cache_sink::LocalCache`]: no link followed (`cache/` and
//! `cache/nar/` must be real directories, a link there is refused), every file streamed
//! under a fresh temp name then renamed over its name with `posix-rename@openssh.com` (a
//! planted link at that name is replaced, not written through), listings bounded. The
//! publishing account cannot create `cache/` in the (root-owned) root: `bento server setup`
//! or `services.bento-server.cache.enable` makes it, owned by that account.

use std::collections::HashSet;
use std::io;
use std::path::Path;

use crate::error::Error;
use crate::publish::cache_sink::{is_leftover, CacheSink, CACHE_DIR, NAR_DIR};
use crate::publish::remote::RemoteRoot;
use crate::sftp::Kind;

/// The most entries read from one directory of the cache: past this, the deploy stops.
pub const LIST_LIMIT: usize = 1 << 20;

/// What to do when the cache's directories are not there as they should be.
const SETUP: &str = "apply `bento server setup` on the server (with [cache], it makes <root>/cache and \
                     cache/nar owned by the publishing account), or set \
                     `services.bento-server.cache.enable` with nix/server.nix";

/// `<root>/cache` of a remote target.
pub struct RemoteCache<'a> {
    remote: &'a RemoteRoot,
    shown: String,
}

impl<'a> RemoteCache<'a> {
    /// Checks that `cache/` and `cache/nar/` are directories (not links), creating either
    /// when missing and the account may (0755: the web server reads them).
    pub fn open(remote: &'a RemoteRoot) -> Result<RemoteCache<'a>, Error> {
        let shown = format!("{}/{CACHE_DIR}", remote.url().to_string().trim_end_matches('/'));
        let cache = RemoteCache { remote, shown };
        cache.ensure_dir(CACHE_DIR)?;
        cache.ensure_dir(&format!("{CACHE_DIR}/{NAR_DIR}"))?;
        Ok(cache)
    }

    /// `rel` of the root as shown in messages.
    fn shown_at(&self, rel: &str) -> String {
        match rel.strip_prefix(CACHE_DIR) {
            Some(rest) => format!("{}{rest}", self.shown),
            None => format!("{}/{rel}", self.shown),
        }
    }

    fn ensure_dir(&self, rel: &str) -> Result<(), Error> {
        let shown = self.shown_at(rel);
        let failed = |e: io::Error| Error::input(&shown, e.to_string());
        let refuse = |what: &str| {
            Error::input(
                &shown,
                format!("{what}, not a directory: remove it, then {SETUP}"),
            )
        };
        match self.remote.with(|c| c.kind(rel)).map_err(failed)? {
            Some(Kind::Dir) => Ok(()),
            Some(Kind::Link) => Err(refuse("is a symlink")),
            Some(_) => Err(refuse("is a file")),
            None => match self.remote.with(|c| c.mkdir(rel, 0o755)) {
                Ok(()) => Ok(()),
                // Made by another deploy meanwhile.
                Err(_) if self.remote.with(|c| c.kind(rel)).ok().flatten() == Some(Kind::Dir) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Err(Error::input(
                    &shown,
                    format!("missing, and the publishing account may not create it: {SETUP}"),
                )),
                Err(e) => Err(failed(e)),
            },
        }
    }
}

/// `rel` of the cache, checked: a name of its top, or `nar/<name>`.
fn cache_rel(rel: &str) -> io::Result<String> {
    let name = rel.strip_prefix(&format!("{NAR_DIR}/")).unwrap_or(rel);
    if name.contains('/') || name.starts_with('.') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing cache file `{}`", rel.escape_default()),
        ));
    }
    let full = format!("{CACHE_DIR}/{rel}");
    crate::confined::check_rel(&full)?;
    Ok(full)
}

impl CacheSink for RemoteCache<'_> {
    fn list(&self, dir: &str) -> Result<HashSet<String>, Error> {
        let rel = match dir {
            "" => CACHE_DIR.to_owned(),
            NAR_DIR => format!("{CACHE_DIR}/{NAR_DIR}"),
            _ => return Err(Error::input(self.shown_at(dir), "not a directory of the cache")),
        };
        let entries = match self.remote.with(|c| c.entries_at_most(&rel, LIST_LIMIT)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashSet::new()),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(Error::input(
                    self.shown_at(&rel),
                    format!("{e}: move old files out of it, or start a new cache"),
                ))
            }
            Err(e) => return Err(Error::input(self.shown_at(&rel), e.to_string())),
        };
        Ok(entries
            .into_iter()
            .filter(|(_, kind)| *kind == Kind::File)
            .map(|(name, _)| name)
            .collect())
    }

    fn put(&self, rel: &str, from: &Path) -> Result<(), Error> {
        let shown = self.shown_at(&format!("{CACHE_DIR}/{rel}"));
        let full = cache_rel(rel).map_err(|e| Error::input(&shown, e.to_string()))?;
        let mut source = std::fs::File::open(from).map_err(|e| Error::io(from.display().to_string(), e))?;
        self.remote
            .with(|c| c.upload(&full, &mut source, 0o644))
            .map(|_| ())
            .map_err(|e| {
                Error::input(
                    &shown,
                    format!(
                        "{}; run `bento deploy` again (nothing names this file yet)",
                        e.to_string().trim_end_matches('.')
                    ),
                )
            })
    }

    fn remove_leftover(&self, rel: &str) -> Result<(), Error> {
        let full = format!("{CACHE_DIR}/{rel}");
        let shown = self.shown_at(&full);
        let name = rel.strip_prefix(&format!("{NAR_DIR}/")).unwrap_or(rel);
        if !is_leftover(name) {
            return Err(Error::input(&shown, "not a temp file of the cache"));
        }
        self.remote
            .with(|c| c.remove_file(&full))
            .map_err(|e| Error::input(&shown, e.to_string()))
    }

    /// Each file was flushed (`fsync@openssh.com`) as it was written.
    fn sync(&self) -> Result<(), Error> {
        Ok(())
    }

    fn shown(&self) -> String {
        self.shown.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::cache_rel;

    #[test]
    fn only_the_caches_own_names_are_written() {
        assert_eq!(cache_rel("nix-cache-info").unwrap(), "cache/nix-cache-info");
        assert_eq!(cache_rel("nar/abc.nar.xz").unwrap(), "cache/nar/abc.nar.xz");
        for bad in [
            "../x",
            "nar/../../etc/passwd",
            "nar/.x.tmp",
            "a/b",
            "",
            "nar/",
            "/abs",
        ] {
            assert!(cache_rel(bad).is_err(), "{bad}");
        }
    }
}
