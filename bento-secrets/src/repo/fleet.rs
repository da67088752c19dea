//! The secrets side of a fleet repository: `keys/hosts/*.pub`, `keys/admins/*.pub` and
//! `secrets/secrets.toml`, loaded and cross-checked together.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fleet_files::{self, Kind, Tracked};
use crate::keys::{read_key_file, RecipientKey};
use crate::names::valid_name;
use crate::rules::{Directory, Member, Role, Rules, SecretRule, Via};
use crate::toml_text::toml_key;

/// Where the rules live, relative to the fleet root.
pub const RULES_FILE: &str = "secrets/secrets.toml";
/// Where the ciphertexts live, relative to the fleet root.
pub const SECRETS_DIR: &str = "secrets";
/// Where host public keys live (`<name>.pub`), relative to the fleet root.
pub const HOST_KEYS_DIR: &str = "keys/hosts";
/// Where admin public keys live (`<name>.pub`), relative to the fleet root.
pub const ADMIN_KEYS_DIR: &str = "keys/admins";

/// A remark about how rules were read (an agenix `secrets.nix`), worth a line with
/// `--verbose`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// Attributes bento does not use (`"x.age".extra`), all of them, in one note.
    Ignored {
        /// The rules file, as shown.
        rules: String,
        /// The attribute paths, quoted as in Nix.
        attrs: Vec<String>,
    },
    /// A secret whose name is not its file name without `.age`.
    Renamed {
        /// The rules file, as shown.
        rules: String,
        /// The attribute (the file name).
        file: String,
        /// bento's name for it.
        name: String,
    },
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Note::Ignored { rules, attrs } => write!(
                f,
                "{rules}: ignoring attributes bento does not use: {}",
                attrs.join(", ")
            ),
            Note::Renamed { rules, file, name } => write!(
                f,
                "{rules}: secret {} is called {name} (not a valid name as it is, or taken)",
                serde_json::Value::String(file.clone())
            ),
        }
    }
}

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
    /// The rules file, as shown in messages.
    rules_shown: String,
    /// The `--rules` file the user named, if any (for the commands hints show).
    rules_arg: Option<String>,
    /// An agenix `secrets.nix`: a secret may also be named by its file name.
    agenix: bool,
    /// Remarks about how the rules were read (attributes ignored, secrets renamed), for
    /// `--verbose`.
    pub notes: Vec<Note>,
    /// The files the fleet publishes (asked of git once, when first needed).
    tracked: std::sync::OnceLock<Tracked>,
}

impl Directory for Registered {
    fn is_host(&self, name: &str) -> bool {
        self.hosts.contains_key(name)
    }
    fn is_admin(&self, name: &str) -> bool {
        self.admins.contains_key(name)
    }
    fn host_names(&self) -> Vec<&str> {
        self.hosts.keys().map(String::as_str).collect()
    }
    fn admin_names(&self) -> Vec<&str> {
        self.admins.keys().map(String::as_str).collect()
    }
}

impl Fleet {
    /// Loads the fleet rooted at `root`, with its rules in `secrets/secrets.toml`.
    pub fn load(root: &Path) -> Result<Fleet> {
        Self::open(root, None)
    }

    /// Loads the fleet rooted at `root`; `rules` overrides where the rules are: a
    /// `secrets.toml` elsewhere. Ciphertexts live next to the rules file. (An agenix
    /// `secrets.nix` is opened by `agenix::open`, which builds on this module.)
    pub fn open(root: &Path, rules_file: Option<&Path>) -> Result<Fleet> {
        let (rules_path, shown) = match rules_file {
            Some(p) => (p.to_path_buf(), p.display().to_string()),
            None => (root.join(RULES_FILE), RULES_FILE.to_owned()),
        };
        let text = match fleet_files::read_text(&rules_path, Kind::Toml) {
            Ok(t) => t,
            Err(e) if e.is_not_found() => {
                return Err(Error::input(
                    shown,
                    None,
                    format!(
                        "not found in {}: run `bento init` there, or point --fleet (or BENTO_FLEET) at your fleet repo",
                        root.display()
                    ),
                ))
            }
            Err(e) => return Err(e.at(shown)),
        };
        let registered = Registered::read(root)?;
        registered.check_no_clashes()?;
        let mut rules = Rules::parse(&text, &shown, &registered)?;
        let Registered { hosts, admins } = registered;
        let tracked = std::sync::OnceLock::new();
        for template in rules.templates.values_mut().filter(|t| t.file.is_some()) {
            if tracked.get().is_none() {
                let _ = tracked.set(published(root)?);
            }
            if let Some(known) = tracked.get() {
                template.read_file(known)?;
            }
        }
        for template in rules.templates.values() {
            let found = template.mode_warnings(|name| rules.secrets.get(name).map(|s| s.attrs.mode), &shown);
            rules.warnings.extend(found);
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
            rules_arg: rules_file.map(|_| shown.clone()),
            rules_shown: shown,
            agenix: false,
            notes: Vec::new(),
            tracked,
        })
    }

    /// A fleet whose keys and rules come from an agenix `secrets.nix` (shown as
    /// `rules_shown`), with ciphertexts in `secrets_dir`, shown in messages as
    /// `secrets_shown`.
    pub fn from_agenix(
        secrets_dir: PathBuf,
        secrets_shown: String,
        rules_shown: String,
        hosts: BTreeMap<String, Vec<RecipientKey>>,
        rules: Rules,
        notes: Vec<Note>,
    ) -> Fleet {
        Fleet {
            root: secrets_dir.clone(),
            secrets_dir,
            secrets_shown,
            hosts,
            admins: BTreeMap::new(),
            rules,
            rules_shown,
            rules_arg: None,
            agenix: true,
            notes,
            tracked: std::sync::OnceLock::new(),
        }
    }

    /// This fleet as named by `--rules` on the command line: the commands that hints
    /// suggest repeat `--rules FILE`.
    pub(crate) fn named_on_the_command_line(mut self) -> Fleet {
        self.rules_arg = Some(self.rules_shown.clone());
        self
    }

    /// The rules file, as shown in messages.
    pub fn rules_shown(&self) -> &str {
        &self.rules_shown
    }

    /// `bento secret` as the user runs it on this fleet (with `--rules FILE` when they
    /// gave one), for the commands that hints suggest.
    pub fn command(&self) -> String {
        match &self.rules_arg {
            None => "bento secret".to_owned(),
            Some(file) => format!("bento secret --rules {}", shell_word(file)),
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

    /// The files this fleet publishes (hosts' configuration, template files): git's
    /// tracked files in a git repo; asked once.
    pub fn tracked(&self) -> Result<&Tracked> {
        if let Some(known) = self.tracked.get() {
            return Ok(known);
        }
        let _ = self.tracked.set(published(&self.root)?);
        self.tracked
            .get()
            .ok_or_else(|| Error::input(self.root.display().to_string(), None, "cannot list its files"))
    }

    /// The rule for secret `name` (with an agenix `secrets.nix`, also its file name, as
    /// `secret1.age`), or an error that says how to add one.
    pub fn rule(&self, name: &str) -> Result<&SecretRule> {
        let by_file = || {
            self.agenix
                .then(|| self.rules.secrets.values().find(|r| r.file == name))
                .flatten()
        };
        self.rules
            .secrets
            .get(name)
            .or_else(by_file)
            .ok_or_else(|| Error::UnknownSecret {
                name: name.to_owned(),
                rules: self.rules_shown.clone(),
                hint: crate::suggest::hint(name, self.rules.secrets.keys().map(String::as_str)),
                fix: if self.agenix {
                    let file = if name.ends_with(".age") {
                        name.to_owned()
                    } else {
                        format!("{name}.age")
                    };
                    format!(
                        "add `\"{file}\".publicKeys = [ … ];` to it (or name an existing secret: \
                         `{} list`)",
                        self.command()
                    )
                } else {
                    format!("add a [secrets.{}] table with its recipients", toml_key(name))
                },
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
        let (_, map) = self.of_role(member.role);
        map.get(&member.name).map(Vec::as_slice).unwrap_or_default()
    }

    /// How a role is called, and its names with their keys.
    fn of_role(&self, role: Role) -> (&'static str, &BTreeMap<String, Vec<RecipientKey>>) {
        match role {
            Role::Host => ("host", &self.hosts),
            Role::Admin => ("admin", &self.admins),
        }
    }

    /// Refuses removing `name` (a `role`, whose key file is `shown`) when there is none,
    /// or while a group lists it or a secret's `recipients` names it.
    pub(crate) fn check_removable(&self, role: Role, name: &str, shown: &str) -> Result<()> {
        let (called, names) = self.of_role(role);
        if !names.contains_key(name) {
            let hint = crate::suggest::hint(name, names.keys().map(String::as_str));
            return Err(Error::input(shown, None, format!("no {called} `{name}`{hint}")));
        }
        let mut groups = self.rules.groups.iter().filter(|_| role == Role::Host);
        if let Some((group, _)) = groups.find(|(_, hosts)| hosts.iter().any(|h| h == name)) {
            return Err(Error::input(
                RULES_FILE,
                None,
                format!("group {group} still lists {name}; remove it there first"),
            ));
        }
        if let Some(rule) = self.rules.secrets.values().find(|r| {
            r.recipients
                .iter()
                .any(|m| m.name == name && m.via == Via::Direct)
        }) {
            return Err(Error::input(
                RULES_FILE,
                None,
                format!(
                    "{}.recipients still names {name}; remove it there first",
                    rule.name
                ),
            ));
        }
        Ok(())
    }

    /// Every key a secret must be encrypted to, with the member it belongs to.
    pub fn recipient_keys<'a>(&'a self, rule: &'a SecretRule) -> Vec<(&'a Member, &'a RecipientKey)> {
        rule.recipients
            .iter()
            .flat_map(|m| self.keys_of(m).iter().map(move |k| (m, k)))
            .collect()
    }
}

/// The registered keys, for `host add` and `admin add` to refuse a key or a name that
/// is already taken, before anything is written.
#[derive(Debug)]
pub struct Registered {
    /// Host name → its key(s).
    pub hosts: BTreeMap<String, Vec<RecipientKey>>,
    /// Admin name → their key(s).
    pub admins: BTreeMap<String, Vec<RecipientKey>>,
}

/// The admins' keys alone (`keys/admins/`): name → key(s). What `bento status` and `bento
/// log` need to name who signed a manifest, without reading the hosts' keys or the rules.
pub fn admin_keys(root: &Path) -> Result<BTreeMap<String, Vec<RecipientKey>>> {
    read_key_dir(root, ADMIN_KEYS_DIR)
}

impl Registered {
    /// Reads `keys/hosts/` and `keys/admins/` of the fleet at `root`.
    pub fn read(root: &Path) -> Result<Registered> {
        Ok(Registered {
            hosts: read_key_dir(root, HOST_KEYS_DIR)?,
            admins: read_key_dir(root, ADMIN_KEYS_DIR)?,
        })
    }

    /// Every registered name with its role, key file and keys, the hosts first.
    fn owners(&self) -> impl Iterator<Item = (&String, &'static str, String, &Vec<RecipientKey>)> {
        let hosts = self
            .hosts
            .iter()
            .map(|(n, k)| (n, "host", format!("{HOST_KEYS_DIR}/{n}.pub"), k));
        let admins = self
            .admins
            .iter()
            .map(|(n, k)| (n, "admin", format!("{ADMIN_KEYS_DIR}/{n}.pub"), k));
        hosts.chain(admins)
    }

    /// A name must mean one thing, and a key must belong to one name.
    fn check_no_clashes(&self) -> Result<()> {
        if let Some(name) = self.hosts.keys().find(|h| self.admins.contains_key(*h)) {
            return Err(Error::input(
                format!("keys/admins/{name}.pub"),
                None,
                format!("`{name}` is also a host (keys/hosts/{name}.pub); rename one of them"),
            ));
        }
        let mut owner: BTreeMap<&RecipientKey, String> = BTreeMap::new();
        for (_, _, file, keys) in self.owners() {
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

    /// Refuses registering `keys` as `file` (`keys/hosts/web3.pub`): the name must not be
    /// taken by the other kind, and no key may already belong to another name. `source`
    /// names where the keys came from (the `--key` file). The file being replaced
    /// (`--replace`) does not count as another owner.
    pub fn check_new(&self, file: &str, keys: &[RecipientKey], source: &str) -> Result<()> {
        let name = file
            .rsplit('/')
            .next()
            .and_then(|f| f.strip_suffix(".pub"))
            .unwrap_or(file);
        for (owner, role, owner_file, owned) in self.owners() {
            if owner_file == file {
                continue;
            }
            if owner == name {
                return Err(Error::input(
                    file,
                    None,
                    format!(
                        "`{name}` is already {} {role} ({owner_file}); a host and an admin cannot share a name: \
                         pick another; nothing changed",
                        if role == "admin" { "an" } else { "a" }
                    ),
                ));
            }
            if let Some(key) = keys.iter().find(|k| owned.contains(k)) {
                return Err(Error::input(
                    source,
                    None,
                    format!(
                        "this key ({}) is already registered as {role} {owner} ({owner_file}); \
                         each key belongs to one host or admin: nothing changed",
                        key.fingerprint()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `s` quoted for a POSIX shell when it needs to be.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/+=:,@".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// [`Tracked::of`] for the fleet at `root`, its error naming the fleet.
fn published(root: &Path) -> Result<Tracked> {
    Tracked::of(root).map_err(|e| e.at(root.display().to_string()))
}

/// Reads every `<name>.pub` of a key directory (a missing directory is empty).
fn read_key_dir(root: &Path, rel: &str) -> Result<BTreeMap<String, Vec<RecipientKey>>> {
    let mut out = BTreeMap::new();
    let entries = match std::fs::read_dir(root.join(rel)) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(rel, e)),
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io(rel, e))?;
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
