//! `bento flake-update [INPUT]`: prints which flake's lock changed (see
//! [`bento_deploy::fleet::flake_update`]).

use std::path::Path;
use std::process::ExitCode;

use bento_deploy::fleet::flake_update::FlakeUpdate;

use crate::cli::FlakeUpdateArgs;
use crate::output;

pub fn update(fleet: &Path, args: FlakeUpdateArgs) -> anyhow::Result<ExitCode> {
    let update = FlakeUpdate::plan(fleet, args.input.as_deref())?;
    let mut changed = Vec::new();
    for flake in &update.flakes {
        match update.update(flake) {
            Ok(false) => {}
            Ok(true) => {
                output::outln!(
                    "{}: {} changed",
                    flake.name(),
                    flake.shown().replace("flake.nix", "flake.lock")
                )?;
                changed.push(flake.name());
            }
            Err(e) if changed.is_empty() => return Err(e.into()),
            Err(e) => anyhow::bail!("{e}; already updated: {}", changed.join(", ")),
        }
    }
    let n = update.flakes.len();
    if changed.is_empty() {
        output::ok(&format!("no lock changed ({n} flakes)"));
    } else {
        output::ok(&format!(
            "{} of {n} locks changed; `bento build` and `bento deploy` pick them up",
            changed.len()
        ));
    }
    Ok(ExitCode::SUCCESS)
}
