//! The private directory that holds a secret's plaintext while an admin edits it, and the
//! removal of those left behind by a bento that was killed (SIGKILL, a crash, power off
//! aside: a RAM filesystem forgets them then).
//!
//! A scratch dir is named `bento-edit.<pid>.<start>.<name>.<random>`: the pid of the bento
//! that made it and that process's start time (in clock ticks since boot, from
//! `/proc/<pid>/stat`), so that a later bento can tell whether its maker still runs, even
//! when the pid has been reused since. A dir is removed only when it is a real directory
//! (never a symlink, never followed), owned by the current user, and its maker is gone.

use std::path::{Path, PathBuf};

/// What every scratch dir's name starts with.
pub const PREFIX: &str = "bento-edit.";

/// The private directory holding the plaintext; removed when dropped.
#[derive(Debug)]
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// Makes a fresh 0700 dir in `base` for editing secret `name`.
    pub fn new(base: &Path, name: &str) -> std::io::Result<Scratch> {
        let me = std::process::id();
        let start = start_time(me).unwrap_or(0);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{me}.{start}.{name}."))
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(base)?;
        Ok(Scratch { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Removes the scratch dirs in `base` whose bento is gone; returns them. Best effort: a
/// dir that cannot be read or removed is left alone.
pub fn remove_stale(base: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    let me = rustix::process::geteuid().as_raw();
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((pid, start)) = name.to_str().and_then(maker) else {
            continue;
        };
        // `DirEntry::metadata` does not follow a symlink: one is skipped here.
        let Ok(meta) = entry.metadata() else { continue };
        use std::os::unix::fs::MetadataExt;
        if !meta.file_type().is_dir() || meta.uid() != me || alive(pid, start) {
            continue;
        }
        // remove_dir_all removes a symlink put in its place meanwhile, never its target,
        // and follows no symlink inside.
        if std::fs::remove_dir_all(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}

/// The pid and start time in a scratch dir's name.
fn maker(dir_name: &str) -> Option<(u32, u64)> {
    let mut parts = dir_name.strip_prefix(PREFIX)?.splitn(3, '.');
    let pid = parts.next()?.parse().ok()?;
    let start = parts.next()?.parse().ok()?;
    parts.next()?;
    Some((pid, start))
}

/// Does process `pid`, started at `start` (0: unknown), still run? In doubt, yes.
fn alive(pid: u32, start: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => start == 0 || stat_start(&stat) == Some(start),
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}

/// The start time of process `pid`, in clock ticks since boot.
pub fn start_time(pid: u32) -> Option<u64> {
    stat_start(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Field 22 of a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses
/// and may hold spaces and parentheses: fields are counted after its last `)`.
fn stat_start(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_maker() {
        assert_eq!(maker("bento-edit.12.345.db.v2.AbCd"), Some((12, 345)));
        assert_eq!(maker("bento-edit.12.x.db.AbCd"), None);
        assert_eq!(maker("bento-edit-db.AbCd"), None);
        let stat = "7 (a) b) (c) S 1 7 7 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 4242 1 1";
        assert_eq!(stat_start(stat), Some(4242));
        assert!(start_time(std::process::id()).is_some_and(|t| t > 0));
    }

    #[test]
    fn only_dead_makers_dirs_go() {
        let base = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let start = start_time(me).unwrap();
        let mine = Scratch::new(base.path(), "x").unwrap();
        let reused = base.path().join(format!("{PREFIX}{me}.{}.x.1", start + 1));
        std::fs::create_dir(&reused).unwrap();
        let removed = remove_stale(base.path());
        assert_eq!(removed, vec![reused]);
        assert!(mine.path().is_dir());
    }
}
