//! The names and paths that reach a file system path or a command line: host names, secret
//! (and group, template, admin) names, paths inside a bundle, and paths relative to a
//! directory that must stay inside it. Each is checked here and only here; a value of one
//! of these types has passed its check.
//!
//! Every type parses with [`FromStr`] or `TryFrom<String>`, prints as itself, and reads and
//! writes as a plain JSON/TOML string (serde), refusing invalid text on input. Callers with
//! a message of their own (a file and line, a fix) ask `is_valid` and word it themselves.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a name or path was refused; one line, the text quoted with escapes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not a host name.
    #[error("host `{0}` is not a valid host name")]
    Host(String),
    /// Not a secret name.
    #[error("secret name `{0}` is not allowed (letters, digits, `.`, `_`, `-`)")]
    Secret(String),
    /// A bundle path that starts with `/`.
    #[error("path `{0}` is absolute; bundle paths are relative")]
    Absolute(String),
    /// A bundle path with a NUL or a backslash.
    #[error("path `{0}` holds a NUL or backslash")]
    NulOrBackslash(String),
    /// A bundle path whose first component is not `config`, `secrets` or `templates`.
    #[error("path `{0}` is outside config/, secrets/ and templates/")]
    Outside(String),
    /// A bundle path that is only its top directory.
    #[error("path `{0}` names a directory, not a file")]
    Directory(String),
    /// A bundle path with an empty, `.` or `..` component (the second field).
    #[error("path `{0}` has a `{1}` component; a bundle path must not escape the bundle")]
    Escapes(String, String),
    /// A relative path that could name something outside its directory.
    #[error("refusing path `{0}`")]
    Relative(String),
    /// Not a systemd unit name.
    #[error("`{0}` is not a unit name")]
    Unit(String),
    /// Not an absolute path safe in sshd_config, tmpfiles and a shell word.
    #[error(
        "path `{0}` must be absolute, without `.`, `..` or empty components or a trailing `/`, \
         and hold only letters, digits and `/._+,:@=-` (no spaces, quotes, `%` or control characters)"
    )]
    AbsPath(String),
    /// Not a SHA-256 in lowercase hex.
    #[error("`{0}` is not a sha256 (64 lowercase hex digits)")]
    Sha256(String),
}

/// The bytes an [`AbsPath`] may hold besides letters and digits: none of them means
/// anything to sshd_config (`%` tokens, quotes, `#`), tmpfiles.d (`%` specifiers,
/// whitespace), a shell (quotes, `$`, `;`, globs, `~`) or Nix string interpolation (`${`).
const ABS_PATH_MARKS: &[u8] = b"/._+,:@=-";

/// The longest [`AbsPath`] (PATH_MAX less its NUL).
const ABS_PATH_MAX: usize = 4095;

fn abs_path_check(path: &str) -> Result<(), NameError> {
    let ok = path.len() > 1
        && path.len() <= ABS_PATH_MAX
        && path.starts_with('/')
        && !path.ends_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || ABS_PATH_MARKS.contains(&b))
        && path
            .split('/')
            .skip(1)
            .all(|c| !c.is_empty() && c != "." && c != "..");
    ok.then_some(())
        .ok_or_else(|| NameError::AbsPath(path.escape_default().to_string()))
}

/// Whether `name` may name a host, secret, group, template or admin (see [`HostName`]):
/// letters, digits, `.`, `_` and `-`, not empty, not starting with `.` or `-` (so never
/// `.`, `..`, or an option).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Whether `rel` is a relative path that stays inside its directory: not empty, not
/// absolute, no NUL, no empty, `.` or `..` component.
fn rel_ok(rel: &str) -> bool {
    !rel.is_empty()
        && !rel.starts_with('/')
        && !rel.contains('\0')
        && rel.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Checks a bundle path: relative, `/`-separated, under `config/`, `secrets/` or
/// `templates/`, no empty, `.` or `..` component, no NUL or backslash.
fn bundle_path_check(path: &str) -> Result<(), NameError> {
    let shown = || path.escape_default().to_string();
    if path.starts_with('/') {
        return Err(NameError::Absolute(shown()));
    }
    if path.contains('\0') || path.contains('\\') {
        return Err(NameError::NulOrBackslash(shown()));
    }
    let mut parts = path.split('/');
    let top = parts.next().unwrap_or_default();
    if top != "config" && top != "secrets" && top != "templates" {
        return Err(NameError::Outside(shown()));
    }
    let rest: Vec<&str> = parts.collect();
    if rest.is_empty() {
        return Err(NameError::Directory(shown()));
    }
    if let Some(bad) = rest.iter().find(|c| c.is_empty() || **c == "." || **c == "..") {
        return Err(NameError::Escapes(shown(), bad.escape_default().to_string()));
    }
    Ok(())
}

macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Whether `text` passes this type's check.
            pub fn is_valid(text: &str) -> bool {
                let check: fn(&str) -> Result<(), NameError> = $check;
                check(text).is_ok()
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(text: String) -> Result<Self, NameError> {
                let check: fn(&str) -> Result<(), NameError> = $check;
                check(&text)?;
                Ok($name(text))
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(text: &str) -> Result<Self, NameError> {
                Self::try_from(text.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        // Ordered, compared and hashed as its text: a map keyed by it is looked up by `&str`.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

pub(crate) use checked_string;

checked_string!(
    /// A host's name: its `keys/hosts/<name>.pub`, its `hosts/<name>/`, its server directory
    /// and sftp user. Letters, digits, `.`, `_`, `-`; not first `.` or `-`.
    HostName,
    |s| valid_name(s).then_some(()).ok_or_else(|| NameError::Host(s.escape_default().to_string()))
);

checked_string!(
    /// A secret's name (also a template's): its file on the host, `<root>/secrets/<name>`.
    /// The same characters as a [`HostName`].
    SecretName,
    |s| valid_name(s).then_some(()).ok_or_else(|| NameError::Secret(s.escape_default().to_string()))
);

checked_string!(
    /// A file of a bundle, as its manifest lists it: `config/…`, `secrets/…` or
    /// `templates/…`, relative, with no way out of the bundle.
    BundlePath,
    bundle_path_check
);

checked_string!(
    /// A path relative to a directory that cannot name anything outside it: not empty, not
    /// absolute, no NUL, no empty, `.` or `..` component. (It may still cross a symlink:
    /// opening it safely is the file system code's job.)
    RelPath,
    |s| rel_ok(s).then_some(()).ok_or_else(|| NameError::Relative(s.escape_default().to_string()))
);

checked_string!(
    /// A systemd unit a secret or template restarts or reloads: the characters systemd
    /// allows in unit names (letters, digits, `:`, `_`, `.`, `@`, `\`, `-`), at most 255
    /// bytes, never starting with `-`: it is handed to `systemctl` and written one per line
    /// into NixOS's activation lists.
    UnitName,
    |s| {
        let ok = !s.is_empty()
            && s.len() <= 255
            && !s.starts_with('-')
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b":_.@\\-".contains(&b));
        ok.then_some(()).ok_or_else(|| NameError::Unit(s.escape_default().to_string()))
    }
);

checked_string!(
    /// An absolute path that bento writes into `sshd_config`, tmpfiles rules, shell
    /// commands and NixOS modules (`server.root`, a secret's or template's `path`): absolute,
    /// normalised (no `.`, `..` or empty component, no trailing `/`), at most 4095 bytes, of
    /// letters, digits and `/._+,:@=-` only, so that it is one word everywhere and can
    /// never start a new line, a comment, a `%` token or a quoted string.
    AbsPath,
    abs_path_check
);

impl AsRef<std::ffi::OsStr> for AbsPath {
    fn as_ref(&self) -> &std::ffi::OsStr {
        std::ffi::OsStr::new(&self.0)
    }
}

impl AsRef<std::path::Path> for AbsPath {
    fn as_ref(&self) -> &std::path::Path {
        std::path::Path::new(&self.0)
    }
}

/// Is `name` a plausible Unix user or group name (or a numeric id)?
pub(crate) fn valid_account(name: &str) -> bool {
    let body = name.strip_suffix('$').unwrap_or(name);
    name.len() <= 32
        && (name.bytes().all(|b| b.is_ascii_digit())
            || (body.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && body
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))))
        && !name.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_paths_are_one_safe_word() {
        for good in ["/srv/bento", "/run/keys/db.env", "/a", "/var/lib/x_y-z+1,2:3@4=5"] {
            assert_eq!(good.parse::<AbsPath>().unwrap().as_str(), good);
        }
        for bad in [
            "",
            "/",
            "srv",
            "/srv/",
            "/srv//x",
            "/srv/./x",
            "/srv/../etc",
            "/srv\nMatch all",
            "/srv\nPermitRootLogin yes",
            "/srv/bento\r",
            "/srv bento",
            "/srv\tx",
            "/srv/%u",
            "/srv/\"x\"",
            "/srv/'x'",
            "/srv/\\x",
            "/srv/$(id)",
            "/srv/`id`",
            "/srv/x;id",
            "/srv/${x}",
            "/srv/#x",
            "/srv/\u{1b}[2J",
            "/srv/\0",
            "/srv/é",
        ] {
            assert!(!AbsPath::is_valid(bad), "{bad:?}");
        }
        assert!(!AbsPath::is_valid(&format!("/{}", "a".repeat(4095))));
        assert_eq!(
            "/srv\nMatch all".parse::<AbsPath>().unwrap_err().to_string(),
            "path `/srv\\nMatch all` must be absolute, without `.`, `..` or empty components or a trailing `/`, \
             and hold only letters, digits and `/._+,:@=-` (no spaces, quotes, `%` or control characters)"
        );
    }

    #[test]
    fn names_are_letters_digits_and_three_marks_never_dots_or_options_first() {
        for good in ["web1", "db-password.v2", "a_b", "A", "0"] {
            assert!(HostName::is_valid(good) && SecretName::is_valid(good), "{good}");
        }
        for bad in ["", ".", "..", ".hidden", "-rf", "a/b", "a b", "é", "a\nb", "a\0"] {
            assert!(!HostName::is_valid(bad) && !SecretName::is_valid(bad), "{bad:?}");
        }
        assert_eq!(
            "../web1".parse::<HostName>().unwrap_err().to_string(),
            "host `../web1` is not a valid host name"
        );
        assert_eq!(
            "a\nb".parse::<SecretName>().unwrap_err().to_string(),
            "secret name `a\\nb` is not allowed (letters, digits, `.`, `_`, `-`)"
        );
    }

    #[test]
    fn bundle_paths_stay_in_their_three_directories() {
        for good in [
            "config/configuration.nix",
            "secrets/db.age",
            "templates/a",
            "config/a/b",
        ] {
            assert_eq!(good.parse::<BundlePath>().unwrap().as_str(), good);
        }
        let cases = [
            (
                "/etc/passwd",
                "path `/etc/passwd` is absolute; bundle paths are relative",
            ),
            ("config/a\\b", "path `config/a\\\\b` holds a NUL or backslash"),
            ("config/a\0b", "path `config/a\\u{0}b` holds a NUL or backslash"),
            (
                "other/x",
                "path `other/x` is outside config/, secrets/ and templates/",
            ),
            (
                "../etc/passwd",
                "path `../etc/passwd` is outside config/, secrets/ and templates/",
            ),
            ("config", "path `config` names a directory, not a file"),
            (
                "config/../../x",
                "path `config/../../x` has a `..` component; a bundle path must not escape the bundle",
            ),
            (
                "config//x",
                "path `config//x` has a `` component; a bundle path must not escape the bundle",
            ),
            (
                "config/./x",
                "path `config/./x` has a `.` component; a bundle path must not escape the bundle",
            ),
        ];
        for (bad, want) in cases {
            assert_eq!(bad.parse::<BundlePath>().unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn relative_paths_cannot_escape() {
        for bad in ["../x", "/etc/passwd", "a//b", "a/./b", "", "a/..", "./a", "a\0b"] {
            assert!(!RelPath::is_valid(bad), "{bad:?}");
        }
        assert_eq!(
            "../x".parse::<RelPath>().unwrap_err().to_string(),
            "refusing path `../x`"
        );
        assert!(RelPath::is_valid("generations/3/config/configuration.nix"));
    }

    #[test]
    fn serde_reads_only_valid_text_and_writes_it_back() {
        let host: HostName = serde_json::from_str("\"web1\"").unwrap();
        assert_eq!(serde_json::to_string(&host).unwrap(), "\"web1\"");
        let err = serde_json::from_str::<HostName>("\"../web1\"").unwrap_err();
        assert!(
            err.to_string()
                .contains("host `../web1` is not a valid host name"),
            "{err}"
        );
        let path: Result<BundlePath, _> = serde_json::from_str("\"config/../x\"");
        assert!(path.is_err());
        let name = SecretName::try_from("db".to_owned()).unwrap();
        assert_eq!(String::from(name.clone()), "db");
        assert_eq!(&*name, "db");
    }
}
