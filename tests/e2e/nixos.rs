//! The NixOS modules (`nix/client.nix`, `nix/server.nix`, the flake's `nixosModules`) and
//! the example hosts, evaluated with nixpkgs' own module system (`lib.evalModules` from
//! nixpkgs `lib`) against the option stand-ins of `tests/nixos/stubs.nix`: the default
//! NixOS mode (users from the `users` activation script), userborn, systemd-sysusers,
//! the server with and without a user prefix, and each refusal at evaluation time.

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

/// `nix-instantiate --eval --strict --json tests/nixos/eval.nix` for `case`.
fn eval(lib: &str, case: &str, extra: &[&str]) -> std::process::Output {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nixos/eval.nix");
    Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json"])
        .arg(&file)
        .args(["--arg", "nixpkgsLib", lib, "--argstr", "case", case])
        .args(extra)
        .output()
        .unwrap()
}

/// The case's summary; fails the test when evaluation fails.
fn evaluated(lib: &str, case: &str) -> Value {
    let out = eval(lib, case, &[]);
    let stdout = ok(&out);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{case}: {e}: {stdout}"))
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
        Some(lib) => f(&lib),
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
        // Units go to switch-to-configuration during a switch, nowhere at boot.
        assert!(users_phase.contains("bento_units=--from-activation; else bento_units=--no-restart"));
        // The whole activation script is put together: every dep names a script.
        let script = text(&v["activationScript"]);
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

#[test]
fn the_client_module_evaluates_with_userborn_and_systemd_sysusers() {
    if !crate::harness::needs_nix() {
        return;
    }
    with_lib(|lib| {
        for case in ["userborn", "sysusers"] {
            let v = evaluated(lib, case);
            let scripts = &v["activationScripts"];
            assert_eq!(scripts["users"], "", "{case}: the users script stays empty");
            assert!(scripts.get("bentoSecretsForUsers").is_none(), "{case}");
            // Activation (a switch only) runs both phases and reruns bento-secrets.service
            // after userborn/sysusers.
            let activation = text(&scripts["bentoSecrets"]["text"]);
            assert!(
                activation.starts_with("if [ -n \"${NIXOS_ACTION-}\" ]; then"),
                "{case}: {activation}"
            );
            assert!(activation.contains("--phase users") && activation.contains("--phase secrets"));
            assert!(activation.contains("echo bento-secrets.service >> /run/nixos/activation-restart-list"));
            // At boot, services around systemd-sysusers (which userborn also answers to).
            let users = &v["services"]["bento-secrets-for-users"];
            assert_eq!(users["wantedBy"], serde_json::json!(["sysinit.target"]));
            assert_eq!(
                users["before"],
                serde_json::json!(["systemd-sysusers.service", "userborn.service", "sysinit.target"])
            );
            assert_eq!(users["unitConfig"]["DefaultDependencies"], "no");
            assert_eq!(users["unitConfig"]["ConditionPathExists"], "/var/bento/current");
            let exec = text(&users["serviceConfig"]["ExecStart"]);
            assert!(
                exec.ends_with(
                    "activate --phase users --bundle /var/bento/current --root /run/bento \
                 -i /etc/ssh/ssh_host_ed25519_key --no-restart"
                ),
                "{exec}"
            );
            let rest = &v["services"]["bento-secrets"];
            assert_eq!(
                rest["after"],
                serde_json::json!(["systemd-sysusers.service", "userborn.service"])
            );
            assert!(text(&rest["serviceConfig"]["ExecStart"]).contains("--phase secrets"));
        }
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
        ] {
            assert_eq!(toml[key], want, "{key}");
        }
        // Every key the agent reads is written (the module is the agent's only writer).
        let keys: Vec<&str> = toml.as_object().unwrap().keys().map(String::as_str).collect();
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
            "d /srv/bento/db1/logs 0700 db1 bento -",
        ] {
            assert!(tmpfiles.contains(&Value::from(rule)), "{rule}: {tmpfiles:?}");
        }
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
            "d /srv/bento/web1/logs 0700 web1 bento -",
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
            assert_eq!(v["agentToml"]["host"], host);
            assert_eq!(v["packageSource"], "https://git.example.org/bento.git");
        }
        // As the host gets it: `bento deploy` of the example fleet, then the bundle's
        // configuration.nix.
        let dir = tempfile::tempdir().unwrap();
        let server = dir.path().join("srv");
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
