//! `bento admin add|list|remove`: the admins' recipient keys in `keys/admins/`, and their
//! names in the `admins` list of `secrets/secrets.toml`.
//!
//! The rules file is the admin's own, with comments and layout: it is edited with
//! `toml_edit` (the parser `toml` itself is built on, so no new dependency), which
//! rewrites only the `admins` array and leaves every other byte as it was.

use std::path::Path;

use toml_edit::{Array, DocumentMut, Item, Value};

use crate::atomic::write_atomic;
use crate::error::{Error, Result};
use crate::fleet::{Fleet, Registered, ADMIN_KEYS_DIR, RULES_FILE};
use crate::fleet_lock::FleetLock;
use crate::keys::RecipientKey;
use crate::names::valid_name;
use crate::rules::Role;

/// The key file of admin `name`, relative to the fleet.
pub fn key_file(name: &str) -> String {
    format!("{ADMIN_KEYS_DIR}/{name}.pub")
}

/// Registers admin `name` with `keys` (read from `source`, shown in errors): writes
/// `keys/admins/NAME.pub` and adds the name to `admins` in `secrets/secrets.toml`. Refuses,
/// changing nothing, an existing admin, a name taken by a host, and a key that already
/// belongs to a host or another admin.
pub fn add(root: &Path, _held: &FleetLock, name: &str, keys: &[RecipientKey], source: &str) -> Result<()> {
    let shown = key_file(name);
    if !valid_name(name) {
        return Err(Error::input(
            &shown,
            None,
            format!("bad admin name `{name}`: use letters, digits, `.`, `_` and `-`"),
        ));
    }
    let path = root.join(&shown);
    if path.exists() {
        return Err(Error::input(
            &shown,
            None,
            "exists already; edit that file to change this admin's keys (then `bento secret rekey`)",
        ));
    }
    Registered::read(root)?.check_new(&shown, keys, source)?;
    let rules_path = root.join(RULES_FILE);
    let text = read_rules(&rules_path)?;
    let edited = with_admin(&text, name)?;

    let lines: String = keys.iter().map(|k| format!("{}\n", k.text())).collect();
    std::fs::create_dir_all(root.join(ADMIN_KEYS_DIR)).map_err(|e| Error::io(ADMIN_KEYS_DIR, e))?;
    write_atomic(&path, lines.as_bytes(), 0o644).map_err(|e| Error::io(&shown, e))?;
    if let Some(edited) = edited {
        if let Err(e) = write_atomic(&rules_path, edited.as_bytes(), 0o644) {
            // Keep "nothing changed" true: the key file without its name is undone.
            let _ = std::fs::remove_file(&path);
            return Err(Error::io(RULES_FILE, e));
        }
    }
    Ok(())
}

/// Removes admin `name`: from `admins` in `secrets/secrets.toml`, then its key file.
/// Refused while a secret's `recipients` names the admin: removing the key would leave
/// that rule naming nobody, so the rules would no longer load.
pub fn remove(fleet: &Fleet, _held: &FleetLock, name: &str) -> Result<()> {
    let shown = key_file(name);
    fleet.check_removable(Role::Admin, name, &shown)?;
    let rules_path = fleet.root().join(RULES_FILE);
    let text = read_rules(&rules_path)?;
    if let Some(edited) = without_admin(&text, name)? {
        write_atomic(&rules_path, edited.as_bytes(), 0o644).map_err(|e| Error::io(RULES_FILE, e))?;
    }
    std::fs::remove_file(fleet.root().join(&shown)).map_err(|e| Error::io(&shown, e))
}

fn read_rules(path: &Path) -> Result<String> {
    crate::fleet_files::read_text(path, crate::fleet_files::Kind::Toml).map_err(|e| {
        if e.is_not_found() {
            Error::input(
                RULES_FILE,
                None,
                "not found: run `bento init` first, or point --fleet at your fleet repo",
            )
        } else {
            e.at(RULES_FILE)
        }
    })
}

fn parse(text: &str) -> Result<DocumentMut> {
    text.parse::<DocumentMut>().map_err(|e| {
        let line = e
            .span()
            .map(|span| crate::toml_text::line_col(text, span.start).0);
        Error::input(RULES_FILE, line, e.message().replace('\n', " "))
    })
}

/// The `admins` array of a document, or an error naming its line when it is not one.
fn admins_array<'a>(text: &str, doc: &'a mut DocumentMut) -> Result<Option<&'a mut Array>> {
    match doc.get_mut("admins") {
        None => Ok(None),
        Some(item) => match item.as_array_mut() {
            Some(array) => Ok(Some(array)),
            None => Err(Error::input(
                RULES_FILE,
                crate::toml_text::line_col(text, text.find("admins").unwrap_or(0))
                    .0
                    .into(),
                "`admins` must be a list of names, like admins = [\"alice\"]",
            )),
        },
    }
}

/// `text` with `name` appended to `admins` (the list created when missing), or `None`
/// when it is listed already. Only the array changes; a new element is laid out like
/// the last one (on its own line when the list is multi-line).
pub fn with_admin(text: &str, name: &str) -> Result<Option<String>> {
    let mut doc = parse(text)?;
    let Some(array) = admins_array(text, &mut doc)? else {
        let mut array = Array::new();
        array.push(name);
        let mut item = Item::Value(Value::Array(array));
        if let Some(value) = item.as_value_mut() {
            value.decor_mut().set_prefix(" ");
        }
        // At the very top, before any table: where `bento init` puts it.
        let mut top = DocumentMut::new();
        top.insert("admins", item);
        let line = top.to_string();
        let (comments, rest) = leading_comments(text);
        let gap = if rest.is_empty() || rest.starts_with('\n') {
            ""
        } else {
            "\n"
        };
        return Ok(Some(format!("{comments}{line}{gap}{rest}")));
    };
    if array.iter().any(|v| v.as_str() == Some(name)) {
        return Ok(None);
    }
    let mut value = Value::from(name);
    value.decor_mut().set_prefix("");
    value.decor_mut().set_suffix("");
    let trailing_comma = array.trailing_comma();
    if let Some(last) = array.len().checked_sub(1).and_then(|i| array.get_mut(i)) {
        let before = last.decor().prefix().and_then(|p| p.as_str()).unwrap_or("");
        let prefix = match before.rfind('\n') {
            Some(i) => format!("\n{}", &before[i + 1..]),
            None => " ".to_owned(),
        };
        value.decor_mut().set_prefix(prefix);
        if !trailing_comma {
            // What stood between the last element and `]` now follows the new one.
            let after = last
                .decor()
                .suffix()
                .and_then(|p| p.as_str())
                .unwrap_or("")
                .to_owned();
            last.decor_mut().set_suffix("");
            value.decor_mut().set_suffix(after);
        }
    }
    array.push_formatted(value);
    Ok(Some(doc.to_string()))
}

/// `text` without `name` in `admins`, or `None` when it is not listed. A comment on the
/// line of a remaining element stays with it.
pub fn without_admin(text: &str, name: &str) -> Result<Option<String>> {
    let mut doc = parse(text)?;
    let Some(array) = admins_array(text, &mut doc)? else {
        return Ok(None);
    };
    let Some(index) = array.iter().position(|v| v.as_str() == Some(name)) else {
        return Ok(None);
    };
    // The removed element's prefix holds the end of the line before it (its comment, if
    // any): hand it on to the element after it, or to the array's end.
    let prefix = array
        .get(index)
        .and_then(|v| v.decor().prefix())
        .and_then(|p| p.as_str())
        .unwrap_or("")
        .to_owned();
    array.remove(index);
    if let Some(next) = array.get_mut(index) {
        next.decor_mut().set_prefix(prefix);
    } else if prefix.contains('\n') {
        // It was the last one: keep the previous line's comment before `]`.
        let kept = &prefix[..prefix.rfind('\n').unwrap_or(0) + 1];
        let trailing = array.trailing().as_str().unwrap_or("");
        let closing = trailing.rfind('\n').map_or("", |i| &trailing[i..]);
        let closing = closing.strip_prefix('\n').unwrap_or(closing);
        array.set_trailing(format!("{kept}{closing}"));
    } else if index == 0 && array.is_empty() {
        array.set_trailing("");
        array.set_trailing_comma(false);
    }
    if index == 0 {
        if let Some(first) = array.get_mut(0) {
            let p = first.decor().prefix().and_then(|p| p.as_str()).unwrap_or("");
            if !p.contains('\n') {
                first.decor_mut().set_prefix("");
            }
        }
    }
    Ok(Some(doc.to_string()))
}

/// The comment lines (and blank lines) at the top of `text`, and the rest.
fn leading_comments(text: &str) -> (&str, &str) {
    let mut end = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            end += line.len();
        } else {
            break;
        }
    }
    text.split_at(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_inline_keeping_everything_else() {
        let text = "# my rules\nadmins = [\"alice\"]  # the team\n\n[groups]\nweb = [\"web1\"] # front\n";
        assert_eq!(
            with_admin(text, "bob").unwrap().unwrap(),
            "# my rules\nadmins = [\"alice\", \"bob\"]  # the team\n\n[groups]\nweb = [\"web1\"] # front\n"
        );
        assert_eq!(with_admin(text, "alice").unwrap(), None);
        let empty = "admins = []\n[groups]\n";
        assert_eq!(
            with_admin(empty, "bob").unwrap().unwrap(),
            "admins = [\"bob\"]\n[groups]\n"
        );
    }

    #[test]
    fn adds_to_a_multi_line_list_on_its_own_line() {
        let text = "admins = [\n  \"alice\", # laptop\n  \"carol\",\n]\n";
        assert_eq!(
            with_admin(text, "bob").unwrap().unwrap(),
            "admins = [\n  \"alice\", # laptop\n  \"carol\",\n  \"bob\",\n]\n"
        );
        let no_comma = "admins = [\n  \"alice\"\n]\n";
        assert_eq!(
            with_admin(no_comma, "bob").unwrap().unwrap(),
            "admins = [\n  \"alice\",\n  \"bob\"\n]\n"
        );
    }

    #[test]
    fn creates_the_list_after_the_header_comments() {
        let text = "# rules\n# more\n\n[groups]\nweb = []\n";
        assert_eq!(
            with_admin(text, "bob").unwrap().unwrap(),
            "# rules\n# more\n\nadmins = [\"bob\"]\n\n[groups]\nweb = []\n"
        );
    }

    #[test]
    fn removes_keeping_comments_of_the_others() {
        let text = "admins = [\"alice\", \"bob\"] # team\n[groups]\n";
        assert_eq!(
            without_admin(text, "alice").unwrap().unwrap(),
            "admins = [\"bob\"] # team\n[groups]\n"
        );
        assert_eq!(
            without_admin(text, "bob").unwrap().unwrap(),
            "admins = [\"alice\"] # team\n[groups]\n"
        );
        assert_eq!(without_admin(text, "carol").unwrap(), None);
        let multi = "admins = [\n  \"alice\", # laptop\n  \"bob\", # desktop\n  \"carol\",\n]\n";
        assert_eq!(
            without_admin(multi, "bob").unwrap().unwrap(),
            "admins = [\n  \"alice\", # laptop\n  \"carol\",\n]\n"
        );
        assert_eq!(
            without_admin(multi, "carol").unwrap().unwrap(),
            "admins = [\n  \"alice\", # laptop\n  \"bob\", # desktop\n]\n"
        );
        assert_eq!(
            without_admin("admins = [\"alice\"]\n", "alice").unwrap().unwrap(),
            "admins = []\n"
        );
    }
}
