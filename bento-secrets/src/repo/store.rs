//! Reading and writing one secret of a fleet: decrypt it with the user's identities, or
//! encrypt new content to exactly the recipients its rule resolves and replace the
//! ciphertext atomically.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::atomic::write_atomic;
use crate::crypt;
use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::fleet_files::{self, Kind};
use crate::fleet_lock::FleetLock;
use crate::identity::Identities;
use crate::recipients_lock::{self, Lock, LockEntry, LOCK_FILE, LOCK_MODE};
use crate::rules::SecretRule;

/// Permissions of ciphertext files: they are public, like the rest of the repo.
pub const CIPHERTEXT_MODE: u32 = 0o644;

/// Reads a secret's ciphertext, or `None` when it does not exist yet.
pub fn read_ciphertext(fleet: &Fleet, rule: &SecretRule) -> Result<Option<Vec<u8>>> {
    match fleet_files::read(&fleet.secret_path(rule), Kind::Age) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.at(fleet.secret_shown(rule))),
    }
}

/// A secret's ciphertext, read from the fleet and not yet decrypted.
#[derive(Debug)]
pub struct Sealed<'a> {
    /// The secret's rule.
    pub rule: &'a SecretRule,
    /// The ciphertext file, as shown to the user.
    pub shown: String,
    /// The age file's bytes.
    pub ciphertext: Vec<u8>,
}

impl Sealed<'_> {
    /// Decrypts it.
    pub fn decrypt(&self, ids: &Identities) -> Result<Zeroizing<Vec<u8>>> {
        crypt::decrypt(&self.ciphertext, ids, &self.shown, &who(self.rule))
    }
}

/// Reads secret `name`'s ciphertext; an error when it has no rule or no file.
pub fn open<'a>(fleet: &'a Fleet, name: &str) -> Result<Sealed<'a>> {
    let rule = fleet.rule(name)?;
    let shown = fleet.secret_shown(rule);
    let ciphertext = read_ciphertext(fleet, rule)?.ok_or_else(|| Error::MissingCiphertext {
        file: shown.clone(),
        name: rule.name.clone(),
        command: fleet.command(),
    })?;
    Ok(Sealed {
        rule,
        shown,
        ciphertext,
    })
}

/// Encrypts `plaintext` to the rule's recipients and replaces the ciphertext atomically,
/// under the fleet lock. Returns the lock entry describing the new file; pass it to
/// [`record`].
pub fn write(fleet: &Fleet, _held: &FleetLock, rule: &SecretRule, plaintext: &[u8]) -> Result<LockEntry> {
    let shown = fleet.secret_shown(rule);
    let (ciphertext, entry) = seal(fleet, rule, plaintext)?;
    let path = fleet.secret_path(rule);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(&shown, e))?;
    }
    write_atomic(&path, &ciphertext, CIPHERTEXT_MODE).map_err(|e| Error::io(&shown, e))?;
    Ok(entry)
}

/// Encrypts `plaintext` to the rule's recipients, in memory: the ciphertext and the lock
/// entry that will describe it once written.
pub fn seal(fleet: &Fleet, rule: &SecretRule, plaintext: &[u8]) -> Result<(Vec<u8>, LockEntry)> {
    let members_keys = fleet.recipient_keys(rule);
    let keys: Vec<_> = members_keys.iter().map(|(_, k)| *k).collect();
    crate::plugin_path::check(
        &keys,
        fleet.root(),
        std::env::var_os("PATH").as_deref(),
        &fleet.secret_shown(rule),
    )?;
    let ciphertext = crypt::encrypt(plaintext, &keys, rule.armor, &fleet.secret_shown(rule))?;
    let entry = LockEntry::new(
        &ciphertext,
        members_keys.iter().map(|(m, k)| (&m.name, k.fingerprint())),
    );
    Ok((ciphertext, entry))
}

/// Where a generated key pair's public part lives: `secrets/<name>.pub`.
pub fn public_path(fleet: &Fleet, rule: &SecretRule) -> PathBuf {
    fleet.secrets_dir().join(format!("{}.pub", rule.name))
}

/// [`public_path`], as shown to the user.
pub fn public_shown(fleet: &Fleet, rule: &SecretRule) -> String {
    fleet.shown_in_secrets(&format!("{}.pub", rule.name))
}

/// Reads a secret's public part, or `None` when there is no `.pub`.
pub fn read_public(fleet: &Fleet, rule: &SecretRule) -> Result<Option<Vec<u8>>> {
    match fleet_files::read(&public_path(fleet, rule), Kind::Key) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.at(public_shown(fleet, rule))),
    }
}

/// Replaces a secret's public part atomically, under the fleet lock; returns its SHA-256
/// for the lock.
pub fn write_public(fleet: &Fleet, _held: &FleetLock, rule: &SecretRule, line: &str) -> Result<String> {
    write_atomic(&public_path(fleet, rule), line.as_bytes(), CIPHERTEXT_MODE)
        .map_err(|e| Error::io(public_shown(fleet, rule), e))?;
    Ok(recipients_lock::sha256_hex(line.as_bytes()))
}

/// Records new lock entries in the fleet's `recipients.lock` (one atomic write), under the
/// fleet lock.
///
/// A fleet without a lock (an agenix repo, say) gets one only when `create` is set: a
/// partial lock would make every secret it does not list look stale.
pub fn record(
    fleet: &Fleet,
    held: &FleetLock,
    entries: impl IntoIterator<Item = (String, LockEntry)>,
    create: bool,
) -> Result<()> {
    let old = Lock::load(fleet.secrets_dir(), &fleet.shown_in_secrets(LOCK_FILE))?;
    let new: Vec<(String, LockEntry)> = entries.into_iter().collect();
    record_onto(
        fleet,
        held,
        &old,
        new.iter().map(|(n, e)| (n.as_str(), e)),
        create,
    )
}

/// [`record`], onto the lock `old` already read (by a verification under the same fleet
/// lock, say).
pub fn record_onto<'a>(
    fleet: &Fleet,
    _held: &FleetLock,
    old: &'a Lock,
    entries: impl IntoIterator<Item = (&'a str, &'a LockEntry)>,
    create: bool,
) -> Result<()> {
    match lock_update(fleet, old, entries, create) {
        Some(text) => write_atomic(&lock_path(fleet), text.as_bytes(), LOCK_MODE)
            .map_err(|e| Error::io(fleet.shown_in_secrets(LOCK_FILE), e)),
        None => Ok(()),
    }
}

/// The text of lock `old` with `entries` recorded (see [`record`]), or `None` when the
/// file should be left as it is.
pub fn lock_update<'a>(
    fleet: &Fleet,
    old: &'a Lock,
    entries: impl IntoIterator<Item = (&'a str, &'a LockEntry)>,
    create: bool,
) -> Option<String> {
    if !old.present && !create {
        return None;
    }
    // The old entries, replaced by the new ones, for the secrets that still have a rule.
    let mut merged: BTreeMap<&str, Cow<'a, LockEntry>> = old
        .entries
        .iter()
        .map(|(name, entry)| (name.as_str(), entry))
        .chain(entries)
        .filter(|(name, _)| fleet.rules.secrets.contains_key(*name))
        .map(|(name, entry)| (name, Cow::Borrowed(entry)))
        .collect();
    // A rekey or an edit of a generated key pair leaves its `.pub` as it was: so does
    // the lock's record of it.
    for (name, entry) in &mut merged {
        let keeps_public = fleet.rules.secrets[*name]
            .generate
            .is_some_and(|k| k.has_public());
        if let Some(public) = old.entries.get(*name).and_then(|o| o.public_sha256.as_ref()) {
            if entry.public_sha256.is_none() && keeps_public {
                entry.to_mut().public_sha256 = Some(public.clone());
            }
        }
    }
    let unchanged = merged.len() == old.entries.len()
        && merged
            .iter()
            .all(|(name, entry)| old.entries.get(*name) == Some(&**entry));
    if unchanged && (old.present || merged.is_empty()) {
        return None; // nothing new: leave the file (or its absence) alone
    }
    Some(recipients_lock::render(merged.iter().map(|(n, e)| (*n, &**e))))
}

/// Where the fleet's lock is.
pub fn lock_path(fleet: &Fleet) -> PathBuf {
    fleet.secrets_dir().join(LOCK_FILE)
}

/// Who can decrypt a secret, for messages.
pub fn who(rule: &SecretRule) -> String {
    rule.recipients
        .iter()
        .map(|m| m.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
