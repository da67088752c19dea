//! `manifest.json`: what a bundle holds, signed by an admin. The host agent and
//! `bento activate` read it, so its shape is a contract:
//!
//! ```json
//! { "format": 1, "host": "web1", "generation": 3, "created": "2026-11-26T05:00:00Z",
//!   "git_commit": "abc…" | null, "system": "/nix/store/…" | null,
//!   "files": { "config/configuration.nix": "<sha256 hex>", "secrets/db.age": "<sha256 hex>" },
//!   "sizes": { "config/configuration.nix": 1234, "secrets/db.age": 567 },
//!   "secrets": [ SecretSpec, … ], "templates": [ TemplateSpec, … ] }
//! ```
//!
//! `sizes` came after the first release: a manifest without it still parses (installed
//! bundles, `bento status`), but the agent refuses to download a bundle whose files have
//! no signed size, and `bento deploy` publishes such a host again.

use std::collections::BTreeMap;

use bento_secrets::error::escape_controls;
use bento_secrets::rules::valid_name;
use bento_secrets::spec::{SecretSpec, TemplateSpec};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The manifest format this version writes and reads.
pub const FORMAT: u32 = 1;
/// The manifest's file name in a bundle.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The signature's file name in a bundle.
pub const SIGNATURE_FILE: &str = "manifest.sig";

/// A bundle's manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: u32,
    /// The host the bundle is for.
    pub host: String,
    /// Monotonic per host: a host refuses a generation lower than the one it runs.
    pub generation: u64,
    /// When the bundle was made, RFC 3339 UTC.
    pub created: String,
    /// The fleet repo's `HEAD`, when it is a git repo.
    pub git_commit: Option<String>,
    /// The system path `bento build` expects, when it built this configuration.
    pub system: Option<String>,
    /// Every file of the bundle (but the manifest and its signature) → hex SHA-256.
    pub files: BTreeMap<String, String>,
    /// Every file of `files` → its size in bytes: the agent stops a download that goes
    /// past it. Empty in manifests made before sizes were signed.
    #[serde(default)]
    pub sizes: BTreeMap<String, u64>,
    /// The secrets and their runtime attributes.
    pub secrets: Vec<SecretSpec>,
    /// The templates (text in `templates/<name>`) and their runtime attributes; absent
    /// when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<TemplateSpec>,
}

impl Manifest {
    /// The exact bytes written to `manifest.json` (and signed): pretty JSON, newline-ended.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Parses and validates a manifest.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, Error> {
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| {
            // A key the host wrote is quoted in the message: keep it on one line.
            let e = escape_controls(&e.to_string());
            Error::Manifest(format!("not a bundle manifest: {e}"))
        })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks what a host must not trust blindly: the format, the host name, every path
    /// (relative, `/`-separated, inside `config/`, `secrets/` or `templates/`, no `.`/`..`, no NUL),
    /// every hash, and that each secret's ciphertext is listed with the same hash.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |msg: String| Err(Error::Manifest(escape_controls(&msg)));
        if self.format != FORMAT {
            return bad(format!(
                "format {} is not {FORMAT}: update bento on this host",
                self.format
            ));
        }
        if !valid_name(&self.host) {
            return bad(format!(
                "host `{}` is not a valid host name",
                self.host.escape_default()
            ));
        }
        for (path, hash) in &self.files {
            validate_path(path).map_err(|m| Error::Manifest(escape_controls(&m)))?;
            if !is_sha256_hex(hash) {
                return bad(format!("{path}: sha256 is not 64 lowercase hex digits"));
            }
        }
        if let Some(path) = self.sizes.keys().find(|p| !self.files.contains_key(*p)) {
            return bad(format!("sizes: `{}` is not in files", path.escape_default()));
        }
        if let Some(system) = &self.system {
            if !system.starts_with("/nix/store/") || system.contains(['\0', '\n']) {
                return bad(format!(
                    "system `{}` is not a /nix/store path",
                    system.escape_default()
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for spec in &self.secrets {
            spec.validate()
                .map_err(|m| Error::Manifest(escape_controls(&m)))?;
            if !seen.insert(spec.name.as_str()) {
                return bad(format!("secret `{}` is listed twice", spec.name));
            }
            if self.files.get(&spec.file) != Some(&spec.sha256) {
                return bad(format!(
                    "secret `{}`: {} is not in files with the same sha256",
                    spec.name, spec.file
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for spec in &self.templates {
            spec.validate()
                .map_err(|m| Error::Manifest(escape_controls(&m)))?;
            if !seen.insert(spec.name.as_str()) {
                return bad(format!("template `{}` is listed twice", spec.name));
            }
            if self.files.get(&spec.file) != Some(&spec.sha256) {
                return bad(format!(
                    "template `{}`: {} is not in files with the same sha256",
                    spec.name, spec.file
                ));
            }
        }
        Ok(())
    }

    /// Whether two manifests describe the same bundle content: files (and their signed
    /// sizes), secrets and system (generation, time and commit aside). A manifest made
    /// before sizes were signed differs from its successor, so it gets published again.
    pub fn same_content(&self, other: &Manifest) -> bool {
        self.files == other.files
            && self.sizes == other.sizes
            && self.secrets == other.secrets
            && self.templates == other.templates
            && self.system == other.system
    }

    /// The signed size of the bundle file `path`; an error when the manifest has none
    /// (one made before sizes were signed).
    pub fn size(&self, path: &str) -> Result<u64, Error> {
        self.sizes.get(path).copied().ok_or_else(|| {
            Error::Manifest(format!(
                "{}: no signed size (the bundle was published by an older bento); publish it again with `bento deploy`",
                path.escape_default()
            ))
        })
    }
}

/// Checks one path of a manifest's `files`: relative, `/`-separated, under `config/` or
/// `secrets/`, no empty, `.` or `..` component, no NUL or backslash.
pub fn validate_path(path: &str) -> Result<(), String> {
    let shown = path.escape_default();
    if path.starts_with('/') {
        return Err(format!("path `{shown}` is absolute; bundle paths are relative"));
    }
    if path.contains('\0') || path.contains('\\') {
        return Err(format!("path `{shown}` holds a NUL or backslash"));
    }
    let mut parts = path.split('/');
    let top = parts.next().unwrap_or_default();
    if top != "config" && top != "secrets" && top != "templates" {
        return Err(format!(
            "path `{shown}` is outside config/, secrets/ and templates/"
        ));
    }
    let rest: Vec<&str> = parts.collect();
    if rest.is_empty() {
        return Err(format!("path `{shown}` names a directory, not a file"));
    }
    if let Some(bad) = rest.iter().find(|c| c.is_empty() || **c == "." || **c == "..") {
        return Err(format!(
            "path `{shown}` has a `{}` component; a bundle path must not escape the bundle",
            bad.escape_default()
        ));
    }
    Ok(())
}

/// Whether `s` is a SHA-256 in lowercase hex.
fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let hash = "ab".repeat(32);
        Manifest {
            format: FORMAT,
            host: "web1".into(),
            generation: 1,
            created: "2026-11-26T05:00:00Z".into(),
            git_commit: None,
            system: None,
            files: [("config/configuration.nix".to_owned(), hash)].into(),
            sizes: [("config/configuration.nix".to_owned(), 42)].into(),
            secrets: Vec::new(),
            templates: Vec::new(),
        }
    }

    #[test]
    fn round_trips_with_the_contract_shape() {
        let m = sample();
        let bytes = m.to_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("\"git_commit\": null"), "{text}");
        assert!(text.contains("\"system\": null"), "{text}");
        assert_eq!(Manifest::parse(&bytes).unwrap(), m);
        assert!(
            text.contains("\"sizes\": {\n    \"config/configuration.nix\": 42\n  }"),
            "{text}"
        );
    }

    #[test]
    fn a_manifest_without_sizes_parses_but_has_no_size_to_offer() {
        let mut m = sample();
        m.sizes.clear();
        let text = String::from_utf8(m.to_bytes())
            .unwrap()
            .replace(",\n  \"sizes\": {}", "");
        assert!(!text.contains("sizes"), "{text}");
        let old = Manifest::parse(text.as_bytes()).unwrap();
        let e = old.size("config/configuration.nix").unwrap_err().to_string();
        assert!(e.contains("no signed size") && e.contains("bento deploy"), "{e}");
        assert!(!old.same_content(&sample()), "published again once");
    }

    #[test]
    fn refuses_paths_that_escape() {
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            "config/../../x",
            "config/./x",
            "config//x",
            "config",
            "other/x",
            "config/a\0b",
        ] {
            let mut m = sample();
            m.files.insert(bad.into(), "00".repeat(32));
            let e = m.validate().unwrap_err().to_string();
            assert!(e.starts_with("manifest.json: path `"), "{bad}: {e}");
        }
        let mut m = sample();
        m.files.insert("config/x".into(), "XY".repeat(32));
        assert!(m.validate().is_err());
        let mut m = sample();
        m.sizes.insert("config/other".into(), 1);
        assert!(m
            .validate()
            .unwrap_err()
            .to_string()
            .contains("sizes: `config/other`"));
        let mut m = sample();
        m.format = 2;
        assert!(m.validate().unwrap_err().to_string().contains("format 2"));
    }
}
