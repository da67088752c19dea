//! `bento secret import-agenix`: turn an agenix `secrets.nix` into bento's
//! `secrets/secrets.toml` and `keys/`, for a migration.
//!
//! agenix keys carry no role, so: a key that can decrypt every secret (of two or more) is taken for an
//! admin (listed in `admins`), every other key for a host. Keys are named after their ssh
//! comment or fingerprint; rename the `.pub` files and the names in the rules afterwards
//! if you like. Ciphertexts are copied into `secrets/` unchanged.

use std::collections::BTreeSet;
use std::path::Path;

use crate::atomic::write_atomic;
use crate::error::{Error, Result};
use crate::fleet::{RULES_FILE, SECRETS_DIR};
use crate::fleet_lock::FleetLock;
use crate::lock::{Lock, LOCK_FILE};

/// What an import wrote.
#[derive(Debug, Default)]
pub struct Imported {
    /// Keys taken for admins.
    pub admins: Vec<String>,
    /// Keys taken for hosts.
    pub hosts: Vec<String>,
    /// Secrets imported.
    pub secrets: Vec<String>,
}

/// Imports `nix` (an agenix `secrets.nix`) into the fleet at `root`, whose fleet lock the
/// caller holds.
pub fn import_agenix(root: &Path, _held: &FleetLock, nix: &Path) -> Result<Imported> {
    let source = crate::agenix::load(nix)?;
    refuse_existing_rules(root)?;

    let everywhere: BTreeSet<&str> = source
        .hosts
        .keys()
        .map(String::as_str)
        .filter(|_| source.rules.secrets.len() > 1)
        .filter(|k| {
            source
                .rules
                .secrets
                .values()
                .all(|r| r.recipients.iter().any(|m| m.name == *k))
        })
        .collect();
    let mut imported = Imported::default();
    for (name, keys) in &source.hosts {
        let role = if everywhere.contains(name.as_str()) {
            "admins"
        } else {
            "hosts"
        };
        let rel = format!("keys/{role}/{name}.pub");
        let text: String = keys.iter().map(|k| format!("{}\n", k.text())).collect();
        write_new(root, &rel, text.as_bytes())?;
        if role == "admins" {
            &mut imported.admins
        } else {
            &mut imported.hosts
        }
        .push(name.clone());
    }

    let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let list = |names: Vec<&str>| names.iter().map(|n| quote(n)).collect::<Vec<_>>().join(", ");
    let mut toml = format!(
        "# Imported from {} by `bento secret import-agenix`.\n# Reference: docs/reference.md (secrets.toml).\n\n\
         admins = [{}]\n",
        nix.display(),
        list(imported.admins.iter().map(String::as_str).collect())
    );
    for rule in source.rules.secrets.values() {
        let name = rule.name.replace('/', "-");
        let hosts: Vec<&str> = rule
            .recipients
            .iter()
            .map(|m| m.name.as_str())
            .filter(|n| !everywhere.contains(n))
            .collect();
        toml.push_str(&format!(
            "\n[secrets.{}]\nrecipients = [{}]\n",
            crate::rules::toml_key(&name),
            list(hosts)
        ));
        if rule.file != format!("{name}.age") {
            toml.push_str(&format!("file = {}\n", quote(&rule.file)));
        }
        if rule.armor {
            toml.push_str("armor = true\n");
        }
        let from = source.secret_path(rule);
        let to = root.join(SECRETS_DIR).join(&rule.file);
        if from.exists() && !same_file(&from, &to) {
            let bytes = std::fs::read(&from).map_err(|e| Error::io(source.secret_shown(rule), e))?;
            write_new(root, &format!("{SECRETS_DIR}/{}", rule.file), &bytes)?;
        }
        imported.secrets.push(name);
    }
    std::fs::create_dir_all(root.join(SECRETS_DIR)).map_err(|e| Error::io(SECRETS_DIR, e))?;
    // The imported files are not in a lock yet; an empty lock (from `bento init`) would
    // make them all look stale. Without one, verify checks headers until the first rekey.
    let lock_shown = format!("{SECRETS_DIR}/{LOCK_FILE}");
    if Lock::load(&root.join(SECRETS_DIR), &lock_shown)?
        .entries
        .is_empty()
    {
        let _ = std::fs::remove_file(root.join(SECRETS_DIR).join(LOCK_FILE));
    }
    write_atomic(&root.join(RULES_FILE), toml.as_bytes(), 0o644).map_err(|e| Error::io(RULES_FILE, e))?;
    Ok(imported)
}

/// An import starts from a fleet without secrets (fresh from `bento init`, or empty).
fn refuse_existing_rules(root: &Path) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(root.join(RULES_FILE)) else {
        return Ok(());
    };
    let has_secrets = toml::from_str::<toml::Table>(&text)
        .map(|t| {
            t.get("secrets")
                .and_then(|s| s.as_table())
                .is_some_and(|s| !s.is_empty())
        })
        .unwrap_or(true);
    if has_secrets {
        return Err(Error::input(
            RULES_FILE,
            None,
            "already defines secrets; import into a fresh fleet (`bento init` in an empty directory)",
        ));
    }
    Ok(())
}

/// Writes a file that must not exist yet (or already holds exactly `bytes`).
fn write_new(root: &Path, rel: &str, bytes: &[u8]) -> Result<()> {
    let path = root.join(rel);
    match std::fs::read(&path) {
        Ok(existing) if existing == bytes => return Ok(()),
        Ok(_) => {
            return Err(Error::input(
                rel,
                None,
                "already exists with other content; move it away and import again",
            ))
        }
        Err(_) => {}
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(rel, e))?;
    }
    write_atomic(&path, bytes, 0o644).map_err(|e| Error::io(rel, e))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
