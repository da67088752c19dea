//! `bento init`: lays out a new, commented fleet repository.

use std::io::Write;
use std::path::Path;

use crate::error::Error;
use crate::fleet::config::{CONFIG_FILE, TEMPLATE as CONFIG_TEMPLATE};

/// The directories of a fleet repo, each kept in git by a short README.
const DIRS: &[(&str, &str)] = &[
    ("hosts", "One directory per host: hosts/<name>/configuration.nix, or a flake.nix.\n"),
    ("keys/hosts", "One file per host: <name>.pub, the host's SSH host public key\n(/etc/ssh/ssh_host_ed25519_key.pub). Add one with `bento host add`.\n"),
    ("keys/admins", "One file per admin: <name>.pub, one or more recipient lines\n(ssh-ed25519, ssh-rsa, age1…, or an age plugin recipient).\n"),
];

/// Creates the fleet layout in `root`; refuses when a fleet is already there.
/// Returns the files it wrote, relative to `root`.
pub fn init(root: &Path) -> Result<Vec<String>, Error> {
    let rules = bento_secrets::fleet::RULES_FILE;
    for existing in [CONFIG_FILE, rules] {
        if root.join(existing).exists() {
            return Err(Error::AlreadyAFleet {
                path: existing.into(),
            });
        }
    }
    let mut written = Vec::new();
    let mut create = |rel: &str, content: &str| -> Result<(), Error> {
        let io = |e| Error::Io {
            path: rel.to_owned(),
            source: e,
        };
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        if path.exists() {
            return Ok(());
        }
        std::fs::File::create_new(&path)
            .and_then(|mut f| f.write_all(content.as_bytes()))
            .map_err(io)?;
        written.push(rel.to_owned());
        Ok(())
    };
    for (dir, readme) in DIRS {
        create(&format!("{dir}/README.md"), readme)?;
    }
    create(rules, bento_secrets::rules::TEMPLATE)?;
    create(
        &format!(
            "{}/{}",
            bento_secrets::fleet::SECRETS_DIR,
            bento_secrets::recipients_lock::LOCK_FILE
        ),
        bento_secrets::recipients_lock::HEADER,
    )?;
    create(CONFIG_FILE, CONFIG_TEMPLATE)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    #[test]
    fn lays_out_a_loadable_fleet_once() {
        let dir = tempfile::tempdir().unwrap();
        let written = super::init(dir.path()).unwrap();
        assert!(written.contains(&"secrets/secrets.toml".to_owned()));
        bento_secrets::Fleet::load(dir.path()).unwrap();
        crate::Config::load(dir.path()).unwrap();
        let before = std::fs::read(dir.path().join("bento.toml")).unwrap();
        assert!(super::init(dir.path()).is_err());
        assert_eq!(std::fs::read(dir.path().join("bento.toml")).unwrap(), before);
    }
}
