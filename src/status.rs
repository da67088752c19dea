//! `bento status` and `bento diff`.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use bento_deploy::fleet::location::Location;
use bento_deploy::status::diff::{self as status_diff, Plan};
use bento_deploy::status::prometheus as status_prometheus;
use bento_deploy::status::{self, FleetStatus, HostStatus, Options, Root, Status};
use bento_deploy::Config;

use crate::cli::{DiffArgs, StatusArgs};
use crate::output;

#[derive(Clone, Copy)]
enum Format {
    Table,
    Json,
    Prometheus,
}

pub fn status(fleet: &Path, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(fleet)?;
    let location = Location::choose(
        &config,
        args.server.server_root.as_deref(),
        args.server.target.as_deref(),
    )?;
    let format = match (args.json, args.prometheus) {
        (true, _) => Format::Json,
        (_, true) => Format::Prometheus,
        _ => Format::Table,
    };
    if args.watch {
        let hosts = status::fleet_hosts(fleet)?;
        let clear = std::io::stdout().is_terminal();
        let mut last = String::new();
        let mut frame = |fleet_status: &FleetStatus| {
            redraw(fleet_status, format, clear, &mut last).map_err(std::io::Error::other)
        };
        match status::watch::watch(fleet, &location, &config, &hosts, &mut frame)? {}
    }
    let server = location.open(fleet, &config)?;
    let shown = location.shown();
    let root = Root {
        dir: server.dir(),
        shown: &shown,
    };
    let fleet_status = status::fleet_status(fleet, root, &Options::from_config(&config))?;
    let mut out = std::io::stdout().lock();
    out.write_all(render(&fleet_status, format)?.as_bytes())?;
    out.flush()?;
    Ok(if fleet_status.any_failure() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn render(fleet_status: &FleetStatus, format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Json => {
            let mut text = serde_json::to_string_pretty(fleet_status)?;
            text.push('\n');
            text
        }
        Format::Prometheus => status_prometheus::render(fleet_status),
        Format::Table => table(fleet_status, output::stdout_colour()),
    })
}

/// Prints the frame of `fleet_status` when it differs from `last` (clearing the terminal
/// first when `clear`).
fn redraw(fleet_status: &FleetStatus, format: Format, clear: bool, last: &mut String) -> anyhow::Result<()> {
    let frame = render(fleet_status, format)?;
    if frame != *last {
        let mut out = std::io::stdout().lock();
        if clear {
            out.write_all(b"\x1b[H\x1b[2J")?;
        }
        out.write_all(frame.as_bytes())?;
        out.flush()?;
        *last = frame;
    }
    Ok(())
}

/// A duration in its largest whole unit: `45s`, `12m`, `3h`, `4d`.
fn ago(secs: Option<u64>) -> String {
    match secs {
        None => "-".into(),
        Some(s) if s < 60 => format!("{s}s ago"),
        Some(s) if s < 3600 => format!("{}m ago", s / 60),
        Some(s) if s < 86_400 => format!("{}h ago", s / 3600),
        Some(s) => format!("{}d ago", s / 86_400),
    }
}

fn colour_of(s: Status) -> &'static str {
    match s {
        _ if s.is_failure() => "1;31",
        _ if s.is_problem() => "33",
        Status::UpToDate => "32",
        _ => "2",
    }
}

/// One host's cells.
fn row(h: &HostStatus) -> [String; 10] {
    let gen = |g: Option<u64>| g.map_or_else(|| "-".into(), |g| g.to_string());
    let reported = match (h.reported_generation, h.reported_state) {
        (Some(g), Some(state)) => {
            let state = serde_json::to_value(state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            format!("{g} {state}")
        }
        _ => "-".into(),
    };
    let system = match (&h.reported_system, &h.expected_system) {
        (Some(a), Some(b)) if a == b => "same",
        (Some(_), Some(_)) => "differs",
        _ => "-",
    };
    let mut name = h.host.clone();
    if !h.in_fleet {
        name.push_str(" (not in fleet)");
    }
    [
        name,
        h.status.name().into(),
        h.mode.map_or_else(|| "-".into(), |m| m.to_string()),
        gen(h.expected_generation),
        reported,
        ago(h.reported_ago_seconds),
        ago(h.seen_ago_seconds),
        ago(h.published_ago_seconds),
        system.into(),
        h.ssh.clone().unwrap_or_else(|| "-".into()),
    ]
}

fn table(fleet_status: &FleetStatus, colour: bool) -> String {
    const HEAD: [&str; 10] = [
        "HOST",
        "STATUS",
        "MODE",
        "EXPECTED",
        "REPORTED",
        "LAST REPORT",
        "LAST SEEN",
        "PUBLISHED",
        "SYSTEM",
        "SSH",
    ];
    // Cells and details carry what hosts wrote (errors, system paths): escaped for the
    // terminal before anything is measured or printed.
    let rows: Vec<[String; 10]> = fleet_status
        .hosts
        .iter()
        .map(|h| row(h).map(|cell| output::escaped(&cell).into_owned()))
        .collect();
    let mut widths = HEAD.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [String; 10], status: Option<Status>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            let padded = if i + 1 == cells.len() {
                cell.clone()
            } else {
                format!("{cell:w$}  ")
            };
            match status {
                Some(s) if i == 1 => text.push_str(&output::painted(colour, colour_of(s), &padded)),
                _ => text.push_str(&padded),
            }
        }
        text.trim_end().to_owned() + "\n"
    };
    let mut out = line(HEAD.map(str::to_owned), None);
    for (h, cells) in fleet_status.hosts.iter().zip(rows) {
        out.push_str(&line(cells, Some(h.status)));
        for detail in [&h.error, &h.problem].into_iter().flatten() {
            if h.status != Status::UpToDate {
                let detail = output::escaped(detail);
                out.push_str(&format!("    {}\n", output::painted(colour, "2", &detail)));
            }
        }
    }
    let counts: Vec<String> = Status::ALL
        .iter()
        .filter_map(|s| {
            let n = fleet_status.totals.get(s.name()).copied().unwrap_or(0);
            (n > 0).then(|| format!("{n} {}", s.name()))
        })
        .collect();
    let n = fleet_status.hosts.len();
    out.push_str(&format!(
        "{n} host{}{}{} ({}, {})\n",
        if n == 1 { "" } else { "s" },
        if counts.is_empty() { "" } else { ": " },
        counts.join(", "),
        output::escaped(&fleet_status.server_root),
        fleet_status.time
    ));
    out
}

pub fn diff(fleet: &Path, args: DiffArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(fleet)?;
    let location = Location::choose(
        &config,
        args.server.server_root.as_deref(),
        args.server.target.as_deref(),
    )?;
    let server = location.open(fleet, &config)?;
    let shown = location.shown();
    let root = Root {
        dir: server.dir(),
        shown: &shown,
    };
    let host = status::host(root, &args.host, &Options::from_config(&config))?;
    drop(server);
    let command = match status_diff::plan(&host, std::env::var_os("PATH").as_deref())? {
        Plan::Same(system) => {
            output::ok(&format!("{} runs the expected system {system}", host.host));
            return Ok(ExitCode::SUCCESS);
        }
        Plan::Run(command) => command,
    };
    output::note(&format!(
        "{}: running {} → expected {}",
        host.host,
        host.reported_system.as_deref().unwrap_or("-"),
        host.expected_system.as_deref().unwrap_or("-"),
    ));
    let ran = std::process::Command::new(&command.program)
        .args(&command.args)
        .env(
            "NIX_CONFIG",
            status_diff::nix_config(std::env::var_os("NIX_CONFIG").as_deref()),
        )
        .status()
        .map_err(|e| anyhow::anyhow!("running {}: {e}", command.program.display()))?;
    if !ran.success() {
        anyhow::bail!(
            "{} failed ({ran}): both systems must be in the local Nix store (fetch them with `nix copy --from …`)",
            command.program.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
