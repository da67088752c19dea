//! `bento server setup`: what the central server needs for this fleet. Each host gets a
//! system user `<user_prefix><host>` in group `bento`, allowed in by its SSH host key,
//! sftp only, chrooted to `<root>/<host>` (root-owned 0755), able to write `logs/` only.
//!
//! With admin ssh keys (`keys/admins/`), the server also gets the publishing account
//! [`PUBLISH_USER`] that `bento deploy --target` logs in as: sftp only, chrooted to the root,
//! owner of each host's `generations/`, where root's link `current -> generations/current`
//! lets it switch a host's generation without writing the host's (root-owned) directory.
//! It cannot log in as a host (its keys are not a host's), and reads nothing outside the root.
//!
//! With `[cache]`, `<root>/cache` and `cache/nar` (0755, readable by the web server) are
//! made too, owned by the publishing account when there is one, so that a deploy over sftp
//! fills the binary cache; hosts still write nothing but their `logs/`.
//!
//! Every host's directory also gets `cache/` and `cache/nar` (0755): the host's own cache,
//! which a closure deployment fills with hard links into `<root>/cache` and the host
//! fetches from. Their owner is the publishing account when there is one (it makes the
//! links over sftp; the host's directory is root's), root otherwise.
//!
//! Two forms: a NixOS module, and for other Linux servers an `sshd_config` block with the
//! shell commands that create the users and directories.

use std::collections::BTreeMap;
use std::fmt::Write;

use bento_secrets::keys::KeyKind;
use bento_secrets::{Fleet, RecipientKey};

use crate::fleet::config::Config;
use crate::layout::{CURRENT_FILE, CURRENT_LINK, GENERATIONS_DIR};
use crate::publish::cache_dir::{CACHE_DIR, NAR_DIR};

/// The group every host's sftp user belongs to.
pub const GROUP: &str = "bento";
/// The publishing account (and its own group: never [`GROUP`], whose `Match` would chroot
/// it into a host's directory).
pub const PUBLISH_USER: &str = "bento-publish";
/// Where the non-NixOS form keeps each user's authorized key.
pub const AUTHORIZED_KEYS_DIR: &str = "/etc/ssh/bento_authorized_keys";

/// One host as the server sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerHost {
    /// The host's name: its directory under the root.
    pub name: String,
    /// The sftp user: `<user_prefix><name>`.
    pub user: String,
    /// Its ssh public key lines (age keys cannot log in over ssh).
    pub keys: Vec<String>,
}

/// Why `host` cannot have its directory and sftp user on the server, if it cannot: with
/// `[cache]`, a host named like the binary cache's directory; with a publishing account
/// (`publishing`), a host whose sftp user would be that account. Both `bento deploy` and
/// `bento server setup` ask, so neither publishes nor prints a layout that clashes.
pub fn name_clash(config: &Config, host: &str, publishing: bool) -> Option<String> {
    if config.cache.signing_key.is_some() && host == CACHE_DIR {
        return Some(format!(
            "its server directory would be the binary cache's `{CACHE_DIR}/`: rename the host, \
             or remove [cache] from bento.toml"
        ));
    }
    if publishing && format!("{}{host}", config.server.user_prefix) == PUBLISH_USER {
        return Some(format!(
            "its sftp user would be `{PUBLISH_USER}`, the publishing account of the admins; \
             rename the host or set server.user_prefix in bento.toml"
        ));
    }
    None
}

/// The hosts of the fleet with their ssh keys, from `keys/hosts/`.
pub fn hosts(fleet: &Fleet, config: &Config) -> Vec<ServerHost> {
    fleet
        .hosts
        .iter()
        .map(|(name, keys)| ServerHost {
            name: name.clone(),
            user: format!("{}{name}", config.server.user_prefix),
            keys: ssh_lines(keys),
        })
        .collect()
}

/// The admins' ssh public key lines (age keys cannot log in over ssh): the keys of the
/// publishing account.
pub fn publish_keys(fleet: &Fleet) -> Vec<String> {
    ssh_lines(fleet.admins.values().flatten())
}

/// The ssh public key lines among `keys`.
fn ssh_lines<'a>(keys: impl IntoIterator<Item = &'a RecipientKey>) -> Vec<String> {
    keys.into_iter()
        .filter(|k| matches!(k.kind(), KeyKind::SshEd25519 | KeyKind::SshRsa))
        .map(|k| k.text().to_owned())
        .collect()
}

/// What every host's sftp user is limited to, inside its `Match` block: sftp only (no
/// shell, no TTY), and no forwarding of any kind (TCP, unix sockets, agent, X11, tunnels).
/// `DisableForwarding` alone covers every forwarding; the others say so one by one, so
/// that `sshd -T` shows each of them off too.
pub const MATCH_DIRECTIVES: &[&str] = &[
    "ForceCommand internal-sftp",
    "DisableForwarding yes",
    "AllowTcpForwarding no",
    "AllowStreamLocalForwarding no",
    "AllowAgentForwarding no",
    "X11Forwarding no",
    "PermitTunnel no",
    "PermitTTY no",
    "PasswordAuthentication no",
];

/// One `Match` block of `sshd_config`: `Match <criterion>`, the chroot, the authorized
/// keys file when given, and [`MATCH_DIRECTIVES`]; each line starts with `indent`.
pub fn match_block(criterion: &str, chroot: &str, authorized_keys: Option<&str>, indent: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{indent}Match {criterion}");
    let _ = writeln!(out, "{indent}  ChrootDirectory {chroot}");
    if let Some(file) = authorized_keys {
        let _ = writeln!(out, "{indent}  AuthorizedKeysFile {file}");
    }
    for line in MATCH_DIRECTIVES {
        let _ = writeln!(out, "{indent}  {line}");
    }
    out
}

/// The `Match` blocks of `sshd_config`: one for the whole group when user names are host
/// names (`ChrootDirectory <root>/%u`), else one per user.
fn match_blocks(
    config: &Config,
    hosts: &[ServerHost],
    publisher: bool,
    authorized_keys: bool,
    indent: &str,
) -> String {
    let root = config.server.root.trim_end_matches('/');
    let keys = |user: &str| authorized_keys.then(|| format!("{AUTHORIZED_KEYS_DIR}/{user}"));
    // The publishing account: chrooted to the whole root, limited as the hosts are.
    let mut out = if publisher {
        match_block(
            &format!("User {PUBLISH_USER}"),
            root,
            keys(PUBLISH_USER).as_deref(),
            indent,
        )
    } else {
        String::new()
    };
    if config.server.user_prefix.is_empty() {
        out.push_str(&match_block(
            &format!("Group {GROUP}"),
            &format!("{root}/%u"),
            keys("%u").as_deref(),
            indent,
        ));
        return out;
    }
    out + &hosts
        .iter()
        .map(|h| {
            match_block(
                &format!("User {}", h.user),
                &format!("{root}/{}", h.name),
                keys(&h.user).as_deref(),
                indent,
            )
        })
        .collect::<String>()
}

/// sshd's `MaxStartups` for a fleet of `hosts`: `N:30:max(100, 2N)` with
/// `N = max(10, ceil(hosts / 4))`. Past N unauthenticated connections at once sshd drops
/// 30 % of new ones (then more, up to all at the last number). Never below OpenSSH's
/// default `10:30:100`; raised with the fleet so that a quarter of it may be
/// mid-handshake together (timers spread polls over 5 minutes; a trigger sent to every
/// host does not). Agents that are dropped anyway retry with backoff.
pub fn max_startups(hosts: usize) -> String {
    let n = hosts.div_ceil(4).max(10);
    format!("{n}:30:{}", (2 * n).max(100))
}

/// The NixOS module for the server, self-contained.
/// `publish_keys`: the publishing account's keys ([`publish_keys`]); none, no account.
pub fn nixos_module(config: &Config, hosts: &[ServerHost], publish_keys: &[String]) -> String {
    let root = config.server.root.trim_end_matches('/');
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Bento server for this fleet (generated by `bento server setup`). The reusable module\n\
         # nix/server.nix of bento does the same from `services.bento-server.hosts`.\n\
         {{ lib, ... }}:\n{{\n  users.groups.{GROUP} = {{ }};"
    );
    let publisher = !publish_keys.is_empty();
    let mut tmpfiles = vec![format!("d {root} 0755 root root -")];
    if let Some(owner) = cache_owner(config, publisher) {
        for dir in [CACHE_DIR.to_owned(), format!("{CACHE_DIR}/{NAR_DIR}")] {
            tmpfiles.push(format!("d {root}/{dir} 0755 {owner} {owner} -"));
        }
    }
    let mut users: BTreeMap<&str, &ServerHost> = BTreeMap::new();
    for h in hosts {
        users.insert(&h.user, h);
        tmpfiles.push(format!("d {root}/{} 0755 root root -", h.name));
        let (mode, group) = logs_access(publisher);
        tmpfiles.push(format!("d {root}/{}/logs {mode} {} {group} -", h.name, h.user));
        if publisher {
            // What the host wrote before it had that group (no link is followed).
            tmpfiles.push(format!("z {root}/{}/logs/*.json - - {PUBLISH_USER} -", h.name));
            tmpfiles.push(format!(
                "d {root}/{}/{GENERATIONS_DIR} 0755 {PUBLISH_USER} {PUBLISH_USER} -",
                h.name
            ));
            tmpfiles.push(format!(
                "L+ {root}/{}/{CURRENT_FILE} - - - - {CURRENT_LINK}",
                h.name
            ));
        }
        let owner = host_cache_owner(publisher);
        for dir in [CACHE_DIR.to_owned(), format!("{CACHE_DIR}/{NAR_DIR}")] {
            tmpfiles.push(format!("d {root}/{}/{dir} 0755 {owner} {owner} -", h.name));
        }
    }
    if publisher {
        let keys: Vec<String> = publish_keys.iter().map(|k| nix_string(k)).collect();
        let _ = writeln!(
            out,
            "  # The account `bento deploy --target sftp://{PUBLISH_USER}@…/` publishes with.\n  \
             users.groups.{u} = {{ }};\n  users.users.{u} = {{\n    isSystemUser = true;\n    \
             group = {u};\n    home = \"/\";\n    openssh.authorizedKeys.keys = [ {} ];\n  }};",
            keys.join(" "),
            u = nix_string(PUBLISH_USER),
        );
    }
    for (user, h) in users {
        let keys: Vec<String> = h.keys.iter().map(|k| nix_string(k)).collect();
        let _ = writeln!(
            out,
            "  users.users.{} = {{\n    isSystemUser = true;\n    group = \"{GROUP}\";\n    home = \"/\";\n    \
             openssh.authorizedKeys.keys = [ {} ];\n  }};",
            nix_string(user),
            keys.join(" ")
        );
    }
    let _ = writeln!(out, "  systemd.tmpfiles.rules = [");
    for rule in tmpfiles {
        let _ = writeln!(out, "    {}", nix_string(&rule));
    }
    let _ = writeln!(out, "  ];");
    let _ = writeln!(out, "  services.openssh.enable = true;");
    let _ = writeln!(
        out,
        "  # Sized for the fleet: agents polling together are not dropped.\n  \
         services.openssh.settings.MaxStartups = \"{}\";",
        max_startups(hosts.len())
    );
    // Last in sshd_config: a global line another module adds after a `Match` block would
    // belong to it (as nix/server.nix does).
    let _ = writeln!(out, "  services.openssh.extraConfig = lib.mkOrder 2000 ''");
    out.push_str(&match_blocks(config, hosts, publisher, false, "    ").replace("${", "''${"));
    let _ = writeln!(out, "  '';\n}}");
    out
}

/// The `sshd_config` block and shell commands for a non-NixOS Linux server.
/// `publish_keys` as for [`nixos_module`].
pub fn other_linux(config: &Config, hosts: &[ServerHost], publish_keys: &[String]) -> String {
    let root = config.server.root.trim_end_matches('/');
    let publisher = !publish_keys.is_empty();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Append to /etc/ssh/sshd_config (Match blocks go last). MaxStartups is sized for\n\
         # the fleet; sshd keeps the first value it reads, so remove an earlier one:\n\
         MaxStartups {}",
        max_startups(hosts.len())
    );
    out.push_str(&match_blocks(config, hosts, publisher, true, ""));
    let _ = writeln!(out, "\n# Then, as root:");
    let _ = writeln!(
        out,
        "getent group {GROUP} >/dev/null || groupadd --system {GROUP}"
    );
    let _ = writeln!(
        out,
        "install -d -m 0755 -o root -g root {} {AUTHORIZED_KEYS_DIR}",
        sh(root)
    );
    let publish = sh(PUBLISH_USER);
    if publisher {
        let _ = writeln!(
            out,
            "getent group {publish} >/dev/null || groupadd --system {publish}\n\
             id -u {publish} >/dev/null 2>&1 || useradd --system --gid {publish} --home-dir / --no-create-home \
             --shell /usr/sbin/nologin {publish}"
        );
        let _ = writeln!(out, "{}", authorized_keys(PUBLISH_USER, publish_keys));
    }
    if let Some(owner) = cache_owner(config, publisher) {
        // The binary cache, readable by the web server.
        let _ = writeln!(out, "{}", cache_dirs(&format!("{root}/{CACHE_DIR}"), owner));
    }
    for h in hosts {
        let user = sh(&h.user);
        let _ = writeln!(
            out,
            "id -u {user} >/dev/null 2>&1 || useradd --system --gid {GROUP} --home-dir / --no-create-home \
             --shell /usr/sbin/nologin {user}"
        );
        let dir = sh(&format!("{root}/{}", h.name));
        let logs = sh(&format!("{root}/{}/logs", h.name));
        let _ = writeln!(out, "install -d -m 0755 -o root -g root {dir}");
        let (mode, group) = logs_access(publisher);
        let _ = writeln!(out, "install -d -m {mode} -o {user} -g {group} {logs}");
        if publisher {
            // What the host wrote before keeps its old group: given to the publishing
            // account too. Only the host's own regular files, links not followed.
            let _ = writeln!(
                out,
                "find {logs} -maxdepth 1 -type f -name '*.json' -user {user} -exec chgrp -h {publish} {{}} +"
            );
            // generations/ to the publisher (with what a local deploy wrote), and `current`
            // turned into root's link to generations/current, keeping the generation it names.
            let gens = sh(&format!("{root}/{}/{GENERATIONS_DIR}", h.name));
            let current = sh(&format!("{root}/{}/{CURRENT_FILE}", h.name));
            let link = sh(&format!("{root}/{}/.{CURRENT_FILE}.link", h.name));
            let _ = writeln!(
                out,
                "install -d -m 0755 -o {publish} -g {publish} {gens} && chown -R {publish}:{publish} {gens}"
            );
            let _ = writeln!(
                out,
                "[ -L {current} ] || {{ {{ [ ! -f {current} ] || install -m 0644 -o {publish} -g {publish} \
                 {current} {gens}/{CURRENT_FILE}; }} && ln -sfn {CURRENT_LINK} {link} && mv -T {link} {current}; }}"
            );
        }
        // The host's own cache, for closure deployments.
        let cache = format!("{root}/{}/{CACHE_DIR}", h.name);
        let _ = writeln!(out, "{}", cache_dirs(&cache, host_cache_owner(publisher)));
        let _ = writeln!(out, "{}", authorized_keys(&h.user, &h.keys));
    }
    let _ = writeln!(out, "systemctl reload ssh || systemctl reload sshd");
    out
}

/// The mode and group of a host's `logs/`: the host's own to write (its owner). With a
/// publishing account, readable by it too, for `bento status` over sftp: its group,
/// setgid so that what the host writes there gets that group. Other hosts are in
/// neither group (and chrooted to their own directory anyway).
fn logs_access(publisher: bool) -> (&'static str, &'static str) {
    if publisher {
        ("2750", PUBLISH_USER)
    } else {
        ("0700", GROUP)
    }
}

/// Who owns `<root>/cache` and `cache/nar` (with `[cache]` only): the publishing account
/// when there is one (it fills the cache over sftp), else root (a local deploy).
fn cache_owner(config: &Config, publisher: bool) -> Option<&'static str> {
    config
        .cache
        .signing_key
        .is_some()
        .then_some(host_cache_owner(publisher))
}

/// Who owns each host's `cache/` and `cache/nar`: as `generations/`, the publishing
/// account when there is one (it makes the hard links into `<root>/cache` over sftp, and
/// cannot create them in the host's root-owned directory), else root (a local deploy).
fn host_cache_owner(publisher: bool) -> &'static str {
    if publisher {
        PUBLISH_USER
    } else {
        "root"
    }
}

/// The shell line that makes the cache directory `cache` (its parent root's) and its
/// `nar/`, 0755, owned by `owner`. Only `cache` itself is chmod-ed, and `chown -h`
/// changes links themselves: a link the owner planted at `cache/nar` is not followed
/// (bento refuses such a link when it writes there).
fn cache_dirs(cache: &str, owner: &str) -> String {
    let nar = sh(&format!("{cache}/{NAR_DIR}"));
    let cache = sh(cache);
    format!("mkdir -p -m 0755 {cache} {nar} && chmod 0755 {cache} && chown -h {owner}:{owner} {cache} {nar}")
}

/// The shell line that writes `user`'s authorized keys file, holding `keys`.
fn authorized_keys(user: &str, keys: &[String]) -> String {
    let keys: Vec<String> = keys.iter().map(|k| sh(k)).collect();
    format!(
        "printf '%s\\n' {} > {}",
        keys.join(" "),
        sh(&format!("{AUTHORIZED_KEYS_DIR}/{user}"))
    )
}

/// A Nix string literal.
fn nix_string(s: &str) -> String {
    format!(
        "\"{}\"",
        s.replace('\\', "\\\\").replace('"', "\\\"").replace("${", "\\${")
    )
}

/// A shell word, single-quoted when needed.
fn sh(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-=:@+,".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(prefix: &str) -> (Config, Vec<ServerHost>) {
        let mut config = Config::default();
        config.server.user_prefix = prefix.into();
        let hosts = ["web1", "db1"]
            .iter()
            .map(|n| ServerHost {
                name: (*n).into(),
                user: format!("{prefix}{n}"),
                keys: vec![format!("ssh-ed25519 AAAA{n}")],
            })
            .collect();
        (config, hosts)
    }

    #[test]
    fn a_host_named_like_the_cache_or_the_publisher_clashes() {
        let (mut config, _) = sample("");
        assert_eq!(name_clash(&config, "cache", true), None, "no [cache]: no clash");
        config.cache.signing_key = Some("k.sec".into());
        assert!(name_clash(&config, "cache", false)
            .unwrap()
            .contains("binary cache's `cache/`"));
        assert!(name_clash(&config, PUBLISH_USER, true)
            .unwrap()
            .contains("publishing account"));
        assert_eq!(name_clash(&config, PUBLISH_USER, false), None);
        config.server.user_prefix = "bento-".into();
        assert!(name_clash(&config, "publish", true).is_some());
        assert_eq!(name_clash(&config, "web1", true), None);
    }

    #[test]
    fn one_group_block_without_prefix() {
        let (config, hosts) = sample("");
        let text = other_linux(&config, &hosts, &[]);
        assert!(
            text.contains("Match Group bento\n  ChrootDirectory /srv/bento/%u\n"),
            "{text}"
        );
        assert!(
            text.contains("install -d -m 0700 -o web1 -g bento /srv/bento/web1/logs"),
            "{text}"
        );
        assert!(text.contains("printf '%s\\n' 'ssh-ed25519 AAAAweb1' > /etc/ssh/bento_authorized_keys/web1"));
    }

    #[test]
    fn one_block_per_user_with_prefix() {
        let (config, hosts) = sample("bento-");
        let text = nixos_module(&config, &hosts, &[]);
        assert!(
            text.contains("Match User bento-web1\n      ChrootDirectory /srv/bento/web1\n"),
            "{text}"
        );
        assert!(text.contains("users.users.\"bento-db1\""), "{text}");
        assert!(!text.contains("%u"), "{text}");
    }

    #[test]
    fn max_startups_grows_with_the_fleet_never_below_the_default() {
        assert_eq!(max_startups(0), "10:30:100");
        assert_eq!(max_startups(40), "10:30:100");
        assert_eq!(max_startups(41), "11:30:100");
        assert_eq!(max_startups(200), "50:30:100");
        assert_eq!(max_startups(201), "51:30:102");
        assert_eq!(max_startups(1000), "250:30:500");
        let (config, hosts) = sample("");
        assert!(other_linux(&config, &hosts, &[]).contains("\nMaxStartups 10:30:100\n"));
        assert!(nixos_module(&config, &hosts, &[])
            .contains("services.openssh.settings.MaxStartups = \"10:30:100\";"));
    }

    #[test]
    fn the_publishing_account_comes_with_publish_keys_only() {
        let (config, hosts) = sample("");
        let keys = vec!["ssh-ed25519 AAAAalice".to_owned()];
        let text = other_linux(&config, &hosts, &keys);
        // Its own block, before the hosts' group block (whose group it is not in).
        let publisher = text
            .find("Match User bento-publish\n  ChrootDirectory /srv/bento\n")
            .unwrap();
        assert!(publisher < text.find("Match Group bento").unwrap(), "{text}");
        assert!(text.contains("useradd --system --gid bento-publish"), "{text}");
        assert!(
            text.contains("install -d -m 0755 -o bento-publish -g bento-publish /srv/bento/web1/generations"),
            "{text}"
        );
        assert!(
            text.contains("ln -sfn generations/current /srv/bento/db1/.current.link"),
            "{text}"
        );
        let module = nixos_module(&config, &hosts, &keys);
        assert!(
            module.contains("\"L+ /srv/bento/web1/current - - - - generations/current\""),
            "{module}"
        );
        assert!(
            module.contains("openssh.authorizedKeys.keys = [ \"ssh-ed25519 AAAAalice\" ];"),
            "{module}"
        );
        for text in [
            other_linux(&config, &hosts, &[]),
            nixos_module(&config, &hosts, &[]),
        ] {
            assert!(
                !text.contains("bento-publish") && !text.contains("generations"),
                "{text}"
            );
        }
    }

    #[test]
    fn with_a_cache_its_directories_go_to_the_publishing_account_when_there_is_one() {
        let (mut config, hosts) = sample("");
        let keys = vec!["ssh-ed25519 AAAAalice".to_owned()];
        assert!(!other_linux(&config, &hosts, &keys).contains("/srv/bento/cache"));
        assert!(!nixos_module(&config, &hosts, &keys).contains("/srv/bento/cache"));
        config.cache.signing_key = Some("cache.sec".into());
        let text = other_linux(&config, &hosts, &keys);
        assert!(
            text.contains(
                "mkdir -p -m 0755 /srv/bento/cache /srv/bento/cache/nar && chmod 0755 /srv/bento/cache \
                 && chown -h bento-publish:bento-publish /srv/bento/cache /srv/bento/cache/nar\n"
            ),
            "{text}"
        );
        let module = nixos_module(&config, &hosts, &keys);
        for dir in ["cache", "cache/nar"] {
            let rule = format!("\"d /srv/bento/{dir} 0755 bento-publish bento-publish -\"");
            assert!(module.contains(&rule), "{module}");
        }
        // No publishing account: root's, for a local deploy.
        assert!(other_linux(&config, &hosts, &[]).contains("chown -h root:root /srv/bento/cache "));
        assert!(nixos_module(&config, &hosts, &[]).contains("\"d /srv/bento/cache/nar 0755 root root -\""));
    }

    #[test]
    fn every_host_gets_its_own_cache_owned_as_its_generations() {
        let (config, hosts) = sample("bento-");
        let keys = ["ssh-ed25519 AAAAalice".to_owned()];
        for (publish, owner) in [(&keys[..], "bento-publish"), (&[][..], "root")] {
            let text = other_linux(&config, &hosts, publish);
            let module = nixos_module(&config, &hosts, publish);
            for host in ["web1", "db1"] {
                let (cache, nar) = (
                    format!("/srv/bento/{host}/cache"),
                    format!("/srv/bento/{host}/cache/nar"),
                );
                let line = format!(
                    "\nmkdir -p -m 0755 {cache} {nar} && chmod 0755 {cache} && chown -h {owner}:{owner} {cache} {nar}\n"
                );
                assert!(text.contains(&line), "{line}: {text}");
                for dir in [&cache, &nar] {
                    let rule = format!("\"d {dir} 0755 {owner} {owner} -\"");
                    assert!(module.contains(&rule), "{rule}: {module}");
                }
            }
            // After the host's directory, its generations/ and `current` are made.
            let dir = text
                .find("install -d -m 0755 -o root -g root /srv/bento/web1\n")
                .unwrap();
            let cache = text.find("mkdir -p -m 0755 /srv/bento/web1/cache ").unwrap();
            assert!(dir < cache, "{text}");
            if !publish.is_empty() {
                assert!(
                    text.find("mv -T /srv/bento/web1/.current.link").unwrap() < cache,
                    "{text}"
                );
            }
            // Not the host's user's: it writes nothing but its logs/.
            assert!(!text.contains("bento-web1:bento-web1"), "{text}");
        }
    }

    #[test]
    fn match_blocks_forbid_every_forwarding() {
        let (config, hosts) = sample("bento-");
        let text = other_linux(&config, &hosts, &[]);
        let block = match_block(
            "User bento-web1",
            "/srv/bento/web1",
            Some("/etc/ssh/bento_authorized_keys/bento-web1"),
            "",
        );
        assert!(text.contains(&block), "{text}");
        for line in [
            "DisableForwarding yes",
            "PermitTunnel no",
            "PermitTTY no",
            "ForceCommand internal-sftp",
        ] {
            assert!(block.contains(&format!("\n  {line}\n")), "{block}");
        }
    }
}
