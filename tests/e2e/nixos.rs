//! The NixOS modules (`nix/client.nix`, `nix/server.nix`, the flake's `nixosModules`) and
//! the example hosts, evaluated with nixpkgs' own module system (`lib.evalModules` from
//! nixpkgs `lib`) beside nixpkgs' own activation-script, userborn and systemd-sysusers
//! modules (`../shared/nixpkgs-nixos`) and the option stand-ins of
//! `tests/nixos/stubs.nix`: the three user modes (the `users` activation script,
//! userborn, systemd-sysusers), with and without the systemd-only way, the server with
//! and without a user prefix and beside other modules' sshd lines, and each refusal at
//! evaluation time. No case may raise an evaluation warning.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::harness::{ok, require, s};

/// nixpkgs' `lib`: `NIXPKGS_LIB`, else `../shared/nixpkgs-lib/lib` next to the repo,
/// else `<nixpkgs/lib>` on `NIX_PATH`. `None` when none is there.
fn nixpkgs_lib() -> Option<String> {
    if let Some(dir) = std::env::var_os("NIXPKGS_LIB") {
        return Some(PathBuf::from(dir).display().to_string());
    }
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/nixpkgs-lib/lib");
    if shared.join("default.nix").exists() {
        return Some(shared.canonicalize().ok()?.display().to_string());
    }
    let found = Command::new("nix-instantiate")
        .args(["--eval", "--expr", "builtins.pathExists <nixpkgs/lib>"])
        .output()
        .ok()?;
    (String::from_utf8_lossy(&found.stdout).trim() == "true").then(|| "<nixpkgs/lib>".to_owned())
}

/// nixpkgs' NixOS modules (activation, userborn, systemd-sysusers): `NIXOS_MODULES`, else
/// `../shared/nixpkgs-nixos/nixos/modules` next to the repo (absent: skipped, failing in CI).
fn nixos_modules() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("NIXOS_MODULES") {
        return Some(PathBuf::from(dir));
    }
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/nixpkgs-nixos/nixos/modules");
    crate::harness::shared_data(&shared, "nixpkgs' NixOS modules")
}

/// `nix-instantiate --eval --strict --json tests/nixos/eval.nix` for `case`.
fn eval(lib: &str, case: &str, extra: &[&str]) -> std::process::Output {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nixos/eval.nix");
    Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json"])
        .arg(&file)
        .args(["--arg", "nixpkgsLib", lib, "--arg", "nixosModules"])
        .arg(nixos_modules().expect("checked by with_lib"))
        .args(["--argstr", "case", case])
        .args(extra)
        .output()
        .unwrap()
}

/// The case's summary; fails the test when evaluation fails or warns.
fn evaluated(lib: &str, case: &str) -> Value {
    let out = eval(lib, case, &[]);
    let stdout = ok(&out);
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{case}: {e}: {stdout}"));
    assert_eq!(
        v["warnings"],
        serde_json::json!([]),
        "{case}: evaluation warnings"
    );
    v
}

/// The evaluation error of a case that must be refused.
pub(crate) fn refused(lib: &str, case: &str) -> String {
    let out = eval(lib, case, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{case}: evaluated, but must be refused");
    stderr.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Runs `f` with nixpkgs' lib, or says clearly why nothing was checked.
pub(crate) fn with_lib(f: impl FnOnce(&str)) {
    require("nix-instantiate");
    match nixpkgs_lib() {
        Some(lib) => {
            if nixos_modules().is_some() {
                f(&lib)
            }
        }
        None => {
            let why = "no nixpkgs lib (set NIXPKGS_LIB, or put it at ../shared/nixpkgs-lib/lib, \
                       or nixpkgs on NIX_PATH): the NixOS modules were not evaluated";
            // In CI the lib is always beside the clone: its absence is a failure there.
            assert!(std::env::var_os("CI").is_none(), "{why}");
            eprintln!("SKIPPED: {why}");
        }
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

#[test]
fn the_client_module_evaluates_with_scripted_users() {
    if !crate::harness::needs_nix() {
        return;
    }
    with_lib(|lib| {
        let v = evaluated(lib, "default");
        let scripts = &v["activationScripts"];
        assert_eq!(
            scripts["users"]["deps"],
            serde_json::json!(["bentoSecretsForUsers"])
        );
        assert_eq!(
            scripts["bentoSecrets"]["deps"],
            serde_json::json!(["specialfs", "users", "groups"])
        );
        let users_phase = text(&scripts["bentoSecretsForUsers"]["text"]);
        assert!(
            users_phase.contains("activate --phase users --bundle /var/bento/current"),
            "{users_phase}"
        );
        assert!(
            users_phase.contains("-i /etc/ssh/ssh_host_ed25519_key"),
            "{users_phase}"
        );
        // Units are queued with systemctl during a switch, left at boot.
        assert!(users_phase.contains("bento_units=--from-activation; else bento_units=--no-restart"));
        // NixOS's activation script is put together: every dep names a script.
        let script = text(&v["activationScript"]);
        assert!(!script.contains("/run/nixos"), "no restart list: {script}");
        let (users_at, rest_at) = (
            script.find("--phase users").unwrap(),
            script.find("--phase secrets").unwrap(),
        );
        let created_at = script.find("# creates users").unwrap();
        assert!(users_at < created_at && created_at < rest_at, "{script}");
        assert!(v["services"].get("bento-secrets").is_none());
        // No flake: the package is this checkout's nix/package.nix.
        assert_eq!(v["package"], "bento-0.1.0");
        assert_eq!(v["packageSource"], "checkout");
        // The agent's environment is system.autoUpgrade's.
        let agent = &v["services"]["bento-agent"];
        assert_eq!(agent["environment"]["HOME"], "/root");
        // A hostile sftp peer cannot make the agent (and its rebuild) take the machine's
        // memory; no local user can list the state dir or hold its lock.
        assert_eq!(agent["serviceConfig"]["MemoryMax"], "4G");
        assert_eq!(
            v["stateTmpfiles"],
            serde_json::json!(["d /var/bento 0700 root root -"])
        );
        assert!(text(&agent["environment"]["NIX_PATH"]).contains("nixos-config=/etc/nixos/configuration.nix"));
        let path: Vec<&str> = agent["path"].as_array().unwrap().iter().map(text).collect();
        for tool in ["nix-2.24", "openssh-9.9", "git-minimal", "coreutils"] {
            assert!(
                path.iter().any(|p| p.contains(tool)),
                "{tool} missing from {path:?}"
            );
        }
        assert_eq!(
            v["services"]["bento-trigger@"]["environment"],
            agent["environment"]
        );
    });
}

/// The services of the systemd-only way, as every mode that uses them has them.
fn assert_phase_services(case: &str, v: &Value) {
    let users = &v["services"]["bento-secrets-for-users"];
    let rest = &v["services"]["bento-secrets"];
    for (unit, phase) in [(users, "users"), (rest, "secrets")] {
        // At boot before sysinit.target; during a switch rerun by sysinit-reactivation.target,
        // in order, before switch-to-configuration restarts other units.
        assert_eq!(unit["wantedBy"], serde_json::json!(["sysinit.target"]), "{case}");
        assert_eq!(
            unit["requiredBy"],
            serde_json::json!(["sysinit-reactivation.target"]),
            "{case}"
        );
        let before = unit["before"].as_array().unwrap();
        for target in ["sysinit.target", "sysinit-reactivation.target"] {
            assert!(
                before.contains(&Value::from(target)),
                "{case}: {phase}: {before:?}"
            );
        }
        // Rerun when what it installs changes: the command, the owners.
        let triggers = unit["restartTriggers"].as_array().unwrap();
        assert!(
            triggers
                .iter()
                .any(|t| text(t).contains("--phase") || text(t).contains("--bundle /var/bento/current")),
            "{case}: {triggers:?}"
        );
        assert!(
            triggers.iter().any(|t| text(t).contains("\"users\"")),
            "{case}: {triggers:?}"
        );
        assert!(unit["restartIfChanged"].as_bool().unwrap(), "{case}");
        assert_eq!(unit["unitConfig"]["DefaultDependencies"], false, "{case}");
        assert_eq!(unit["unitConfig"]["ConditionPathExists"], "/var/bento/current");
        let exec = text(&unit["serviceConfig"]["ExecStart"]);
        assert!(
            exec.contains(&format!(
                "activate --phase {phase} --bundle /var/bento/current --root /run/bento \
                 -i /etc/ssh/ssh_host_ed25519_key --systemctl /nix/store/"
            )),
            "{case}: {exec}"
        );
        // Inside a unit: restarts are queued with systemctl, never left.
        assert!(!exec.contains("--no-restart"), "{exec}");
    }
    // The users phase before users are made (userborn answers to systemd-sysusers.service
    // too), the rest after them and after local file systems.
    let before = users["before"].as_array().unwrap();
    for unit in [
        "systemd-sysusers.service",
        "userborn.service",
        "bento-secrets.service",
    ] {
        assert!(before.contains(&Value::from(unit)), "{case}: {before:?}");
    }
    let after = rest["after"].as_array().unwrap();
    for unit in [
        "local-fs.target",
        "systemd-sysusers.service",
        "userborn.service",
        "bento-secrets-for-users.service",
    ] {
        assert!(after.contains(&Value::from(unit)), "{case}: {after:?}");
    }
    // After a rebuild whose switch did not rerun them, the agent runs them too.
    assert_eq!(v["agentToml"]["activate_after_rebuild"], true, "{case}");
    // The agent reruns them (in their order) when only secrets changed.
    assert!(
        text(&v["agentToml"]["activate"])
            .ends_with("/bin/systemctl restart bento-secrets-for-users.service bento-secrets.service"),
        "{case}: {}",
        v["agentToml"]
    );
}

#[test]
fn the_client_module_evaluates_with_userborn_and_systemd_sysusers() {
    if !crate::harness::needs_nix() {
        return;
    }
    with_lib(|lib| {
        for case in ["userborn", "sysusers"] {
            let v = evaluated(lib, case);
            // The systemd-only way is their default: no activation snippet of ours.
            let scripts = &v["activationScripts"];
            assert_eq!(scripts["users"], "", "{case}: the users script stays empty");
            for name in ["bentoSecretsForUsers", "bentoSecrets"] {
                assert!(scripts.get(name).is_none(), "{case}: {name}");
            }
            assert!(!text(&v["activationScript"]).contains("bento"), "{case}");
            assert_phase_services(case, &v);
            // The real users service is rerun by the same target, before it.
            let (name, users) = v["usersServices"].as_object().unwrap().iter().next().unwrap();
            assert_eq!(
                users["requiredBy"],
                serde_json::json!(["sysinit-reactivation.target"]),
                "{name}"
            );
            // userborn applies a changed password hash only when it runs again.
            let post = &v["services"]["bento-secrets-for-users"]["serviceConfig"]["ExecStartPost"];
            if case == "userborn" {
                assert!(
                    text(&post[0]).ends_with("/bin/systemctl --no-block try-restart userborn.service"),
                    "{post}"
                );
            } else {
                assert!(post.is_null(), "{post}");
            }
        }
    });
}

/// The systemd-only way with scripted users, and the scripted way with users from
/// services: both work, and nothing is written to an activation restart list.
#[test]
fn the_systemd_only_way_and_the_scripted_way_work_in_every_user_mode() {
    if !crate::harness::needs_nix() {
        return;
    }
    with_lib(|lib| {
        let v = evaluated(lib, "default-systemd");
        assert!(v["activationScripts"].get("bentoSecrets").is_none());
        assert!(!text(&v["activationScript"]).contains("bento"));
        assert_phase_services("default-systemd", &v);
        for case in ["userborn-scripted", "sysusers-scripted"] {
            let v = evaluated(lib, case);
            let activation = text(&v["activationScripts"]["bentoSecrets"]["text"]);
            assert!(
                activation.starts_with("if [ -n \"${NIXOS_ACTION-}\" ]; then"),
                "{case}: {activation}"
            );
            assert!(activation.contains("--phase users") && activation.contains("--phase secrets"));
            assert!(
                activation.contains("bento_units=--from-activation"),
                "{activation}"
            );
            let script = text(&v["activationScript"]);
            assert!(script.contains("activate --phase secrets"), "{case}");
            assert!(!script.contains("/run/nixos"), "{case}: {script}");
            // At boot the services, rerun in order during a switch.
            assert_phase_services(case, &v);
        }
        let v = evaluated(lib, "default");
        assert!(v["agentToml"].get("activate").is_none(), "bento's own activate");
        assert_eq!(
            v["agentToml"]["activate_after_rebuild"], false,
            "activation ran bento"
        );
    });
}

/// A password hash from Bento: userborn is rerun to apply it; systemd-sysusers, which
/// never updates a password and fails the boot without the file, is refused.
#[test]
fn a_password_from_bento_is_applied_by_userborn_and_refused_with_sysusers() {
    if !crate::harness::needs_nix() {
        return;
    }
    with_lib(|lib| {
        let v = evaluated(lib, "userborn-password");
        let post = &v["services"]["bento-secrets-for-users"]["serviceConfig"]["ExecStartPost"];
        assert!(text(&post[0]).ends_with("try-restart userborn.service"), "{post}");
        let error = refused(lib, "sysusers-password");
        assert!(
            error.contains(
                "Failed assertions: - services.bento: with systemd.sysusers.enable, \
                 users.users.app.hashedPasswordFile is a Bento secret under /run/bento"
            ) && error.contains("use services.userborn.enable = true instead"),
            "{error}"
        );
    });
}

/// The identity is the first ed25519 key of services.openssh.hostKeys.
#[test]
fn the_identity_follows_the_openssh_host_keys() {
    if !crate::harness::needs_nix() {
        return;
    }
    with_lib(|lib| {
        let v = evaluated(lib, "host-keys");
        assert_eq!(v["agentToml"]["identity"], "/persist/ssh/ssh_host_ed25519_key");
        let script = text(&v["activationScripts"]["bentoSecrets"]["text"]);
        assert!(
            script.contains("-i /persist/ssh/ssh_host_ed25519_key"),
            "{script}"
        );
        let v = evaluated(lib, "default");
        assert_eq!(v["agentToml"]["identity"], "/etc/ssh/ssh_host_ed25519_key");
    });
}

#[test]
fn every_agent_toml_key_is_settable_from_the_module() {
    if !crate::harness::needs_nix() {
        return;
    }
    with_lib(|lib| {
        let v = evaluated(lib, "settings");
        let toml = &v["agentToml"];
        for (key, want) in [
            ("activate", serde_json::json!("/bin/true")),
            ("keep_bundles", serde_json::json!(5)),
            ("run_timeout", serde_json::json!(600)),
            ("ssh", serde_json::json!("/usr/bin/ssh")),
            ("reboot", serde_json::json!("kexec")),
            ("reboot_command", serde_json::json!("systemctl kexec")),
            ("trigger_group", serde_json::json!("wheel")),
            (
                "health",
                serde_json::json!({
                    "failed_units": true,
                    "commands": [["/run/current-system/sw/bin/curl", "-fsS", "http://127.0.0.1:8080/health"]],
                    "settle": "20s",
                    "timeout": "2min",
                    "systemctl": "/nix/store/00000000000000000000000000000000-systemd-258/bin/systemctl",
                }),
            ),
        ] {
            assert_eq!(toml[key], want, "{key}");
        }
        // Without a check, no [health]: agent.toml as older agents read it.
        assert!(evaluated(lib, "default")["agentToml"].get("health").is_none());
        // Every key the agent reads is written (the module is the agent's only writer),
        // the closure mode's keys by a closure host's module.
        let closure = evaluated(lib, "closure-switch");
        let s3 = evaluated(lib, "s3");
        assert_eq!(s3["agentToml"]["s3_credentials"], "/etc/bento/s3-credentials");
        let keys: Vec<&str> = toml
            .as_object()
            .unwrap()
            .keys()
            .chain(closure["agentToml"].as_object().unwrap().keys())
            .chain(s3["agentToml"].as_object().unwrap().keys())
            .map(String::as_str)
            .collect();
        let source = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("bento-deploy/src/agent/config.rs"),
        )
        .unwrap();
        let struct_body = source
            .split("pub struct AgentConfig {")
            .nth(1)
            .unwrap()
            .split("\n}")
            .next()
            .unwrap();
        for field in struct_body.lines().filter_map(|l| l.trim().strip_prefix("pub ")) {
            let name = field.split(':').next().unwrap();
            assert!(
                keys.contains(&name),
                "agent.toml key `{name}` is not settable from nix/client.nix"
            );
        }
        assert_eq!(
            v["services"]["bento-agent"]["environment"]["https_proxy"],
            "http://proxy:3128"
        );
    });
}

#[test]
fn the_server_module_evaluates_with_and_without_a_user_prefix() {
    if !crate::harness::needs_nix() {
        return;
    }
    with_lib(|lib| {
        for (case, user) in [("server", "web1"), ("server-prefix", "bento-web1")] {
            let v = evaluated(lib, case);
            assert_eq!(v["users"][user]["group"], "bento", "{case}");
            let sshd = text(&v["sshd"]);
            assert!(
                sshd.contains(&format!("Match User {user}\n  ChrootDirectory /srv/bento/web1\n")),
                "{case}: {sshd}"
            );
            assert!(
                v["tmpfiles"].as_array().unwrap().contains(&Value::from(format!(
                    "d /srv/bento/web1/logs 0700 {user} bento -"
                ))),
                "{case}"
            );
            // Each host's own cache: root's without a publishing account.
            for host in ["web1", "db1"] {
                for dir in ["cache", "cache/nar"] {
                    let rule = format!("d /srv/bento/{host}/{dir} 0755 root root -");
                    assert!(
                        v["tmpfiles"]
                            .as_array()
                            .unwrap()
                            .contains(&Value::from(rule.as_str())),
                        "{case}: {rule}: {}",
                        v["tmpfiles"]
                    );
                }
            }
            // Two hosts: OpenSSH's default, the floor.
            assert_eq!(v["maxStartups"], "10:30:100", "{case}");
        }
        // ceil(401 / 4) = 101 before any drop, 202 before all: as `bento server setup`.
        let v = evaluated(lib, "server-many");
        assert_eq!(v["maxStartups"], "101:30:202");
        assert_eq!(
            bento_deploy::fleet::server::max_startups(401),
            v["maxStartups"].as_str().unwrap()
        );
    });
}

/// Another module's global sshd line and the host's own (mkAfter) come before every
/// Match block: the real `sshd -t` accepts the whole file (`UseDNS` is refused inside a
/// Match) and `sshd -T` applies the global line to every host's user.
#[test]
fn the_server_match_blocks_come_last_in_sshd_config() {
    if !crate::harness::needs_nix() {
        return;
    }
    require("/usr/sbin/sshd");
    with_lib(|lib| {
        let v = evaluated(lib, "server-extra");
        let sshd = text(&v["sshd"]);
        let first_match = sshd.find("Match ").unwrap();
        for line in ["ClientAliveInterval 60\n", "UseDNS yes\n"] {
            let at = sshd.find(line).unwrap_or_else(|| panic!("{line}: {sshd}"));
            assert!(at < first_match, "{line} after a Match block: {sshd}");
        }
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("host_key");
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .output()
            .unwrap();
        ok(&out);
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!("HostKey {}\n{}", key.display(), text(&v["sshdConfig"])),
        )
        .unwrap();
        let out = Command::new("/usr/sbin/sshd")
            .arg("-t")
            .arg("-f")
            .arg(&config)
            .output()
            .unwrap();
        ok(&out);
        for user in ["web1", "db1"] {
            let out = Command::new("/usr/sbin/sshd")
                .args(["-T", "-f"])
                .arg(&config)
                .args(["-C", &format!("user={user},host=localhost,addr=127.0.0.1")])
                .output()
                .unwrap();
            let effective = ok(&out);
            assert!(
                effective.lines().any(|l| l == "clientaliveinterval 60"),
                "{user}: {effective}"
            );
            assert!(
                effective.lines().any(|l| l == "usedns yes"),
                "{user}: {effective}"
            );
            assert!(
                effective
                    .lines()
                    .any(|l| l == format!("chrootdirectory /srv/bento/{user}")),
                "{user}: {effective}"
            );
        }
    });
}

#[test]
fn the_server_module_adds_the_publishing_account_with_publish_keys() {
    if !crate::harness::needs_nix() {
        return;
    }
    with_lib(|lib| {
        let v = evaluated(lib, "server-publish");
        let publisher = &v["users"]["bento-publish"];
        assert_eq!(publisher["group"], "bento-publish", "not `bento`: {v}");
        assert_eq!(publisher["home"], "/");
        assert_eq!(publisher["keys"].as_array().map(Vec::len), Some(1));
        let sshd = text(&v["sshd"]);
        let block = bento_deploy::fleet::server::match_block("User bento-publish", "/srv/bento", None, "");
        assert!(sshd.starts_with(&block), "{sshd}");
        assert!(
            sshd.contains("Match User web1\n  ChrootDirectory /srv/bento/web1\n"),
            "{sshd}"
        );
        let tmpfiles = v["tmpfiles"].as_array().unwrap();
        for rule in [
            "d /srv/bento/web1/generations 0755 bento-publish bento-publish -",
            "L+ /srv/bento/web1/current - - - - generations/current",
            "d /srv/bento/db1/logs 2750 db1 bento-publish -",
            "z /srv/bento/db1/logs/*.json - - bento-publish -",
            // Each host's own cache, as its generations/: the account makes the links there.
            "d /srv/bento/web1/cache 0755 bento-publish bento-publish -",
            "d /srv/bento/web1/cache/nar 0755 bento-publish bento-publish -",
            "d /srv/bento/db1/cache 0755 bento-publish bento-publish -",
            "d /srv/bento/db1/cache/nar 0755 bento-publish bento-publish -",
        ] {
            assert!(tmpfiles.contains(&Value::from(rule)), "{rule}: {tmpfiles:?}");
        }
        // After the host's directory is made (tmpfiles applies its lines in order).
        let at = |rule: &str| tmpfiles.iter().position(|r| r == rule).unwrap();
        assert!(
            at("d /srv/bento/web1 0755 root root -")
                < at("d /srv/bento/web1/cache 0755 bento-publish bento-publish -")
        );
        assert!(
            at("d /srv/bento/web1/cache 0755 bento-publish bento-publish -")
                < at("d /srv/bento/web1/cache/nar 0755 bento-publish bento-publish -")
        );
        // Without publishKeys: no such account, `current` left to the deploy.
        let v = evaluated(lib, "server");
        assert!(v["users"].get("bento-publish").is_none());
        assert!(!text(&v["sshd"]).contains("bento-publish"));
        assert!(!v["tmpfiles"].to_string().contains("generations"));
        // With the cache served: it is the publishing account's, which fills it over sftp.
        let v = evaluated(lib, "server-publish-cache");
        let tmpfiles = v["tmpfiles"].as_array().unwrap();
        for rule in [
            "d /srv/bento/cache 0755 bento-publish bento-publish -",
            "d /srv/bento/cache/nar 0755 bento-publish bento-publish -",
            "d /srv/bento/web1/logs 2750 web1 bento-publish -",
        ] {
            assert!(tmpfiles.contains(&Value::from(rule)), "{rule}: {tmpfiles:?}");
        }
    });
}

#[test]
fn the_binary_cache_is_served_by_the_server_and_trusted_by_the_client() {
    if !crate::harness::needs_nix() {
        return;
    }
    with_lib(|lib| {
        let v = evaluated(lib, "server-cache");
        assert_eq!(v["nginx"]["enable"], true);
        let vhost = &v["nginx"]["virtualHosts"]["bento-cache"];
        assert_eq!(vhost["root"], "/srv/bento/cache");
        assert!(text(&vhost["extraConfig"]).contains("disable_symlinks on;"));
        // Only the cache's own files are served; anything else is a 404.
        assert_eq!(vhost["locations"]["/"]["return"], "404");
        let locations: Vec<&String> = vhost["locations"].as_object().unwrap().keys().collect();
        for expected in [
            "= /nix-cache-info",
            "~ ^/[0-9a-df-np-sv-z]{32}\\.narinfo$",
            "~ ^/nar/[0-9a-df-np-sv-z]+\\.nar(\\.xz|\\.zst|\\.bz2)?$",
        ] {
            assert!(
                locations.iter().any(|l| *l == expected),
                "{expected}: {locations:?}"
            );
        }
        let tmpfiles = v["tmpfiles"].as_array().unwrap();
        assert!(tmpfiles.contains(&Value::from("d /srv/bento/cache 0755 root root -")));
        // Without the option, no web server.
        let v = evaluated(lib, "server");
        assert!(v["nginx"].get("virtualHosts").is_none(), "{}", v["nginx"]);

        let v = evaluated(lib, "client-cache");
        assert_eq!(
            v["nixSettings"]["substituters"],
            serde_json::json!(["http://bento.example.org:8080"])
        );
        assert_eq!(
            v["nixSettings"]["trusted-public-keys"],
            serde_json::json!(["bento-1:wS2SGiAuzmxcbLjWVK8BkBc4rcd+IQKjmFk83l2yVxU="])
        );
        let v = evaluated(lib, "default");
        assert!(v["nixSettings"].get("substituters").is_none());
    });
}

/// Closure mode writes its keys to agent.toml: the mode, the cache key the agent checks
/// imported paths against, the nix it imports them with, and `switch` when set. Source
/// mode writes none of them: its agent.toml is as before, which older agents read.
#[test]
fn closure_mode_writes_its_agent_toml_keys_and_source_mode_none() {
    if !crate::harness::needs_nix() {
        return;
    }
    with_lib(|lib| {
        let closure_keys = ["mode", "cache_public_keys", "nix", "switch", "system_profile"];
        let source = evaluated(lib, "default");
        let source_toml = source["agentToml"].as_object().unwrap();
        for key in closure_keys {
            assert!(
                source_toml.get(key).is_none(),
                "source mode: {key}: {source_toml:?}"
            );
        }
        let v = evaluated(lib, "closure");
        let toml = v["agentToml"].as_object().unwrap();
        assert_eq!(toml["mode"], "closure");
        assert_eq!(
            toml["cache_public_keys"],
            serde_json::json!(["bento-1:wS2SGiAuzmxcbLjWVK8BkBc4rcd+IQKjmFk83l2yVxU="])
        );
        assert_eq!(
            toml["nix"], "/nix/store/00000000000000000000000000000000-nix-2.24/bin/nix",
            "nix.package's"
        );
        assert!(toml.get("switch").is_none(), "default switch: {toml:?}");
        assert_eq!(toml["system_profile"], "/nix/var/nix/profiles/system");
        // Otherwise the same file as a source host's.
        let mut rest = toml.clone();
        for key in closure_keys {
            rest.remove(key);
        }
        assert_eq!(&rest, source_toml);
        // The agent (and the trigger's runs) find nix on PATH in either mode.
        let agent = &v["services"]["bento-agent"];
        assert_eq!(agent["path"], source["services"]["bento-agent"]["path"]);
        assert_eq!(
            agent["environment"],
            source["services"]["bento-agent"]["environment"]
        );
        assert_eq!(v["services"]["bento-trigger@"]["path"], agent["path"]);
        // Closure mode does not make the host substitute from the HTTP cache.
        assert!(v["nixSettings"].get("substituters").is_none());

        let v = evaluated(lib, "closure-switch");
        assert_eq!(v["agentToml"]["switch"], "/etc/bento/switch --quiet");
        assert_eq!(v["agentToml"]["mode"], "closure");

        // `switch` on a source host: not written (older agents refuse unknown keys), warned.
        let out = eval(lib, "source-switch", &[]);
        let v: Value = serde_json::from_str(&ok(&out)).unwrap();
        assert!(v["agentToml"].get("switch").is_none(), "{}", v["agentToml"]);
        assert_eq!(
            v["warnings"],
            serde_json::json!([
                "services.bento.switch is set but services.bento.mode is \"source\": it applies in \
                 closure mode only and is not written to agent.toml"
            ])
        );
    });
}

#[test]
fn the_flake_modules_evaluate() {
    if !crate::harness::needs_nix() {
        return;
    }
    with_lib(|lib| {
        let v = evaluated(lib, "flake-client");
        assert_eq!(v["package"], "bento-0.1.0");
        assert!(v["services"].get("bento-agent").is_some());
        let v = evaluated(lib, "flake-server");
        assert!(text(&v["sshd"]).contains("Match User web1"));
    });
}

#[test]
fn the_example_hosts_evaluate_in_the_repo_and_in_their_bundles() {
    if !crate::harness::needs_nix() {
        return;
    }
    with_lib(|lib| {
        for host in ["web1", "db1", "edge"] {
            let v = evaluated(lib, &format!("host-{host}"));
            if host == "db1" {
                // The reference's example: a secret handed over as a systemd credential.
                assert_eq!(
                    v["credentials"]["app-migrate"],
                    serde_json::json!(["db:/run/bento/secrets/db-password"])
                );
            }
            assert_eq!(v["agentToml"]["host"], host);
            assert_eq!(v["packageSource"], "https://git.example.org/bento.git");
        }
        // As the host gets it: `bento deploy` of the example fleet, then the bundle's
        // configuration.nix.
        let dir = tempfile::tempdir().unwrap();
        let server = dir.path().join("srv");
        crate::harness::detach_from_terminal();
        let out = Command::new(env!("CARGO_BIN_EXE_bento"))
            .args(["deploy", "web1", "--server-root", s(&server)])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("NO_COLOR", "1")
            .env_remove("BENTO_FLEET")
            .output()
            .unwrap();
        ok(&out);
        let config = server.join("web1/generations/1/config/configuration.nix");
        let out = eval(lib, "bundle", &["--arg", "hostConfig", s(&config)]);
        let v: Value = serde_json::from_str(&ok(&out)).unwrap();
        assert_eq!(v["agentToml"]["host"], "web1");
        assert!(v["services"].get("bento-agent").is_some());
    });
}

#[test]
fn what_cannot_work_is_refused_at_evaluation() {
    if !crate::harness::needs_nix() {
        return;
    }
    with_lib(|lib| {
        for (case, message) in [
            (
                "no-trusted-keys",
                "A definition for option `services.bento.trustedKeys' is not of type `non-empty (list of string)'",
            ),
            (
                "trusted-keys-unset",
                "The option `services.bento.trustedKeys' was accessed but has no value defined",
            ),
            (
                "sftp-without-known-hosts",
                "Failed assertions: - services.bento.serverKnownHosts is empty, but server \
                 sftp://web1@bento.example.org:22 is reached over sftp",
            ),
            (
                "no-package",
                "Failed assertions: - services.bento.package is not set",
            ),
            (
                "client-cache-without-key",
                "Failed assertions: - services.bento.cache.publicKey must be the cache's public key",
            ),
            (
                "closure-without-key",
                "Failed assertions: - services.bento.cache.publicKey must be set to the fleet's cache \
                 public key (NAME:BASE64, the .pub made with cache.signing_key by nix-store \
                 --generate-binary-cache-key) when services.bento.mode is \"closure\"",
            ),
            (
                "s3-without-credentials",
                "Failed assertions: - services.bento.server is an s3:// URL: set services.bento.s3CredentialsFile",
            ),
            (
                "s3-credentials-in-store",
                "Failed assertions: - services.bento.s3CredentialsFile is in the Nix store",
            ),
            (
                "too-many-signatures",
                "Failed assertions: - services.bento.requiredSignatures = 2 is more than the 1 services.bento.trustedKeys",
            ),
            (
                "health-empty-command",
                "A definition for option `services.bento.health.commands",
            ),
            (
                "closure-bad-key",
                "services.bento.cache.publicKey must be set to the fleet's cache public key",
            ),
            (
                "server-cache-host-named-cache",
                "Failed assertions: - services.bento-server.hosts.cache: with cache.enable, /srv/bento/cache is the binary cache",
            ),
            (
                "server-bad-host",
                "Failed assertions: - services.bento-server.hosts: `../etc` is not a valid host name",
            ),
            (
                "server-publish-clash",
                "Failed assertions: - services.bento-server: a host's user would be `bento-publish`",
            ),
        ] {
            let error = refused(lib, case);
            assert!(error.contains(message), "{case}: expected `{message}`, got: {error}");
        }
    });
}
