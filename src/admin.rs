//! `bento admin …`

use std::path::Path;
use std::process::ExitCode;

use bento_secrets::{adminkeys, keys, Fleet};

use crate::cli::AdminCommand;
use crate::host::{key_rows, say_key, KeyRow};
use crate::output::{self, outln};

pub fn run(root: &Path, cmd: AdminCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AdminCommand::Add { name, key } => {
            let source = key.display().to_string();
            let keys = keys::read_key_file(&key, &source)?;
            let held = crate::secret::lock(root)?;
            adminkeys::add(root, &held, &name, &keys, &source)?;
            for key in &keys {
                say_key(&adminkeys::key_file(&name), key);
            }
            output::note(&format!(
                "{name} added to admins in {}",
                bento_secrets::fleet::RULES_FILE
            ));
            crate::secret::say_rekey_hint(
                root,
                &format!(", by an admin who can decrypt, so every secret is encrypted to {name}"),
            );
        }
        AdminCommand::List { json } => list(root, json)?,
        AdminCommand::Remove { name } => {
            let held = crate::secret::lock(root)?;
            let fleet = Fleet::load(root)?;
            adminkeys::remove(&fleet, &held, &name)?;
            output::ok(&format!(
                "removed {name} from admins and {}",
                adminkeys::key_file(&name)
            ));
            crate::secret::say_rekey_hint(
                root,
                &format!(
                    ": until then {name} can still decrypt them (rotate a secret's value if that matters)"
                ),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list(root: &Path, json: bool) -> anyhow::Result<()> {
    let fleet = Fleet::load(root)?;
    let rows: Vec<AdminRow> = fleet
        .admins
        .iter()
        .map(|(name, keys)| AdminRow {
            name,
            keys: key_rows(keys),
            default: fleet.rules.admins.iter().any(|a| a == name),
        })
        .collect();
    if json {
        output::json(&rows)?;
        return Ok(());
    }
    if rows.is_empty() {
        output::note("no admins yet: add one with `bento admin add NAME --key FILE`");
        return Ok(());
    }
    outln!("{:<16} {:<8} {:<18} FINGERPRINT", "ADMIN", "ADMINS", "KEY")?;
    for row in &rows {
        for (i, key) in row.keys.iter().enumerate() {
            let (name, listed) = if i == 0 {
                (row.name, if row.default { "yes" } else { "no" })
            } else {
                ("", "")
            };
            outln!("{name:<16} {listed:<8} {:<18} {}", key.kind, key.fingerprint)?;
        }
    }
    Ok(())
}

/// One admin of `bento admin list`, as printed by `--json`.
#[derive(serde::Serialize)]
struct AdminRow<'a> {
    name: &'a str,
    keys: Vec<KeyRow<'a>>,
    /// Listed in `admins` (so added to every secret).
    default: bool,
}
