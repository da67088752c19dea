//! What a host needs to know to activate one secret. The bundle's `manifest.json` carries
//! a list of these (its `secrets` field); `bento activate` reads only that field, so the
//! rest of the manifest can grow without touching activation.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::mode::{Mode, SPECIAL_BITS};
use crate::names::{valid_account, AbsPath, NameError, SecretName, UnitName};
use crate::rules::SecretRule;
use crate::template::TemplateRule;

/// Why a host refuses a spec; one line, naming the secret or template.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The name is not a secret name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The ciphertext is not `secrets/<name>.age`.
    #[error("{name}: file `{}` is not secrets/{name}.age", file.escape_default())]
    File {
        /// The secret.
        name: String,
        /// The file given.
        file: String,
    },
    /// The hash is not 64 hex digits.
    #[error("{0}: sha256 is not 64 hex digits")]
    Sha256(String),
    /// The mode is not octal.
    #[error("{name}: mode `{}` is not octal", mode.escape_default())]
    ModeNotOctal {
        /// The secret.
        name: String,
        /// The mode given.
        mode: String,
    },
    /// The mode has setuid, setgid or sticky bits.
    #[error("{name}: mode `{mode}` has setuid/setgid/sticky bits, which are not allowed for secrets")]
    ModeSpecial {
        /// The secret.
        name: String,
        /// The mode given.
        mode: Mode,
    },
    /// The `path`, or a unit, is not one.
    #[error("{name}: {source}")]
    Invalid {
        /// The secret.
        name: String,
        /// What is not valid.
        #[source]
        source: NameError,
    },
    /// The owner or group is not an account name.
    #[error("{name}: `{}` is not a user or group name", account.escape_default())]
    Account {
        /// The secret.
        name: String,
        /// The owner or group given.
        account: String,
    },
    /// A template's spec, refused as a secret's would be.
    #[error("template {0}")]
    Template(Box<SpecError>),
    /// The template's text is not `templates/<name>`.
    #[error("template {name}: file `{}` is not templates/{name}", file.escape_default())]
    TemplateFile {
        /// The template.
        name: String,
        /// The file given.
        file: String,
    },
}

/// Declares a spec of a bundle: the fields a secret's and a template's share (a rule's
/// `FileAttrs` as wire text, kept field by field: `flatten` does not combine with
/// `deny_unknown_fields`), then `$own`, and the checks of the shared attributes.
macro_rules! spec {
    ($(#[$doc:meta])* $spec:ident { $($(#[$own_meta:meta])* pub $own:ident: $own_type:ty,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $spec {
            /// The name; it lands at `<root>/secrets/<name>` or `<root>/templates/<name>`.
            pub name: String,
            /// The file in the bundle: `secrets/<name>.age` or `templates/<name>`.
            pub file: String,
            /// Hex SHA-256 of the file.
            pub sha256: String,
            /// Owner of the activated or rendered file.
            pub owner: String,
            /// Group of the file; absent: the owner's primary group.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub group: Option<String>,
            /// Octal mode, as in the rules (`"0400"`).
            pub mode: String,
            /// Optional stable path that gets a symlink to the file.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub path: Option<String>,
            /// Units restarted when the content changes.
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub restart_units: Vec<String>,
            /// Units reloaded when the content changes.
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub reload_units: Vec<String>,
            $($(#[$own_meta])* pub $own: $own_type,)*
        }

        impl $spec {
            /// Checks what follows the name and the file: the hash, a valid mode without
            /// setuid, setgid or sticky bits, an absolute `path`, account and unit names.
            /// Returns the mode, parsed once here.
            fn checked_attrs(&self) -> Result<Mode, SpecError> {
                let name = || self.name.clone();
                if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(SpecError::Sha256(name()));
                }
                let mode = Mode::parse(&self.mode).ok_or_else(|| SpecError::ModeNotOctal {
                    name: name(),
                    mode: self.mode.clone(),
                })?;
                if mode.bits() & SPECIAL_BITS != 0 {
                    return Err(SpecError::ModeSpecial { name: name(), mode });
                }
                if let Some(Err(source)) = self.path.as_deref().map(str::parse::<AbsPath>) {
                    return Err(SpecError::Invalid { name: name(), source });
                }
                let mut accounts = std::iter::once(&self.owner).chain(&self.group);
                if let Some(account) = accounts.find(|a| !valid_account(a)) {
                    return Err(SpecError::Account {
                        name: name(),
                        account: account.clone(),
                    });
                }
                let mut units = self.restart_units.iter().chain(&self.reload_units);
                if let Some(unit) = units.find(|u| !UnitName::is_valid(u)) {
                    return Err(SpecError::Invalid {
                        name: name(),
                        source: NameError::Unit(unit.escape_default().to_string()),
                    });
                }
                Ok(mode)
            }
        }
    };
}

spec! {
    /// One secret of a bundle, with its runtime attributes.
    SecretSpec {
        /// Activated before users exist (`bento activate --phase users`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        pub needed_for_users: bool,
    }
}

spec! {
    /// One template of a bundle: its text is the bundle file `templates/<name>` (never
    /// rendered: the host renders it at activation).
    TemplateSpec {}
}

impl SecretSpec {
    /// The spec of a rule whose ciphertext has SHA-256 `sha256` (hex).
    pub fn from_rule(rule: &SecretRule, sha256: String) -> SecretSpec {
        SecretSpec {
            name: rule.name.clone(),
            file: format!("secrets/{}.age", rule.name),
            sha256,
            owner: rule.attrs.owner.clone(),
            group: rule.attrs.group.clone(),
            mode: format!("{:04o}", rule.attrs.mode),
            path: rule.attrs.path.clone().map(String::from),
            restart_units: rule.attrs.restart_units.clone(),
            reload_units: rule.attrs.reload_units.clone(),
            needed_for_users: rule.needed_for_users,
        }
    }

    /// Checks everything a host must not trust blindly: names without `/` or `..`, the
    /// file inside `secrets/`, an absolute `path`, a valid mode without setuid, setgid or
    /// sticky bits. Returns the mode, parsed once here.
    pub fn validate(&self) -> Result<Mode, SpecError> {
        SecretName::from_str(&self.name)?;
        if self.file != format!("secrets/{}.age", self.name) {
            return Err(SpecError::File {
                name: self.name.clone(),
                file: self.file.clone(),
            });
        }
        self.checked_attrs()
    }
}

impl TemplateSpec {
    /// The spec of a template whose text has SHA-256 `sha256` (hex).
    pub fn from_rule(rule: &TemplateRule, sha256: String) -> TemplateSpec {
        TemplateSpec {
            name: rule.name.clone(),
            file: format!("templates/{}", rule.name),
            sha256,
            owner: rule.attrs.owner.clone(),
            group: rule.attrs.group.clone(),
            mode: format!("{:04o}", rule.attrs.mode),
            path: rule.attrs.path.clone().map(String::from),
            restart_units: rule.attrs.restart_units.clone(),
            reload_units: rule.attrs.reload_units.clone(),
        }
    }

    /// Checks what a host must not trust blindly, as [`SecretSpec::validate`] does, and
    /// returns the mode.
    pub fn validate(&self) -> Result<Mode, SpecError> {
        let mode = SecretName::from_str(&self.name)
            .map_err(SpecError::from)
            .and_then(|_| self.checked_attrs())
            .map_err(|e| SpecError::Template(Box::new(e)))?;
        if self.file != format!("templates/{}", self.name) {
            return Err(SpecError::TemplateFile {
                name: self.name.clone(),
                file: self.file.clone(),
            });
        }
        Ok(mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SecretSpec {
        SecretSpec {
            name: "db".into(),
            file: "secrets/db.age".into(),
            sha256: "0".repeat(64),
            owner: "postgres".into(),
            group: None,
            mode: "0400".into(),
            path: None,
            restart_units: vec!["postgresql.service".into(), "app@1.service".into()],
            reload_units: Vec::new(),
            needed_for_users: false,
        }
    }

    /// The JSON of both specs, pinned: key names and order, value shapes, what an unset
    /// field leaves out. Read and written back, each text comes out unchanged.
    #[test]
    fn the_wire_json_of_both_specs_is_pinned() {
        fn again<T: Serialize + serde::de::DeserializeOwned>(text: &str) -> String {
            serde_json::to_string(&serde_json::from_str::<T>(text).unwrap()).unwrap()
        }
        for secret in [
            r#"{"name":"db","file":"secrets/db.age","sha256":"ab12","owner":"app","group":"db","mode":"0440","path":"/run/db","restart_units":["a.service"],"reload_units":["b.service"],"needed_for_users":true}"#,
            r#"{"name":"db","file":"secrets/db.age","sha256":"ab12","owner":"root","mode":"0400"}"#,
        ] {
            assert_eq!(again::<SecretSpec>(secret), secret);
        }
        for template in [
            r#"{"name":"env","file":"templates/env","sha256":"ab12","owner":"app","group":"db","mode":"0440","path":"/run/db","restart_units":["a.service"],"reload_units":["b.service"]}"#,
            r#"{"name":"env","file":"templates/env","sha256":"ab12","owner":"root","mode":"0400"}"#,
        ] {
            assert_eq!(again::<TemplateSpec>(template), template);
        }
    }

    #[test]
    fn a_host_refuses_units_and_accounts_that_are_not_names() {
        assert_eq!(spec().validate().map(|_| ()), Ok(()));
        for bad in ["--force", "a b", "a\nb", "", "x/y", "\u{1b}[2J"] {
            let s = SecretSpec {
                reload_units: vec![bad.into()],
                ..spec()
            };
            let e = s.validate().unwrap_err().to_string();
            assert!(e.starts_with("db: `") && e.contains("is not a unit name"), "{e}");
            assert!(!e.contains(['\n', '\u{1b}']), "{e}");
        }
        for bad in ["-rf", "a b", "root\n"] {
            let s = SecretSpec {
                owner: bad.into(),
                ..spec()
            };
            assert!(s
                .validate()
                .unwrap_err()
                .to_string()
                .contains("is not a user or group name"));
        }
        let t = TemplateSpec {
            name: "env".into(),
            file: "templates/env".into(),
            sha256: "0".repeat(64),
            owner: "root".into(),
            group: None,
            mode: "0400".into(),
            path: None,
            restart_units: vec!["-x".into()],
            reload_units: Vec::new(),
        };
        assert!(t
            .validate()
            .unwrap_err()
            .to_string()
            .contains("is not a unit name"));
    }
}
