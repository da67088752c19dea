//! `/etc/bento/agent.toml`: what a host's agent needs to know. Written by the NixOS client
//! module; every key but `host`, `server` and `trusted_keys` has a default.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use ssh_key::PublicKey;

use bento_secrets::error::escape_controls;

use crate::server_url::ServerUrl;
use crate::spans::Positions;
use crate::time::TimeSpan;
use crate::wire::mode::DeployMode;

/// The default location of the agent's configuration.
pub const DEFAULT_PATH: &str = "/etc/bento/agent.toml";

/// The parsed agent.toml.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// This host's name in the fleet.
    pub host: String,
    /// `sftp://user@address:port` or `file:///dir`.
    #[serde(deserialize_with = "server_url")]
    pub server: ServerUrl,
    /// The host's private key: logs in over sftp and decrypts secrets.
    #[serde(default = "default_identity")]
    pub identity: PathBuf,
    /// The server's pinned host key(s).
    #[serde(default = "default_known_hosts")]
    pub known_hosts: PathBuf,
    /// With an `s3://` server: the file of this host's store credentials (root's, 0600,
    /// `[default]` with `aws_access_key_id` and `aws_secret_access_key`).
    #[serde(default)]
    pub s3_credentials: Option<PathBuf>,
    /// Admin public keys (ssh key lines) whose bundle signatures are accepted.
    pub trusted_keys: Vec<String>,
    /// `trusted_keys` parsed, when the file is read: the keys signatures are checked with.
    #[serde(skip)]
    pub(crate) trusted: Vec<PublicKey>,
    /// How many distinct trusted keys must have signed a bundle's manifest (the two-person
    /// rule); at most the number of `trusted_keys`.
    #[serde(default = "default_required_signatures")]
    pub required_signatures: usize,
    /// Where bundles are installed; `<state_dir>/current` is the active one.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Where `bento activate` puts secrets.
    #[serde(default = "default_secrets_root")]
    pub secrets_root: PathBuf,
    /// Applies a new configuration; bento appends `--flake …#host` or `-I nixos-config=…`.
    #[serde(default = "default_rebuild", deserialize_with = "rebuild_line")]
    pub rebuild: CommandLine,
    /// Undoes the last switch when the server is unreachable after it.
    #[serde(default = "default_rollback", deserialize_with = "rollback_line")]
    pub rollback: CommandLine,
    /// Activates secrets alone (when only secrets changed); default: this binary's
    /// `activate --bundle <state_dir>/current --root <secrets_root> -i <identity>`, run
    /// with `--phase users` first, then for the other secrets.
    #[serde(default, deserialize_with = "activate_line")]
    pub activate: Option<CommandLine>,
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
    /// After a rebuild, when the bundle's secrets changed too, run the activation as for a
    /// secrets-only update: where systemd services install the secrets (the NixOS
    /// module's systemd-only way), a switch reruns them only when their units changed.
    #[serde(default)]
    pub activate_after_rebuild: bool,
    /// What to do when a switch changed the kernel, initrd or kernel modules.
    #[serde(default)]
    pub reboot: Reboot,
    /// The command for `reboot`; default `systemctl kexec` or `systemctl reboot`.
    #[serde(default, deserialize_with = "reboot_line")]
    pub reboot_command: Option<CommandLine>,
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
    /// How this host gets its system: `source` (the bundle's configuration, built here by
    /// `rebuild`) or `closure` (the system the admin built, fetched from the server).
    #[serde(default)]
    pub mode: DeployMode,
    /// Closure mode: the Nix binary cache keys (`NAME:BASE64`) whose signatures make a
    /// fetched store path acceptable; nothing else is imported.
    #[serde(default)]
    pub cache_public_keys: Vec<String>,
    /// Closure mode: what activates a fetched system; bento appends the system's path.
    /// Default: `<system>/bin/switch-to-configuration switch`.
    #[serde(default, deserialize_with = "switch_line")]
    pub switch: Option<CommandLine>,
    /// Closure mode: the profile the fetched system is made the current generation of.
    #[serde(default = "default_system_profile")]
    pub system_profile: PathBuf,
    /// Closure mode: the `nix` program (`nix-store` and `nix-env` are found beside it).
    #[serde(default = "default_nix")]
    pub nix: String,
    /// `[health]`: what must hold after a switch or a secrets update, else it is rolled back.
    #[serde(default)]
    pub health: Health,
}

/// `[health]` of agent.toml: the checks a run makes after a switch (or a secrets-only
/// update) before it counts as applied. Without any check, nothing is waited for.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// No systemd unit may be failed (`systemctl --failed`).
    #[serde(default)]
    pub failed_units: bool,
    /// Commands (argument lists, run without a shell) that must all exit 0.
    #[serde(default, deserialize_with = "check_lines")]
    pub commands: Vec<CommandLine>,
    /// How long to wait after the switch before the first check.
    #[serde(default = "default_settle", deserialize_with = "health_settle")]
    pub settle: TimeSpan,
    /// How long the checks may keep failing before the generation is rolled back.
    #[serde(default = "default_health_timeout", deserialize_with = "health_timeout")]
    pub timeout: TimeSpan,
    /// The `systemctl` program `failed_units` asks.
    #[serde(default = "default_systemctl")]
    pub systemctl: String,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            failed_units: false,
            commands: Vec::new(),
            settle: default_settle(),
            timeout: default_health_timeout(),
            systemctl: default_systemctl(),
        }
    }
}

impl Health {
    /// Whether anything is checked.
    pub fn any(&self) -> bool {
        self.failed_units || !self.commands.is_empty()
    }
}

/// Functions returning the defaults of agent.toml's keys (serde's `default = "…"`).
macro_rules! defaults {
    ($($name:ident: $type:ty = $value:expr;)*) => {
        $(fn $name() -> $type {
            $value
        })*
    };
}

defaults! {
    default_settle: TimeSpan = TimeSpan::from_secs(10);
    default_health_timeout: TimeSpan = TimeSpan::from_secs(300);
    default_systemctl: String = "systemctl".into();
    default_required_signatures: usize = 1;
    default_system_profile: PathBuf = "/nix/var/nix/profiles/system".into();
    default_nix: String = "nix".into();
    default_booted_system: PathBuf = "/run/booted-system".into();
    default_current_system: PathBuf = "/run/current-system".into();
    default_trigger_socket: PathBuf = "/run/bento/trigger.sock".into();
    default_identity: PathBuf = "/etc/ssh/ssh_host_ed25519_key".into();
    default_known_hosts: PathBuf = "/etc/bento/known_hosts".into();
    default_state_dir: PathBuf = "/var/bento".into();
    default_secrets_root: PathBuf = "/run/bento".into();
    default_rebuild: CommandLine = CommandLine::of("nixos-rebuild", &["switch"]);
    default_rollback: CommandLine = CommandLine::of("nixos-rebuild", &["switch", "--rollback"]);
    default_timeout: u64 = 10;
    default_run_timeout: u64 = 3600;
    default_keep: usize = 3;
    default_ssh_port: u16 = 22;
    default_ssh: String = "ssh".into();
}

/// The longest `settle` or `timeout`: a day.
const HEALTH_SPAN_MAX: u64 = 86_400;

fn health_span<'de, D: serde::Deserializer<'de>>(d: D, key: &str) -> Result<TimeSpan, D::Error> {
    let text = String::deserialize(d)?;
    TimeSpan::parse(&text, HEALTH_SPAN_MAX).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "health.{key} `{}` is not a time span from 1s to 1d: write it as e.g. \"10s\" or \"5min\"",
            text.escape_default()
        ))
    })
}
fn health_settle<'de, D: serde::Deserializer<'de>>(d: D) -> Result<TimeSpan, D::Error> {
    health_span(d, "settle")
}
fn health_timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<TimeSpan, D::Error> {
    health_span(d, "timeout")
}

/// `health.commands`: each an argument list naming a program.
fn check_lines<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<CommandLine>, D::Error> {
    let lists = Vec::<Vec<String>>::deserialize(d)?;
    lists
        .into_iter()
        .map(|mut words| {
            if words.first().is_none_or(|w| w.is_empty()) {
                return Err(serde::de::Error::custom(
                    "health.commands: each command is a list of words naming a program first, e.g. [\"curl\", \"-fsS\", \"http://127.0.0.1/\"]",
                ));
            }
            let program = words.remove(0);
            Ok(CommandLine::from_words(program, words))
        })
        .collect()
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
    pub fn reboot_command(&self) -> Option<CommandLine> {
        match (self.reboot, &self.reboot_command) {
            (Reboot::Never, _) => None,
            (_, Some(c)) => Some(c.clone()),
            (Reboot::Kexec, None) => Some(CommandLine::of("systemctl", &["kexec"])),
            (Reboot::Reboot, None) => Some(CommandLine::of("systemctl", &["reboot"])),
        }
    }
}

impl AgentConfig {
    /// Reads and validates the file; errors are one line naming the file and line.
    pub fn load(path: &Path) -> Result<AgentConfig, AgentConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| AgentConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|(line, problem)| AgentConfigError::At {
            path: shown,
            line,
            problem,
        })
    }

    /// Parses and validates the text of an agent.toml; an error names its line.
    fn parse(text: &str) -> Result<AgentConfig, (usize, Problem)> {
        let mut config: AgentConfig = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| bento_secrets::rules::line_col(text, s.start).0)
                .unwrap_or(1);
            (line, Problem::Toml(e.message().replace('\n', " ")))
        })?;
        // Lines from the parser's spans: a key name inside another key, a comment or a
        // string does not count.
        let positions = Positions::new(text);
        let at = |key: &str| positions.key(&[], key).unwrap_or(1);
        let element = |key: &str, i| positions.element(&[], key, i).unwrap_or(at(key));
        if !bento_secrets::names::HostName::is_valid(&config.host) {
            return Err((at("host"), Problem::HostName(config.host)));
        }
        if config.trusted_keys.is_empty() {
            return Err((at("trusted_keys"), Problem::NoTrustedKeys));
        }
        for (i, line) in config.trusted_keys.iter().enumerate() {
            match PublicKey::from_openssh(line.trim()) {
                Ok(key) => config.trusted.push(key),
                Err(_) => {
                    let shown = line.chars().take(30).collect();
                    return Err((element("trusted_keys", i), Problem::TrustedKey(shown)));
                }
            }
        }
        if config.required_signatures == 0 || config.required_signatures > config.trusted.len() {
            return Err((
                at("required_signatures"),
                Problem::RequiredSignatures {
                    required: config.required_signatures,
                    trusted: config.trusted.len(),
                },
            ));
        }
        if config.run_timeout == 0 {
            return Err((at("run_timeout"), Problem::RunTimeout));
        }
        match (&config.server, &config.s3_credentials) {
            (ServerUrl::S3(_), None) => return Err((at("server"), Problem::NoS3Credentials)),
            (ServerUrl::S3(_), Some(path)) if !path.is_absolute() => {
                return Err((at("s3_credentials"), Problem::S3CredentialsPath))
            }
            _ => {}
        }
        if config.ssh_port == 0 {
            return Err((at("ssh_port"), Problem::SshPort));
        }
        if !config.trigger_socket.is_absolute() {
            return Err((at("trigger_socket"), Problem::TriggerSocket));
        }
        if config
            .trigger_group
            .as_deref()
            .is_some_and(|g| g.trim().is_empty())
        {
            return Err((at("trigger_group"), Problem::TriggerGroup));
        }
        if config.mode == DeployMode::Closure && config.cache_public_keys.is_empty() {
            return Err((at("mode"), Problem::NoCacheKeys));
        }
        for (i, key) in config.cache_public_keys.iter().enumerate() {
            if !is_cache_public_key(key) {
                let shown = key.chars().take(30).collect();
                return Err((element("cache_public_keys", i), Problem::CacheKey(shown)));
            }
        }
        if !config.system_profile.is_absolute() {
            return Err((at("system_profile"), Problem::SystemProfile));
        }
        Ok(config)
    }
}

/// Whether `key` is a Nix binary cache public key: `NAME:BASE64` of 32 bytes (Ed25519),
/// the name without spaces (Nix splits `trusted-public-keys` on whitespace).
fn is_cache_public_key(key: &str) -> bool {
    use base64::Engine;
    key.split_once(':').is_some_and(|(name, key)| {
        !name.is_empty()
            && !name.contains(|c: char| c.is_whitespace() || c.is_control())
            && base64::engine::general_purpose::STANDARD
                .decode(key)
                .is_ok_and(|k| k.len() == 32)
    })
}

/// A command line of agent.toml, split into words once, when the file is read, as a
/// POSIX shell would (quotes and backslashes work; no variables, globs or pipes: no shell
/// runs it). It always names a program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandLine {
    program: String,
    args: Vec<String>,
}

impl CommandLine {
    /// The line of `key`, split; empty or unsplittable lines are refused.
    pub fn parse(key: &'static str, line: &str) -> Result<CommandLine, Problem> {
        let words = shell_words::split(line).map_err(|source| Problem::CommandLine { key, source })?;
        let mut words = words.into_iter();
        let program = words.next().ok_or(Problem::EmptyCommand(key))?;
        Ok(CommandLine {
            program,
            args: words.collect(),
        })
    }

    /// The command `program args…` of a default.
    pub fn of(program: &str, args: &[&str]) -> CommandLine {
        CommandLine {
            program: program.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    /// The command `program args…`, as built by the agent (no splitting).
    pub fn from_words(program: String, args: Vec<String>) -> CommandLine {
        CommandLine { program, args }
    }

    /// The program.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// Its arguments.
    pub fn args(&self) -> &[String] {
        &self.args
    }
}

impl std::fmt::Display for CommandLine {
    /// The words, quoted as a shell would read them back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let words = std::iter::once(&self.program).chain(&self.args);
        f.write_str(&shell_words::join(words))
    }
}

/// `server`, parsed when agent.toml is read.
fn server_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ServerUrl, D::Error> {
    let text = String::deserialize(d)?;
    ServerUrl::parse(&text).map_err(|e| serde::de::Error::custom(Problem::Server(e)))
}

/// A command line of `key`, parsed when agent.toml is read.
fn command_line<'de, D: serde::Deserializer<'de>>(key: &'static str, d: D) -> Result<CommandLine, D::Error> {
    let text = String::deserialize(d)?;
    CommandLine::parse(key, &text).map_err(serde::de::Error::custom)
}

fn rebuild_line<'de, D: serde::Deserializer<'de>>(d: D) -> Result<CommandLine, D::Error> {
    command_line("rebuild", d)
}
fn rollback_line<'de, D: serde::Deserializer<'de>>(d: D) -> Result<CommandLine, D::Error> {
    command_line("rollback", d)
}
fn activate_line<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<CommandLine>, D::Error> {
    command_line("activate", d).map(Some)
}
fn reboot_line<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<CommandLine>, D::Error> {
    command_line("reboot_command", d).map(Some)
}
fn switch_line<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<CommandLine>, D::Error> {
    command_line("switch", d).map(Some)
}

/// Why agent.toml cannot be used; one line naming the file (and line).
#[derive(Debug, thiserror::Error)]
pub enum AgentConfigError {
    /// The file cannot be read.
    #[error("{}", escape_controls(&format!("{path}: {source}")))]
    Read {
        /// The file, as shown.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A key is wrong.
    #[error("{}", escape_controls(&format!("{path}:{line}: {problem}")))]
    At {
        /// The file, as shown.
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        problem: Problem,
    },
}

/// What is wrong in agent.toml (values quoted in it may hold control characters: the
/// error escapes them, so it stays one line).
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// Not TOML, an unknown key or a wrong type: the parser's message.
    #[error("{0}")]
    Toml(String),
    /// `host` is not a host name.
    #[error("host `{0}` is not a valid host name")]
    HostName(String),
    /// `server` is not a server URL: the URL parser's message.
    #[error("server {0}")]
    Server(crate::server_url::UrlError),
    /// An `s3://` server without `s3_credentials`.
    #[error("an s3:// server needs s3_credentials = \"/etc/bento/s3-credentials\": the file of this host's store key (never in the Nix store)")]
    NoS3Credentials,
    /// `s3_credentials` is a relative path.
    #[error("s3_credentials must be an absolute path")]
    S3CredentialsPath,
    /// `trusted_keys` is empty.
    #[error("trusted_keys is empty: list the admin public keys whose signatures this host accepts")]
    NoTrustedKeys,
    /// A `trusted_keys` line is not a public key; its first 30 characters.
    #[error("trusted_keys: `{0}` is not an ssh public key line")]
    TrustedKey(String),
    /// `required_signatures` is 0 or more than the trusted keys could give.
    #[error(
        "required_signatures = {required}: it must be at least 1 and at most the {trusted} trusted_keys \
         (distinct admins must sign)"
    )]
    RequiredSignatures {
        /// As written.
        required: usize,
        /// How many trusted keys there are.
        trusted: usize,
    },
    /// `run_timeout` is 0.
    #[error("run_timeout must be at least 1 (seconds)")]
    RunTimeout,
    /// `ssh_port` is 0.
    #[error("ssh_port must be between 1 and 65535")]
    SshPort,
    /// `trigger_socket` is relative.
    #[error("trigger_socket must be an absolute path (e.g. /run/bento/trigger.sock)")]
    TriggerSocket,
    /// `trigger_group` is empty.
    #[error("trigger_group is empty: name a group, or leave the key out for root only")]
    TriggerGroup,
    /// `mode = "closure"` without `cache_public_keys`.
    #[error(
        "mode = \"closure\" needs cache_public_keys: the public key of the fleet's [cache] signing_key \
         (`nix key convert-secret-to-public` of it, or the `.pub` file made with it)"
    )]
    NoCacheKeys,
    /// A `cache_public_keys` entry is not `NAME:BASE64`; its first 30 characters.
    #[error("cache_public_keys: `{0}` is not a Nix cache public key (NAME:BASE64 of 32 bytes)")]
    CacheKey(String),
    /// `system_profile` is relative.
    #[error("system_profile must be an absolute path (e.g. /nix/var/nix/profiles/system)")]
    SystemProfile,
    /// A command line holds no word.
    #[error("{0} is empty")]
    EmptyCommand(&'static str),
    /// A command line does not split into words (an unclosed quote, a trailing `\\`).
    #[error("{key}: {source}: close the quote or escape it with `\\`")]
    CommandLine {
        /// The key.
        key: &'static str,
        /// The splitter's error.
        #[source]
        source: shell_words::ParseError,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKQ/UUji4zvncN+E4Y2WgsnyA3nRR05ETkdiQJTYA+/c alice";

    fn minimal(extra: &str) -> String {
        format!("host = \"web1\"\nserver = \"file:///srv\"\ntrusted_keys = [\"{KEY}\"]\n{extra}")
    }

    fn error(text: &str) -> (usize, String) {
        let (line, problem) = AgentConfig::parse(text).unwrap_err();
        (line, problem.to_string())
    }

    #[test]
    fn a_minimal_file_gets_the_defaults() {
        let c = AgentConfig::parse(&minimal("")).unwrap();
        assert_eq!(c.rebuild.to_string(), "nixos-rebuild switch");
        assert_eq!(c.run_timeout, 3600);
        assert_eq!(c.reboot_command(), None);
    }

    #[test]
    fn errors_name_the_key_s_own_line() {
        // The key in a comment, inside another key's name, or in a string does not count.
        let (line, msg) = error(&minimal(
            "# run_timeout = 0\nrollback = \"\"\"\nrun_timeout = 1\"\"\"\nrun_timeout = 0\n",
        ));
        assert_eq!(
            (line, msg.as_str()),
            (7, "run_timeout must be at least 1 (seconds)")
        );
        let text = "trusted_keys = []\nknown_hosts = \"/k\"\nserver = \"file:///host\"\nhost = \"../web1\"\n";
        assert_eq!(error(text).0, 4);
        // A bad key is named at its element, not where its text first appears.
        let text = format!(
            "host = \"web1\"\nserver = \"file:///srv\"\n# ssh-ed25519 AAAAbad\ntrusted_keys = [\n  \"{KEY}\",\n  \"ssh-ed25519 AAAAbad\",\n]\n"
        );
        assert_eq!(
            error(&text),
            (
                6,
                "trusted_keys: `ssh-ed25519 AAAAbad` is not an ssh public key line".into()
            )
        );
        // Quoted keys and dotted-free files alike.
        let (line, _) = error(&minimal("\"ssh_port\" = 0\n"));
        assert_eq!(line, 4);
    }

    #[test]
    fn command_lines_split_as_a_shell_would() {
        let line =
            CommandLine::parse("rebuild", "'/opt/my tools/rebuild' switch --option \"a b\" c\\ d").unwrap();
        assert_eq!(line.program(), "/opt/my tools/rebuild");
        assert_eq!(line.args(), ["switch", "--option", "a b", "c d"]);
        assert_eq!(
            line.to_string(),
            "'/opt/my tools/rebuild' switch --option 'a b' 'c d'"
        );
        assert!(matches!(
            CommandLine::parse("rebuild", "  "),
            Err(Problem::EmptyCommand("rebuild"))
        ));
        assert!(CommandLine::parse("rebuild", "rebuild 'switch").is_err());
    }

    #[test]
    fn malformed_or_empty_commands_are_refused_at_their_line() {
        let (line, msg) = error(&minimal(
            "\nreboot = \"kexec\"\nreboot_command = \"systemctl \\\"kexec\"\n",
        ));
        assert_eq!(line, 6);
        assert!(msg.starts_with("reboot_command: "), "{msg}");
        let (line, msg) = error(&minimal("activate = \"  \"\n"));
        assert_eq!((line, msg.as_str()), (4, "activate is empty"));
        let (line, msg) = error(&minimal("rebuild = \"nixos-rebuild 'switch\"\n"));
        assert_eq!(line, 4);
        assert_eq!(
            msg,
            "rebuild: missing closing quote: close the quote or escape it with `\\`"
        );
    }

    #[test]
    fn the_error_is_one_line_with_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, minimal("ssh_port = 0\n")).unwrap();
        let e = AgentConfig::load(&path).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("{}:4: ssh_port must be between 1 and 65535", path.display())
        );
        std::fs::write(
            &path,
            "host = \"a\\nb\"\nserver = \"file:///srv\"\ntrusted_keys = []\n",
        )
        .unwrap();
        let e = AgentConfig::load(&path).unwrap_err().to_string();
        assert!(!e.contains('\n') && e.contains("host `a\\nb`"), "{e}");
    }
}
