//! `bento activate`: decrypt a host's secrets from an installed bundle into a RAM
//! filesystem, as a new generation, and switch to it atomically.
//!
//! Each secret is independent: one that fails (cannot be decrypted, hash mismatch, unknown
//! user) is reported by name and keeps its previous content, while the others activate.
//! If the RAM filesystem fills up, the new generation is dropped and the previous one
//! stays in place. Plaintext is only ever in `Zeroizing` memory and in the tree.

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::accounts::{self, Owner};
use crate::activate_links::{link_paths, place_links};
use crate::activate_templates as templates;
use crate::error::{Error, Result};
use crate::generation::{self, Family, Tree, FOR_USERS, SECRETS, SPECS_FILE, STORE_DIR};
use crate::identity::Identities;
use crate::lock::sha256_hex;
use crate::manifest::{Entries, MANIFEST_FILE};
use crate::prompt::Prompt;
use crate::ramfs::{self, FsKind, Mounted};
use crate::spec::{SecretSpec, TemplateSpec};
use crate::units::{Handled, UnitControl};

/// Owner of the users phase's secrets and of the bookkeeping files.
const ROOT: Owner = Owner { uid: 0, gid: 0 };

/// Which secrets an activation handles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    /// Secrets marked `needed_for_users`, before users exist: root-only, in
    /// `<root>/secrets-for-users`.
    Users,
    /// All other secrets, in `<root>/secrets`.
    #[default]
    Secrets,
}

/// How to activate.
#[derive(Clone, Debug)]
pub struct Options {
    /// The installed bundle (holding `manifest.json` and `secrets/`).
    pub bundle: PathBuf,
    /// The activation root, `/run/bento` on a host.
    pub root: PathBuf,
    /// The host's private keys.
    pub identities: Vec<PathBuf>,
    /// Which secrets.
    pub phase: Phase,
    /// Report what would change, change nothing.
    pub dry_run: bool,
    /// How many previous generations to keep.
    pub keep: usize,
    /// Which RAM filesystem to mount.
    pub fs: FsKind,
    /// Mount the RAM filesystem (off only for unprivileged test or demo runs).
    pub mount: bool,
    /// What to do with the units of changed secrets: restart them with `systemctl` (or
    /// queue their restart with `systemctl --no-block`), or leave them.
    pub units: UnitControl,
}

/// A secret that failed, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The secret's name (escaped if it was not a valid name).
    pub name: String,
    /// Why, in one line.
    pub error: String,
    /// Whether its previous content was kept.
    pub kept_previous: bool,
}

/// What an activation did (or, with `dry_run`, would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// The generation switched to (`None` for a dry run).
    pub generation: Option<u64>,
    /// Secrets that are new.
    pub added: Vec<String>,
    /// Secrets whose content changed.
    pub changed: Vec<String>,
    /// Secrets no longer in the bundle.
    pub removed: Vec<String>,
    /// Secrets unchanged.
    pub unchanged: Vec<String>,
    /// Secrets whose content is unchanged but whose owner, group, mode or `path` changed:
    /// applied, without restarting or reloading their units (those follow the content).
    pub attributes_changed: Vec<String>,
    /// Whether this was the users phase (`needed_for_users` secrets only).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub for_users: bool,
    /// Secrets that failed.
    pub failed: Vec<Failure>,
    /// Units of added or changed secrets: restarted, queued, left or (dry run) that
    /// would be, as `units_handled` says.
    pub restart_units: Vec<String>,
    /// What was done with `restart_units` (absent when there were none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub units_handled: Option<Handled>,
    /// Why restarting them failed: nothing was restarted then, and the run fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub units_error: Option<String>,
    /// Units reloaded (or, in a dry run, that would be); none that is also restarted.
    pub reload_units: Vec<String>,
    /// Things the admin should know.
    pub warnings: Vec<String>,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

/// Activation never asks anything: host keys are not passphrase-protected.
struct NoPrompt;
impl Prompt for NoPrompt {
    fn passphrase(&self, _: &str) -> Option<Zeroizing<String>> {
        None
    }
}

/// A secret ready to be written: plaintext and resolved owner.
type Prepared = std::result::Result<(Zeroizing<Vec<u8>>, Owner), String>;

/// A secret in the new generation: its write (or its previous content carried forward),
/// and whether its content is the previous one (`None`: new), or why it was not prepared.
type Outcome = (std::io::Result<()>, std::result::Result<Option<bool>, String>);

/// Activates the secrets of `opts.bundle`.
pub fn activate(opts: &Options) -> Result<Report> {
    let family = if opts.phase == Phase::Users {
        FOR_USERS
    } else {
        SECRETS
    };
    let mut report = Report {
        dry_run: opts.dry_run,
        for_users: opts.phase == Phase::Users,
        ..Report::default()
    };
    let (specs, templates) = read_specs(&opts.bundle, opts.phase, &mut report)?;

    let prepared: Vec<Prepared> = if specs.is_empty() {
        Vec::new()
    } else {
        match Identities::load_with(&opts.identities, Arc::new(NoPrompt)) {
            Ok(ids) => specs
                .par_iter()
                .map(|spec| prepare(spec, opts.phase, &opts.bundle, &ids))
                .collect(),
            Err(e) => specs.iter().map(|_| Err(e.to_string())).collect(),
        }
    };

    let rendered = templates::render_all(&opts.bundle, &templates, &specs, &prepared);

    if opts.dry_run {
        dry_run(opts, family, &specs, prepared, &templates, rendered, &mut report);
        return Ok(report);
    }

    refuse_symlinks(&opts.root)?;
    let store = opts.root.join(STORE_DIR);
    if opts.mount {
        let mounted = ramfs::ensure_mounted(&store, opts.fs).map_err(|e| Error::Activate {
            msg: format!("{}: {e}", store.display()),
        })?;
        if mounted == Mounted::FreshWithSwap {
            report
                .warnings
                .push("this kernel has no tmpfs `noswap`: secrets could be swapped; use ramfs".into());
        }
    } else {
        std::fs::create_dir_all(&store).map_err(|e| Error::io(store.display().to_string(), e))?;
        if !ramfs::is_ram_fs(&store) {
            report.warnings.push(format!(
                "--no-mount: {} is not a RAM filesystem: the plaintext secrets are on disk",
                store.display()
            ));
        }
    }
    let io = |e: std::io::Error| Error::Activate {
        msg: format!("{}: {e}", opts.root.display()),
    };
    let tree = Tree::open(&opts.root).map_err(io)?;
    let old_n = tree.current(family);
    let old_dir = old_n.and_then(|n| tree.open_generation(family, n).ok());
    let old_specs = old_dir.as_ref().map(read_old_specs).unwrap_or_default();
    let n = tree
        .generations(family)
        .map_err(io)?
        .last()
        .copied()
        .max(old_n)
        .unwrap_or(0)
        + 1;
    let gen = tree.create_generation(family, n).map_err(io)?;
    let chown = rustix::process::geteuid().is_root();
    if !chown {
        report
            .warnings
            .push("not running as root: files keep the current user as owner".into());
    }

    // The secrets are written across cores, each on its own (the plaintext is zeroed as
    // soon as it is written), then reported in the manifest's order.
    let outcomes: Vec<Outcome> = specs
        .par_iter()
        .zip(prepared)
        .map(|(spec, prepared)| {
            let old = old_dir
                .as_ref()
                .and_then(|d| generation::read_file(d, &spec.name).ok().flatten());
            match prepared {
                Ok((plain, owner)) => {
                    let mode = match opts.phase {
                        Phase::Users => 0o400,
                        Phase::Secrets => spec.mode_bits(),
                    };
                    let same = old.as_ref().map(|(before, _)| before[..] == plain[..]);
                    (
                        generation::write_file(&gen, &spec.name, owner, mode, &plain, chown),
                        Ok(same),
                    )
                }
                Err(error) => (carry_forward(&gen, &spec.name, old.as_ref(), chown), Err(error)),
            }
        })
        .collect();
    let mut present: Vec<SecretSpec> = Vec::new();
    for (spec, (written, outcome)) in specs.iter().zip(outcomes) {
        let decrypt_failed = outcome.is_err();
        match outcome {
            Ok(same) if written.is_ok() => {
                let list = match same {
                    None => &mut report.added,
                    Some(true) if attributes_differ(spec, &old_specs) => &mut report.attributes_changed,
                    Some(true) => &mut report.unchanged,
                    Some(false) => &mut report.changed,
                };
                list.push(spec.name.clone());
            }
            Ok(_) => {}
            Err(error) => report.failed.push(Failure {
                name: spec.name.clone(),
                error,
                kept_previous: written.is_ok(),
            }),
        }
        match written {
            Ok(()) => present.push(spec.clone()),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) => {
                let _ = tree.remove_generation(family, n);
                return Err(Error::Activate {
                    msg: format!(
                        "{}: the RAM filesystem is full; secrets generation {} is still active, nothing changed",
                        store.display(),
                        old_n.map_or("none".into(), |o| o.to_string())
                    ),
                });
            }
            // No previous content to keep: the failure is reported above.
            Err(_) if decrypt_failed => {}
            Err(e) => report.failed.push(Failure {
                name: spec.name.clone(),
                error: format!("writing it: {e}"),
                kept_previous: false,
            }),
        }
    }
    let old_templates_dir = templates::open_old(old_dir.as_ref());
    let old_templates = templates::old_specs(old_templates_dir.as_ref());
    let present_templates = match templates::write_all(
        &gen,
        old_templates_dir.as_ref(),
        &templates,
        rendered,
        chown,
        ROOT,
        &mut report,
    ) {
        Ok(present) => present,
        Err(e) => {
            let _ = tree.remove_generation(family, n);
            return Err(Error::Activate {
                msg: format!(
                    "{}: writing the templates: {e}; generation {} is still active, nothing changed",
                    store.display(),
                    old_n.map_or("none".into(), |o| o.to_string())
                ),
            });
        }
    };
    let specs_json = serde_json::to_vec_pretty(&present).unwrap_or_default();
    generation::write_file(&gen, SPECS_FILE, ROOT, 0o400, &specs_json, chown).map_err(io)?;
    report.removed = removed(&old_specs, &present);
    report
        .removed
        .extend(templates::removed(&old_templates, &present_templates));
    let record = serde_json::to_vec_pretty(&Record::of(&report)).unwrap_or_default();
    generation::write_file(&gen, RECORD_FILE, ROOT, 0o400, &record, chown).map_err(io)?;
    drop(gen);
    tree.switch(family, n).map_err(io)?;
    if !present_templates.is_empty() {
        tree.ensure_link(templates::TEMPLATES_LINK, templates::TEMPLATES_TARGET)
            .map_err(io)?;
    }
    report.generation = Some(n);

    if opts.mount {
        link_paths(&tree, family, &present, &old_specs, &mut report);
        let stable = opts.root.join(templates::TEMPLATES_LINK);
        let paths = |t: &[TemplateSpec]| -> Vec<(String, Option<String>)> {
            t.iter().map(|s| (s.name.clone(), s.path.clone())).collect()
        };
        place_links(
            &stable,
            &paths(&present_templates),
            &paths(&old_templates),
            "templates/",
            &mut report,
        );
    } else if present.iter().any(|s| s.path.is_some()) || present_templates.iter().any(|s| s.path.is_some()) {
        report.warnings.push(
            "--no-mount: nothing outside the root is touched, so `path` symlinks are not placed".into(),
        );
    }
    prune(&tree, family, n, opts.keep);
    if opts.phase == Phase::Secrets {
        crate::activate_units::restart_units(opts, &specs, &templates, &mut report);
    }
    Ok(report)
}

/// Per generation: what the activation that made it changed (names only), so that whoever
/// started it (the agent, around a rebuild that activates) can tell what went live.
pub const RECORD_FILE: &str = ".activation.json";

/// What one activation changed, by name: kept beside its generation ([`RECORD_FILE`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Record {
    /// Secrets (and `templates/<name>`) added.
    pub added: Vec<String>,
    /// Secrets whose content changed.
    pub changed: Vec<String>,
    /// Secrets whose owner, group, mode or path alone changed.
    pub attributes_changed: Vec<String>,
    /// Secrets no longer there.
    pub removed: Vec<String>,
    /// Secrets that failed (their previous content kept, when there was one).
    pub failed: Vec<String>,
}

impl Record {
    fn of(report: &Report) -> Record {
        Record {
            added: report.added.clone(),
            changed: report.changed.clone(),
            attributes_changed: report.attributes_changed.clone(),
            removed: report.removed.clone(),
            failed: report.failed.iter().map(|f| f.name.clone()).collect(),
        }
    }

    /// Every name that changed in some way, sorted, once.
    pub fn names(&self) -> Vec<String> {
        let all: BTreeSet<&String> = self
            .added
            .iter()
            .chain(&self.changed)
            .chain(&self.attributes_changed)
            .chain(&self.removed)
            .collect();
        all.into_iter().cloned().collect()
    }
}

/// The activations in force under `root`: per family (users phase, secrets), its current
/// generation number and that activation's [`Record`]. A family never activated (or a root
/// that does not exist) is `None`; a record unreadable (a generation from an older bento)
/// is an empty one.
pub fn in_force(root: &Path) -> [Option<(u64, Record)>; 2] {
    let Ok(tree) = Tree::open(root) else {
        return [None, None];
    };
    [FOR_USERS, SECRETS].map(|family| {
        let n = tree.current(family)?;
        let record = tree
            .open_generation(family, n)
            .ok()
            .and_then(|dir| generation::read_file(&dir, RECORD_FILE).ok().flatten())
            .and_then(|(bytes, _)| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        Some((n, record))
    })
}

/// Refuses an activation root that is, or lies under, a symlink: mounting there would
/// mount at the link's target (and the tree, opened without following links, would then
/// fail, leaving that mount behind). Every existing component is checked with lstat.
fn refuse_symlinks(root: &Path) -> Result<()> {
    for dir in root.ancestors().filter(|d| !d.as_os_str().is_empty()) {
        match std::fs::symlink_metadata(dir) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(dir).map_or_else(|_| "?".into(), |t| t.display().to_string());
                return Err(Error::Activate {
                    msg: format!(
                        "{}: is a symlink (to {target}); refusing to activate under it: pass the real \
                         directory as --root",
                        dir.display()
                    ),
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(dir.display().to_string(), e)),
        }
    }
    Ok(())
}

/// The valid specs of this phase from the bundle's manifest; invalid ones are failures.
/// The templates are those of the secrets phase (none for the users phase).
fn read_specs(
    bundle: &Path,
    phase: Phase,
    report: &mut Report,
) -> Result<(Vec<SecretSpec>, Vec<TemplateSpec>)> {
    let path = bundle.join(MANIFEST_FILE);
    let shown = path.display().to_string();
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&shown, e))?;
    let manifest = Entries::parse(&bytes)
        .map_err(|e| Error::input(&shown, Some(e.line()), format!("not a bundle manifest: {e}")))?;
    let mut specs: Vec<SecretSpec> = Vec::new();
    for (i, value) in manifest.secrets.into_iter().enumerate() {
        let label = value
            .get("name")
            .and_then(|n| n.as_str())
            .map_or(format!("secrets[{i}]"), |n| n.escape_default().to_string());
        let fail = |error: String| Failure {
            name: label.clone(),
            error,
            kept_previous: false,
        };
        let spec: SecretSpec = match serde_json::from_value(value) {
            Ok(s) => s,
            Err(e) => {
                report.failed.push(fail(format!("{shown}: {e}")));
                continue;
            }
        };
        if let Err(e) = spec.validate() {
            report.failed.push(fail(format!("{shown}: {e}; refused")));
            continue;
        }
        if specs.iter().any(|s| s.name == spec.name) {
            report
                .failed
                .push(fail(format!("{shown}: listed twice; refused")));
            continue;
        }
        if spec.needed_for_users == (phase == Phase::Users) {
            specs.push(spec);
        }
    }
    let templates = match phase {
        Phase::Secrets => templates::read_specs(manifest.templates, &shown, report),
        Phase::Users => Vec::new(),
    };
    Ok((specs, templates))
}

/// Reads, checks and decrypts one secret, and resolves its owner. Secrets for the users
/// phase are root's whatever their spec says, and their owners may not exist yet: they are
/// not looked up.
fn prepare(spec: &SecretSpec, phase: Phase, bundle: &Path, ids: &Identities) -> Prepared {
    let file = bundle.join(&spec.file);
    let ciphertext = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    if sha256_hex(&ciphertext) != spec.sha256 {
        return Err(format!(
            "{}: SHA-256 differs from the manifest; refused",
            spec.file
        ));
    }
    let owner = match phase {
        Phase::Users => ROOT,
        Phase::Secrets => accounts::resolve(&spec.owner, spec.group.as_deref())?,
    };
    let plain = crate::crypt::decrypt(&ciphertext, ids, &spec.file, "this host").map_err(|e| match e {
        Error::NoMatchingIdentity { file, tried, .. } => format!(
            "{file}: the host key ({tried}) cannot decrypt it; if the host key changed, update \
             keys/hosts/<host>.pub, rekey and deploy"
        ),
        other => other.to_string(),
    })?;
    Ok((plain, owner))
}

/// Copies the previous content of a failed secret into the new generation.
fn carry_forward(
    gen: &OwnedFd,
    name: &str,
    old: Option<&(Zeroizing<Vec<u8>>, rustix::fs::Stat)>,
    chown: bool,
) -> std::io::Result<()> {
    let Some((bytes, st)) = old else {
        return Err(std::io::Error::other("no previous content"));
    };
    let owner = Owner {
        uid: st.st_uid,
        gid: st.st_gid,
    };
    generation::write_file(gen, name, owner, st.st_mode & 0o7777, bytes, chown)
}

fn read_old_specs(dir: &OwnedFd) -> Vec<SecretSpec> {
    generation::read_file(dir, SPECS_FILE)
        .ok()
        .flatten()
        .and_then(|(bytes, _)| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// Without touching anything: what would be added, changed, removed.
fn dry_run(
    opts: &Options,
    family: Family,
    specs: &[SecretSpec],
    prepared: Vec<Prepared>,
    templates: &[TemplateSpec],
    rendered: Vec<templates::Rendered>,
    report: &mut Report,
) {
    let tree = Tree::open(&opts.root).ok();
    let old_dir = tree
        .as_ref()
        .and_then(|t| t.current(family).and_then(|n| t.open_generation(family, n).ok()));
    let old_specs = old_dir.as_ref().map(read_old_specs).unwrap_or_default();
    for (spec, prepared) in specs.iter().zip(prepared) {
        let old = old_dir
            .as_ref()
            .and_then(|d| generation::read_file(d, &spec.name).ok().flatten());
        match prepared {
            Ok((plain, _)) => {
                classify(
                    report,
                    &spec.name,
                    old.as_ref().map(|(before, _)| &before[..]),
                    &plain,
                );
                if report.unchanged.last() == Some(&spec.name) && attributes_differ(spec, &old_specs) {
                    report.unchanged.pop();
                    report.attributes_changed.push(spec.name.clone());
                }
            }
            Err(error) => report.failed.push(Failure {
                name: spec.name.clone(),
                error,
                kept_previous: old.is_some(),
            }),
        }
    }
    report.removed = removed(&old_specs, specs);
    let old_templates_dir = templates::open_old(old_dir.as_ref());
    for (spec, rendered) in templates.iter().zip(rendered) {
        let old = old_templates_dir
            .as_ref()
            .and_then(|d| generation::read_file(d, &spec.name).ok().flatten());
        let name = templates::label(&spec.name);
        match rendered {
            Ok((plain, _)) => classify(report, &name, old.as_ref().map(|(b, _)| &b[..]), &plain),
            Err(error) => report.failed.push(Failure {
                name,
                error,
                kept_previous: old.is_some(),
            }),
        }
    }
    let old_templates = templates::old_specs(old_templates_dir.as_ref());
    report
        .removed
        .extend(templates::removed(&old_templates, templates));
    if opts.phase == Phase::Secrets {
        (report.restart_units, report.reload_units) =
            crate::activate_units::units_to_restart(specs, templates, report);
        if !report.restart_units.is_empty() || !report.reload_units.is_empty() {
            report.units_handled = Some(Handled::WouldRestart);
        }
    }
}

/// Whether `spec` lands differently than in the previous generation (`old`): owner, group,
/// mode or `path`. A secret that was not there before does not count (it is added).
fn attributes_differ(spec: &SecretSpec, old: &[SecretSpec]) -> bool {
    old.iter().find(|o| o.name == spec.name).is_some_and(|o| {
        (&o.owner, &o.group, &o.mode, &o.path) != (&spec.owner, &spec.group, &spec.mode, &spec.path)
    })
}

/// Files `name` under added, unchanged or changed, by its content `before` and `now`.
fn classify(report: &mut Report, name: &str, before: Option<&[u8]>, now: &[u8]) {
    let list = match before {
        None => &mut report.added,
        Some(before) if before == now => &mut report.unchanged,
        Some(_) => &mut report.changed,
    };
    list.push(name.to_owned());
}

/// The secrets of the previous generation that are not in the new one.
fn removed(old: &[SecretSpec], new: &[SecretSpec]) -> Vec<String> {
    let names: BTreeSet<&str> = new.iter().map(|s| s.name.as_str()).collect();
    old.iter()
        .filter(|s| !names.contains(s.name.as_str()))
        .map(|s| s.name.clone())
        .collect()
}

/// Removes generations older than the `keep` newest before `current`.
fn prune(tree: &Tree, family: Family, current: u64, keep: usize) {
    let Ok(all) = tree.generations(family) else { return };
    let older: Vec<u64> = all.into_iter().filter(|g| *g < current).collect();
    let drop_count = older.len().saturating_sub(keep);
    for g in &older[..drop_count] {
        let _ = tree.remove_generation(family, *g);
    }
}

/// The host's default identities: its ssh host keys that exist.
pub fn host_identities() -> Vec<PathBuf> {
    ["/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_rsa_key"]
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .collect()
}
