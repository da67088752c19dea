//! Reading the fleet's own files. A contributor's pull request to the fleet repo is
//! hostile input: a file may be a symlink to `/dev/zero`, to the admin's ssh key or into
//! `.git`. Every read of a fleet file goes through [`read`]: the file itself is never a
//! symlink (`O_NOFOLLOW`), it is a regular file (a FIFO is not waited on), and it is read up
//! to a bound per [`Kind`].
//!
//! What is published to the server (hosts' `config/` files, template `file`s) must also be
//! the fleet's own, as git sees it: [`Tracked`] resolves a path (links inside the fleet are
//! followed) and admits it only when it stays inside the fleet, is not under `.git`,
//! `.bento` (or, when the fleet is not a git repo, any other dot-directory), and, in a git
//! repo, is a file git tracks.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use rustix::fs::{Mode, OFlags};

/// What a fleet file holds: its size bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A public key file (`keys/*/NAME.pub`, a secret's `.pub`): 16 KiB.
    Key,
    /// `bento.toml`, `secrets.toml`, `recipients.lock`: 4 MiB.
    Toml,
    /// An age file (`secrets/NAME.age`): 64 MiB.
    Age,
    /// A template's `file`: 1 MiB (it is a config file, published in every bundle).
    Template,
    /// A file of a host's configuration directory: 64 MiB.
    Config,
}

impl Kind {
    /// The largest file of this kind that is read.
    pub const fn limit(self) -> u64 {
        match self {
            Kind::Key => 16 * 1024,
            Kind::Toml => 4 * 1024 * 1024,
            Kind::Age | Kind::Config => 64 * 1024 * 1024,
            Kind::Template => 1024 * 1024,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Kind::Key => "a key file",
            Kind::Toml => "a TOML file",
            Kind::Age => "an age file",
            Kind::Template => "a template",
            Kind::Config => "a configuration file",
        }
    }
}

/// Why a fleet file was not read; one line.
#[derive(Debug, thiserror::Error)]
pub enum FleetFileError {
    /// The file is a symlink.
    #[error("it is a symlink; fleet files are read only as regular files: replace the link with the file")]
    Link,
    /// A device, FIFO, socket or directory.
    #[error("not a regular file (a device, fifo, socket or directory?): replace it with a file")]
    NotRegular,
    /// Past its kind's bound.
    #[error("larger than {} KiB, the bound for {what}", limit / 1024)]
    TooLarge {
        /// The bound, in bytes.
        limit: u64,
        /// The kind, in words.
        what: &'static str,
    },
    /// A path that resolves outside the fleet.
    #[error("it leads outside the fleet (to {0}); copy the file into the fleet instead")]
    Outside(String),
    /// A path that resolves into `.git`, `.bento` or another hidden directory.
    #[error("it leads into `{0}`, which is never published; point it at a file of the fleet")]
    Hidden(String),
    /// A path that resolves to a file git does not track.
    #[error(
        "it leads to `{0}`, which git does not track; `git add` it, or point the link at a tracked file"
    )]
    Untracked(String),
    /// `git ls-files` could not say what the fleet tracks.
    #[error("cannot list the files git tracks: {0}")]
    Git(String),
    /// The file system said no.
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl FleetFileError {
    /// Whether the file does not exist (callers often treat that as empty).
    pub fn is_not_found(&self) -> bool {
        matches!(self, FleetFileError::Io(e) if e.kind() == io::ErrorKind::NotFound)
    }

    /// As the library's error, naming the file as shown to the user.
    pub fn at(self, shown: impl Into<String>) -> crate::error::Error {
        match self {
            FleetFileError::Io(e) => crate::error::Error::io(shown, e),
            other => crate::error::Error::input(shown, None, other.to_string()),
        }
    }
}

/// Reads the fleet file `path`: never through a symlink at its last component, a regular
/// file only, at most `kind`'s bound.
pub fn read(path: &Path, kind: Kind) -> Result<Vec<u8>, FleetFileError> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::LOOP) => return Err(FleetFileError::Link),
        Err(e) => return Err(FleetFileError::Io(e.into())),
    };
    let stat = rustix::fs::fstat(&fd).map_err(io::Error::from)?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(FleetFileError::NotRegular);
    }
    let limit = kind.limit();
    let too_large = || FleetFileError::TooLarge {
        limit,
        what: kind.what(),
    };
    let size = u64::try_from(stat.st_size).unwrap_or(u64::MAX);
    if size > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    std::fs::File::from(fd).take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

/// [`read`] as UTF-8 text.
pub fn read_text(path: &Path, kind: Kind) -> Result<String, FleetFileError> {
    String::from_utf8(read(path, kind)?)
        .map_err(|_| FleetFileError::Io(io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text")))
}

/// The most `git ls-files -z` may print: 64 MiB of paths.
const GIT_LISTING_LIMIT: u64 = 64 * 1024 * 1024;

/// The files of the fleet that may be published: git's tracked files when the fleet is in
/// a git repo, else every file outside dot-directories.
#[derive(Debug, Clone)]
pub struct Tracked {
    /// The fleet's real path.
    root: PathBuf,
    /// In a git repo: the tracked files, relative to the root, and every directory above
    /// them. `None`: not a git repo.
    git: Option<(BTreeSet<PathBuf>, BTreeSet<PathBuf>)>,
}

impl Tracked {
    /// What the fleet at `root` publishes: asks `git ls-files` once when the fleet is in a
    /// git work tree (a `.git` in the root or a directory above it).
    pub fn of(root: &Path) -> Result<Tracked, FleetFileError> {
        let root = root.canonicalize()?;
        let in_git = root
            .ancestors()
            .any(|dir| dir.join(".git").symlink_metadata().is_ok());
        let git = if in_git {
            let files = git_ls_files(&root)?;
            let mut dirs = BTreeSet::new();
            for file in &files {
                dirs.extend(file.ancestors().skip(1).map(Path::to_path_buf));
            }
            Some((files, dirs))
        } else {
            None
        };
        Ok(Tracked { root, git })
    }

    /// The fleet's real path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the fleet is a git work tree (only tracked files are published).
    pub fn is_git(&self) -> bool {
        self.git.is_some()
    }

    /// Whether the real path `real` (a file, or a directory when `dir`) is published:
    /// inside the fleet, outside `.git`/`.bento` and, without git, any dot-directory; with
    /// git, tracked (a directory: holding a tracked file).
    pub fn admits(&self, real: &Path, dir: bool) -> Result<(), FleetFileError> {
        let Ok(rel) = real.strip_prefix(&self.root) else {
            return Err(FleetFileError::Outside(shown(real)));
        };
        let parts: Vec<&OsStr> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(p) => Some(p),
                _ => None,
            })
            .collect();
        let last = parts.len().saturating_sub(usize::from(!dir));
        for (i, part) in parts.iter().enumerate() {
            let hidden = part.as_bytes() == b".git" || part.as_bytes() == b".bento";
            let dot_dir = i < last && part.as_bytes().starts_with(b".");
            if hidden || (dot_dir && self.git.is_none()) {
                let upto: PathBuf = parts[..=i].iter().collect();
                return Err(FleetFileError::Hidden(shown(&upto)));
            }
        }
        match &self.git {
            Some((files, dirs)) => {
                let known = if dir {
                    rel.as_os_str().is_empty() || dirs.contains(rel)
                } else {
                    files.contains(rel)
                };
                known
                    .then_some(())
                    .ok_or_else(|| FleetFileError::Untracked(shown(rel)))
            }
            None => Ok(()),
        }
    }

    /// Resolves `path` (following links) and checks it with [`Tracked::admits`]; returns
    /// the real path.
    pub fn resolve(&self, path: &Path) -> Result<PathBuf, FleetFileError> {
        let real = path.canonicalize()?;
        let dir = std::fs::metadata(&real)?.is_dir();
        self.admits(&real, dir)?;
        Ok(real)
    }

    /// Reads the fleet file `path` (relative to the root, or absolute) when it is
    /// published: [`Tracked::resolve`], then [`read`] of the real path.
    pub fn read(&self, path: &Path, kind: Kind) -> Result<Vec<u8>, FleetFileError> {
        let real = self.resolve(&self.root.join(path))?;
        read(&real, kind)
    }
}

/// A path for a message, control characters escaped.
fn shown(path: &Path) -> String {
    crate::error::escape_controls(&path.to_string_lossy())
}

/// `git ls-files -z` in `root`: the tracked files below it, relative to it. Git runs
/// without the caller's `GIT_*` variables (no other repository, index or work tree), with
/// no fsmonitor hook, and its listing is bounded.
fn git_ls_files(root: &Path) -> Result<BTreeSet<PathBuf>, FleetFileError> {
    let mut cmd = Command::new("git");
    for (name, _) in std::env::vars_os() {
        if name.as_bytes().starts_with(b"GIT_") {
            cmd.env_remove(name);
        }
    }
    let mut child = cmd
        .env("GIT_OPTIONAL_LOCKS", "0")
        .args(["-c", "core.fsmonitor=false", "ls-files", "-z", "--cached", "--"])
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| FleetFileError::Git(format!("git: {e} (the fleet is a git repo: install git)")))?;
    let mut out = Vec::new();
    let read = child
        .stdout
        .take()
        .map(|s| s.take(GIT_LISTING_LIMIT + 1).read_to_end(&mut out));
    if out.len() as u64 > GIT_LISTING_LIMIT {
        let _ = child.kill();
        let _ = child.wait();
        return Err(FleetFileError::Git("the listing is larger than 64 MiB".into()));
    }
    let mut err = Vec::new();
    if let Some(stderr) = child.stderr.take() {
        let _ = stderr.take(4096).read_to_end(&mut err);
    }
    let status = child.wait()?;
    if let Some(Err(e)) = read {
        return Err(FleetFileError::Io(e));
    }
    if !status.success() {
        let text = String::from_utf8_lossy(&err);
        let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("failed");
        return Err(FleetFileError::Git(crate::error::escape_controls(line.trim())));
    }
    Ok(out
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(OsStr::from_bytes(p)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_regular_files_only_never_a_link_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("a.pub"), "key\n").unwrap();
        assert_eq!(read(&p("a.pub"), Kind::Key).unwrap(), b"key\n");
        std::os::unix::fs::symlink("/dev/zero", p("zero.pub")).unwrap();
        assert!(matches!(
            read(&p("zero.pub"), Kind::Key),
            Err(FleetFileError::Link)
        ));
        std::os::unix::fs::symlink("a.pub", p("inside.pub")).unwrap();
        assert!(matches!(
            read(&p("inside.pub"), Kind::Key),
            Err(FleetFileError::Link)
        ));
        assert!(matches!(
            read(Path::new("/dev/zero"), Kind::Key),
            Err(FleetFileError::NotRegular)
        ));
        rustix::fs::mknodat(
            rustix::fs::CWD,
            p("fifo"),
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(matches!(
            read(&p("fifo"), Kind::Toml),
            Err(FleetFileError::NotRegular)
        ));
        std::fs::write(p("big.pub"), vec![b'a'; 16 * 1024 + 1]).unwrap();
        let e = read(&p("big.pub"), Kind::Key).unwrap_err();
        assert_eq!(e.to_string(), "larger than 16 KiB, the bound for a key file");
        assert!(read(&p("missing"), Kind::Key).unwrap_err().is_not_found());
    }

    #[test]
    fn without_git_dot_directories_are_never_published() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join(".cache/x")).unwrap();
        std::fs::create_dir_all(root.join("hosts/web1")).unwrap();
        std::fs::write(root.join(".cache/x/key"), "secret").unwrap();
        std::fs::write(root.join("hosts/web1/.env"), "A=1").unwrap();
        let tracked = Tracked::of(root).unwrap();
        assert!(!tracked.is_git());
        let real = |r: &str| tracked.root().join(r);
        assert!(tracked.admits(&real("hosts/web1/.env"), false).is_ok());
        let e = tracked.admits(&real(".cache/x/key"), false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "it leads into `.cache`, which is never published; point it at a file of the fleet"
        );
        assert!(tracked.admits(&real(".bento"), true).is_err());
        assert!(matches!(
            tracked.admits(Path::new("/etc/passwd"), false),
            Err(FleetFileError::Outside(_))
        ));
    }
}
