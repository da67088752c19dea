//! Reading an agenix `secrets.nix`, so bento works in an existing agenix repository.
//!
//! The file is evaluated by one `nix-instantiate --eval --strict --json` call, through a
//! small wrapper expression (`WRAPPER`) that reports, per entry, the attribute names
//! it has, the types of its values and where in the file it is written
//! (`builtins.unsafeGetAttrPos`), so that errors name the user's file and line. Attributes
//! other than `publicKeys` and `armor` are ignored, as agenix and ragenix do.
//!
//! Keys are bare strings (let-binding names do not survive evaluation), so each key is
//! named after its ssh comment (`alice@laptop` → `alice-laptop`), else after its
//! fingerprint. Each secret is named after its file without `.age`, made a valid bento
//! name (see [`secret_names`]). Ciphertext paths are relative to the directory of
//! `secrets.nix`, as in agenix.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::file_attrs::FileAttrs;
use crate::fleet::{Fleet, Note};
use crate::keys::RecipientKey;
use crate::names::{RelPath, SecretName};
use crate::rules::{Member, Role, Rules, SecretRule};

/// The expression nix-instantiate evaluates: `secrets.nix` (passed as `file`), reduced
/// to what bento reads, with positions. Values are never converted to JSON as they are
/// (a path would be copied into the Nix store): non-strings become `{ type = …; }`.
const WRAPPER: &str = r#"{ file }:
let
  rules = import (/. + file);
  typed = v: if builtins.isString v || builtins.isBool v then v else { type = builtins.typeOf v; };
  entry = name: v:
    { pos = builtins.unsafeGetAttrPos name rules; }
    // (if builtins.isAttrs v then {
      attrs = builtins.attrNames v;
      keysPos = builtins.unsafeGetAttrPos "publicKeys" v;
      publicKeys =
        if !(v ? publicKeys) then null
        else if builtins.isList v.publicKeys then map typed v.publicKeys
        else typed v.publicKeys;
      armor = if v ? armor then typed v.armor else false;
    } else { type = builtins.typeOf v; });
in
if builtins.isAttrs rules then { entries = builtins.mapAttrs entry rules; }
else { type = builtins.typeOf rules; }
"#;

/// The attributes of an entry that bento reads.
const KNOWN: [&str; 2] = ["publicKeys", "armor"];

#[derive(Deserialize)]
struct Evaluated {
    entries: Option<BTreeMap<String, RawEntry>>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct RawEntry {
    pos: Option<Pos>,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    attrs: Vec<String>,
    #[serde(rename = "keysPos")]
    keys_pos: Option<Pos>,
    #[serde(rename = "publicKeys", default)]
    public_keys: Value,
    #[serde(default)]
    armor: Value,
}

/// A position Nix reports: file, 1-based line and column.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
struct Pos {
    file: String,
    line: usize,
    column: usize,
}

/// The user's rules file: how it is shown, where it really is, and its text.
struct Source<'a> {
    shown: &'a str,
    real: Option<String>,
    text: String,
}

impl Source<'_> {
    /// An error at `pos` (else at the line that quotes `attr`, when exactly one does).
    fn error_at(&self, pos: Option<&Pos>, attr: &str, msg: String) -> Error {
        let msg = format!("{}: {msg}", quoted(attr));
        match pos {
            Some(p) if Some(&p.file) == self.real.as_ref() => Error::input(self.shown, Some(p.line), msg),
            Some(p) => Error::input(&p.file, Some(p.line), msg),
            None => Error::input(self.shown, self.line_quoting(attr), msg),
        }
    }

    fn line_quoting(&self, attr: &str) -> Option<usize> {
        let needle = quoted(attr);
        let mut hits = self.text.match_indices(&needle);
        let (first, _) = hits.next()?;
        hits.next()
            .is_none()
            .then(|| crate::toml_text::line_col(&self.text, first).0)
    }

    /// A position as shown: the user's file by the name they gave it.
    fn show(&self, file: &str) -> String {
        if Some(file) == self.real.as_deref() {
            self.shown.to_owned()
        } else {
            file.to_owned()
        }
    }
}

fn quoted(attr: &str) -> String {
    serde_json::Value::String(attr.to_owned()).to_string()
}

/// Opens the fleet at `root` as `bento secret --rules FILE` names it: an agenix
/// `secrets.nix` (which brings its own keys, ciphertexts next to it) is read here; without
/// `rules_file`, or with any other file, [`Fleet::open`] reads a `secrets.toml`.
pub fn open(root: &Path, rules_file: Option<&Path>) -> Result<Fleet> {
    match rules_file.filter(|p| p.extension().is_some_and(|e| e == "nix")) {
        Some(nix) => Ok(load(nix)?.named_on_the_command_line()),
        None => Fleet::open(root, rules_file),
    }
}

/// Loads an agenix repository from its `secrets.nix`.
pub fn load(rules_path: &Path) -> Result<Fleet> {
    let shown = rules_path.display().to_string();
    let source = Source {
        shown: &shown,
        real: rules_path
            .canonicalize()
            .ok()
            .and_then(|p| p.to_str().map(str::to_owned)),
        text: crate::fleet_files::read_text(rules_path, crate::fleet_files::Kind::Toml)
            .map_err(|e| e.at(&shown))?,
    };
    let entries = evaluate(rules_path, &source)?;

    let mut notes = Vec::new();
    let ignored: Vec<String> = entries
        .iter()
        .flat_map(|(attr, e)| {
            e.attrs
                .iter()
                .filter(|a| !KNOWN.contains(&a.as_str()))
                .map(move |a| format!("{}.{a}", quoted(attr)))
        })
        .collect();
    if !ignored.is_empty() {
        notes.push(Note::Ignored {
            rules: shown.clone(),
            attrs: ignored,
        });
    }
    let names = secret_names(entries.keys().map(String::as_str));
    for (attr, name) in &names {
        if attr.strip_suffix(".age").unwrap_or(attr) != name {
            notes.push(Note::Renamed {
                rules: shown.clone(),
                file: (*attr).to_owned(),
                name: name.clone(),
            });
        }
    }

    let mut key_names: BTreeMap<RecipientKey, String> = BTreeMap::new();
    let mut hosts: BTreeMap<String, Vec<RecipientKey>> = BTreeMap::new();
    let mut secrets = BTreeMap::new();
    for (attr, entry) in &entries {
        let bad = |pos: Option<&Pos>, msg: String| source.error_at(pos.or(entry.pos.as_ref()), attr, msg);
        if let Some(kind) = &entry.kind {
            return Err(bad(
                None,
                format!("is {}; write {{ publicKeys = [ … ]; }}", article(kind)),
            ));
        }
        if !RelPath::is_valid(attr) {
            return Err(bad(
                None,
                "must be a relative path inside this directory, without `..`".into(),
            ));
        }
        let lines = key_lines(&entry.public_keys).map_err(|e| bad(entry.keys_pos.as_ref(), e.to_string()))?;
        let armor = match &entry.armor {
            Value::Bool(b) => *b,
            other => {
                return Err(bad(
                    None,
                    format!("armor is {}; write true or false", type_of(other)),
                ))
            }
        };
        let mut recipients = Vec::new();
        for line in lines {
            let key = RecipientKey::parse(line)
                .map_err(|e| bad(entry.keys_pos.as_ref(), format!("publicKeys: {e}")))?;
            let who = key_names.entry(key.clone()).or_insert_with(|| {
                let n = unique_name(line, &key, &hosts);
                hosts.insert(n.clone(), vec![key.clone()]);
                n
            });
            recipients.push(Member {
                name: who.clone(),
                role: Role::Host,
                via: crate::rules::Via::Direct,
            });
        }
        recipients.sort();
        recipients.dedup();
        if recipients.is_empty() {
            return Err(bad(
                entry.keys_pos.as_ref(),
                "publicKeys is empty: nobody could decrypt it".into(),
            ));
        }
        let name = names[attr.as_str()].clone();
        let rule = SecretRule {
            name: name.clone(),
            file: attr.clone(),
            recipients,
            attrs: FileAttrs::default(),
            armor,
            needed_for_users: false,
            generate: None,
        };
        secrets.insert(name, rule);
    }
    let dir = rules_path.parent().unwrap_or(Path::new(""));
    let base = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let rules = Rules {
        secrets,
        ..Rules::default()
    };
    let dir_shown = dir.display().to_string();
    Ok(Fleet::from_agenix(
        base.to_path_buf(),
        dir_shown,
        shown,
        hosts,
        rules,
        notes,
    ))
}

/// What is wrong with an entry's `publicKeys`.
#[derive(Debug, thiserror::Error)]
enum KeysError {
    #[error("has no publicKeys: write publicKeys = [ \"ssh-ed25519 …\" ];")]
    Missing,
    #[error("publicKeys: item {} is {kind}, not a key line (a string)", .index + 1)]
    NotALine { index: usize, kind: String },
    #[error("publicKeys is {0}; write a list: publicKeys = [ … ];")]
    NotAList(String),
}

/// The key lines of `publicKeys`, or what is wrong with it.
fn key_lines(value: &Value) -> Result<Vec<&str>, KeysError> {
    match value {
        Value::Null => Err(KeysError::Missing),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(index, v)| match v {
                Value::String(s) => Ok(s.as_str()),
                other => Err(KeysError::NotALine {
                    index,
                    kind: type_of(other),
                }),
            })
            .collect(),
        other => Err(KeysError::NotAList(type_of(other))),
    }
}

/// A Nix type name with its article: `an int`, `a list`.
fn article(t: &str) -> String {
    if t.starts_with(['a', 'e', 'i', 'o', 'u']) {
        format!("an {t}")
    } else {
        format!("a {t}")
    }
}

/// What Nix type a value the wrapper produced stands for, with an article.
fn type_of(value: &Value) -> String {
    match value {
        Value::String(_) => "a string".into(),
        Value::Bool(_) => "a bool".into(),
        Value::Array(_) => "a list".into(),
        Value::Null => "null".into(),
        Value::Object(o) => o
            .get("type")
            .and_then(Value::as_str)
            .map_or("a set".into(), article),
        Value::Number(_) => "a number".into(),
    }
}

fn evaluate(path: &Path, source: &Source) -> Result<BTreeMap<String, RawEntry>> {
    let shown = source.shown;
    let Some(real) = &source.real else {
        return Err(Error::input(shown, None, "cannot resolve its absolute path"));
    };
    let dir = Path::new(real).parent().unwrap_or(Path::new("/"));
    let out = nix_instantiate()
        .ok_or_else(|| std::io::ErrorKind::NotFound.into())
        .and_then(|exe| confined_evaluation(&exe, dir).arg(real).output())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::input(
                shown,
                None,
                "reading agenix rules needs `nix-instantiate`, which is not installed \
                 (install Nix; on Debian: apt-get install nix-bin)",
            ),
            _ => Error::io("nix-instantiate", e),
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let (kind, pos) = nix_error(&stderr);
        let msg = format!(
            "nix-instantiate failed: {} (Nix's own message is not shown, as it may quote what \
             the file computed; run `nix-instantiate --eval --strict` on it to read it)",
            kind.describe()
        );
        return Err(match pos {
            Some(p) => Error::input(
                source.show(&p.file),
                Some(p.line),
                format!("column {}: {msg}", p.column),
            ),
            None => Error::input(shown, None, msg),
        });
    }
    let evaluated: Evaluated = serde_json::from_slice(&out.stdout).map_err(|e| {
        Error::input(
            shown,
            None,
            format!(
                "unexpected output from nix-instantiate ({e}) for {}",
                path.display()
            ),
        )
    })?;
    evaluated.entries.ok_or_else(|| {
        Error::input(
            shown,
            None,
            format!(
                "not an agenix rules file: it is {}; expected {{ \"name.age\".publicKeys = [ … ]; }}",
                article(&evaluated.kind.unwrap_or_default())
            ),
        )
    })
}

/// `nix-instantiate` set up to evaluate a contributor's `secrets.nix` as untrusted code
/// (`bento secret verify --rules secrets.nix` is a CI check of pull requests): a clean
/// environment (no tokens, no `NIX_PATH`), restricted evaluation that reads only files under
/// `dir` (the rules file's own directory), no URI at all, no import from derivation, no
/// substituter, no build and no write to the store. `builtins.getEnv` answers `""`.
fn confined_evaluation(nix_instantiate: &Path, dir: &Path) -> Command {
    let mut nix = Command::new(nix_instantiate);
    nix.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/homeless-shelter")
        .args(["--eval", "--strict", "--json", "--readonly-mode", "--show-trace"])
        .args(["--option", "restrict-eval", "true"])
        .args(["--option", "allowed-uris", ""])
        .args(["--option", "allow-import-from-derivation", "false"])
        .args(["--option", "allow-unsafe-native-code-during-evaluation", "false"])
        .args(["--option", "substituters", ""])
        .args(["--option", "max-jobs", "0"])
        .arg("-I")
        .arg({
            let mut entry = std::ffi::OsString::from("bento-rules=");
            entry.push(dir);
            entry
        })
        .args(["--expr", WRAPPER, "--argstr", "file"]);
    nix
}

/// `nix-instantiate` as found on the caller's `PATH` (absolute entries only: a relative
/// entry would resolve inside whatever directory bento runs in, such as a fleet checkout),
/// so that the child's own environment can be emptied.
fn nix_instantiate() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join("nix-instantiate"))
        .find(|exe| exe.is_file())
}

/// What kind of Nix evaluation error happened, in bento's own words. Nix's message text is
/// never shown: a contributor's `throw` or a value it computed could carry anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NixFailure {
    Syntax,
    UndefinedVariable,
    Restricted,
    Other,
}

impl NixFailure {
    fn of(message: &str) -> NixFailure {
        if message.starts_with("syntax error") {
            NixFailure::Syntax
        } else if message.starts_with("undefined variable") {
            NixFailure::UndefinedVariable
        } else if message.contains("forbidden in restricted mode") {
            NixFailure::Restricted
        } else {
            NixFailure::Other
        }
    }

    fn describe(self) -> &'static str {
        match self {
            NixFailure::Syntax => "a syntax error",
            NixFailure::UndefinedVariable => "an undefined variable",
            NixFailure::Restricted => {
                "it reads a file outside its own directory, a URI or the store, which bento's \
                 evaluation refuses (keep imported files beside it)"
            }
            NixFailure::Other => "an evaluation error",
        }
    }
}

/// The kind and the position of a Nix evaluation error, from nix-instantiate's stderr.
///
/// The message is the last `error: …` line (newer Nix prints `error:` alone, then a trace,
/// then the error itself). The position is the first `at FILE:LINE:COL:` after it, else
/// the last one before it; positions in the wrapper (`«string»`) are not the user's.
fn nix_error(stderr: &str) -> (NixFailure, Option<Pos>) {
    let lines: Vec<&str> = stderr.lines().map(str::trim).collect();
    let found = lines.iter().enumerate().rev().find_map(|(i, l)| {
        let msg = l.strip_prefix("error:")?.trim();
        (!msg.is_empty()).then_some((i, msg))
    });
    let Some((at, msg)) = found else {
        return (NixFailure::Other, None);
    };
    let pos_of = |l: &&str| -> Option<Pos> {
        let rest = l.strip_prefix("at ")?.strip_suffix(':')?;
        let mut parts = rest.rsplitn(3, ':');
        let column = parts.next()?.parse().ok()?;
        let line = parts.next()?.parse().ok()?;
        let file = parts.next()?;
        (!file.starts_with('«')).then(|| Pos {
            file: file.to_owned(),
            line,
            column,
        })
    };
    let pos = lines[at + 1..]
        .iter()
        .find_map(pos_of)
        .or_else(|| lines[..at].iter().rev().find_map(pos_of));
    (NixFailure::of(msg), pos)
}

/// `s` with every character outside `[A-Za-z0-9._-]` replaced by `-`, and no leading `.`
/// or `-`.
fn sanitize(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    s.trim_start_matches(['.', '-']).to_owned()
}

/// bento's name for each secret attribute: the file name without `.age`, made valid
/// (characters outside `[A-Za-z0-9._-]`, `/` included, become `-`; leading `.` and `-`
/// are dropped), and unique (`-2`, `-3`… added). Names that are valid as they are keep
/// them, whatever the order.
pub fn secret_names<'a>(attrs: impl Iterator<Item = &'a str>) -> BTreeMap<&'a str, String> {
    let attrs: Vec<&str> = attrs.collect();
    let stem = |a: &'a str| a.strip_suffix(".age").unwrap_or(a);
    let mut out = BTreeMap::new();
    let mut taken = BTreeSet::new();
    for a in attrs.iter().filter(|a| SecretName::is_valid(stem(a))) {
        if taken.insert(stem(a).to_owned()) {
            out.insert(*a, stem(a).to_owned());
        }
    }
    let rest: Vec<&str> = attrs.iter().copied().filter(|a| !out.contains_key(a)).collect();
    for a in rest {
        let base = Some(sanitize(stem(a)))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "secret".into());
        let name = (1..)
            .map(|n| {
                if n == 1 {
                    base.clone()
                } else {
                    format!("{base}-{n}")
                }
            })
            .find(|n| !taken.contains(n))
            .unwrap_or(base);
        taken.insert(name.clone());
        out.insert(a, name);
    }
    out
}

/// A file-name-safe name for a key: its ssh comment, else a fingerprint prefix.
fn unique_name(line: &str, key: &RecipientKey, taken: &BTreeMap<String, Vec<RecipientKey>>) -> String {
    let fp = sanitize(key.fingerprint().trim_start_matches("SHA256:"));
    let comment = line
        .trim_start()
        .starts_with("ssh-")
        .then(|| line.split_whitespace().nth(2));
    let base = comment
        .flatten()
        .map(sanitize)
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| format!("key-{}", &fp[..8]));
    if !taken.contains_key(&base) {
        return base;
    }
    format!("{base}-{}", &fp[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_and_unique() {
        let attrs = [
            "-leading-hyphen-filename.age",
            "leading-hyphen-filename.age",
            "hosts/web.age",
            ".hidden",
            "sp ace.age",
            "-.age",
            "plain.age",
        ];
        let names = secret_names(attrs.iter().copied());
        assert_eq!(names["leading-hyphen-filename.age"], "leading-hyphen-filename");
        assert_eq!(names["-leading-hyphen-filename.age"], "leading-hyphen-filename-2");
        assert_eq!(names["hosts/web.age"], "hosts-web");
        assert_eq!(names[".hidden"], "hidden");
        assert_eq!(names["sp ace.age"], "sp-ace");
        assert_eq!(names["-.age"], "secret");
        assert_eq!(names["plain.age"], "plain");
        assert!(names.values().all(|n| SecretName::is_valid(n)));
    }

    #[test]
    fn nix_errors_keep_kind_and_position() {
        // Nix 2.8: the message, then where.
        let old = "warning: the group 'nixbld' specified in 'build-users-group' does not exist\n\
                   error: undefined variable 'y'\n\n       at /r/secrets.nix:2:26:\n\n            1| let";
        let (kind, pos) = nix_error(old);
        assert_eq!(kind, NixFailure::UndefinedVariable);
        assert_eq!(
            pos,
            Some(Pos {
                file: "/r/secrets.nix".into(),
                line: 2,
                column: 26
            })
        );
        // Newer Nix: `error:` alone, a trace (through the wrapper), then the error.
        let new = "error:\n       … while calling the 'import' builtin\n         at «string»:3:11:\n\
                   \n       … while evaluating\n         at /r/secrets.nix:1:1:\n\n       \
                   error: syntax error, unexpected end of file\n       at /r/secrets.nix:4:1:\n";
        let (kind, pos) = nix_error(new);
        assert_eq!(kind, NixFailure::Syntax);
        assert_eq!(pos.map(|p| (p.line, p.column)), Some((4, 1)));
        // No position at all (a `throw`): its text is the contributor's, never repeated.
        assert_eq!(nix_error("error: boom\n"), (NixFailure::Other, None));
        let restricted = "error: access to absolute path '/root/.ssh/id' is forbidden in \
                          restricted mode\n\n       at /r/secrets.nix:3:9:\n";
        assert_eq!(nix_error(restricted).0, NixFailure::Restricted);
    }

    #[test]
    fn types_are_named() {
        assert_eq!(type_of(&serde_json::json!({"type": "int"})), "an int");
        assert_eq!(type_of(&serde_json::json!("x")), "a string");
        assert!(key_lines(&serde_json::json!("ssh-ed25519 AAAA"))
            .unwrap_err()
            .to_string()
            .contains("a string"));
        assert!(key_lines(&serde_json::json!(["a", {"type": "path"}]))
            .unwrap_err()
            .to_string()
            .contains("item 2 is a path"));
    }
}
