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

use crate::agent::report::State;
use crate::layout::{GENERATIONS_DIR, MANIFEST_LIMIT, SIGNATURE_LIMIT};
use crate::manifest::{Manifest, MANIFEST_FILE, SIGNATURE_FILE};
use crate::transport::Transport;

/// How a step of a run ends when it fails: the report's state and its one-line error.
pub(crate) type Step<T> = Result<T, (State, String)>;

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
    /// The admin keys whose signatures are accepted.
    pub trusted: &'a [PublicKey],
    /// The agent's `run_timeout`, to name it when it cuts a download short.
    pub run_timeout: u64,
}

/// A download error: the server's bad input is refused, anything else (a lost
/// connection, the deadline) interrupts the run, to be retried.
fn download_error(rel: &str, e: &io::Error, run_timeout: u64) -> (State, String) {
    match e.kind() {
        io::ErrorKind::FileTooLarge | io::ErrorKind::InvalidData => (State::Refused, e.to_string()),
        io::ErrorKind::TimedOut => (
            State::Interrupted,
            format!("downloading {rel}: {e} (run_timeout = {run_timeout} s)"),
        ),
        _ => (State::Interrupted, format!("downloading {rel}: {e}")),
    }
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

impl Fetch<'_> {
    /// Downloads, checks and installs the generation; returns its manifest.
    pub(crate) fn run(&self, t: &mut dyn Transport) -> Step<Manifest> {
        let refuse = |msg: String| (State::Refused, msg);
        let g = self.generation;
        if let Some(applied) = self.applied {
            if g < applied {
                return Err(refuse(format!(
                    "the server offers bundle generation {g}, older than the applied {applied}: refused (downgrade or replay)"
                )));
            }
        }
        let dir = format!("{GENERATIONS_DIR}/{g}");
        let mut get = |rel: &str, limit: u64| {
            let rel = format!("{dir}/{rel}");
            t.read(&rel, limit)
                .map_err(|e| download_error(&rel, &e, self.run_timeout))
        };
        let manifest_bytes = get(MANIFEST_FILE, MANIFEST_LIMIT)?;
        let sig = get(SIGNATURE_FILE, SIGNATURE_LIMIT)?;
        let sig = String::from_utf8_lossy(&sig);
        crate::sign::verify(&manifest_bytes, &sig, self.trusted).map_err(|e| refuse(e.to_string()))?;
        let manifest = Manifest::parse(&manifest_bytes).map_err(|e| refuse(e.to_string()))?;
        if manifest.host != self.host {
            return Err(refuse(format!(
                "the bundle is for host `{}`, not `{}`",
                manifest.host, self.host
            )));
        }
        if manifest.generation != g {
            return Err(refuse(format!(
                "the manifest says bundle generation {}, `current` says {g}",
                manifest.generation
            )));
        }
        // Every file has a signed size before anything is downloaded.
        for path in manifest.files.keys() {
            manifest.size(path).map_err(|e| refuse(e.to_string()))?;
        }

        let failed = |what: &str, e: io::Error| (State::Failed, format!("{what}: {e}"));
        std::fs::create_dir_all(self.bundles).map_err(|e| failed(&self.bundles.display().to_string(), e))?;
        // Removed on every early return: nothing half-downloaded stays behind.
        let staging = tempfile::Builder::new()
            .prefix(&format!(".{g}."))
            .tempdir_in(self.bundles)
            .map_err(|e| failed(&self.bundles.display().to_string(), e))?;
        for (name, bytes) in [
            (MANIFEST_FILE, &manifest_bytes[..]),
            (SIGNATURE_FILE, sig.as_bytes()),
        ] {
            create(&staging.path().join(name))
                .and_then(|mut f| f.write_all(bytes))
                .map_err(|e| failed(&format!("installing {name}"), e))?;
        }
        for (path, hash) in &manifest.files {
            let size = manifest.size(path).map_err(|e| refuse(e.to_string()))?;
            let file =
                create(&staging.path().join(path)).map_err(|e| failed(&format!("installing {path}"), e))?;
            let mut sink = Hashing {
                out: BufWriter::new(file),
                hasher: Sha256::new(),
            };
            let rel = format!("{dir}/{path}");
            let got = t.read_to(&rel, size, &mut sink).map_err(|e| {
                if e.kind() == io::ErrorKind::FileTooLarge {
                    refuse(format!("{path}: larger than the signed size {size}"))
                } else {
                    download_error(&rel, &e, self.run_timeout)
                }
            })?;
            if got != size {
                return Err(refuse(format!("{path}: {got} bytes, the signed size is {size}")));
            }
            sink.flush()
                .map_err(|e| failed(&format!("installing {path}"), e))?;
            if crate::fleet::bundle::hex(&sink.hasher.finalize()) != *hash {
                return Err(refuse(format!(
                    "{path}: SHA-256 differs from the signed manifest"
                )));
            }
        }
        // One sync makes every file and directory of the staging dir durable; then the
        // rename, made durable by syncing the bundles dir.
        let install = |e: io::Error| failed("installing the bundle", e);
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
