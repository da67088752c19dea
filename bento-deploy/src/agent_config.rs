//! `/etc/bento/agent.toml`: what a host's agent needs to know. Written by the NixOS client
//! module; every key but `host`, `server` and `trusted_keys` has a default.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use ssh_key::PublicKey;

use crate::transport::ServerUrl;

/// The default location of the agent's configuration.
pub const DEFAULT_PATH: &str = "/etc/bento/agent.toml";

/// The parsed agent.toml.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// This host's name in the fleet.
    pub host: String,
    /// `sftp://user@address:port` or `file:///dir`.
    pub server: String,
    /// The host's private key: logs in over sftp and decrypts secrets.
    #[serde(default = "default_identity")]
    pub identity: PathBuf,
    /// The server's pinned host key(s).
    #[serde(default = "default_known_hosts")]
    pub known_hosts: PathBuf,
    /// Admin public keys (ssh key lines) whose bundle signatures are accepted.
    pub trusted_keys: Vec<String>,
    /// Where bundles are installed; `<state_dir>/current` is the active one.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Where `bento activate` puts secrets.
    #[serde(default = "default_secrets_root")]
    pub secrets_root: PathBuf,
    /// Applies a new configuration; bento appends `--flake …#host` or `-I nixos-config=…`.
    #[serde(default = "default_rebuild")]
    pub rebuild: String,
    /// Undoes the last switch when the server is unreachable after it.
    #[serde(default = "default_rollback")]
    pub rollback: String,
    /// Activates secrets alone (when only secrets changed); default: this binary's
    /// `activate --bundle <state_dir>/current --root <secrets_root> -i <identity>`, run
    /// with `--phase users` first, then for the other secrets.
    #[serde(default)]
    pub activate: Option<String>,
    /// Seconds before giving up connecting.
    #[serde(default = "default_timeout")]
    pub connect_timeout: u64,
    /// Seconds a whole run may take, the rebuild included: past it, a download waiting on
    /// the server fails and a running command is stopped, and the lock is released.
    #[serde(default = "default_run_timeout")]
    pub run_timeout: u64,
    /// How many installed bundles to keep under `<state_dir>/bundles`.
    #[serde(default = "default_keep")]
    pub keep_bundles: usize,
    /// The ssh client.
    #[serde(default = "default_ssh")]
    pub ssh: String,
    /// The port this host's sshd listens on, reported in the heartbeat for `bento ssh`.
    #[serde(default = "default_ssh_port")]
    pub ssh_port: u16,
    /// The symlink naming the running system, reported before and after a run.
    #[serde(default = "default_current_system")]
    pub current_system: PathBuf,
    /// The symlink naming the booted system, to see whether a switch changed the kernel.
    #[serde(default = "default_booted_system")]
    pub booted_system: PathBuf,
    /// When nothing new was published, rebuild a flake configuration with fresh inputs.
    #[serde(default)]
    pub self_update: bool,
    /// What to do when a switch changed the kernel, initrd or kernel modules.
    #[serde(default)]
    pub reboot: Reboot,
    /// The command for `reboot`; default `systemctl kexec` or `systemctl reboot`.
    #[serde(default)]
    pub reboot_command: Option<String>,
    /// The trigger's unix socket (`bento trigger`).
    #[serde(default = "default_trigger_socket")]
    pub trigger_socket: PathBuf,
    /// The group whose members may use the trigger besides root (socket mode 0660);
    /// none: root only (0600).
    #[serde(default)]
    pub trigger_group: Option<String>,
    /// Also listen on TCP 127.0.0.1:51337, which lets ANY local user start a run and read
    /// its output.
    #[serde(default)]
    pub trigger_tcp: bool,
}

/// The reboot policy after a kernel change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reboot {
    /// Leave it to the admin (the report says a reboot is pending).
    #[default]
    Never,
    /// `systemctl kexec`: into the new kernel without firmware.
    Kexec,
    /// `systemctl reboot`.
    Reboot,
}

impl AgentConfig {
    /// The reboot command, if the policy asks for one.
    pub fn reboot_command(&self) -> Option<String> {
        match (self.reboot, &self.reboot_command) {
            (Reboot::Never, _) => None,
            (_, Some(c)) => Some(c.clone()),
            (Reboot::Kexec, None) => Some("systemctl kexec".into()),
            (Reboot::Reboot, None) => Some("systemctl reboot".into()),
        }
    }
}

fn default_booted_system() -> PathBuf {
    "/run/booted-system".into()
}

fn default_current_system() -> PathBuf {
    "/run/current-system".into()
}

fn default_trigger_socket() -> PathBuf {
    "/run/bento/trigger.sock".into()
}

fn default_identity() -> PathBuf {
    "/etc/ssh/ssh_host_ed25519_key".into()
}
fn default_known_hosts() -> PathBuf {
    "/etc/bento/known_hosts".into()
}
fn default_state_dir() -> PathBuf {
    "/var/bento".into()
}
fn default_secrets_root() -> PathBuf {
    "/run/bento".into()
}
fn default_rebuild() -> String {
    "nixos-rebuild switch".into()
}
fn default_rollback() -> String {
    "nixos-rebuild switch --rollback".into()
}
fn default_timeout() -> u64 {
    10
}
fn default_run_timeout() -> u64 {
    3600
}
fn default_keep() -> usize {
    3
}
fn default_ssh_port() -> u16 {
    22
}
fn default_ssh() -> String {
    "ssh".into()
}

impl AgentConfig {
    /// Reads and validates the file; errors are one line naming the file and line.
    pub fn load(path: &Path) -> Result<AgentConfig, String> {
        // Values quoted in errors may hold escaped line breaks (`"\n"`): keep one line.
        Self::read(path).map_err(|e| bento_secrets::error::escape_controls(&e))
    }

    fn read(path: &Path) -> Result<AgentConfig, String> {
        let shown = path.display();
        let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
        let config: AgentConfig = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| bento_secrets::rules::line_col(&text, s.start).0)
                .unwrap_or(1);
            format!("{shown}:{line}: {}", e.message().replace('\n', " "))
        })?;
        // The line of `key = …` (a key name inside another key or a value does not count).
        let at = |key: &str| {
            text.lines()
                .position(|line| {
                    line.trim_start()
                        .strip_prefix(key)
                        .is_some_and(|rest| rest.trim_start().starts_with('='))
                })
                .map_or(1, |i| i + 1)
        };
        // The line holding `needle`, for values inside a list.
        let line_of = |needle: &str| {
            text.find(needle)
                .map_or(1, |o| bento_secrets::rules::line_col(&text, o).0)
        };
        if !bento_secrets::names::HostName::is_valid(&config.host) {
            return Err(format!(
                "{shown}:{}: host `{}` is not a valid host name",
                at("host"),
                config.host
            ));
        }
        ServerUrl::parse(&config.server).map_err(|e| format!("{shown}:{}: server {e}", at("server")))?;
        if config.trusted_keys.is_empty() {
            return Err(format!(
                "{shown}:{}: trusted_keys is empty: list the admin public keys whose signatures this host accepts",
                at("trusted_keys")
            ));
        }
        for line in &config.trusted_keys {
            if trusted_key(line).is_err() {
                return Err(format!(
                    "{shown}:{}: trusted_keys: `{}` is not an ssh public key line",
                    line_of(line.split_whitespace().nth(1).unwrap_or(line)),
                    line.chars().take(30).collect::<String>()
                ));
            }
        }
        if config.run_timeout == 0 {
            return Err(format!(
                "{shown}:{}: run_timeout must be at least 1 (seconds)",
                at("run_timeout")
            ));
        }
        if config.ssh_port == 0 {
            return Err(format!(
                "{shown}:{}: ssh_port must be between 1 and 65535",
                at("ssh_port")
            ));
        }
        if !config.trigger_socket.is_absolute() {
            return Err(format!(
                "{shown}:{}: trigger_socket must be an absolute path (e.g. /run/bento/trigger.sock)",
                at("trigger_socket")
            ));
        }
        if config
            .trigger_group
            .as_deref()
            .is_some_and(|g| g.trim().is_empty())
        {
            return Err(format!(
                "{shown}:{}: trigger_group is empty: name a group, or leave the key out for root only",
                at("trigger_group")
            ));
        }
        for (key, cmd) in [("rebuild", &config.rebuild), ("rollback", &config.rollback)] {
            if cmd.trim().is_empty() {
                return Err(format!("{shown}:{}: {key} is empty", at(key)));
            }
        }
        Ok(config)
    }

    /// The server, parsed.
    pub fn server_url(&self) -> Result<ServerUrl, String> {
        ServerUrl::parse(&self.server)
    }
}

/// One `trusted_keys` line as the agent verifies signatures with it: checked with this
/// same parser when the file is loaded.
pub fn trusted_key(line: &str) -> Result<PublicKey, ssh_key::Error> {
    PublicKey::from_openssh(line.trim())
}
