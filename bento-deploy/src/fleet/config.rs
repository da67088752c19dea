//! `bento.toml`: the fleet's settings. Every key has a default, unknown keys are
//! refused, and errors name the file and line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bento_secrets::names::AbsPath;
use serde::Deserialize;

use crate::error::Error;
use crate::spans::Positions;
use crate::time::TimeSpan;
use crate::wire::mode::DeployMode;

/// The file name, at the root of the fleet repo.
pub const CONFIG_FILE: &str = "bento.toml";

/// The parsed `bento.toml`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where hosts fetch their bundles from.
    pub server: Server,
    /// How bundles are published.
    pub deploy: Deploy,
    /// How `bento build` builds hosts.
    pub build: Build,
    /// How `bento status` judges hosts.
    pub status: Status,
    /// The signed Nix binary cache `bento deploy` fills on the server.
    pub cache: Cache,
    /// `[rollout]`: how `bento rollout` publishes, wave by wave.
    pub rollout: Rollout,
    /// Per host: how to reach it (`[hosts.<name>]`).
    pub hosts: BTreeMap<String, HostSettings>,
}

/// `[cache]`
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Cache {
    /// A Nix binary cache secret key (`nix-store --generate-binary-cache-key`); set, deploy
    /// copies the hosts' built systems into `<root>/cache`, signed with it.
    pub signing_key: Option<String>,
    /// How the cache's NARs are compressed: `xz`, `zstd`, `bzip2` or `none`.
    pub compression: String,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            signing_key: None,
            compression: "xz".into(),
        }
    }
}

/// The values of `cache.compression`.
pub const CACHE_COMPRESSIONS: [&str; 4] = ["xz", "zstd", "bzip2", "none"];

/// `[server]`
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// The name hosts connect to.
    pub address: String,
    /// The sshd port.
    pub port: u16,
    /// The directory `bento deploy` publishes into, on the server: one safe word in
    /// sshd_config, tmpfiles rules and shell commands (see [`AbsPath`]).
    #[serde(deserialize_with = "server_root")]
    pub root: AbsPath,
    /// Host H logs in as sftp user `<user_prefix>H`.
    pub user_prefix: String,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            address: "localhost".into(),
            port: 22,
            root: AbsPath::try_from(DEFAULT_ROOT.to_owned()).expect("the default root is a valid path"),
            user_prefix: String::new(),
        }
    }
}

/// `server.root` when bento.toml does not set it.
pub const DEFAULT_ROOT: &str = "/srv/bento";

/// `server.root`, its refusal naming the key (the parser adds the line).
fn server_root<'de, D: serde::Deserializer<'de>>(de: D) -> Result<AbsPath, D::Error> {
    let text = String::deserialize(de)?;
    AbsPath::try_from(text).map_err(|e| serde::de::Error::custom(format!("server.root: {e}")))
}

/// `[deploy]`
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Deploy {
    /// The admin key that signs bundles: an OpenSSH private key, or a `.pub` whose private
    /// half is in ssh-agent.
    pub signing_key: String,
    /// How many generations each host keeps on the server (the current one included).
    pub keep_generations: u32,
    /// Publish over sftp to this remote server root (`sftp://user@host:port/abs/root`)
    /// instead of into `server.root` on this machine.
    pub target: Option<String>,
    /// The most a deploy to a remote target may take, a systemd time span.
    #[serde(deserialize_with = "deploy_timeout")]
    pub timeout: TimeSpan,
    /// The most a remote server may stay silent while deploy waits for an answer.
    #[serde(deserialize_with = "deploy_request_timeout")]
    pub request_timeout: TimeSpan,
    /// The ssh key that logs in to a remote `target` (as the publishing account); none:
    /// ssh's own choice (`~/.ssh/config`, ssh-agent, `~/.ssh/id_*`).
    pub login_key: Option<String>,
    /// How hosts get their system, unless `[hosts.NAME] mode` says otherwise.
    pub mode: DeployMode,
    /// How many distinct admins sign a generation before it is made current: above 1,
    /// `bento deploy` publishes it pending and `bento approve` adds the others.
    pub required_signatures: usize,
}

impl Default for Deploy {
    fn default() -> Self {
        Deploy {
            signing_key: "~/.ssh/id_ed25519".into(),
            keep_generations: 3,
            target: None,
            timeout: TimeSpan::from_secs(600),
            request_timeout: TimeSpan::from_secs(60),
            login_key: None,
            mode: DeployMode::Source,
            required_signatures: 1,
        }
    }
}

impl Deploy {
    /// [`Deploy::timeout`], as a duration.
    pub fn timeout(&self) -> std::time::Duration {
        self.timeout.duration()
    }

    /// [`Deploy::request_timeout`], as a duration.
    pub fn request_timeout(&self) -> std::time::Duration {
        self.request_timeout.duration()
    }
}

/// `deploy.timeout`, its refusal naming the key (the parser adds the line).
fn deploy_timeout<'de, D: serde::Deserializer<'de>>(de: D) -> Result<TimeSpan, D::Error> {
    deploy_span(de, "timeout")
}

/// `deploy.request_timeout`, as [`deploy_timeout`].
fn deploy_request_timeout<'de, D: serde::Deserializer<'de>>(de: D) -> Result<TimeSpan, D::Error> {
    deploy_span(de, "request_timeout")
}

/// A deploy time span: from 1 s to 7 days.
fn deploy_span<'de, D: serde::Deserializer<'de>>(de: D, key: &str) -> Result<TimeSpan, D::Error> {
    let text = String::deserialize(de)?;
    TimeSpan::parse(&text, 7 * 86_400).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "deploy.{key} `{}` is not a time span from 1s to 7d: write it as e.g. \"10min\" or \"60s\"",
            text.escape_default()
        ))
    })
}

/// `[build]`
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Build {
    /// The build command, split on whitespace (no shell); bento appends the host's
    /// `--flake DIR#NAME` or `-I nixos-config=DIR/configuration.nix`.
    pub command: String,
    /// The command of `bento build --dry`; default: `command` with its last word `build`
    /// replaced by `dry-build`.
    pub dry_command: Option<String>,
    /// How many hosts build at once.
    pub jobs: usize,
}

impl Default for Build {
    fn default() -> Self {
        Build {
            command: "nixos-rebuild build".into(),
            dry_command: None,
            jobs: 2,
        }
    }
}

/// `[status]`
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Status {
    /// How often hosts poll, as a systemd time span (`15min`, `1h 30min`): the agent
    /// timer's interval.
    #[serde(deserialize_with = "status_interval")]
    pub interval: TimeSpan,
    /// A published generation not picked up after this many intervals marks its host stale.
    pub stale_after: u32,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            interval: TimeSpan::from_secs(900),
            stale_after: 3,
        }
    }
}

impl Status {
    /// The poll interval in seconds.
    pub fn interval_secs(&self) -> u64 {
        self.interval.secs()
    }

    /// How long a published generation may wait for its host before the host is stale.
    pub fn stale_secs(&self) -> u64 {
        self.interval_secs().saturating_mul(u64::from(self.stale_after))
    }
}

/// `status.interval`, its refusal naming the key (the parser adds the line).
/// `[rollout]`: the waves `bento rollout` publishes one after the other, each only once the
/// one before reports its new generation applied and healthy.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Rollout {
    /// Each wave: host names, `@group`s of secrets.toml, or `*` (every host left).
    pub waves: Vec<Vec<String>>,
    /// How long a wave has to report healthy on its new generation.
    #[serde(deserialize_with = "rollout_wait")]
    pub wait: TimeSpan,
    /// Hosts of a wave allowed not to report in time.
    pub max_unreached: usize,
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout {
            waves: Vec::new(),
            wait: TimeSpan::from_secs(1800),
            max_unreached: 0,
        }
    }
}

fn rollout_wait<'de, D: serde::Deserializer<'de>>(de: D) -> Result<TimeSpan, D::Error> {
    let text = String::deserialize(de)?;
    TimeSpan::parse(&text, 7 * 86_400).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "rollout.wait `{}` is not a time span from 1s to 7d: write it as e.g. \"30min\"",
            text.escape_default()
        ))
    })
}

fn status_interval<'de, D: serde::Deserializer<'de>>(de: D) -> Result<TimeSpan, D::Error> {
    let text = String::deserialize(de)?;
    TimeSpan::parse(&text, u64::MAX).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "status.interval `{}` is not a time span: write it as the agent timer's, e.g. \"15min\" or \"1h 30min\"",
            text.escape_default()
        ))
    })
}

/// A host's name or IP address as bento.toml gives it (`hosts.<name>.address`): one word
/// that `bento ssh --print` may print and ssh may take as its destination, never an option
/// nor a terminal control sequence: not empty, no whitespace, no control character, no
/// `@` (the user is `ssh_user`), not starting with `-`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HostAddress(String);

impl HostAddress {
    /// Whether `text` is one.
    pub fn is_valid(text: &str) -> bool {
        !text.is_empty()
            && !text.starts_with('-')
            && !text.contains(|c: char| c.is_whitespace() || c.is_control() || c == '@')
    }
}

impl TryFrom<String> for HostAddress {
    type Error = BadHostAddress;
    fn try_from(text: String) -> Result<Self, BadHostAddress> {
        if HostAddress::is_valid(&text) {
            Ok(HostAddress(text))
        } else {
            Err(BadHostAddress(text))
        }
    }
}

/// A text refused as a [`HostAddress`]; it shows the text, escaped.
#[derive(Debug, thiserror::Error)]
#[error(
    "address `{}` is not a host name or IP address (one word: no spaces, control characters or \
     user@, not starting with `-`)",
    .0.escape_default()
)]
pub struct BadHostAddress(String);

impl std::ops::Deref for HostAddress {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for HostAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `[hosts.<name>]`: how an admin reaches a host (shown by `bento status`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HostSettings {
    /// Its name or IP address.
    pub address: Option<HostAddress>,
    /// The ssh user, when not your own.
    pub ssh_user: Option<String>,
    /// The ssh port, when not 22.
    pub ssh_port: Option<u16>,
    /// How this host gets its system, when not as `[deploy] mode` says.
    pub mode: Option<DeployMode>,
}

impl HostSettings {
    /// The `ssh …` command line that reaches the host, when its address is known.
    pub fn ssh_command(&self) -> Option<String> {
        let address = self.address.as_deref()?;
        let mut line = String::from("ssh ");
        if let Some(port) = self.ssh_port.filter(|&p| p != 22) {
            line.push_str(&format!("-p {port} "));
        }
        if let Some(user) = &self.ssh_user {
            line.push_str(&format!("{user}@"));
        }
        line.push_str(address);
        Some(line)
    }
}

impl Build {
    /// The words of the build command (`dry`: of the dry-run command).
    pub fn argv(&self, dry: bool) -> Result<Vec<String>, Error> {
        let words = |key: &str, line: &str| {
            shell_words::split(line).map_err(|e| Error::config(None, format!("build.{key}: {e}")))
        };
        if !dry {
            return words("command", &self.command);
        }
        if let Some(cmd) = &self.dry_command {
            return words("dry_command", cmd);
        }
        let mut argv = words("command", &self.command)?;
        match argv.last_mut() {
            Some(last) if last == "build" => {
                *last = "dry-build".into();
                Ok(argv)
            }
            _ => Err(Error::config(
                None,
                format!(
                    "build.command `{}` does not end with `build`, so bento cannot derive its dry run: \
                     set build.dry_command",
                    self.command
                ),
            )),
        }
    }
}

impl Config {
    /// How `host` gets its system: its `[hosts.NAME] mode`, else `[deploy] mode`.
    pub fn mode_of(&self, host: &str) -> DeployMode {
        self.hosts
            .get(host)
            .and_then(|h| h.mode)
            .unwrap_or(self.deploy.mode)
    }

    /// Reads `bento.toml` from the fleet root; a missing file means all defaults.
    pub fn load(root: &Path) -> Result<Config, Error> {
        let path = root.join(CONFIG_FILE);
        match bento_secrets::fleet_files::read_text(&path, bento_secrets::fleet_files::Kind::Toml) {
            Ok(text) => Config::parse(&text),
            Err(e) if e.is_not_found() => Ok(Config::default()),
            Err(e) => Err(e.at(CONFIG_FILE).into()),
        }
    }

    /// Parses and validates the text of `bento.toml`.
    pub fn parse(text: &str) -> Result<Config, Error> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| bento_secrets::rules::line_col(text, s.start).0);
            Error::config(line, e.message().replace('\n', " "))
        })?;
        let target_problem = |target: &str| match target.starts_with("s3://") {
            true => crate::s3::url::S3Url::parse(target).err().map(|e| e.to_string()),
            false => crate::publish::remote::RemoteUrl::parse(target)
                .err()
                .map(|e| e.to_string()),
        };
        let command_problem = |key: &'static str, line: &str, when_empty: &str| {
            let problem = match shell_words::split(line) {
                Ok(words) if words.is_empty() => format!("build.{key} must not be empty{when_empty}"),
                Ok(_) => return None,
                Err(e) => format!("build.{key}: {e}; close the quote or escape it with `\\`"),
            };
            Some((("build", key), problem))
        };
        let prefix_ok = config
            .server
            .user_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b));
        // In the order of the file's tables: each refusal with the key whose line it gets.
        let problems = [
            refused(
                ("server", "address"),
                !HostAddress::is_valid(&config.server.address),
                "must be a host name or IP address",
            ),
            refused(
                ("server", "port"),
                config.server.port == 0,
                "must be between 1 and 65535",
            ),
            refused(
                ("server", "user_prefix"),
                !prefix_ok,
                "may hold only letters, digits, `_` and `-`",
            ),
            refused(
                ("deploy", "keep_generations"),
                !(1..=1000).contains(&config.deploy.keep_generations),
                "must be between 1 and 1000",
            ),
            refused(
                ("deploy", "required_signatures"),
                !(1..=100).contains(&config.deploy.required_signatures),
                "must be between 1 and 100 (distinct admins who sign a generation)",
            ),
            refused(
                ("deploy", "signing_key"),
                config.deploy.signing_key.trim().is_empty(),
                "must name an ssh private key (or a .pub in ssh-agent)",
            ),
            config
                .deploy
                .target
                .as_deref()
                .and_then(target_problem)
                .map(|e| (("deploy", "target"), format!("deploy.target {e}"))),
            command_problem(
                "command",
                &config.build.command,
                " (default: `nixos-rebuild build`)",
            ),
            config
                .build
                .dry_command
                .as_deref()
                .and_then(|dry| command_problem("dry_command", dry, "; remove it for the default")),
            refused(
                ("build", "jobs"),
                !(1..=64).contains(&config.build.jobs),
                "must be between 1 and 64",
            ),
            refused(
                ("status", "stale_after"),
                !(1..=1000).contains(&config.status.stale_after),
                "must be between 1 and 1000 (intervals)",
            ),
            refused(
                ("cache", "signing_key"),
                config
                    .cache
                    .signing_key
                    .as_deref()
                    .is_some_and(|k| k.trim().is_empty()),
                "must name a Nix binary cache secret key file; remove it to have no cache",
            ),
            refused(
                ("cache", "compression"),
                !CACHE_COMPRESSIONS.contains(&config.cache.compression.as_str()),
                &format!("must be one of {}", CACHE_COMPRESSIONS.join(", ")),
            ),
        ];
        // The line of the refused key, from the parser's spans.
        let positions = Positions::new(text);
        if let Some(((table, key), message)) = problems.into_iter().flatten().next() {
            return Err(Error::config(positions.key(&[table], key), message));
        }
        for (name, host) in &config.hosts {
            let problem = [
                (!bento_secrets::names::HostName::is_valid(name))
                    .then(|| format!("hosts.{name}: not a host name (letters, digits, `.`, `_` and `-`)")),
                host.ssh_user
                    .as_deref()
                    .is_some_and(|u| !HostAddress::is_valid(u))
                    .then(|| format!("hosts.{name}.ssh_user must be a user name")),
                (host.ssh_port == Some(0))
                    .then(|| format!("hosts.{name}.ssh_port must be between 1 and 65535")),
            ];
            if let Some(message) = problem.into_iter().flatten().next() {
                return Err(Error::config(positions.table_line(&["hosts", name]), message));
            }
        }
        Ok(config)
    }

    /// `deploy.login_key`'s path, with a leading `~/` expanded to `$HOME`.
    pub fn login_key_path(&self) -> Option<PathBuf> {
        self.deploy.login_key.as_deref().map(expand_home)
    }

    /// The signing key's path, with a leading `~/` expanded to `$HOME`.
    pub fn signing_key_path(&self) -> PathBuf {
        expand_home(&self.deploy.signing_key)
    }
}

/// When `bad`, the key `table.key` is refused: `table.key <why>`, with where to show it.
fn refused(
    (table, key): (&'static str, &'static str),
    bad: bool,
    why: &str,
) -> Option<((&'static str, &'static str), String)> {
    bad.then(|| ((table, key), format!("{table}.{key} {why}")))
}

/// Expands a leading `~/` (or a lone `~`) to `$HOME`.
pub fn expand_home(path: &str) -> PathBuf {
    let home = || std::env::var_os("HOME").map(PathBuf::from);
    match path.strip_prefix('~') {
        Some("") => home().unwrap_or_else(|| PathBuf::from(path)),
        Some(rest) if rest.starts_with('/') => match home() {
            Some(h) => h.join(rest.trim_start_matches('/')),
            None => PathBuf::from(path),
        },
        _ => PathBuf::from(path),
    }
}

/// The commented `bento.toml` that `bento init` writes.
pub const TEMPLATE: &str = r#"# Bento fleet settings. Every key is optional; the values shown are the defaults
# except where noted. Help: `bento <command> --help` (e.g. `bento deploy --help`),
# and the man page: `bento manpage > bento.1 && man ./bento.1`.

[server]
address = "bento.example.org"  # what hosts connect to (default: localhost)
port = 22
root = "/srv/bento"            # where `bento deploy` publishes, on the server
user_prefix = ""               # host H logs in as sftp user <user_prefix>H

[deploy]
signing_key = "~/.ssh/id_ed25519"  # admin key that signs bundles (a .pub: sign through ssh-agent)
keep_generations = 3               # bundles kept per host on the server
# target = "sftp://bento-publish@bento.example.org:22/"  # publish over sftp (server key:
#                                  # keys/server_known_hosts); default: server.root, locally
# timeout = "10min"                # a deploy to the target stops after this long
# request_timeout = "60s"          # ... or when the server answers nothing for this long
# login_key = "~/.ssh/bento_publish" # the key that logs in to target (default: ssh's own)

[build]
command = "nixos-rebuild build"    # bento appends --flake hosts/H#H or -I nixos-config=…
# dry_command = "nixos-rebuild dry-build"   # for `bento build --dry`; derived from command
jobs = 2                           # hosts built at once

[status]
interval = "15min"                 # how often hosts poll (the agent timer's interval)
stale_after = 3                    # a generation not picked up after this many intervals: stale

# A signed Nix binary cache of the built systems, under <root>/cache (see `bento deploy`):
# [cache]                          # the key: nix-store --generate-binary-cache-key NAME FILE keys/cache.pub
# signing_key = "~/.config/bento/cache.sec"   # secret: keep it out of git
# compression = "xz"               # xz | zstd | bzip2 | none

# How to reach a host, shown by `bento status`:
# [hosts.web1]
# address = "web1.example.org"
# ssh_user = "root"
# ssh_port = 22
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_commands_split_as_a_shell_would() {
        let c = Config::parse("[build]\ncommand = \"'/opt/my tools/nb' build\"\n").unwrap();
        assert_eq!(c.build.argv(false).unwrap(), ["/opt/my tools/nb", "build"]);
        assert_eq!(c.build.argv(true).unwrap(), ["/opt/my tools/nb", "dry-build"]);
        let e = Config::parse("[deploy]\nkeep_generations = 2\n[build]\ncommand = \"nb 'build\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("bento.toml:4: build.command: "), "{e}");
        let e = Config::parse("[build]\ndry_command = \" \"\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "bento.toml:2: build.dry_command must not be empty; remove it for the default"
        );
    }

    #[test]
    fn template_parses_and_empty_is_default() {
        let c = Config::parse(TEMPLATE).unwrap();
        assert_eq!(c.server.address, "bento.example.org");
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn errors_name_the_line() {
        let e = Config::parse("[server]\nport = 22\nroot = \"srv\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("bento.toml:3: server.root: path `srv` must be absolute"),
            "{e}"
        );
        for (root, line) in [
            ("/srv\\nMatch all\\nPermitRootLogin yes", 2),
            ("/srv/%u", 2),
            ("/srv/b ento", 2),
            ("/srv/\\\"x\\\"", 2),
            ("/srv/../etc", 2),
        ] {
            let e = Config::parse(&format!("[server]\nroot = \"{root}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!("bento.toml:{line}: server.root: path `")),
                "{e}"
            );
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        let e = Config::parse("[server]\nprot = 22\n").unwrap_err().to_string();
        assert!(e.starts_with("bento.toml:2: unknown field `prot`"), "{e}");
        let e = Config::parse("[server]\nport = 70000\n").unwrap_err().to_string();
        assert!(e.starts_with("bento.toml:2:"), "{e}");
        let e = Config::parse("# keep_generations = 3\n[deploy]\nkeep_generations = 0\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "bento.toml:3: deploy.keep_generations must be between 1 and 1000"
        );
        let c = Config::parse("[deploy]\ntimeout = \"2min\"\nrequest_timeout = \"5s\"\n").unwrap();
        assert_eq!(
            (c.deploy.timeout(), c.deploy.request_timeout()),
            (
                std::time::Duration::from_secs(120),
                std::time::Duration::from_secs(5)
            )
        );
        let d = Config::parse("").unwrap().deploy;
        assert_eq!((d.timeout().as_secs(), d.request_timeout().as_secs()), (600, 60));
        let e = Config::parse("[deploy]\n\nrequest_timeout = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("bento.toml:3: deploy.request_timeout `soon` is not a time span"),
            "{e}"
        );
        let e = Config::parse("[deploy]\nkeep_generations = 3\ntarget = \"sftp://bento.example.org/\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("bento.toml:3: deploy.target `sftp://bento.example.org/`: expected sftp://user@"),
            "{e}"
        );
        let c =
            Config::parse("[deploy]\ntarget = \"sftp://bento-publish@bento.example.org:2222/\"\n").unwrap();
        assert_eq!(
            c.deploy.target.as_deref(),
            Some("sftp://bento-publish@bento.example.org:2222/")
        );
        let e = Config::parse("[build]\njobs = 0\n").unwrap_err().to_string();
        assert_eq!(e, "bento.toml:2: build.jobs must be between 1 and 64");
        let e = Config::parse("[build]\ncommand = \"  \"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("bento.toml:2: build.command must not be empty"),
            "{e}"
        );
    }

    #[test]
    fn status_settings_are_validated() {
        let c = Config::parse("[status]\ninterval = \"1h 30min\"\nstale_after = 2\n").unwrap();
        assert_eq!(c.status.interval_secs(), 5400);
        assert_eq!(c.status.stale_secs(), 10_800);
        assert_eq!(Config::default().status.stale_secs(), 2700);
        let e = Config::parse("[status]\ninterval = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("bento.toml:2: status.interval `soon` is not a time span"),
            "{e}"
        );
        let e = Config::parse("[status]\nstale_after = 0\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "bento.toml:2: status.stale_after must be between 1 and 1000 (intervals)"
        );
        let e = Config::parse("\n[hosts.web1]\naddress = \"root@web1\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("bento.toml:3: address `root@web1` is not"), "{e}");
        for bad in ["web1\\u001b[2J", "-oProxyCommand=id", "web1\\nx", "a b", ""] {
            let e = Config::parse(&format!("[hosts.web1]\naddress = \"{bad}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("bento.toml:2: address `"), "{bad}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        let c = Config::parse("[hosts.web1]\naddress = \"10.0.0.1\"\nssh_user = \"root\"\nssh_port = 2222\n")
            .unwrap();
        assert_eq!(
            c.hosts["web1"].ssh_command().unwrap(),
            "ssh -p 2222 root@10.0.0.1"
        );
    }

    #[test]
    fn cache_settings_are_validated() {
        assert_eq!(Config::default().cache.signing_key, None);
        let c = Config::parse("[cache]\nsigning_key = \"k.sec\"\ncompression = \"zstd\"\n").unwrap();
        assert_eq!(c.cache.signing_key.as_deref(), Some("k.sec"));
        let e = Config::parse("[deploy]\nkeep_generations = 2\n[cache]\ncompression = \"lz4\"\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "bento.toml:4: cache.compression must be one of xz, zstd, bzip2, none"
        );
        let e = Config::parse("[deploy]\nsigning_key = \"k\"\n[cache]\nsigning_key = \"\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("bento.toml:4: cache.signing_key must name"), "{e}");
    }

    #[test]
    fn errors_name_the_line_of_the_key_in_its_own_table() {
        // `address` of a host comes first in the text; the bad one is the server's.
        let text = "[hosts.web1]\naddress = \"10.0.0.1\"\n\n[server]\naddress = \"\"\n";
        let e = Config::parse(text).unwrap_err().to_string();
        assert_eq!(
            e,
            "bento.toml:5: server.address must be a host name or IP address"
        );
        // A dotted key has a line too.
        let e = Config::parse("\nserver.port = 0\n").unwrap_err().to_string();
        assert_eq!(e, "bento.toml:2: server.port must be between 1 and 65535");
        // A host's error names its table's header.
        let text = "[server]\nport = 22\n[hosts.web1]\nssh_port = 0\n";
        let e = Config::parse(text).unwrap_err().to_string();
        assert_eq!(e, "bento.toml:3: hosts.web1.ssh_port must be between 1 and 65535");
    }

    #[test]
    fn dry_command_is_derived_or_required() {
        let c = Config::default();
        assert_eq!(c.build.argv(true).unwrap(), ["nixos-rebuild", "dry-build"]);
        let c = Config::parse("[build]\ncommand = \"./b.sh --x\"\n").unwrap();
        assert_eq!(c.build.argv(false).unwrap(), ["./b.sh", "--x"]);
        assert!(c
            .build
            .argv(true)
            .unwrap_err()
            .to_string()
            .contains("set build.dry_command"));
    }

    #[test]
    fn home_is_expanded() {
        let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
        if let Some(home) = home {
            assert_eq!(expand_home("~/.ssh/k"), home.join(".ssh/k"));
        }
        assert_eq!(expand_home("/k"), std::path::PathBuf::from("/k"));
        assert_eq!(expand_home("~x/k"), std::path::PathBuf::from("~x/k"));
    }
}
