//! `bento host …`

use std::path::Path;
use std::process::ExitCode;

use bento_secrets::{hostkeys, Fleet, RecipientKey};

use crate::cli::HostCommand;
use crate::output::{self, outln};

pub fn run(root: &Path, cmd: HostCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        HostCommand::Add {
            name,
            key,
            scan,
            replace,
        } => {
            let (key, source) = match (key, scan) {
                (Some(file), _) => {
                    let shown = file.display().to_string();
                    (hostkeys::read_one(&file, &shown)?, shown)
                }
                (None, Some(address)) => {
                    let source = format!("ssh-keyscan {address}");
                    let line = hostkeys::scan(&address)?;
                    let key = RecipientKey::parse(&line)
                        .map_err(|e| bento_secrets::Error::input(&source, None, e.to_string()))?;
                    (key, source)
                }
                (None, None) => anyhow::bail!("pass --key FILE or --scan ADDR"),
            };
            let key = hostkeys::add(root, &name, key, &source, replace)?;
            say_key(&hostkeys::key_file(&name), &key);
            output::note(&format!(
                "next: name it in groups or recipients in {}, then `bento secret rekey` and `bento deploy`",
                bento_secrets::fleet::RULES_FILE
            ));
        }
        HostCommand::List { json } => {
            let fleet = Fleet::load(root)?;
            let rows: Vec<HostRow> = fleet
                .hosts
                .iter()
                .map(|(name, keys)| HostRow {
                    name,
                    keys: key_rows(keys),
                    groups: fleet
                        .rules
                        .groups
                        .iter()
                        .filter(|(_, hosts)| hosts.contains(name))
                        .map(|(g, _)| g.as_str())
                        .collect(),
                    configured: root.join("hosts").join(name).is_dir(),
                })
                .collect();
            if json {
                output::json(&rows)?;
            } else if rows.is_empty() {
                output::note("no hosts yet: add one with `bento host add NAME --key FILE` (or --scan ADDR)");
            } else {
                outln!("{:<16} {:<12} {:<52} GROUPS", "HOST", "KEY", "FINGERPRINT")?;
                for row in &rows {
                    let (kind, fingerprint) = row
                        .keys
                        .first()
                        .map_or(("", ""), |k| (k.kind.as_str(), k.fingerprint));
                    outln!(
                        "{:<16} {:<12} {:<52} {}",
                        row.name,
                        kind,
                        fingerprint,
                        row.groups.join(" ")
                    )?;
                }
            }
        }
        HostCommand::Remove { name } => {
            let fleet = Fleet::load(root)?;
            hostkeys::remove(&fleet, &name)?;
            output::ok(&format!("removed {}", hostkeys::key_file(&name)));
            crate::secret::say_rekey_hint(root, ", so its secrets are re-encrypted without it");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One host of `bento host list`, as printed by `--json`.
#[derive(serde::Serialize)]
struct HostRow<'a> {
    name: &'a str,
    keys: Vec<KeyRow<'a>>,
    groups: Vec<&'a str>,
    configured: bool,
}

/// One key of a `host list` or `admin list` row, as printed by `--json`.
#[derive(serde::Serialize)]
pub(crate) struct KeyRow<'a> {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) fingerprint: &'a str,
}

/// Says that `file` holds `key`.
pub(crate) fn say_key(file: &str, key: &RecipientKey) {
    output::ok(&format!("{file}: {} {}", key.kind_name(), key.fingerprint()));
}

/// The `--json` rows of `keys`.
pub(crate) fn key_rows(keys: &[RecipientKey]) -> Vec<KeyRow<'_>> {
    keys.iter()
        .map(|k| KeyRow {
            kind: k.kind_name(),
            fingerprint: k.fingerprint(),
        })
        .collect()
}
