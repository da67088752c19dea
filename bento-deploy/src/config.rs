//! `bento.toml`: the fleet's settings. Every key has a default, unknown keys are
//! refused, and errors name the file and line.

use std::path::Path;

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
    /// The admin key that signs bundles.
    pub signing_key: String,
}

impl Default for Deploy {
    fn default() -> Self {
        Deploy {
            signing_key: "~/.ssh/id_ed25519".into(),
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
        let at = |needle: &str| {
            text.find(needle)
                .map(|offset| bento_secrets::rules::line_col(text, offset).0)
        };
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
        Ok(config)
    }
}

/// The commented `bento.toml` that `bento init` writes.
pub const TEMPLATE: &str = r#"# Bento fleet settings. Every key is optional; the values shown are the defaults
# except where noted. Reference: docs/reference.md (bento.toml).

[server]
address = "bento.example.org"  # what hosts connect to (default: localhost)
port = 22
root = "/srv/bento"            # where `bento deploy` publishes, on the server
user_prefix = ""               # host H logs in as sftp user <user_prefix>H

[deploy]
signing_key = "~/.ssh/id_ed25519"  # admin key that signs bundles
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
    }
}
