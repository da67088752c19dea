//! `bento host add|list|remove`: the hosts' public keys in `keys/hosts/`.

use std::path::Path;
use std::process::Command;

use crate::atomic::write_atomic;
use crate::error::{Error, Result};
use crate::fleet::{Fleet, Registered};
use crate::keys::{KeyKind, RecipientKey};
use crate::names::HostName;
use crate::rules::Role;

/// The key file of host `name`, relative to the fleet.
pub fn key_file(name: &str) -> String {
    format!("keys/hosts/{name}.pub")
}

/// Registers host `name` with `key` (ssh-ed25519 or ssh-rsa), read from `source` (shown in
/// errors). Refuses an existing host unless `replace`, and a key or name already
/// registered for another host or admin; a refusal changes nothing.
pub fn add(root: &Path, name: &str, key: RecipientKey, source: &str, replace: bool) -> Result<RecipientKey> {
    let shown = key_file(name);
    if !HostName::is_valid(name) {
        return Err(Error::input(
            &shown,
            None,
            format!("bad host name `{name}`: use letters, digits, `.`, `_` and `-`"),
        ));
    }
    if !matches!(key.kind(), KeyKind::SshEd25519 | KeyKind::SshRsa) {
        return Err(Error::input(
            source,
            None,
            "a host key must be its ssh host key (ssh-ed25519 or ssh-rsa): it logs in to sftp and decrypts",
        ));
    }
    let path = root.join(&shown);
    if path.exists() && !replace {
        return Err(Error::input(
            &shown,
            None,
            "exists already; pass --replace to rotate this host's key",
        ));
    }
    Registered::read(root)?.check_new(&shown, std::slice::from_ref(&key), source)?;
    let parent = path.parent().unwrap_or(root);
    std::fs::create_dir_all(parent).map_err(|e| Error::io(&shown, e))?;
    write_atomic(&path, format!("{}\n", key.text()).as_bytes(), 0o644).map_err(|e| Error::io(&shown, e))?;
    Ok(key)
}

/// The one key of a host's public key file (`--key FILE`); errors name the file.
pub fn read_one(path: &Path, shown: &str) -> Result<RecipientKey> {
    let mut keys = crate::keys::read_key_file(path, shown)?;
    if keys.len() > 1 {
        return Err(Error::input(
            shown,
            None,
            format!(
                "holds {} keys; a host has one (its /etc/ssh/ssh_host_ed25519_key.pub): keep that line only",
                keys.len()
            ),
        ));
    }
    Ok(keys.remove(0))
}

/// The ed25519 host key of `address` (`host` or `host:port`), through `ssh-keyscan`.
pub fn scan(address: &str) -> Result<String> {
    let (host, port) = match address.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.parse::<u16>().is_ok() => (h, p),
        _ => (address, "22"),
    };
    let out = Command::new("ssh-keyscan")
        .args(["-t", "ed25519", "-T", "10", "-p", port, "--", host])
        .output()
        .map_err(|e| Error::io("ssh-keyscan", e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| !l.starts_with('#') && l.contains("ssh-ed25519"))
        .ok_or_else(|| Error::input(address, None, "ssh-keyscan found no ssh-ed25519 host key there"))?;
    // `host ssh-ed25519 AAAA…`: drop the host field.
    Ok(line.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
}

/// Removes host `name`'s key; refused while the rules still name it.
pub fn remove(fleet: &Fleet, name: &str) -> Result<()> {
    let shown = key_file(name);
    fleet.check_removable(Role::Host, name, &shown)?;
    std::fs::remove_file(fleet.root().join(&shown)).map_err(|e| Error::io(&shown, e))
}
