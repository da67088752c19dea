//! Finding the fleet repository, as git finds its repository: `--fleet DIR` or
//! `$BENTO_FLEET` when given, else the first directory from the current one upwards that
//! holds `bento.toml` or `secrets/secrets.toml`.

use std::path::{Path, PathBuf};

/// What marks a fleet root (either is enough).
const MARKERS: [&str; 2] = [
    bento_deploy::fleet::config::CONFIG_FILE,
    bento_secrets::fleet::RULES_FILE,
];

/// Whether `dir` is a fleet root.
fn is_fleet(dir: &Path) -> bool {
    MARKERS.iter().any(|m| dir.join(m).is_file())
}

/// The fleet root: `given` (`--fleet`, `BENTO_FLEET`) as is, else the nearest fleet
/// directory from the current one upwards (`.` when it is the current one, so messages
/// stay short). `lenient` commands can work without a fleet (an agenix `--rules` file,
/// `status --server-root`): for them a missing fleet is the current directory.
pub fn fleet_root(given: Option<PathBuf>, lenient: bool) -> anyhow::Result<PathBuf> {
    if let Some(dir) = given {
        return Ok(dir);
    }
    let cwd = std::env::current_dir()
        .map_err(|e| anyhow::anyhow!("the current directory: {e}; pass --fleet DIR"))?;
    if let Some(found) = cwd.ancestors().find(|d| is_fleet(d)) {
        return Ok(if found == cwd {
            PathBuf::from(".")
        } else {
            found.to_path_buf()
        });
    }
    if lenient {
        return Ok(PathBuf::from("."));
    }
    anyhow::bail!(
        "no fleet repository in {} or any directory above it (none holds {} or {}): \
         run `bento init` to make one here, or pass --fleet DIR (or set BENTO_FLEET)",
        cwd.display(),
        MARKERS[0],
        MARKERS[1]
    )
}
