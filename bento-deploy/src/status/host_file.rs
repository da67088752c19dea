//! The files of a host directory as status reads them — bounded, no link followed — and
//! why one could not be used: a [`Problem`], shown in the host's `problem`.

use std::io;

use serde_json::error::Category;

use crate::server_dir::ServerDir;
use crate::wire::host_dir::{CURRENT_FILE, GENERATIONS_DIR, LOGS_DIR};

/// The largest files status reads from a host directory besides `current` and manifests
/// (see [`crate::layout::CURRENT_LIMIT`]). Everything there is untrusted — a host writes
/// its own `logs/` — so a larger file is flagged and ignored, not read.
pub mod limits {
    /// A report in `logs/`.
    pub const REPORT: u64 = 1024 * 1024;
    /// The heartbeat, `logs/seen.json`.
    pub const HEARTBEAT: u64 = 64 * 1024;
    /// Entries of a host's `logs/` (its reports pile up there: one per run).
    pub const LOGS_ENTRIES: usize = 100_000;
}

/// What stood in the way of reading a host directory, each with its fix; a host's
/// `problem` joins them with `; `.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// The host directory could not be opened.
    #[error("{0}; the host directory must be a plain directory")]
    HostDir(io::Error),
    /// A file is larger than status reads (the error names it).
    #[error("{0}, ignored; delete it (and see the quotas for logs/ in the server docs)")]
    TooLarge(io::Error),
    /// A file could not be read (the error names it).
    #[error("{0}")]
    Unreadable(io::Error),
    /// `current` does not hold a generation number.
    #[error(
        "{current}: not a generation number; run `bento deploy` or write the number of a dir of {generations}/",
        current = CURRENT_FILE,
        generations = GENERATIONS_DIR
    )]
    NotAGeneration,
    /// The manifest of the generation `current` names is not there.
    #[error("{rel} is missing: `current` names a generation that is not there; run `bento deploy`")]
    ManifestMissing {
        /// The manifest's path in the host directory.
        rel: String,
    },
    /// A file vanished between its listing and its reading.
    #[error("{rel}: gone while reading")]
    Gone {
        /// Its path in the host directory.
        rel: String,
    },
    /// A file does not hold what it should.
    #[error("{rel}: {content}")]
    Content {
        /// Its path in the host directory.
        rel: String,
        /// What is wrong with it.
        content: Content,
    },
    /// `logs/` holds more entries than status lists.
    #[error(
        "{logs}/ {0}, not read; delete old reports from it (see the quotas for logs/ in the server docs)",
        logs = LOGS_DIR
    )]
    LogsTooLarge(io::Error),
    /// `logs/` could not be listed.
    #[error("{0}; {logs}/ must be a plain directory that bento status can read{hint}", logs = LOGS_DIR, hint = unreadable_hint(.0))]
    LogsUnreadable(io::Error),
    /// A report could not be used.
    #[error("{0}; the host's next report supersedes it, or delete the file")]
    Report(Box<Problem>),
    /// The heartbeat could not be used.
    #[error("{0}; the host's next poll rewrites it, or delete the file")]
    Heartbeat(Box<Problem>),
}

/// What is wrong with a file a host controls, without repeating any of its content (which
/// is untrusted, and may hold escape sequences or another file's text).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Content {
    /// Not JSON of the expected shape; only serde's category and position are kept (its
    /// messages quote the offending value).
    #[error("not {what} ({} at line {line} column {column})", category_text(.category))]
    NotJson {
        /// What it should be (`a report`).
        what: &'static str,
        /// How serde failed.
        category: Category,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// A report naming another host.
    #[error("a report of another host, not `{0}`")]
    ReportOfAnotherHost(String),
    /// A heartbeat naming another host.
    #[error("the heartbeat of another host")]
    HeartbeatOfAnotherHost,
    /// Its `time` is not RFC 3339.
    #[error("its time is not RFC 3339")]
    NotRfc3339,
}

impl Content {
    /// `e`, reading what should be `what`.
    pub(crate) fn json(what: &'static str, e: &serde_json::Error) -> Content {
        Content::NotJson {
            what,
            category: e.classify(),
            line: e.line(),
            column: e.column(),
        }
    }
}

fn category_text(category: &Category) -> &'static str {
    match category {
        Category::Io | Category::Eof => "cut short",
        Category::Syntax => "not JSON",
        Category::Data => "not the expected shape",
    }
}

/// Reads a file of the host directory: a regular file of at most `limit` bytes, reached
/// without following a symlink. `Ok(None)` when it does not exist.
pub(crate) fn read_file(dir: &dyn ServerDir, rel: &str, limit: u64) -> Result<Option<Vec<u8>>, Problem> {
    match dir.read(rel, limit) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::FileTooLarge => Err(Problem::TooLarge(e)),
        Err(e) => Err(Problem::Unreadable(e)),
    }
}

/// What to do about a `logs/` the publishing account may not read: a server set up before
/// `bento status` read over sftp.
fn unreadable_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::PermissionDenied => {
            " (over sftp: apply `bento server setup` again; it lets the publishing account read logs/)"
        }
        _ => "",
    }
}
