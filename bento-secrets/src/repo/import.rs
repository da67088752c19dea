//! `bento secret import-agenix`: turn an agenix `secrets.nix` into bento's
//! `secrets/secrets.toml` and `keys/`, for a migration.
//!
//! agenix keys carry no role, so: a key that can decrypt every secret (of two or more) is taken for an
//! admin (listed in `admins`), every other key for a host. Keys are named after their ssh
//! comment or fingerprint; rename the `.pub` files and the names in the rules afterwards
//! if you like. Secrets whose file name is not a valid name get a valid one, their `file`
//! keeping the file's name. Ciphertexts already in `secrets/` stay where they are; others
//! are copied there unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::atomic::write_atomic;
use crate::error::{Error, Result};
use crate::fleet::{Note, RULES_FILE, SECRETS_DIR};
use crate::fleet_lock::FleetLock;
use crate::recipients_lock::{Lock, LOCK_FILE};
use crate::rules::SecretRule;

/// What an import wrote.
#[derive(Debug, Default)]
pub struct Imported {
    /// Keys taken for admins.
    pub admins: Vec<String>,
    /// Keys taken for hosts.
    pub hosts: Vec<String>,
    /// Secrets imported.
    pub secrets: Vec<String>,
    /// Secrets whose name is not their file name without `.age` (which was not a valid
    /// name, or taken): `(file in secrets.nix, name)`. Their rule keeps the file's name
    /// in `file`.
    pub renamed: Vec<(String, String)>,
    /// Ciphertexts copied into `secrets/` (those already inside it are used in place).
    pub copied: usize,
    /// Attributes of `secrets.nix` that bento ignores (one note, or none).
    pub ignored: Vec<Note>,
}

/// Imports `nix` (an agenix `secrets.nix`) into the fleet at `root`, whose fleet lock the
/// caller holds.
///
/// A ciphertext already inside the fleet's `secrets/` (a `secrets.nix` at the fleet root
/// naming `secrets/x.age`, say) stays where it is and the rule's `file` points at it; any
/// other is copied into `secrets/`, under its path relative to `secrets.nix`.
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
    let mut imported = Imported {
        ignored: source
            .notes
            .iter()
            .filter(|n| matches!(n, Note::Ignored { .. }))
            .cloned()
            .collect(),
        ..Imported::default()
    };
    for (name, keys) in &source.hosts {
        let admin = everywhere.contains(name.as_str());
        let role = if admin { "admins" } else { "hosts" };
        let rel = format!("keys/{role}/{name}.pub");
        let text: String = keys.iter().map(|k| format!("{}\n", k.text())).collect();
        write_new(root, &rel, text.as_bytes())?;
        if admin {
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
    let secrets_dir = root.join(SECRETS_DIR);
    std::fs::create_dir_all(&secrets_dir).map_err(|e| Error::io(SECRETS_DIR, e))?;
    // Where each ciphertext will be, relative to secrets/: in place, else copied there.
    let mut files: BTreeMap<String, (&SecretRule, Option<String>)> = BTreeMap::new();
    for rule in source.rules.secrets.values() {
        let in_place = relative_inside(&secrets_dir, &source.secret_path(rule));
        let file = in_place.clone().unwrap_or_else(|| rule.file.clone());
        if let Some((other, _)) = files.insert(file.clone(), (rule, in_place)) {
            return Err(Error::input(
                source.rules_shown(),
                None,
                format!(
                    "\"{}\" and \"{}\" would both be {SECRETS_DIR}/{file}; rename one of the files",
                    other.file, rule.file
                ),
            ));
        }
    }
    // Names follow the files as they are under secrets/ (`secrets/db.age` → `db`).
    let names = crate::agenix::secret_names(files.keys().map(String::as_str));
    for (file, (rule, in_place)) in &files {
        let name = &names[file.as_str()];
        if rule.file.strip_suffix(".age").unwrap_or(&rule.file) != name {
            imported.renamed.push((rule.file.clone(), name.clone()));
        }
        let hosts: Vec<&str> = rule
            .recipients
            .iter()
            .map(|m| m.name.as_str())
            .filter(|n| !everywhere.contains(n))
            .collect();
        toml.push_str(&format!(
            "\n[secrets.{}]\nrecipients = [{}]\n",
            crate::toml_text::toml_key(name),
            list(hosts)
        ));
        if *file != format!("{name}.age") {
            toml.push_str(&format!("file = {}\n", quote(file)));
        }
        if rule.armor {
            toml.push_str("armor = true\n");
        }
        let from = source.secret_path(rule);
        if in_place.is_none() && from.exists() {
            let bytes = crate::fleet_files::read(&from, crate::fleet_files::Kind::Age)
                .map_err(|e| e.at(source.secret_shown(rule)))?;
            write_new(root, &format!("{SECRETS_DIR}/{file}"), &bytes)?;
            imported.copied += 1;
        }
        imported.secrets.push(name.clone());
    }
    // The imported files are not in a lock yet; an empty lock (from `bento init`) would
    // make them all look stale. Without one, verify checks headers until the first rekey.
    let lock_shown = format!("{SECRETS_DIR}/{LOCK_FILE}");
    if Lock::load(&secrets_dir, &lock_shown)?.entries.is_empty() {
        let _ = std::fs::remove_file(secrets_dir.join(LOCK_FILE));
    }
    write_atomic(&root.join(RULES_FILE), toml.as_bytes(), 0o644).map_err(|e| Error::io(RULES_FILE, e))?;
    Ok(imported)
}

/// `path` relative to `dir` when it is inside it (both resolved; `path` need not exist),
/// as a rule's `file`.
fn relative_inside(dir: &Path, path: &Path) -> Option<String> {
    let dir = dir.canonicalize().ok()?;
    let path = match path.canonicalize() {
        Ok(p) => p,
        Err(_) => path.parent()?.canonicalize().ok()?.join(path.file_name()?),
    };
    let rel = path.strip_prefix(&dir).ok()?.to_str()?.to_owned();
    (!rel.is_empty()).then_some(rel)
}

/// An import starts from a fleet without secrets (fresh from `bento init`, or empty).
fn refuse_existing_rules(root: &Path) -> Result<()> {
    let Ok(text) = crate::fleet_files::read_text(&root.join(RULES_FILE), crate::fleet_files::Kind::Toml)
    else {
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
    match crate::fleet_files::read(&path, crate::fleet_files::Kind::Age) {
        Ok(existing) if existing == bytes => return Ok(()),
        Ok(_) => {
            return Err(Error::input(
                rel,
                None,
                "already exists with other content; move it away and import again",
            ))
        }
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.at(rel)),
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(rel, e))?;
    }
    write_atomic(&path, bytes, 0o644).map_err(|e| Error::io(rel, e))
}
