//! Atomic file replacement: a temp file in the same directory, fsync, rename, fsync the
//! directory. A crash or error at any point leaves either the old file or the new one.

use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Replaces `path` with `bytes`, atomically, with permissions `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = stage(path, bytes, mode)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(parent_of(path))?.sync_all()
}

/// How many fsyncs run at once in [`write_many`]: they wait on the disk, not the CPU.
const PARALLEL_SYNCS: usize = 16;

/// Replaces several files, each one atomically as in [`write_atomic`]; the fsyncs run
/// concurrently and each directory is synced once. One result per file, in order.
pub fn write_many(files: &[(&Path, &[u8], u32)]) -> Vec<io::Result<()>> {
    let staged: Vec<io::Result<tempfile::NamedTempFile>> = files
        .iter()
        .map(|(path, bytes, mode)| stage(path, bytes, *mode))
        .collect();
    let synced: Vec<io::Result<()>> = std::thread::scope(|scope| {
        let chunk = staged.len().div_ceil(PARALLEL_SYNCS).max(1);
        let handles: Vec<_> = staged
            .chunks(chunk)
            .map(|group| {
                scope.spawn(move || {
                    group
                        .iter()
                        .map(|t| match t {
                            Ok(tmp) => tmp.as_file().sync_all(),
                            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("fsync thread"))
            .collect()
    });
    let mut dirs = std::collections::BTreeSet::new();
    let results: Vec<io::Result<()>> = staged
        .into_iter()
        .zip(synced)
        .zip(files)
        .map(|((tmp, synced), (path, _, _))| {
            synced?;
            tmp?.persist(path).map_err(|e| e.error)?;
            dirs.insert(parent_of(path).to_path_buf());
            Ok(())
        })
        .collect();
    for dir in dirs {
        // The renames are done; a failed directory sync only weakens durability.
        let _ = std::fs::File::open(&dir).and_then(|d| d.sync_all());
    }
    results
}

fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Writes `bytes` to a temp file next to `path`, with `mode`, not yet synced.
fn stage(path: &Path, bytes: &[u8], mode: u32) -> io::Result<tempfile::NamedTempFile> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(parent_of(path))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.write_all(bytes)?;
    Ok(tmp)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.age");
        std::fs::write(&p, b"old").unwrap();
        super::write_atomic(&p, b"new", 0o644).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o644);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn write_many_replaces_each_and_reports_each() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<_> = (0..40).map(|i| dir.path().join(format!("{i}.age"))).collect();
        let missing_dir = dir.path().join("nope/x.age");
        let mut files: Vec<(&std::path::Path, &[u8], u32)> =
            paths.iter().map(|p| (p.as_path(), &b"v"[..], 0o644)).collect();
        files.push((&missing_dir, b"v", 0o644));
        let results = super::write_many(&files);
        assert_eq!(results.len(), 41);
        assert!(results[..40].iter().all(|r| r.is_ok()));
        assert!(results[40].is_err());
        assert!(paths.iter().all(|p| std::fs::read(p).unwrap() == b"v"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 40);
    }
}
