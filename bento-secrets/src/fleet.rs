//! The secrets side of a fleet repository: `keys/hosts/*.pub`, `keys/admins/*.pub` and
//! `secrets/secrets.toml`, loaded and cross-checked together.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::keys::{read_key_file, RecipientKey};
use crate::rules::{valid_name, Directory, Member, Role, Rules, SecretRule};

/// Where the rules live, relative to the fleet root.
pub const RULES_FILE: &str = "secrets/secrets.toml";
/// Where the ciphertexts live, relative to the fleet root.
pub const SECRETS_DIR: &str = "secrets";
/// Where host public keys live (`<name>.pub`), relative to the fleet root.
pub const HOST_KEYS_DIR: &str = "keys/hosts";
/// Where admin public keys live (`<name>.pub`), relative to the fleet root.
pub const ADMIN_KEYS_DIR: &str = "keys/admins";

/// A loaded, validated fleet.
#[derive(Debug)]
pub struct Fleet {
    root: PathBuf,
    /// Where ciphertexts and the lock live.
    secrets_dir: PathBuf,
    /// How that directory is shown in messages (`secrets`, or an agenix repo's dir).
    secrets_shown: String,
    /// Host name → its public key(s).
    pub hosts: BTreeMap<String, Vec<RecipientKey>>,
    /// Admin name → their recipient key(s).
    pub admins: BTreeMap<String, Vec<RecipientKey>>,
    /// The rules.
    pub rules: Rules,
}

struct Names<'a> {
    hosts: &'a BTreeMap<String, Vec<RecipientKey>>,
    admins: &'a BTreeMap<String, Vec<RecipientKey>>,
}

impl Directory for Names<'_> {
    fn is_host(&self, name: &str) -> bool {
        self.hosts.contains_key(name)
    }
    fn is_admin(&self, name: &str) -> bool {
        self.admins.contains_key(name)
    }
}

impl Fleet {
    /// Loads the fleet rooted at `root`, with its rules in `secrets/secrets.toml`.
    pub fn load(root: &Path) -> Result<Fleet> {
        Self::open(root, None)
    }

    /// Loads the fleet rooted at `root`; `rules` overrides where the rules are: a
    /// `secrets.toml` elsewhere, or an agenix `secrets.nix` (which brings its own keys).
    /// Ciphertexts live next to the rules file.
    pub fn open(root: &Path, rules_file: Option<&Path>) -> Result<Fleet> {
        if let Some(nix) = rules_file.filter(|p| p.extension().is_some_and(|e| e == "nix")) {
            return crate::agenix::load(nix);
        }
        let (rules_path, shown) = match rules_file {
            Some(p) => (p.to_path_buf(), p.display().to_string()),
            None => (root.join(RULES_FILE), RULES_FILE.to_owned()),
        };
        let text = match std::fs::read_to_string(&rules_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::input(
                    shown,
                    None,
                    format!(
                        "not found in {}: run `bento init` there, or point --fleet (or BENTO_FLEET) at your fleet repo",
                        root.display()
                    ),
                ))
            }
            Err(e) => return Err(Error::io(shown, e)),
        };
        let hosts = read_key_dir(root, HOST_KEYS_DIR)?;
        let admins = read_key_dir(root, ADMIN_KEYS_DIR)?;
        check_no_clashes(&hosts, &admins)?;
        let mut rules = Rules::parse(
            &text,
            &shown,
            &Names {
                hosts: &hosts,
                admins: &admins,
            },
        )?;
        for template in rules.templates.values_mut() {
            template.read_file(root)?;
        }
        let secrets_dir = rules_path
            .parent()
            .map_or_else(|| root.join(SECRETS_DIR), Path::to_path_buf);
        let secrets_shown = match rules_file {
            Some(p) => p.parent().map(|d| d.display().to_string()).unwrap_or_default(),
            None => SECRETS_DIR.to_owned(),
        };
        Ok(Fleet {
            root: root.to_path_buf(),
            secrets_dir,
            secrets_shown,
            hosts,
            admins,
            rules,
        })
    }

    /// A fleet whose keys and rules come from elsewhere (an agenix `secrets.nix`), with
    /// ciphertexts in `secrets_dir`, shown in messages as `secrets_shown`.
    pub fn from_parts(
        secrets_dir: PathBuf,
        secrets_shown: String,
        hosts: BTreeMap<String, Vec<RecipientKey>>,
        rules: Rules,
    ) -> Fleet {
        Fleet {
            root: secrets_dir.clone(),
            secrets_dir,
            secrets_shown,
            hosts,
            admins: BTreeMap::new(),
            rules,
        }
    }

    /// The directory holding the ciphertexts and the lock.
    pub fn secrets_dir(&self) -> &Path {
        &self.secrets_dir
    }

    /// A path inside the secrets directory, as shown to the user.
    pub fn shown_in_secrets(&self, rel: &str) -> String {
        match self.secrets_shown.as_str() {
            "" | "." => rel.to_owned(),
            dir => format!("{}/{rel}", dir.trim_end_matches('/')),
        }
    }

    /// Every key of the fleet with its owner's name, to name the recipients of a header.
    pub fn all_keys(&self) -> impl Iterator<Item = (&str, &RecipientKey)> {
        self.hosts
            .iter()
            .chain(self.admins.iter())
            .flat_map(|(n, keys)| keys.iter().map(move |k| (n.as_str(), k)))
    }

    /// The fleet's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The rule for secret `name`, or an error that says how to add one.
    pub fn rule(&self, name: &str) -> Result<&SecretRule> {
        self.rules.secrets.get(name).ok_or_else(|| Error::UnknownSecret {
            name: name.to_owned(),
            rules: RULES_FILE.to_owned(),
        })
    }

    /// The ciphertext path of a secret.
    pub fn secret_path(&self, rule: &SecretRule) -> PathBuf {
        self.secrets_dir.join(&rule.file)
    }

    /// The ciphertext path of a secret, as shown to the user (relative to the fleet).
    pub fn secret_shown(&self, rule: &SecretRule) -> String {
        self.shown_in_secrets(&rule.file)
    }

    /// The keys of one recipient.
    pub fn keys_of(&self, member: &Member) -> &[RecipientKey] {
        let map = match member.role {
            Role::Host => &self.hosts,
            Role::Admin => &self.admins,
        };
        map.get(&member.name).map(Vec::as_slice).unwrap_or_default()
    }

    /// Every key a secret must be encrypted to, with the member it belongs to.
    pub fn recipient_keys<'a>(&'a self, rule: &'a SecretRule) -> Vec<(&'a Member, &'a RecipientKey)> {
        rule.recipients
            .iter()
            .flat_map(|m| self.keys_of(m).iter().map(move |k| (m, k)))
            .collect()
    }
}

/// Reads every `<name>.pub` of a key directory (a missing directory is empty).
fn read_key_dir(root: &Path, rel: &str) -> Result<BTreeMap<String, Vec<RecipientKey>>> {
    let mut out = BTreeMap::new();
    let entries = match std::fs::read_dir(root.join(rel)) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(rel, e)),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(rel, e))?;
        paths.push(entry.path());
    }
    paths.sort();
    for path in paths {
        let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let Some(name) = file_name.strip_suffix(".pub") else {
            continue;
        };
        let shown = format!("{rel}/{file_name}");
        if !valid_name(name) {
            return Err(Error::input(
                shown,
                None,
                format!("bad name `{name}`: rename the file using letters, digits, `.`, `_` and `-`"),
            ));
        }
        out.insert(name.to_owned(), read_key_file(&path, &shown)?);
    }
    Ok(out)
}

/// A name must mean one thing, and a key must belong to one name.
fn check_no_clashes(
    hosts: &BTreeMap<String, Vec<RecipientKey>>,
    admins: &BTreeMap<String, Vec<RecipientKey>>,
) -> Result<()> {
    if let Some(name) = hosts.keys().find(|h| admins.contains_key(*h)) {
        return Err(Error::input(
            format!("keys/admins/{name}.pub"),
            None,
            format!("`{name}` is also a host (keys/hosts/{name}.pub); rename one of them"),
        ));
    }
    let mut owner: BTreeMap<&RecipientKey, String> = BTreeMap::new();
    let all = hosts
        .iter()
        .map(|(n, k)| (format!("keys/hosts/{n}.pub"), k))
        .chain(admins.iter().map(|(n, k)| (format!("keys/admins/{n}.pub"), k)));
    for (file, keys) in all {
        for key in keys {
            if let Some(first) = owner.insert(key, file.clone()) {
                if first != file {
                    return Err(Error::input(
                        file,
                        None,
                        format!("holds the same key as {first}; each key belongs to one host or admin"),
                    ));
                }
            }
        }
    }
    Ok(())
}
