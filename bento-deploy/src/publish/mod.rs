//! `bento deploy`: checks the secrets, assembles every selected host's bundle, and
//! publishes a new signed generation for each host whose content changed.
//!
//! Hosts are assembled and compared in parallel. Changed hosts are then written in three
//! steps, each closed by one `syncfs` (locally): every generation into its temp dir, then
//! every temp dir renamed into place, then every `current` replaced. Unchanged hosts are
//! not touched at all. Old generations are pruned last. The target is a local directory
//! or a remote root over sftp ([`target`]).

pub mod approve;
pub mod cache;
pub mod cache_dir;
mod host_cache;
pub mod remote;
pub mod rollout;
pub mod target;

use std::path::Path;

use crate::fleet::location::Location;
use crate::fleet::workspace::Workspace;

use rayon::prelude::*;
use serde::Serialize;

use bento_secrets::accounts;
use bento_secrets::verify::Kind;
use bento_secrets::Fleet;

use self::cache::HostCache as CacheReport;
use self::cache_dir::CacheDir;
use self::host_cache::{Closures, HostCache};
use self::target::Target;
use crate::error::Error;
use crate::fleet::build::Expected;
use crate::fleet::bundle::Bundle;
use crate::fleet::config::Config;
use crate::fleet::hosts::Host;
use crate::layout::{is_root, HostDir, Staged};
use crate::manifest::{Manifest, MANIFEST_FILE, SIGNATURE_FILE};
use crate::sign::{AdminKeys, Signer};
use crate::store_path::StorePath;
use crate::time::now_rfc3339;
use crate::wire::digest::{sha256_hex, Sha256};
use crate::wire::mode::DeployMode;

/// What to deploy, and where.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where to publish: a local root, or a remote one over sftp through the `ssh`
    /// program `ssh`.
    pub location: Location,
    /// The ssh client for a remote target.
    pub ssh: String,
    /// Only these hosts (all when empty).
    pub hosts: Vec<String>,
    /// The `nix` program, to list flakes' configurations.
    pub nix: String,
}

/// What happened to one host.
#[derive(Clone, Debug, Serialize)]
pub struct HostReport {
    /// The host.
    pub host: String,
    /// Its current generation after the deploy.
    pub generation: u64,
    /// Whether this deploy published a new generation.
    pub changed: bool,
    /// Configuration files in the bundle.
    pub files: usize,
    /// Secrets in the bundle.
    pub secrets: usize,
    /// The expected system path, when `bento build` recorded one for this configuration.
    pub system: Option<String>,
    /// `bento build` recorded a system for another configuration of this host (an older
    /// one): this one goes out without an expected system until it is built.
    pub build_outdated: bool,
    /// How the host gets its system.
    pub mode: DeployMode,
    /// `generation` waits for more admins' signatures (`bento approve`): `current` does not
    /// name it yet.
    pub pending: bool,
    /// Generations removed by pruning.
    pub pruned: Vec<u64>,
    /// What the binary cache did for it (`null` without `[cache]`).
    pub cache: Option<CacheReport>,
}

/// Hears how a deploy progresses (a progress bar, say).
pub trait Progress: Sync {
    /// The deploy is about to assemble `hosts` hosts.
    fn start(&self, hosts: usize) {
        let _ = hosts;
    }
    /// One host is done: unchanged, or published.
    fn done(&self, report: &HostReport) {
        let _ = report;
    }
}

/// No progress reporting.
impl Progress for () {}

/// A host whose bundle differs from what the server has.
pub(crate) struct Plan {
    /// The host's directory on the server.
    dir: HostDir,
    /// What is to be published.
    new: Candidate,
    generation: u64,
    /// The generation `current` named before.
    current: Option<u64>,
    /// That generation's manifest and signatures, as the server holds them: the new
    /// manifest's `previous`, kept in the host's history.
    base: Option<(Vec<u8>, String)>,
}

/// Refuses when any secret is stale, missing or corrupt: a host must never receive a
/// secret it cannot decrypt, nor keep one it should no longer have.
pub fn check_secrets(fleet: &Fleet) -> Result<(), Error> {
    let report = bento_secrets::verify::verify(fleet)?;
    let blocking: Vec<_> = report
        .findings
        .iter()
        .filter(|f| {
            f.kind.rekey_fixes()
                || matches!(
                    f.kind,
                    Kind::MissingFile | Kind::Corrupt | Kind::TemplateUnknownSecret | Kind::TemplateHost
                )
        })
        .collect();
    if blocking.is_empty() {
        return Ok(());
    }
    let mut names: Vec<String> = blocking.iter().map(|f| f.secret.clone()).collect();
    names.dedup();
    Err(Error::StaleSecrets {
        names,
        detail: blocking
            .iter()
            .map(|f| f.message.as_str())
            .collect::<Vec<_>>()
            .join("; "),
    })
}

/// The fleet repo's `HEAD` commit, when it is a git repo and git is installed.
pub fn git_commit(root: &Path) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--verify", "-q", "HEAD"])
        .current_dir(root)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !commit.is_empty()).then_some(commit)
}

/// Deploys the fleet rooted at `root`. `signer` is called at most once, and only when some
/// host changed (so a no-op deploy needs no key); its key must be one of the fleet's admin
/// keys (`keys/admins/`), checked before anything is written. A host counts as unchanged
/// only when its current manifest is signed by a current admin key and has the same
/// content: a manifest the server swapped, or one signed by a key that is no admin's any
/// more, is published again. `progress` hears of each host.
pub fn deploy(
    workspace: &Workspace,
    options: &Options,
    signer: &(dyn Fn() -> Result<Signer, Error> + Sync),
    progress: &dyn Progress,
) -> Result<Vec<HostReport>, Error> {
    // On the location's own rayon pool.
    options.location.run(|| {
        let Workspace { root, config, fleet } = workspace;
        check_secrets(fleet)?;
        let admins = AdminKeys::new(&fleet.admins);
        let hosts = workspace.hosts(&options.hosts, &options.nix)?;
        for host in &hosts {
            let publishing = matches!(options.location, Location::Remote(_));
            if let Some(why) = crate::fleet::server::name_clash(config, &host.name, publishing) {
                return Err(Error::input(format!("host {}", host.name), why));
            }
        }
        let closure_host = hosts
            .iter()
            .map(|h| h.name.as_str())
            .find(|h| config.mode_of(h) == DeployMode::Closure);
        if let (Some(host), None) = (closure_host, &config.cache.signing_key) {
            return Err(Error::input(
                format!("host {host}"),
                "mode = \"closure\" needs [cache] signing_key in bento.toml: the host fetches its \
                 system from the signed cache (make a key with `nix-store --generate-binary-cache-key`)",
            ));
        }
        let expected = Expected::load(root)?;
        let server = Target::open(&options.location, root, config, &options.ssh)?;
        progress.start(hosts.len());

        // Assemble and compare, in parallel; unchanged hosts are done here.
        let assessed: Vec<Assessed> = hosts
            .par_iter()
            .map(|host| assess(root, fleet, config, host, &server, &expected, &admins, progress))
            .collect::<Result<_, Error>>()?;
        // The key is checked before anything is written: the cache, a generation.
        let signer = if assessed.iter().any(|a| matches!(a, Assessed::Changed(_))) {
            let signer = signer()?;
            admins.check(&signer, &config.deploy.signing_key)?;
            Some(signer)
        } else {
            None
        };
        // The systems go into the cache, and each closure host's into its own, before any
        // `current` names them.
        let cache = match config.cache.signing_key {
            Some(_) => Some(server.cache()?),
            None => None,
        };
        let cached = match &cache {
            Some(cache) => Some(fill_cache(root, config, &options.nix, &assessed, cache)?),
            None => None,
        };
        let closures = cache.as_ref().map(Closures::new);
        if let Some(closures) = &closures {
            assessed.par_iter().try_for_each(|a| match a {
                Assessed::Changed(plan) if plan.new.mode == DeployMode::Closure => share_closure(
                    &server,
                    closures,
                    &plan.new.bundle.host,
                    plan.new.system.as_deref(),
                    false,
                ),
                // Published before: its cache is repaired when its system went missing.
                Assessed::Unchanged(r) if r.mode == DeployMode::Closure => {
                    share_closure(&server, closures, &r.host, r.system.as_deref(), true)
                }
                _ => Ok(()),
            })?;
        }
        let mut reports = Vec::new();
        let mut changed = Vec::new();
        for a in assessed {
            match a {
                Assessed::Unchanged(report) => reports.push(report),
                Assessed::Changed(plan) => changed.push(*plan),
            }
        }
        if let Some(signer) = signer {
            reports.extend(publish(
                root,
                config,
                &server,
                changed,
                signer,
                closures.as_ref(),
                progress,
            )?);
        }
        if let Some(mut cached) = cached {
            for r in &mut reports {
                r.cache = Some(cached.remove(&r.host).unwrap_or_default());
            }
        }
        reports.sort_by(|a, b| a.host.cmp(&b.host));
        Ok(reports)
    })
}

/// Copies into the cache behind `sink` the recorded system of every host (of changed
/// ones, and of unchanged ones whose system is not there yet); a changed host without a
/// recorded build is skipped, with the reason in its report.
pub(crate) fn fill_cache(
    root: &Path,
    config: &Config,
    nix: &str,
    assessed: &[Assessed],
    cache: &CacheDir,
) -> Result<std::collections::BTreeMap<String, CacheReport>, Error> {
    let mut systems = Vec::new();
    let mut no_build = Vec::new();
    for a in assessed {
        let (host, system, changed) = match a {
            Assessed::Unchanged(r) => (r.host.as_str(), &r.system, false),
            Assessed::Changed(plan) => (plan.new.bundle.host.as_ref(), &plan.new.system, true),
        };
        match system {
            Some(system) => {
                let path = StorePath::parse(system).map_err(|e| {
                    Error::input(
                        crate::fleet::build::EXPECTED_FILE,
                        format!("host {host}: {e}; run `bento build {host}` again"),
                    )
                })?;
                systems.push((host.to_string(), path));
            }
            None if changed => no_build.push(host.to_string()),
            None => {}
        }
    }
    cache::fill(root, config, nix, &systems, &no_build, cache)
}

/// A host after comparing its new bundle with the server's current generation.
pub(crate) enum Assessed {
    /// Nothing to publish.
    Unchanged(HostReport),
    /// A new generation to publish.
    Changed(Box<Plan>),
}

/// What `deploy` would publish for one host, but the generation, time and signature.
struct Candidate {
    bundle: Bundle,
    system: Option<String>,
    build_outdated: bool,
    mode: DeployMode,
}

impl Candidate {
    /// What a deploy says of this host at `generation`.
    fn report(&self, generation: u64, changed: bool, pending: bool, pruned: Vec<u64>) -> HostReport {
        HostReport {
            host: self.bundle.host.to_string(),
            generation,
            changed,
            files: self.bundle.config_files(),
            secrets: self.bundle.secrets.len(),
            system: self.system.clone(),
            build_outdated: self.build_outdated,
            mode: self.mode,
            pending,
            pruned,
            cache: None,
        }
    }
}

/// Assembles `host`'s bundle as this deploy publishes it: a closure host's without its
/// sources, and refused without a build of exactly this configuration.
fn candidate(
    root: &Path,
    fleet: &Fleet,
    config: &Config,
    host: &Host,
    expected: &Expected,
) -> Result<Candidate, Error> {
    let mut bundle = Bundle::assemble(root, fleet, host)?;
    let system = expected
        .system_for(&host.name, &bundle.config_digest())
        .map(str::to_owned);
    let build_outdated = system.is_none() && expected.has_build(&host.name);
    let name = host.name.as_str();
    let mode = config.mode_of(name);
    if mode == DeployMode::Closure {
        if system.is_none() {
            let why = match build_outdated {
                true => "its last build is of an older configuration",
                false => "it has no build",
            };
            return Err(Error::input(
                format!("host {name}"),
                format!(
                    "mode = \"closure\" publishes the system `bento build` made of exactly this \
                     configuration, and {why}: run `bento build {name}`, then deploy again"
                ),
            ));
        }
        // The host runs the built system: the sources stay with the admin.
        bundle.files.retain(|path, _| !path.starts_with("config/"));
    }
    Ok(Candidate {
        bundle,
        system,
        build_outdated,
        mode,
    })
}

/// A digest of what `deploy` would publish for the hosts of `options` — their bundles'
/// content and expected systems, not generations or times — so that `bento rollout` can
/// tell whether the fleet changed since it started.
pub fn content_digest(workspace: &Workspace, options: &Options) -> Result<String, Error> {
    let Workspace { root, config, fleet } = workspace;
    let expected = Expected::load(root)?;
    let mut listing = String::new();
    for host in workspace.hosts(&options.hosts, &options.nix)? {
        let c = candidate(root, fleet, config, &host, &expected)?;
        let manifest = c.bundle.manifest(0, String::new(), None, c.system, None);
        listing.push_str(&format!("{}\0{}\n", host.name, sha256_hex(&manifest.to_bytes())));
    }
    Ok(sha256_hex(listing.as_bytes()))
}

#[allow(clippy::too_many_arguments)]
fn assess(
    root: &Path,
    fleet: &Fleet,
    config: &Config,
    host: &Host,
    server: &Target,
    expected: &Expected,
    admins: &AdminKeys,
    progress: &dyn Progress,
) -> Result<Assessed, Error> {
    let new = candidate(root, fleet, config, host, expected)?;
    let name = host.name.as_str();
    // Only root can hand logs/ to the host's user; don't look the user up otherwise.
    let prefix = &config.server.user_prefix;
    let logs_owner = is_root()
        .then(|| accounts::user(&format!("{prefix}{}", host.name)))
        .flatten();
    let dir = server.host(name, logs_owner, new.mode)?;
    let current = dir.current()?;
    // What the host runs (or should): the new generation's `previous`.
    let base = current.and_then(|g| dir.signed_manifest(g));
    // "Same" only on what an admin signed: the manifest's bytes are the server's.
    let same = |signed: Option<&(Vec<u8>, String)>| {
        let candidate = new
            .bundle
            .manifest(0, String::new(), None, new.system.clone(), None);
        signed.is_some_and(|(bytes, sig)| {
            admins.signed(bytes, sig) && Manifest::parse(bytes).is_ok_and(|m| m.same_content(&candidate))
        })
    };
    let same_as = |g: u64| match Some(g) == current {
        true => same(base.as_ref()),
        false => same(dir.signed_manifest(g).as_ref()),
    };
    // The generation that holds this content already: `current`'s, or (pending already,
    // nothing to publish until it is approved) the newest above it.
    let newest_pending = match config.deploy.required_signatures > 1 {
        true => dir.generations()?.last().copied().filter(|&g| Some(g) > current),
        false => None,
    };
    let unchanged = match (
        current.filter(|&g| same_as(g)),
        newest_pending.filter(|&g| same_as(g)),
    ) {
        (Some(g), _) => Some((g, false)),
        (None, Some(g)) => Some((g, true)),
        (None, None) => None,
    };
    if let Some((generation, pending)) = unchanged {
        if !pending {
            dir.remove_leftovers()?;
        }
        let report = new.report(generation, false, pending, Vec::new());
        progress.done(&report);
        return Ok(Assessed::Unchanged(report));
    }
    // Never reuse a number, even one whose `current` switch did not happen.
    let highest = dir.generations()?.last().copied().unwrap_or(0);
    let generation = highest.max(current.unwrap_or(0)) + 1;
    Ok(Assessed::Changed(Box::new(Plan {
        dir,
        new,
        generation,
        current,
        base,
    })))
}

/// Signs and writes the changed hosts' generations, then switches their `current`.
fn publish(
    root: &Path,
    config: &Config,
    server: &Target,
    changed: Vec<Plan>,
    signer: Signer,
    closures: Option<&Closures>,
    progress: &dyn Progress,
) -> Result<Vec<HostReport>, Error> {
    let created = now_rfc3339();
    let commit = git_commit(root);
    let mut staged: Vec<(Plan, Staged, (Vec<u8>, String))> = changed
        .into_par_iter()
        .map(|plan| {
            // Where a second writer is not refused (object storage), the number is claimed.
            let generation = plan.dir.claim(plan.generation)?;
            let manifest = plan.new.bundle.manifest(
                generation,
                created.clone(),
                commit.clone(),
                plan.new.system.clone(),
                plan.base.as_ref().map(|(bytes, _)| Sha256::of(bytes)),
            );
            // The manifest it follows stays on the server when its generation is pruned.
            if let Some((bytes, signatures)) = &plan.base {
                plan.dir.record_history(bytes, signatures)?;
            }
            let (staged, signed) = stage(&plan, generation, &manifest, &signer)?;
            Ok((plan, staged, signed))
        })
        .collect::<Result<_, Error>>()?;
    server.sync()?;
    // Generations first, then `current`: it only ever names a complete generation.
    staged.par_iter_mut().try_for_each(|(_, s, _)| s.install())?;
    server.sync()?;
    // With more signatures required, `current` moves when they are there (`bento approve`).
    let pending = config.deploy.required_signatures > 1;
    if !pending {
        staged.par_iter().try_for_each(|(_, s, _)| s.switch())?;
        // What is current now is in the history at once: a server that later swaps in
        // another chain leaves it off that chain, for `bento log` to see.
        staged
            .par_iter()
            .try_for_each(|(plan, _, (bytes, sig))| plan.dir.record_history(bytes, sig))?;
    }
    server.sync()?;

    let keep = config.deploy.keep_generations as usize;
    staged
        .par_iter()
        .map(|(plan, s, _)| {
            // While it is pending, the generation the host runs stays too.
            let protected: Vec<u64> = std::iter::once(s.generation())
                .chain(plan.current.filter(|_| pending))
                .collect();
            let pruned = plan.dir.prune(keep, &protected)?;
            if let (DeployMode::Closure, Some(closures)) = (plan.new.mode, closures) {
                prune_closures(server, closures, plan)?;
            }
            let report = plan.new.report(s.generation(), true, pending, pruned);
            progress.done(&report);
            Ok(report)
        })
        .collect()
}

/// Gives `host`'s cache the closure of `system`, which it is about to be published with
/// (see [`host_cache`]). With `repair_only`, only when the system's own `.narinfo` is
/// missing there: an unchanged host costs one read.
fn share_closure(
    server: &Target,
    closures: &Closures,
    host: &str,
    system: Option<&str>,
    repair_only: bool,
) -> Result<(), Error> {
    let Some(system) = system else {
        return Ok(());
    };
    let system = StorePath::parse(system)
        .map_err(|e| Error::input(crate::fleet::build::EXPECTED_FILE, e.to_string()))?;
    let cache = HostCache::new(server.root(), &server.shown(), host);
    if repair_only && cache.has(&system)? {
        return Ok(());
    }
    cache.share(&closures.of(&system)?).map(drop)
}

/// Keeps in a closure host's cache what the systems of its kept generations need. A kept
/// generation whose system cannot be read keeps everything.
fn prune_closures(server: &Target, closures: &Closures, plan: &Plan) -> Result<(), Error> {
    let mut kept = Vec::new();
    for g in plan.dir.generations()? {
        let system = plan
            .dir
            .signed_manifest(g)
            .and_then(|(bytes, _)| Manifest::parse(&bytes).ok())
            .and_then(|m| m.system)
            .and_then(|s| StorePath::parse(&s).ok());
        match system.map(|s| closures.of(&s)) {
            Some(Ok(closure)) => kept.push(closure),
            _ => return Ok(()),
        }
    }
    HostCache::new(server.root(), &server.shown(), plan.new.bundle.host.as_str()).prune(&kept)
}

/// Writes one host's bundle, manifest and signature into a temp generation; returns it
/// with the manifest's bytes and signature.
fn stage(
    plan: &Plan,
    generation: u64,
    manifest: &Manifest,
    signer: &Signer,
) -> Result<(Staged, (Vec<u8>, String)), Error> {
    let manifest_bytes = manifest.to_bytes();
    let signature = signer.sign(&manifest_bytes)?;
    let mut files: Vec<(&str, &[u8])> = plan
        .new
        .bundle
        .files
        .iter()
        .map(|(path, f)| (path.as_str(), f.bytes.as_slice()))
        .collect();
    files.push((MANIFEST_FILE, &manifest_bytes));
    files.push((SIGNATURE_FILE, signature.as_bytes()));
    let staged = plan.dir.stage(generation, &files)?;
    Ok((staged, (manifest_bytes, signature)))
}
