//! `bento status --watch`: the fleet's status again whenever it may have changed. On a
//! local root, inotify says when (the root, each host directory, each `generations/` and
//! `logs/`; debounced), and a refresh every minute keeps ages true. Over sftp nothing says
//! so: the server is read again every [`POLL`], on a new connection each time.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Error;
use crate::fleet::config::Config;
use crate::fleet::location::Location;
use crate::layout::{GENERATIONS_DIR, LOGS_DIR};
use crate::server_dir::LocalDir;
use crate::status::{fleet_hosts, scan, FleetStatus, Options, Root};

/// Changes closer together than this make one frame.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// With no change at all, a frame this often anyway: ages grow, and a pending host turns
/// stale with time alone.
const REFRESH: Duration = Duration::from_secs(60);
/// How often a server over sftp is read again.
pub const POLL: Duration = Duration::from_secs(15);

/// Why watching stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// Reading the status failed.
    #[error(transparent)]
    Status(#[from] Error),
    /// A directory could not be watched.
    #[error("{}: cannot watch it: {source} (raise fs.inotify.max_user_watches?)", .dir.display())]
    Watch {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: notify::Error,
    },
    /// The watcher failed or stopped.
    #[error("watching {}: {why}", .root.display())]
    Watcher {
        /// The server root.
        root: PathBuf,
        /// What it said.
        why: String,
    },
    /// `frame` failed (its output is gone).
    #[error(transparent)]
    Frame(std::io::Error),
}

/// Calls `frame` with the status of the fleet's hosts ([`fleet_hosts`]) read from
/// `location`, then again each time it may have changed, until `frame` or the reading fails.
pub fn watch(
    fleet_root: &Path,
    location: &Location,
    config: &Config,
    timeline: usize,
    frame: &mut dyn FnMut(&FleetStatus) -> std::io::Result<()>,
) -> Result<Infallible, WatchError> {
    let hosts = fleet_hosts(fleet_root)?;
    match location {
        Location::Local(root) => watch_local(root, fleet_root, config, &hosts, timeline, frame),
        Location::Remote(_) | Location::S3(_) => loop {
            let options = Options::for_fleet(fleet_root, config, timeline);
            let status = location.read(fleet_root, config, |root| scan(root, &hosts, &options))?;
            frame(&status).map_err(WatchError::Frame)?;
            std::thread::sleep(POLL);
        },
    }
}

fn watch_local(
    root: &Path,
    fleet_root: &Path,
    config: &Config,
    hosts: &[String],
    timeline: usize,
    frame: &mut dyn FnMut(&FleetStatus) -> std::io::Result<()>,
) -> Result<Infallible, WatchError> {
    use notify::{RecursiveMode, Watcher};

    let stopped = |why: String| WatchError::Watcher {
        root: root.to_path_buf(),
        why,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let _ = tx.send(event);
    })
    .map_err(|e| stopped(e.to_string()))?;
    let local = LocalDir::open(root).map_err(|e| Error::io(root.display().to_string(), e))?;
    let shown = root.display().to_string();
    let server = Root {
        dir: &local,
        shown: &shown,
    };
    // Only the directories whose entries matter: the root (hosts appear), each host dir
    // (`current` is replaced), each generations/ (where a publishing account replaces
    // `generations/current`), each logs/ (reports arrive). Not the bundles' own trees.
    let mut watched: BTreeSet<PathBuf> = BTreeSet::new();
    loop {
        let options = Options::for_fleet(fleet_root, config, timeline);
        let status = scan(server, hosts, &options)?;
        let mut dirs = vec![root.to_path_buf()];
        for h in &status.hosts {
            dirs.push(root.join(&h.host));
            dirs.push(root.join(&h.host).join(LOGS_DIR));
            dirs.push(root.join(&h.host).join(GENERATIONS_DIR));
        }
        for dir in dirs {
            // A symlinked host dir or logs/ is not followed (status flags it instead).
            let plain_dir = std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir());
            if !watched.contains(&dir) && plain_dir {
                watcher
                    .watch(&dir, RecursiveMode::NonRecursive)
                    .map_err(|source| WatchError::Watch {
                        dir: dir.clone(),
                        source,
                    })?;
                watched.insert(dir);
            }
        }
        frame(&status).map_err(WatchError::Frame)?;
        match rx.recv_timeout(REFRESH) {
            Ok(Err(e)) => return Err(stopped(e.to_string())),
            Ok(Ok(_)) => while rx.recv_timeout(DEBOUNCE).is_ok() {},
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(stopped("the watcher stopped".into()))
            }
        }
    }
}
