//! `bento activate`: decrypt a host's secrets from an installed bundle into a RAM
//! filesystem, as a new generation, and switch to it atomically.
//!
//! Each secret is independent: one that fails (cannot be decrypted, hash mismatch, unknown
//! user) is reported by name and keeps its previous content, while the others activate.
//! If the RAM filesystem fills up, the new generation is dropped and the previous one
//! stays in place. Plaintext is only ever in `Zeroizing` memory and in the tree.

mod decrypt;
pub mod links;
mod options;
mod outcome;
mod record;
pub mod templates;
pub mod units;

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use zeroize::Zeroizing;

use crate::accounts::Owner;
use crate::error::{Error, Result};
use crate::manifest::{Entries, MANIFEST_FILE};
use crate::mode::Mode;
use crate::ramfs::{self, Mounted};
use crate::secrets_tree::{self, Family, Tree, FOR_USERS, SECRETS, SPECS_FILE, STORE_DIR};
use crate::spec::{SecretSpec, TemplateSpec};
use crate::units::Handled;
use decrypt::{Prepared, ROOT};
pub use options::{Options, Phase};
pub use outcome::{Failure, NotReady, Report};
pub use record::{in_force, Record, RECORD_FILE};

/// A secret in the new generation: its write (or its previous content carried forward),
/// and whether its content is the previous one (`None`: new), or why it was not prepared.
type Outcome = (std::io::Result<()>, std::result::Result<Option<bool>, NotReady>);

/// Valid specs, each beside the mode its validation parsed.
type Checked<S> = (Vec<S>, Vec<Mode>);

/// The generation being written, beside the one in force.
struct Next {
    tree: Tree,
    family: Family,
    /// The store directory, as shown in messages.
    store: PathBuf,
    /// The generation in force, and its directory and specs.
    old_n: Option<u64>,
    old_dir: Option<OwnedFd>,
    old_specs: Vec<SecretSpec>,
    /// The new generation.
    n: u64,
    gen: OwnedFd,
    /// Whether files get their owners (only as root).
    chown: bool,
}

impl Next {
    /// Drops the new generation: `what` went wrong (it ends with the words naming the
    /// generation in force, whose number follows); that one stays.
    fn abandon(&self, what: String) -> Error {
        let _ = self.tree.remove_generation(self.family, self.n);
        Error::Activate {
            msg: format!(
                "{}: {what} {} is still active, nothing changed",
                self.store.display(),
                self.old_n.map_or("none".into(), |o| o.to_string())
            ),
        }
    }
}

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
    let ((specs, modes), (templates, template_modes)) = read_specs(&opts.bundle, opts.phase, &mut report)?;
    let prepared = decrypt::decrypt_all(&specs, opts);
    let rendered = templates::render_all(&opts.bundle, &templates, &specs, &prepared);
    if opts.dry_run {
        dry_run(opts, family, &specs, prepared, &templates, rendered, &mut report);
        return Ok(report);
    }

    let store = mount_store(opts, &mut report)?;
    let io = |e: std::io::Error| Error::Activate {
        msg: format!("{}: {e}", opts.root.display()),
    };
    let next = open_next(opts, family, store, &mut report).map_err(io)?;
    let present = write_secrets(&next, opts.phase, &specs, &modes, prepared, &mut report)?;
    let old_templates_dir = templates::open_old(next.old_dir.as_ref());
    let old_templates = read_old_specs(old_templates_dir.as_ref());
    let present_templates = templates::write_all(
        &next.gen,
        old_templates_dir.as_ref(),
        &templates,
        &template_modes,
        rendered,
        next.chown,
        &mut report,
    )
    .map_err(|e| next.abandon(format!("writing the templates: {e}; generation")))?;
    report.removed = removed(&next.old_specs, &present);
    report
        .removed
        .extend(templates::removed(&old_templates, &present_templates));
    let (tree, n, old_specs) = switch(next, &present, &present_templates, &report).map_err(io)?;
    report.generation = Some(n);

    place_paths(
        opts,
        &tree,
        family,
        (&present, &old_specs),
        (&present_templates, &old_templates),
        &mut report,
    );
    prune(&tree, family, n, opts.keep);
    if opts.phase == Phase::Secrets {
        units::restart_units(&opts.units, &specs, &templates, &mut report);
    }
    Ok(report)
}

/// The `path` symlinks of the secrets and templates (present, previous): placed only with
/// a mount, as a `--no-mount` run touches nothing outside the root.
fn place_paths(
    opts: &Options,
    tree: &Tree,
    family: Family,
    (present, old): (&[SecretSpec], &[SecretSpec]),
    (present_templates, old_templates): (&[TemplateSpec], &[TemplateSpec]),
    report: &mut Report,
) {
    if opts.mount {
        let stable = tree.link_path(family);
        links::place_links(&stable, (present, old), |s| (&s.name, &s.path), "", report);
        let stable = opts.root.join(templates::TEMPLATES_LINK);
        let templates = (present_templates, old_templates);
        links::place_links(&stable, templates, |t| (&t.name, &t.path), "templates/", report);
    } else if present.iter().any(|s| s.path.is_some()) || present_templates.iter().any(|s| s.path.is_some()) {
        report.warnings.push(
            "--no-mount: nothing outside the root is touched, so `path` symlinks are not placed".into(),
        );
    }
}

/// Makes sure the store is a RAM filesystem (mounting one unless `opts.mount` is off), under
/// a root reached through no symlink. Returns the store directory.
fn mount_store(opts: &Options, report: &mut Report) -> Result<PathBuf> {
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
    Ok(store)
}

/// Opens the tree and creates the generation after the newest one.
fn open_next(opts: &Options, family: Family, store: PathBuf, report: &mut Report) -> std::io::Result<Next> {
    let tree = Tree::open(&opts.root)?;
    let old_n = tree.current(family);
    let old_dir = old_n.and_then(|n| tree.open_generation(family, n).ok());
    let old_specs = read_old_specs(old_dir.as_ref());
    let n = tree.generations(family)?.last().copied().max(old_n).unwrap_or(0) + 1;
    let gen = tree.create_generation(family, n)?;
    let chown = rustix::process::geteuid().is_root();
    if !chown {
        report
            .warnings
            .push("not running as root: files keep the current user as owner".into());
    }
    Ok(Next {
        tree,
        family,
        store,
        old_n,
        old_dir,
        old_specs,
        n,
        gen,
        chown,
    })
}

/// Writes the prepared secrets into the new generation (a failed one keeps its previous
/// content), classifying each in `report`. Returns the secrets now present; a full RAM
/// filesystem drops the generation.
fn write_secrets(
    next: &Next,
    phase: Phase,
    specs: &[SecretSpec],
    modes: &[Mode],
    prepared: Vec<Prepared>,
    report: &mut Report,
) -> Result<Vec<SecretSpec>> {
    // The secrets are written across cores, each on its own (the plaintext is zeroed as
    // soon as it is written), then reported in the manifest's order.
    let outcomes: Vec<Outcome> = specs
        .par_iter()
        .zip(modes)
        .zip(prepared)
        .map(|((spec, mode), prepared)| {
            let old = previous(next.old_dir.as_ref(), &spec.name);
            match prepared {
                Ok((plain, owner)) => {
                    let mode = match phase {
                        Phase::Users => 0o400,
                        Phase::Secrets => mode.permissions(),
                    };
                    let same = old.as_ref().map(|(before, _)| before[..] == plain[..]);
                    (
                        secrets_tree::write_file(&next.gen, &spec.name, owner, mode, &plain, next.chown),
                        Ok(same),
                    )
                }
                Err(error) => (
                    carry_forward(&next.gen, &spec.name, old.as_ref(), next.chown),
                    Err(error),
                ),
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
                    Some(true) if attributes_differ(spec, &next.old_specs) => &mut report.attributes_changed,
                    Some(true) => &mut report.unchanged,
                    Some(false) => &mut report.changed,
                };
                list.push(spec.name.clone());
            }
            Ok(_) => {}
            Err(error) => report.failed.push(Failure {
                name: spec.name.clone(),
                error: error.to_string(),
                kept_previous: written.is_ok(),
            }),
        }
        match written {
            Ok(()) => present.push(spec.clone()),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) => {
                return Err(next.abandon("the RAM filesystem is full; secrets generation".into()));
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
    Ok(present)
}

/// Writes the new generation's bookkeeping (its specs and [`Record`]) and switches to it.
/// Returns the tree, the new generation's number and the previous generation's specs.
fn switch(
    next: Next,
    present: &[SecretSpec],
    present_templates: &[TemplateSpec],
    report: &Report,
) -> std::io::Result<(Tree, u64, Vec<SecretSpec>)> {
    let specs_json = serde_json::to_vec_pretty(&present).unwrap_or_default();
    secrets_tree::write_file(&next.gen, SPECS_FILE, ROOT, 0o400, &specs_json, next.chown)?;
    let record = serde_json::to_vec_pretty(&Record::of(report)).unwrap_or_default();
    secrets_tree::write_file(&next.gen, RECORD_FILE, ROOT, 0o400, &record, next.chown)?;
    drop(next.gen);
    next.tree.switch(next.family, next.n)?;
    if !present_templates.is_empty() {
        next.tree
            .ensure_link(templates::TEMPLATES_LINK, templates::TEMPLATES_TARGET)?;
    }
    Ok((next.tree, next.n, next.old_specs))
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
) -> Result<(Checked<SecretSpec>, Checked<TemplateSpec>)> {
    let path = bundle.join(MANIFEST_FILE);
    let shown = path.display().to_string();
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&shown, e))?;
    let manifest = Entries::parse(&bytes)
        .map_err(|e| Error::input(&shown, Some(e.line()), format!("not a bundle manifest: {e}")))?;
    let for_users = phase == Phase::Users;
    let secrets = read_valid::<SecretSpec>(
        manifest.secrets,
        &shown,
        ("secrets", ""),
        report,
        |s| &s.name,
        |s| (s.validate(), s.needed_for_users == for_users),
    );
    let templates = match phase {
        Phase::Secrets => {
            let labels = ("templates/", "templates/");
            read_valid::<TemplateSpec>(
                manifest.templates,
                &shown,
                labels,
                report,
                |t| &t.name,
                |t| (t.validate(), true),
            )
        }
        Phase::Users => Default::default(),
    };
    Ok((secrets, templates))
}

/// The valid specs of a manifest's list, each beside its mode; invalid ones are failures,
/// labelled `{name_prefix}{name}` (else `{index_prefix}[{i}]`). `check` gives a spec's
/// validation and whether this phase keeps it (only those kept count as listed twice).
fn read_valid<S: serde::de::DeserializeOwned>(
    values: Vec<serde_json::Value>,
    shown: &str,
    (index_prefix, name_prefix): (&str, &str),
    report: &mut Report,
    name_of: fn(&S) -> &String,
    check: impl Fn(&S) -> (std::result::Result<Mode, crate::spec::SpecError>, bool),
) -> Checked<S> {
    let (mut specs, mut modes): Checked<S> = Default::default();
    for (i, value) in values.into_iter().enumerate() {
        let name = match value.get("name").and_then(|n| n.as_str()) {
            Some(n) => format!("{name_prefix}{}", n.escape_default()),
            None => format!("{index_prefix}[{i}]"),
        };
        let checked = serde_json::from_value::<S>(value)
            .map_err(|e| format!("{shown}: {e}"))
            .and_then(|spec| {
                let (valid, keep) = check(&spec);
                let mode = valid.map_err(|e| format!("{shown}: {e}; refused"))?;
                if specs.iter().any(|s| name_of(s) == name_of(&spec)) {
                    return Err(format!("{shown}: listed twice; refused"));
                }
                Ok((spec, mode, keep))
            });
        match checked {
            Ok((spec, mode, true)) => {
                specs.push(spec);
                modes.push(mode);
            }
            Ok(_) => {}
            Err(error) => report.failed.push(Failure {
                name,
                error,
                kept_previous: false,
            }),
        }
    }
    (specs, modes)
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
    secrets_tree::write_file(gen, name, owner, st.st_mode & 0o7777, bytes, chown)
}

/// File `name` of the previous generation's directory `dir` (secrets or templates), if
/// it is there and readable.
fn previous(dir: Option<&OwnedFd>, name: &str) -> Option<(Zeroizing<Vec<u8>>, rustix::fs::Stat)> {
    dir.and_then(|d| secrets_tree::read_file(d, name).ok().flatten())
}

/// The specs the previous generation's secrets (or templates, in their directory) were
/// written from.
fn read_old_specs<S: serde::de::DeserializeOwned>(dir: Option<&OwnedFd>) -> Vec<S> {
    previous(dir, SPECS_FILE)
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
    let old_specs = read_old_specs(old_dir.as_ref());
    for (spec, prepared) in specs.iter().zip(prepared) {
        let old = previous(old_dir.as_ref(), &spec.name);
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
                error: error.to_string(),
                kept_previous: old.is_some(),
            }),
        }
    }
    report.removed = removed(&old_specs, specs);
    let old_templates_dir = templates::open_old(old_dir.as_ref());
    for (spec, rendered) in templates.iter().zip(rendered) {
        let old = previous(old_templates_dir.as_ref(), &spec.name);
        let name = templates::label(&spec.name);
        match rendered {
            Ok((plain, _)) => classify(report, &name, old.as_ref().map(|(b, _)| &b[..]), &plain),
            Err(error) => report.failed.push(Failure {
                name,
                error: error.to_string(),
                kept_previous: old.is_some(),
            }),
        }
    }
    let old_templates = read_old_specs(old_templates_dir.as_ref());
    report
        .removed
        .extend(templates::removed(&old_templates, templates));
    if opts.phase == Phase::Secrets {
        (report.restart_units, report.reload_units) = units::units_to_restart(specs, templates, report);
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
