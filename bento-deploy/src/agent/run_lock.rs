//! The run lock: one run at a time on a host (the timer and the trigger may meet).
//!
//! `<state_dir>/lock` is root's, mode 0600, opened without following a symlink. A lock
//! file anyone else could open (the 0644 of older versions, another owner, a hard link)
//! is replaced by a new one first: whoever holds the old file's lock holds nothing. Taking
//! the lock waits at most until the run's deadline, then fails with one line.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags, CWD};
use rustix::io::Errno;

use crate::agent::error::AgentError;

/// How often a held lock is tried again.
const POLL: Duration = Duration::from_millis(100);

/// Takes the run lock in `state_dir`, waiting until `deadline` at most; held until the
/// returned descriptor is dropped. `run_timeout` is named when the wait is given up.
pub(super) fn lock(state_dir: &Path, deadline: Instant, run_timeout: u64) -> Result<OwnedFd, AgentError> {
    let path = state_dir.join("lock");
    let err = |source: std::io::Error| AgentError::Lock {
        path: path.clone(),
        source,
    };
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let dir = rustix::fs::openat(CWD, state_dir, dir_flags, Mode::empty()).map_err(|e| err(e.into()))?;
    loop {
        let file = open_own(&dir).map_err(|e| err(e.into()))?;
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            // Locked: still the file at `lock` (another run may have replaced a bad one
            // in between)? Else try again with the one that is there now.
            Ok(()) if same_file(&dir, &file) => return Ok(file),
            Ok(()) => continue,
            Err(Errno::WOULDBLOCK) | Err(Errno::INTR) => {}
            Err(e) => return Err(err(e.into())),
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "another run held it until this run's deadline (run_timeout = {run_timeout} s); \
                     the next run tries again"
                ),
            )));
        }
        std::thread::sleep(POLL.min(deadline - now));
    }
}

/// Opens (or creates) `lock` in `dir`: a regular file of ours, mode 0600, one link. Anything
/// else there is removed and a new file created.
fn open_own(dir: &OwnedFd) -> rustix::io::Result<OwnedFd> {
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    for _ in 0..8 {
        let file = match rustix::fs::openat(dir, "lock", flags, Mode::from_raw_mode(0o600)) {
            Ok(file) => file,
            // A symlink (ELOOP), a fifo, a directory: not ours to use; replaced.
            Err(Errno::LOOP) | Err(Errno::ISDIR) | Err(Errno::NXIO) => {
                remove(dir)?;
                continue;
            }
            Err(e) => return Err(e),
        };
        let st = rustix::fs::fstat(&file)?;
        let ours = FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
            && st.st_uid == rustix::process::geteuid().as_raw()
            && st.st_nlink == 1
            && st.st_mode & 0o077 == 0;
        if ours {
            rustix::fs::fchmod(&file, Mode::from_raw_mode(0o600))?;
            return Ok(file);
        }
        remove(dir)?;
    }
    Err(Errno::AGAIN)
}

fn remove(dir: &OwnedFd) -> rustix::io::Result<()> {
    match rustix::fs::unlinkat(dir, "lock", AtFlags::empty()) {
        Err(Errno::ISDIR) => rustix::fs::unlinkat(dir, "lock", AtFlags::REMOVEDIR),
        Err(Errno::NOENT) => Ok(()),
        other => other,
    }
}

/// Whether `file` is (still) what `lock` in `dir` names.
fn same_file(dir: &OwnedFd, file: &OwnedFd) -> bool {
    match (
        rustix::fs::statat(dir, "lock", AtFlags::SYMLINK_NOFOLLOW),
        rustix::fs::fstat(file),
    ) {
        (Ok(a), Ok(b)) => (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::time::{Duration, Instant};

    use super::lock;

    #[test]
    fn an_open_lock_file_is_replaced_and_a_held_lock_waits_until_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        // An older install's lock, readable by all, held by someone who opened it.
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let theirs = std::fs::File::open(&path).unwrap();
        rustix::fs::flock(&theirs, rustix::fs::FlockOperation::LockShared).unwrap();
        let soon = Instant::now() + Duration::from_secs(5);
        let held = lock(dir.path(), soon, 5).expect("a new lock file, not theirs");
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o600);
        assert_ne!(meta.ino(), theirs.metadata().unwrap().ino());
        // While one run holds it, another gives up at its deadline with one line.
        let started = Instant::now();
        let e = lock(dir.path(), started + Duration::from_millis(300), 7).unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(started.elapsed() < Duration::from_secs(3));
        let line = e.to_string();
        assert!(
            line.ends_with(
                "another run held it until this run's deadline (run_timeout = 7 s); the next run tries again"
            ),
            "{line}"
        );
        drop(held);
        lock(dir.path(), Instant::now(), 7).expect("free again");
        // A symlink planted there is removed, never followed.
        let outside = dir.path().join("outside");
        std::fs::write(&outside, b"keep").unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&outside, &path).unwrap();
        lock(dir.path(), Instant::now(), 7).unwrap();
        assert!(!std::fs::symlink_metadata(&path).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(&outside).unwrap(), b"keep");
    }
}
