//! The signed Nix binary cache that `bento deploy` keeps under `<root>/cache` with
//! `[cache] signing_key`: each deployed host's built system closure (the path `bento build`
//! recorded), so hosts substitute their system from the server instead of building it.
//!
//! The content is made by Nix itself: the paths missing from the cache are copied with
//! `nix copy --no-recursive --to file://<staging>?secret-key=…` into a staging directory
//! under `.bento/` (their references already in the cache stood in for by placeholder
//! `.narinfo` files, which Nix needs and which are never uploaded), then handed to a
//! [`CacheDir`]: NARs first, then the `.narinfo` files, references first. A path whose
//! `.narinfo` is in the cache is never copied again, and a system whose `.narinfo` is
//! there has its whole closure there: nothing of it is even looked at.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::Error;
use crate::fleet::config::{expand_home, Config};
use crate::layout::join;
use crate::publish::cache_dir::{is_leftover, CacheDir};
use crate::store_path::{StorePath, STORE_DIR};
use crate::wire::narinfo::{NarInfo, NarInfoError, CACHE_INFO, NAR_DIR};

/// The most a secret key file may hold (one is under 200 bytes).
const KEY_LIMIT: u64 = 4096;
/// How to make a key, for the errors about one.
const KEY_HINT: &str = "make one with `nix-store --generate-binary-cache-key NAME FILE FILE.pub`";

/// What the cache did for one host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HostCache {
    /// Store paths of its closure this deploy added to the cache (a path shared with a
    /// host earlier in name order counts for that host).
    pub copied: usize,
    /// Why its system is not in the cache, when it is not (no build recorded).
    pub skipped: Option<String>,
}

/// A checked Nix binary cache secret key: `NAME:BASE64` of 64 bytes (Ed25519).
#[derive(Debug)]
pub struct CacheKey {
    path: PathBuf,
    public: String,
}

impl CacheKey {
    /// Reads and checks the secret key at `path` (`shown` as in bento.toml); the secret
    /// itself is not kept: Nix reads the file when it signs.
    pub fn load(path: &Path, shown: &str) -> Result<CacheKey, Error> {
        let err = |msg: String| Error::input(format!("cache.signing_key {shown}"), msg);
        let file = std::fs::File::open(path).map_err(|e| err(format!("{e}; {KEY_HINT}")))?;
        let meta = file.metadata().map_err(|e| err(e.to_string()))?;
        if !meta.is_file() {
            return Err(err(format!("not a regular file; {KEY_HINT}")));
        }
        let mut bytes = Zeroizing::new(Vec::new());
        file.take(KEY_LIMIT + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| err(e.to_string()))?;
        let malformed = || {
            err(format!(
                "not a Nix binary cache secret key (NAME:BASE64 of 64 bytes); {KEY_HINT}"
            ))
        };
        if bytes.len() as u64 > KEY_LIMIT {
            return Err(malformed());
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| malformed())?.trim();
        let (name, secret) = text.split_once(':').ok_or_else(malformed)?;
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(malformed());
        }
        let secret = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(secret)
                .map_err(|_| malformed())?,
        );
        if secret.len() != 64 {
            return Err(malformed());
        }
        let public = format!(
            "{name}:{}",
            base64::engine::general_purpose::STANDARD.encode(&secret[32..])
        );
        let path = std::path::absolute(path).map_err(|e| err(e.to_string()))?;
        if !url_safe(&path) {
            return Err(err(
                "its path may hold only letters, digits and `/._-+@,=~` (Nix takes it in a URL): move the key".into(),
            ));
        }
        Ok(CacheKey { path, public })
    }

    /// The public key (`NAME:BASE64`), for `trusted-public-keys`.
    pub fn public_key(&self) -> &str {
        &self.public
    }
}

/// The secret key file of `[cache] signing_key`: `~/` expanded, a relative path taken
/// from the fleet root. `None` without a cache.
pub fn key_path(root: &Path, config: &Config) -> Option<PathBuf> {
    let key = config.cache.signing_key.as_deref()?;
    Some(root.join(expand_home(key)))
}

/// Whether `path` can go into a `file://` store URL as it is.
fn url_safe(path: &Path) -> bool {
    path.to_str().is_some_and(|p| {
        p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+@,=~".contains(&b))
    })
}

/// One store path as `nix path-info --json` describes it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PathInfo {
    /// Set by Nix before 2.19 (a list of infos); later ones key the infos by path.
    #[serde(default)]
    path: String,
    nar_hash: String,
    nar_size: u64,
    #[serde(default)]
    references: Vec<String>,
}

/// The hash part of a store path (`/nix/store/<hash>-name`): its `.narinfo`'s name.
fn hash_part(path: &str) -> &str {
    let base = path.strip_prefix(STORE_DIR).unwrap_or(path);
    base.split_once('-').map_or(base, |(hash, _)| hash)
}

/// Runs `nix --extra-experimental-features nix-command ARGS`; its stdout, or why it
/// failed.
fn run_nix(nix: &str, args: &[&str]) -> Result<Vec<u8>, NixFailed> {
    let out = Command::new(nix)
        .args(["--extra-experimental-features", "nix-command"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NixFailed::Spawn {
            nix: nix.to_owned(),
            source,
        })?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .or_else(|| stderr.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or("no message");
    Err(NixFailed::Status {
        line: line.trim().to_owned(),
        status: out.status,
    })
}

/// Why a `nix` command failed.
#[derive(Debug, thiserror::Error)]
enum NixFailed {
    /// It could not be started.
    #[error("cannot run `{nix}`: {source}")]
    Spawn { nix: String, source: std::io::Error },
    /// It failed: its last `error:` line (else its last line), escaped, and its status.
    #[error("{} ({status})", .line.escape_debug())]
    Status {
        line: String,
        status: std::process::ExitStatus,
    },
}

/// The closures of `roots` in the local store, path → info.
fn closures(nix: &str, roots: &[(&str, &StorePath)]) -> Result<HashMap<String, PathInfo>, Error> {
    let mut args = vec!["path-info", "--json", "--recursive"];
    args.extend(roots.iter().map(|(_, p)| p.as_str()));
    let stdout = match run_nix(nix, &args) {
        Ok(stdout) => stdout,
        Err(why) => {
            // Name the host whose system is gone.
            for (host, path) in roots {
                if run_nix(nix, &["path-info", path.as_str()]).is_err() {
                    return Err(Error::input(
                        format!("host {host}"),
                        format!(
                            "its system {path} (recorded by `bento build`) is not in the local Nix store, \
                             so it cannot go into the cache: run `bento build {host}` again"
                        ),
                    ));
                }
            }
            return Err(Error::input("cache", format!("`{nix} path-info` failed: {why}")));
        }
    };
    parse_path_infos(&stdout).map_err(|e| {
        Error::input(
            "cache",
            format!("`{nix} path-info --json` printed something else: {e}"),
        )
    })
}

/// `nix path-info --json`: a list of infos (Nix before 2.19) or an object of path → info.
fn parse_path_infos(json: &[u8]) -> Result<HashMap<String, PathInfo>, serde_json::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Infos {
        List(Vec<PathInfo>),
        ByPath(HashMap<String, PathInfo>),
    }
    Ok(match serde_json::from_slice(json)? {
        Infos::List(list) => list.into_iter().map(|i| (i.path.clone(), i)).collect(),
        Infos::ByPath(map) => map
            .into_iter()
            .map(|(path, mut i)| {
                i.path.clone_from(&path);
                (path, i)
            })
            .collect(),
    })
}

/// Adds to `order` the paths of `path`'s closure not in `skip`, references first; returns
/// how many it added.
fn visit(
    path: &str,
    infos: &HashMap<String, PathInfo>,
    skip: &mut HashSet<String>,
    order: &mut Vec<String>,
) -> usize {
    // Iterative depth-first walk (a closure can be deep), post-order.
    let before = order.len();
    let mut stack: Vec<(&str, usize)> = vec![(path, 0)];
    if !skip.insert(path.to_owned()) {
        return 0;
    }
    while let Some((current, next)) = stack.pop() {
        let refs = infos.get(current).map_or(&[][..], |i| i.references.as_slice());
        if let Some(reference) = refs.get(next) {
            stack.push((current, next + 1));
            if skip.insert(reference.clone()) {
                stack.push((reference.as_str(), 0));
            }
        } else {
            order.push(current.to_owned());
        }
    }
    order.len() - before
}

/// Removes what interrupted uploads left in `dir` of the cache (`names`: its listing).
/// Locally the server root's lock is held, so no other deploy is writing; on a remote
/// target, which no lock covers, a deploy running at the same moment may lose its temp
/// file and then fails its rename with one error line, to be run again (nothing is ever
/// named before it is complete).
fn remove_leftovers(sink: &CacheDir, dir: &str, names: &HashSet<String>) -> Result<(), Error> {
    for name in names.iter().filter(|n| is_leftover(n)) {
        sink.remove_leftover(&join(dir, name))?;
    }
    Ok(())
}

/// Copies each host's system closure into the cache behind `sink`: the one function
/// `bento deploy` calls, whatever the target. `systems` are the hosts whose system is to
/// be cached, in order; `no_build` are hosts published without a recorded build (skipped,
/// with the reason). The secret key is read only when something is to be copied.
pub fn fill(
    root: &Path,
    config: &Config,
    nix: &str,
    systems: &[(String, StorePath)],
    no_build: &[String],
    sink: &CacheDir,
) -> Result<BTreeMap<String, HostCache>, Error> {
    let mut report: BTreeMap<String, HostCache> = systems
        .iter()
        .map(|(host, _)| (host.clone(), HostCache::default()))
        .collect();
    for host in no_build {
        report.insert(
            host.clone(),
            HostCache {
                copied: 0,
                skipped: Some(format!(
                    "no build recorded for its configuration, so its system is not in the cache: \
                     run `bento build {host}`, then deploy again"
                )),
            },
        );
    }
    let top = sink.list("")?;
    remove_leftovers(sink, "", &top)?;
    let present: HashSet<String> = top
        .into_iter()
        .filter_map(|name| name.strip_suffix(".narinfo").map(str::to_owned))
        .collect();
    let roots: Vec<(&str, &StorePath)> = systems
        .iter()
        .filter(|(_, path)| !present.contains(path.hash_part()))
        .map(|(host, path)| (host.as_str(), path))
        .collect();
    if roots.is_empty() {
        return Ok(report);
    }
    let key_file = key_path(root, config).ok_or_else(|| Error::input("cache", "no cache.signing_key"))?;
    let shown = config.cache.signing_key.clone().unwrap_or_default();
    let key = CacheKey::load(&key_file, &shown)?;
    let infos = closures(nix, &roots)?;

    // What to copy, references first; each path counted for the first host needing it.
    let mut seen: HashSet<String> = infos
        .keys()
        .filter(|p| present.contains(hash_part(p)))
        .cloned()
        .collect();
    let mut order = Vec::new();
    for (host, path) in &roots {
        let added = visit(path.as_str(), &infos, &mut seen, &mut order);
        if let Some(r) = report.get_mut(*host) {
            r.copied += added;
        }
    }
    if order.is_empty() {
        return Ok(report);
    }
    let staging = Staging::new(root)?;
    staging.placeholders(&order, &infos, &present)?;
    staging.copy(nix, &key, &config.cache.compression, &order)?;
    staging.upload(&order, sink)?;
    Ok(report)
}

/// The temp directory `nix copy` writes into: a scratch dir under `.bento/`, named after
/// this process so that the next deploy removes it if this one is killed; removed when
/// done.
struct Staging {
    dir: bento_secrets::scratch::Scratch,
}

impl Staging {
    fn new(root: &Path) -> Result<Staging, Error> {
        bento_secrets::fleet_lock::ensure_state_dir(root)?;
        let parent = std::path::absolute(root.join(crate::fleet::build::STATE_DIR))
            .map_err(|e| Error::io(crate::fleet::build::STATE_DIR, e))?;
        bento_secrets::scratch::remove_stale(&parent);
        let dir = bento_secrets::scratch::Scratch::new(&parent, "cache")
            .map_err(|e| Error::io(parent.display().to_string(), e))?;
        if !url_safe(dir.path()) {
            return Err(Error::input(
                dir.path().display().to_string(),
                "the fleet's path may hold only letters, digits and `/._-+@,=~` to stage a Nix binary \
                 cache in it (Nix takes it in a URL): move the fleet repo",
            ));
        }
        Ok(Staging { dir })
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Stand-ins for the references already in the cache: `nix copy` refuses a path
    /// whose references it cannot see in the destination. Never uploaded.
    fn placeholders(
        &self,
        order: &[String],
        infos: &HashMap<String, PathInfo>,
        present: &HashSet<String>,
    ) -> Result<(), Error> {
        let wanted: HashSet<&str> = order
            .iter()
            .filter_map(|p| infos.get(p))
            .flat_map(|i| i.references.iter().map(String::as_str))
            .filter(|r| present.contains(hash_part(r)))
            .collect();
        for reference in wanted {
            let Some(info) = infos.get(reference) else {
                continue;
            };
            let text = format!(
                "StorePath: {}\nURL: nar/placeholder.nar\nCompression: none\nNarHash: {}\nNarSize: {}\n",
                info.path, info.nar_hash, info.nar_size
            );
            let file = self.path(&format!("{}.narinfo", hash_part(reference)));
            std::fs::write(&file, text).map_err(|e| Error::io(file.display().to_string(), e))?;
        }
        Ok(())
    }

    /// `nix copy` of exactly `order` (no closure) into the staging dir, signed.
    fn copy(&self, nix: &str, key: &CacheKey, compression: &str, order: &[String]) -> Result<(), Error> {
        let url = format!(
            "file://{}?secret-key={}&compression={compression}",
            self.dir.path().display(),
            key.path.display()
        );
        let mut args = vec!["copy", "--no-recursive", "--no-check-sigs", "--to", url.as_str()];
        args.extend(order.iter().map(String::as_str));
        run_nix(nix, &args)
            .map(|_| ())
            .map_err(|why| Error::input("cache", format!("`{nix} copy` into the cache failed: {why}")))
    }

    /// Hands the staged files of `order` to `sink`: `nix-cache-info` and the new NARs,
    /// a sync, then the `.narinfo` files in order (references first), a sync.
    fn upload(&self, order: &[String], sink: &CacheDir) -> Result<(), Error> {
        let mut narinfos = Vec::new();
        let mut nars = Vec::new();
        for path in order {
            let name = format!("{}.narinfo", hash_part(path));
            let file = self.path(&name);
            let failed = |msg: String| Error::input(file.display().to_string(), msg);
            let bytes = std::fs::read(&file).map_err(|e| Error::io(file.display().to_string(), e))?;
            let info = NarInfo::parse(&bytes).map_err(|e| match e {
                NarInfoError::Missing("URL") | NarInfoError::Url(_) => {
                    failed("`nix copy` wrote a .narinfo without a nar/ URL".into())
                }
                e => failed(e.to_string()),
            })?;
            nars.push(info.nar_file);
            narinfos.push(name);
        }
        if !sink.list("")?.contains(CACHE_INFO) {
            sink.put(CACHE_INFO, &self.path(CACHE_INFO))?;
        }
        let have = sink.list(NAR_DIR)?;
        remove_leftovers(sink, NAR_DIR, &have)?;
        for nar in nars.iter().filter(|nar| !have.contains(*nar)) {
            let rel = format!("{NAR_DIR}/{nar}");
            sink.put(&rel, &self.path(&rel))?;
        }
        sink.sync()?;
        for name in &narinfos {
            sink.put(name, &self.path(name))?;
        }
        sink.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_and_give_their_public_half() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.sec");
        // Made by `nix-store --generate-binary-cache-key test1 k.sec k.pub`.
        std::fs::write(
            &key,
            "test1:0u2GdSMNanW8Sr22XCvfIgxxE+h3L7RRM2u0Y2Tfu4fBLZIaIC7ObFxsuNZUrwGQFzitx34hAqOYWTzeXbJXFQ==",
        )
        .unwrap();
        let k = CacheKey::load(&key, "k.sec").unwrap();
        assert_eq!(
            k.public_key(),
            "test1:wS2SGiAuzmxcbLjWVK8BkBc4rcd+IQKjmFk83l2yVxU="
        );
        for bad in ["", "test1", ":AAAA", "test1:AAAA", "test1:!!!!", "a b:AAAA"] {
            std::fs::write(&key, bad).unwrap();
            let e = CacheKey::load(&key, "k.sec").unwrap_err().to_string();
            assert!(
                e.starts_with("cache.signing_key k.sec: not a Nix binary cache secret key"),
                "{bad}: {e}"
            );
        }
        let e = CacheKey::load(&dir.path().join("none"), "none")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nix-store --generate-binary-cache-key"), "{e}");
    }

    fn info(path: &str, refs: &[&str]) -> (String, PathInfo) {
        (
            path.to_owned(),
            PathInfo {
                path: path.to_owned(),
                nar_hash: String::new(),
                nar_size: 1,
                references: refs.iter().map(|r| r.to_string()).collect(),
            },
        )
    }

    #[test]
    fn path_infos_of_old_and_new_nix_are_read() {
        let old = br#"[{"path":"/nix/store/a-x","narHash":"sha256-A","narSize":1,"references":[]}]"#;
        let new = br#"{"/nix/store/a-x":{"narHash":"sha256-A","narSize":1,"references":["/nix/store/a-x"]}}"#;
        for json in [&old[..], &new[..]] {
            let infos = parse_path_infos(json).unwrap();
            assert_eq!(infos["/nix/store/a-x"].path, "/nix/store/a-x");
            assert_eq!(infos["/nix/store/a-x"].nar_size, 1);
        }
        assert!(parse_path_infos(b"{\"/nix/store/a-x\": null}").is_err());
    }

    #[test]
    fn references_come_first_and_each_path_once() {
        let infos: HashMap<_, _> = [
            info("a", &["b", "c", "a"]),
            info("b", &["c"]),
            info("c", &[]),
            info("d", &["c", "e"]),
            info("e", &[]),
        ]
        .into_iter()
        .collect();
        let mut seen = HashSet::from(["e".to_owned()]);
        let mut order = Vec::new();
        assert_eq!(visit("a", &infos, &mut seen, &mut order), 3);
        assert_eq!(visit("d", &infos, &mut seen, &mut order), 1);
        assert_eq!(order, ["c", "b", "a", "d"]);
        assert_eq!(hash_part("/nix/store/abc-x-y"), "abc");
    }
}
