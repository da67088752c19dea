//! Directory listings straight from `getdents64`, with each entry's type. For the paths that walk thousands of small
//! directories (`bento status`, `bento deploy`): `std::fs::read_dir` adds an `fstat` per
//! directory, and each absolute path is looked up again component by component.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir, Stat};

/// An open directory.
pub struct Dir {
    fd: OwnedFd,
}

/// One entry of a directory (never `.` or `..`).
pub struct Entry {
    /// Its name.
    pub name: OsString,
    /// Its type as the listing gives it: `None` when the file system does not say.
    pub kind: Option<FileType>,
}

impl Dir {
    /// Opens the directory at `path`.
    pub fn open(path: &Path) -> io::Result<Dir> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        Ok(Dir {
            fd: rustix::fs::open(path, flags, Mode::empty())?,
        })
    }

    /// A directory already open (by [`crate::confined::Confined`]).
    pub(crate) fn from_fd(fd: OwnedFd) -> Dir {
        Dir { fd }
    }

    /// Every entry, in the order the file system gives them.
    pub fn entries(&self) -> io::Result<Vec<Entry>> {
        self.entries_at_most(usize::MAX)
    }

    /// As [`Dir::entries`], refused (error [`io::ErrorKind::InvalidData`]) past `limit`
    /// entries: a directory someone else fills is never read to its end.
    pub fn entries_at_most(&self, limit: usize) -> io::Result<Vec<Entry>> {
        let mut buf = Vec::with_capacity(32 * 1024);
        let mut raw = RawDir::new(&self.fd, buf.spare_capacity_mut());
        let mut entries = Vec::new();
        while let Some(entry) = raw.next() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            if entries.len() == limit {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("holds more than {limit} entries"),
                ));
            }
            let kind = entry.file_type();
            entries.push(Entry {
                name: OsStr::from_bytes(name).to_owned(),
                kind: (kind != FileType::Unknown).then_some(kind),
            });
        }
        Ok(entries)
    }

    /// `stat` of the entry `name`, not following a symlink.
    pub fn stat(&self, name: &OsStr) -> io::Result<Stat> {
        Ok(rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_stops_at_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..5 {
            std::fs::write(dir.path().join(format!("r{i}")), "").unwrap();
        }
        let open = || Dir::open(dir.path()).unwrap();
        assert_eq!(open().entries_at_most(5).unwrap().len(), 5);
        let e = open().entries_at_most(4).err().expect("refused past the limit");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(e.to_string(), "holds more than 4 entries");
    }

    #[test]
    fn lists_with_types_and_reads_relative() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "hello").unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::os::unix::fs::symlink("a", dir.path().join("l")).unwrap();
        let d = Dir::open(dir.path()).unwrap();
        let mut entries: Vec<(String, Option<FileType>)> = d
            .entries()
            .unwrap()
            .into_iter()
            .map(|e| (e.name.into_string().unwrap(), e.kind))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "d", "l"]);
        assert_eq!(d.stat(OsStr::new("a")).unwrap().st_size, 5);
        assert_eq!(
            FileType::from_raw_mode(d.stat(OsStr::new("l")).unwrap().st_mode),
            FileType::Symlink
        );
    }
}
