//! The fleet lock: one `flock` that every command writing `.age` files or
//! `recipients.lock` holds, so that two admins working in one checkout wait for each
//! other instead of one silently undoing the other's update.
//!
//! The lock is `.bento/lock` in the fleet root (for an agenix `secrets.nix`, in the
//! directory holding it): `.bento/` is bento's local state, kept out of git by its own
//! `.gitignore`, so the lock never shows up in `git status` and is never committed. The
//! file holds the pid of the process holding it, so that a waiting command can say whom
//! it waits for. The lock itself is the `flock`, released by the kernel when its holder
//! exits however it exits: a stale file never blocks anyone.
//!
//! Holding a [`FleetLock`] is what the writing functions of this crate ask for, so that
//! no code path can write a secret without it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fs::FlockOperation;

use crate::error::{Error, Result};

/// Bento's local state in the fleet repo, never committed.
pub const STATE_DIR: &str = ".bento";
/// The lock, relative to the fleet root.
pub const LOCK_PATH: &str = ".bento/lock";
/// What `.bento/.gitignore` says: everything in `.bento/` stays out of git.
pub const STATE_GITIGNORE: &str = "# bento's local state: not for git\n*\n";

/// The fleet lock, held until dropped (or the process ends).
#[derive(Debug)]
pub struct FleetLock {
    file: File,
}

impl FleetLock {
    /// Takes the lock of the fleet rooted at `root`, waiting for its holder if there is
    /// one. Before waiting, `on_wait` is called with the holder's pid (when known).
    pub fn acquire(root: &Path, on_wait: impl FnOnce(Option<u32>)) -> Result<FleetLock> {
        ensure_state_dir(root)?;
        let path = root.join(LOCK_PATH);
        let io = |e| Error::io(LOCK_PATH, e);
        let open = |write: bool| {
            OpenOptions::new()
                .read(true)
                .write(write)
                .create(write)
                .truncate(false)
                .mode(0o644)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&path)
        };
        // Another admin's lock file may be read-only for us: `flock` works on it all the
        // same, only the pid is not recorded.
        let (mut file, writable) = match open(true) {
            Ok(f) => (f, true),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => (open(false).map_err(io)?, false),
            Err(e) => return Err(io(e)),
        };
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                on_wait(holder(&mut file));
                retry_on_intr(|| rustix::fs::flock(&file, FlockOperation::LockExclusive))
                    .map_err(|e| io(e.into()))?;
            }
            Err(e) => return Err(io(e.into())),
        }
        if writable {
            // Only a hint for waiters: a failure to record it changes nothing else.
            let _ = file
                .set_len(0)
                .and_then(|()| file.seek(SeekFrom::Start(0)))
                .and_then(|_| writeln!(file, "{}", std::process::id()));
        }
        remove_stale_temp_files(root);
        Ok(FleetLock { file })
    }
}

impl Drop for FleetLock {
    fn drop(&mut self) {
        // The pid is no longer the holder's; the lock goes with the file descriptor.
        let _ = self.file.set_len(0);
    }
}

/// Removes the temporary files that a writer killed mid-write left next to the `.age`
/// files and `recipients.lock` (`.<name>.<random>.tmp`), in `root` and `root/secrets/`.
/// Safe under the lock: every writer of those files holds it, so no live write owns
/// one. Best effort: what cannot be removed stays, as before.
fn remove_stale_temp_files(root: &Path) {
    for dir in [root.to_path_buf(), root.join("secrets")] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if is_stale_temp_name(name) && entry.file_type().is_ok_and(|t| t.is_file()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// `.<file>.<random>.tmp`, as [`crate::atomic`] stages `<file>`, for an `.age` file, a
/// generated key's `.pub` or `recipients.lock`.
fn is_stale_temp_name(name: &str) -> bool {
    let Some(inner) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else {
        return false;
    };
    let Some((file, random)) = inner.rsplit_once('.') else {
        return false;
    };
    !random.is_empty()
        && random.chars().all(|c| c.is_ascii_alphanumeric())
        && (file.ends_with(".age") || file.ends_with(".pub") || file == "recipients.lock")
}

/// The pid written in the lock file by its holder.
fn holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

fn retry_on_intr(f: impl Fn() -> rustix::io::Result<()>) -> rustix::io::Result<()> {
    loop {
        match f() {
            Err(rustix::io::Errno::INTR) => continue,
            other => return other,
        }
    }
}

/// Creates `.bento/` in `root` with the `.gitignore` that keeps it out of git. The fleet
/// repo may hold what a contributor committed: `.bento` must be a real directory (a link
/// is refused), and its `.gitignore` is created beneath its directory fd, exclusively and
/// never through a link (one already there, even dangling, is left as it is).
pub fn ensure_state_dir(root: &Path) -> Result<()> {
    use rustix::fs::{Mode, OFlags};
    let io = |e: rustix::io::Errno| Error::io(STATE_DIR, e.into());
    let top = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(root.display().to_string(), e.into()))?;
    match rustix::fs::mkdirat(&top, STATE_DIR, Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(io(e)),
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let dir = match rustix::fs::openat(&top, STATE_DIR, flags, Mode::empty()) {
        Ok(dir) => dir,
        Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
            return Err(Error::input(
                STATE_DIR,
                None,
                "is a symlink or not a directory; bento keeps its local state in a real `.bento/` \
                 directory: remove it (and keep it out of git)",
            ))
        }
        Err(e) => return Err(io(e)),
    };
    let create = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(&dir, ".gitignore", create, Mode::from_raw_mode(0o644)) {
        Ok(fd) => File::from(fd)
            .write_all(STATE_GITIGNORE.as_bytes())
            .map_err(|e| Error::io(format!("{STATE_DIR}/.gitignore"), e)),
        Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(e) => Err(Error::io(format!("{STATE_DIR}/.gitignore"), e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_and_learns_the_first_ones_pid() {
        let root = tempfile::tempdir().unwrap();
        let first = FleetLock::acquire(root.path(), |_| panic!("nobody holds it")).unwrap();
        let ignore = std::fs::read_to_string(root.path().join(".bento/.gitignore")).unwrap();
        assert_eq!(ignore, STATE_GITIGNORE);
        let (tx, rx) = std::sync::mpsc::channel();
        let dir = root.path().to_path_buf();
        let waiter = std::thread::spawn(move || {
            let _second = FleetLock::acquire(&dir, |pid| tx.send(pid).unwrap()).unwrap();
        });
        // flock locks belong to open files, so a second open in this process waits too.
        assert_eq!(rx.recv().unwrap(), Some(std::process::id()));
        drop(first);
        waiter.join().unwrap();
    }

    #[test]
    fn a_committed_link_never_makes_bento_write_elsewhere() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        // A dangling `.bento/.gitignore` link: nothing is created where it points.
        std::fs::create_dir(root.path().join(STATE_DIR)).unwrap();
        let target = elsewhere.path().join("planted");
        std::os::unix::fs::symlink(&target, root.path().join(".bento/.gitignore")).unwrap();
        ensure_state_dir(root.path()).unwrap();
        assert!(!target.exists());
        // `.bento` itself a link: refused, in one line.
        let other = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), other.path().join(STATE_DIR)).unwrap();
        let e = ensure_state_dir(other.path()).unwrap_err().to_string();
        assert!(e.starts_with(".bento: is a symlink"), "{e}");
        assert!(FleetLock::acquire(other.path(), |_| {}).is_err());
        assert_eq!(
            std::fs::read_dir(elsewhere.path()).unwrap().count(),
            0,
            "nothing written there"
        );
    }

    #[test]
    fn only_temp_files_of_age_files_and_the_lock_are_stale() {
        for name in [
            ".db.age.AbC123.tmp",
            ".recipients.lock.x9Y8z7.tmp",
            ".wg.pub.Qw12.tmp",
        ] {
            assert!(is_stale_temp_name(name), "{name}");
        }
        for name in [
            "db.age",
            ".db.age",
            ".db.age.tmp",
            ".db.age..tmp",
            ".notes.txt.AbC123.tmp",
            ".db.age.Ab-12.tmp",
            "x.db.age.AbC123.tmp",
        ] {
            assert!(!is_stale_temp_name(name), "{name}");
        }
    }
}
