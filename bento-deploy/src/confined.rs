//! A directory on the server, read and written without ever leaving it.
//!
//! Whoever can write a server directory — a compromised server, or a host writing its own
//! `logs/` — may plant symlinks, FIFOs, device nodes or huge files there. So every path
//! below a [`Confined`] directory is resolved beneath its open file descriptor with no
//! symlink followed (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, or one
//! `O_NOFOLLOW` component at a time on kernels without `openat2`), only regular files are
//! read, every read has a limit, and writes go to a fresh temp name (`O_EXCL`) that is then
//! renamed over the target, so a planted file or link is replaced, never written through.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use bento_secrets::names::RelPath;
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};

use crate::dirents::{Dir, Entry};

/// An open directory whose descendants are reached without following symlinks.
#[derive(Debug)]
pub struct Confined {
    fd: OwnedFd,
}

/// Refuses anything but one plain name (no `/`, not `.` or `..`, not empty).
fn check_name(name: &str) -> io::Result<()> {
    check_rel(name)?;
    if name.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a single name", name.escape_default()),
        ));
    }
    Ok(())
}

/// An error of the file system on `rel`, naming it.
fn at(rel: &str, e: rustix::io::Errno) -> io::Error {
    io::Error::new(
        io::Error::from(e).kind(),
        format!("{}: {e}", rel.escape_default()),
    )
}

/// What a confined read refuses, besides the file system's own errors.
fn refused(rel: &str, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: refused: {why}", rel.escape_default()),
    )
}

/// The error of a file larger than its limit (kind `FileTooLarge`).
pub fn too_large(rel: &str, limit: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        format!("{}: larger than {limit} bytes", rel.escape_default()),
    )
}

/// Copies at most `limit` bytes of `reader` into `sink`; more is refused (kind
/// `FileTooLarge`) as soon as the first byte past the limit arrives.
fn copy_bounded(reader: &mut dyn Read, rel: &str, limit: u64, sink: &mut dyn Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut copied = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(copied),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        copied += n as u64;
        if copied > limit {
            return Err(too_large(rel, limit));
        }
        sink.write_all(&buf[..n])?;
    }
}

/// Refuses relative paths that could name something outside: empty, absolute, `.`, `..`,
/// empty components, NUL.
pub fn check_rel(rel: &str) -> io::Result<()> {
    rel.parse::<RelPath>()
        .map(drop)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
}

impl Confined {
    /// Opens the directory at `path`, a trusted location (the server root from the
    /// admin's or the host's own configuration): everything below it is confined.
    pub fn open(path: &Path) -> io::Result<Confined> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        Ok(Confined {
            fd: rustix::fs::open(path, flags, Mode::empty())?,
        })
    }

    /// Opens `rel` below this directory, following no symlink on the way.
    fn open_beneath(&self, rel: &str, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        check_rel(rel)?;
        let flags = flags | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        let opened = match rustix::fs::openat2(&self.fd, rel, flags, mode, resolve) {
            Err(rustix::io::Errno::NOSYS) => self.open_by_components(rel, flags, mode),
            other => other,
        };
        let is_link = || {
            rustix::fs::statat(&self.fd, rel, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
        };
        opened.map_err(|e| match e {
            rustix::io::Errno::LOOP | rustix::io::Errno::XDEV => {
                refused(rel, "it is or passes through a symlink")
            }
            // `O_DIRECTORY | O_NOFOLLOW` on a symlink says "not a directory".
            rustix::io::Errno::NOTDIR if is_link() => refused(rel, "it is a symlink"),
            e => at(rel, e),
        })
    }

    /// `openat2` for kernels older than 5.6: one `O_NOFOLLOW` component at a time
    /// (`check_rel` already refused `.` and `..`).
    fn open_by_components(&self, rel: &str, flags: OFlags, mode: Mode) -> rustix::io::Result<OwnedFd> {
        let (parents, last) = rel.rsplit_once('/').unwrap_or(("", rel));
        let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        let mut dir: Option<OwnedFd> = None;
        for component in parents.split('/').filter(|c| !c.is_empty()) {
            let at = dir.as_ref().map_or(self.fd.as_fd(), |d| d.as_fd());
            dir = Some(rustix::fs::openat(at, component, dir_flags, Mode::empty())?);
        }
        let at = dir.as_ref().map_or(self.fd.as_fd(), |d| d.as_fd());
        rustix::fs::openat(at, last, flags, mode)
    }

    /// The directory `rel` below this one (a symlink on the way is refused).
    pub fn dir(&self, rel: &str) -> io::Result<Confined> {
        let fd = self.open_beneath(rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
        Ok(Confined { fd })
    }

    /// The regular file `rel`, opened for reading, and its size. Anything else — a
    /// symlink, a FIFO (opened without blocking), a device, a directory — is refused.
    pub fn open_file(&self, rel: &str) -> io::Result<(std::fs::File, u64)> {
        let fd = self.open_beneath(rel, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())?;
        let stat = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(refused(rel, "not a regular file"));
        }
        // Back to blocking reads: a regular file never blocks, but be plain about it.
        rustix::fs::fcntl_setfl(&fd, OFlags::empty())?;
        Ok((std::fs::File::from(fd), u64::try_from(stat.st_size).unwrap_or(0)))
    }

    /// The whole regular file `rel`, refused (kind `FileTooLarge`) past `limit` bytes —
    /// also when it grows while being read.
    pub fn read(&self, rel: &str, limit: u64) -> io::Result<Vec<u8>> {
        let (file, size) = self.open_file(rel)?;
        if size > limit {
            return Err(too_large(rel, limit));
        }
        // Read straight into a buffer of the file's size: `bento status` reads tens of
        // thousands of small files, and a copy through a scratch buffer shows there.
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        file.take(limit + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > limit {
            return Err(too_large(rel, limit));
        }
        Ok(bytes)
    }

    /// Copies the regular file `rel` into `sink`, as [`Confined::read`] reads it; returns
    /// how many bytes were copied.
    pub fn read_to(&self, rel: &str, limit: u64, sink: &mut dyn Write) -> io::Result<u64> {
        let (mut file, size) = self.open_file(rel)?;
        if size > limit {
            return Err(too_large(rel, limit));
        }
        copy_bounded(&mut file, rel, limit, sink)
    }

    /// The text of the symlink `rel` (not followed; its parents are reached without
    /// following any either).
    pub fn read_link(&self, rel: &str) -> io::Result<std::path::PathBuf> {
        let (parent, name) = self.parent_of(rel)?;
        let dir = parent.as_ref().unwrap_or(self);
        let target = rustix::fs::readlinkat(&dir.fd, name, Vec::new()).map_err(|e| at(rel, e))?;
        Ok(std::path::PathBuf::from(
            <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(target.into_bytes()),
        ))
    }

    /// The type of `rel`, not following a link (its parents are reached without
    /// following any either).
    pub fn kind(&self, rel: &str) -> io::Result<FileType> {
        let (parent, name) = self.parent_of(rel)?;
        let dir = parent.as_ref().unwrap_or(self);
        let stat = rustix::fs::statat(&dir.fd, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| at(rel, e))?;
        Ok(FileType::from_raw_mode(stat.st_mode))
    }

    /// The entries of directory `rel` (`""`: this one), with their types, refused (error
    /// [`io::ErrorKind::InvalidData`]) past `limit` entries.
    pub fn entries_at_most(&self, rel: &str, limit: usize) -> io::Result<Vec<Entry>> {
        if rel.is_empty() {
            let fd = rustix::fs::openat(
                &self.fd,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            return Dir::from_fd(fd).entries_at_most(limit);
        }
        Dir::from_fd(self.dir(rel)?.fd).entries_at_most(limit)
    }

    /// Replaces the file `rel` with `bytes` (mode `mode`): written under a fresh temp name
    /// in the same directory (`O_EXCL`: never an existing file, never through a link),
    /// synced, then renamed over `rel`. Whatever `rel` was — a file, a planted symlink — is
    /// replaced, not written through.
    pub fn replace(&self, rel: &str, bytes: &[u8], mode: u32) -> io::Result<()> {
        self.replace_with(rel, mode, |file| file.write_all(bytes))
    }

    /// As [`Confined::replace`], the content written by `write` into the temp file (which
    /// is then synced and renamed over `rel`): for content streamed from elsewhere.
    pub fn replace_with(
        &self,
        rel: &str,
        mode: u32,
        write: impl FnOnce(&mut std::fs::File) -> io::Result<()>,
    ) -> io::Result<()> {
        let (parent, name) = self.parent_of(rel)?;
        let dir = parent.as_ref().unwrap_or(self);
        let tmp = dir.create_temp(name, mode)?;
        let written = (|| {
            let mut file = std::fs::File::from(rustix::fs::openat(
                &dir.fd,
                tmp.as_str(),
                OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?);
            write(&mut file)?;
            file.sync_all()?;
            rustix::fs::renameat(&dir.fd, tmp.as_str(), &dir.fd, name)?;
            Ok(())
        })();
        if written.is_err() {
            let _ = rustix::fs::unlinkat(&dir.fd, tmp.as_str(), rustix::fs::AtFlags::empty());
        }
        written.map_err(|e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", rel.escape_default())))
    }

    /// Creates the directory `rel` (mode `mode`) unless it exists, without following a
    /// symlink on the way; an existing symlink at `rel` is refused.
    pub fn create_dir(&self, rel: &str, mode: u32) -> io::Result<Confined> {
        let (parent, name) = self.parent_of(rel)?;
        let dir = parent.as_ref().unwrap_or(self);
        match rustix::fs::mkdirat(&dir.fd, name, Mode::from_raw_mode(mode)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(at(rel, e)),
        }
        self.dir(rel)
    }

    /// Flushes the file system this directory is on to disk (one `syncfs`).
    pub fn sync(&self) -> io::Result<()> {
        Ok(rustix::fs::syncfs(&self.fd)?)
    }

    /// This directory's own status (`fstat` of its descriptor).
    pub fn stat(&self) -> io::Result<rustix::fs::Stat> {
        Ok(rustix::fs::fstat(&self.fd)?)
    }

    /// Creates the directory `name` (one name) with `mode`, failing when anything is there
    /// already (kind `AlreadyExists`), and opens it without following a link. The opened
    /// directory is checked (`fstat` of the descriptor) to be a directory owned by this
    /// process's user: one that whoever else can write here swapped in between is refused.
    /// Everything done through the returned `Confined` happens in the directory made here,
    /// wherever it is renamed to meanwhile.
    pub fn create_own_dir(&self, name: &str, mode: u32) -> io::Result<Confined> {
        check_name(name)?;
        rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(mode)).map_err(|e| at(name, e))?;
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => {
                refused(name, "replaced by a link or a file right after it was made")
            }
            e => at(name, e),
        })?;
        let stat = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::Directory
            || stat.st_uid != rustix::process::geteuid().as_raw()
        {
            return Err(refused(
                name,
                "replaced by someone else's directory right after it was made",
            ));
        }
        let dir = Confined { fd };
        dir.set_mode(mode)?;
        Ok(dir)
    }

    /// Creates the regular file `name` (one name), exclusively (`O_EXCL`, never through a
    /// link, never an existing file), with `mode` set on it whatever the umask; returns it
    /// open for writing.
    pub fn create_new_file(&self, name: &str, mode: u32) -> io::Result<std::fs::File> {
        check_name(name)?;
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd =
            rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(mode)).map_err(|e| at(name, e))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
        Ok(std::fs::File::from(fd))
    }

    /// Sets this directory's mode (`fchmod` of its descriptor).
    pub fn set_mode(&self, mode: u32) -> io::Result<()> {
        Ok(rustix::fs::fchmod(&self.fd, Mode::from_raw_mode(mode))?)
    }

    /// Hands this directory to `uid:gid` (`fchown` of its descriptor).
    pub fn set_owner(&self, uid: u32, gid: u32) -> io::Result<()> {
        set_owner(&self.fd, uid, gid)
    }

    /// Renames the entry `from` of this directory to `to` (both single names; neither is
    /// followed if it is a link). With `replace` false, an existing `to` is an error of kind
    /// `AlreadyExists` (`RENAME_NOREPLACE`), checked by the kernel in the same step.
    pub fn rename(&self, from: &str, to: &str, replace: bool) -> io::Result<()> {
        check_name(from)?;
        check_name(to)?;
        let flags = if replace {
            rustix::fs::RenameFlags::empty()
        } else {
            rustix::fs::RenameFlags::NOREPLACE
        };
        rustix::fs::renameat_with(&self.fd, from, &self.fd, to, flags).map_err(|e| at(to, e))
    }

    /// Makes `to` a new name (a hard link) of the regular file `from`, both below this
    /// directory; no link is followed on the way to either, and `from` must be a regular
    /// file. An entry at `to` is refused (kind `AlreadyExists`).
    pub fn hard_link(&self, from: &str, to: &str) -> io::Result<()> {
        let (from_dir, from_name) = self.parent_of(from)?;
        let (to_dir, to_name) = self.parent_of(to)?;
        let from_at = from_dir.as_ref().unwrap_or(self);
        let stat = rustix::fs::statat(&from_at.fd, from_name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| at(from, e))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(refused(from, "not a regular file"));
        }
        let to_at = to_dir.as_ref().unwrap_or(self);
        rustix::fs::linkat(
            &from_at.fd,
            from_name,
            &to_at.fd,
            to_name,
            rustix::fs::AtFlags::empty(),
        )
        .map_err(|e| at(to, e))
    }

    /// The directory holding `rel` (`None`: this one) and `rel`'s last name.
    fn parent_of<'r>(&self, rel: &'r str) -> io::Result<(Option<Confined>, &'r str)> {
        check_rel(rel)?;
        Ok(match rel.rsplit_once('/') {
            Some((parent, name)) => (Some(self.dir(parent)?), name),
            None => (None, rel),
        })
    }

    /// Removes the entry `name` (one name) and, when it is a directory, everything in it;
    /// no link is followed (a link is removed itself). Nothing there is no error. Whoever
    /// else writes here chose the tree: it is refused past 64 levels or a million entries
    /// in one directory, rather than exhausting the stack or memory.
    pub fn remove_tree(&self, name: &str) -> io::Result<()> {
        self.remove_tree_at(name, 0)
    }

    fn remove_tree_at(&self, name: &str, depth: usize) -> io::Result<()> {
        const MAX_DEPTH: usize = 64;
        const MAX_ENTRIES: usize = 1_000_000;
        check_name(name)?;
        if depth > MAX_DEPTH {
            return Err(refused(name, "nested more than 64 levels deep"));
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let unlink = |flags| match rustix::fs::unlinkat(&self.fd, name, flags) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(at(name, e)),
        };
        match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => {
                let dir = Confined { fd };
                for entry in dir.entries_at_most("", MAX_ENTRIES)? {
                    if let Some(child) = entry.name.to_str() {
                        dir.remove_tree_at(child, depth + 1)?;
                    } else {
                        return Err(refused(name, "holds a name that is not UTF-8"));
                    }
                }
                unlink(rustix::fs::AtFlags::REMOVEDIR)
            }
            Err(rustix::io::Errno::NOENT) => Ok(()),
            // A file, a link (not followed), a FIFO: removed itself.
            Err(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => unlink(rustix::fs::AtFlags::empty()),
            Err(e) => Err(at(name, e)),
        }
    }

    /// Creates an empty file under a name no one else can have picked
    /// (`.<name>.<pid>.<n>.tmp`, `O_EXCL`), and returns that name.
    fn create_temp(&self, name: &str, mode: u32) -> io::Result<String> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        for _ in 0..64 {
            let tmp = temp_name(name);
            match rustix::fs::openat(&self.fd, tmp.as_str(), flags, Mode::from_raw_mode(mode)) {
                Ok(_) => return Ok(tmp),
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("no free temp name for `{}`", name.escape_default()),
        ))
    }
}

/// A temp name for `name` (one name) that nobody else picked: `.<name>.<pid>.<n><ns>.tmp`
/// (to be created exclusively, so a clash is only retried).
pub(crate) fn temp_name(name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(".{name}.{}.{n}{nanos:x}.tmp", std::process::id())
}

/// Hands the open file or directory `fd` to `uid:gid` (`fchown`: nothing is looked up by
/// name, so nothing can be swapped in between).
pub fn set_owner(fd: impl AsFd, uid: u32, gid: u32) -> io::Result<()> {
    let uid = rustix::fs::Uid::from_raw(uid);
    let gid = rustix::fs::Gid::from_raw(gid);
    Ok(rustix::fs::fchown(fd, Some(uid), Some(gid))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn reads_refuse_links_special_files_and_big_files() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "outside").unwrap();
        std::fs::create_dir(dir.path().join("logs")).unwrap();
        std::fs::write(dir.path().join("logs/ok"), "fine").unwrap();
        symlink(outside.path().join("secret"), dir.path().join("logs/link")).unwrap();
        symlink(outside.path(), dir.path().join("linkdir")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.path().join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        std::fs::write(dir.path().join("big"), vec![b'x'; 100]).unwrap();

        let c = Confined::open(dir.path()).unwrap();
        assert_eq!(c.read("logs/ok", 10).unwrap(), b"fine");
        assert!(c.read("logs/link", 100).is_err());
        assert!(c.read("linkdir/secret", 100).is_err());
        assert!(c.dir("linkdir").err().unwrap().to_string().contains("symlink"));
        // A FIFO is refused at once rather than blocking the reader forever.
        assert!(c
            .read("fifo", 100)
            .unwrap_err()
            .to_string()
            .contains("not a regular file"));
        assert!(c.read("logs", 100).is_err());
        assert_eq!(c.read("big", 99).unwrap_err().kind(), io::ErrorKind::FileTooLarge);
        assert_eq!(c.read("big", 100).unwrap().len(), 100);
        for bad in ["../x", "/etc/passwd", "a//b", "./a", ""] {
            assert!(c.read(bad, 10).is_err(), "{bad}");
        }
        let names: Vec<String> = c
            .entries_at_most("logs", usize::MAX)
            .unwrap()
            .into_iter()
            .map(|e| e.name.into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn replace_never_writes_through_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("shadow");
        std::fs::write(&target, "root:x").unwrap();
        std::fs::create_dir(dir.path().join("logs")).unwrap();
        symlink(&target, dir.path().join("logs/seen.json")).unwrap();
        symlink(&target, dir.path().join("logs/seen.json.tmp")).unwrap();
        let c = Confined::open(dir.path()).unwrap();
        c.replace("logs/seen.json", b"{}", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "root:x");
        assert_eq!(std::fs::read(dir.path().join("logs/seen.json")).unwrap(), b"{}");
        assert!(!std::fs::symlink_metadata(dir.path().join("logs/seen.json"))
            .unwrap()
            .file_type()
            .is_symlink());

        // `logs` itself a symlink: refused, nothing written outside.
        std::fs::remove_dir_all(dir.path().join("logs")).unwrap();
        symlink(outside.path(), dir.path().join("logs")).unwrap();
        assert!(c.replace("logs/x", b"{}", 0o644).is_err());
        assert!(!outside.path().join("x").exists());
        let left: Vec<_> = std::fs::read_dir(outside.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temp file left outside");
    }
}
