//! An unencrypted ssh-ed25519 identity prepared once for many files.
//!
//! age's own ssh-ed25519 identity, for every stanza, hashes the key to its stanza tag,
//! converts the ed25519 seed to an X25519 secret (SHA-512), derives that secret's public
//! key (a scalar multiplication), derives the tweak (HKDF), and then runs two X25519
//! ladders: `tweak · (secret · epk)`. Here everything that depends only on the key is
//! computed once, and the two ladders are one: with `a = clamp(tweak)`, `b = clamp(secret)`
//! (both multiples of 8), `a · b · P` equals `c · P` for `c = 8 · (a · b / 8 mod ℓ)`, since
//! `c ≡ a · b (mod ℓ)` and `c ≡ 0 (mod 8)` kill the same torsion. This holds for every
//! point of the curve, which is where every honest `epk` lies.
//!
//! Any stanza this path does not open (a malformed one, or an `epk` on the twist, where the
//! shortcut does not hold) is handed to age's identity unchanged: the result is always
//! exactly age's.

use age_core::format::{FileKey, Stanza, FILE_KEY_BYTES};
use age_core::primitives::{aead_decrypt, hkdf};
use base64::prelude::{Engine, BASE64_STANDARD_NO_PAD};
use curve25519_dalek::montgomery::MontgomeryPoint;
use curve25519_dalek::scalar::{clamp_integer, Scalar};
use sha2::{Digest, Sha256, Sha512};
use zeroize::{Zeroize, Zeroizing};

const TAG: &str = "ssh-ed25519";
const LABEL: &[u8] = b"age-encryption.org/v1/ssh-ed25519";

/// An ssh-ed25519 private key with its X25519 form computed once; any stanza it cannot
/// open itself goes to `fallback` (age's identity for the same key).
pub(crate) struct SshEd25519 {
    /// The stanza tag: the first 4 bytes of SHA-256 of the public key's wire form.
    tag: [u8; 4],
    /// The X25519 public key of the converted secret (the second half of the HKDF salt).
    pk: [u8; 32],
    /// `c / 8` as a scalar mod ℓ, `c` being the single ladder's multiplier (module doc).
    eighth: Zeroizing<[u8; 32]>,
    fallback: age::ssh::Identity,
}

impl SshEd25519 {
    /// Prepares `key` (an OpenSSH private key text); `None` when it is not an unencrypted
    /// ed25519 key (age's identity is then used alone).
    pub(crate) fn new(text: &str, fallback: age::ssh::Identity) -> Option<SshEd25519> {
        let key = ssh_key::PrivateKey::from_openssh(text).ok()?;
        if key.is_encrypted() {
            return None;
        }
        let pair = key.key_data().ed25519()?;
        let wire = key.public_key().to_bytes().ok()?;
        let mut tag = [0; 4];
        tag.copy_from_slice(&Sha256::digest(&wire)[..4]);

        let mut digest = Sha512::digest(pair.private.as_ref());
        let mut secret = [0; 32];
        secret.copy_from_slice(&digest[..32]);
        digest.as_mut_slice().zeroize();
        let secret = Zeroizing::new(clamp_integer(secret));
        let pk = MontgomeryPoint::mul_base_clamped(*secret).to_bytes();
        let tweak = clamp_integer(hkdf(&wire, LABEL, &[]));

        let product = Scalar::from_bytes_mod_order(*secret) * Scalar::from_bytes_mod_order(tweak);
        let eighth = product * Scalar::from(8u8).invert();
        Some(SshEd25519 {
            tag,
            pk,
            eighth: Zeroizing::new(eighth.to_bytes()),
            fallback,
        })
    }

    /// The file key, when this stanza is for this key and opens on the fast path.
    fn unwrap_fast(&self, stanza: &Stanza) -> Option<FileKey> {
        let epk: [u8; 32] = decode_arg(stanza.args.get(1)?)?;
        // The big-endian bits of c = 8 · eighth: eighth's 253 bits, then three zeros.
        let eighth = &*self.eighth;
        let bits = (0..256)
            .rev()
            .map(|i| i >= 3 && (eighth[(i - 3) / 8] >> ((i - 3) % 8)) & 1 == 1);
        let shared = Zeroizing::new(MontgomeryPoint(epk).mul_bits_be(bits).to_bytes());
        // A small-order `epk` gives the all-zero secret, which anyone can compute: never
        // open on it here (age's own code then answers, as for any stanza not opened).
        if shared.iter().all(|b| *b == 0) {
            return None;
        }
        let mut salt = [0; 64];
        salt[..32].copy_from_slice(&epk);
        salt[32..].copy_from_slice(&self.pk);
        let key = Zeroizing::new(hkdf(&salt, LABEL, &shared[..]));
        let mut plain = aead_decrypt(&key, FILE_KEY_BYTES, &stanza.body).ok()?;
        let file_key = FileKey::init_with_mut(|k| k.copy_from_slice(&plain));
        plain.zeroize();
        Some(file_key)
    }
}

/// A base64 (no padding) stanza argument of exactly `N` bytes.
fn decode_arg<const N: usize>(arg: &str) -> Option<[u8; N]> {
    let bytes = BASE64_STANDARD_NO_PAD.decode(arg).ok()?;
    bytes.try_into().ok()
}

impl age::Identity for SshEd25519 {
    fn unwrap_stanza(&self, stanza: &Stanza) -> Option<Result<FileKey, age::DecryptError>> {
        if stanza.tag != TAG {
            return None;
        }
        if decode_arg::<4>(stanza.args.first()?)? != self.tag {
            return None;
        }
        match self.unwrap_fast(stanza) {
            Some(key) => Some(Ok(key)),
            None => self.fallback.unwrap_stanza(stanza),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use age::Identity as _;
    use age_core::secrecy::ExposeSecret;

    use super::*;

    fn key_pair(dir: &std::path::Path) -> (String, String) {
        let key = dir.join("id");
        let ok = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .expect("ssh-keygen is needed for this test");
        assert!(ok.success());
        let private = std::fs::read_to_string(&key).unwrap();
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        (private, public)
    }

    fn stanzas(public: &str, n: usize) -> Vec<(Stanza, [u8; 16])> {
        use age::Recipient as _;
        let recipient = age::ssh::Recipient::from_str(public.trim()).unwrap();
        (0..n)
            .map(|i| {
                let bytes = [i as u8; 16];
                let (mut s, _) = recipient.wrap_file_key(&FileKey::new(Box::new(bytes))).unwrap();
                (s.remove(0), bytes)
            })
            .collect()
    }

    fn copy(s: &Stanza) -> Stanza {
        Stanza {
            tag: s.tag.clone(),
            args: s.args.clone(),
            body: s.body.clone(),
        }
    }

    #[test]
    fn the_single_ladder_opens_what_age_opens_without_falling_back() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = key_pair(dir.path());
        let reference = age::ssh::Identity::from_buffer(private.as_bytes(), None).unwrap();
        let fast = SshEd25519::new(&private, reference.clone()).expect("an ed25519 key");
        for (stanza, bytes) in stanzas(&public, 20) {
            let key = fast
                .unwrap_fast(&stanza)
                .expect("the fast path opens an honest stanza");
            assert_eq!(key.expose_secret(), &bytes);
            let theirs = reference.unwrap_stanza(&stanza).unwrap().unwrap();
            assert_eq!(theirs.expose_secret(), &bytes);
        }
    }

    #[test]
    fn stanzas_it_cannot_open_get_ages_answer() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = key_pair(dir.path());
        let reference = age::ssh::Identity::from_buffer(private.as_bytes(), None).unwrap();
        let fast = SshEd25519::new(&private, reference.clone()).unwrap();
        let (good, _) = stanzas(&public, 1).remove(0);
        let mut variants = Vec::new();
        let mut body = copy(&good);
        body.body[0] ^= 1;
        variants.push(body);
        let mut short = copy(&good);
        short.body.truncate(10);
        variants.push(short);
        let mut twist = copy(&good); // another epk: the AEAD fails either way
        let mut u = [0u8; 32];
        u[0] = 2;
        twist.args[1] = BASE64_STANDARD_NO_PAD.encode(u);
        variants.push(twist);
        // A small-order epk whose body is sealed with the key of the all-zero shared
        // secret: anyone can make it, so it must get age's answer too, not the fast path's.
        let mut zero = copy(&good);
        let epk = [0u8; 32];
        zero.args[1] = BASE64_STANDARD_NO_PAD.encode(epk);
        let mut salt = [0; 64];
        salt[..32].copy_from_slice(&epk);
        salt[32..].copy_from_slice(&fast.pk);
        let key = hkdf(&salt, LABEL, &[0u8; 32]);
        zero.body = age_core::primitives::aead_encrypt(&key, &[7u8; 16]);
        assert!(
            fast.unwrap_fast(&zero).is_none(),
            "the all-zero secret is refused"
        );
        variants.push(zero);
        let mut other_tag = copy(&good);
        other_tag.args[0] = BASE64_STANDARD_NO_PAD.encode([0u8; 4]);
        variants.push(other_tag);
        for stanza in variants {
            let ours = fast
                .unwrap_stanza(&stanza)
                .map(|r| r.map(|k| *k.expose_secret()).map_err(|e| e.to_string()));
            let theirs = reference
                .unwrap_stanza(&stanza)
                .map(|r| r.map(|k| *k.expose_secret()).map_err(|e| e.to_string()));
            assert_eq!(ours, theirs);
        }
        assert!(SshEd25519::new("not a key", reference).is_none());
    }
}
