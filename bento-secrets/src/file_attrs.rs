//! The file attributes shared by secrets and templates in `secrets.toml`: `owner`,
//! `group`, `mode` and `path`, each checked with its position.

use toml::Spanned;

use crate::error::Error;
use crate::mode::{parse_mode, SPECIAL_BITS};
use crate::names::{valid_account, AbsPath};

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
pub(crate) fn checked_mode(key: &str, text: &str) -> std::result::Result<u32, ModeError> {
    let (key, text) = (key.to_owned(), text.to_owned());
    let Some(bits) = parse_mode(&text) else {
        return Err(ModeError::NotOctal { key, text });
    };
    if bits & SPECIAL_BITS != 0 {
        return Err(ModeError::Special { key, text });
    }
    Ok(bits)
}

/// The `owner`, `group`, `mode` and `path` of a secret's or a template's file, checked.
pub(crate) struct FileAttrs {
    pub owner: String,
    pub group: Option<String>,
    pub mode: u32,
    pub path: Option<AbsPath>,
}

/// Checks the file attributes of `key` (`db-password`, `templates.app-env`), each error
/// at its own position.
pub(crate) fn file_attrs(
    key: &str,
    owner: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    at: &dyn Fn(usize, String) -> Error,
) -> std::result::Result<FileAttrs, Error> {
    let owner = match owner {
        Some(o) if !valid_account(o.get_ref()) => {
            return Err(at(
                o.span().start,
                format!("{key}.owner `{}` is not a valid user name", o.get_ref()),
            ))
        }
        Some(o) => o.into_inner(),
        None => "root".to_owned(),
    };
    let group = match group {
        Some(g) if !valid_account(g.get_ref()) => {
            return Err(at(
                g.span().start,
                format!("{key}.group `{}` is not a valid group name", g.get_ref()),
            ))
        }
        g => g.map(Spanned::into_inner),
    };
    let mode = match mode {
        Some(m) => checked_mode(key, m.get_ref()).map_err(|why| at(m.span().start, why.to_string()))?,
        None => 0o400,
    };
    let path = match path {
        Some(p) => {
            let start = p.span().start;
            Some(AbsPath::try_from(p.into_inner()).map_err(|e| at(start, format!("{key}.{e}")))?)
        }
        None => None,
    };
    Ok(FileAttrs {
        owner,
        group,
        mode,
        path,
    })
}
