//! `secret list`: each secret of the rules with its recipients and one status word,
//! decided from [`crate::verify`]'s findings. The binary prints these as a table or JSON.

use serde::Serialize;

use crate::fleet::Fleet;
use crate::rules::{Member, Role, SecretRule};
use crate::verify::{Finding, Kind, Report};

/// A secret's state in one word: the worst of its findings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Encrypted to exactly its rule's recipients, as the lock says.
    Ok,
    /// No ciphertext yet.
    MissingFile,
    /// A ciphertext that is not an age file.
    Corrupt,
    /// Anything else: the recipients or the lock disagree with the rules.
    Stale,
}

impl Status {
    /// The status of a secret with these findings.
    pub fn of(findings: &[&Finding]) -> Status {
        if findings.is_empty() {
            Status::Ok
        } else if findings.iter().any(|f| f.kind == Kind::MissingFile) {
            Status::MissingFile
        } else if findings.iter().any(|f| f.kind == Kind::Corrupt) {
            Status::Corrupt
        } else {
            Status::Stale
        }
    }

    /// The word shown in the table (as in JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::MissingFile => "missing-file",
            Status::Corrupt => "corrupt",
            Status::Stale => "stale",
        }
    }
}

/// One recipient of a listed secret. (Fields in name order: the JSON keys are sorted.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Recipient {
    /// The host or admin name.
    pub name: String,
    /// `host` or `admin`.
    pub role: String,
    /// How the rule reached it: `@group`, `admins`, or `direct`.
    pub via: String,
}

impl From<&Member> for Recipient {
    fn from(m: &Member) -> Recipient {
        Recipient {
            name: m.name.clone(),
            role: match m.role {
                Role::Host => "host",
                Role::Admin => "admin",
            }
            .to_owned(),
            via: m.via.to_string(),
        }
    }
}

/// One secret as `secret list` shows it. (Fields in name order: the JSON keys are sorted.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Listed {
    /// Its ciphertext, as shown.
    pub file: String,
    /// What verify found about it.
    pub findings: Vec<Finding>,
    /// The secret's name.
    pub name: String,
    /// Its rule's recipients.
    pub recipients: Vec<Recipient>,
    /// The worst of the findings.
    pub status: Status,
}

impl Listed {
    /// The recipients as the table shows them: `+name` for one the file still lacks, then
    /// `-name` for each the file has but the rule does not name.
    pub fn marked_recipients(&self) -> Vec<String> {
        let has = |kind: Kind, name: &str| {
            self.findings
                .iter()
                .any(|f| f.kind == kind && f.recipient.as_deref() == Some(name))
        };
        let mut out: Vec<String> = self
            .recipients
            .iter()
            .map(|r| {
                if has(Kind::MissingRecipient, &r.name) {
                    format!("+{}", r.name)
                } else {
                    r.name.clone()
                }
            })
            .collect();
        out.extend(
            self.findings
                .iter()
                .filter(|f| f.kind == Kind::ExtraRecipient)
                .filter_map(|f| f.recipient.as_ref().map(|r| format!("-{r}"))),
        );
        out
    }
}

/// Every secret of `fleet`'s rules, in name order, with what `report` found about it.
pub fn list(fleet: &Fleet, report: &Report) -> Vec<Listed> {
    fleet
        .rules
        .secrets
        .values()
        .map(|rule| {
            let findings: Vec<&Finding> = report.about(&rule.name).collect();
            Listed {
                file: fleet.secret_shown(rule),
                status: Status::of(&findings),
                findings: findings.into_iter().cloned().collect(),
                name: rule.name.clone(),
                recipients: rule.recipients.iter().map(Recipient::from).collect(),
            }
        })
        .collect()
}

/// Why a secret needs no rekey.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idle {
    /// Its file is encrypted to exactly its rule's recipients.
    Current,
    /// It has no file yet: nothing to re-encrypt.
    NoFile,
}

/// For a `rekey` that found nothing to do: each secret of `names` that has a rule (all the
/// rules' secrets when `names` is empty), and why it needs nothing.
pub fn idle<'a>(fleet: &'a Fleet, names: &[String]) -> Vec<(&'a SecretRule, Idle)> {
    let rules: Vec<&SecretRule> = if names.is_empty() {
        fleet.rules.secrets.values().collect()
    } else {
        names.iter().filter_map(|n| fleet.rule(n).ok()).collect()
    };
    rules
        .into_iter()
        .map(|rule| {
            let why = if fleet.secret_path(rule).exists() {
                Idle::Current
            } else {
                Idle::NoFile
            };
            (rule, why)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::TempFleet;
    use crate::verify::verify;

    const RULES: &str = "admins = [\"alice\"]\n[secrets.db]\nrecipients = [\"web1\"]\n\
                         [secrets.api]\nrecipients = [\"web1\", \"db1\"]\n";

    fn finding(kind: Kind, recipient: Option<&str>) -> Finding {
        Finding {
            secret: "db".into(),
            file: "secrets/db.age".into(),
            kind,
            recipient: recipient.map(str::to_owned),
            keys: Vec::new(),
            message: String::new(),
        }
    }

    #[test]
    fn the_worst_finding_names_the_status() {
        let missing = finding(Kind::MissingFile, None);
        let corrupt = finding(Kind::Corrupt, None);
        let extra = finding(Kind::ExtraRecipient, Some("web1"));
        let lock = finding(Kind::NotLocked, None);
        assert_eq!(Status::of(&[]), Status::Ok);
        assert_eq!(Status::of(&[&extra]), Status::Stale);
        assert_eq!(Status::of(&[&lock]), Status::Stale);
        assert_eq!(Status::of(&[&extra, &corrupt]), Status::Corrupt);
        assert_eq!(Status::of(&[&corrupt, &missing]), Status::MissingFile);
        assert_eq!(Status::MissingFile.as_str(), "missing-file");
    }

    #[test]
    fn recipients_are_marked_to_add_and_to_remove() {
        let listed = Listed {
            file: "secrets/db.age".into(),
            findings: vec![
                finding(Kind::MissingRecipient, Some("db1")),
                finding(Kind::ExtraRecipient, Some("web1")),
                finding(Kind::NotLocked, None),
            ],
            name: "db".into(),
            recipients: ["alice", "db1"]
                .map(|n| Recipient {
                    name: n.into(),
                    role: "host".into(),
                    via: "direct".into(),
                })
                .to_vec(),
            status: Status::Stale,
        };
        assert_eq!(listed.marked_recipients(), ["alice", "+db1", "-web1"]);
        let json = serde_json::to_value(&listed).unwrap();
        assert_eq!(json["status"], "stale");
        assert_eq!(json["recipients"][1]["name"], "db1");
    }

    #[test]
    fn the_listing_reads_the_same_findings() {
        let t = TempFleet::new(&["web1", "db1"], RULES);
        t.write("db", b"one");
        t.rules(
            "admins = [\"alice\"]\n[secrets.db]\nrecipients = [\"db1\"]\n\
             [secrets.api]\nrecipients = [\"web1\", \"db1\"]\n",
        );
        let fleet = t.load();
        let listed = list(&fleet, &verify(&fleet).unwrap());
        let by_name = |n: &str| listed.iter().find(|l| l.name == n).unwrap();
        assert_eq!(by_name("api").status, Status::MissingFile);
        assert_eq!(by_name("db").status, Status::Stale);
        assert_eq!(by_name("db").marked_recipients(), ["alice", "+db1", "-web1"]);
        let found = idle(&fleet, &[]);
        let why: Vec<_> = found.iter().map(|(r, why)| (r.name.as_str(), *why)).collect();
        assert_eq!(why, [("api", Idle::NoFile), ("db", Idle::Current)]);
        assert!(idle(&fleet, &["nope".into()]).is_empty());
    }
}
