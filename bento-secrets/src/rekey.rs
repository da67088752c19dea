//! `bento secret rekey`: re-encrypt secrets to the recipients their rules name now.
//!
//! Only what `verify` calls stale is touched (unless asked for all), in parallel across
//! cores; each file is replaced atomically, and one secret that fails (cannot be
//! decrypted, say) does not stop the others. The lock is updated once, at the end, for the
//! secrets that succeeded.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::identity::Identities;
use crate::lock::LockEntry;
use crate::rules::SecretRule;
use crate::store;
use crate::verify::Report;

/// Which secrets to rekey: `names` (all when empty), keeping only stale ones unless
/// `all`. Secrets without a ciphertext are skipped: there is nothing to re-encrypt.
///
/// A fleet without `recipients.lock` yet has every secret rekeyed once, so that the lock
/// it then gets lists them all.
pub fn select<'a>(
    fleet: &'a Fleet,
    report: &Report,
    names: &[String],
    all: bool,
) -> Result<Vec<&'a SecretRule>> {
    let stale = report.stale();
    let chosen: Vec<&SecretRule> = if names.is_empty() {
        fleet.rules.secrets.values().collect()
    } else {
        names.iter().map(|n| fleet.rule(n)).collect::<Result<_>>()?
    };
    Ok(chosen
        .into_iter()
        .filter(|r| all || !report.locked || stale.contains(r.name.as_str()))
        .filter(|r| fleet.secret_path(r).exists())
        .collect())
}

/// Re-encrypts `targets` in parallel. `on_done` is called as each one finishes (for a
/// progress bar). Returns every secret's result, in the order of `targets`.
pub fn rekey(
    fleet: &Fleet,
    targets: &[&SecretRule],
    ids: &Identities,
    on_done: &(dyn Fn(&str, bool) + Sync),
) -> Result<Vec<(String, Result<()>)>> {
    let results: Vec<(String, Result<LockEntry>)> = targets
        .par_iter()
        .map(|rule| {
            let result = rekey_one(fleet, rule, ids);
            on_done(&rule.name, result.is_ok());
            (rule.name.clone(), result)
        })
        .collect();
    let entries = results
        .iter()
        .filter_map(|(n, r)| r.as_ref().ok().map(|e| (n.clone(), e.clone())));
    store::record(fleet, entries, true)?;
    Ok(results.into_iter().map(|(n, r)| (n, r.map(|_| ()))).collect())
}

fn rekey_one(fleet: &Fleet, rule: &SecretRule, ids: &Identities) -> Result<LockEntry, Error> {
    let plaintext = store::open(fleet, &rule.name)?.decrypt(ids)?;
    store::write(fleet, rule, &plaintext)
}
