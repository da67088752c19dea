//! `bento status` and `bento diff`.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use bento_deploy::fleet::location::Location;
use bento_deploy::status::diff::{self as status_diff, Plan};
use bento_deploy::status::prometheus as status_prometheus;
use bento_deploy::status::{self, FleetStatus, HostStatus, Options, Status};
use bento_deploy::Config;

use crate::cli::{DiffArgs, LogArgs, SourceArgs, StatusArgs};
use crate::output;

#[derive(Clone, Copy)]
enum Format {
    Table,
    Json,
    Prometheus,
}

/// bento.toml, and the server that `--server-root`, `--target` or bento.toml name.
fn located(fleet: &Path, source: &SourceArgs) -> anyhow::Result<(Config, Location)> {
    let config = Config::load(fleet)?;
    let location = Location::choose(&config, source.server_root.as_deref(), source.target.as_deref())?;
    Ok((config, location))
}

pub fn status(fleet: &Path, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let (config, location) = located(fleet, &args.server)?;
    let format = match (args.json, args.prometheus) {
        (true, _) => Format::Json,
        (_, true) => Format::Prometheus,
        _ => Format::Table,
    };
    if let Some(file) = &args.html {
        return html_page(fleet, &config, &location, file, args.watch);
    }
    if args.watch {
        let hosts = status::fleet_hosts(fleet)?;
        let clear = std::io::stdout().is_terminal();
        let mut last = String::new();
        let mut frame = |fleet_status: &FleetStatus| {
            redraw(fleet_status, format, clear, &mut last).map_err(std::io::Error::other)
        };
        match status::watch::watch(fleet, &location, &config, &hosts, 0, &mut frame)? {}
    }
    let options = Options::for_fleet(fleet, &config);
    let fleet_status = location.read(fleet, &config, |root| {
        location.run(|| status::fleet_status(fleet, root, &options))
    })?;
    let mut out = std::io::stdout().lock();
    out.write_all(render(&fleet_status, format)?.as_bytes())?;
    out.flush()?;
    Ok(output::exit(!fleet_status.any_failure()))
}

/// `bento status --html FILE [--watch]`: the page written atomically, once or on every
/// change (a browser showing it reloads at the hosts' poll interval).
fn html_page(
    fleet: &Path,
    config: &Config,
    location: &Location,
    file: &Path,
    watch: bool,
) -> anyhow::Result<ExitCode> {
    let rollout = || match bento_deploy::publish::rollout::load(fleet) {
        Ok(r) => r,
        Err(e) => {
            output::warn(&format!("the page leaves the rollout out: {e}"));
            None
        }
    };
    let write = |fleet_status: &FleetStatus, refresh: Option<u64>| {
        let page = crate::html::page(fleet_status, rollout().as_ref(), refresh);
        bento_secrets::atomic::write_atomic(file, page.as_bytes(), 0o644)
            .map_err(|e| std::io::Error::new(e.kind(), format!("writing {}: {e}", file.display())))
    };
    if watch {
        let hosts = status::fleet_hosts(fleet)?;
        let refresh = Some(config.status.interval.secs());
        let mut frame = |fleet_status: &FleetStatus| write(fleet_status, refresh);
        match status::watch::watch(fleet, location, config, &hosts, crate::html::TIMELINE, &mut frame)? {}
    }
    let options = Options {
        timeline: crate::html::TIMELINE,
        ..Options::for_fleet(fleet, config)
    };
    let fleet_status = location.read(fleet, config, |root| {
        location.run(|| status::fleet_status(fleet, root, &options))
    })?;
    write(&fleet_status, None)?;
    output::ok(&format!(
        "wrote {} ({} hosts)",
        file.display(),
        fleet_status.hosts.len()
    ));
    Ok(output::exit(!fleet_status.any_failure()))
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

fn colour_of(s: Status) -> &'static str {
    match s {
        _ if s.is_failure() => "1;31",
        _ if s.is_problem() => "33",
        Status::UpToDate => "32",
        _ => "2",
    }
}

/// One host's cells.
fn row(h: &HostStatus) -> [String; 11] {
    let gen = |g: Option<u64>| g.map_or_else(|| "-".into(), |g| g.to_string());
    let reported = match (h.reported_generation, h.reported_state) {
        (Some(g), Some(state)) => format!("{g} {}", output::json_name(state)),
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
        output::ago(h.reported_ago_seconds),
        output::ago(h.seen_ago_seconds),
        output::ago(h.published_ago_seconds),
        match h.signers.is_empty() {
            true => "-".into(),
            false => h.signers.join(","),
        },
        system.into(),
        h.ssh.clone().unwrap_or_else(|| "-".into()),
    ]
}

/// Each column's width: its widest cell, the heading's included (in characters).
fn widths<const N: usize>(head: [&str; N], rows: &[[String; N]]) -> [usize; N] {
    let mut widths = head.map(str::len);
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    widths
}

fn table(fleet_status: &FleetStatus, colour: bool) -> String {
    const HEAD: [&str; 11] = [
        "HOST",
        "STATUS",
        "MODE",
        "EXPECTED",
        "REPORTED",
        "LAST REPORT",
        "LAST SEEN",
        "PUBLISHED",
        "SIGNED BY",
        "SYSTEM",
        "SSH",
    ];
    // Cells and details carry what hosts wrote (errors, system paths): escaped for the
    // terminal before anything is measured or printed.
    let rows: Vec<[String; 11]> = fleet_status
        .hosts
        .iter()
        .map(|h| row(h).map(|cell| output::escaped(&cell).into_owned()))
        .collect();
    let widths = widths(HEAD, &rows);
    let line = |cells: [String; 11], status: Option<Status>| {
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
        output::plural(n),
        if counts.is_empty() { "" } else { ": " },
        counts.join(", "),
        output::escaped(&fleet_status.server_root),
        fleet_status.time
    ));
    out
}

pub fn diff(fleet: &Path, args: DiffArgs) -> anyhow::Result<ExitCode> {
    let (config, location) = located(fleet, &args.server)?;
    let host = location.read(fleet, &config, |root| {
        status::host(root, &args.host, &Options::from_config(&config))
    })?;
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

pub fn log(fleet: &Path, args: LogArgs) -> anyhow::Result<ExitCode> {
    use bento_deploy::sign::AdminKeys;
    use bento_deploy::status::log::{fleet_log, HostLog};
    let (config, location) = located(fleet, &args.server)?;
    let hosts = match args.hosts.is_empty() {
        true => status::fleet_hosts(fleet)?,
        false => args.hosts.clone(),
    };
    let admins = AdminKeys::new(&bento_secrets::fleet::admin_keys(fleet)?);
    let logs = location.read(fleet, &config, |root| fleet_log(root, &hosts, &admins))?;
    let verified = logs.iter().all(HostLog::verified);
    if args.json {
        output::json(&serde_json::json!({ "format": 1, "hosts": logs, "verified": verified }))?;
    } else {
        let colour = output::stdout_colour();
        let mut out = String::new();
        for log in &logs {
            out.push_str(&host_log(log, colour));
        }
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(out.as_bytes())?;
        stdout.flush()?;
    }
    Ok(output::exit(verified))
}

/// One host's history as text: a line saying whether it holds, its problems, then a
/// table of its generations, newest first.
fn host_log(log: &bento_deploy::status::log::HostLog, colour: bool) -> String {
    let n = log.generations.len();
    let verdict = match (log.current, log.verified()) {
        (None, _) => output::painted(colour, "2", "nothing published"),
        (Some(_), true) => output::painted(
            colour,
            "32",
            &format!("{n} generation{}, every link verified", output::plural(n)),
        ),
        (Some(_), false) => output::painted(colour, "1;31", "history does not verify"),
    };
    let mut out = format!("{}: {verdict}\n", log.host);
    for problem in &log.problems {
        out.push_str(&format!("  ✗ {}\n", output::escaped(&problem.to_string())));
    }
    if log.generations.is_empty() {
        return out;
    }
    let rows: Vec<[String; 4]> = log
        .generations
        .iter()
        .map(|e| {
            let mut gen = e.generation.to_string();
            if Some(e.generation) == log.current {
                gen.push_str(" *");
            }
            let changes = match &e.changes {
                Some(c) => changes_summary(c),
                None => "? (the generation before is unreadable)".into(),
            };
            [gen, e.created.clone(), e.signers.join(", "), changes]
                .map(|cell| output::escaped(&cell).into_owned())
        })
        .collect();
    const HEAD: [&str; 4] = ["GEN", "CREATED", "SIGNED BY", "CHANGES"];
    let widths = widths(HEAD, &rows);
    for cells in std::iter::once(HEAD.map(str::to_owned)).chain(rows) {
        let mut line = String::from("  ");
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            match i {
                3 => line.push_str(cell),
                _ => line.push_str(&format!("{cell:w$}  ")),
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// What a generation changed, on one line.
fn changes_summary(c: &bento_deploy::changes::Changes) -> String {
    let mut parts: Vec<String> = c.files.clone();
    parts.extend(c.secrets_added.iter().map(|n| format!("secret + {n}")));
    parts.extend(c.secrets_changed.iter().map(|n| format!("secret ~ {n}")));
    parts.extend(c.secrets_removed.iter().map(|n| format!("secret - {n}")));
    parts.extend(c.templates.iter().map(|t| format!("template {t}")));
    if let Some((_, new)) = &c.system {
        parts.push(format!("system → {}", new.as_deref().unwrap_or("none")));
    }
    match parts.is_empty() {
        true => "nothing (published again)".into(),
        false => parts.join(", "),
    }
}
