//! `secrets/secrets.toml`: which secret is encrypted to whom, and how it lands on a host.
//!
//! Parsing is strict: unknown keys, unknown names, duplicates, bad names, bad modes and
//! bad paths are all refused with the file and line of the offending entry.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use toml::Spanned;

pub use crate::directory::Directory;
use crate::error::Error;
use crate::file_attrs::{file_attrs, FileAttrs};
use crate::generator_kind::{Kind, KINDS};
use crate::mode::WORLD_READABLE;
use crate::names::{valid_name, RelPath, SecretName};
use crate::suggest::hint;
use crate::template::{RawTemplate, TemplateRule};
pub use crate::toml_text::line_col;

/// The validated rules of a fleet.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    /// Admins added to every secret.
    pub admins: Vec<String>,
    /// Named groups of hosts.
    pub groups: BTreeMap<String, Vec<String>>,
    /// The secrets, by name.
    pub secrets: BTreeMap<String, SecretRule>,
    /// Things the admin should know that are not errors (a world-readable mode), one
    /// line each, naming the file and line.
    pub warnings: Vec<String>,
    /// The templates, by name.
    pub templates: BTreeMap<String, TemplateRule>,
}

/// One `[secrets.NAME]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRule {
    /// The secret's name.
    pub name: String,
    /// The ciphertext file, relative to the `secrets/` directory.
    pub file: String,
    /// Everyone it is encrypted to, resolved, sorted by name, admins included.
    pub recipients: Vec<Member>,
    /// How the activated file lands: owner, group, mode, path, units.
    pub attrs: FileAttrs,
    /// Write the ciphertext ASCII-armored.
    pub armor: bool,
    /// Decrypt before users are created.
    pub needed_for_users: bool,
    /// How `bento secret generate` makes it, when it is generated.
    pub generate: Option<Kind>,
}

/// One resolved recipient of a secret.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Member {
    /// The host or admin name.
    pub name: String,
    /// Host or admin.
    pub role: Role,
    /// How the rule reached it: `@group`, `admins` (the default list) or directly.
    pub via: Via,
}

/// Whether a recipient is a host or an admin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// A machine of the fleet.
    Host,
    /// A person who edits secrets.
    Admin,
}

/// Why a member is among a secret's recipients.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Via {
    /// Named in the secret's `recipients`.
    Direct,
    /// Through a `@group` in `recipients`.
    Group(String),
    /// Through the top-level `admins` list.
    DefaultAdmins,
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Via::Direct => f.write_str("named directly"),
            Via::Group(g) => write!(f, "in @{g}"),
            Via::DefaultAdmins => f.write_str("in admins"),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    #[serde(default)]
    admins: Vec<Spanned<String>>,
    #[serde(default)]
    groups: BTreeMap<Spanned<String>, Vec<Spanned<String>>>,
    #[serde(default)]
    secrets: BTreeMap<Spanned<String>, RawSecret>,
    #[serde(default)]
    templates: BTreeMap<Spanned<String>, RawTemplate>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    #[serde(default)]
    recipients: Vec<Spanned<String>>,
    file: Option<Spanned<String>>,
    owner: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    #[serde(default)]
    restart_units: Vec<Spanned<String>>,
    #[serde(default)]
    reload_units: Vec<Spanned<String>>,
    #[serde(default)]
    armor: bool,
    #[serde(default)]
    needed_for_users: bool,
    generate: Option<Spanned<String>>,
}

/// The hint for an unknown recipient: the closest host or admin, or `@group` when the
/// name is (close to) a group's.
fn recipient_hint(entry: &str, groups: &BTreeMap<String, Vec<String>>, dir: &dyn Directory) -> String {
    let at_groups: Vec<String> = groups.keys().map(|g| format!("@{g}")).collect();
    let bare = format!("@{entry}");
    let candidates = dir
        .host_names()
        .into_iter()
        .chain(dir.admin_names())
        .chain(at_groups.iter().map(String::as_str));
    // `web` for `@web` is one edit away, but the `@` is what is missing: say so first.
    if at_groups.contains(&bare) {
        return format!(" (did you mean {bare}?)");
    }
    hint(entry, candidates)
}

/// The message for `mode = 0440` (a bare number) on 1-based `line`: TOML either refuses
/// the leading zero or reads a decimal integer, neither of which is a mode.
fn unquoted_mode(text: &str, line: usize) -> Option<String> {
    let content = text.lines().nth(line.checked_sub(1)?)?;
    let value = content
        .trim_start()
        .strip_prefix("mode")?
        .trim_start()
        .strip_prefix('=')?
        .trim();
    let value = value.split('#').next().unwrap_or_default().trim();
    if value.is_empty() || value.starts_with(['"', '\'']) {
        return None;
    }
    let digits: String = value.chars().filter(|c| c.is_ascii_digit()).collect();
    let example = if digits.is_empty() {
        "0440".to_owned()
    } else {
        format!("{digits:0>4}")
    };
    Some(format!(
        "`mode` is a quoted octal string: write mode = \"{example}\", not mode = {value}"
    ))
}

impl Rules {
    /// Parses and validates `secrets.toml`; `shown` names the file in errors and `dir`
    /// says which host and admin names exist.
    pub fn parse(text: &str, shown: &str, dir: &dyn Directory) -> Result<Rules, Error> {
        let at = |offset: usize, msg: String| {
            let (line, _) = line_col(text, offset);
            Error::input(shown, Some(line), msg)
        };
        let raw: RawRules = toml::from_str(text).map_err(|e| {
            let msg = e.message().replace('\n', " ");
            match e.span() {
                Some(span) => {
                    let (line, col) = line_col(text, span.start);
                    let msg = unquoted_mode(text, line).unwrap_or_else(|| format!("column {col}: {msg}"));
                    Error::input(shown, Some(line), msg)
                }
                None => Error::input(shown, None, msg),
            }
        })?;

        let mut admins = Vec::new();
        for a in &raw.admins {
            let name = a.get_ref();
            if !dir.is_admin(name) {
                return Err(at(
                    a.span().start,
                    format!(
                        "unknown admin `{name}` in admins{}: add keys/admins/{name}.pub or fix the name",
                        hint(name, dir.admin_names())
                    ),
                ));
            }
            if admins.contains(name) {
                return Err(at(a.span().start, format!("admin `{name}` is listed twice")));
            }
            admins.push(name.clone());
        }

        let mut groups = BTreeMap::new();
        for (g, members) in &raw.groups {
            let gname = g.get_ref();
            if !valid_name(gname) {
                return Err(at(
                    g.span().start,
                    format!("bad group name `{gname}`: use letters, digits, `.`, `_` and `-`"),
                ));
            }
            let mut list: Vec<String> = Vec::new();
            for m in members {
                let name = m.get_ref();
                if !dir.is_host(name) {
                    return Err(at(
                        m.span().start,
                        format!(
                            "unknown host `{name}` in group {gname}{}: add keys/hosts/{name}.pub or fix the name",
                            hint(name, dir.host_names())
                        ),
                    ));
                }
                if list.contains(name) {
                    return Err(at(
                        m.span().start,
                        format!("host `{name}` is listed twice in group {gname}"),
                    ));
                }
                list.push(name.clone());
            }
            groups.insert(gname.clone(), list);
        }

        let mut secrets = BTreeMap::new();
        let mut warnings = Vec::new();
        let mut files: BTreeMap<String, String> = BTreeMap::new();
        let checked_name = |n: &Spanned<String>, what: &str| {
            let name = n.get_ref().clone();
            if SecretName::is_valid(&name) {
                return Ok(name);
            }
            let rule = "use letters, digits, `.`, `_` and `-` (not first: `.` or `-`)";
            Err(at(n.span().start, format!("bad {what} name `{name}`: {rule}")))
        };
        for (n, raw_secret) in raw.secrets {
            let name = checked_name(&n, "secret")?;
            let raw_mode_line = raw_secret.mode.as_ref().map(|m| line_col(text, m.span().start).0);
            let rule = Self::secret(name, n.span().start, raw_secret, &admins, &groups, dir, &at)?;
            if rule.attrs.mode & WORLD_READABLE != 0 {
                let line = raw_mode_line.map_or(String::new(), |l| format!(":{l}"));
                warnings.push(format!(
                    "{shown}{line}: {}.mode \"{:04o}\" lets every user of the host read the secret; \
                     use e.g. \"0440\" with a `group`",
                    rule.name, rule.attrs.mode
                ));
            }
            if let Some(other) = files.insert(rule.file.clone(), rule.name.clone()) {
                return Err(at(
                    n.span().start,
                    format!(
                        "secrets {other} and {} both use the file {}; give one a different `file`",
                        rule.name, rule.file
                    ),
                ));
            }
            secrets.insert(rule.name.clone(), rule);
        }
        let mut templates = BTreeMap::new();
        for (n, raw_template) in raw.templates {
            let name = checked_name(&n, "template")?;
            let rule = TemplateRule::parse(name, n.span().start, raw_template, &groups, dir, &at)?;
            templates.insert(rule.name.clone(), rule);
        }
        Ok(Rules {
            admins,
            groups,
            secrets,
            warnings,
            templates,
        })
    }

    fn secret(
        name: String,
        name_offset: usize,
        raw: RawSecret,
        admins: &[String],
        groups: &BTreeMap<String, Vec<String>>,
        dir: &dyn Directory,
        at: &dyn Fn(usize, String) -> Error,
    ) -> Result<SecretRule, Error> {
        let mut members: BTreeMap<String, Member> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for r in &raw.recipients {
            let entry = r.get_ref();
            if !seen.insert(entry.clone()) {
                return Err(at(
                    r.span().start,
                    format!("`{entry}` is listed twice in {name}.recipients"),
                ));
            }
            if let Some(g) = entry.strip_prefix('@') {
                let Some(hosts) = groups.get(g) else {
                    return Err(at(
                        r.span().start,
                        format!(
                            "unknown group `@{g}` in {name}.recipients{}: define it under [groups] or fix the name",
                            hint(g, groups.keys().map(String::as_str)).replacen("mean ", "mean @", 1)
                        ),
                    ));
                };
                for h in hosts {
                    members.entry(h.clone()).or_insert(Member {
                        name: h.clone(),
                        role: Role::Host,
                        via: Via::Group(g.to_owned()),
                    });
                }
            } else if dir.is_host(entry) || dir.is_admin(entry) {
                let role = if dir.is_host(entry) {
                    Role::Host
                } else {
                    Role::Admin
                };
                members.insert(
                    entry.clone(),
                    Member {
                        name: entry.clone(),
                        role,
                        via: Via::Direct,
                    },
                );
            } else {
                return Err(at(
                    r.span().start,
                    format!(
                        "unknown recipient `{entry}` in {name}.recipients{}: no keys/hosts/{entry}.pub or \
                     keys/admins/{entry}.pub (groups are written @name)",
                        recipient_hint(entry, groups, dir)
                    ),
                ));
            }
        }
        for a in admins {
            members.entry(a.clone()).or_insert(Member {
                name: a.clone(),
                role: Role::Admin,
                via: Via::DefaultAdmins,
            });
        }
        if members.is_empty() {
            return Err(at(name_offset, format!(
                "secret {name} has no recipients: list hosts or @groups in `recipients`, or set top-level `admins`"
            )));
        }

        let file = match raw.file {
            Some(f) if !RelPath::is_valid(f.get_ref()) => {
                return Err(at(
                    f.span().start,
                    format!(
                        "{name}.file `{}` must be a relative path inside secrets/ without `..`",
                        f.get_ref()
                    ),
                ))
            }
            Some(f) => f.into_inner(),
            None => format!("{name}.age"),
        };
        let attrs = file_attrs(
            &name,
            raw.owner,
            raw.group,
            raw.mode,
            raw.path,
            raw.restart_units,
            raw.reload_units,
            at,
        )?;
        let kind = |g: Spanned<String>| {
            let msg = |e| format!("{name}.generate: {e}; the kinds are {KINDS}");
            Kind::parse(g.get_ref()).map_err(|e| at(g.span().start, msg(e)))
        };
        let generate = raw.generate.map(kind).transpose()?;
        Ok(SecretRule {
            name,
            file,
            recipients: members.into_values().collect(),
            attrs,
            armor: raw.armor,
            needed_for_users: raw.needed_for_users,
            generate,
        })
    }
}

/// The commented `secrets.toml` that `bento init` writes.
pub const TEMPLATE: &str = r#"# Bento secrets: which secret is encrypted to whom, and how it lands on a host.
# Every key is shown below, commented out, with its default. Help on the commands that
# use this file: `bento secret --help`, `bento admin --help`, `bento host --help`, and
# the man page: `bento manpage > bento.1 && man ./bento.1`.

# Admins (keys/admins/<name>.pub) who can decrypt every secret, to edit and rekey it.
admins = []

# Groups of hosts (keys/hosts/<name>.pub), written "@name" in recipients.
[groups]
# web = ["web1", "web2"]

# One table per secret; the ciphertext is secrets/<name>.age.
# Create or change one with `bento secret edit NAME`.
#
# [secrets.db-password]
# recipients = ["@web", "db1"]        # hosts, @groups, admins
# owner = "postgres"                  # default: root
# group = "postgres"                  # default: the owner's primary group
# mode = "0400"                       # default: 0400
# path = "/var/lib/db/password"       # optional: a symlink at this path to the secret
# restart_units = ["postgresql.service"]  # restarted when the content changes
# reload_units = []                   # reloaded (or restarted) when the content changes
# armor = false                       # ASCII-armored ciphertext
# needed_for_users = false            # decrypted before users exist (password hashes)
# generate = "password:32"            # `bento secret generate` makes it: password:N, hex:N,
#                                     # base64:N, ssh-ed25519, wireguard, age (.pub beside it)

# Templates: text with {{ secrets.NAME }} placeholders, rendered on the hosts at
# activation into /run/bento/templates/<name>; each host must be a recipient of the secrets.
#
# [templates.app-env]
# hosts = ["@web"]
# content = """
# DATABASE_URL=postgres://app:{{ secrets.db-password }}@db1/app
# """                                 # or: file = "templates/app.env" (in the fleet)
# owner = "app"                       # group, mode, path, restart_units, reload_units:
# mode = "0440"                       #   as for secrets
"#;

#[cfg(test)]
mod tests {
    use super::*;

    struct Names;
    impl Directory for Names {
        fn is_host(&self, n: &str) -> bool {
            ["web1", "web2", "db1"].contains(&n)
        }
        fn is_admin(&self, n: &str) -> bool {
            n == "alice"
        }
        fn host_names(&self) -> Vec<&str> {
            vec!["db1", "web1", "web2"]
        }
        fn admin_names(&self) -> Vec<&str> {
            vec!["alice"]
        }
    }

    fn parse(text: &str) -> Result<Rules, Error> {
        Rules::parse(text, "secrets/secrets.toml", &Names)
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn resolves_groups_and_default_admins() {
        let r = parse(
            "admins = [\"alice\"]\n[groups]\nweb = [\"web1\", \"web2\"]\n\
             [secrets.tls]\nrecipients = [\"@web\", \"db1\"]\nmode = \"0440\"\n",
        )
        .unwrap();
        let tls = &r.secrets["tls"];
        let names: Vec<_> = tls.recipients.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["alice", "db1", "web1", "web2"]);
        assert_eq!(tls.recipients[3].via, Via::Group("web".into()));
        assert_eq!(tls.attrs.mode, 0o440);
        assert_eq!(tls.file, "tls.age");
        assert_eq!(tls.attrs.owner, "root");
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            err("[secrets.a]\nrecipients = [\n  \"web3\"]\n"),
            "secrets/secrets.toml:3: unknown recipient `web3` in a.recipients (did you mean web1?): no keys/hosts/web3.pub or \
             keys/admins/web3.pub (groups are written @name)"
        );
        assert!(err("[secrets.a]\nrecipients = [\"web1\"]\nmode = \"rw\"\n")
            .starts_with("secrets/secrets.toml:3: a.mode"));
        assert!(
            err("[secrets.a]\nrecipients = [\"web1\"]\ncolour = 1\n").starts_with("secrets/secrets.toml:3:")
        );
        assert!(err("[secrets.a]\nrecipients = [\"web1\" \"db1\"]\n").starts_with("secrets/secrets.toml:2:"));
        assert!(err("[secrets.a]\nrecipients = [\"web1\", \"web1\"]\n").contains("listed twice"));
        assert!(err("[secrets.\"../x\"]\nrecipients = [\"web1\"]\n").contains("bad secret name"));
        assert!(err("[secrets.a]\nrecipients = [\"@nope\"]\n").contains("unknown group `@nope`"));
        assert!(err("[secrets.a]\nrecipients = [\"web1\"]\npath = \"/x/../etc\"\n").contains("a.path"));
        assert!(err("[secrets.a]\nrecipients = [\"web1\"]\nfile = \"../x.age\"\n").contains("a.file"));
        assert!(err("[secrets.a]\n").contains("no recipients"));
        assert_eq!(
            err("[secrets.a]\nrecipients = [\"web1\"]\ngenerate = \"password:0\"\n"),
            "secrets/secrets.toml:3: a.generate: `password:0`: N must be a number from 1 to 4096; \
             the kinds are password:N, hex:N, base64:N (N from 1 to 4096), ssh-ed25519, wireguard, age"
        );
        assert!(err("[secrets.a]\nrecipients = [\"web1\"]\ngenerate = \"rsa\"\n")
            .starts_with("secrets/secrets.toml:3: a.generate: `rsa` is not a kind; the kinds are"));
        assert!(err(
            "[secrets.a]\nrecipients = [\"web1\"]\n[secrets.b]\nrecipients = [\"web1\"]\nfile = \"a.age\"\n"
        )
        .contains("both use the file a.age"));
    }

    #[test]
    fn special_bits_are_errors_and_world_readable_modes_warnings() {
        assert_eq!(
            err("[secrets.a]\nrecipients = [\"web1\"]\nmode = \"4755\"\n"),
            "secrets/secrets.toml:3: a.mode \"4755\": setuid/setgid/sticky bits are not allowed for secrets; \
             use e.g. \"0400\""
        );
        let r = parse("[secrets.a]\nrecipients = [\"web1\"]\n\nmode = \"0644\"\n[secrets.b]\nrecipients = [\"web1\"]\nmode = \"0640\"\n")
            .unwrap();
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert!(
            r.warnings[0].starts_with("secrets/secrets.toml:4: a.mode \"0644\""),
            "{:?}",
            r.warnings
        );
    }

    #[test]
    fn unquoted_modes_and_typos_get_the_fix() {
        assert_eq!(
            err("[secrets.a]\nrecipients = [\"web1\"]\nmode = 0440\n"),
            "secrets/secrets.toml:3: `mode` is a quoted octal string: write mode = \"0440\", not mode = 0440"
        );
        assert!(err("[secrets.a]\nrecipients = [\"web1\"]\nmode = 440 # r\n")
            .starts_with("secrets/secrets.toml:3: `mode` is a quoted octal string: write mode = \"0440\""));
        let groups = "[groups]\nweb = [\"web1\"]\n[secrets.a]\n";
        assert!(err(&format!("{groups}recipients = [\"web\"]\n")).contains("(did you mean @web?)"));
        assert!(err(&format!("{groups}recipients = [\"@wbe\"]\n")).contains("(did you mean @web?)"));
        assert!(err(&format!("{groups}recipients = [\"wbe1\"]\n")).contains("(did you mean web1?)"));
        assert!(err("admins = [\"alcie\"]\n").contains("(did you mean alice?)"));
        assert!(err("[groups]\nweb = [\"web3\"]\n").contains("(did you mean web1?)"));
        assert!(!err("[groups]\nweb = [\"nginx\"]\n").contains("did you mean"));
    }

    #[test]
    fn names_and_modes() {
        use crate::mode::parse_mode;
        use crate::names::valid_account;
        assert!(valid_name("db-password.v2"));
        assert!(!valid_name(".."));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("-rf"));
        assert_eq!(parse_mode("0400"), Some(0o400));
        assert_eq!(parse_mode("644"), Some(0o644));
        assert_eq!(parse_mode("0800"), None);
        assert_eq!(parse_mode("04000"), None);
        assert!(valid_account("nginx") && valid_account("1000") && !valid_account("a b"));
    }
}
