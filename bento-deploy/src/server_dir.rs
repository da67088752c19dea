//! A server directory, read and written the same way wherever it is: on this machine
//! ([`LocalDir`]) or behind the publishing account's sftp session
//! ([`crate::publish::remote::RemoteDir`]). The layout ([`crate::layout`]), the binary
//! cache ([`crate::publish::cache_dir`]) and `bento status` are written once, on top.
//!
//! What is read here (`current`, manifests, a host's `logs/`) is written by others — a
//! host writes its own `logs/`, a publishing account its `generations/` — so every read is
//! bounded, of a regular file only, and no symlink is followed: a link is refused, or read
//! as a link. Every write creates a new name exclusively or replaces one by rename, never
//! writing through what someone planted. Where the server is comes from
//! [`crate::fleet::location`].

use std::io;
use std::path::{Path, PathBuf};

use crate::confined::Confined;

/// What a path on the server is, not following a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Link,
    /// Anything else (FIFO, socket, device).
    Other,
}

impl Kind {
    fn of(t: rustix::fs::FileType) -> Kind {
        use rustix::fs::FileType;
        match t {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Link,
            _ => Kind::Other,
        }
    }
}

/// A directory of the server. Relative paths (`a/b`) stay below it: empty, absolute, `.`
/// and `..` components are refused; `name` is one component.
pub trait ServerDir: Send + Sync {
    /// The whole regular file `rel`, refused (kind `FileTooLarge`) past `limit` bytes; a
    /// link, FIFO, device or directory is refused (kind `InvalidData`).
    fn read(&self, rel: &str, limit: u64) -> io::Result<Vec<u8>>;
    /// The text of the symlink `rel`, never followed.
    fn read_link(&self, rel: &str) -> io::Result<PathBuf>;
    /// What `rel` is; `None` when nothing is there.
    fn kind(&self, rel: &str) -> io::Result<Option<Kind>>;
    /// The entries of the directory `rel` (`""`: this one) whose names are UTF-8, with
    /// their kinds; refused (kind `InvalidData`) past `limit` entries.
    fn entries_at_most(&self, rel: &str, limit: usize) -> io::Result<Vec<(String, Kind)>>;
    /// The directory `rel` below this one; a link is refused.
    fn dir(&self, rel: &str) -> io::Result<Box<dyn ServerDir>>;

    /// Creates the directory `name` here, exclusively (kind `AlreadyExists` when anything
    /// is there, a link included), and opens it. It stays this account's alone (0700)
    /// until [`ServerDir::seal`]; on this machine, what is written through the returned
    /// directory lands in the one made here, wherever someone moves it meanwhile.
    fn create_dir(&self, name: &str) -> io::Result<Box<dyn ServerDir>>;
    /// Opens up a directory that [`ServerDir::create_dir`] made, once nothing more is
    /// written in it: gives it `mode` and hands it over as its files were.
    fn seal(&self, mode: u32) -> io::Result<()>;
    /// Creates the regular file `name` holding `bytes`, with `mode`, exclusively (never an
    /// existing file, never through a link).
    fn create_new(&self, name: &str, bytes: &[u8], mode: u32) -> io::Result<()>;
    /// Replaces the file `rel` with what `from` yields, with `mode`: written under a fresh
    /// temp name beside it (`.<name>.<…>.tmp`), flushed, then renamed over `rel`, so a
    /// file or link there is replaced, never written through.
    fn replace_from(&self, rel: &str, from: &mut dyn io::Read, mode: u32) -> io::Result<()>;
    /// Renames the entry `from` of this directory to `to` (single names, neither followed).
    /// Without `replace`, an entry at `to` is refused (kind `AlreadyExists`).
    fn rename(&self, from: &str, to: &str, replace: bool) -> io::Result<()>;
    /// Makes `to` a new name of the regular file `from` (a hard link; over sftp the server
    /// needs `hardlink@openssh.com`).
    fn hard_link(&self, from: &str, to: &str) -> io::Result<()>;
    /// Removes `name` and, when it is a directory, all it holds, following no link; nothing
    /// there is no error.
    fn remove_tree(&self, name: &str) -> io::Result<()>;
    /// Makes everything written so far durable.
    fn sync(&self) -> io::Result<()>;
    /// Whether a rename here is a copy (object storage): then what is written in place by
    /// one request (a PUT) is already atomic, and the layout writes a generation straight
    /// into its place and replaces `current` by one write, instead of renaming.
    fn renames_copy(&self) -> bool {
        false
    }
    /// Where the store can say it (object storage): each file below the directory `rel`,
    /// at any depth, with the MD5 of its bytes (hex). `None` elsewhere.
    fn md5s(&self, rel: &str) -> io::Result<Option<std::collections::BTreeMap<String, String>>> {
        let _ = rel;
        Ok(None)
    }
}

/// A directory of a server root on this machine, reached through [`Confined`].
///
/// Where root writes into a directory another account owns (a publishing account's
/// `generations/` or `cache/`, `bento server setup`), everything it makes there is handed
/// to that account, which must be able to prune it later: files as they are made, a
/// directory from [`ServerDir::create_dir`] when it is sealed.
#[derive(Debug)]
pub struct LocalDir {
    dir: Confined,
    /// Who gets what is made here: `None` unless this process is root and the directory
    /// (or the one it was made in) is another account's.
    hand_to: Option<(u32, u32)>,
}

impl LocalDir {
    /// Opens the directory at `path`, a trusted location (the server root from the admin's
    /// configuration or command line).
    pub fn open(path: &Path) -> io::Result<LocalDir> {
        LocalDir::from(Confined::open(path)?, None)
    }

    fn from(dir: Confined, inherited: Option<(u32, u32)>) -> io::Result<LocalDir> {
        let stat = dir.stat()?;
        let own =
            (rustix::process::geteuid().is_root() && stat.st_uid != 0).then_some((stat.st_uid, stat.st_gid));
        Ok(LocalDir {
            dir,
            hand_to: own.or(inherited),
        })
    }

    /// The open directory.
    pub fn confined(&self) -> &Confined {
        &self.dir
    }

    fn hand_over(&self, fd: impl std::os::fd::AsFd) -> io::Result<()> {
        match self.hand_to {
            Some((uid, gid)) => crate::confined::set_owner(fd, uid, gid),
            None => Ok(()),
        }
    }
}

impl ServerDir for LocalDir {
    fn read(&self, rel: &str, limit: u64) -> io::Result<Vec<u8>> {
        self.dir.read(rel, limit)
    }

    fn read_link(&self, rel: &str) -> io::Result<PathBuf> {
        self.dir.read_link(rel)
    }

    fn kind(&self, rel: &str) -> io::Result<Option<Kind>> {
        match self.dir.kind(rel) {
            Ok(t) => Ok(Some(Kind::of(t))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn entries_at_most(&self, rel: &str, limit: usize) -> io::Result<Vec<(String, Kind)>> {
        let listed = self.dir.entries_at_most(rel, limit)?;
        let named = listed
            .into_iter()
            .filter_map(|entry| Some((entry.name.into_string().ok()?, entry.kind)));
        named
            .map(|(name, kind)| match kind {
                Some(t) => Ok((name, Kind::of(t))),
                // The file system did not say: asked, not following a link.
                None => {
                    let path = format!("{rel}/{name}");
                    let kind = self.kind(path.trim_start_matches('/'))?;
                    Ok((name, kind.unwrap_or(Kind::Other)))
                }
            })
            .collect()
    }

    fn dir(&self, rel: &str) -> io::Result<Box<dyn ServerDir>> {
        Ok(Box::new(LocalDir::from(self.dir.dir(rel)?, self.hand_to)?))
    }

    fn create_dir(&self, name: &str) -> io::Result<Box<dyn ServerDir>> {
        let made = self.dir.create_own_dir(name, 0o700)?;
        Ok(Box::new(LocalDir {
            dir: made,
            hand_to: self.hand_to,
        }))
    }

    fn seal(&self, mode: u32) -> io::Result<()> {
        if let Some((uid, gid)) = self.hand_to {
            self.dir.set_owner(uid, gid)?;
        }
        self.dir.set_mode(mode)
    }

    fn create_new(&self, name: &str, bytes: &[u8], mode: u32) -> io::Result<()> {
        use std::io::Write;
        let mut file = self.dir.create_new_file(name, mode)?;
        self.hand_over(&file)?;
        file.write_all(bytes)
    }

    fn replace_from(&self, rel: &str, from: &mut dyn io::Read, mode: u32) -> io::Result<()> {
        self.dir.replace_with(rel, mode, |file| {
            self.hand_over(&*file)?;
            io::copy(from, file).map(drop)
        })
    }

    fn rename(&self, from: &str, to: &str, replace: bool) -> io::Result<()> {
        self.dir.rename(from, to, replace)
    }

    fn hard_link(&self, from: &str, to: &str) -> io::Result<()> {
        self.dir.hard_link(from, to)
    }

    fn remove_tree(&self, name: &str) -> io::Result<()> {
        self.dir.remove_tree(name)
    }

    fn sync(&self) -> io::Result<()> {
        self.dir.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_hard_link_is_made_of_a_regular_file_only_and_never_over_an_entry() {
        let root = tempfile::tempdir().unwrap();
        let dir = LocalDir::open(root.path()).unwrap();
        dir.create_new("a", b"a", 0o644).unwrap();
        dir.create_dir("sub").unwrap().seal(0o755).unwrap();
        dir.hard_link("a", "sub/a").unwrap();
        let meta = std::fs::metadata(root.path().join("sub/a")).unwrap();
        assert_eq!(
            (meta.nlink(), meta.ino()),
            (2, std::fs::metadata(root.path().join("a")).unwrap().ino())
        );
        let e = dir.hard_link("a", "sub/a").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        std::os::unix::fs::symlink("/etc/hostname", root.path().join("l")).unwrap();
        let e = dir.hard_link("l", "sub/l").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        assert!(dir.hard_link("../a", "b").is_err());
    }

    #[test]
    fn what_root_makes_in_another_accounts_directory_is_handed_to_it_when_sealed() {
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let theirs = root.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(64980), Some(64981)).unwrap();
        let dir = LocalDir::open(root.path()).unwrap().dir("theirs").unwrap();
        let made = dir.create_dir("d").unwrap();
        made.create_new("f", b"f", 0o644).unwrap();
        let owner = |rel: &str| {
            let m = std::fs::symlink_metadata(theirs.join(rel)).unwrap();
            (m.uid(), m.gid(), m.mode() & 0o7777)
        };
        // Private to root while it is being written; its files already theirs.
        assert_eq!(owner("d"), (0, 0, 0o700));
        assert_eq!(owner("d/f"), (64980, 64981, 0o644));
        made.seal(0o755).unwrap();
        assert_eq!(owner("d"), (64980, 64981, 0o755));
        // In root's own directory, nothing is handed over.
        let own = LocalDir::open(root.path()).unwrap();
        own.create_new("mine", b"", 0o600).unwrap();
        let m = std::fs::metadata(root.path().join("mine")).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o600));
    }
}
