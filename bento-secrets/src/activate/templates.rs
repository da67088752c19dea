//! The templates of `bento activate`: rendered from the bundle's text and the secrets just
//! decrypted, into the same generation as the secrets:
//!
//! ```text
//! <root>/secrets.d/7/.templates/<name>     rendered, owner/group/mode set before writing
//! <root>/templates -> secrets/.templates   so the secrets' switch switches them too
//! ```
//!
//! A template whose secret failed (or whose text does not check out) keeps its previous
//! rendering and is reported as failed, like a secret.

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::path::Path;

use zeroize::Zeroizing;

use super::decrypt::ROOT;
use super::outcome::{Failure, NotReady, Report};
use crate::accounts::{self, Owner};
use crate::mode::Mode;
use crate::recipients_lock::sha256_hex;
use crate::secrets_tree::{self, SPECS_FILE};
use crate::spec::{SecretSpec, TemplateSpec};
use crate::template;

/// The directory of a generation holding its rendered templates.
pub const TEMPLATES_DIR: &str = ".templates";
/// The stable link to the current templates, under the activation root.
pub const TEMPLATES_LINK: &str = "templates";
/// Where [`TEMPLATES_LINK`] points, relative to the root.
pub const TEMPLATES_TARGET: &str = "secrets/.templates";

/// A rendered template (or a decrypted secret) ready to be written, with its owner; or
/// why it could not be made.
pub type Rendered = std::result::Result<(Zeroizing<Vec<u8>>, Owner), NotReady>;

/// How a template is named in the report's lists: `templates/<name>`.
pub fn label(name: &str) -> String {
    format!("templates/{name}")
}

/// Renders every template with the secrets decrypted for this activation (`secrets`
/// beside `plain`: the plaintext of each and its owner, or why there is none).
pub fn render_all(
    bundle: &Path,
    specs: &[TemplateSpec],
    secrets: &[SecretSpec],
    plain: &[Rendered],
) -> Vec<Rendered> {
    let lookup = |name: &str| -> Option<Option<&[u8]>> {
        let i = secrets.iter().position(|s| s.name == name)?;
        Some(plain[i].as_ref().ok().map(|(p, _)| &p[..]))
    };
    specs
        .iter()
        .map(|spec| {
            let file = bundle.join(&spec.file);
            let text = std::fs::read(&file).map_err(|source| NotReady::Read { path: file, source })?;
            if sha256_hex(&text) != spec.sha256 {
                return Err(NotReady::Tampered(spec.file.clone()));
            }
            let text = String::from_utf8(text).map_err(|_| NotReady::NotUtf8(spec.file.clone()))?;
            let segments = template::parse(&text).map_err(|(_, why)| NotReady::Template {
                file: spec.file.clone(),
                why,
            })?;
            for s in &segments {
                if let template::Segment::Secret(name) = s {
                    match lookup(name) {
                        None => return Err(NotReady::NoSuchSecret((*name).to_owned())),
                        Some(None) => return Err(NotReady::SecretFailed((*name).to_owned())),
                        Some(Some(_)) => {}
                    }
                }
            }
            let owner = accounts::resolve(&spec.owner, spec.group.as_deref())?;
            let rendered = template::render(&segments, |name| lookup(name).flatten())
                .map_err(|name| NotReady::SecretFailed(name.to_owned()))?;
            Ok((rendered, owner))
        })
        .collect()
}

/// The previous generation's templates directory, if it had one.
pub fn open_old(old_gen: Option<&OwnedFd>) -> Option<OwnedFd> {
    old_gen.and_then(|d| secrets_tree::open_subdir(d, TEMPLATES_DIR).ok())
}

/// Writes the rendered templates into generation `gen` (a failed one gets its previous
/// rendering from `old_dir`), classifying each in `report`. Returns the templates now
/// present; an I/O error (a full RAM filesystem) ends it.
pub fn write_all(
    gen: &OwnedFd,
    old_dir: Option<&OwnedFd>,
    specs: &[TemplateSpec],
    modes: &[Mode],
    rendered: Vec<Rendered>,
    chown: bool,
    report: &mut Report,
) -> std::io::Result<Vec<TemplateSpec>> {
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let dir = secrets_tree::create_subdir(gen, TEMPLATES_DIR, 0o751)?;
    let mut present = Vec::new();
    for ((spec, mode), result) in specs.iter().zip(modes).zip(rendered) {
        let name = label(&spec.name);
        let old = super::previous(old_dir, &spec.name);
        match result {
            Ok((content, owner)) => {
                secrets_tree::write_file(&dir, &spec.name, owner, mode.permissions(), &content, chown)?;
                super::classify(report, &name, old.as_ref().map(|(b, _)| &b[..]), &content);
                present.push(spec.clone());
            }
            Err(error) => {
                if old.is_some() {
                    super::carry_forward(&dir, &spec.name, old.as_ref(), chown)?;
                    present.push(spec.clone());
                }
                report.failed.push(Failure {
                    name,
                    error: error.to_string(),
                    kept_previous: old.is_some(),
                });
            }
        }
    }
    let json = serde_json::to_vec_pretty(&present).unwrap_or_default();
    secrets_tree::write_file(&dir, SPECS_FILE, ROOT, 0o400, &json, chown)?;
    Ok(present)
}

/// The templates of `old` that are not in `present`, as report labels.
pub fn removed(old: &[TemplateSpec], present: &[TemplateSpec]) -> Vec<String> {
    let names: BTreeSet<&str> = present.iter().map(|s| s.name.as_str()).collect();
    old.iter()
        .filter(|s| !names.contains(s.name.as_str()))
        .map(|s| label(&s.name))
        .collect()
}

/// The units of the added and changed templates: (restart, reload).
pub fn units(specs: &[TemplateSpec], report: &Report) -> (BTreeSet<String>, BTreeSet<String>) {
    let touched = report.touched();
    let mut restart = BTreeSet::new();
    let mut reload = BTreeSet::new();
    for spec in specs.iter().filter(|s| touched.contains(label(&s.name).as_str())) {
        restart.extend(spec.restart_units.iter().cloned());
        reload.extend(spec.reload_units.iter().cloned());
    }
    (restart, reload)
}
