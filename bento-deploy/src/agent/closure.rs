//! Closure mode on the host: make the system the admin built and signed valid in this
//! host's store, from the host's own binary cache on the server (`cache/` of its
//! directory), then make it the system profile's new generation and switch to it.
//!
//! Only the paths the store lacks are fetched: from the system's `.narinfo` along its
//! references, stopping at any path the store already has (whose closure it then has
//! too). Each `.narinfo` is bounded, each NAR bounded by the sizes its `.narinfo` gives,
//! and all of it lands in a private staging cache under the state dir. Nix imports from
//! there (`nix copy --no-recursive`), checking each path's signature against the pinned
//! `cache_public_keys` only and its NAR hash: a tampered NAR or a path signed by another
//! key fails the import, and nothing is switched.

use std::collections::BTreeSet;
use std::io::{BufWriter, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use crate::agent::apply::Run;
use crate::agent::command::{capture, Job};
use crate::agent::config::CommandLine;
use crate::agent::error::AgentError;
use crate::store_path::StorePath;
use crate::transport::{Download, Transport};
use crate::wire::narinfo::{narinfo_name, NarInfo, CACHE_INFO, CACHE_INFO_TEXT, NARINFO_LIMIT, NAR_DIR};

/// The host's cache, in its directory on the server.
const CACHE: &str = "cache";
/// The staging cache's name in the state dir.
const STAGING: &str = "closure";
/// The most paths one fetch may bring.
const MAX_PATHS: usize = 100_000;
/// How many NARs are downloaded in one batch (files open at once).
const BATCH: usize = 64;
/// How much larger than the unpacked NAR its compressed file may be (headers, blocks
/// that do not compress).
const NAR_SLACK: u64 = 1 << 20;

/// What a fetch brought.
#[derive(Debug, Default)]
pub(super) struct Fetched {
    /// Store paths imported.
    pub paths: usize,
}

impl Run<'_> {
    /// Makes `system` valid in this host's store (see the module's description).
    pub(super) fn fetch_closure(
        &mut self,
        t: &mut dyn Transport,
        system: &StorePath,
    ) -> Result<Fetched, AgentError> {
        let missing = self.walk_missing(t, system)?;
        if missing.is_empty() {
            return Ok(Fetched::default());
        }
        let staging = self.config.state_dir.join(STAGING);
        let _ = std::fs::remove_dir_all(&staging);
        let made = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(staging.join(NAR_DIR));
        made.and_then(|()| std::fs::write(staging.join(CACHE_INFO), CACHE_INFO_TEXT))
            .map_err(|e| AgentError::install(staging.display(), e))?;
        let fetched = self.download_and_import(t, &staging, &missing);
        let _ = std::fs::remove_dir_all(&staging);
        fetched?;
        Ok(Fetched { paths: missing.len() })
    }

    /// The `.narinfo`s (text and parsed) of every path of `system`'s closure that this
    /// store lacks.
    fn walk_missing(
        &self,
        t: &mut dyn Transport,
        system: &StorePath,
    ) -> Result<Vec<(Vec<u8>, NarInfo)>, AgentError> {
        let mut seen = BTreeSet::from([system.clone()]);
        let mut layer = self.invalid(std::slice::from_ref(system))?;
        let mut out = Vec::new();
        while !layer.is_empty() {
            let mut next = Vec::new();
            for path in layer {
                let name = narinfo_name(&path);
                let rel = format!("{CACHE}/{name}");
                let bytes = match t.read(&rel, NARINFO_LIMIT) {
                    Ok(bytes) => bytes,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(AgentError::NotInCache {
                            path: path.to_string(),
                        })
                    }
                    Err(e) => return Err(AgentError::download(&rel, e, self.config.run_timeout)),
                };
                let info = NarInfo::parse(&bytes).map_err(|error| AgentError::NarInfo {
                    name: name.clone(),
                    error,
                })?;
                if info.store_path != path {
                    return Err(AgentError::NarInfoPath {
                        name,
                        path: info.store_path.to_string(),
                    });
                }
                next.extend(
                    info.references
                        .iter()
                        .filter(|r| seen.insert((*r).clone()))
                        .cloned(),
                );
                out.push((bytes, info));
                if out.len() > MAX_PATHS {
                    return Err(AgentError::ClosureTooLarge { max: MAX_PATHS });
                }
            }
            layer = self.invalid(&next)?;
        }
        Ok(out)
    }

    /// Of `paths`, those this store does not have (`nix-store --check-validity`).
    fn invalid(&self, paths: &[StorePath]) -> Result<Vec<StorePath>, AgentError> {
        if paths.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec!["--check-validity".to_owned(), "--print-invalid".to_owned()];
        args.extend(paths.iter().map(StorePath::to_string));
        let out = capture(&beside(&self.config.nix, "nix-store"), &args, self.deadline)
            .stdout_if_success()
            .map_err(AgentError::Store)?;
        let invalid: BTreeSet<&str> = out.lines().map(str::trim).collect();
        Ok(paths
            .iter()
            .filter(|p| invalid.contains(p.as_str()))
            .cloned()
            .collect())
    }

    /// Downloads the missing paths into `staging` a batch at a time, dependencies first,
    /// and imports each batch as soon as it is there while the next one downloads: the
    /// import of one batch needs only the batches before it.
    fn download_and_import(
        &mut self,
        t: &mut dyn Transport,
        staging: &Path,
        missing: &[(Vec<u8>, NarInfo)],
    ) -> Result<(), AgentError> {
        for (bytes, info) in missing {
            let file = staging.join(narinfo_name(&info.store_path));
            std::fs::write(&file, bytes).map_err(|e| AgentError::install(file.display(), e))?;
        }
        let order = dependencies_first(missing);
        let nix = CommandLine::of(&self.config.nix, &[]);
        let base = import_args(&self.config.cache_public_keys, staging);
        let (deadline, run_timeout) = (self.deadline, self.config.run_timeout);
        let (downloaded, (log, imported)) = std::thread::scope(|scope| {
            let (batches, received) = std::sync::mpsc::channel::<Vec<String>>();
            let importer = scope.spawn(move || {
                let mut log = Vec::new();
                let imported = received.into_iter().try_for_each(|paths| {
                    let args: Vec<String> = base.iter().cloned().chain(paths).collect();
                    Job {
                        what: "import",
                        line: &nix,
                        extra: &args,
                        deadline,
                        run_timeout,
                    }
                    .run(&mut log)
                });
                (log, imported)
            });
            let mut names = BTreeSet::new();
            let downloaded = order.chunks(BATCH).try_for_each(|batch| {
                // One NAR for two paths of the same content.
                let nars: Vec<&NarInfo> = batch
                    .iter()
                    .copied()
                    .filter(|i| names.insert(i.nar_file.as_str()))
                    .collect();
                self.download(t, staging, &nars)?;
                // A closed channel: the importer stopped at a failure, which it reports.
                let paths = batch.iter().map(|i| i.store_path.to_string()).collect();
                let _ = batches.send(paths);
                Ok(())
            });
            drop(batches);
            let imported = importer.join().unwrap_or_else(|_| (Vec::new(), Ok(())));
            (downloaded, imported)
        });
        self.log.extend(log);
        imported.map_err(AgentError::Import)?;
        downloaded
    }

    /// Downloads `nars` into `staging`, each bounded by its sizes, several at once where
    /// the transport can.
    fn download(&self, t: &mut dyn Transport, staging: &Path, nars: &[&NarInfo]) -> Result<(), AgentError> {
        let nar = |info: &NarInfo| staging.join(NAR_DIR).join(&info.nar_file);
        let failed = |info: &NarInfo, e| AgentError::install(nar(info).display(), e);
        let rels: Vec<String> = nars
            .iter()
            .map(|i| format!("{CACHE}/{NAR_DIR}/{}", i.nar_file))
            .collect();
        let mut sinks = nars
            .iter()
            .map(|i| {
                std::fs::File::create(nar(i))
                    .map(BufWriter::new)
                    .map_err(|e| failed(i, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut downloads: Vec<Download<'_>> = nars
            .iter()
            .zip(&rels)
            .zip(sinks.iter_mut())
            .map(|((info, rel), sink)| Download {
                rel,
                limit: info.file_size.min(info.nar_size.saturating_add(NAR_SLACK)),
                sink,
            })
            .collect();
        let results = t.read_each(&mut downloads);
        drop(downloads);
        for (((info, rel), sink), got) in nars.iter().zip(&rels).zip(sinks.iter_mut()).zip(results) {
            let got = got.map_err(|e| AgentError::download(rel, e, self.config.run_timeout))?;
            sink.flush().map_err(|e| failed(info, e))?;
            if got != info.file_size {
                return Err(AgentError::NarSize {
                    rel: rel.clone(),
                    got,
                    size: info.file_size,
                });
            }
        }
        Ok(())
    }

    /// Makes `system` the system profile's new generation, then runs the switch: the
    /// configured `switch` with the system's path appended, or the system's own
    /// `bin/switch-to-configuration switch`.
    pub(super) fn switch_system(&mut self, system: &StorePath) -> Result<(), AgentError> {
        let profile = CommandLine::of(&beside(&self.config.nix, "nix-env"), &[]);
        let args = [
            "--profile".to_owned(),
            self.config.system_profile.display().to_string(),
            "--set".to_owned(),
            system.to_string(),
        ];
        self.command("profile", &profile, &args)?;
        let (line, extra) = match self.config.switch.clone() {
            Some(line) => (line, vec![system.to_string()]),
            None => (
                CommandLine::from_words(
                    format!("{system}/bin/switch-to-configuration"),
                    vec!["switch".into()],
                ),
                Vec::new(),
            ),
        };
        Ok(self.command("switch", &line, &extra)?)
    }
}

/// `missing`'s paths in an order where each comes after the paths it refers to.
fn dependencies_first(missing: &[(Vec<u8>, NarInfo)]) -> Vec<&NarInfo> {
    let by_path: std::collections::BTreeMap<&StorePath, &NarInfo> =
        missing.iter().map(|(_, i)| (&i.store_path, i)).collect();
    let mut done = BTreeSet::new();
    let mut order = Vec::with_capacity(missing.len());
    for (_, root) in missing {
        // Depth first without recursion: (path, whether its references are queued).
        let mut stack = vec![(root, false)];
        while let Some((info, expanded)) = stack.pop() {
            if done.contains(&info.store_path) {
                continue;
            }
            if expanded {
                done.insert(&info.store_path);
                order.push(info);
                continue;
            }
            stack.push((info, true));
            for reference in &info.references {
                if let Some(dep) = by_path.get(reference).filter(|d| !done.contains(&d.store_path)) {
                    if dep.store_path != info.store_path {
                        stack.push((dep, false));
                    }
                }
            }
        }
    }
    order
}

/// `nix copy` from the staging cache, trusting the pinned keys only; the paths follow.
fn import_args(keys: &[String], staging: &Path) -> Vec<String> {
    let keys = keys.join(" ");
    [
        "--extra-experimental-features",
        "nix-command",
        "copy",
        "--no-recursive",
        "--option",
        "require-sigs",
        "true",
        "--option",
        "trusted-public-keys",
        &keys,
        "--from",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([format!("file://{}", staging.display())])
    .collect()
}

/// The program `name` beside `nix` (`/…/bin/nix` → `/…/bin/name`; a bare `nix` → `name`).
fn beside(nix: &str, name: &str) -> String {
    match Path::new(nix).parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => dir.join(name).display().to_string(),
        None => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, refs: &[&str]) -> (Vec<u8>, NarInfo) {
        let path = |n: &str| {
            StorePath::parse(&format!(
                "/nix/store/{}-{n}",
                "0".repeat(32).replace('0', n.get(..1).unwrap_or("0"))
            ))
            .unwrap()
        };
        let info = NarInfo {
            store_path: path(name),
            nar_file: format!("{name}.nar"),
            file_size: 1,
            nar_size: 1,
            references: refs.iter().map(|r| path(r)).collect(),
        };
        (Vec::new(), info)
    }

    #[test]
    fn references_are_imported_before_what_refers_to_them() {
        // As the walk finds them: the system first.
        let missing = [
            info("s", &["a", "b", "s"]),
            info("a", &["c"]),
            info("b", &["c", "a"]),
            info("c", &[]),
        ];
        let order: Vec<String> = dependencies_first(&missing)
            .iter()
            .map(|i| i.nar_file.clone())
            .collect();
        assert_eq!(order, ["c.nar", "a.nar", "b.nar", "s.nar"]);
    }

    #[test]
    fn nix_store_and_nix_env_are_found_beside_nix() {
        assert_eq!(beside("nix", "nix-store"), "nix-store");
        assert_eq!(
            beside("/run/current-system/sw/bin/nix", "nix-env"),
            "/run/current-system/sw/bin/nix-env"
        );
    }
}
