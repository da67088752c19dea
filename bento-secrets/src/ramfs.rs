//! RAM-backed filesystems: recognising one (for the editor's temp dir) and mounting the
//! one activated secrets live on.

use std::io;
use std::path::Path;

use rustix::mount::MountFlags;

/// Which RAM filesystem to mount.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FsKind {
    /// ramfs: never swapped, no size limit (the default, as in sops-nix and agenix).
    #[default]
    Ramfs,
    /// tmpfs, with `noswap` when the kernel supports it (Linux 6.4+).
    Tmpfs,
}

/// What [`ensure_mounted`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mounted {
    /// A RAM filesystem was already mounted there.
    Already,
    /// Bento mounted one.
    Fresh,
    /// Bento mounted tmpfs, but the kernel refused `noswap`: pages could be swapped.
    FreshWithSwap,
}

/// Is `dir` on tmpfs or ramfs?
pub fn is_ram_fs(dir: &Path) -> bool {
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    const RAMFS_MAGIC: u64 = 0x8584_58f6;
    match rustix::fs::statfs(dir) {
        #[allow(clippy::unnecessary_cast)] // f_type's width differs between platforms
        Ok(st) => matches!((st.f_type as u64) & 0xffff_ffff, TMPFS_MAGIC | RAMFS_MAGIC),
        Err(_) => false,
    }
}

/// Is `dir` itself a mount point (listed in `/proc/self/mountinfo`)?
pub fn is_mount_point(dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else { return false };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| Path::new(&unescape(m)) == dir)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            out.push(u8::from_str_radix(&code, 8).map_or('?', char::from));
        } else {
            out.push(c);
        }
    }
    out
}

/// Makes `dir` a RAM filesystem mount point, mounted `nodev,nosuid,noexec` with mode
/// 0751; reuses one already there. A symlink at `dir` is refused.
pub fn ensure_mounted(dir: &Path, kind: FsKind) -> io::Result<Mounted> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(io::Error::other(format!(
                "{} is a symlink; refusing to mount over it",
                dir.display()
            )))
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new().recursive(true).create(dir)?;
        }
        Err(e) => return Err(e),
    }
    if is_mount_point(dir) {
        if is_ram_fs(dir) {
            return Ok(Mounted::Already);
        }
        return Err(io::Error::other(format!(
            "{} is a mount point but not ramfs or tmpfs",
            dir.display()
        )));
    }
    let flags = MountFlags::NODEV | MountFlags::NOSUID | MountFlags::NOEXEC;
    let attempt = |fstype: &str, data: &str| {
        let data = std::ffi::CString::new(data).expect("mount options have no NUL");
        rustix::mount::mount("bento", dir, fstype, flags, Some(data.as_c_str()))
    };
    let result = match kind {
        FsKind::Ramfs => attempt("ramfs", "mode=0751").map(|()| Mounted::Fresh),
        FsKind::Tmpfs => match attempt("tmpfs", "mode=0751,noswap") {
            Err(rustix::io::Errno::INVAL) => attempt("tmpfs", "mode=0751").map(|()| Mounted::FreshWithSwap),
            other => other.map(|()| Mounted::Fresh),
        },
    };
    result.map_err(|e| {
        if e == rustix::io::Errno::PERM {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("mounting a RAM filesystem at {} needs root", dir.display()),
            )
        } else {
            io::Error::from(e)
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn mountinfo_escapes() {
        assert_eq!(super::unescape(r"/run/my\040dir"), "/run/my dir");
        assert!(super::is_mount_point(std::path::Path::new("/")));
        assert!(super::is_ram_fs(std::path::Path::new("/dev/shm")));
    }
}
