//! `bento secret verify`: proves, without any private key, that every secret is encrypted
//! to exactly the keys its rule names.
//!
//! Three sources are compared: the rules, each file's header (ssh stanzas carry a tag of
//! their key; X25519 stanzas are anonymous, so only counted), and `recipients.lock` (which
//! names every key a file was encrypted to, and is trusted only while the file's SHA-256
//! still matches it).

use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::format;
use crate::keys::KeyKind;
use crate::recipients_lock::{sha256_hex, Lock, LOCK_FILE};
use crate::rules::{Member, Role, SecretRule};

/// What kind of problem a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A rule without its ciphertext.
    MissingFile,
    /// A ciphertext whose header does not parse.
    Corrupt,
    /// A key the rules name is not among the file's recipients.
    MissingRecipient,
    /// The file is encrypted to a key the rules do not name.
    ExtraRecipient,
    /// The number of X25519 stanzas differs from the rules' `age1` recipients.
    X25519Count,
    /// The lock exists but has no entry for this secret.
    NotLocked,
    /// The file is not the one the lock describes: changed outside bento.
    ChangedOutsideBento,
    /// A `.age` file that no rule names.
    Orphan,
    /// A lock entry for a secret that has no rule.
    StaleLockEntry,
    /// A generated key pair's `.pub` is missing, or not the one the lock records.
    PublicKey,
    /// A template's placeholder names a secret that has no rule.
    TemplateUnknownSecret,
    /// A template is rendered on a host that is not a recipient of a secret it uses.
    TemplateHost,
}

impl Kind {
    /// Does re-encrypting the secret fix it?
    pub fn rekey_fixes(self) -> bool {
        matches!(
            self,
            Kind::MissingRecipient
                | Kind::ExtraRecipient
                | Kind::X25519Count
                | Kind::NotLocked
                | Kind::ChangedOutsideBento
        )
    }
}

/// One problem, for one secret (or file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The secret's name, or the orphan file's path.
    pub secret: String,
    /// The file concerned, as shown.
    pub file: String,
    /// What kind of problem.
    pub kind: Kind,
    /// The recipient concerned, by name, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// For a missing recipient: the fingerprints of its keys that are missing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// One line for humans.
    pub message: String,
}

/// The result of a verification.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// How many secrets the rules name.
    pub secrets: usize,
    /// How many templates the rules name (each checked: its placeholders, its hosts).
    pub templates: usize,
    /// Everything that does not hold, in secret order.
    pub findings: Vec<Finding>,
    /// The lock as it was read, for a rekey to update. In JSON, `locked`: whether the
    /// fleet has a `recipients.lock` at all (without one, only headers are checked).
    #[serde(rename = "locked", serialize_with = "lock_present")]
    pub lock: Lock,
}

fn lock_present<S: serde::Serializer>(lock: &Lock, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_bool(lock.present)
}

impl Report {
    /// True when everything holds.
    pub fn ok(&self) -> bool {
        self.findings.is_empty()
    }

    /// The secrets that a rekey would fix.
    pub fn stale(&self) -> BTreeSet<&str> {
        self.findings
            .iter()
            .filter(|f| f.kind.rekey_fixes())
            .map(|f| f.secret.as_str())
            .collect()
    }

    /// The findings about one secret's file (not those of the templates that use it).
    pub fn about<'a>(&'a self, secret: &'a str) -> impl Iterator<Item = &'a Finding> + 'a {
        self.findings
            .iter()
            .filter(move |f| f.secret == secret)
            .filter(|f| !matches!(f.kind, Kind::TemplateHost | Kind::TemplateUnknownSecret))
    }
}

/// Verifies every secret of the fleet.
pub fn verify(fleet: &Fleet) -> Result<Report> {
    // The lock is parsed while the files are read: neither needs the other. Then each
    // secret is checked on its own, in parallel, the findings kept in rule order.
    let rules: Vec<&SecretRule> = fleet.rules.secrets.values().collect();
    let (lock, files) = rayon::join(
        || Lock::load(fleet.secrets_dir(), &fleet.shown_in_secrets(LOCK_FILE)),
        || {
            rules
                .par_iter()
                .map(|rule| read_file(fleet, rule))
                .collect::<Result<Vec<_>>>()
        },
    );
    let (lock, files) = (lock?, files?);
    let mut report = Report {
        secrets: fleet.rules.secrets.len(),
        templates: fleet.rules.templates.len(),
        findings: Vec::new(),
        lock: Lock::default(),
    };
    let checked: Vec<Vec<Finding>> = rules
        .par_iter()
        .zip(&files)
        .map(|(rule, file)| check_secret(fleet, rule, file, &lock))
        .collect();
    report.findings.extend(checked.into_iter().flatten());
    let command = |sub: &str| format!("{} {sub}", fleet.command());
    let known: BTreeSet<&str> = fleet.rules.secrets.values().map(|r| r.file.as_str()).collect();
    for file in age_files(fleet.secrets_dir()) {
        if !known.contains(file.as_str()) {
            report.findings.push(Finding {
                secret: file.clone(),
                file: fleet.shown_in_secrets(&file),
                kind: Kind::Orphan,
                recipient: None,
                keys: Vec::new(),
                message: format!("{file}: no rule; add one to the rules or delete the file"),
            });
        }
    }
    for name in lock
        .entries
        .keys()
        .filter(|n| !fleet.rules.secrets.contains_key(*n))
    {
        report.findings.push(Finding {
            secret: name.clone(),
            file: fleet.shown_in_secrets(LOCK_FILE),
            kind: Kind::StaleLockEntry,
            recipient: None,
            keys: Vec::new(),
            message: format!(
                "{LOCK_FILE}: entry for `{name}`, which has no rule; `{}` drops it",
                command("rekey")
            ),
        });
    }
    report.findings.extend(check_templates(fleet));
    report.lock = lock;
    Ok(report)
}

/// The rule's recipients that `rule`'s file is not encrypted to yet (a stale secret, before
/// a rekey), by name, as its header and the lock show them; empty when that cannot be told.
pub fn not_yet_encrypted_to(fleet: &Fleet, rule: &SecretRule) -> Vec<String> {
    let Ok(facts) = read_file(fleet, rule) else {
        return Vec::new();
    };
    let lock = Lock::load(fleet.secrets_dir(), &fleet.shown_in_secrets(LOCK_FILE)).unwrap_or_default();
    check_secret(fleet, rule, &facts, &lock)
        .into_iter()
        .filter(|f| f.kind == Kind::MissingRecipient)
        .filter_map(|f| f.recipient)
        .collect()
}

/// A failure to decrypt `rule`'s file, told truthfully for a stale secret: the recipients
/// the rule names but the file is not encrypted to yet are not offered as the ones who can
/// decrypt it, and the fix is said (someone who can decrypt runs a rekey).
pub fn explain_undecryptable(fleet: &Fleet, rule: &SecretRule, error: Error) -> Error {
    let Error::NoMatchingIdentity { file, tried, .. } = &error else {
        return error;
    };
    let missing = not_yet_encrypted_to(fleet, rule);
    if missing.is_empty() {
        return error;
    }
    let can: Vec<&str> = rule
        .recipients
        .iter()
        .map(|m| m.name.as_str())
        .filter(|n| !missing.iter().any(|m| m == n))
        .collect();
    Error::NoMatchingIdentity {
        file: file.clone(),
        tried: tried.clone(),
        hint: format!(
            "it is meant for {}; pass -i with one of their private keys (not re-encrypted to {} yet: \
             an admin who can decrypt runs `{} rekey`)",
            can.join(", "),
            missing.join(", "),
            fleet.command()
        ),
    }
}

/// Every template's placeholders name a secret, and each of its hosts can decrypt them.
fn check_templates(fleet: &Fleet) -> Vec<Finding> {
    let mut out = Vec::new();
    for t in fleet.rules.templates.values() {
        let file = t.shown(crate::fleet::RULES_FILE);
        for name in &t.secrets {
            let Some(rule) = fleet.rules.secrets.get(name) else {
                out.push(Finding {
                    secret: name.clone(),
                    file: file.clone(),
                    kind: Kind::TemplateUnknownSecret,
                    recipient: None,
                    keys: Vec::new(),
                    message: format!(
                        "template {}: `{{{{ secrets.{name} }}}}` names no secret; add [secrets.{name}] or fix the placeholder",
                        t.name
                    ),
                });
                continue;
            };
            for host in &t.hosts {
                if !rule
                    .recipients
                    .iter()
                    .any(|m| m.role == Role::Host && m.name == *host)
                {
                    out.push(Finding {
                        secret: name.clone(),
                        file: file.clone(),
                        kind: Kind::TemplateHost,
                        recipient: Some(host.clone()),
                        keys: Vec::new(),
                        message: format!(
                            "template {}: host {host} is not a recipient of {name}; add {host} to \
                             {name}.recipients, or take it out of templates.{}.hosts",
                            t.name, t.name
                        ),
                    });
                }
            }
        }
    }
    out
}

/// What a secret's file shows without the lock.
enum FileFacts {
    Missing,
    Corrupt(String),
    Read {
        stanzas: Vec<format::StanzaInfo>,
        sha256: String,
    },
}

fn read_file(fleet: &Fleet, rule: &SecretRule) -> Result<FileFacts> {
    let Some(bytes) = crate::store::read_ciphertext(fleet, rule)? else {
        return Ok(FileFacts::Missing);
    };
    Ok(match format::stanzas(&bytes) {
        Ok(stanzas) => FileFacts::Read {
            stanzas,
            sha256: sha256_hex(&bytes),
        },
        Err(e) => FileFacts::Corrupt(e.to_string()),
    })
}

fn check_secret(fleet: &Fleet, rule: &SecretRule, facts: &FileFacts, lock: &Lock) -> Vec<Finding> {
    let name = &rule.name;
    let file = fleet.secret_shown(rule);
    let command = |sub: &str| format!("{} {sub} {name}", fleet.command());
    let finding = |kind, recipient: Option<String>, message: String| Finding {
        secret: name.clone(),
        file: file.clone(),
        kind,
        recipient,
        keys: Vec::new(),
        message: format!("{name}: {message}"),
    };
    let (stanzas, sha256) = match facts {
        FileFacts::Read { stanzas, sha256 } => (stanzas, sha256),
        FileFacts::Missing => {
            let how = if rule.generate.is_some() {
                "generate"
            } else {
                "edit"
            };
            let msg = format!("{file} is missing; create it with `{}`", command(how));
            return vec![finding(Kind::MissingFile, None, msg)];
        }
        FileFacts::Corrupt(detail) => return vec![finding(Kind::Corrupt, None, format!("{file}: {detail}"))],
    };

    let expected = fleet.recipient_keys(rule);
    let mut missing = Missing::new();
    let mut extra: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();

    // The header: ssh stanzas by tag.
    let header_tags: BTreeSet<&str> = stanzas
        .iter()
        .filter(|s| s.tag == "ssh-ed25519" || s.tag == "ssh-rsa")
        .filter_map(|s| s.args.first().map(String::as_str))
        .collect();
    let mut expected_tags = BTreeSet::new();
    for (member, key) in &expected {
        if let Some(tag) = key.ssh_tag() {
            if !header_tags.contains(tag) {
                add_missing(&mut missing, member, key.fingerprint());
            }
            expected_tags.insert(tag);
        }
    }
    for tag in header_tags.iter().filter(|t| !expected_tags.contains(**t)) {
        let owner = fleet
            .all_keys()
            .find(|(_, k)| k.ssh_tag() == Some(*tag))
            .map(|(n, _)| n);
        extra.insert(owner.map_or_else(|| format!("an unknown ssh key (tag {tag})"), str::to_owned));
    }

    out.extend(check_public(fleet, rule, sha256, lock, &finding));

    // The lock, trusted only while the file is the one it describes.
    match lock.entries.get(name) {
        Some(entry) if entry.sha256 == *sha256 => {
            let locked = entry.fingerprints();
            let mut wanted = BTreeSet::new();
            for (member, key) in &expected {
                let fp = key.fingerprint();
                if !locked.contains(fp) {
                    add_missing(&mut missing, member, fp);
                }
                wanted.insert(fp);
            }
            for r in &entry.recipients {
                let (who, fp) = r.rsplit_once(' ').unwrap_or(("?", r));
                if !wanted.contains(fp) {
                    extra.insert(who.to_owned());
                }
            }
        }
        entry => {
            if entry.is_some() {
                out.push(finding(
                    Kind::ChangedOutsideBento,
                    None,
                    format!(
                        "{file} changed outside bento (its SHA-256 is not the one in {LOCK_FILE}); \
                         check who made it, then `{}`",
                        command("rekey")
                    ),
                ));
            } else if lock.present {
                out.push(finding(
                    Kind::NotLocked,
                    None,
                    format!("not in {LOCK_FILE}; run `{}` to record it", command("rekey")),
                ));
            }
            out.extend(x25519_count(&expected, stanzas, &finding));
        }
    }

    for (who, (member, keys)) in missing {
        let mut f = finding(
            Kind::MissingRecipient,
            Some(who.to_owned()),
            format!("missing {who} ({})", member.via),
        );
        f.keys = keys.into_iter().map(str::to_owned).collect();
        out.push(f);
    }
    for who in extra {
        out.push(finding(
            Kind::ExtraRecipient,
            Some(who.clone()),
            format!("extra recipient {who}"),
        ));
    }
    out
}

/// The recipients a file misses: name → the member and the fingerprints of its keys.
type Missing<'a> = BTreeMap<&'a str, (&'a Member, BTreeSet<&'a str>)>;

/// Records that `member`'s key `fingerprint` is missing from a file.
fn add_missing<'a>(missing: &mut Missing<'a>, member: &'a Member, fingerprint: &'a str) {
    let (_, keys) = missing.entry(&member.name).or_insert((member, BTreeSet::new()));
    keys.insert(fingerprint);
}

/// A generated key pair's `.pub`: it must exist, and be the one the lock recorded when
/// the pair was made (while the lock describes the secret's file).
fn check_public(
    fleet: &Fleet,
    rule: &SecretRule,
    sha256: &str,
    lock: &Lock,
    finding: &dyn Fn(Kind, Option<String>, String) -> Finding,
) -> Option<Finding> {
    if !rule.generate.is_some_and(|k| k.has_public()) {
        return None;
    }
    let shown = crate::store::public_shown(fleet, rule);
    let fix = format!(
        "`bento secret generate {}` writes it again from the secret",
        rule.name
    );
    let recorded = lock
        .entries
        .get(&rule.name)
        .filter(|e| e.sha256 == sha256)
        .and_then(|e| e.public_sha256.as_deref());
    match crate::store::read_public(fleet, rule) {
        Ok(None) => Some(finding(
            Kind::PublicKey,
            None,
            format!("{shown} is missing; {fix}"),
        )),
        Err(e) => Some(finding(Kind::PublicKey, None, format!("{e}"))),
        Ok(Some(bytes)) => match recorded {
            Some(hash) if sha256_hex(&bytes) != hash => Some(finding(
                Kind::PublicKey,
                None,
                format!(
                    "{shown} is not the public key recorded in {LOCK_FILE} (changed outside bento); {fix}"
                ),
            )),
            _ => None,
        },
    }
}

/// Without a trusted lock, X25519 recipients can only be counted.
fn x25519_count(
    expected: &[(&Member, &crate::keys::RecipientKey)],
    stanzas: &[format::StanzaInfo],
    finding: &dyn Fn(Kind, Option<String>, String) -> Finding,
) -> Option<Finding> {
    let want: Vec<&str> = expected
        .iter()
        .filter(|(_, k)| *k.kind() == KeyKind::X25519)
        .map(|(m, _)| m.name.as_str())
        .collect();
    let got = stanzas.iter().filter(|s| s.tag == "X25519").count();
    (got != want.len()).then(|| {
        let names = if want.is_empty() {
            String::new()
        } else {
            format!(" ({})", want.join(", "))
        };
        finding(
            Kind::X25519Count,
            None,
            format!(
                "encrypted to {got} age1 (X25519) recipient{}, the rules name {}{names}",
                if got == 1 { "" } else { "s" },
                want.len(),
            ),
        )
    })
}

/// Every `*.age` file under `dir`, relative to it, sorted.
fn age_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "age") {
                if let Ok(rel) = path.strip_prefix(dir) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::TempFleet;

    const RULES: &str = "admins = [\"alice\"]\n[secrets.db]\nrecipients = [\"web1\"]\n\
                         [secrets.api]\nrecipients = [\"web1\", \"db1\"]\n";

    fn kinds(report: &Report, secret: &str) -> Vec<(Kind, Option<String>)> {
        report
            .about(secret)
            .map(|f| (f.kind, f.recipient.clone()))
            .collect()
    }

    #[test]
    fn each_way_a_file_differs_from_its_rule_is_its_own_finding() {
        let t = TempFleet::new(&["web1", "db1"], RULES);
        let r = verify(&t.load()).unwrap();
        assert_eq!(kinds(&r, "db"), [(Kind::MissingFile, None)]);
        assert!(!r.ok() && r.stale().is_empty(), "a missing file is not stale");

        t.write("db", b"one");
        t.write("api", b"two");
        let r = verify(&t.load()).unwrap();
        assert!(r.ok(), "{:?}", r.findings);
        assert_eq!(r.secrets, 2);

        // db1 joins db (the file lacks it); web1 leaves api (the file has it still).
        t.rules(
            "admins = [\"alice\"]\n[secrets.db]\nrecipients = [\"web1\", \"db1\"]\n\
             [secrets.api]\nrecipients = [\"db1\"]\n",
        );
        let r = verify(&t.load()).unwrap();
        let db = kinds(&r, "db");
        assert!(
            db.contains(&(Kind::MissingRecipient, Some("db1".into()))),
            "{db:?}"
        );
        let api = kinds(&r, "api");
        assert!(
            api.contains(&(Kind::ExtraRecipient, Some("web1".into()))),
            "{api:?}"
        );
        assert_eq!(r.stale(), BTreeSet::from(["api", "db"]));
        assert!(
            r.findings.iter().all(|f| f.kind.rekey_fixes()),
            "{:?}",
            r.findings
        );

        // A file that is not age, and a ciphertext that no rule names.
        std::fs::write(t.root().join("secrets/api.age"), b"not age").unwrap();
        std::fs::write(t.root().join("secrets/old.age"), b"x").unwrap();
        let r = verify(&t.load()).unwrap();
        assert_eq!(kinds(&r, "api")[0].0, Kind::Corrupt);
        let message = &r.about("api").next().unwrap().message;
        assert!(message.contains("not an age v1 file"), "{message}");
        assert!(r
            .findings
            .iter()
            .any(|f| f.kind == Kind::Orphan && f.file.contains("old.age")));
    }
}
