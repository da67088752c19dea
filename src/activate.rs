//! `bento activate`

use std::process::ExitCode;

use bento_secrets::activate::{self, Options, Phase, Report};
use bento_secrets::ramfs::FsKind;

use crate::cli::{ActivateArgs, FsArg, PhaseArg};
use crate::output;

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
        systemctl: args.systemctl,
    };
    let report = activate::activate(&opts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print(&report);
    }
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print(r: &Report) {
    let what = if r.dry_run {
        "dry run, nothing changed".to_owned()
    } else {
        format!("generation {} active", r.generation.unwrap_or_default())
    };
    let summary = format!(
        "{what}: {} added, {} changed, {} removed, {} unchanged",
        r.added.len(),
        r.changed.len(),
        r.removed.len(),
        r.unchanged.len()
    );
    for (mark, list) in [("+", &r.added), ("~", &r.changed), ("-", &r.removed)] {
        for name in list {
            println!("{mark} {name}");
        }
    }
    for w in &r.warnings {
        output::note(&format!("warning: {w}"));
    }
    if !r.restart_units.is_empty() {
        let verb = if r.dry_run { "would restart" } else { "restarted" };
        output::note(&format!("{verb}: {}", r.restart_units.join(" ")));
    }
    if !r.reload_units.is_empty() {
        let verb = if r.dry_run { "would reload" } else { "reloaded" };
        output::note(&format!("{verb}: {}", r.reload_units.join(" ")));
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
    if r.failed.is_empty() {
        output::ok(&summary);
    } else {
        output::error(&format!("{summary}, {} FAILED", r.failed.len()));
    }
}
