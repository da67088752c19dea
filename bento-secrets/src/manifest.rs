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
//! `bento activate` reads the same document through [`Entries`]: only `secrets` and
//! `templates`, each entry kept as JSON so that one bad entry fails that secret alone.
//!
//! `sizes` came after the first release: a manifest without it still parses (installed
//! bundles, `bento status`), but the agent refuses to download a bundle whose files have
//! no signed size, and `bento deploy` publishes such a host again.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::escape_controls;
use crate::names::{BundlePath, HostName};
use crate::spec::{SecretSpec, TemplateSpec};

/// A manifest that does not hold what a bundle must; one line, naming the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("manifest.json: {0}")]
pub struct ManifestError(pub String);

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
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| {
            // A key the host wrote is quoted in the message: keep it on one line.
            let e = escape_controls(&e.to_string());
            ManifestError(format!("not a bundle manifest: {e}"))
        })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks what a host must not trust blindly: the format, the host name, every path
    /// (relative, `/`-separated, inside `config/`, `secrets/` or `templates/`, no `.`/`..`, no NUL),
    /// every hash, and that each secret's ciphertext is listed with the same hash.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let bad = |msg: String| Err(ManifestError(escape_controls(&msg)));
        if self.format != FORMAT {
            return bad(format!(
                "format {} is not {FORMAT}: update bento on this host",
                self.format
            ));
        }
        let refused = |e: crate::names::NameError| ManifestError(escape_controls(&e.to_string()));
        self.host.parse::<HostName>().map_err(refused)?;
        for (path, hash) in &self.files {
            path.parse::<BundlePath>().map_err(refused)?;
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
                .map_err(|e| ManifestError(escape_controls(&e.to_string())))?;
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
                .map_err(|e| ManifestError(escape_controls(&e.to_string())))?;
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
    pub fn size(&self, path: &str) -> Result<u64, ManifestError> {
        self.sizes.get(path).copied().ok_or_else(|| {
            ManifestError(format!(
                "{}: no signed size (the bundle was published by an older bento); publish it again with `bento deploy`",
                path.escape_default()
            ))
        })
    }
}

/// Whether `s` is a SHA-256 in lowercase hex.
fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What `bento activate` reads of a manifest: the secret and template entries, each left
/// as JSON until it is checked on its own, so that one malformed entry fails only itself
/// while the others activate. Other fields are not looked at.
#[derive(Debug, Default, Deserialize)]
pub struct Entries {
    /// The `secrets` entries (absent: none).
    #[serde(default)]
    pub secrets: Vec<serde_json::Value>,
    /// The `templates` entries (absent: none).
    #[serde(default)]
    pub templates: Vec<serde_json::Value>,
}

impl Entries {
    /// Reads the entries of a manifest's bytes.
    pub fn parse(bytes: &[u8]) -> Result<Entries, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
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

    #[test]
    fn activation_reads_the_entries_a_manifest_writes() {
        let spec = SecretSpec {
            name: "db".into(),
            file: "secrets/db.age".into(),
            sha256: "ab".repeat(32),
            owner: "root".into(),
            group: None,
            mode: "0400".into(),
            path: None,
            restart_units: Vec::new(),
            reload_units: Vec::new(),
            needed_for_users: false,
        };
        let mut m = sample();
        m.secrets.push(spec.clone());
        let entries = Entries::parse(&m.to_bytes()).unwrap();
        assert_eq!(entries.secrets.len(), 1);
        assert!(entries.templates.is_empty());
        let back: SecretSpec = serde_json::from_value(entries.secrets[0].clone()).unwrap();
        assert_eq!(back, spec);
        // Only the entries matter to activation: a bare document is no entries at all.
        let bare = Entries::parse(b"{\"format\": 1}").unwrap();
        assert!(bare.secrets.is_empty() && bare.templates.is_empty());
    }
}
