//! `bento ssh HOST`: where a host is reached (bento.toml's `[hosts.<host>]`, else what its
//! heartbeat reports) and its registered key pinned, alone, in a known_hosts file of its
//! own under `.bento/known_hosts/`.

use std::path::{Path, PathBuf};

use bento_secrets::fleet_lock::{ensure_state_dir, STATE_DIR};
use bento_secrets::names::HostName;

use crate::error::Error;
use crate::fleet::config::{Config, CONFIG_FILE};
use crate::fleet::location::Location;
use crate::reach::{self, Target};
use crate::status::{self, Options};

/// Why a host cannot be reached; each one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshError {
    /// No such registered host.
    #[error("{}: no such host `{}`{hint}: `bento host add NAME --key FILE` registers one", .key_rel.escape_default(), .host.escape_default())]
    NoSuchHost {
        /// `keys/hosts/HOST.pub`.
        key_rel: String,
        /// The name asked for.
        host: String,
        /// The closest registered host, as a hint (or empty).
        hint: String,
    },
    /// Neither bento.toml nor a heartbeat names an address.
    #[error("{}: no address for {host}: set hosts.{host}.address, or let its agent report one \
             (`bento status --json` shows `addresses`; pass --server-root DIR or --target URL to read another server root)", .config.display())]
    NoAddress {
        /// bento.toml.
        config: PathBuf,
        /// The host.
        host: String,
    },
    /// The address could be read as an option.
    #[error("hosts.{host}.address `{}` is not a host name or IP address", .address.escape_default())]
    BadAddress {
        /// The host.
        host: String,
        /// The address.
        address: String,
    },
    /// `.bento/known_hosts` is a link or not a directory.
    #[error("{}: is a symlink or not a directory; remove it (bento keeps pinned host keys there)", .0.display())]
    NotADirectory(PathBuf),
    /// Writing the pin failed.
    #[error("{}: {source}", .path.display())]
    Pin {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The fleet or the server could not be read.
    #[error(transparent)]
    Fleet(#[from] Error),
}

/// How to run ssh to a host.
#[derive(Debug)]
pub struct SshPlan {
    /// Where the host is reached.
    pub target: Target,
    /// `keys/hosts/HOST.pub`, for messages.
    pub key_rel: String,
    /// The arguments of `ssh` (without the program).
    pub args: Vec<String>,
}

/// Plans ssh to `host` of the fleet at `fleet` running `remote` (a login shell when empty):
/// its registered key pinned (written now), its address from bento.toml or, when it has
/// none, from the host's heartbeat on the server at `location`.
pub fn plan(
    fleet: &Path,
    config: &Config,
    host: &str,
    location: &dyn Fn() -> Result<Location, Error>,
    remote: &[String],
) -> Result<SshPlan, SshError> {
    let key_rel = bento_secrets::hostkeys::key_file(host);
    let key_path = fleet.join(&key_rel);
    if !HostName::is_valid(host) || !key_path.is_file() {
        let known = status::fleet_hosts(fleet).unwrap_or_default();
        return Err(SshError::NoSuchHost {
            key_rel,
            host: host.to_owned(),
            hint: bento_secrets::suggest::hint(host, known.iter().map(String::as_str)),
        });
    }
    let key = bento_secrets::hostkeys::read_one(&key_path, &key_rel).map_err(Error::from)?;
    let target = target(fleet, config, host, location)?;
    let known_hosts = pin(fleet, host, key.text())?;
    let args = reach::ssh_args(&target, &known_hosts, remote);
    Ok(SshPlan {
        target,
        key_rel,
        args,
    })
}

/// Where to reach `host`: bento.toml's `[hosts.<host>]`, else what its heartbeat reports.
fn target(
    fleet: &Path,
    config: &Config,
    host: &str,
    location: &dyn Fn() -> Result<Location, Error>,
) -> Result<Target, SshError> {
    let settings = config.hosts.get(host).cloned().unwrap_or_default();
    let (address, reported_port) = match settings.address {
        Some(address) => (address.to_string(), None),
        None => {
            let seen = location()?.read(fleet, config, |root| {
                Ok::<_, Error>(status::host(root, host, &Options::from_config(config)).ok())
            })?;
            let first = seen.as_ref().and_then(|s| s.addresses.first().cloned());
            let Some(address) = first else {
                return Err(SshError::NoAddress {
                    config: fleet.join(CONFIG_FILE),
                    host: host.to_owned(),
                });
            };
            (address, seen.and_then(|s| s.ssh_port))
        }
    };
    if address.starts_with('-') || address.is_empty() {
        return Err(SshError::BadAddress {
            host: host.to_owned(),
            address,
        });
    }
    Ok(Target {
        host: host.to_owned(),
        address,
        port: settings.ssh_port.or(reported_port).unwrap_or(22),
        user: settings.ssh_user,
    })
}

/// Writes `.bento/known_hosts/<host>` holding only the registered key; returns its
/// absolute path (a printed command works from any directory).
fn pin(fleet: &Path, host: &str, key: &str) -> Result<PathBuf, SshError> {
    ensure_state_dir(fleet).map_err(Error::from)?;
    let dir = fleet.join(STATE_DIR).join("known_hosts");
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SshError::Pin { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(failed(&dir))?;
    // A link committed in the fleet's place would have the pin written elsewhere.
    if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
        return Err(SshError::NotADirectory(dir));
    }
    let dir = std::fs::canonicalize(&dir).map_err(failed(&dir))?;
    let file = dir.join(host);
    bento_secrets::atomic::write_atomic(&file, reach::known_hosts_line(host, key).as_bytes(), 0o644)
        .map_err(failed(&file))?;
    Ok(file)
}
