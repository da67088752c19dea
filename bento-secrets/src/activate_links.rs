//! The stable `path` symlinks of activation: each secret (or template) with a `path` gets
//! a symlink there to its stable location, replaced atomically and never over a real file;
//! the links of secrets that are gone are removed when they still point at Bento's tree.

use std::collections::BTreeSet;
use std::path::Path;

use crate::activate::{Failure, Report};
use crate::generation::{Family, Tree};
use crate::spec::SecretSpec;

/// The `path` symlinks: created for present secrets, removed for secrets that are gone.
pub(crate) fn link_paths(
    tree: &Tree,
    family: Family,
    present: &[SecretSpec],
    old: &[SecretSpec],
    report: &mut Report,
) {
    let paths = |s: &[SecretSpec]| -> Vec<(String, Option<String>)> {
        s.iter().map(|s| (s.name.clone(), s.path.clone())).collect()
    };
    place_links(&tree.link_path(family), &paths(present), &paths(old), "", report);
}

/// `path` symlinks to `<stable>/<name>` for the `present` (name, path) pairs; those of
/// `old` that are gone are removed when they still point there. Failures are reported
/// under `label_prefix` + name.
pub(crate) fn place_links(
    stable: &Path,
    present: &[(String, Option<String>)],
    old: &[(String, Option<String>)],
    label_prefix: &str,
    report: &mut Report,
) {
    for (name, path) in present {
        let Some(path) = path else { continue };
        if let Err(e) = place_symlink(Path::new(path), &stable.join(name)) {
            report.failed.push(Failure {
                name: format!("{label_prefix}{name}"),
                error: format!("symlink {path}: {e}"),
                kept_previous: true,
            });
        }
    }
    let names: BTreeSet<&str> = present.iter().map(|(n, _)| n.as_str()).collect();
    for (name, path) in old.iter().filter(|(n, _)| !names.contains(n.as_str())) {
        if let Some(path) = path {
            if std::fs::read_link(path).ok().as_deref() == Some(stable.join(name).as_path()) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Makes `path` a symlink to `target`, atomically; never replaces a real file.
fn place_symlink(path: &Path, target: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_symlink() => {
            return Err(std::io::Error::other(
                "a real file is there; refusing to replace it",
            ))
        }
        Ok(_) if std::fs::read_link(path)? == target => return Ok(()),
        _ => {}
    }
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new("/")))?;
    crate::atomic::symlink(target, path)
}
