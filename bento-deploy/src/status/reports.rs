//! `bento status`: finding a host's newest readable report in its `logs/`. Report names
//! carry their generation and time, so the newest is found without opening the rest; an
//! older one is read only when a newer one cannot be.

use crate::server_dir::ServerDir;
use crate::status::{json_problem, limits, read_file};
use crate::time::parse_rfc3339;
use crate::wire::host_dir::LOGS_DIR;
use crate::wire::report::{parse_file_name, Report};

/// How many report files are opened per host at most, newest first, to get past
/// unreadable ones.
const REPORTS_TRIED: usize = 3;

/// The newest readable report, and what stood in the way of reading newer ones.
pub(crate) struct Newest {
    pub(crate) report: Option<(String, Report)>,
    pub(crate) problems: Vec<String>,
    pub(crate) newest_is_bad: bool,
}

impl Newest {
    pub(crate) fn none() -> Newest {
        Newest {
            report: None,
            problems: Vec::new(),
            newest_is_bad: false,
        }
    }
}

pub(crate) fn newest_report(dir: &dyn ServerDir, host: &str) -> Newest {
    let mut newest = Newest::none();
    let names: Vec<String> = match dir.entries_at_most(LOGS_DIR, super::limits::LOGS_ENTRIES) {
        Ok(entries) => entries.into_iter().map(|(name, _)| name).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return newest,
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            newest.newest_is_bad = true;
            newest.problems.push(format!(
                "{LOGS_DIR}/ {e}, not read; delete old reports from it (see the quotas for logs/ in the server docs)"
            ));
            return newest;
        }
        Err(e) => {
            newest.newest_is_bad = true;
            newest.problems.push(format!(
                "{e}; {LOGS_DIR}/ must be a plain directory that bento status can read"
            ));
            return newest;
        }
    };
    let mut reports: Vec<((&str, u64), &str)> = names
        .iter()
        .filter_map(|n| Some((parse_file_name(n)?, n.as_str())))
        .collect();
    reports.sort_unstable_by(|a, b| b.cmp(a));
    for (i, (_, name)) in reports.into_iter().take(REPORTS_TRIED).enumerate() {
        match read_report(dir, name, host) {
            Ok(report) => {
                newest.report = Some((name.to_owned(), report));
                break;
            }
            Err(why) => {
                newest.newest_is_bad |= i == 0;
                newest.problems.push(format!(
                    "{why}; the host's next report supersedes it, or delete the file"
                ));
            }
        }
    }
    newest
}

fn read_report(dir: &dyn ServerDir, name: &str, host: &str) -> Result<Report, String> {
    let rel = format!("{LOGS_DIR}/{name}");
    let bytes = read_file(dir, &rel, limits::REPORT)?.ok_or_else(|| format!("{rel}: gone while reading"))?;
    let report: Report =
        serde_json::from_slice(&bytes).map_err(|e| format!("{rel}: {}", json_problem("a report", &e)))?;
    if report.host != host {
        return Err(format!("{rel}: a report of another host, not `{host}`"));
    }
    if parse_rfc3339(&report.time).is_none() {
        return Err(format!("{rel}: its time is not RFC 3339"));
    }
    Ok(report)
}
