//! Atomic file replacement: a temp file in the same directory, fsync, rename, fsync the
//! directory. A crash or error at any point leaves either the old file or the new one.

use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

/// Replaces `path` with `bytes`, atomically, with permissions `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    replace(path, bytes, mode)?;
    std::fs::File::open(parent_of(path))?.sync_all()
}

/// How many files [`Writer`] writes and syncs at once: they wait on the disk, not the CPU.
const PARALLEL_SYNCS: usize = 32;

/// Replaces several files, each one atomically as in [`write_atomic`]; the fsyncs run
/// concurrently and each directory is synced once. One result per file, in order.
pub fn write_many(files: &[(&Path, &[u8], u32)]) -> Vec<io::Result<()>> {
    let writer = Writer::new();
    for (path, bytes, mode) in files {
        writer.submit(path.to_path_buf(), bytes.to_vec(), *mode);
    }
    writer.finish()
}

/// Replaces files atomically (temp file, fsync, rename) on background threads, so the
/// disk syncs of some files overlap the work that produces the next ones. Each directory
/// is synced once, in [`Writer::finish`].
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    submitted: AtomicUsize,
    threads: Vec<std::thread::JoinHandle<Vec<Done>>>,
}

/// A finished job: its ticket, and the path it replaced.
type Done = (usize, io::Result<PathBuf>);

struct Job {
    ticket: usize,
    path: PathBuf,
    bytes: Vec<u8>,
    mode: u32,
}

impl Writer {
    /// Starts the writing threads.
    pub fn new() -> Writer {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        // Creating and renaming files changes their directory, which the kernel lets one
        // thread do at a time: threads that try at once only spin on its lock. So those
        // steps take turns, and only the syncs run side by side.
        let dir_ops = Arc::new(Mutex::new(()));
        let threads = (0..PARALLEL_SYNCS)
            .map(|_| {
                let rx = Arc::clone(&rx);
                let dir_ops = Arc::clone(&dir_ops);
                std::thread::spawn(move || {
                    let mut done = Vec::new();
                    loop {
                        // Its own statement: the lock is held while waiting for a job, not
                        // while doing it.
                        let next = lock(&rx).recv();
                        let Ok(job) = next else { break };
                        let staged = {
                            let _turn = lock(&dir_ops);
                            stage(&job.path, &job.bytes, job.mode)
                        };
                        let result = staged.and_then(|tmp| {
                            tmp.as_file().sync_all()?;
                            // The file being replaced is freed when its last reference
                            // goes, which on some disks waits for a discard. Holding it
                            // open until after our turn keeps that wait out of the turn.
                            let old = std::fs::File::open(&job.path).ok();
                            let turn = lock(&dir_ops);
                            let renamed = tmp.persist(&job.path).map_err(|e| e.error);
                            drop(turn);
                            drop(old);
                            renamed
                        });
                        let result = result.map(|_| job.path);
                        done.push((job.ticket, result));
                    }
                    done
                })
            })
            .collect();
        Writer {
            jobs: tx,
            submitted: AtomicUsize::new(0),
            threads,
        }
    }

    /// Queues `path` to be replaced by `bytes` with permissions `mode`; returns its ticket:
    /// the index of its result in [`Writer::finish`]'s.
    pub fn submit(&self, path: PathBuf, bytes: Vec<u8>, mode: u32) -> usize {
        let ticket = self.submitted.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            ticket,
            path,
            bytes,
            mode,
        };
        // The threads stop only once the sender is dropped, in `finish`: this cannot fail.
        let _ = self.jobs.send(job);
        ticket
    }

    /// Waits for every file, syncs their directories, and returns one result per
    /// submitted file, by ticket.
    pub fn finish(self) -> Vec<io::Result<()>> {
        let Writer {
            jobs,
            submitted,
            threads,
        } = self;
        drop(jobs);
        let mut results: Vec<Option<io::Result<()>>> = (0..submitted.into_inner()).map(|_| None).collect();
        let mut dirs = std::collections::BTreeSet::new();
        for thread in threads {
            let done = thread.join().unwrap_or_else(|_| Vec::new());
            for (ticket, result) in done {
                results[ticket] = Some(result.map(|path| {
                    dirs.insert(parent_of(&path).to_path_buf());
                }));
            }
        }
        for dir in dirs {
            // The renames are done; a failed directory sync only weakens durability.
            let _ = std::fs::File::open(&dir).and_then(|d| d.sync_all());
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(io::Error::other("the writing thread stopped"))))
            .collect()
    }
}

impl Default for Writer {
    fn default() -> Writer {
        Writer::new()
    }
}

/// Temp file, fsync, rename: `path` is either the old file or the new one.
fn replace(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = stage(path, bytes, mode)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
    // Set after creation: the umask does not apply, so the mode is exactly `mode`.
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
