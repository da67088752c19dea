//! Atomic file replacement: a temp file in the same directory, synced to disk (its own
//! fsync; a batch's files synced side by side), renamed over the file, then the directory
//! synced. A crash or error at any point leaves either the old file or the new one.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

/// Replaces `path` with `bytes`, atomically, with permissions `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    replace(path, bytes, mode)?;
    std::fs::File::open(parent_of(path))?.sync_all()
}

/// Points `link` at `target`, atomically: a new symlink next to it (an unpredictable
/// name, created exclusively), renamed over it.
pub fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    let name = link.file_name().unwrap_or_default().to_string_lossy();
    let mut tries = 0;
    let tmp = loop {
        let tmp = parent_of(link).join(temp_name(&name));
        match std::os::unix::fs::symlink(target, &tmp) {
            Ok(()) => break tmp,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < TEMP_TRIES => tries += 1,
            Err(e) => return Err(e),
        }
    };
    std::fs::rename(&tmp, link).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// How many times a temp name that exists already is drawn again.
pub(crate) const TEMP_TRIES: u32 = 4;

/// A temp name for `name` in its directory: `.NAME.<16 hex digits from the OS RNG>.tmp`,
/// which no one can guess ahead (to plant a link or a file there first).
pub(crate) fn temp_name(name: &str) -> String {
    use ssh_key::rand_core::{OsRng, RngCore};
    format!(".{name}.{:016x}.tmp", OsRng.next_u64())
}

/// Replaces several files, each one atomically as in [`write_atomic`]: each synced before
/// its rename, in batches (see [`Writer`]). One result per file, in order.
pub fn write_many(files: &[(&Path, &[u8], u32)]) -> Vec<io::Result<()>> {
    let writer = Writer::new();
    for (path, bytes, mode) in files {
        writer.submit(path.to_path_buf(), bytes.to_vec(), *mode);
    }
    writer.finish()
}

/// Replaces many files atomically, in the background, while the caller produces them.
///
/// Three threads form a pipeline:
/// - the *stager* writes each file's bytes to a temp file next to it;
/// - the *committer* takes every temp file staged so far, makes the batch durable with an
///   `fsync` of each of its files, issued side by side from several threads (the filesystem
///   journal commits them together), then renames each temp file over its file, in the
///   order they were submitted. Only bento's own files are waited for: a whole-filesystem
///   `syncfs` would also wait for whatever other programs are writing there;
/// - the *reaper* closes the files that were replaced: freeing them can wait on the disk
///   (a discard, on some mounts), and that wait stays out of everyone's way.
///
/// Each directory is synced once, in [`Writer::finish`]. A file whose batch fails to sync
/// is not renamed: it keeps its old content.
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    submitted: AtomicUsize,
    stager: JoinHandle<()>,
    committer: JoinHandle<Vec<Done>>,
}

/// A finished job: its ticket, and the path it replaced.
type Done = (usize, io::Result<PathBuf>);

struct Job {
    ticket: usize,
    path: PathBuf,
    bytes: Vec<u8>,
    mode: u32,
}

/// A job whose bytes are in a temp file (or failed to get there).
struct Staged {
    ticket: usize,
    path: PathBuf,
    tmp: io::Result<tempfile::NamedTempFile>,
}

/// How many `fsync`s of a batch are in flight at once.
const SYNC_THREADS: usize = 16;

impl Writer {
    /// Starts the pipeline's threads.
    pub fn new() -> Writer {
        let (jobs, to_stage) = mpsc::channel::<Job>();
        let (staged, to_commit) = mpsc::channel::<Staged>();
        let stager = std::thread::spawn(move || {
            for job in to_stage {
                let tmp = stage(&job.path, &job.bytes, job.mode);
                // The committer runs until this sender is dropped: this cannot fail.
                let _ = staged.send(Staged {
                    ticket: job.ticket,
                    path: job.path,
                    tmp,
                });
            }
        });
        let committer = std::thread::spawn(move || {
            let (replaced, to_reap) = mpsc::channel::<std::fs::File>();
            let reaper = std::thread::spawn(move || to_reap.into_iter().for_each(drop));
            let mut done = Vec::new();
            while let Ok(first) = to_commit.recv() {
                let batch: Vec<Staged> = std::iter::once(first).chain(to_commit.try_iter()).collect();
                done.extend(commit(batch, &replaced));
            }
            drop(replaced);
            let _ = reaper.join();
            done
        });
        Writer {
            jobs,
            submitted: AtomicUsize::new(0),
            stager,
            committer,
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
        // The stager stops only once the sender is dropped, in `finish`: this cannot fail.
        let _ = self.jobs.send(job);
        ticket
    }

    /// Waits for every file, syncs their directories, and returns one result per
    /// submitted file, by ticket.
    pub fn finish(self) -> Vec<io::Result<()>> {
        let Writer {
            jobs,
            submitted,
            stager,
            committer,
        } = self;
        drop(jobs);
        let _ = stager.join();
        let done = committer.join().unwrap_or_default();
        let mut results: Vec<Option<io::Result<()>>> = (0..submitted.into_inner()).map(|_| None).collect();
        let mut dirs = BTreeSet::new();
        for (ticket, result) in done {
            results[ticket] = Some(result.map(|path| {
                dirs.insert(parent_of(&path).to_path_buf());
            }));
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

/// Makes a batch of temp files durable, then renames each over its file. The files they
/// replace go to `replaced`, to be closed (and freed) elsewhere.
fn commit(batch: Vec<Staged>, replaced: &mpsc::Sender<std::fs::File>) -> Vec<Done> {
    let synced = sync_each(&batch);
    batch
        .into_iter()
        .zip(synced)
        .map(|(Staged { ticket, path, tmp }, synced)| {
            let result = tmp.and_then(|tmp| {
                synced?;
                // Held open, the old file is freed when the reaper closes it, not here.
                let old = std::fs::File::open(&path).ok();
                tmp.persist(&path).map_err(|e| e.error)?;
                if let Some(old) = old {
                    // The reaper runs until the committer ends: this cannot fail.
                    let _ = replaced.send(old);
                }
                Ok(path)
            });
            (ticket, result)
        })
        .collect()
}

/// `fsync`s each staged temp file of `batch`, up to [`SYNC_THREADS`] at once; one result
/// per job, in order (a job that failed to stage has nothing to sync).
fn sync_each(batch: &[Staged]) -> Vec<io::Result<()>> {
    let files: Vec<Option<&std::fs::File>> = batch
        .iter()
        .map(|s| s.tmp.as_ref().ok().map(|t| t.as_file()))
        .collect();
    let next = AtomicUsize::new(0);
    let worker = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(file) = files.get(i) else { break done };
            done.push((i, file.map_or(Ok(()), |f| f.sync_all())));
        }
    };
    let threads = files.len().min(SYNC_THREADS);
    let mut results: Vec<io::Result<()>> = (0..files.len())
        .map(|_| Err(io::Error::other("not synced: the syncing thread stopped")))
        .collect();
    std::thread::scope(|scope| {
        // Where the system refuses more threads, those that started take the rest.
        let helpers: Vec<_> = (1..threads)
            .map_while(|_| std::thread::Builder::new().spawn_scoped(scope, worker).ok())
            .collect();
        let mut all = worker();
        for helper in helpers {
            all.extend(helper.join().unwrap_or_default());
        }
        for (i, r) in all {
            results[i] = r;
        }
    });
    results
}

/// Temp file, fsync, rename: `path` is either the old file or the new one.
fn replace(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = stage(path, bytes, mode)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Writes `bytes` to a temp file next to `path`, with `mode`, not yet synced.
fn stage(path: &Path, bytes: &[u8], mode: u32) -> io::Result<tempfile::NamedTempFile> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    // Created exclusively (O_EXCL), under a name drawn from the OS RNG (tempfile adds its
    // own characters and draws again when the name exists).
    let prefix = temp_name(name);
    let mut tmp = tempfile::Builder::new()
        .prefix(prefix.trim_end_matches(".tmp"))
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
    fn temp_names_are_unpredictable_and_links_never_reuse_one() {
        let a = super::temp_name("x");
        let b = super::temp_name("x");
        assert!(
            a.starts_with(".x.") && a.ends_with(".tmp") && a.len() == ".x.".len() + 16 + 4,
            "{a}"
        );
        assert_ne!(a, b);
        // The old fixed temp name, planted as a link elsewhere, is neither used nor removed.
        let dir = tempfile::tempdir().unwrap();
        let planted = dir.path().join(".current.bento-tmp");
        std::os::unix::fs::symlink("/etc/passwd", &planted).unwrap();
        let link = dir.path().join("current");
        super::symlink(std::path::Path::new("bundles/7"), &link).unwrap();
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            std::path::Path::new("bundles/7")
        );
        assert_eq!(
            std::fs::read_link(&planted).unwrap(),
            std::path::Path::new("/etc/passwd")
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn write_many_replaces_each_and_reports_each() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths: Vec<_> = (0..40).map(|i| dir.path().join(format!("{i}.age"))).collect();
        for p in &paths[..20] {
            std::fs::write(p, b"old").unwrap();
        }
        // A batch spanning two filesystems is synced on each.
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        let other = shm.path().join("other.age");
        paths.push(other.clone());
        let missing_dir = dir.path().join("nope/x.age");
        let mut files: Vec<(&std::path::Path, &[u8], u32)> =
            paths.iter().map(|p| (p.as_path(), &b"v"[..], 0o644)).collect();
        files.push((&missing_dir, b"v", 0o644));
        let results = super::write_many(&files);
        assert_eq!(results.len(), 42);
        assert!(results[..41].iter().all(|r| r.is_ok()));
        assert!(results[41].is_err());
        assert!(paths.iter().all(|p| std::fs::read(p).unwrap() == b"v"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 40);
        assert_eq!(std::fs::read_dir(shm.path()).unwrap().count(), 1);
    }
}
