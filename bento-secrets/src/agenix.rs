//! Reading an agenix `secrets.nix`, so bento works in an existing agenix repository.
//!
//! The file is evaluated by one `nix-instantiate --eval --strict --json` call. Its keys
//! are bare strings (let-binding names do not survive evaluation), so each key is named
//! after its ssh comment (`alice@laptop` → `alice-laptop`), else after its fingerprint.
//! Ciphertext paths are relative to the directory of `secrets.nix`, as in agenix.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::keys::RecipientKey;
use crate::rules::{Member, Role, Rules, SecretRule, Via};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    #[serde(rename = "publicKeys")]
    public_keys: Vec<String>,
    #[serde(default)]
    armor: bool,
}

/// Loads an agenix repository from its `secrets.nix`.
pub fn load(rules_path: &Path) -> Result<Fleet> {
    let shown = rules_path.display().to_string();
    let entries = evaluate(rules_path, &shown)?;

    let mut names: BTreeMap<RecipientKey, String> = BTreeMap::new();
    let mut hosts: BTreeMap<String, Vec<RecipientKey>> = BTreeMap::new();
    let mut secrets = BTreeMap::new();
    for (attr, entry) in entries {
        let bad = |msg: String| Error::input(&shown, None, format!("\"{attr}\": {msg}"));
        let name = attr.strip_suffix(".age").unwrap_or(&attr).to_owned();
        if !valid_file(&attr) {
            return Err(bad(
                "must be a relative path inside this directory, without `..`".into()
            ));
        }
        let mut recipients = Vec::new();
        for line in &entry.public_keys {
            let key = RecipientKey::parse(line).map_err(|e| bad(format!("publicKeys: {e}")))?;
            let who = names.entry(key.clone()).or_insert_with(|| {
                let n = unique_name(line, &key, &hosts);
                hosts.insert(n.clone(), vec![key.clone()]);
                n
            });
            recipients.push(Member {
                name: who.clone(),
                role: Role::Host,
                via: Via::Direct,
            });
        }
        recipients.sort();
        recipients.dedup();
        if recipients.is_empty() {
            return Err(bad("publicKeys is empty: nobody could decrypt it".into()));
        }
        let rule = SecretRule {
            name: name.clone(),
            file: attr.clone(),
            recipients,
            owner: "root".into(),
            group: None,
            mode: 0o400,
            path: None,
            restart_units: Vec::new(),
            reload_units: Vec::new(),
            armor: entry.armor,
            needed_for_users: false,
            generate: None,
        };
        secrets.insert(name, rule);
    }
    let dir = rules_path.parent().unwrap_or(Path::new(""));
    let dir_shown = dir.display().to_string();
    let rules = Rules {
        admins: Vec::new(),
        groups: BTreeMap::new(),
        secrets,
        templates: BTreeMap::new(),
    };
    let base = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    Ok(Fleet::from_parts(base.to_path_buf(), dir_shown, hosts, rules))
}

fn evaluate(path: &Path, shown: &str) -> Result<BTreeMap<String, Entry>> {
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json"])
        .arg(path)
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::input(
                shown,
                None,
                "reading agenix rules needs `nix-instantiate`, which is not installed \
                 (install Nix; on Debian: apt-get install nix-bin)",
            ))
        }
        Err(e) => return Err(Error::io("nix-instantiate", e)),
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("error"))
            .unwrap_or(stderr.trim());
        return Err(Error::input(
            shown,
            None,
            format!("nix-instantiate failed: {first}"),
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        Error::input(
            shown,
            None,
            format!("not an agenix rules file ({e}); expected {{ \"name.age\".publicKeys = [ … ]; }}"),
        )
    })
}

fn valid_file(file: &str) -> bool {
    !file.is_empty()
        && !file.starts_with('/')
        && !file.contains('\0')
        && file.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// A file-name-safe name for a key: its ssh comment, else a fingerprint prefix.
fn unique_name(line: &str, key: &RecipientKey, taken: &BTreeMap<String, Vec<RecipientKey>>) -> String {
    let sanitize = |s: &str| -> String {
        let s: String = s
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        s.trim_start_matches(['.', '-']).to_owned()
    };
    let fp = sanitize(key.fingerprint().trim_start_matches("SHA256:"));
    let comment = if line.trim_start().starts_with("ssh-") {
        line.split_whitespace().nth(2)
    } else {
        None
    };
    let base = comment
        .map(sanitize)
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| format!("key-{}", &fp[..8]));
    if !taken.contains_key(&base) {
        return base;
    }
    format!("{base}-{}", &fp[..8])
}
