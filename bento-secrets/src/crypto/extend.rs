//! Adding recipients to an age file without re-encrypting its payload.
//!
//! When a host joins a group, every secret of the group must become readable by it, and
//! nothing else changes. Like sops' `updatekeys`, bento then keeps the file key: it
//! unwraps it with the admin's identity (checking the header MAC, as age does), wraps it
//! for the new keys only, and writes a new header (the old stanzas byte for byte, the new
//! ones, a fresh header MAC) in front of the unchanged payload. The result is a standard age file. Removing a recipient is never done this
//! way: it always re-encrypts under a new file key.

use std::io::Write;

use age::armor::{ArmoredWriter, Format};
use hmac::Mac;

use crate::crypt::{age_recipients, decrypt_error};
use crate::error::{Error, Result};
use crate::format::{self, Header, MAC_TAG};
use crate::identity::Identities;
use crate::keys::RecipientKey;

/// Returns `ciphertext` readable also by `add`, with the same file key and payload.
/// `who` says who can decrypt it (for the error when no identity matches).
pub fn add_recipients(
    ciphertext: &[u8],
    ids: &Identities,
    add: &[&RecipientKey],
    armor: bool,
    shown: &str,
    who: &str,
) -> Result<Vec<u8>> {
    let corrupt = |detail: &str| Error::Corrupt {
        file: shown.to_owned(),
        detail: detail.to_owned(),
    };
    let binary = format::dearmor(ciphertext).map_err(|e| corrupt(&e.to_string()))?;
    let file = Header::parse(&binary).map_err(|e| corrupt(&e.to_string()))?;

    // The file key, from the first identity that opens a stanza; the header MAC then
    // proves the header is the one it was written with. The payload is left as it is.
    let file_key = ids
        .iter()
        .find_map(|id| id.unwrap_stanzas(&file.stanzas))
        .unwrap_or(Err(age::DecryptError::NoMatchingKeys))
        .map_err(|e| decrypt_error(e, ids, shown, who))?;
    format::header_mac(&file_key, file.authenticated)
        .verify_slice(&file.mac)
        .map_err(|_| decrypt_error(age::DecryptError::InvalidMac, ids, shown, who))?;

    // Old stanzas byte for byte, then the new ones, then a MAC over all of it.
    let mut header = file.authenticated[..file.authenticated.len() - MAC_TAG.len()].to_vec();
    for recipient in age_recipients(add, shown)? {
        let (new, labels) = recipient.wrap_file_key(&file_key).map_err(|e| Error::Encrypt {
            file: shown.to_owned(),
            detail: e.to_string(),
        })?;
        if !labels.is_empty() {
            return Err(Error::Encrypt {
                file: shown.to_owned(),
                detail: "a recipient with labels cannot be added to an existing file".into(),
            });
        }
        for s in &new {
            format::write_stanza(&mut header, s).map_err(|e| Error::Encrypt {
                file: shown.to_owned(),
                detail: e.to_string(),
            })?;
        }
    }
    header.extend_from_slice(MAC_TAG);
    format::write_mac(&mut header, &file_key);
    let payload = file.payload;

    let mut out = Vec::with_capacity(header.len() + payload.len() + 64);
    let format = if armor { Format::AsciiArmor } else { Format::Binary };
    let io = |e: std::io::Error| Error::Encrypt {
        file: shown.to_owned(),
        detail: e.to_string(),
    };
    let mut w = ArmoredWriter::wrap_output(&mut out, format).map_err(io)?;
    w.write_all(&header)
        .and_then(|()| w.write_all(payload))
        .map_err(io)?;
    w.finish().map_err(io)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use age_core::secrecy::ExposeSecret;

    use super::*;
    use crate::crypt;

    fn identity_file(dir: &std::path::Path, name: &str, id: &age::x25519::Identity) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, id.to_string().expose_secret()).unwrap();
        path
    }

    #[test]
    fn added_keys_decrypt_old_keys_still_do_and_payload_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (
            age::x25519::Identity::generate(),
            age::x25519::Identity::generate(),
        );
        let old_key = RecipientKey::parse(&old.to_public().to_string()).unwrap();
        let new_key = RecipientKey::parse(&new.to_public().to_string()).unwrap();
        let ids_old = Identities::load_with(
            &[identity_file(dir.path(), "old", &old)],
            Arc::new(crate::prompt::Terminal),
        )
        .unwrap();
        let ids_new = Identities::load_with(
            &[identity_file(dir.path(), "new", &new)],
            Arc::new(crate::prompt::Terminal),
        )
        .unwrap();
        for armor in [false, true] {
            let file = crypt::encrypt(b"the secret", &[&old_key], armor, "t").unwrap();
            assert!(crypt::decrypt(&file, &ids_new, "t", "x").is_err());
            let extended = add_recipients(&file, &ids_old, &[&new_key], armor, "t", "x").unwrap();
            for ids in [&ids_old, &ids_new] {
                assert_eq!(
                    &crypt::decrypt(&extended, ids, "t", "x").unwrap()[..],
                    b"the secret"
                );
            }
            let stanzas = format::stanzas(&extended).unwrap();
            assert_eq!(stanzas.iter().filter(|s| s.tag == "X25519").count(), 2);
            if !armor {
                let payload = |f: &[u8]| Header::parse(f).unwrap().payload.to_vec();
                assert_eq!(
                    payload(&file),
                    payload(&extended),
                    "the payload is not re-encrypted"
                );
            }
        }
        // A header changed after it was written fails its MAC, and nothing is produced.
        let file = crypt::encrypt(b"x", &[&old_key], false, "t").unwrap();
        let mac_at = file.windows(4).position(|w| w == b"--- ").unwrap() + 4;
        let mut tampered = file.clone();
        tampered[mac_at] = if tampered[mac_at] == b'A' { b'B' } else { b'A' };
        match add_recipients(&tampered, &ids_old, &[&new_key], false, "t.age", "x") {
            Err(Error::Corrupt { file, detail }) => {
                assert_eq!(file, "t.age");
                assert!(detail.contains("MAC"), "{detail}");
            }
            other => panic!("a tampered MAC was accepted: {other:?}"),
        }
        let truncated = &file[..mac_at - 6];
        assert!(matches!(
            add_recipients(truncated, &ids_old, &[&new_key], false, "t", "x"),
            Err(Error::Corrupt { .. })
        ));
        // Without the right identity there is nothing to extend.
        let file = crypt::encrypt(b"x", &[&new_key], false, "t").unwrap();
        assert!(matches!(
            add_recipients(&file, &ids_old, &[&old_key], false, "t", "x"),
            Err(Error::NoMatchingIdentity { .. })
        ));
    }
}
