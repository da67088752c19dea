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
    // The page carries each host's newest reports as a timeline.
    let timeline = match args.html {
        Some(_) => crate::html::TIMELINE,
        None => 0,
    };
    if args.watch {
        let clear = std::io::stdout().is_terminal();
        let mut last = String::new();
        // A browser showing the page reloads it at the hosts' poll interval.
        let refresh = Some(config.status.interval.secs());
        let mut frame = |fleet_status: &FleetStatus| match &args.html {
            Some(file) => write_page(fleet, file, fleet_status, refresh),
            None => redraw(fleet_status, format, clear, &mut last).map_err(std::io::Error::other),
        };
        match status::watch::watch(fleet, &location, &config, timeline, &mut frame)? {}
    }
    let options = Options::for_fleet(fleet, &config, timeline);
    let fleet_status = location.read(fleet, &config, |root| {
        location.run(|| status::fleet_status(fleet, root, &options))
    })?;
    match &args.html {
        Some(file) => {
            write_page(fleet, file, &fleet_status, None)?;
            output::ok(&format!(
                "wrote {} ({} hosts)",
                file.display(),
                fleet_status.hosts.len()
            ));
        }
        None => output::write_stdout(render(&fleet_status, format)?.as_bytes())?,
    }
    Ok(output::exit(!fleet_status.any_failure()))
}

/// `bento status --html FILE`: the page written atomically; with `refresh`, a browser
/// showing it reloads it every so many seconds.
fn write_page(
    fleet: &Path,
    file: &Path,
    fleet_status: &FleetStatus,
    refresh: Option<u64>,
) -> std::io::Result<()> {
    let rollout = bento_deploy::publish::rollout::load(fleet).unwrap_or_else(|e| {
        output::warn(&format!("the page leaves the rollout out: {e}"));
        None
    });
    let page = crate::html::page(fleet_status, rollout.as_ref(), refresh);
    bento_secrets::atomic::write_atomic(file, page.as_bytes(), 0o644)
        .map_err(|e| std::io::Error::new(e.kind(), format!("writing {}: {e}", file.display())))
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
        if clear {
            std::io::stdout().lock().write_all(b"\x1b[H\x1b[2J")?;
        }
        output::write_stdout(frame.as_bytes())?;
        *last = frame;
    }
    Ok(())
}

/// One host's cells.
fn row(h: &HostStatus) -> [String; 11] {
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
        output::dash(h.mode),
        output::dash(h.expected_generation),
        output::reported(h),
        output::ago(h.reported_ago_seconds),
        output::ago(h.seen_ago_seconds),
        output::ago(h.published_ago_seconds),
        match h.signers.is_empty() {
            true => "-".into(),
            false => h.signers.join(","),
        },
        system.into(),
        output::dash(h.ssh.as_ref()),
    ]
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
    let widths = output::widths(HEAD, &rows);
    let line = |cells: [String; 11], status: Option<Status>| {
        let mut cells = output::padded(&cells, widths);
        if let Some(s) = status {
            cells[1] = output::painted(
                colour,
                output::by_severity(s, ["1;31", "33", "32", "2"]),
                &cells[1],
            );
        }
        cells.concat().trim_end().to_owned() + "\n"
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
        let out: String = logs.iter().map(|log| host_log(log, colour)).collect();
        output::write_stdout(out.as_bytes())?;
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
    let widths = output::widths(HEAD, &rows);
    for cells in std::iter::once(HEAD.map(str::to_owned)).chain(rows) {
        out.push_str(format!("  {}", output::padded(&cells, widths).concat()).trim_end());
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
