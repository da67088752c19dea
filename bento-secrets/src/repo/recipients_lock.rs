//! `secrets/recipients.lock`: what each ciphertext was last encrypted to by bento.
//!
//! age's X25519 and plugin stanzas are anonymous, so a header alone cannot prove who
//! can decrypt a file. The lock records, per secret, the SHA-256 of the ciphertext and the
//! fingerprints of the keys it was encrypted to. `verify` checks lock ⇔ file ⇔ rules:
//! a file changed behind bento's back no longer matches its hash.
//!
//! The format is TOML, one table per secret in name order, one recipient per line, so
//! diffs in review read naturally:
//!
//! ```toml
//! [db-password]
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! recipients = [
//!   "alice SHA256:uS2yR0JUHxG9E3lTWj0bT7gNeTq4pZt8b2h1m6h0e3Y",
//!   "web1 SHA256:4fK3vM1T1O9ZcJ2mT0eJ4yH3tE4pJ8Q1aR6tW0kY1bA",
//! ]
//! ```
//!
//! A generated key pair's entry also has `public_sha256`, the SHA-256 of its public part
//! (`secrets/<name>.pub`), so that a `.pub` changed by hand is noticed too.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The lock's file name, inside the secrets directory.
pub const LOCK_FILE: &str = "recipients.lock";

/// The lock's permissions: public, like the ciphertexts.
pub const LOCK_MODE: u32 = 0o644;

/// One secret's entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockEntry {
    /// Hex SHA-256 of the ciphertext file.
    pub sha256: String,
    /// `"<name> <fingerprint>"`, sorted.
    pub recipients: Vec<String>,
    /// For a generated key pair: hex SHA-256 of its public part, `secrets/<name>.pub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_sha256: Option<String>,
}

impl LockEntry {
    /// The entry for `ciphertext` encrypted to `keys` (name, fingerprint).
    pub fn new<N: AsRef<str>, F: AsRef<str>>(
        ciphertext: &[u8],
        keys: impl IntoIterator<Item = (N, F)>,
    ) -> LockEntry {
        let mut recipients: Vec<String> = keys
            .into_iter()
            .map(|(n, fp)| format!("{} {}", n.as_ref(), fp.as_ref()))
            .collect();
        recipients.sort();
        recipients.dedup();
        LockEntry {
            sha256: sha256_hex(ciphertext),
            recipients,
            public_sha256: None,
        }
    }

    /// The fingerprints it records.
    pub fn fingerprints(&self) -> BTreeSet<&str> {
        self.recipients
            .iter()
            .filter_map(|r| r.rsplit(' ').next())
            .collect()
    }
}

pub use crate::digest::sha256_hex;

/// The whole lock: secret name → entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lock {
    /// The entries, by secret name.
    pub entries: BTreeMap<String, LockEntry>,
    /// Whether the file exists at all (a fleet that never had one is checked by headers).
    pub present: bool,
}

/// The text of a lock with no entries (what `bento init` writes).
pub const HEADER: &str = "# Written by `bento secret edit` and `bento secret rekey`: what each secret was\n\
                      # last encrypted to. Checked by `bento secret verify`. Do not edit by hand.\n";

impl Lock {
    /// Reads the lock in `secrets_dir`; a missing file is an empty lock.
    pub fn load(secrets_dir: &Path, shown: &str) -> Result<Lock> {
        let path = secrets_dir.join(LOCK_FILE);
        let text = match crate::fleet_files::read_text(&path, crate::fleet_files::Kind::Toml) {
            Ok(t) => t,
            Err(e) if e.is_not_found() => return Ok(Lock::default()),
            Err(e) => return Err(e.at(shown)),
        };
        let entries = toml::from_str(&text).map_err(|e| {
            let line = e.span().map(|s| crate::toml_text::line_col(&text, s.start).0);
            Error::input(
                shown,
                line,
                format!(
                    "{}; restore it from git, or delete it and run `bento secret rekey --all`",
                    e.message().replace('\n', " ")
                ),
            )
        })?;
        Ok(Lock {
            entries,
            present: true,
        })
    }
}

/// The lock's text: one table per secret, one recipient per line (written here rather
/// than by the TOML serializer, whose layout varies by version).
pub(crate) fn render<'a>(entries: impl Iterator<Item = (&'a str, &'a LockEntry)>) -> String {
    let mut out = String::from(HEADER);
    for (name, entry) in entries {
        out.push_str("\n[");
        out.push_str(&crate::toml_text::toml_key(name));
        out.push_str("]\nsha256 = ");
        out.push_str(&quote(&entry.sha256));
        out.push_str("\nrecipients = [\n");
        for r in &entry.recipients {
            out.push_str("  ");
            out.push_str(&quote(r));
            out.push_str(",\n");
        }
        out.push_str("]\n");
        if let Some(public) = &entry.public_sha256 {
            out.push_str("public_sha256 = ");
            out.push_str(&quote(public));
            out.push('\n');
        }
    }
    out
}

/// `s` as a TOML string. Names and fingerprints need no escapes, so they are quoted
/// directly; anything else goes through the TOML encoder.
fn quote(s: &str) -> Cow<'_, str> {
    if s.chars().all(|c| c != '"' && c != '\\' && !c.is_control()) {
        Cow::Owned(format!("\"{s}\""))
    } else {
        toml::Value::String(s.to_owned()).to_string().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        let mut lock = Lock::default();
        lock.entries.insert(
            "db.v2".into(),
            LockEntry::new(b"x", [("web1", "SHA256:b"), ("alice", "SHA256:a")]),
        );
        let mut wg = LockEntry::new(b"z", [("web1", "SHA256:b")]);
        wg.public_sha256 = Some(sha256_hex(b"pub"));
        lock.entries.insert("wg".into(), wg);
        lock.entries
            .insert("gone".into(), LockEntry::new::<&str, &str>(b"y", []));
        lock.entries.remove("gone");
        let save = |lock: &Lock| {
            let text = render(lock.entries.iter().map(|(n, e)| (n.as_str(), e)));
            std::fs::write(dir.path().join(LOCK_FILE), text).unwrap();
        };
        save(&lock);
        let first = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert!(
            first.contains("[\"db.v2\"]\n") && first.contains("  \"alice SHA256:a\",\n"),
            "{first}"
        );
        let back = Lock::load(dir.path(), "recipients.lock").unwrap();
        assert_eq!(back.entries.len(), 2);
        assert_eq!(back.entries["wg"].public_sha256, Some(sha256_hex(b"pub")));
        assert!(first.contains("\npublic_sha256 = \""), "{first}");
        assert!(back.present);
        save(&back);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap(),
            first
        );
        assert_eq!(quote("a b"), "\"a b\"");
        for odd in ["a\"b", "a\\b", "a\nb\u{7f}"] {
            let table: toml::Table = toml::from_str(&format!("x = {}", quote(odd))).unwrap();
            assert_eq!(table["x"].as_str(), Some(odd));
        }
        assert_eq!(
            back.entries["db.v2"].fingerprints(),
            ["SHA256:a", "SHA256:b"].into_iter().collect()
        );
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    fn entry() -> impl Strategy<Value = LockEntry> {
        (any::<String>(), any::<Vec<String>>(), any::<Option<String>>()).prop_map(
            |(sha256, recipients, public_sha256)| LockEntry {
                sha256,
                recipients,
                public_sha256,
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::with_cases(
                std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(500),
            )
        })]

        /// Whatever names and strings a lock holds, its text parses back to it.
        #[test]
        fn lock_render_round_trips(entries in proptest::collection::btree_map(any::<String>(), entry(), 0..4)) {
            let text = render(entries.iter().map(|(n, e)| (n.as_str(), e)));
            let back: BTreeMap<String, LockEntry> = toml::from_str(&text).unwrap();
            prop_assert_eq!(back, entries);
        }

        /// A lock file of any text loads or fails with one line.
        #[test]
        fn lock_any_text_is_one_error_line(text in ".{0,200}") {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(LOCK_FILE), &text).unwrap();
            if let Err(e) = Lock::load(dir.path(), "recipients.lock") {
                prop_assert!(!e.to_string().contains('\n'), "{e}");
            }
        }
    }

    /// Regression: a name the value encoder would write as a multi-line string was
    /// written as an invalid table header.
    #[test]
    fn an_odd_name_is_a_valid_table_header() {
        let name = "x\"\ny'''";
        let text = format!("[{}]\nk = 1\n", crate::toml_text::toml_key(name));
        let table: toml::Table = toml::from_str(&text).unwrap();
        assert!(table.contains_key(name), "{text}");
    }
}
