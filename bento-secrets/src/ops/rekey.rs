//! `bento secret rekey`: re-encrypt secrets to the recipients their rules name now.
//!
//! Only what `verify` calls stale is touched (unless asked for all), in parallel across
//! cores; each file is replaced atomically, and one secret that fails (cannot be
//! decrypted, say) does not stop the others. The lock is updated once, at the end, for the
//! secrets that succeeded.

use std::collections::BTreeSet;

use rayon::prelude::*;

use crate::atomic::Writer;
use crate::error::{Error, Result};
use crate::extend;
use crate::fleet::Fleet;
use crate::fleet_lock::FleetLock;
use crate::identity::Identities;
use crate::keys::{KeyKind, RecipientKey};
use crate::recipients_lock::LockEntry;
use crate::rules::SecretRule;
use crate::store;
use crate::verify::{Kind, Report};

/// What a rekey is to do.
#[derive(Debug, Default)]
pub struct Selection<'a> {
    /// The secrets to re-encrypt.
    pub targets: Vec<&'a SecretRule>,
    /// The chosen secrets whose file is not an age file (an empty file, say): they cannot
    /// be rekeyed, and are reported as failures rather than passed over.
    pub corrupt: Vec<Error>,
}

/// Which secrets to rekey: `names` (all when empty), keeping only stale ones unless
/// `all`. Secrets without a ciphertext are skipped: there is nothing to re-encrypt.
///
/// A fleet without `recipients.lock` yet has every secret rekeyed once, so that the lock
/// it then gets lists them all.
pub fn select<'a>(fleet: &'a Fleet, report: &Report, names: &[String], all: bool) -> Result<Selection<'a>> {
    let stale = report.stale();
    let chosen: Vec<&SecretRule> = if names.is_empty() {
        fleet.rules.secrets.values().collect()
    } else {
        names.iter().map(|n| fleet.rule(n)).collect::<Result<_>>()?
    };
    let mut selection = Selection::default();
    for rule in chosen {
        if let Some(f) = report.about(&rule.name).find(|f| f.kind == Kind::Corrupt) {
            selection.corrupt.push(Error::CorruptSecret {
                name: rule.name.clone(),
                command: fleet.command(),
                file: f.file.clone(),
                finding: f.message.clone(),
            });
        } else if (all || !report.lock.present || stale.contains(rule.name.as_str()))
            && fleet.secret_path(rule).exists()
        {
            selection.targets.push(rule);
        }
    }
    Ok(selection)
}

/// The lock's entries for secrets that no longer have a rule (verify's
/// [`Kind::StaleLockEntry`]): every rekey drops them from `recipients.lock`.
pub fn stale_lock_entries(report: &Report) -> Vec<&str> {
    report
        .findings
        .iter()
        .filter(|f| f.kind == Kind::StaleLockEntry)
        .map(|f| f.secret.as_str())
        .collect()
}

/// Rewrites the lock without the entries of secrets that have no rule, when a rekey has
/// nothing to re-encrypt (a rekey that does re-encrypt drops them as it writes the lock).
/// Returns the names dropped.
pub fn drop_stale_lock_entries<'r>(
    fleet: &Fleet,
    held: &FleetLock,
    report: &'r Report,
) -> Result<Vec<&'r str>> {
    let stale = stale_lock_entries(report);
    if !stale.is_empty() {
        store::record_onto(fleet, held, &report.lock, std::iter::empty(), false)?;
    }
    Ok(stale)
}

/// How a stale secret is brought in line with its rule.
#[derive(Debug, PartialEq, Eq)]
enum Plan<'a> {
    /// Only recipients were added: wrap the same file key for them (see [`crate::extend`]).
    Extend(Vec<&'a RecipientKey>),
    /// Anything else (a recipient removed, a file changed outside bento, `--all`):
    /// decrypt and encrypt anew, under a fresh file key.
    Reencrypt,
}

fn plan<'a>(fleet: &'a Fleet, report: &Report, rule: &'a SecretRule, all: bool) -> Plan<'a> {
    let findings: Vec<_> = report.about(&rule.name).collect();
    if all || findings.is_empty() || findings.iter().any(|f| f.kind != Kind::MissingRecipient) {
        return Plan::Reencrypt;
    }
    let missing: BTreeSet<&str> = findings
        .iter()
        .flat_map(|f| f.keys.iter().map(String::as_str))
        .collect();
    let add: Vec<&RecipientKey> = fleet
        .recipient_keys(rule)
        .into_iter()
        .map(|(_, k)| k)
        .filter(|k| missing.contains(k.fingerprint()))
        .collect();
    let plugin = add.iter().any(|k| matches!(k.kind(), KeyKind::Plugin(_)));
    if add.is_empty() || add.len() != missing.len() || plugin {
        return Plan::Reencrypt;
    }
    Plan::Extend(add)
}

fn rekey_one(
    fleet: &Fleet,
    rule: &SecretRule,
    plan: &Plan,
    ids: &Identities,
) -> Result<(Vec<u8>, LockEntry)> {
    let sealed = store::open(fleet, &rule.name)?;
    match plan {
        Plan::Reencrypt => store::seal(fleet, rule, &sealed.decrypt(ids)?),
        Plan::Extend(add) => {
            let who = store::who(rule);
            let path = std::env::var_os("PATH");
            crate::plugin_path::check(add, fleet.root(), path.as_deref(), &sealed.shown)?;
            let out = extend::add_recipients(&sealed.ciphertext, ids, add, rule.armor, &sealed.shown, &who)?;
            let keys = fleet
                .recipient_keys(rule)
                .into_iter()
                .map(|(m, k)| (&m.name, k.fingerprint()));
            let entry = LockEntry::new(&out, keys);
            Ok((out, entry))
        }
    }
}

/// Re-encrypts `targets`: decryption and encryption in parallel across cores, then every
/// file replaced atomically with the disk syncs overlapped. A secret that only gained
/// recipients keeps its payload and gets stanzas for the new keys; any other change (and
/// `all`) re-encrypts under a new file key. `on_done` is called as each one is encrypted
/// (for a progress bar). Returns every secret's result, in order.
///
/// `report` must come from a verification made under `held`, the fleet lock: what it
/// read (the lock file) is what gets rewritten.
pub fn rekey(
    fleet: &Fleet,
    held: &FleetLock,
    report: &Report,
    targets: &[&SecretRule],
    all: bool,
    ids: &Identities,
    on_done: &(dyn Fn(&str, bool) + Sync),
) -> Result<Vec<(String, Result<()>)>> {
    // Each file is handed to the writer as soon as it is encrypted: the disk syncs of the
    // first overlap the encryption of the next.
    let writer = Writer::new();
    let sealed: Vec<Result<(usize, LockEntry)>> = targets
        .par_iter()
        .map(|rule| {
            let result = rekey_one(fleet, rule, &plan(fleet, report, rule, all), ids).map(|(out, entry)| {
                (
                    writer.submit(fleet.secret_path(rule), out, store::CIPHERTEXT_MODE),
                    entry,
                )
            });
            on_done(&rule.name, result.is_ok());
            result
        })
        .collect();
    // The lock goes last into the same batch of writes, listing every secret encrypted;
    // should one of them fail to be written, it is written again without it, below.
    let encrypted = targets
        .iter()
        .zip(&sealed)
        .filter_map(|(rule, s)| Some((rule.name.as_str(), &s.as_ref().ok()?.1)));
    let lock_ticket = store::lock_update(fleet, &report.lock, encrypted, true).map(|text| {
        writer.submit(
            store::lock_path(fleet),
            text.into_bytes(),
            crate::recipients_lock::LOCK_MODE,
        )
    });
    let mut written: Vec<Option<std::io::Result<()>>> = writer.finish().into_iter().map(Some).collect();

    let mut results = Vec::with_capacity(targets.len());
    let mut entries = Vec::new();
    let mut lock_is_wrong = false;
    for (rule, sealed) in targets.iter().zip(sealed) {
        let result = match sealed {
            Ok((ticket, entry)) => match written[ticket].take().expect("one write result per ticket") {
                Ok(()) => {
                    entries.push((rule.name.clone(), entry));
                    Ok(())
                }
                Err(e) => {
                    lock_is_wrong = true; // it lists this secret's new ciphertext
                    Err(Error::io(fleet.secret_shown(rule), e))
                }
            },
            Err(e) => Err(e),
        };
        results.push((rule.name.clone(), result));
    }
    if let Some(ticket) = lock_ticket {
        lock_is_wrong |= written[ticket].take().is_some_and(|w| w.is_err());
    }
    if lock_is_wrong {
        store::record_onto(
            fleet,
            held,
            &report.lock,
            entries.iter().map(|(n, e)| (n.as_str(), e)),
            true,
        )?;
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::TempFleet;
    use crate::verify::verify;

    const RULES: &str = "admins = [\"alice\"]\n[secrets.db]\nrecipients = [\"web1\"]\n\
                         [secrets.api]\nrecipients = [\"web1\", \"db1\"]\n";

    fn names(selection: &Selection<'_>) -> Vec<String> {
        selection.targets.iter().map(|r| r.name.clone()).collect()
    }

    #[test]
    fn rekey_selects_stale_secrets_only_unless_all_and_reports_corrupt_ones() {
        let t = TempFleet::new(&["web1", "db1"], RULES);
        t.write("db", b"one");
        t.write("api", b"two");
        t.rules(
            "admins = [\"alice\"]\n[secrets.db]\nrecipients = [\"web1\", \"db1\"]\n\
             [secrets.api]\nrecipients = [\"web1\", \"db1\"]\n[secrets.new]\nrecipients = [\"db1\"]\n",
        );
        let fleet = t.load();
        let r = verify(&fleet).unwrap();
        let stale = select(&fleet, &r, &[], false).unwrap();
        assert_eq!(
            names(&stale),
            ["db"],
            "api is fresh; new has no file yet: {:?}",
            r.findings
        );
        let all = select(&fleet, &r, &[], true).unwrap();
        assert_eq!(names(&all), ["api", "db"]);
        let asked = select(&fleet, &r, &["api".into()], false).unwrap();
        assert!(asked.targets.is_empty() && asked.corrupt.is_empty());
        assert!(select(&fleet, &r, &["nope".into()], false).is_err());

        std::fs::write(t.root().join("secrets/api.age"), b"").unwrap();
        let r = verify(&fleet).unwrap();
        let sel = select(&fleet, &r, &[], true).unwrap();
        assert_eq!(names(&sel), ["db"]);
        assert!(matches!(&sel.corrupt[..], [crate::Error::CorruptSecret { name, .. }] if name == "api"));
    }
}
