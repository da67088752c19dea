//! Where an age plugin binary would be found. A recipient `age1<name>1…` in a fleet key
//! file makes encryption run `age-plugin-<name>` from `PATH`, and the key file may be a
//! contributor's: a `PATH` entry inside the fleet (or a relative one, such as `.` or an
//! empty entry, resolved against a current directory that is usually the fleet) would run
//! the contributor's program. Before a plugin recipient is used, the `PATH` entries that
//! the lookup would go through (up to the one holding the binary) are checked.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::keys::{KeyKind, RecipientKey};

/// Refuses when finding a plugin of `keys` in `path` (the value of `PATH`) would go through
/// a relative entry or one inside `fleet_root`; `shown` names the file being encrypted.
pub fn check(keys: &[&RecipientKey], fleet_root: &Path, path: Option<&OsStr>, shown: &str) -> Result<()> {
    let Some(path) = path else { return Ok(()) };
    let fleet = fleet_root
        .canonicalize()
        .map_err(|e| Error::io(fleet_root.display().to_string(), e))?;
    let mut seen = std::collections::BTreeSet::new();
    for key in keys {
        let KeyKind::Plugin(name) = key.kind() else {
            continue;
        };
        let binary = format!("age-plugin-{name}");
        if !seen.insert(binary.clone()) {
            continue;
        }
        for entry in path.as_bytes().split(|&b| b == b':') {
            let dir = Path::new(OsStr::from_bytes(entry));
            let refuse = |why: &str| {
                Error::input(
                    shown,
                    None,
                    format!(
                        "refusing to look for {binary} (recipient {}) through the PATH entry `{}`, {why}: \
                         remove it from PATH",
                        key.text().escape_default(),
                        dir.display().to_string().escape_default()
                    ),
                )
            };
            if !dir.is_absolute() {
                return Err(refuse("which is relative (a fleet's own program could run)"));
            }
            if dir.canonicalize().is_ok_and(|real| real.starts_with(&fleet)) {
                return Err(refuse(
                    "which is inside the fleet (a contributor's program could run)",
                ));
            }
            if dir.join(&binary).is_file() {
                break;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plugin recipient (bech32 of 33 bytes of 7, for plugin `yubikey`).
    const YUBIKEY: &str = "age1yubikey1qurswpc8qurswpc8qurswpc8qurswpc8qurswpc8qurswpc8qursw5p6jtd";

    #[test]
    fn a_plugin_is_never_looked_up_inside_the_fleet_or_relative_to_it() {
        let fleet = tempfile::tempdir().unwrap();
        let bin = tempfile::tempdir().unwrap();
        std::fs::create_dir(fleet.path().join("bin")).unwrap();
        std::fs::write(bin.path().join("age-plugin-yubikey"), "").unwrap();
        let key = RecipientKey::parse(YUBIKEY).unwrap();
        let plain =
            RecipientKey::parse("age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p").unwrap();
        let fleet_bin = fleet.path().join("bin");
        let run = |path: String, keys: &[&RecipientKey]| {
            check(keys, fleet.path(), Some(OsStr::new(&path)), "s.age")
        };
        // Found before any bad entry, or no plugin at all: fine.
        assert!(run(format!("{}:.", bin.path().display()), &[&key]).is_ok());
        assert!(run(format!(".:{}", fleet_bin.display()), &[&plain]).is_ok());
        for path in [
            format!(".:{}", bin.path().display()),
            format!(":{}", bin.path().display()),
            format!("bin:{}", bin.path().display()),
            format!("{}:{}", fleet_bin.display(), bin.path().display()),
        ] {
            let e = run(path.clone(), &[&plain, &key]).unwrap_err().to_string();
            assert!(
                e.starts_with("s.age: refusing to look for age-plugin-yubikey"),
                "{path}: {e}"
            );
            assert!(e.ends_with("remove it from PATH"), "{e}");
        }
    }
}
