//! `bento.toml`: the fleet's settings. Every key has a default, unknown keys are
//! refused, and errors name the file and line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::Error;

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
    /// Per host: how to reach it (`[hosts.<name>]`).
    pub hosts: BTreeMap<String, HostSettings>,
}

/// `[server]`
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// The name hosts connect to.
    pub address: String,
    /// The sshd port.
    pub port: u16,
    /// The directory `bento deploy` publishes into, on the server.
    pub root: String,
    /// Host H logs in as sftp user `<user_prefix>H`.
    pub user_prefix: String,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            address: "localhost".into(),
            port: 22,
            root: "/srv/bento".into(),
            user_prefix: String::new(),
        }
    }
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
}

impl Default for Deploy {
    fn default() -> Self {
        Deploy {
            signing_key: "~/.ssh/id_ed25519".into(),
            keep_generations: 3,
        }
    }
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
    pub interval: String,
    /// A published generation not picked up after this many intervals marks its host stale.
    pub stale_after: u32,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            interval: "15min".into(),
            stale_after: 3,
        }
    }
}

impl Status {
    /// The poll interval in seconds (validated by [`Config::parse`]; 15 minutes otherwise).
    pub fn interval_secs(&self) -> u64 {
        parse_timespan(&self.interval).unwrap_or(900)
    }

    /// How long a published generation may wait for its host before the host is stale.
    pub fn stale_secs(&self) -> u64 {
        self.interval_secs().saturating_mul(u64::from(self.stale_after))
    }
}

/// `[hosts.<name>]`: how an admin reaches a host (shown by `bento status`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HostSettings {
    /// Its name or IP address.
    pub address: Option<String>,
    /// The ssh user, when not your own.
    pub ssh_user: Option<String>,
    /// The ssh port, when not 22.
    pub ssh_port: Option<u16>,
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

/// Parses a systemd time span: one or more `<number><unit>` parts, optionally separated by
/// spaces, units `s`/`sec`, `m`/`min`, `h`/`hr`, `d`/`day`, `w`/`week` (plurals too);
/// a bare number is seconds. `None` when malformed or zero.
pub fn parse_timespan(text: &str) -> Option<u64> {
    let mut total: u64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();
        let scale = match unit {
            "" | "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hr" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            "w" | "week" | "weeks" => 604_800,
            _ => return None,
        };
        total = total.checked_add(number.checked_mul(scale)?)?;
    }
    (total > 0).then_some(total)
}

impl Build {
    /// The words of the build command (`dry`: of the dry-run command).
    pub fn argv(&self, dry: bool) -> Result<Vec<String>, Error> {
        let words = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        if !dry {
            return Ok(words(&self.command));
        }
        if let Some(cmd) = &self.dry_command {
            return Ok(words(cmd));
        }
        let mut argv = words(&self.command);
        match argv.last_mut() {
            Some(last) if last == "build" => {
                *last = "dry-build".into();
                Ok(argv)
            }
            _ => Err(Error::input(
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
    /// Reads `bento.toml` from the fleet root; a missing file means all defaults.
    pub fn load(root: &Path) -> Result<Config, Error> {
        match std::fs::read_to_string(root.join(CONFIG_FILE)) {
            Ok(text) => Config::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(Error::Io {
                path: CONFIG_FILE.into(),
                source: e,
            }),
        }
    }

    /// Parses and validates the text of `bento.toml`.
    pub fn parse(text: &str) -> Result<Config, Error> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| bento_secrets::rules::line_col(text, s.start).0);
            Error::input(line, e.message().replace('\n', " "))
        })?;
        let at = |key: &str| key_line(text, key);
        if config.server.address.trim().is_empty() || config.server.address.contains(char::is_whitespace) {
            return Err(Error::input(
                at("address"),
                "server.address must be a host name or IP address",
            ));
        }
        if config.server.port == 0 {
            return Err(Error::input(
                at("port"),
                "server.port must be between 1 and 65535",
            ));
        }
        if !bento_secrets::rules::valid_abs_path(&config.server.root) {
            return Err(Error::input(
                at("root"),
                "server.root must be an absolute path without `..`",
            ));
        }
        let prefix_ok = config
            .server
            .user_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b));
        if !prefix_ok {
            return Err(Error::input(
                at("user_prefix"),
                "server.user_prefix may hold only letters, digits, `_` and `-`",
            ));
        }
        let keep = config.deploy.keep_generations;
        if !(1..=1000).contains(&keep) {
            return Err(Error::input(
                at("keep_generations"),
                "deploy.keep_generations must be between 1 and 1000",
            ));
        }
        if config.deploy.signing_key.trim().is_empty() {
            return Err(Error::input(
                at("signing_key"),
                "deploy.signing_key must name an ssh private key (or a .pub in ssh-agent)",
            ));
        }
        if config.build.command.split_whitespace().next().is_none() {
            return Err(Error::input(
                at("command"),
                "build.command must not be empty (default: `nixos-rebuild build`)",
            ));
        }
        if let Some(dry) = &config.build.dry_command {
            if dry.split_whitespace().next().is_none() {
                return Err(Error::input(
                    at("dry_command"),
                    "build.dry_command must not be empty; remove it for the default",
                ));
            }
        }
        if !(1..=64).contains(&config.build.jobs) {
            return Err(Error::input(at("jobs"), "build.jobs must be between 1 and 64"));
        }
        if parse_timespan(&config.status.interval).is_none() {
            return Err(Error::input(
                at("interval"),
                format!(
                    "status.interval `{}` is not a time span: write it as the agent timer's, e.g. \"15min\" or \"1h 30min\"",
                    config.status.interval.escape_default()
                ),
            ));
        }
        if !(1..=1000).contains(&config.status.stale_after) {
            return Err(Error::input(
                at("stale_after"),
                "status.stale_after must be between 1 and 1000 (intervals)",
            ));
        }
        for (name, host) in &config.hosts {
            let section = format!("[hosts.{name}]");
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with(&section))
                .map(|i| i + 1);
            if !bento_secrets::names::HostName::is_valid(name) {
                return Err(Error::input(
                    line,
                    format!("hosts.{name}: not a host name (letters, digits, `.`, `_` and `-`)"),
                ));
            }
            let bad_word = |v: &Option<String>| {
                v.as_deref().is_some_and(|v| {
                    v.is_empty() || v.starts_with('-') || v.contains(|c: char| c.is_whitespace() || c == '@')
                })
            };
            if bad_word(&host.address) {
                return Err(Error::input(
                    line,
                    format!("hosts.{name}.address must be a host name or IP address (no spaces, no user@)"),
                ));
            }
            if bad_word(&host.ssh_user) {
                return Err(Error::input(
                    line,
                    format!("hosts.{name}.ssh_user must be a user name"),
                ));
            }
            if host.ssh_port == Some(0) {
                return Err(Error::input(
                    line,
                    format!("hosts.{name}.ssh_port must be between 1 and 65535"),
                ));
            }
        }
        Ok(config)
    }

    /// The signing key's path, with a leading `~/` expanded to `$HOME`.
    pub fn signing_key_path(&self) -> PathBuf {
        expand_home(&self.deploy.signing_key)
    }
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

/// The 1-based line where `key = …` is set, ignoring comments.
fn key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            line.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
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

[build]
command = "nixos-rebuild build"    # bento appends --flake hosts/H#H or -I nixos-config=…
# dry_command = "nixos-rebuild dry-build"   # for `bento build --dry`; derived from command
jobs = 2                           # hosts built at once

[status]
interval = "15min"                 # how often hosts poll (the agent timer's interval)
stale_after = 3                    # a generation not picked up after this many intervals: stale

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
        assert_eq!(
            e,
            "bento.toml:3: server.root must be an absolute path without `..`"
        );
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
        assert!(e.starts_with("bento.toml:2: hosts.web1.address"), "{e}");
        let c = Config::parse("[hosts.web1]\naddress = \"10.0.0.1\"\nssh_user = \"root\"\nssh_port = 2222\n")
            .unwrap();
        assert_eq!(
            c.hosts["web1"].ssh_command().unwrap(),
            "ssh -p 2222 root@10.0.0.1"
        );
    }

    #[test]
    fn time_spans() {
        assert_eq!(parse_timespan("15min"), Some(900));
        assert_eq!(parse_timespan("90"), Some(90));
        assert_eq!(parse_timespan("1h30m"), Some(5400));
        assert_eq!(parse_timespan("2 days"), Some(172_800));
        for bad in ["", "0", "min", "5 fortnights", "-5min", "1.5h"] {
            assert_eq!(parse_timespan(bad), None, "{bad}");
        }
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
