//! `bento ssh HOST`: the system `ssh` to a host, its host key pinned from
//! `keys/hosts/HOST.pub` through a known_hosts file of its own.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bento_deploy::location::Location;
use bento_deploy::reach::{self, Target};
use bento_deploy::status::{self, HostStatus, Options, Root};
use bento_deploy::Config;
use bento_secrets::fleet_lock::{ensure_state_dir, STATE_DIR};

use crate::cli::{SourceArgs, SshArgs};

/// ssh's own exit status when it fails (connection, host key, authentication); any other
/// status is the remote command's.
const SSH_FAILED: i32 = 255;

pub fn run(fleet: &Path, args: SshArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(fleet)?;
    let host = &args.host;
    let key_rel = bento_secrets::hostkeys::key_file(host);
    let key_path = fleet.join(&key_rel);
    if !bento_secrets::names::HostName::is_valid(host) || !key_path.is_file() {
        let known = status::fleet_hosts(fleet).unwrap_or_default();
        anyhow::bail!(
            "{}: no such host `{}`{}: `bento host add NAME --key FILE` registers one",
            key_rel.escape_default(),
            host.escape_default(),
            bento_secrets::suggest::hint(host, known.iter().map(String::as_str))
        );
    }
    let key = bento_secrets::hostkeys::read_one(&key_path, &key_rel)?;
    let target = target(fleet, &config, host, &args.server)?;
    let known_hosts = pin(fleet, host, key.text())?;
    let ssh_args = reach::ssh_args(&target, &known_hosts, &args.args);
    if args.print {
        let words: Vec<String> = std::iter::once("ssh".to_owned())
            .chain(ssh_args.iter().map(|a| shell_word(a)))
            .collect();
        crate::output::outln!("{}", words.join(" "))?;
        return Ok(ExitCode::SUCCESS);
    }
    let ran = std::process::Command::new("ssh")
        .args(&ssh_args)
        .status()
        .map_err(|e| anyhow::anyhow!("running ssh: {e} (install the OpenSSH client)"))?;
    match ran.code() {
        Some(0) => Ok(ExitCode::SUCCESS),
        Some(SSH_FAILED) => anyhow::bail!(
            "ssh to {host} at {}:{} failed (see ssh's message above); if the host key differs, \
             this is not the host registered in {key_rel}: check it before anything else \
             (after a reinstall: `bento host add {host} --key FILE --replace`)",
            target.address,
            target.port
        ),
        Some(code) => Ok(ExitCode::from(u8::try_from(code).unwrap_or(1))),
        None => anyhow::bail!("ssh to {host} ended by a signal ({ran})"),
    }
}

/// Where to reach `host`: bento.toml's `[hosts.<host>]`, else what its heartbeat reports.
fn target(fleet: &Path, config: &Config, host: &str, server: &SourceArgs) -> anyhow::Result<Target> {
    let settings = config.hosts.get(host).cloned().unwrap_or_default();
    let reported = || -> anyhow::Result<Option<HostStatus>> {
        let location = Location::choose(config, server.server_root.as_deref(), server.target.as_deref())?;
        let opened = location.open(fleet, config)?;
        let shown = location.shown();
        let root = Root {
            dir: opened.dir(),
            shown: &shown,
        };
        Ok(status::host(root, host, &Options::from_config(config)).ok())
    };
    let (address, reported_port) = match settings.address {
        Some(address) => (address.to_string(), None),
        None => {
            let seen = reported()?;
            let first = seen.as_ref().and_then(|s| s.addresses.first().cloned());
            let Some(address) = first else {
                anyhow::bail!(
                    "{}: no address for {host}: set hosts.{host}.address, or let its agent report one \
                     (`bento status --json` shows `addresses`; pass --server-root DIR or --target URL to read another server root)",
                    fleet.join(bento_deploy::fleet::config::CONFIG_FILE).display()
                );
            };
            (address, seen.and_then(|s| s.ssh_port))
        }
    };
    if address.starts_with('-') || address.is_empty() {
        anyhow::bail!(
            "hosts.{host}.address `{}` is not a host name or IP address",
            address.escape_default()
        );
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
fn pin(fleet: &Path, host: &str, key: &str) -> anyhow::Result<PathBuf> {
    ensure_state_dir(fleet)?;
    let dir = fleet.join(STATE_DIR).join("known_hosts");
    std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    // A link committed in the fleet's place would have the pin written elsewhere.
    if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
        anyhow::bail!(
            "{}: is a symlink or not a directory; remove it (bento keeps pinned host keys there)",
            dir.display()
        );
    }
    let dir = std::fs::canonicalize(&dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    let file = dir.join(host);
    bento_secrets::atomic::write_atomic(&file, reach::known_hosts_line(host, key).as_bytes(), 0o644)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    Ok(file)
}

/// `word` as one shell word: bare when safe, else single-quoted.
fn shell_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}
