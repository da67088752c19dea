//! `bento status`: finding a host's newest readable report in its `logs/`. Report names
//! carry their generation and time, so the newest is found without opening the rest; an
//! older one is read only when a newer one cannot be.

use crate::server_dir::ServerDir;
use crate::status::host_file::{limits, read_file, Content, Problem};
use crate::time::parse_rfc3339;
use crate::wire::host_dir::LOGS_DIR;
use crate::wire::report::{parse_file_name, Report, State};

/// How many report files are opened per host at most, newest first, to get past
/// unreadable ones.
const REPORTS_TRIED: usize = 3;

/// The newest readable report, and what stood in the way of reading newer ones.
#[derive(Default)]
pub(crate) struct Newest {
    pub(crate) report: Option<(String, Report)>,
    pub(crate) problems: Vec<Problem>,
    pub(crate) newest_is_bad: bool,
    /// The newest reports, newest first, when asked for (see [`newest_report`]).
    pub(crate) recent: Vec<Point>,
}

/// One report of a host's recent history, for a timeline.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Point {
    /// The generation it is about (from its file name).
    pub generation: u64,
    /// When it was made, as its file name says it (`2026-11-26T050000Z`).
    pub time: String,
    /// Its state; `None` when the report cannot be read.
    pub state: Option<State>,
}

/// What a timeline reads of a report: its state alone.
#[derive(serde::Deserialize)]
struct StateOnly {
    host: String,
    state: State,
}

/// A host's newest readable report; with `recent` above 0, also the states of its
/// `recent` newest reports (each read bounded; one that cannot be read has no state).
pub(crate) fn newest_report(dir: &dyn ServerDir, host: &str, recent: usize) -> Newest {
    let mut newest = Newest::default();
    let names: Vec<String> = match dir.entries_at_most(LOGS_DIR, limits::LOGS_ENTRIES) {
        Ok(entries) => entries.into_iter().map(|(name, _)| name).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return newest,
        Err(e) => {
            newest.newest_is_bad = true;
            newest.problems.push(match e.kind() {
                std::io::ErrorKind::InvalidData => Problem::LogsTooLarge(e),
                _ => Problem::LogsUnreadable(e),
            });
            return newest;
        }
    };
    let mut reports: Vec<((&str, u64), &str)> = names
        .iter()
        .filter_map(|n| Some((parse_file_name(n)?, n.as_str())))
        .collect();
    reports.sort_unstable_by(|a, b| b.cmp(a));
    for ((time, generation), name) in reports.iter().take(recent) {
        let state = read_file(dir, &format!("{LOGS_DIR}/{name}"), limits::REPORT)
            .ok()
            .flatten()
            .and_then(|bytes| serde_json::from_slice::<StateOnly>(&bytes).ok())
            .filter(|r| r.host == host)
            .map(|r| r.state);
        newest.recent.push(Point {
            generation: *generation,
            time: (*time).to_owned(),
            state,
        });
    }
    for (i, (_, name)) in reports.into_iter().take(REPORTS_TRIED).enumerate() {
        match read_report(dir, name, host) {
            Ok(report) => {
                newest.report = Some((name.to_owned(), report));
                break;
            }
            Err(why) => {
                newest.newest_is_bad |= i == 0;
                newest.problems.push(Problem::Report(Box::new(why)));
            }
        }
    }
    newest
}

fn read_report(dir: &dyn ServerDir, name: &str, host: &str) -> Result<Report, Problem> {
    let rel = format!("{LOGS_DIR}/{name}");
    let Some(bytes) = read_file(dir, &rel, limits::REPORT)? else {
        return Err(Problem::Gone { rel });
    };
    let bad = |content| {
        Err(Problem::Content {
            rel: rel.clone(),
            content,
        })
    };
    let report: Report = match serde_json::from_slice(&bytes) {
        Ok(report) => report,
        Err(e) => return bad(Content::json("a report", &e)),
    };
    if report.host != host {
        return bad(Content::ReportOfAnotherHost(host.to_owned()));
    }
    if parse_rfc3339(&report.time).is_none() {
        return bad(Content::NotRfc3339);
    }
    Ok(report)
}
