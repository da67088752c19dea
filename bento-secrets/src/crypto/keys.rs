//! Public keys that secrets are encrypted to: the lines of `keys/hosts/*.pub` and
//! `keys/admins/*.pub`.
//!
//! A [`RecipientKey`] is one parsed line. It knows how to become an age recipient, and
//! how to recognise its own stanza in an age header without any private key (the 4-byte
//! tag that age puts in ssh stanzas), which is what `bento secret verify` builds on.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use base64::prelude::{Engine, BASE64_STANDARD, BASE64_STANDARD_NO_PAD};
use sha2::{Digest, Sha256};

use crate::error::Error;

/// What kind of age recipient a key line is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyKind {
    /// `ssh-ed25519 AAAA…`
    SshEd25519,
    /// `ssh-rsa AAAA…`
    SshRsa,
    /// `age1…`: a native X25519 age recipient.
    X25519,
    /// `age1<plugin>1…`: a recipient handled by the binary `age-plugin-<plugin>`.
    Plugin(String),
}

/// Why a line is not a recipient key; the line is quoted shortened and escaped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// An `age1…` line that does not decode.
    #[error("`{}` is not a valid age recipient (bad bech32 encoding)", short(.0))]
    BadAge(String),
    /// An age identity (private) where a recipient belongs.
    #[error(
        "this is a PRIVATE age identity, not a public recipient; \
         put its `age-keygen -y` output here instead and keep the identity secret"
    )]
    PrivateAge,
    /// Some other private key where a public one belongs.
    #[error("this is a PRIVATE key; put the `.pub` line here instead")]
    Private,
    /// None of the recipient forms.
    #[error(
        "`{}` is not a recipient: expected `ssh-ed25519 …`, `ssh-rsa …`, `age1…` or an age plugin recipient",
        short(.0)
    )]
    NotARecipient(String),
    /// An ssh-rsa key below 2048 bits.
    #[error("ssh-rsa key is weaker than 2048 bits; use ed25519")]
    RsaTooSmall,
    /// An ssh-rsa key above 4096 bits.
    #[error("ssh-rsa key is larger than 4096 bits")]
    RsaTooLarge,
    /// An ssh key type age cannot encrypt to.
    #[error("{0} keys cannot be age recipients; use an ssh-ed25519 or ssh-rsa key")]
    UnsupportedSsh(String),
    /// An `ssh-…` line that does not parse.
    #[error("`{}` is not a valid ssh public key", short(.0))]
    BadSsh(String),
}

/// One public key that secrets can be encrypted to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecipientKey {
    kind: KeyKind,
    /// The canonical text: `ssh-ed25519 AAAA…` (no comment) or the `age1…` string.
    text: String,
    /// [`RecipientKey::fingerprint`], computed once: verify and rekey ask for it per secret.
    fingerprint: String,
    /// [`RecipientKey::ssh_tag`], computed once.
    tag: Option<String>,
}

impl RecipientKey {
    /// Parses one recipient line (a trailing ssh comment is allowed and dropped).
    pub fn parse(line: &str) -> Result<Self, KeyError> {
        let line = line.trim();
        if line.starts_with("ssh-") {
            return parse_ssh(line);
        }
        if line.starts_with("age1") {
            if let Ok(r) = age::x25519::Recipient::from_str(line) {
                return Ok(RecipientKey::new(KeyKind::X25519, r.to_string()));
            }
            if let Ok(r) = age::plugin::Recipient::from_str(line) {
                let plugin = r.plugin().to_owned();
                return Ok(RecipientKey::new(KeyKind::Plugin(plugin), r.to_string()));
            }
            return Err(KeyError::BadAge(line.to_owned()));
        }
        if line.starts_with("AGE-SECRET-KEY-") || line.starts_with("AGE-PLUGIN-") {
            return Err(KeyError::PrivateAge);
        }
        if line.contains("PRIVATE KEY") {
            return Err(KeyError::Private);
        }
        Err(KeyError::NotARecipient(line.to_owned()))
    }

    /// The key type as written in key files: `ssh-ed25519`, `ssh-rsa`, `age`, or the plugin.
    pub fn kind_name(&self) -> String {
        match &self.kind {
            KeyKind::SshEd25519 => "ssh-ed25519".into(),
            KeyKind::SshRsa => "ssh-rsa".into(),
            KeyKind::X25519 => "age".into(),
            KeyKind::Plugin(p) => format!("age-plugin-{p}"),
        }
    }

    /// The kind of recipient.
    pub fn kind(&self) -> &KeyKind {
        &self.kind
    }

    /// The canonical text of the key (what age and `age -R` accept).
    pub fn text(&self) -> &str {
        &self.text
    }

    fn new(kind: KeyKind, text: String) -> RecipientKey {
        let wire = match kind {
            KeyKind::SshEd25519 | KeyKind::SshRsa => text
                .split_whitespace()
                .nth(1)
                .and_then(|b64| BASE64_STANDARD.decode(b64).ok()),
            _ => None,
        };
        let digest = match &wire {
            Some(wire) => Sha256::digest(wire),
            None => Sha256::digest(text.as_bytes()),
        };
        RecipientKey {
            fingerprint: format!("SHA256:{}", BASE64_STANDARD_NO_PAD.encode(digest)),
            tag: wire.as_deref().map(ssh_tag_of_wire),
            kind,
            text,
        }
    }

    /// The tag age writes in this key's stanzas: `base64_nopad(SHA-256(wire)[..4])`.
    ///
    /// Only ssh keys have one; X25519 and plugin stanzas are anonymous.
    pub fn ssh_tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// A stable fingerprint: `SHA256:…` of the ssh wire key (like `ssh-keygen -l`), or of
    /// the recipient string for age keys.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

impl fmt::Display for RecipientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The stanza tag of an ssh public key given in wire encoding.
pub fn ssh_tag_of_wire(wire: &[u8]) -> String {
    BASE64_STANDARD_NO_PAD.encode(&Sha256::digest(wire)[..4])
}

fn parse_ssh(line: &str) -> Result<RecipientKey, KeyError> {
    use age::ssh::ParseRecipientKeyError as E;
    let key_type = line.split_whitespace().next().unwrap_or_default();
    match age::ssh::Recipient::from_str(line) {
        Ok(r) => {
            let kind = if key_type == "ssh-rsa" {
                KeyKind::SshRsa
            } else {
                KeyKind::SshEd25519
            };
            Ok(RecipientKey::new(kind, r.to_string()))
        }
        Err(E::RsaModulusTooSmall) => Err(KeyError::RsaTooSmall),
        Err(E::RsaModulusTooLarge) => Err(KeyError::RsaTooLarge),
        Err(E::Unsupported(t)) => Err(KeyError::UnsupportedSsh(t)),
        Err(_) => Err(KeyError::BadSsh(line.to_owned())),
    }
}

/// The first characters of a line, for error messages (keys are public, but long).
fn short(line: &str) -> String {
    let mut s: String = line.chars().take(40).collect();
    if line.chars().count() > 40 {
        s.push('…');
    }
    crate::error::escape_controls(&s)
}

/// Reads a key file: one recipient per non-empty line, `#` comments allowed.
///
/// Errors name the file and line and say what is expected.
pub fn read_key_file(path: &Path, shown: &str) -> Result<Vec<RecipientKey>, Error> {
    let text = crate::fleet_files::read_text(path, crate::fleet_files::Kind::Key).map_err(|e| e.at(shown))?;
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = RecipientKey::parse(line).map_err(|e| Error::input(shown, Some(i + 1), e.to_string()))?;
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(Error::input(
            shown,
            None,
            "holds no key; put the public key line in it",
        ));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN alice@rust";

    #[test]
    fn ssh_line_drops_comment_and_has_tag() {
        let k = RecipientKey::parse(ED).unwrap();
        assert_eq!(k.kind(), &KeyKind::SshEd25519);
        assert!(!k.text().contains("alice"));
        assert_eq!(k.ssh_tag().unwrap().len(), 6);
        assert!(k.fingerprint().starts_with("SHA256:"));
    }

    #[test]
    fn private_material_is_refused_with_a_hint() {
        let e = RecipientKey::parse("AGE-SECRET-KEY-1QQQ")
            .unwrap_err()
            .to_string();
        assert!(e.contains("PRIVATE"), "{e}");
        let e = RecipientKey::parse("hello world").unwrap_err().to_string();
        assert!(e.contains("expected `ssh-ed25519"), "{e}");
    }

    #[test]
    fn x25519_recipient() {
        let id = age::x25519::Identity::generate();
        let k = RecipientKey::parse(&id.to_public().to_string()).unwrap();
        assert_eq!(k.kind(), &KeyKind::X25519);
        assert!(k.ssh_tag().is_none());
    }
}
