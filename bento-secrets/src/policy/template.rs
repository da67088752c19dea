//! Templates: files that mix text with secrets, rendered on the host at activation.
//!
//! `[templates.NAME]` in `secrets.toml` gives the text (`content`, or `file` relative to
//! the fleet root), the hosts it is rendered on, and the rendered file's attributes.
//! Placeholders are `{{ secrets.NAME }}` (spaces inside the braces optional). Any other
//! `{{` is plain text; a `{{ secrets.` that does not make a placeholder is an error.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;
use zeroize::Zeroizing;

use crate::directory::Directory;
use crate::error::Error;
use crate::file_attrs::{file_attrs, FileAttrs};
use crate::fleet_files::{Kind, Tracked};
use crate::mode::WORLD_READABLE;
use crate::names::{RelPath, SecretName};
use crate::toml_text::line_col;

/// One `[templates.NAME]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateRule {
    /// The template's name; it renders to `<root>/templates/<name>`.
    pub name: String,
    /// The hosts it is rendered on, resolved from names and `@group`s, sorted.
    pub hosts: Vec<String>,
    /// Where the text comes from: `None` for `content`, else the `file`, relative to the
    /// fleet root.
    pub file: Option<String>,
    /// The text with its placeholders (read from `file` when the fleet is loaded).
    pub text: String,
    /// The secrets its placeholders name, sorted.
    pub secrets: BTreeSet<String>,
    /// How the rendered file lands: owner, group, mode, path, units.
    pub attrs: FileAttrs,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTemplate {
    #[serde(default)]
    hosts: Vec<Spanned<String>>,
    content: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
    owner: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    #[serde(default)]
    restart_units: Vec<Spanned<String>>,
    #[serde(default)]
    reload_units: Vec<Spanned<String>>,
}

/// One piece of a template: text, or a secret's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment<'a> {
    /// Text, as written.
    Text(&'a str),
    /// `{{ secrets.NAME }}`: the named secret.
    Secret(&'a str),
}

/// Splits a template into text and placeholders. The error gives the byte offset of the
/// bad placeholder and what is wrong.
pub fn parse(text: &str) -> Result<Vec<Segment<'_>>, (usize, String)> {
    let mut out = Vec::new();
    let mut rest = 0;
    let mut search = 0;
    while let Some(found) = text[search..].find("{{") {
        let open = search + found;
        let inner = text[open + 2..].trim_start_matches([' ', '\t']);
        let Some(after) = inner.strip_prefix("secrets.") else {
            search = open + 2;
            continue;
        };
        let name_len = after
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || b"._-".contains(b))
            .count();
        let name = &after[..name_len];
        let close = after[name_len..].trim_start_matches([' ', '\t']);
        if !SecretName::is_valid(name) || !close.starts_with("}}") {
            return Err((
                open,
                "a placeholder is written {{ secrets.NAME }} (NAME: letters, digits, `.`, `_`, `-`)".into(),
            ));
        }
        if rest < open {
            out.push(Segment::Text(&text[rest..open]));
        }
        out.push(Segment::Secret(name));
        rest = text.len() - close.len() + 2;
        search = rest;
    }
    if rest < text.len() {
        out.push(Segment::Text(&text[rest..]));
    }
    Ok(out)
}

/// The secrets a template's placeholders name.
fn used(segments: &[Segment<'_>]) -> BTreeSet<String> {
    segments
        .iter()
        .filter_map(|s| match s {
            Segment::Secret(n) => Some((*n).to_owned()),
            Segment::Text(_) => None,
        })
        .collect()
}

/// Renders parsed `segments` with the secrets' contents from `secret`; the error names
/// the first secret it has none for.
pub fn render<'a, S: AsRef<[u8]>>(
    segments: &[Segment<'a>],
    secret: impl Fn(&str) -> Option<S>,
) -> Result<Zeroizing<Vec<u8>>, &'a str> {
    // Sized before the first byte: a growing Vec would reallocate and free earlier copies of
    // the plaintext without zeroing them.
    let mut len = 0;
    for s in segments {
        len += match s {
            Segment::Text(t) => t.len(),
            Segment::Secret(name) => secret(name).ok_or(*name)?.as_ref().len(),
        };
    }
    let mut out = Zeroizing::new(Vec::with_capacity(len));
    for s in segments {
        match s {
            Segment::Text(t) => out.extend_from_slice(t.as_bytes()),
            Segment::Secret(name) => out.extend_from_slice(secret(name).ok_or(*name)?.as_ref()),
        }
    }
    debug_assert_eq!(out.len(), len, "no reallocation");
    Ok(out)
}

impl TemplateRule {
    /// Validates one `[templates.NAME]` table (`at` makes a file:line error from an
    /// offset). A `file` template's text is read later, by [`TemplateRule::read_file`].
    pub(crate) fn parse(
        name: String,
        name_offset: usize,
        raw: RawTemplate,
        groups: &BTreeMap<String, Vec<String>>,
        dir: &dyn Directory,
        at: &dyn Fn(usize, String) -> Error,
    ) -> Result<TemplateRule, Error> {
        let key = format!("templates.{name}");
        let mut hosts = BTreeSet::new();
        let mut seen = BTreeSet::new();
        for h in &raw.hosts {
            let entry = h.get_ref();
            if !seen.insert(entry) {
                return Err(at(
                    h.span().start,
                    format!("`{entry}` is listed twice in {key}.hosts"),
                ));
            }
            if let Some(g) = entry.strip_prefix('@') {
                let members = groups.get(g).ok_or_else(|| {
                    at(
                        h.span().start,
                        format!(
                            "unknown group `@{g}` in {key}.hosts: define it under [groups] or fix the name"
                        ),
                    )
                })?;
                hosts.extend(members.iter().cloned());
            } else if dir.is_host(entry) {
                hosts.insert(entry.clone());
            } else {
                return Err(at(
                    h.span().start,
                    format!("unknown host `{entry}` in {key}.hosts: no keys/hosts/{entry}.pub (groups are written @name)"),
                ));
            }
        }
        if hosts.is_empty() {
            return Err(at(
                name_offset,
                format!("{key} has no hosts: list hosts or @groups in `hosts`"),
            ));
        }
        let (file, text, secrets) = match (raw.content, raw.file) {
            (Some(c), None) => {
                let segments = parse(c.get_ref())
                    .map_err(|(_, msg)| at(c.span().start, format!("{key}.content: {msg}")))?;
                let secrets = used(&segments);
                (None, c.into_inner(), secrets)
            }
            (None, Some(f)) if RelPath::is_valid(f.get_ref()) => {
                (Some(f.into_inner()), String::new(), BTreeSet::new())
            }
            (None, Some(f)) => {
                return Err(at(
                    f.span().start,
                    format!(
                        "{key}.file `{}` must be a relative path inside the fleet without `..`",
                        f.get_ref()
                    ),
                ))
            }
            _ => {
                return Err(at(
                    name_offset,
                    format!(
                        "{key} needs exactly one of `content` (the text) or `file` (a path in the fleet)"
                    ),
                ))
            }
        };
        let attrs = file_attrs(
            &key,
            raw.owner,
            raw.group,
            raw.mode,
            raw.path,
            raw.restart_units,
            raw.reload_units,
            at,
        )?;
        Ok(TemplateRule {
            name,
            hosts: hosts.into_iter().collect(),
            file,
            text,
            secrets,
            attrs,
        })
    }

    /// For a `file` template: reads its text from the fleet rooted at `root` and finds its
    /// placeholders; errors name the file and line.
    pub fn read_file(&mut self, published: &Tracked) -> Result<(), Error> {
        let Some(file) = &self.file else { return Ok(()) };
        let bytes = published
            .read(Path::new(file), Kind::Template)
            .map_err(|e| Error::input(file.clone(), None, format!("templates.{}.file: {e}", self.name)))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::input(file.clone(), None, "a template must be UTF-8 text".to_owned()))?;
        let segments = parse(&text)
            .map_err(|(offset, msg)| Error::input(file.clone(), Some(line_col(&text, offset).0), msg))?;
        self.secrets = used(&segments);
        self.text = text;
        Ok(())
    }

    /// Warnings about the rendered file's mode, each naming the template (`rules_shown`:
    /// the rules file): readable by every user of the host, or wider than the mode of a
    /// secret it holds (bits for the group or others that the secret does not grant;
    /// `secret_mode` gives a secret's mode by name).
    pub fn mode_warnings(&self, secret_mode: impl Fn(&str) -> Option<u32>, rules_shown: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self.attrs.mode & WORLD_READABLE != 0 {
            out.push(format!(
                "{rules_shown}: templates.{}.mode \"{:04o}\" lets every user of the host read the rendered \
                 template and the secrets in it; use e.g. \"0440\" with a `group`",
                self.name, self.attrs.mode
            ));
        }
        let wider = self
            .secrets
            .iter()
            .filter_map(|name| Some((name, secret_mode(name)?)))
            .find(|(_, mode)| self.attrs.mode & !mode & 0o077 != 0);
        if let Some((secret, secret_mode)) = wider {
            out.push(format!(
                "{rules_shown}: templates.{}.mode \"{:04o}\" is wider than secrets.{}.mode \"{:04o}\", \
                 a secret it renders: more users may read it in the template; narrow the template's mode",
                self.name, self.attrs.mode, secret, secret_mode
            ));
        }
        out
    }

    /// Where the text is, as shown to the user.
    pub fn shown(&self, rules_shown: &str) -> String {
        self.file.clone().unwrap_or_else(|| rules_shown.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_file_is_read_only_inside_the_fleet_and_bounded() {
        let fleet = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("id_ed25519"), "PRIVATE").unwrap();
        std::fs::create_dir(fleet.path().join("templates")).unwrap();
        std::fs::write(fleet.path().join("templates/ok.env"), "A=1\n").unwrap();
        std::os::unix::fs::symlink("ok.env", fleet.path().join("templates/inside.env")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("id_ed25519"),
            fleet.path().join("templates/key.env"),
        )
        .unwrap();
        std::fs::write(
            fleet.path().join("templates/big.env"),
            vec![b'x'; 1024 * 1024 + 1],
        )
        .unwrap();
        let published = Tracked::of(fleet.path()).unwrap();
        let read = |rel: &str| published.read(Path::new(rel), Kind::Template);
        assert_eq!(read("templates/ok.env").unwrap(), b"A=1\n");
        assert_eq!(read("templates/inside.env").unwrap(), b"A=1\n");
        let e = read("templates/key.env").unwrap_err();
        assert!(e.to_string().contains("outside the fleet"), "{e}");
        let e = read("templates/big.env").unwrap_err();
        assert!(e.to_string().contains("larger than 1024 KiB"), "{e}");
        let e = read("templates").unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn placeholders_with_and_without_spaces() {
        let t = "a={{ secrets.db }}\nb={{secrets.x-y.z}} {{ other }} {{";
        let segs = parse(t).unwrap();
        assert_eq!(
            segs,
            [
                Segment::Text("a="),
                Segment::Secret("db"),
                Segment::Text("\nb="),
                Segment::Secret("x-y.z"),
                Segment::Text(" {{ other }} {{"),
            ]
        );
        let out = render(&segs, |n| Some(format!("<{n}>"))).unwrap();
        assert_eq!(&out[..], b"a=<db>\nb=<x-y.z> {{ other }} {{");
        assert_eq!(render(&segs, |n| (n == "db").then_some("v")), Err("x-y.z"));
        assert_eq!(parse("{{secrets.a}}{{secrets.b}}").unwrap().len(), 2);
    }

    #[test]
    fn malformed_placeholders_are_errors() {
        for bad in [
            "x {{ secrets.db }",
            "{{ secrets. }}",
            "{{ secrets.db x }}",
            "{{ secrets... }}",
        ] {
            let (offset, msg) = parse(bad).unwrap_err();
            assert_eq!(offset, bad.find("{{").unwrap(), "{bad}");
            assert!(msg.contains("{{ secrets.NAME }}"), "{msg}");
        }
    }
}
