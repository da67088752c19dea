//! The stable `path` symlinks of activation: each secret (or template) with a `path` gets
//! a symlink there to its stable location, replaced atomically and never over a real file;
//! the links of secrets that are gone are removed when they still point at Bento's tree.
//!
//! Activation runs as root, and a `path` may cross directories a local user controls. So
//! the link's directory is reached by walking from `/` one component at a time through
//! directory descriptors, never following a symlink, and every directory on the way must
//! be one only root can change: owned by root (or, in a run that is not root's, by the
//! user running it) and writable by no group or other user. A sticky world-writable
//! directory such as `/tmp` is refused too. Missing directories are created (root's,
//! 0755) in a directory that passed. The link itself is made under an unpredictable temp
//! name (created exclusively) in that directory and renamed over the path, both relative
//! to its descriptor: what a user renames or swaps meanwhile cannot redirect the write.

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, CWD};
use rustix::io::Errno;

use super::outcome::{Failure, Report};

/// Why a `path` symlink was not placed; one line each.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The path is not absolute and plain (file_attrs checks it; a bundle built otherwise).
    #[error("not an absolute path without `.` or `..`")]
    NotPlain,
    /// A directory on the way is a symlink.
    #[error("{} is a symlink; a `path` is placed only through real directories (use the target's own path)", .0.display())]
    ThroughLink(PathBuf),
    /// A component on the way is neither a directory nor a link.
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// A directory on the way is one another user can change.
    #[error("{} {why}: another user could swap what lies below it; choose a path whose directories only root can write", dir.display())]
    Untrusted {
        /// The directory.
        dir: PathBuf,
        /// `is owned by uid N` or `is writable by others (mode 1777)`.
        why: String,
    },
    /// A file or directory (not a symlink) is at the path.
    #[error("a real file is there; refusing to replace it")]
    RealFile,
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the file.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// `path` symlinks to `<stable>/<name>` for the `present` specs (`name_and_path` gives
/// each one's); those of `old` that are gone are removed when they still point there.
/// Failures are reported under `label_prefix` + name, one line each; the other links are
/// still placed.
pub(crate) fn place_links<S>(
    stable: &Path,
    (present, old): (&[S], &[S]),
    name_and_path: fn(&S) -> (&String, &Option<String>),
    label_prefix: &str,
    report: &mut Report,
) {
    for (name, path) in present.iter().map(name_and_path) {
        let Some(path) = path else { continue };
        if let Err(e) = place_symlink(Path::new(path), &stable.join(name)) {
            report.failed.push(Failure {
                name: format!("{label_prefix}{name}"),
                error: format!("symlink {path}: {e}"),
                kept_previous: true,
            });
        }
    }
    let names: BTreeSet<&str> = present.iter().map(|s| name_and_path(s).0.as_str()).collect();
    for (name, path) in old
        .iter()
        .map(name_and_path)
        .filter(|(n, _)| !names.contains(n.as_str()))
    {
        if let Some(path) = path {
            // Through a directory that does not pass, nothing is removed.
            let _ = remove_symlink(Path::new(path), &stable.join(name));
        }
    }
}

/// Makes `path` a symlink to `target`, atomically; never replaces a real file, never
/// writes through a directory another user controls.
pub fn place_symlink(path: &Path, target: &Path) -> Result<(), LinkError> {
    let (dir, name) = open_parent(path, true)?;
    let io = |what: &str, e: Errno| LinkError::Io {
        what: what.to_owned(),
        source: e.into(),
    };
    match rustix::fs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) != FileType::Symlink => {
            return Err(LinkError::RealFile)
        }
        Ok(_) => {
            let now =
                rustix::fs::readlinkat(&dir, name.as_str(), Vec::new()).map_err(|e| io("reading it", e))?;
            if now.as_bytes() == target.as_os_str().as_encoded_bytes() {
                return Ok(());
            }
        }
        Err(Errno::NOENT) => {}
        Err(e) => return Err(io("looking at it", e)),
    }
    let mut tries = 0;
    let tmp = loop {
        let tmp = crate::atomic::temp_name(&name);
        match rustix::fs::symlinkat(target, &dir, tmp.as_str()) {
            Ok(()) => break tmp,
            Err(Errno::EXIST) if tries < crate::atomic::TEMP_TRIES => tries += 1,
            Err(e) => return Err(io("creating the link", e)),
        }
    };
    rustix::fs::renameat(&dir, tmp.as_str(), &dir, name.as_str()).map_err(|e| {
        let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
        io("renaming the link into place", e)
    })
}

/// Removes the symlink at `path` when it still points at `target`.
fn remove_symlink(path: &Path, target: &Path) -> Result<(), LinkError> {
    let (dir, name) = open_parent(path, false)?;
    if let Ok(now) = rustix::fs::readlinkat(&dir, name.as_str(), Vec::new()) {
        if now.as_bytes() == target.as_os_str().as_encoded_bytes() {
            let _ = rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::empty());
        }
    }
    Ok(())
}

/// The directory of `path`, opened by walking from `/` (every directory checked, see the
/// module's doc), and the file name in it. Missing directories are created when `create`.
fn open_parent(path: &Path, create: bool) -> Result<(OwnedFd, String), LinkError> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let name = match path.file_name().and_then(|n| n.to_str()) {
        Some(n) if path.is_absolute() => n.to_owned(),
        _ => return Err(LinkError::NotPlain),
    };
    let parent = path.parent().ok_or(LinkError::NotPlain)?;
    let mut shown = PathBuf::from("/");
    let mut dir = rustix::fs::openat(CWD, "/", flags, Mode::empty()).map_err(|e| LinkError::Io {
        what: "opening /".into(),
        source: e.into(),
    })?;
    check_dir(&dir, &shown)?;
    for component in parent.components() {
        let part = match component {
            Component::RootDir => continue,
            Component::Normal(part) => part,
            _ => return Err(LinkError::NotPlain),
        };
        shown.push(part);
        let io = |what: &str, e: Errno| LinkError::Io {
            what: format!("{what} {}", shown.display()),
            source: e.into(),
        };
        let opened = match rustix::fs::openat(&dir, part, flags, Mode::empty()) {
            Err(Errno::NOENT) if create => {
                match rustix::fs::mkdirat(&dir, part, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(io("creating", e)),
                }
                rustix::fs::openat(&dir, part, flags, Mode::empty())
            }
            other => other,
        };
        dir = match opened {
            Ok(fd) => fd,
            Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                return Err(match rustix::fs::statat(&dir, part, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                        LinkError::ThroughLink(shown)
                    }
                    _ => LinkError::NotADirectory(shown),
                })
            }
            Err(e) => return Err(io("opening", e)),
        };
        check_dir(&dir, &shown)?;
    }
    Ok((dir, name))
}

/// Refuses a directory another user can change: owned by someone else than root (or the
/// user running a non-root activation), or writable by its group or others.
fn check_dir(dir: &OwnedFd, shown: &Path) -> Result<(), LinkError> {
    let st = rustix::fs::fstat(dir).map_err(|e| LinkError::Io {
        what: format!("looking at {}", shown.display()),
        source: e.into(),
    })?;
    let me = rustix::process::geteuid().as_raw();
    let untrusted = |why: String| {
        Err(LinkError::Untrusted {
            dir: shown.to_path_buf(),
            why,
        })
    };
    if st.st_uid != 0 && st.st_uid != me {
        return untrusted(format!("is owned by uid {}, not root", st.st_uid));
    }
    if st.st_mode & 0o022 != 0 {
        return untrusted(format!(
            "is writable by others (mode {:04o})",
            st.st_mode & 0o7777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_or_a_writable_directory_on_the_way_is_refused_naming_it() {
        // Below /tmp (sticky, writable by all): refused, whoever runs the test, and
        // nothing is created there.
        let path = Path::new("/tmp/bento-refused-link-dir/x");
        let e = place_symlink(path, Path::new("/run/bento/secrets/x")).unwrap_err();
        assert!(
            matches!(&e, LinkError::Untrusted { dir, .. } if dir == Path::new("/tmp")),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with("/tmp is writable by others (mode 1777)"),
            "{e}"
        );
        assert!(!Path::new("/tmp/bento-refused-link-dir").exists());
        assert!(matches!(
            place_symlink(Path::new("relative/x"), Path::new("/t")),
            Err(LinkError::NotPlain)
        ));
        assert!(matches!(
            place_symlink(Path::new("/etc/../x"), Path::new("/t")),
            Err(LinkError::NotPlain)
        ));
    }
}
