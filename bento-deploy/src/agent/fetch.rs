//! The agent's download of one generation: what the server says is read with limits, the
//! signature and the manifest are checked, then each file is streamed into a staging dir
//! while it is hashed, never past its signed size, and the staging dir is renamed into
//! `<state_dir>/bundles/<g>`. Nothing from the server is held whole in memory but the
//! manifest and its signature, both capped.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use sha2::{Digest, Sha256};
use ssh_key::PublicKey;

use crate::agent::error::{AgentError, Descent};
use crate::transport::Transport;
use crate::wire::digest::Sha256 as Sha256Digest;
use crate::wire::history::{Ancestors, LinkError};
use crate::wire::host_dir::{GENERATIONS_DIR, MANIFEST_LIMIT, SIGNATURE_LIMIT};
use crate::wire::manifest::{Manifest, FORMAT, MANIFEST_FILE, SIGNATURE_FILE};

/// What a fetch needs to know besides the server.
pub(crate) struct Fetch<'a> {
    /// `<state_dir>/bundles`.
    pub bundles: &'a Path,
    /// This host.
    pub host: &'a str,
    /// The generation `current` names.
    pub generation: u64,
    /// The generation applied, if any.
    pub applied: Option<u64>,
    /// The applied generation's manifest, when it is installed: what a new manifest must
    /// descend from.
    pub running: Option<Running>,
    /// The admin keys whose signatures are accepted.
    pub trusted: &'a [PublicKey],
    /// How many distinct trusted keys must have signed.
    pub required_signatures: usize,
    /// The agent's `run_timeout`, to name it when it cuts a download short.
    pub run_timeout: u64,
}

/// The manifest a host runs, as a new one's descent is checked against it.
pub(crate) struct Running {
    /// The SHA-256 of its bytes.
    pub hash: Sha256Digest,
    /// It was made before manifests named their predecessor (format 1). A chain that goes
    /// back to its own start, itself such a manifest, without meeting it is then accepted:
    /// descent cannot be proven from before history began (hosts that lagged during the
    /// upgrade would be stuck otherwise).
    pub before_history: bool,
}

/// Hashes what it writes.
struct Hashing<W> {
    out: W,
    hasher: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A new file (0600) in the staging dir, its parent directories made.
fn create(path: &Path) -> io::Result<File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// The most links followed from an offered manifest down to the one a host runs.
const MAX_DESCENT: usize = 100_000;

impl Fetch<'_> {
    /// Checks that `manifest` descends from the manifest this host runs: its `previous`
    /// links, followed through the server's history (see [`crate::wire::history`]), reach
    /// the running manifest's hash before any generation at or below the applied one.
    /// A host that runs nothing yet, or whose applied bundle is not installed, has nothing
    /// to descend from.
    fn check_descent(&self, t: &mut dyn Transport, manifest: &Manifest) -> Result<(), AgentError> {
        let (Some(running), Some(applied)) = (&self.running, self.applied) else {
            return Ok(());
        };
        // The chain's start, reached without meeting the running manifest: a refusal, but
        // where both sides predate history.
        let start = |first: u64, before_history: bool| match running.before_history && before_history {
            true => Ok(()),
            false => Err(Descent::Unrooted { first }),
        };
        let refused = |why| AgentError::NotDescendant {
            offered: manifest.generation,
            applied,
            why,
        };
        let mut ancestors = Ancestors::of(manifest, |rel: &str, limit| t.read(rel, limit));
        let (mut first, mut old_format) = (manifest.generation, manifest.format < FORMAT);
        for _ in 0..MAX_DESCENT {
            match ancestors.next_hash() {
                Some(hash) if *hash == running.hash => return Ok(()),
                Some(_) => {}
                None => return start(first, old_format).map_err(refused),
            }
            match ancestors.next() {
                Some(Ok(a)) if a.manifest.generation <= applied => {
                    return Err(refused(Descent::Forked {
                        generation: a.manifest.generation,
                    }))
                }
                Some(Ok(a)) => (first, old_format) = (a.manifest.generation, a.manifest.format < FORMAT),
                Some(Err(LinkError::Unreadable { path, source })) => {
                    return Err(AgentError::download(&path, source, self.run_timeout))
                }
                Some(Err(e)) => return Err(refused(Descent::Link(e))),
                None => return start(first, old_format).map_err(refused),
            }
        }
        Err(refused(Descent::TooFar(MAX_DESCENT)))
    }

    /// Downloads, checks and installs the generation; returns its manifest.
    pub(crate) fn run(&self, t: &mut dyn Transport) -> Result<Manifest, AgentError> {
        let g = self.generation;
        if let Some(applied) = self.applied {
            if g < applied {
                return Err(AgentError::Downgrade { offered: g, applied });
            }
        }
        let dir = format!("{GENERATIONS_DIR}/{g}");
        let mut get = |rel: &str, limit: u64| {
            let rel = format!("{dir}/{rel}");
            t.read(&rel, limit)
                .map_err(|e| AgentError::download(&rel, e, self.run_timeout))
        };
        let manifest_bytes = get(MANIFEST_FILE, MANIFEST_LIMIT)?;
        let sig = get(SIGNATURE_FILE, SIGNATURE_LIMIT)?;
        let sig = String::from_utf8_lossy(&sig);
        crate::sign::verify_threshold(&manifest_bytes, &sig, self.trusted, self.required_signatures)?;
        let manifest = Manifest::parse(&manifest_bytes).map_err(|e| AgentError::Manifest(e.into()))?;
        if manifest.host.as_str() != self.host {
            return Err(AgentError::WrongHost {
                bundle: manifest.host.to_string(),
                host: self.host.to_owned(),
            });
        }
        if manifest.generation != g {
            return Err(AgentError::WrongGeneration {
                manifest: manifest.generation,
                current: g,
            });
        }
        self.check_descent(t, &manifest)?;
        // Every file has a signed size before anything is downloaded.
        for path in manifest.files.keys() {
            manifest.size(path).map_err(|e| AgentError::Manifest(e.into()))?;
        }

        let failed = |e| AgentError::install(self.bundles.display(), e);
        std::fs::create_dir_all(self.bundles).map_err(failed)?;
        // Removed on every early return: nothing half-downloaded stays behind.
        let staging = tempfile::Builder::new()
            .prefix(&format!(".{g}."))
            .tempdir_in(self.bundles)
            .map_err(failed)?;
        for (name, bytes) in [
            (MANIFEST_FILE, &manifest_bytes[..]),
            (SIGNATURE_FILE, sig.as_bytes()),
        ] {
            create(&staging.path().join(name))
                .and_then(|mut f| f.write_all(bytes))
                .map_err(|e| AgentError::install(format_args!("installing {name}"), e))?;
        }
        for (path, hash) in &manifest.files {
            let size = manifest.size(path).map_err(|e| AgentError::Manifest(e.into()))?;
            let installing = |e| AgentError::install(format_args!("installing {path}"), e);
            let file = create(&staging.path().join(path.as_str())).map_err(installing)?;
            let mut sink = Hashing {
                out: BufWriter::new(file),
                hasher: Sha256::new(),
            };
            let rel = format!("{dir}/{path}");
            let got = t.read_to(&rel, size, &mut sink).map_err(|e| {
                if e.kind() == io::ErrorKind::FileTooLarge {
                    AgentError::TooLarge {
                        path: path.clone(),
                        size,
                    }
                } else {
                    AgentError::download(&rel, e, self.run_timeout)
                }
            })?;
            if got != size {
                return Err(AgentError::Short {
                    path: path.clone(),
                    got,
                    size,
                });
            }
            sink.flush().map_err(installing)?;
            if Sha256Digest::from_digest(&sink.hasher.finalize().into()) != *hash {
                return Err(AgentError::Hash { path: path.clone() });
            }
        }
        // One sync makes every file and directory of the staging dir durable; then the
        // rename, made durable by syncing the bundles dir.
        let install = |e: io::Error| AgentError::install("installing the bundle", e);
        let staged = File::open(staging.path()).map_err(install)?;
        rustix::fs::syncfs(&staged).map_err(|e| install(e.into()))?;
        let final_dir = self.bundles.join(g.to_string());
        let _ = std::fs::remove_dir_all(&final_dir);
        let staged = staging.keep();
        std::fs::rename(&staged, &final_dir).map_err(install)?;
        File::open(self.bundles)
            .and_then(|d| d.sync_all())
            .map_err(install)?;
        Ok(manifest)
    }
}
