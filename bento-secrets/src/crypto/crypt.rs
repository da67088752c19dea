//! age encryption and decryption of whole secrets, in memory.
//!
//! Output is a standard age file (binary, or armored on request) that `age -d` and
//! `rage -d` read; input may be binary or armored.

use std::collections::BTreeMap;
use std::io::Write;
use std::str::FromStr;

use age::armor::{ArmoredReader, ArmoredWriter, Format};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::identity::Identities;
use crate::keys::{KeyKind, RecipientKey};
use crate::plaintext::read_all;
use crate::prompt::Terminal;

/// Encrypts `plaintext` to every key in `keys`. `shown` names the file in errors.
pub fn encrypt(plaintext: &[u8], keys: &[&RecipientKey], armor: bool, shown: &str) -> Result<Vec<u8>> {
    let recipients = age_recipients(keys, shown)?;
    let encryptor = age::Encryptor::with_recipients(recipients.iter().map(|r| r.as_ref()))
        .map_err(|e| encrypt_error(shown, one_line(&e.to_string())))?;
    let mut out = Vec::with_capacity(plaintext.len() + 256 * keys.len() + 64);
    let format = if armor { Format::AsciiArmor } else { Format::Binary };
    let io_fail = |e: std::io::Error| encrypt_error(shown, e.to_string());
    let armored = ArmoredWriter::wrap_output(&mut out, format).map_err(io_fail)?;
    let mut writer = encryptor.wrap_output(armored).map_err(io_fail)?;
    writer.write_all(plaintext).map_err(io_fail)?;
    writer.finish().and_then(|w| w.finish()).map_err(io_fail)?;
    Ok(out)
}

fn encrypt_error(shown: &str, detail: String) -> Error {
    Error::Encrypt {
        file: shown.to_owned(),
        detail,
    }
}

/// The age recipients for `keys`; plugin recipients are grouped per plugin binary.
pub(crate) fn age_recipients(keys: &[&RecipientKey], shown: &str) -> Result<Vec<Box<dyn age::Recipient>>> {
    let fail = |detail: String| encrypt_error(shown, detail);
    let mut recipients: Vec<Box<dyn age::Recipient>> = Vec::new();
    let mut plugins: BTreeMap<&str, Vec<age::plugin::Recipient>> = BTreeMap::new();
    for key in keys {
        match key.kind() {
            KeyKind::SshEd25519 | KeyKind::SshRsa => {
                let r = age::ssh::Recipient::from_str(key.text()).map_err(|e| fail(format!("{e:?}")))?;
                recipients.push(Box::new(r));
            }
            KeyKind::X25519 => {
                let r = age::x25519::Recipient::from_str(key.text()).map_err(|e| fail(e.to_owned()))?;
                recipients.push(Box::new(r));
            }
            KeyKind::Plugin(name) => {
                let r = age::plugin::Recipient::from_str(key.text()).map_err(|e| fail(e.to_owned()))?;
                plugins.entry(name).or_default().push(r);
            }
        }
    }
    for (name, list) in plugins {
        let plugin =
            age::plugin::RecipientPluginV1::new(name, &list, &[], Terminal).map_err(|e| match e {
                age::plugin::ResolveError::MissingPlugin { binary_name } => Error::MissingPlugin {
                    what: format!("encrypting {shown} to {}", list[0]),
                    binary: binary_name,
                },
                other => fail(other.to_string()),
            })?;
        recipients.push(Box::new(plugin));
    }
    Ok(recipients)
}

/// Decrypts an age file held in memory. `shown` names the file, `who` says who can
/// decrypt it (for the error when no identity matches).
pub fn decrypt(ciphertext: &[u8], ids: &Identities, shown: &str, who: &str) -> Result<Zeroizing<Vec<u8>>> {
    let corrupt = |detail: String| Error::Corrupt {
        file: shown.to_owned(),
        detail,
    };
    let decryptor = age::Decryptor::new_buffered(ArmoredReader::new(ciphertext)).map_err(|e| match e {
        age::DecryptError::Io(io) => corrupt(format!("unreadable age header ({io})")),
        other => corrupt(format!("bad age header ({})", one_line(&other.to_string()))),
    })?;
    let reader = decryptor
        .decrypt(ids.iter())
        .map_err(|e| decrypt_error(e, ids, shown, who))?;
    read_all(reader, ciphertext.len()).map_err(|e| corrupt(format!("payload does not decrypt ({e})")))
}

/// One clear error for a failed decryption.
pub(crate) fn decrypt_error(e: age::DecryptError, ids: &Identities, shown: &str, who: &str) -> Error {
    let corrupt = |detail: String| Error::Corrupt {
        file: shown.to_owned(),
        detail,
    };
    match e {
        age::DecryptError::NoMatchingKeys => Error::NoMatchingIdentity {
            file: shown.to_owned(),
            tried: ids.describe(),
            hint: format!("it is meant for {who}; pass -i with one of their private keys"),
        },
        age::DecryptError::KeyDecryptionFailed => Error::Passphrase {
            file: shown.to_owned(),
            msg: ids.locked_out().unwrap_or_else(|| {
                "the passphrase-protected key that matches it could not be unlocked".into()
            }),
        },
        age::DecryptError::PluginResolve(age::plugin::ResolveError::MissingPlugin { binary_name }) => {
            Error::MissingPlugin {
                what: format!("decrypting {shown}"),
                binary: binary_name,
            }
        }
        age::DecryptError::InvalidMac => corrupt("header MAC mismatch".into()),
        age::DecryptError::DecryptionFailed => corrupt("decryption failed".into()),
        other => corrupt(one_line(&other.to_string())),
    }
}

pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use std::sync::Arc;

    use zeroize::Zeroizing;

    use super::*;
    use crate::keys::RecipientKey;
    use crate::prompt::Prompt;

    struct Counting(AtomicUsize);
    impl Prompt for Counting {
        fn passphrase(&self, _: &str) -> Option<Zeroizing<String>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Some(Zeroizing::new("s3cret".into()))
        }
    }

    #[test]
    fn locked_key_is_unlocked_once_for_many_files() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id");
        let ok = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "s3cret", "-f"])
            .arg(&key)
            .status()
            .expect("ssh-keygen is needed for this test");
        assert!(ok.success());
        let public =
            RecipientKey::parse(&std::fs::read_to_string(key.with_extension("pub")).unwrap()).unwrap();
        let other = age::x25519::Identity::generate();
        let other_key = RecipientKey::parse(&other.to_public().to_string()).unwrap();

        let prompt = Arc::new(Counting(AtomicUsize::new(0)));
        let ids = Identities::load_with(std::slice::from_ref(&key), prompt.clone()).unwrap();
        // A file not meant for the locked key does not trigger a prompt.
        let foreign = encrypt(b"x", &[&other_key], false, "f").unwrap();
        assert!(decrypt(&foreign, &ids, "f", "someone").is_err());
        assert_eq!(prompt.0.load(Ordering::SeqCst), 0);

        for i in 0..5 {
            let file = encrypt(format!("n{i}").as_bytes(), &[&public], i % 2 == 0, "f").unwrap();
            let plain = decrypt(&file, &ids, "f", "me").unwrap();
            assert_eq!(&plain[..], format!("n{i}").as_bytes());
        }
        assert_eq!(prompt.0.load(Ordering::SeqCst), 1);
    }
}
