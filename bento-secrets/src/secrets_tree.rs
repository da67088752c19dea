//! The activated secrets tree, operated through directory file descriptors so that no
//! symlink inside it is ever followed:
//!
//! ```text
//! <root>/secrets.d/            RAM filesystem, 0751
//! <root>/secrets.d/7/<name>    generation 7 (0751), one file per secret
//! <root>/secrets.d/users-3/    generations of needed-for-users secrets (0700)
//! <root>/secrets -> secrets.d/7            switched atomically (symlink + rename)
//! <root>/secrets-for-users -> secrets.d/users-3
//! ```

use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, CWD};
use zeroize::Zeroizing;

use crate::accounts::Owner;

/// The directory holding generations, under the activation root.
pub const STORE_DIR: &str = "secrets.d";
/// Per generation: the specs it was made from (names and attributes, no secrets).
pub const SPECS_FILE: &str = ".specs.json";

/// One family of generations: a link name and a generation-name prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Family {
    /// The symlink under the root: `secrets` or `secrets-for-users`.
    pub link: &'static str,
    /// Prefix of its generation directories: `""` or `"users-"`.
    pub prefix: &'static str,
    /// Mode of its generation directories.
    pub dir_mode: u32,
}

/// The everyday secrets.
pub const SECRETS: Family = Family {
    link: "secrets",
    prefix: "",
    dir_mode: 0o751,
};
/// Secrets needed before users exist (root only).
pub const FOR_USERS: Family = Family {
    link: "secrets-for-users",
    prefix: "users-",
    dir_mode: 0o700,
};

/// The activation root, opened.
pub struct Tree {
    root_path: PathBuf,
    root: OwnedFd,
    store: OwnedFd,
}

fn open_dir(at: impl AsFd, name: &str) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(at, name, flags, Mode::empty())?)
}

impl Tree {
    /// Opens `root` and its `secrets.d` (which must exist: mount it first).
    pub fn open(root: &Path) -> io::Result<Tree> {
        let root_fd = open_dir(CWD, &root.to_string_lossy())?;
        let store = open_dir(&root_fd, STORE_DIR).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "{}/{STORE_DIR}: {e} (refusing to follow a symlink)",
                    root.display()
                ),
            )
        })?;
        Ok(Tree {
            root_path: root.to_path_buf(),
            root: root_fd,
            store,
        })
    }

    /// The path of the stable link of `family`, e.g. `/run/bento/secrets`.
    pub fn link_path(&self, family: Family) -> PathBuf {
        self.root_path.join(family.link)
    }

    /// The generation numbers of `family` that exist.
    pub fn generations(&self, family: Family) -> io::Result<Vec<u64>> {
        let mut out = Vec::new();
        let dir = rustix::fs::Dir::read_from(&self.store)?;
        for entry in dir {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy();
            if let Some(n) = name
                .strip_prefix(family.prefix)
                .and_then(|n| n.parse::<u64>().ok())
            {
                if format!("{}{n}", family.prefix) == name {
                    out.push(n);
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// The generation the link of `family` names, if any.
    pub fn current(&self, family: Family) -> Option<u64> {
        let target = rustix::fs::readlinkat(&self.root, family.link, Vec::new()).ok()?;
        let target = target.to_string_lossy();
        let name = target.strip_prefix(&format!("{STORE_DIR}/"))?;
        name.strip_prefix(family.prefix)?.parse().ok()
    }

    fn gen_name(family: Family, n: u64) -> String {
        format!("{}{n}", family.prefix)
    }

    /// Opens generation `n` for reading.
    pub fn open_generation(&self, family: Family, n: u64) -> io::Result<OwnedFd> {
        open_dir(&self.store, &Self::gen_name(family, n))
    }

    /// Creates generation `n` empty (replacing any leftover of a crashed run, without
    /// following a symlink planted there).
    pub fn create_generation(&self, family: Family, n: u64) -> io::Result<OwnedFd> {
        let name = Self::gen_name(family, n);
        self.remove_generation(family, n)?;
        rustix::fs::mkdirat(&self.store, name.as_str(), Mode::from_raw_mode(0o700))?;
        let fd = open_dir(&self.store, &name)?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(family.dir_mode))?;
        Ok(fd)
    }

    /// Removes generation `n` (a symlink in its place is removed, not followed).
    pub fn remove_generation(&self, family: Family, n: u64) -> io::Result<()> {
        let name = Self::gen_name(family, n);
        match rustix::fs::statat(&self.store, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
            Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory => {
                // std's remove_dir_all does not follow symlinks inside the tree.
                std::fs::remove_dir_all(self.root_path.join(STORE_DIR).join(&name))
            }
            Ok(_) => Ok(rustix::fs::unlinkat(
                &self.store,
                name.as_str(),
                AtFlags::empty(),
            )?),
        }
    }

    /// Makes `<root>/<name>` a symlink to `target` (relative to the root), replacing
    /// whatever is there by rename unless it already is that link.
    pub fn ensure_link(&self, name: &str, target: &str) -> io::Result<()> {
        if let Ok(now) = rustix::fs::readlinkat(&self.root, name, Vec::new()) {
            if now.as_bytes() == target.as_bytes() {
                return Ok(());
            }
        }
        let tmp = format!(".{name}.tmp");
        let _ = rustix::fs::unlinkat(&self.root, tmp.as_str(), AtFlags::empty());
        rustix::fs::symlinkat(target, &self.root, tmp.as_str())?;
        Ok(rustix::fs::renameat(&self.root, tmp.as_str(), &self.root, name)?)
    }

    /// Points the link of `family` at generation `n`, atomically.
    pub fn switch(&self, family: Family, n: u64) -> io::Result<()> {
        let tmp = format!(".{}.tmp", family.link);
        let _ = rustix::fs::unlinkat(&self.root, tmp.as_str(), AtFlags::empty());
        let target = format!("{STORE_DIR}/{}", Self::gen_name(family, n));
        rustix::fs::symlinkat(target.as_str(), &self.root, tmp.as_str())?;
        Ok(rustix::fs::renameat(
            &self.root,
            tmp.as_str(),
            &self.root,
            family.link,
        )?)
    }
}

/// Opens directory `name` inside a generation (never following a symlink).
pub fn open_subdir(dir: &OwnedFd, name: &str) -> io::Result<OwnedFd> {
    open_dir(dir, name)
}

/// Creates directory `name` inside a new generation with `mode`, and opens it.
pub fn create_subdir(dir: &OwnedFd, name: &str, mode: u32) -> io::Result<OwnedFd> {
    rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700))?;
    let fd = open_dir(dir, name)?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
    Ok(fd)
}

/// Reads a regular file of a generation; `None` when absent. A symlink is an error.
pub fn read_file(dir: &OwnedFd, name: &str) -> io::Result<Option<(Zeroizing<Vec<u8>>, rustix::fs::Stat)>> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let st = rustix::fs::fstat(&fd)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(io::Error::other(format!("{name} is not a regular file")));
    }
    let bytes = crate::plaintext::read_all(std::fs::File::from(fd), st.st_size as usize + 1)?;
    Ok(Some((bytes, st)))
}

/// Creates file `name` in `dir` with `content`: created with no permissions, then owner
/// and mode set on the open descriptor, and only then written. Never follows a symlink.
/// `chown` is false when not running as root (a test or demo run).
pub fn write_file(
    dir: &OwnedFd,
    name: &str,
    owner: Owner,
    mode: u32,
    content: &[u8],
    chown: bool,
) -> io::Result<()> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name, flags, Mode::empty())?;
    if chown {
        rustix::fs::fchown(
            &fd,
            Some(rustix::fs::Uid::from_raw(owner.uid)),
            Some(rustix::fs::Gid::from_raw(owner.gid)),
        )?;
    }
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(content)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, Tree) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(STORE_DIR)).unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        (dir, tree)
    }

    #[test]
    fn families_keep_their_own_generations_and_links() {
        let (dir, tree) = tree();
        for n in [3, 1, 2] {
            tree.create_generation(SECRETS, n).unwrap();
        }
        tree.create_generation(FOR_USERS, 7).unwrap();
        // Neither a stray name nor another family's generation is counted.
        std::fs::create_dir(dir.path().join(STORE_DIR).join("01")).unwrap();
        assert_eq!(tree.generations(SECRETS).unwrap(), [1, 2, 3]);
        assert_eq!(tree.generations(FOR_USERS).unwrap(), [7]);
        assert_eq!(tree.current(SECRETS), None);

        tree.switch(SECRETS, 2).unwrap();
        tree.switch(FOR_USERS, 7).unwrap();
        assert_eq!(tree.current(SECRETS), Some(2));
        assert_eq!(tree.current(FOR_USERS), Some(7));
        assert_eq!(
            std::fs::read_link(tree.link_path(SECRETS)).unwrap(),
            Path::new("secrets.d/2")
        );
        let mode = |n: &str| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(dir.path().join(STORE_DIR).join(n))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!((mode("2"), mode("users-7")), (0o751, 0o700));

        // Pruning removes a generation, and a symlink planted in its place is removed,
        // not followed.
        tree.remove_generation(SECRETS, 1).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join(STORE_DIR).join("4")).unwrap();
        tree.remove_generation(SECRETS, 4).unwrap();
        assert!(outside.path().join("keep").exists());
        assert_eq!(tree.generations(SECRETS).unwrap(), [2, 3]);
        tree.remove_generation(SECRETS, 9).unwrap(); // absent: nothing to do
    }

    #[test]
    fn files_are_written_once_and_read_without_following_links() {
        let (dir, tree) = tree();
        let gen = tree.create_generation(SECRETS, 1).unwrap();
        let me = Owner { uid: 0, gid: 0 };
        write_file(&gen, "db", me, 0o440, b"secret", false).unwrap();
        assert!(
            write_file(&gen, "db", me, 0o440, b"again", false).is_err(),
            "never replaced"
        );
        let (bytes, st) = read_file(&gen, "db").unwrap().unwrap();
        assert_eq!((&bytes[..], st.st_mode & 0o777), (&b"secret"[..], 0o440));
        assert!(read_file(&gen, "absent").unwrap().is_none());
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join(STORE_DIR).join("1/link")).unwrap();
        assert!(read_file(&gen, "link").is_err());
    }
}
