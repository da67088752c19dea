//! `manifest.json`: what a bundle holds, signed by an admin. The host agent and
//! `bento activate` read it, so its shape is a contract:
//!
//! ```json
//! { "format": 2, "host": "web1", "generation": 3, "created": "2026-11-26T05:00:00Z",
//!   "git_commit": "abc…" | null, "system": "/nix/store/…" | null,
//!   "previous": "<sha256 hex of the host's previous manifest.json>" | null,
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
//!
//! `previous` came with format 2: the SHA-256 of the exact bytes of the manifest that was
//! the host's `current` when this one was made (null for a host's first). The manifests
//! form a hash chain: a signed manifest commits to every one before it, so a host can
//! tell that a new generation descends from the one it runs, and `bento log` can check
//! the history link by link. Format 1 manifests (no `previous`) still parse.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Sha256;
use crate::error::escape_controls;
use crate::names::{BundlePath, HostName};
use crate::spec::{SecretSpec, TemplateSpec};

/// A manifest that does not hold what a bundle must; one line, naming the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("manifest.json: {0}")]
pub struct ManifestError(pub String);

/// The manifest format this version writes.
pub const FORMAT: u32 = 2;
/// The oldest manifest format this version reads (installed bundles, older servers).
pub const OLDEST_FORMAT: u32 = 1;
/// The manifest's file name in a bundle.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The signature's file name in a bundle.
pub const SIGNATURE_FILE: &str = "manifest.sig";

/// A bundle's manifest, checked: made by [`Manifest::parse`] (or by `bento deploy`), so
/// its host, paths and hashes are valid and its secrets and templates agree with its files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Manifest {
    /// [`FORMAT`], or an older one still read.
    pub format: u32,
    /// The host the bundle is for.
    pub host: HostName,
    /// Monotonic per host: a host refuses a generation lower than the one it runs.
    pub generation: u64,
    /// When the bundle was made, RFC 3339 UTC.
    pub created: String,
    /// The fleet repo's `HEAD`, when it is a git repo.
    pub git_commit: Option<String>,
    /// The system path `bento build` expects, when it built this configuration.
    pub system: Option<String>,
    /// The SHA-256 of the manifest that was the host's `current` when this one was made;
    /// `None` for a host's first manifest (and in format 1, which had no history).
    pub previous: Option<Sha256>,
    /// Every file of the bundle (but the manifest and its signature) → its SHA-256.
    pub files: BTreeMap<BundlePath, Sha256>,
    /// Every file of `files` → its size in bytes: the agent stops a download that goes
    /// past it. Empty in manifests made before sizes were signed.
    pub sizes: BTreeMap<BundlePath, u64>,
    /// The secrets and their runtime attributes.
    pub secrets: Vec<SecretSpec>,
    /// The templates (text in `templates/<name>`) and their runtime attributes; absent
    /// when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<TemplateSpec>,
}

/// `manifest.json` as read, before its checks: the JSON shape only. [`Manifest::parse`]
/// turns it into a [`Manifest`], naming the first field that is wrong.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    format: u32,
    host: String,
    generation: u64,
    created: String,
    git_commit: Option<String>,
    system: Option<String>,
    #[serde(default)]
    previous: Option<String>,
    files: BTreeMap<String, String>,
    #[serde(default)]
    sizes: BTreeMap<String, u64>,
    secrets: Vec<SecretSpec>,
    #[serde(default)]
    templates: Vec<TemplateSpec>,
}

impl TryFrom<RawManifest> for Manifest {
    type Error = ManifestError;

    fn try_from(raw: RawManifest) -> Result<Manifest, ManifestError> {
        let refused = |e: crate::names::NameError| ManifestError(escape_controls(&e.to_string()));
        if !(OLDEST_FORMAT..=FORMAT).contains(&raw.format) {
            return Err(ManifestError(format!(
                "format {} is not one of {OLDEST_FORMAT}..={FORMAT}: update bento on this host",
                raw.format
            )));
        }
        let previous = match raw.previous {
            Some(hash) => Some(
                hash.parse::<Sha256>()
                    .map_err(|_| ManifestError("previous: sha256 is not 64 lowercase hex digits".into()))?,
            ),
            None => None,
        };
        let mut files = BTreeMap::new();
        for (path, hash) in raw.files {
            let path: BundlePath = path.parse().map_err(refused)?;
            let Ok(hash) = hash.parse::<Sha256>() else {
                return Err(ManifestError(escape_controls(&format!(
                    "{path}: sha256 is not 64 lowercase hex digits"
                ))));
            };
            files.insert(path, hash);
        }
        let mut sizes = BTreeMap::new();
        for (path, size) in raw.sizes {
            match files.get_key_value(path.as_str()) {
                Some((path, _)) => sizes.insert(path.clone(), size),
                None => {
                    return Err(ManifestError(format!(
                        "sizes: `{}` is not in files",
                        path.escape_default()
                    )))
                }
            };
        }
        let manifest = Manifest {
            format: raw.format,
            host: raw.host.parse().map_err(refused)?,
            generation: raw.generation,
            created: raw.created,
            git_commit: raw.git_commit,
            system: raw.system,
            previous,
            files,
            sizes,
            secrets: raw.secrets,
            templates: raw.templates,
        };
        manifest.validate()?;
        Ok(manifest)
    }
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
        let raw: RawManifest = serde_json::from_slice(bytes).map_err(|e| {
            // A key the host wrote is quoted in the message: keep it on one line.
            let e = escape_controls(&e.to_string());
            ManifestError(format!("not a bundle manifest: {e}"))
        })?;
        Manifest::try_from(raw)
    }

    /// Checks what the types alone cannot: the system is a store path, and each secret
    /// and template is valid, listed once, with its file in `files` under the same hash.
    fn validate(&self) -> Result<(), ManifestError> {
        let bad = |msg: String| Err(ManifestError(escape_controls(&msg)));
        if let Some(system) = &self.system {
            if !system.starts_with("/nix/store/") || system.contains(['\0', '\n']) {
                return bad(format!(
                    "system `{}` is not a /nix/store path",
                    system.escape_default()
                ));
            }
        }
        let secrets = self
            .secrets
            .iter()
            .map(|s| ("secret", s.validate(), &s.name, &s.file, &s.sha256));
        let templates = self
            .templates
            .iter()
            .map(|t| ("template", t.validate(), &t.name, &t.file, &t.sha256));
        let mut seen = std::collections::BTreeSet::new();
        for (what, valid, name, file, sha256) in secrets.chain(templates) {
            valid.map_err(|e| ManifestError(escape_controls(&e.to_string())))?;
            if !seen.insert((what, name)) {
                return bad(format!("{what} `{name}` is listed twice"));
            }
            if self.files.get(file.as_str()).map(Sha256::as_str) != Some(sha256.as_str()) {
                return bad(format!(
                    "{what} `{name}`: {file} is not in files with the same sha256"
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
        let path: BundlePath = "config/configuration.nix".parse().unwrap();
        Manifest {
            format: FORMAT,
            host: "web1".parse().unwrap(),
            generation: 1,
            created: "2026-11-26T05:00:00Z".into(),
            git_commit: None,
            system: None,
            previous: None,
            files: [(path.clone(), "ab".repeat(32).parse().unwrap())].into(),
            sizes: [(path, 42)].into(),
            secrets: Vec::new(),
            templates: Vec::new(),
        }
    }

    /// The sample's JSON with `from` replaced by `to`, parsed.
    fn parse_edited(from: &str, to: &str) -> Result<Manifest, ManifestError> {
        let text = String::from_utf8(sample().to_bytes()).unwrap();
        assert!(text.contains(from), "{text}");
        Manifest::parse(text.replacen(from, to, 1).as_bytes())
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
    fn previous_names_the_manifest_before_and_format_1_has_none() {
        let mut m = sample();
        m.previous = Some(crate::digest::Sha256::of(b"the manifest before"));
        let back = Manifest::parse(&m.to_bytes()).unwrap();
        assert_eq!(back.previous, m.previous);
        assert!(back.same_content(&sample()), "the link is not content");
        let text = String::from_utf8(sample().to_bytes())
            .unwrap()
            .replace("\"format\": 2", "\"format\": 1")
            .replace(",\n  \"previous\": null", "");
        assert!(!text.contains("previous"), "{text}");
        assert_eq!(Manifest::parse(text.as_bytes()).unwrap().previous, None);
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
            "config/a\\u0000b",
        ] {
            let files = format!("\"files\": {{\n    \"{bad}\": \"{}\",\n    ", "00".repeat(32));
            let e = parse_edited("\"files\": {\n    ", &files)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("manifest.json: path `"), "{bad}: {e}");
        }
        let e = parse_edited(&"ab".repeat(32), &"XY".repeat(32)).unwrap_err();
        assert!(e.to_string().contains("sha256 is not 64 lowercase hex"), "{e}");
        let e = parse_edited(
            "\"sizes\": {\n    ",
            "\"sizes\": {\n    \"config/other\": 1,\n    ",
        )
        .unwrap_err();
        assert!(e.to_string().contains("sizes: `config/other`"), "{e}");
        let e = parse_edited("\"format\": 2", "\"format\": 3").unwrap_err();
        assert!(e.to_string().contains("format 3"), "{e}");
        let e = parse_edited("\"previous\": null", "\"previous\": \"xyz\"").unwrap_err();
        assert!(e.to_string().contains("previous: sha256"), "{e}");
        let e = parse_edited("\"host\": \"web1\"", "\"host\": \"../x\"").unwrap_err();
        assert!(e.to_string().contains("host `../x`"), "{e}");
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
