//! `bento activate`

use std::process::ExitCode;

use bento_secrets::activate::{self, Options, Phase, Report};
use bento_secrets::ramfs::FsKind;
use bento_secrets::units::{self, Handled, UnitControl};

use crate::cli::{ActivateArgs, FsArg, PhaseArg};
use crate::output::{self, outln};

pub fn run(args: ActivateArgs) -> anyhow::Result<ExitCode> {
    let identities = if args.identity.is_empty() {
        activate::host_identities()
    } else {
        args.identity
    };
    let opts = Options {
        bundle: args.bundle,
        root: args.root,
        identities,
        phase: match args.phase {
            PhaseArg::Users => Phase::Users,
            PhaseArg::Secrets => Phase::Secrets,
        },
        dry_run: args.dry_run,
        keep: args.keep,
        fs: match args.fs {
            FsArg::Ramfs => FsKind::Ramfs,
            FsArg::Tmpfs => FsKind::Tmpfs,
        },
        mount: !args.no_mount,
        units: if args.no_restart {
            UnitControl::Leave
        } else {
            UnitControl::Systemctl {
                program: args.systemctl.unwrap_or_else(units::default_systemctl),
                // Inside a unit, or from NixOS activation: a job that waits for a unit
                // ordered after this one would never end.
                no_block: args.from_activation || units::inside_unit(),
            }
        },
    };
    let report = activate::activate(&opts)?;
    if args.json {
        output::json(&report)?;
    } else {
        print(&report)?;
    }
    Ok(output::exit(
        report.failed.is_empty() && report.units_error.is_none(),
    ))
}

fn print(r: &Report) -> std::io::Result<()> {
    let family = if r.for_users {
        "secrets for users"
    } else {
        "secrets"
    };
    let what = if r.dry_run {
        format!("{family}: dry run, nothing changed")
    } else {
        // The secrets' own counter (secrets.d/<N>), not the bundle's generation.
        format!("{family} generation {} active", r.generation.unwrap_or_default())
    };
    let attributes = match r.attributes_changed.len() {
        0 => String::new(),
        n => format!(", {n} with new owner, group, mode or path"),
    };
    let summary = format!(
        "{what}: {} added, {} changed{attributes}, {} removed, {} unchanged",
        r.added.len(),
        r.changed.len(),
        r.removed.len(),
        r.unchanged.len()
    );
    for (mark, list) in [
        ("+", &r.added),
        ("~", &r.changed),
        ("*", &r.attributes_changed),
        ("-", &r.removed),
    ] {
        for name in list {
            outln!("{mark} {name}")?;
        }
    }
    for w in &r.warnings {
        output::note(&format!("warning: {w}"));
    }
    // Each list with what really happened to it; a failure claims nothing.
    match (r.units_handled, &r.units_error) {
        (_, Some(e)) => output::error(&format!("units not restarted: {e}")),
        (Some(handled), None) => {
            for (restart, units) in [(true, &r.restart_units), (false, &r.reload_units)] {
                if !units.is_empty() {
                    output::note(&format!("{}: {}", units_done(handled, restart), units.join(" ")));
                }
            }
        }
        (None, None) => {}
    }
    for f in &r.failed {
        let kept = if f.kept_previous {
            " (previous content kept)"
        } else {
            ""
        };
        // Templates are named `templates/<name>`.
        let what = if f.name.starts_with("templates/") {
            ""
        } else {
            "secret "
        };
        output::error(&format!("{what}{}: {}{kept}", f.name, f.error));
    }
    if r.failed.is_empty() && r.units_error.is_none() {
        output::ok(&summary);
    } else if r.failed.is_empty() {
        output::note(&summary);
    } else {
        output::error(&format!("{summary}, {} FAILED", r.failed.len()));
    }
    Ok(())
}

/// What happened to a list of units (`restart`: the restart list, else the reload list).
fn units_done(handled: Handled, restart: bool) -> &'static str {
    match (handled, restart) {
        (Handled::Restarted, true) => "restarted",
        (Handled::Restarted, false) => "reloaded",
        (Handled::Queued, true) => "restart queued (systemctl --no-block)",
        (Handled::Queued, false) => "reload queued (systemctl --no-block)",
        (Handled::NotRestarted, true) => "not restarted (--no-restart)",
        (Handled::NotRestarted, false) => "not reloaded (--no-restart)",
        (Handled::WouldRestart, true) => "would restart",
        (Handled::WouldRestart, false) => "would reload",
    }
}
