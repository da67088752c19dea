//! Generated secrets: the `generate = "<kind>"` key of a secret, and making a fresh value
//! of each kind from the operating system's CSPRNG.
//!
//! Values that are one token (passwords, hex, base64, WireGuard keys) carry no trailing
//! newline, so a template can place them inside a line; key files (OpenSSH, age) end with
//! one, as their tools write them. Key pairs also give a public part, one line, which
//! `bento secret generate` writes to `secrets/<name>.pub`.

use age_core::secrecy::ExposeSecret;
use base64::Engine;
use ssh_key::rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::fleet_lock::FleetLock;
pub use crate::generator_kind::{Kind, KINDS, MAX_LEN};
use crate::identity::Identities;
use crate::recipients_lock::{Lock, LockEntry, LOCK_FILE};
use crate::rules::SecretRule;
use crate::store;

/// The characters of a generated password.
const PASSWORD_ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A freshly generated secret.
pub struct Generated {
    /// The secret itself, as it will be encrypted.
    pub secret: Zeroizing<Vec<u8>>,
    /// The public part, one line ending in a newline, for key pairs.
    pub public: Option<String>,
}

/// Why a secret could not be made, or its public part derived.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GenerateError {
    /// The OS random source failed.
    #[error("reading the OS random source: {0}")]
    Random(#[source] ssh_key::rand_core::Error),
    /// Making or encoding an OpenSSH key failed (`what`: which step).
    #[error("{what}: {source}")]
    SshKey {
        /// The step, e.g. `making an ed25519 key`.
        what: &'static str,
        /// Why.
        #[source]
        source: ssh_key::Error,
    },
    /// The secret is not UTF-8 text.
    #[error("not a {0} key (not UTF-8)")]
    NotUtf8(Kind),
    /// The secret is not an OpenSSH private key.
    #[error("not a {kind} key: {source}")]
    NotOpenSsh {
        /// The kind expected.
        kind: Kind,
        /// Why.
        #[source]
        source: ssh_key::Error,
    },
    /// The secret is not a key of `kind`, for the reason given.
    #[error("not a {kind} key: {why}")]
    NotAKey {
        /// The kind expected.
        kind: Kind,
        /// Why: `not base64`, `not 32 bytes`, or age's reason.
        why: &'static str,
    },
    /// The kind has no public part to derive.
    #[error("{0} has no public part")]
    NoPublic(Kind),
}

/// Makes a fresh secret of `kind` from the OS CSPRNG.
pub fn generate(kind: Kind) -> std::result::Result<Generated, GenerateError> {
    let secret_only = |secret| Generated { secret, public: None };
    Ok(match kind {
        Kind::Password(n) => secret_only(password(n)?),
        Kind::Hex(n) => {
            let bytes = random_bytes(n)?;
            let mut out = Zeroizing::new(Vec::with_capacity(2 * n));
            // Digit by digit into the sized buffer: no temporary string holds any of it.
            const HEX: &[u8; 16] = b"0123456789abcdef";
            for b in bytes.iter() {
                out.extend_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
            }
            secret_only(out)
        }
        Kind::Base64(n) => {
            let bytes = random_bytes(n)?;
            let text = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&bytes[..]));
            secret_only(Zeroizing::new(text.as_bytes().to_vec()))
        }
        Kind::SshEd25519 => {
            let failed = |what| move |source| GenerateError::SshKey { what, source };
            let key = ssh_key::PrivateKey::random(&mut OsRng, ssh_key::Algorithm::Ed25519)
                .map_err(failed("making an ed25519 key"))?;
            let private = key
                .to_openssh(ssh_key::LineEnding::LF)
                .map_err(failed("encoding the ed25519 key"))?;
            let public = key
                .public_key()
                .to_openssh()
                .map_err(failed("encoding the ed25519 public key"))?;
            Generated {
                secret: Zeroizing::new(private.as_bytes().to_vec()),
                public: Some(format!("{public}\n")),
            }
        }
        Kind::Wireguard => {
            let mut bytes = Zeroizing::new([0u8; 32]);
            OsRng
                .try_fill_bytes(&mut bytes[..])
                .map_err(GenerateError::Random)?;
            // Clamped as `wg genkey` does (RFC 7748).
            bytes[0] &= 248;
            bytes[31] = (bytes[31] & 127) | 64;
            let secret = x25519_dalek::StaticSecret::from(*bytes);
            let public = x25519_dalek::PublicKey::from(&secret);
            let b64 = base64::engine::general_purpose::STANDARD;
            Generated {
                secret: Zeroizing::new(b64.encode(&bytes[..]).into_bytes()),
                public: Some(format!("{}\n", b64.encode(public.as_bytes()))),
            }
        }
        Kind::Age => {
            let identity = age::x25519::Identity::generate();
            let text = identity.to_string();
            // Sized for the newline too: a push past capacity would reallocate and leave the
            // key behind in freed memory.
            let key = text.expose_secret().as_bytes();
            let mut secret = Zeroizing::new(Vec::with_capacity(key.len() + 1));
            secret.extend_from_slice(key);
            secret.push(b'\n');
            Generated {
                secret,
                public: Some(format!("{}\n", identity.to_public())),
            }
        }
    })
}

fn random_bytes(n: usize) -> std::result::Result<Zeroizing<Vec<u8>>, GenerateError> {
    let mut bytes = Zeroizing::new(vec![0u8; n]);
    OsRng.try_fill_bytes(&mut bytes).map_err(GenerateError::Random)?;
    Ok(bytes)
}

/// `n` characters of `A-Z a-z 0-9`, without modulo bias: random bytes of 248 and above
/// (248 = 4 × 62) are thrown away, so each remaining byte maps to one of 62 characters
/// exactly 4 ways.
fn password(n: usize) -> std::result::Result<Zeroizing<Vec<u8>>, GenerateError> {
    let mut out = Zeroizing::new(Vec::with_capacity(n));
    while out.len() < n {
        let batch = random_bytes(n - out.len() + 16)?;
        for &b in batch.iter() {
            if out.len() == n {
                break;
            }
            if usize::from(b) < 4 * PASSWORD_ALPHABET.len() {
                out.push(PASSWORD_ALPHABET[usize::from(b) % PASSWORD_ALPHABET.len()]);
            }
        }
    }
    Ok(out)
}

/// The public part of an existing secret of `kind` (to write a lost `.pub` again).
pub fn derive_public(kind: Kind, secret: &[u8]) -> std::result::Result<String, GenerateError> {
    let text = std::str::from_utf8(secret).map_err(|_| GenerateError::NotUtf8(kind))?;
    let not_openssh = |source| GenerateError::NotOpenSsh { kind, source };
    let not_a_key = |why| GenerateError::NotAKey { kind, why };
    match kind {
        Kind::SshEd25519 => {
            let key = ssh_key::PrivateKey::from_openssh(text).map_err(not_openssh)?;
            let line = key.public_key().to_openssh().map_err(not_openssh)?;
            Ok(format!("{line}\n"))
        }
        Kind::Wireguard => {
            let b64 = base64::engine::general_purpose::STANDARD;
            let bytes = Zeroizing::new(b64.decode(text.trim()).map_err(|_| not_a_key("not base64"))?);
            let array: [u8; 32] = bytes[..].try_into().map_err(|_| not_a_key("not 32 bytes"))?;
            let secret = x25519_dalek::StaticSecret::from(array);
            Ok(format!(
                "{}\n",
                b64.encode(x25519_dalek::PublicKey::from(&secret).as_bytes())
            ))
        }
        Kind::Age => {
            let identity: age::x25519::Identity = text.trim().parse().map_err(not_a_key)?;
            Ok(format!("{}\n", identity.to_public()))
        }
        Kind::Password(_) | Kind::Hex(_) | Kind::Base64(_) => Err(GenerateError::NoPublic(kind)),
    }
}

/// What `bento secret generate` did with one secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A new secret was made (with its `.pub`, for a key pair), encrypted to `keys` keys.
    Generated {
        /// Its kind.
        kind: Kind,
        /// How many keys it is encrypted to.
        keys: usize,
    },
    /// It exists and was left alone (pass `--force` to replace it).
    Kept,
    /// It exists; its `.pub`, missing or not the one the lock records, was written again
    /// from the secret.
    PublicRestored,
}

/// The secrets `bento secret generate NAMES` works on: the named ones (each must have a
/// `generate` kind), else every secret with a kind that has no file yet (all of them
/// with `force`).
pub fn select<'a>(fleet: &'a Fleet, names: &[String], force: bool) -> Result<Vec<&'a SecretRule>> {
    if names.is_empty() {
        let mut out = Vec::new();
        for rule in fleet.rules.secrets.values().filter(|r| r.generate.is_some()) {
            if force || store::read_ciphertext(fleet, rule)?.is_none() {
                out.push(rule);
            }
        }
        return Ok(out);
    }
    names
        .iter()
        .map(|name| {
            let rule = fleet.rule(name)?;
            rule.generate.map(|_| rule).ok_or_else(|| Error::NotGenerated {
                name: name.clone(),
                rules: crate::fleet::RULES_FILE.to_owned(),
            })
        })
        .collect()
}

/// Generates `targets` (see [`select`]) under the fleet lock: a secret that exists is
/// replaced only with `force`; without it, only a lost `.pub` is written again, from the
/// secret decrypted with `ids`. The lock is updated once, for everything written, even
/// when a later secret fails.
pub fn run(
    fleet: &Fleet,
    held: &FleetLock,
    targets: &[&SecretRule],
    force: bool,
    ids: &dyn Fn() -> Result<Identities>,
) -> Result<Vec<(String, Outcome)>> {
    let lock = Lock::load(fleet.secrets_dir(), &fleet.shown_in_secrets(LOCK_FILE))?;
    let mut entries: Vec<(String, LockEntry)> = Vec::new();
    let mut outcomes = Vec::new();
    let mut loaded: Option<Identities> = None;
    let result = targets.iter().try_for_each(|rule| {
        let (outcome, entry) = one(fleet, held, rule, force, &lock, &mut loaded, ids)?;
        entries.extend(entry.map(|e| (rule.name.clone(), e)));
        outcomes.push((rule.name.clone(), outcome));
        Ok(())
    });
    store::record_onto(
        fleet,
        held,
        &lock,
        entries.iter().map(|(n, e)| (n.as_str(), e)),
        false,
    )?;
    result.map(|()| outcomes)
}

/// One secret of [`run`]: its outcome and the lock entry to record, if any.
fn one(
    fleet: &Fleet,
    held: &FleetLock,
    rule: &SecretRule,
    force: bool,
    lock: &Lock,
    loaded: &mut Option<Identities>,
    load: &dyn Fn() -> Result<Identities>,
) -> Result<(Outcome, Option<LockEntry>)> {
    let Some(kind) = rule.generate else {
        return Err(Error::NotGenerated {
            name: rule.name.clone(),
            rules: crate::fleet::RULES_FILE.to_owned(),
        });
    };
    let existing = store::read_ciphertext(fleet, rule)?;
    if let (Some(ciphertext), false) = (existing, force) {
        if !kind.has_public() {
            return Ok((Outcome::Kept, None));
        }
        let entry = lock
            .entries
            .get(&rule.name)
            .filter(|e| e.sha256 == crate::recipients_lock::sha256_hex(&ciphertext));
        let public = store::read_public(fleet, rule)?;
        let intact = match (&public, entry.and_then(|e| e.public_sha256.as_ref())) {
            (None, _) => false,
            (Some(bytes), Some(recorded)) => crate::recipients_lock::sha256_hex(bytes) == *recorded,
            (Some(_), None) => true,
        };
        if intact {
            return Ok((Outcome::Kept, None));
        }
        let sealed = store::open(fleet, &rule.name)?;
        if loaded.is_none() {
            *loaded = Some(load()?);
        }
        let secret = sealed.decrypt(loaded.as_ref().expect("just loaded"))?;
        let line = derive_public(kind, &secret).map_err(|detail| Error::Generate {
            file: sealed.shown.clone(),
            detail: format!(
                "{detail}; replace it with `bento secret generate --force {}`",
                rule.name
            ),
        })?;
        let hash = store::write_public(fleet, held, rule, &line)?;
        let entry = entry.cloned().map(|mut e| {
            e.public_sha256 = Some(hash);
            e
        });
        return Ok((Outcome::PublicRestored, entry));
    }
    let made = generate(kind).map_err(|e| Error::Generate {
        file: fleet.secret_shown(rule),
        detail: e.to_string(),
    })?;
    let mut entry = store::write(fleet, held, rule, &made.secret)?;
    if let Some(line) = &made.public {
        entry.public_sha256 = Some(store::write_public(fleet, held, rule, line)?);
    }
    let keys = entry.recipients.len();
    Ok((Outcome::Generated { kind, keys }, Some(entry)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_strictly_and_print_back() {
        for ok in [
            "password:32",
            "hex:1",
            "base64:4096",
            "ssh-ed25519",
            "wireguard",
            "age",
        ] {
            assert_eq!(Kind::parse(ok).unwrap().to_string(), ok);
        }
        for bad in [
            "password",
            "password:",
            "password:0",
            "password:4097",
            "password:-1",
            "hex:x",
            "pass:8",
            "ssh-rsa",
            "AGE",
            "",
            "password:+8",
        ] {
            assert!(Kind::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_have_the_length_and_alphabet_asked_for() {
        let p = generate(Kind::Password(1000)).unwrap();
        assert_eq!(p.secret.len(), 1000);
        assert!(p.secret.iter().all(u8::is_ascii_alphanumeric));
        assert!(p.public.is_none());
        // All 62 characters show up in a long enough password.
        let long = password(20_000).unwrap();
        let distinct: std::collections::BTreeSet<u8> = long.iter().copied().collect();
        assert_eq!(distinct.len(), 62);
    }
}
