//! A Nix store path taken from untrusted input (a host's report, a manifest on the
//! server): `/nix/store/<32 base32 characters>-<name>` and nothing else.
//!
//! Handed to `nix` or `nvd`, any other string could be read as an option (`--version`) or,
//! with flakes enabled, as an installable that is fetched, evaluated and built
//! (`path:/some/flake`, `github:…`). A store path of this exact shape is neither.
//!
//! Nor is it a derivation: every path Bento hands to nix is a built output (a system), and
//! a `.drv` given to nix is something it would build (running the derivation's builder on
//! the admin's machine). So a `.drv` path is refused here, at the type.

use std::fmt;

/// The store directory Bento accepts paths under.
pub const STORE_DIR: &str = "/nix/store/";

/// Nix's base-32 alphabet (no `e`, `o`, `u`, `t`).
const NIX_BASE32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// A checked top-level store path of a built output (never a `.drv`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorePath(String);

/// Why a string is not a store path Bento accepts (never repeats the string: it is
/// untrusted).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotAStorePath {
    /// Not of the shape `/nix/store/<hash>-<name>`.
    #[error("not a Nix store path of the form {STORE_DIR}<32 base-32 characters>-<name>")]
    Shape,
    /// A derivation, which nix would build, not a built system.
    #[error("a derivation (`.drv`), not a built system: nix would build it")]
    Derivation,
}

impl StorePath {
    /// Accepts exactly `/nix/store/<hash>-<name>`: a 32-character Nix base-32 hash, a name
    /// of the characters Nix allows (`A-Za-z0-9+-._?=`) not starting with `.`, and no
    /// further path component; and not a derivation (a name ending in `.drv`).
    pub fn parse(text: &str) -> Result<StorePath, NotAStorePath> {
        use NotAStorePath::Shape;
        let rest = text.strip_prefix(STORE_DIR).ok_or(Shape)?;
        let (hash, name) = rest.split_at_checked(32).ok_or(Shape)?;
        let name = name.strip_prefix('-').ok_or(Shape)?;
        let hash_ok = hash.bytes().all(|b| NIX_BASE32.contains(&b));
        let name_ok = !name.is_empty()
            && name.len() <= 211
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b));
        if !(hash_ok && name_ok) {
            Err(Shape)
        } else if name.ends_with(".drv") {
            Err(NotAStorePath::Derivation)
        } else {
            Ok(StorePath(text.to_owned()))
        }
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its hash part (`/nix/store/<hash>-name`): its `.narinfo`'s name in a cache.
    pub fn hash_part(&self) -> &str {
        &self.0[STORE_DIR.len()..STORE_DIR.len() + 32]
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_store_paths() {
        let good = "/nix/store/0c7a0n8gdq7q2rcwmpv8yyhpjwxvlmvs-nixos-system-web1-24.11";
        assert_eq!(StorePath::parse(good).unwrap().as_str(), good);
        for bad in [
            "--version",
            "path:/some/flake",
            "github:owner/repo#x",
            "/nix/store/../../etc/passwd",
            "/nix/store/0c7a0n8gdq7q2rcwmpv8yyhpjwxvlmvs-x/../../etc",
            "/nix/store/0c7a0n8gdq7q2rcwmpv8yyhpjwxvlmvs-x/bin",
            "/nix/store/0c7a0n8gdq7q2rcwmpv8yyhpjwxvlmvs-.hidden",
            "/nix/store/0c7a0n8gdq7q2rcwmpv8yyhpjwxvlmvs-",
            "/nix/store/0c7a0n8gdq7q2rcwmpv8yyhpjwxvlmvs",
            "/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x",
            "/nix/store/0c7a0n8gdq7q2rcwmpv8yyhpjwxvlmv-short",
            "/nix/store/0c7a0n8gdq7q2rcwmpv8yyhpjwxvlmvs-a b",
            "/nix/store/0c7a0n8gdq7q2rcwmpv8yyhpjwxvlmvs-\u{1b}[2J",
            "/nix/store/0c7a0n8gdq7q2rcwmpv8yyhpjwxvlmvé-x",
            "/opt/store/0c7a0n8gdq7q2rcwmpv8yyhpjwxvlmvs-x",
            "",
        ] {
            assert_eq!(StorePath::parse(bad), Err(NotAStorePath::Shape), "{bad:?}");
        }
    }

    #[test]
    fn a_derivation_is_refused() {
        let drv = "/nix/store/0c7a0n8gdq7q2rcwmpv8yyhpjwxvlmvs-nixos-system-web1.drv";
        assert_eq!(StorePath::parse(drv), Err(NotAStorePath::Derivation));
        let e = NotAStorePath::Derivation.to_string();
        assert!(e.contains(".drv") && !e.contains("web1"), "{e}");
        // A name that merely contains `drv` is an output like any other.
        let ok = "/nix/store/0c7a0n8gdq7q2rcwmpv8yyhpjwxvlmvs-drv-tools.drvx";
        assert!(StorePath::parse(ok).is_ok());
    }
}
