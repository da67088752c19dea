//! The file attributes shared by secrets and templates in `secrets.toml`: `owner`,
//! `group`, `mode`, `path`, `restart_units` and `reload_units`, each checked with its position.

use toml::Spanned;

use crate::error::Error;
use crate::mode::{parse_mode, SPECIAL_BITS};
use crate::names::{valid_account, AbsPath, UnitName};

/// Why the `mode` of `key` (a secret's or a template's) is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ModeError {
    #[error("{key}.mode `{text}` is not an octal mode; write it as a string like \"0400\" or \"0440\"")]
    NotOctal { key: String, text: String },
    #[error(
        "{key}.mode \"{text}\": setuid/setgid/sticky bits are not allowed for secrets; use e.g. \"0400\""
    )]
    Special { key: String, text: String },
}

/// The mode of `key` from its `mode` text, or why it is refused: not an octal mode, or
/// with setuid/setgid/sticky bits, which no secret file may carry.
pub(crate) fn checked_mode(key: &str, text: &str) -> Result<u32, ModeError> {
    let (key, text) = (key.to_owned(), text.to_owned());
    let Some(bits) = parse_mode(&text) else {
        return Err(ModeError::NotOctal { key, text });
    };
    if bits & SPECIAL_BITS != 0 {
        return Err(ModeError::Special { key, text });
    }
    Ok(bits)
}

/// How an activated secret or rendered template lands on a host, checked: declared
/// once here, embedded in [`SecretRule`](crate::rules::SecretRule) and
/// [`TemplateRule`](crate::template::TemplateRule).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileAttrs {
    /// Owner of the file.
    pub owner: String,
    /// Group of the file; `None` means the owner's primary group.
    pub group: Option<String>,
    /// Mode of the file, without setuid/setgid/sticky bits.
    pub mode: u32,
    /// Optional stable path that gets a symlink to the file.
    pub path: Option<AbsPath>,
    /// Units restarted when the content changes.
    pub restart_units: Vec<String>,
    /// Units reloaded when the content changes.
    pub reload_units: Vec<String>,
}

/// What an unset attribute means: owned by root, mode 0400, no path, no units.
impl Default for FileAttrs {
    fn default() -> FileAttrs {
        FileAttrs {
            owner: "root".to_owned(),
            group: None,
            mode: 0o400,
            path: None,
            restart_units: Vec::new(),
            reload_units: Vec::new(),
        }
    }
}

/// Checks the file attributes of `key` (`db-password`, `templates.app-env`) as written,
/// each error at its own position; an absent one is its default.
#[allow(clippy::too_many_arguments)] // the six attributes, then whose they are and where
pub(crate) fn file_attrs(
    key: &str,
    owner: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    restart_units: Vec<Spanned<String>>,
    reload_units: Vec<Spanned<String>>,
    at: &dyn Fn(usize, String) -> Error,
) -> Result<FileAttrs, Error> {
    let account = |a: Spanned<String>, field: &str, kind: &str| {
        if valid_account(a.get_ref()) {
            return Ok(a.into_inner());
        }
        let msg = format!("{key}.{field} `{}` is not a valid {kind} name", a.get_ref());
        Err(at(a.span().start, msg))
    };
    let units = |list: Vec<Spanned<String>>, field: &str| -> Result<Vec<String>, Error> {
        let unit = |u: Spanned<String>| match u.get_ref().parse::<UnitName>() {
            Ok(_) => Ok(u.into_inner()),
            Err(e) => Err(at(u.span().start, format!("{key}.{field}: {e}"))),
        };
        list.into_iter().map(unit).collect()
    };
    let mut attrs = FileAttrs::default();
    if let Some(o) = owner {
        attrs.owner = account(o, "owner", "user")?;
    }
    attrs.group = group.map(|g| account(g, "group", "group")).transpose()?;
    if let Some(m) = mode {
        attrs.mode = checked_mode(key, m.get_ref()).map_err(|why| at(m.span().start, why.to_string()))?;
    }
    if let Some(p) = path {
        let start = p.span().start;
        attrs.path = Some(AbsPath::try_from(p.into_inner()).map_err(|e| at(start, format!("{key}.{e}")))?);
    }
    attrs.restart_units = units(restart_units, "restart_units")?;
    attrs.reload_units = units(reload_units, "reload_units")?;
    Ok(attrs)
}
