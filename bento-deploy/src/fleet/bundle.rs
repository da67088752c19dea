//! A host's bundle, assembled in memory: `config/` (the host's configuration directory
//! with symlinks resolved, like `rsync -L`), `secrets/<name>.age` for exactly the secrets
//! the host is a recipient of, `templates/<name>` (the text, unrendered) for the templates
//! rendered on it, and the [`Manifest`] describing them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bento_secrets::fleet_files::{self, FleetFileError, Kind, Tracked};
use bento_secrets::rules::{Role, SecretRule};
use bento_secrets::spec::{SecretSpec, TemplateSpec};
use bento_secrets::Fleet;

use crate::dirents::Dir;
use crate::error::Error;
use crate::fleet::hosts::Host;
use crate::manifest::{Manifest, FORMAT};
use crate::wire::digest::{sha256_hex, Sha256};
use bento_secrets::names::{BundlePath, HostName, NameError};
use rustix::fs::FileType;

/// One file of a bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    /// The content.
    pub bytes: Vec<u8>,
    /// Its SHA-256.
    pub sha256: Sha256,
}

impl File {
    fn new(bytes: Vec<u8>) -> File {
        let sha256 = Sha256::of(&bytes);
        File { bytes, sha256 }
    }
}

/// Everything a host receives, but the manifest's generation, time and signature.
#[derive(Clone, Debug)]
pub struct Bundle {
    /// The host.
    pub host: HostName,
    /// Bundle path (`config/…`, `secrets/<name>.age`) → file.
    pub files: BTreeMap<BundlePath, File>,
    /// The host's secrets, in name order.
    pub secrets: Vec<SecretSpec>,
    /// The host's templates, in name order.
    pub templates: Vec<TemplateSpec>,
}

impl Bundle {
    /// Assembles `host`'s bundle from `fleet` (whose root `bento deploy` also passes as
    /// `_root`). Only what the fleet publishes is taken ([`read_config`]); symlinks are
    /// followed to it; loops, dangling links and special files are errors naming the path.
    pub fn assemble(_root: &Path, fleet: &Fleet, host: &Host) -> Result<Bundle, Error> {
        let mut files = read_config(fleet.tracked()?, host)?;

        let mut secrets = Vec::new();
        for rule in fleet.rules.secrets.values().filter(|r| goes_to(r, &host.name)) {
            let Some(bytes) = bento_secrets::store::read_ciphertext(fleet, rule)? else {
                return Err(Error::input(
                    fleet.secret_shown(rule),
                    format!("missing; create it with `bento secret edit {}`", rule.name),
                ));
            };
            let file = File::new(bytes);
            let spec = SecretSpec::from_rule(rule, file.sha256.to_string());
            files.insert(parsed(&spec.file, &spec.file)?, file);
            secrets.push(spec);
        }
        // Templates travel as their text: the host renders them.
        let mut templates = Vec::new();
        for rule in fleet
            .rules
            .templates
            .values()
            .filter(|t| t.hosts.contains(&host.name))
        {
            let file = File::new(rule.text.as_bytes().to_vec());
            let spec = TemplateSpec::from_rule(rule, file.sha256.to_string());
            files.insert(parsed(&spec.file, &spec.file)?, file);
            templates.push(spec);
        }
        Ok(Bundle {
            host: parsed(&host.name, &host.shown)?,
            files,
            secrets,
            templates,
        })
    }

    /// The manifest of this bundle at `generation`, following the manifest whose hash is
    /// `previous`.
    pub fn manifest(
        &self,
        generation: u64,
        created: String,
        git_commit: Option<String>,
        system: Option<String>,
        previous: Option<Sha256>,
    ) -> Manifest {
        Manifest {
            format: FORMAT,
            host: self.host.clone(),
            generation,
            created,
            git_commit,
            system,
            previous,
            files: self
                .files
                .iter()
                .map(|(path, f)| (path.clone(), f.sha256.clone()))
                .collect(),
            sizes: self
                .files
                .iter()
                .map(|(path, f)| (path.clone(), f.bytes.len() as u64))
                .collect(),
            secrets: self.secrets.clone(),
            templates: self.templates.clone(),
        }
    }

    /// How many configuration files the bundle holds.
    pub fn config_files(&self) -> usize {
        self.files.keys().filter(|p| p.starts_with("config/")).count()
    }

    /// The digest of the bundle's configuration files; see [`config_digest`].
    pub fn config_digest(&self) -> String {
        config_digest(&self.files)
    }
}

/// Reads a host's configuration directory as bundle files (`config/…`), following
/// symlinks that stay inside the fleet. Only what the fleet publishes is taken
/// (`published`: in a git repo, the files git tracks; never `.git`, `.bento` or, outside
/// git, another dot-directory): an untracked entry is left out, a link to such a place is
/// refused, naming the link.
pub fn read_config(published: &Tracked, host: &Host) -> Result<BTreeMap<BundlePath, File>, Error> {
    let mut files = BTreeMap::new();
    let mut walk = Walk {
        published,
        ancestors: Vec::new(),
        out: &mut files,
    };
    let start = walk.resolve(&host.dir, &host.shown)?;
    walk.dir(&start, "config", &host.shown)?;
    Ok(files)
}

/// A digest of the configuration files alone (paths and contents): what `bento build`
/// built, so deploy can tell whether a recorded system path still applies.
pub fn config_digest(files: &BTreeMap<BundlePath, File>) -> String {
    let mut listing = String::new();
    for (path, file) in files.iter().filter(|(p, _)| p.starts_with("config/")) {
        listing.push_str(path);
        listing.push('\0');
        listing.push_str(&file.sha256);
        listing.push('\n');
    }
    sha256_hex(listing.as_bytes())
}

/// `text` as a checked name (a bundle path, a host name); a file whose name cannot be one
/// (a backslash, say) is refused, naming it as `shown`.
fn parsed<T: std::str::FromStr<Err = NameError>>(text: &str, shown: &str) -> Result<T, Error> {
    text.parse()
        .map_err(|e: NameError| Error::input(shown, e.to_string()))
}

/// Whether `host` is among a secret's resolved recipients.
pub fn goes_to(rule: &SecretRule, host: &str) -> bool {
    rule.recipients
        .iter()
        .any(|m| m.role == Role::Host && m.name == host)
}

/// A depth-first walk of a configuration directory, following symlinks.
struct Walk<'a> {
    /// What the fleet publishes, and its real root.
    published: &'a Tracked,
    /// The real paths of the directories being walked: a link back to one is a loop.
    ancestors: Vec<PathBuf>,
    out: &'a mut BTreeMap<BundlePath, File>,
}

impl Walk<'_> {
    fn dir(&mut self, real: &Path, rel: &str, shown: &str) -> Result<(), Error> {
        self.ancestors.push(real.to_path_buf());
        let dir = Dir::open(real).map_err(|e| Error::io(shown, e))?;
        let mut entries = dir.entries().map_err(|e| Error::io(shown, e))?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        for entry in entries {
            let Some(name) = entry.name.to_str() else {
                return Err(Error::input(
                    format!("{shown}/{}", entry.name.to_string_lossy()),
                    "file name is not UTF-8; rename it",
                ));
            };
            let (child_rel, child_shown) = (format!("{rel}/{name}"), format!("{shown}/{name}"));
            let io = |e| Error::io(&child_shown, e);
            // The listing gives the type; only a symlink (or a file system that does
            // not say) needs a stat.
            let kind = match entry.kind {
                Some(kind) => kind,
                None => FileType::from_raw_mode(dir.stat(&entry.name).map_err(io)?.st_mode),
            };
            // What the fleet does not publish (untracked, `.git`, a dot-directory
            // outside git) is not part of the host's configuration.
            let here = real.join(name);
            if self.published.admits(&here, kind == FileType::Directory).is_err() {
                continue;
            }
            if name.contains('\\') {
                return Err(Error::input(
                    child_shown,
                    "file name holds a backslash; rename it",
                ));
            }
            let target = if kind == FileType::Symlink {
                let target = self.resolve(&here, &child_shown)?;
                if target.is_dir() {
                    self.enter(&target, &child_rel, &child_shown)?;
                    continue;
                }
                target
            } else if kind == FileType::Directory {
                self.enter(&here, &child_rel, &child_shown)?;
                continue;
            } else if kind == FileType::RegularFile {
                here
            } else {
                return Err(not_a_file(child_shown));
            };
            let bytes = fleet_files::read(&target, Kind::Config).map_err(|e| match e {
                FleetFileError::Io(e) => io(e),
                other => Error::input(&child_shown, other.to_string()),
            })?;
            self.out
                .insert(parsed(&child_rel, &child_shown)?, File::new(bytes));
        }
        self.ancestors.pop();
        Ok(())
    }

    /// Walks into the directory `real`, unless that closes a loop.
    fn enter(&mut self, real: &Path, rel: &str, shown: &str) -> Result<(), Error> {
        if self.ancestors.iter().any(|a| a == real) {
            return Err(Error::input(
                shown,
                "symlink loop: it leads back to a directory that contains it; remove the link",
            ));
        }
        self.dir(real, rel, shown)
    }

    /// The real path of `path` (a symlink, or the host's directory), which must stay
    /// inside the fleet and lead to what it publishes.
    fn resolve(&self, path: &Path, shown: &str) -> Result<PathBuf, Error> {
        let target = std::fs::read_link(path).ok();
        let pointed = || {
            target
                .as_ref()
                .map(|t| {
                    format!(
                        " (-> {})",
                        bento_secrets::error::escape_controls(&t.to_string_lossy())
                    )
                })
                .unwrap_or_default()
        };
        match self.published.resolve(path) {
            Ok(real) => Ok(real),
            Err(FleetFileError::Io(e)) if e.raw_os_error() == Some(nix::libc::ELOOP) => Err(Error::input(
                shown,
                format!("symlink loop{}; remove the link", pointed()),
            )),
            Err(FleetFileError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::input(
                shown,
                format!("dangling symlink{}; fix or remove it", pointed()),
            )),
            Err(FleetFileError::Io(e)) => Err(Error::io(shown, e)),
            Err(FleetFileError::Outside(_)) => Err(Error::input(
                shown,
                format!(
                    "symlink points outside the fleet repo{}; copy the file into the repo instead",
                    pointed()
                ),
            )),
            Err(other) => Err(Error::input(shown, format!("refused{}: {other}", pointed()))),
        }
    }
}

fn not_a_file(shown: String) -> Error {
    Error::input(
        shown,
        "not a regular file or directory (a socket, fifo or device?); remove it",
    )
}
