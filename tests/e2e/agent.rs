//! `bento agent`: the whole pull loop against a real server layout made by `bento deploy`
//! (as a local `file://` directory, and over a real chrooted sshd), with a fake
//! `nixos-rebuild` that records its arguments and moves a system-profile symlink.

use std::path::{Path, PathBuf};

use crate::harness::{example, fails, ok, pub_line, s, Fleet, Keys};
use crate::sshd::Sshd;

/// A fleet deployed to a server root, and web1's agent configured against it.
pub(crate) struct Loop {
    pub(crate) fleet: Fleet,
    pub(crate) keys: Keys,
    pub(crate) server: PathBuf,
    /// web1's state dir, secrets root, fake commands' call log, system symlink.
    pub(crate) state: PathBuf,
    pub(crate) secrets: PathBuf,
    pub(crate) calls: PathBuf,
    pub(crate) system: PathBuf,
    pub(crate) config: PathBuf,
}

impl Loop {
    pub(crate) fn new() -> Loop {
        let (fleet, keys) = example();
        for name in ["db-password", "web-only", "tls"] {
            ok(&fleet.bento_stdin(&["secret", "edit", name], format!("v1 of {name}").as_bytes()));
        }
        for host in ["web1", "db1"] {
            let dir = fleet.path(&format!("hosts/{host}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join("configuration.nix"),
                format!("{{ networking.hostName = \"{host}\"; }}\n"),
            )
            .unwrap();
        }
        fleet.signing_admin();
        let base = fleet.home.join("web1-host");
        let l = Loop {
            server: fleet.home.join("server"),
            state: base.join("var-bento"),
            secrets: base.join("run-bento"),
            calls: base.join("calls"),
            system: base.join("current-system"),
            config: base.join("agent.toml"),
            fleet,
            keys,
        };
        std::fs::create_dir_all(&base).unwrap();
        // nixos-rebuild stand-in: records its arguments, points the system profile at a
        // new fake store path, and activates the bundle's secrets as the real one would.
        l.rebuild_with(
            "nixos-rebuild",
            &format!(
                r#"echo "nixos-rebuild $*" >> {calls}
[ -e {base}/fail-rebuild ] && {{ echo "error: evaluation failed" >&2; exit 1; }}
n=$(( $(ls {base} | grep -c '^gen-') + 1 )); touch {base}/gen-$n
sys={base}/store/fake-system-$n; mkdir -p $sys
ln -sfn {base}/kernel-$(cat {base}/kernel-version 2>/dev/null || echo 1) $sys/kernel
case "$*" in *--rollback*) ;; *) ln -sfn $sys {system};; esac
[ -e {base}/lose-server ] && mv {server}/web1 {server}/web1.away
case "$*" in *--rollback*) exit 0;; esac
exec {bento} activate --no-mount --bundle {state}/current -i {key} --root {secrets}"#,
                calls = l.calls.display(),
                base = base.display(),
                system = l.system.display(),
                server = l.server.display(),
                bento = env!("CARGO_BIN_EXE_bento"),
                state = l.state.display(),
                key = s(&l.keys.web1),
                secrets = l.secrets.display(),
            ),
        );
        // The booted system runs kernel 1.
        std::fs::create_dir_all(base.join("booted")).unwrap();
        std::os::unix::fs::symlink(base.join("kernel-1"), base.join("booted/kernel")).unwrap();
        for k in ["kernel-1", "kernel-2"] {
            std::fs::create_dir_all(base.join(k)).unwrap();
        }
        l
    }

    pub(crate) fn base(&self) -> PathBuf {
        self.state.parent().unwrap().to_path_buf()
    }

    pub(crate) fn write_config(&self, server: &str, rebuild: &Path, known_hosts: Option<&Path>) {
        let admin_pub = pub_line(&self.fleet.keys.join("admin"));
        let mut text = format!(
            "host = \"web1\"\nserver = \"{server}\"\nidentity = \"{key}\"\ntrusted_keys = [\"{admin_pub}\"]\n\
             state_dir = \"{state}\"\nsecrets_root = \"{secrets}\"\nrebuild = \"{rebuild}\"\n\
             rollback = \"{rebuild} switch --rollback\"\ncurrent_system = \"{system}\"\n\
             activate = \"{bento} activate --no-mount --bundle {state}/current -i {key} --root {secrets}\"\n\
             connect_timeout = 3\nbooted_system = \"{booted}\"\n",
            booted = self.state.parent().unwrap().join("booted").display(),
            key = s(&self.keys.web1),
            state = self.state.display(),
            secrets = self.secrets.display(),
            rebuild = format!("{} switch", rebuild.display()),
            system = self.system.display(),
            bento = env!("CARGO_BIN_EXE_bento"),
        );
        if let Some(kh) = known_hosts {
            text.push_str(&format!("known_hosts = \"{}\"\n", kh.display()));
        }
        std::fs::write(&self.config, text).unwrap();
    }

    /// The agent requires two signatures, trusting the admin's key and `second`'s.
    pub(crate) fn require_two_signatures(&self, second: &Path) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        std::fs::write(
            &self.config,
            text.replace(
                "trusted_keys = [\"",
                &format!(
                    "required_signatures = 2\ntrusted_keys = [\"{}\", \"",
                    pub_line(second)
                ),
            ),
        )
        .unwrap();
    }

    pub(crate) fn deploy(&self) {
        ok(&self.fleet.bento(&["deploy", "--server-root", s(&self.server)]));
    }

    /// A new configuration for web1, deployed: the next generation.
    pub(crate) fn deploy_config(&self, text: &str) {
        std::fs::write(self.fleet.path("hosts/web1/configuration.nix"), text).unwrap();
        self.deploy();
    }

    pub(crate) fn agent(&self, extra: &[&str]) -> std::process::Output {
        let mut args = vec!["agent", "--once", "--config", s(&self.config)];
        args.extend_from_slice(extra);
        self.fleet.bento(&args)
    }

    /// An agent run with `--json`, and the report it printed.
    pub(crate) fn agent_json(&self) -> (std::process::Output, serde_json::Value) {
        let out = self.agent(&["--json"]);
        let report = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("no JSON report ({e}); stderr: {}", stderr(&out)));
        (out, report)
    }

    /// web1's agent configured with a `rebuild` command: a script `name` running `body`.
    pub(crate) fn rebuild_with(&self, name: &str, body: &str) {
        let rebuild = self.fleet.script(name, body);
        self.write_config(&format!("file://{}", self.server.display()), &rebuild, None);
    }

    pub(crate) fn calls(&self) -> String {
        std::fs::read_to_string(&self.calls).unwrap_or_default()
    }

    pub(crate) fn reports(&self) -> Vec<serde_json::Value> {
        let logs = self.server.join("web1/logs");
        let mut names: Vec<_> = std::fs::read_dir(&logs)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
            .iter()
            .filter(|n| n.starts_with("report-") && n.ends_with(".json"))
            .map(|n| serde_json::from_slice(&std::fs::read(logs.join(n)).unwrap()).unwrap())
            .collect()
    }

    pub(crate) fn secret(&self, name: &str) -> String {
        std::fs::read_to_string(self.secrets.join("secrets").join(name)).unwrap()
    }
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn first_pull_rebuilds_activates_and_reports() {
    let l = Loop::new();
    l.deploy();
    let (out, report) = l.agent_json();
    ok(&out);
    assert_eq!(report["state"], "applied");
    assert_eq!(report["generation"], 1);
    let system = l.base().join("store/fake-system-1");
    assert_eq!(report["system_after"], system.display().to_string());
    assert_eq!(report["kernel_changed"], false);
    let calls = l.calls();
    let state = l.state.display().to_string();
    assert_eq!(
        calls,
        format!("nixos-rebuild switch -I nixos-config={state}/current/config/configuration.nix\n")
    );
    assert_eq!(
        std::fs::read_link(l.state.join("current")).unwrap(),
        Path::new("bundles/1")
    );
    assert_eq!(l.secret("db-password"), "v1 of db-password");
    assert!(!l.secrets.join("secrets/nothing-for-db1-only").exists());
    // What the rebuild's activation did, as it recorded it.
    assert_eq!(
        report["secrets_changed"],
        serde_json::json!(["db-password", "tls", "web-only"])
    );
    assert!(report.get("note").is_none(), "{report}");
    let reports = l.reports();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0]["state"], "applied");
    // The log went along, compressed; no plaintext in reports or logs.
    let logs: Vec<_> = std::fs::read_dir(l.server.join("web1/logs"))
        .unwrap()
        .flatten()
        .collect();
    assert!(logs
        .iter()
        .any(|e| e.file_name().to_string_lossy().ends_with(".txt.gz")));
    for e in logs {
        let bytes = std::fs::read(e.path()).unwrap();
        assert!(
            !bytes.windows(5).any(|w| w == b"v1 of"),
            "plaintext in {:?}",
            e.file_name()
        );
    }
}

#[test]
fn a_no_change_poll_reads_only_current() {
    let l = Loop::new();
    l.deploy();
    ok(&l.agent(&[]));
    let before = l.reports().len();
    let out = l.agent(&[]);
    ok(&out);
    assert!(
        stderr(&out).contains("up to date (bundle generation 1)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(l.reports().len(), before, "a no-change poll uploads no report");
    assert_eq!(l.calls().lines().count(), 1, "nothing ran again");
    // Only the heartbeat, rewritten at every poll.
    let beat: serde_json::Value =
        serde_json::from_slice(&std::fs::read(l.server.join("web1/logs/seen.json")).unwrap()).unwrap();
    assert_eq!(beat["host"], "web1");
    assert_eq!(beat["applied"], 1);
    assert!(bento_deploy::time::parse_rfc3339(beat["time"].as_str().unwrap()).is_some());
}

#[test]
fn only_secrets_changed_activates_without_rebuild() {
    let l = Loop::new();
    l.deploy();
    ok(&l.agent(&[]));
    ok(&l
        .fleet
        .bento_stdin(&["secret", "edit", "db-password"], b"v2 of db-password"));
    l.deploy();
    let (out, report) = l.agent_json();
    ok(&out);
    assert_eq!(report["state"], "secrets-updated");
    assert_eq!(report["secrets_changed"], serde_json::json!(["db-password"]));
    assert_eq!(
        l.calls().lines().count(),
        1,
        "no rebuild for a secrets-only change"
    );
    assert_eq!(l.secret("db-password"), "v2 of db-password");
}

/// A secrets-only update with the agent's own `activate` (no `activate` key), as root on
/// a real ramfs in a private mount namespace: the configured identity (not the machine's
/// /etc/ssh host key) decrypts, and the `needed_for_users` secret is refreshed too.
#[test]
fn a_secrets_only_update_uses_the_configured_identity_and_refreshes_both_phases() {
    if !crate::harness::needs_root("activation in a private mount namespace") {
        return;
    }
    crate::harness::require("unshare");
    let l = Loop::new();
    let rules = format!(
        "{}\n[secrets.root-hash]\nrecipients = [\"web1\"]\nneeded_for_users = true\n",
        crate::harness::EXAMPLE_RULES
    );
    l.fleet.rules(&rules);
    ok(&l.fleet.bento_stdin(&["secret", "edit", "root-hash"], b"$6$one"));
    l.deploy();
    ok(&l.agent(&[])); // config and secrets: the rebuild's activation
                       // From now on the agent activates by itself, with its default command.
    let config = std::fs::read_to_string(&l.config).unwrap();
    let config: String = config
        .lines()
        .filter(|line| !line.starts_with("activate ="))
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(config.contains(&format!("identity = \"{}\"", s(&l.keys.web1))));
    std::fs::write(&l.config, config).unwrap();
    ok(&l.fleet.bento_stdin(&["secret", "edit", "root-hash"], b"$6$two"));
    ok(&l
        .fleet
        .bento_stdin(&["secret", "edit", "db-password"], b"v2 of db-password"));
    l.deploy();
    let script = format!(
        "{bento} agent --once --config {config}\n\
         echo; cat {root}/secrets-for-users/root-hash; echo; cat {root}/secrets/db-password; echo\n\
         stat -c '%n %U %a' {root}/secrets-for-users/root-hash",
        bento = env!("CARGO_BIN_EXE_bento"),
        config = l.config.display(),
        root = l.secrets.display(),
    );
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-euc", &script])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("generation 2 secrets-updated"), "{text}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().skip_while(|l| !l.is_empty()).skip(1).collect();
    assert_eq!(lines[..2], ["$6$two", "v2 of db-password"], "{text}");
    assert!(
        text.contains(&format!(
            "{}/secrets-for-users/root-hash root 400",
            l.secrets.display()
        )),
        "{text}"
    );
    assert_eq!(
        l.calls().lines().count(),
        1,
        "no rebuild for a secrets-only change"
    );
}

#[test]
fn tampered_bundles_and_downgrades_are_refused() {
    let l = Loop::new();
    l.deploy();
    ok(&l.agent(&[]));
    // Generation 2, then its config changed on the server after signing.
    l.deploy_config("{ services.nginx.enable = true; }\n");
    let file = l.server.join("web1/generations/2/config/configuration.nix");
    // Same size as signed (`{ services.nginx.enable = true; }`), other bytes.
    std::fs::write(&file, "{ users.users.evil = {};        }\n").unwrap();
    let (out, report) = l.agent_json();
    assert!(!out.status.success());
    assert_eq!(report["state"], "refused");
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("SHA-256 differs from the signed manifest"),
        "{report}"
    );
    assert_eq!(
        std::fs::read_link(l.state.join("current")).unwrap(),
        Path::new("bundles/1")
    );
    assert_eq!(l.calls().lines().count(), 1);

    // The manifest changed after signing: bad signature.
    let manifest = l.server.join("web1/generations/2/manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replacen("\"host\": \"web1\"", "\"host\": \"web1\" ", 1),
    )
    .unwrap();
    let (_, report) = l.agent_json();
    assert_eq!(report["state"], "refused");
    assert!(
        report["error"].as_str().unwrap().contains("bad signature"),
        "{report}"
    );

    // A replay of generation 1 after 3 was applied.
    l.deploy_config("{ services.nginx.enable = false; }\n");
    ok(&l.agent(&[]));
    std::fs::write(l.server.join("web1/current"), "1\n").unwrap();
    let (_, report) = l.agent_json();
    assert_eq!(report["state"], "refused");
    assert!(
        report["error"].as_str().unwrap().contains("downgrade or replay"),
        "{report}"
    );
    assert_eq!(
        std::fs::read_link(l.state.join("current")).unwrap(),
        Path::new("bundles/3")
    );
}

#[test]
fn a_failed_rebuild_is_reported_and_not_retried_until_forced() {
    let l = Loop::new();
    l.deploy();
    std::fs::write(l.state.parent().unwrap().join("fail-rebuild"), "").unwrap();
    let (out, report) = l.agent_json();
    assert!(!out.status.success());
    assert_eq!(report["state"], "failed");
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("error: evaluation failed"),
        "{report}"
    );
    assert!(
        std::fs::read_link(l.state.join("current")).is_err(),
        "current is put back (here: none)"
    );
    let out = l.agent(&[]);
    ok(&out);
    assert!(stderr(&out).contains("failed before"), "{}", stderr(&out));
    assert_eq!(l.calls().lines().count(), 1, "not retried");
    std::fs::remove_file(l.state.parent().unwrap().join("fail-rebuild")).unwrap();
    ok(&l.agent(&["--force"]));
    assert_eq!(
        std::fs::read_link(l.state.join("current")).unwrap(),
        Path::new("bundles/1")
    );
}

#[test]
fn losing_the_server_after_a_switch_rolls_back_and_the_report_waits() {
    let l = Loop::new();
    l.deploy();
    ok(&l.agent(&[]));
    l.deploy_config("{ networking.firewall.enable = true; }\n");
    let flag = l.state.parent().unwrap().join("lose-server");
    std::fs::write(&flag, "").unwrap();
    let (out, report) = l.agent_json();
    assert!(!out.status.success());
    assert_eq!(report["state"], "rolled-back");
    assert!(l.calls().contains("switch --rollback"), "{}", l.calls());
    assert_eq!(
        std::fs::read_link(l.state.join("current")).unwrap(),
        Path::new("bundles/1")
    );
    // The server came back: the queued report goes with the next run.
    std::fs::remove_file(&flag).unwrap();
    std::fs::rename(l.server.join("web1.away"), l.server.join("web1")).unwrap();
    ok(&l.agent(&[]));
    let states: Vec<_> = l
        .reports()
        .iter()
        .map(|r| r["state"].as_str().unwrap().to_owned())
        .collect();
    assert!(states.contains(&"rolled-back".to_owned()), "{states:?}");
}

#[test]
fn bad_agent_config_is_one_clear_line() {
    let l = Loop::new();
    let admin_pub = pub_line(&l.fleet.keys.join("admin"));
    let cases = [
        (
            "host = \"web1\"\nserver = \"ftp://x\"\ntrusted_keys = []\n".to_owned(),
            "agent.toml:2: server `ftp://x`: expected sftp://",
        ),
        (
            "host = \"web1\"\nserver = \"file:///srv\"\ntrusted_keys = []\n".to_owned(),
            "agent.toml:3: trusted_keys is empty",
        ),
        // A key whose name holds another's (`known_hosts`, `host`) does not take its line.
        (
            "known_hosts = \"/k\"\nserver = \"file:///srv/host\"\nhost = \"../web1\"\ntrusted_keys = []\n".to_owned(),
            "agent.toml:3: host `../web1` is not a valid host name",
        ),
        // Trusted keys are checked with the parser that later verifies signatures.
        (
            "host = \"web1\"\nserver = \"file:///srv\"\ntrusted_keys = [\n  \"ssh-ed25519 AAAAnot-a-key admin\",\n]\n".to_owned(),
            "agent.toml:4: trusted_keys: `ssh-ed25519 AAAAnot-a-key admi` is not an ssh public key line",
        ),
        // The bad key also appears in a comment above: the error names the list's line.
        (
            "host = \"web1\"\nserver = \"file:///srv\"\n# was \"ssh-ed25519 AAAAnot-a-key admin\"\ntrusted_keys = [\n  \"ssh-ed25519 AAAAnot-a-key admin\",\n]\n".to_owned(),
            "agent.toml:5: trusted_keys: `ssh-ed25519 AAAAnot-a-key admi` is not an ssh public key line",
        ),
        // `run_timeout = …` inside a multi-line string is not the key.
        (
            format!("host = \"web1\"\nserver = \"file:///srv\"\ntrusted_keys = [\"{admin_pub}\"]\nrollback = \"\"\"\nrun_timeout = 5 nixos-rebuild switch --rollback\"\"\"\nrun_timeout = 0\n"),
            "agent.toml:6: run_timeout must be at least 1 (seconds)",
        ),
        // A command line that does not split into words is refused when the file is read.
        (
            format!("host = \"web1\"\nserver = \"file:///srv\"\ntrusted_keys = [\"{admin_pub}\"]\n\nrebuild = \"nixos-rebuild 'switch\"\n"),
            "agent.toml:5: rebuild: missing closing quote: close the quote or escape it with `\\`",
        ),
    ];
    for (config, expected) in cases {
        std::fs::write(&l.config, &config).unwrap();
        let err = crate::harness::fails(&l.agent(&[]));
        assert!(err.contains(expected), "{config}\ngot: {err}");
    }
}

#[test]
fn configured_commands_split_as_a_shell_would() {
    let l = Loop::new();
    l.deploy();
    // A program path and an argument holding spaces, quoted as in a shell.
    let first = l.base().join("first-argument");
    let rebuild = l.fleet.keys.join("nixos-rebuild");
    let wrapper = l.fleet.script(
        "re build",
        &format!(
            "printf '%s\\n' \"$1\" > '{}'\nshift\nexec '{}' \"$@\"",
            first.display(),
            rebuild.display()
        ),
    );
    let text = std::fs::read_to_string(&l.config).unwrap();
    let text: String = text
        .lines()
        .map(|line| {
            if line.starts_with("rebuild = ") {
                format!("rebuild = \"'{}' 'one word' switch\"\n", wrapper.display())
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    std::fs::write(&l.config, text).unwrap();
    let (out, report) = l.agent_json();
    ok(&out);
    assert_eq!(report["state"], "applied");
    assert_eq!(std::fs::read_to_string(&first).unwrap(), "one word\n");
    assert!(
        l.calls().starts_with("nixos-rebuild switch -I nixos-config="),
        "{}",
        l.calls()
    );
}

#[test]
fn pulls_over_a_real_chrooted_sftp_server() {
    if !crate::harness::needs_root("a real sshd with chroots under /srv, in a private mount namespace") {
        return;
    }
    let l = Loop::new();
    let sshd = Sshd::start(&[("bento-web1", "web1", &pub_line(&l.keys.web1))]);
    ok(&l.fleet.bento(&["deploy", "--server-root", s(&sshd.root)]));
    // The sftp user of web1 (uid 64991 in the server's namespace) owns its logs/.
    std::process::Command::new("chown")
        .args(["64991"])
        .arg(sshd.root.join("web1/logs"))
        .status()
        .unwrap();
    let rebuild = l.fleet.keys.join("nixos-rebuild");
    l.write_config(
        &format!("sftp://bento-web1@127.0.0.1:{}", sshd.port),
        &rebuild,
        Some(&sshd.known_hosts),
    );
    let (out, report) = l.agent_json();
    ok(&out);
    assert_eq!(report["state"], "applied");
    assert_eq!(l.secret("web-only"), "v1 of web-only");
    let logs: Vec<_> = std::fs::read_dir(sshd.root.join("web1/logs"))
        .unwrap()
        .flatten()
        .collect();
    assert!(
        logs.iter()
            .any(|e| e.file_name().to_string_lossy().starts_with("report-")),
        "report uploaded"
    );
    // A no-change poll over sftp: it rewrites the heartbeat, through the chroot.
    let seen = sshd.root.join("web1/logs/seen.json");
    std::fs::remove_file(&seen).unwrap();
    let out = l.agent(&[]);
    ok(&out);
    assert!(stderr(&out).contains("up to date"));
    let beat: serde_json::Value = serde_json::from_slice(&std::fs::read(&seen).unwrap()).unwrap();
    assert_eq!(
        (beat["host"].as_str(), beat["applied"].as_u64()),
        (Some("web1"), Some(1))
    );
    // A mistyped `host` is not "up to date" with web1's bundle.
    let config = std::fs::read_to_string(&l.config).unwrap();
    std::fs::write(
        &l.config,
        config.replacen("host = \"web1\"", "host = \"web11\"", 1),
    )
    .unwrap();
    let err = crate::harness::fails(&l.agent(&[]));
    assert!(
        err.ends_with(
            "the bundle is for host `web1`, not `web11`: agent.toml's `host` must name this host as the fleet does"
        ),
        "{err}"
    );
    std::fs::write(&l.config, config).unwrap();
    // A server whose key is not the pinned one is refused.
    let wrong = l.fleet.home.join("wrong_known_hosts");
    std::fs::write(
        &wrong,
        format!("[127.0.0.1]:{} {}\n", sshd.port, pub_line(&l.keys.db1)),
    )
    .unwrap();
    l.write_config(
        &format!("sftp://bento-web1@127.0.0.1:{}", sshd.port),
        &rebuild,
        Some(&wrong),
    );
    let err = crate::harness::fails(&l.agent(&[]));
    assert!(
        err.contains("sftp connection failed") && err.contains("verification failed"),
        "{err}"
    );
}

#[test]
fn a_kernel_change_reboots_only_when_asked() {
    let l = Loop::new();
    l.deploy();
    ok(&l.agent(&[]));
    // The next switch brings kernel 2.
    std::fs::write(l.base().join("kernel-version"), "2").unwrap();
    l.deploy_config("{ boot.kernelPackages = 2; }\n");
    let recorder = l
        .fleet
        .script("kexec", &format!("echo kexec >> {}", l.calls.display()));
    let text = std::fs::read_to_string(&l.config).unwrap();
    std::fs::write(
        &l.config,
        format!(
            "{text}reboot = \"kexec\"\nreboot_command = \"{}\"\n",
            recorder.display()
        ),
    )
    .unwrap();
    let (out, report) = l.agent_json();
    ok(&out);
    assert_eq!(report["kernel_changed"], true);
    assert!(l.calls().ends_with("kexec\n"), "{}", l.calls());
}

#[test]
fn self_update_rebuilds_a_flake_with_fresh_inputs_when_nothing_is_new() {
    crate::harness::require("nix");
    let l = Loop::new();
    let dir = l.fleet.path("hosts/web1");
    std::fs::remove_file(dir.join("configuration.nix")).unwrap();
    std::fs::write(
        dir.join("flake.nix"),
        "{ outputs = { self }: { nixosConfigurations.web1 = { }; }; }\n",
    )
    .unwrap();
    // Listing the flake's hosts uses a private Nix store in the test's temp dir.
    let store = l.fleet.home.join("nix-store");
    let out = l
        .fleet
        .cmd(&["deploy", "--server-root", s(&l.server)])
        .env("NIX_CONFIG", format!("store = {}", store.display()))
        .output()
        .unwrap();
    ok(&out);
    ok(&l.agent(&[]));
    let state = l.state.display().to_string();
    assert!(
        l.calls()
            .contains(&format!("--flake {state}/current/config#web1")),
        "{}",
        l.calls()
    );
    // Not asked for: a no-change poll.
    ok(&l.agent(&[]));
    assert_eq!(l.calls().lines().count(), 1);
    let text = std::fs::read_to_string(&l.config).unwrap();
    std::fs::write(&l.config, format!("{text}self_update = true\n")).unwrap();
    let (out, report) = l.agent_json();
    ok(&out);
    assert_eq!(report["state"], "self-updated");
    assert!(
        l.calls().lines().last().unwrap().contains("--recreate-lock-file"),
        "{}",
        l.calls()
    );
}

#[test]
fn the_nixos_modules_and_flake_parse() {
    if !crate::harness::needs_nix() {
        return;
    }
    crate::harness::require("nix-instantiate");
    for file in ["nix/client.nix", "nix/server.nix", "flake.nix"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let out = std::process::Command::new("nix-instantiate")
            .arg("--parse")
            .arg(&path)
            .output()
            .unwrap();
        ok(&out);
    }
}

#[test]
fn a_download_cut_short_applies_nothing_and_the_next_run_succeeds() {
    if !crate::harness::needs_root("a real sshd with chroots under /srv, in a private mount namespace") {
        return;
    }
    let l = Loop::new();
    // A big configuration file, so the download takes a while.
    let big: String = (0..400_000).map(|i| format!("# line {i}\n")).collect();
    std::fs::write(l.fleet.path("hosts/web1/big.nix"), big).unwrap();
    let key = pub_line(&l.keys.web1);
    let rebuild = l.fleet.keys.join("nixos-rebuild");
    let sshd = Sshd::start(&[("bento-web1", "web1", &key)]);
    ok(&l.fleet.bento(&["deploy", "--server-root", s(&sshd.root)]));
    l.write_config(
        &format!("sftp://bento-web1@127.0.0.1:{}", sshd.port),
        &rebuild,
        Some(&sshd.known_hosts),
    );
    // The connection drops after 600 kB, inside big.nix: deterministic however loaded the
    // machine is (racing a kill of sshd against the transfer was not).
    // (ssh writes into a FIFO in the background; the script becomes dd, the only writer of
    // the agent's pipe, so the agent sees the stream end when dd does.)
    let fifo = l.fleet.keys.join("ssh-stream");
    let ssh = l.fleet.script(
        "ssh-drops",
        &format!(
            "rm -f {f}; mkfifo {f}\nexec 3<&0\nssh \"$@\" <&3 >{f} 3<&- &\nexec dd bs=1 count=600000 status=none <{f}",
            f = fifo.display()
        ),
    );
    let config = std::fs::read_to_string(&l.config).unwrap();
    std::fs::write(&l.config, format!("{config}ssh = \"{}\"\n", ssh.display())).unwrap();
    let out = l.agent(&[]);
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("big.nix"),
        "cut inside big.nix: {}",
        stderr(&out)
    );
    assert!(
        std::fs::read_link(l.state.join("current")).is_err(),
        "nothing installed"
    );
    assert!(!l.state.join("bundles/1").exists());
    let staging_left = std::fs::read_dir(l.state.join("bundles"))
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(".1."))
        })
        .unwrap_or(false);
    assert!(!staging_left, "the staging dir is removed");
    assert_eq!(l.calls(), "", "nothing ran");
    drop(sshd);
    // The server is back (a new sshd over the same tree): the next run applies.
    let sshd = Sshd::start(&[("bento-web1", "web1", &key)]);
    ok(&l.fleet.bento(&["deploy", "--server-root", s(&sshd.root)]));
    l.write_config(
        &format!("sftp://bento-web1@127.0.0.1:{}", sshd.port),
        &rebuild,
        Some(&sshd.known_hosts),
    );
    ok(&l.agent(&[]));
    assert_eq!(
        std::fs::read_link(l.state.join("current")).unwrap(),
        Path::new("bundles/1")
    );
}

#[test]
fn a_corrupt_state_is_refused_not_taken_as_nothing_applied() {
    let l = Loop::new();
    l.deploy();
    ok(&l.agent(&[]));
    // Read as "nothing applied", it would let the server push any older generation.
    std::fs::write(l.state.join("state.json"), b"{\"applied\": ").unwrap();
    let e = fails(&l.agent(&[]));
    assert!(
        e.contains("state.json: unreadable") && e.contains("delete it to accept any generation"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");
    assert_eq!(l.calls().lines().count(), 1, "nothing ran");
}

#[test]
fn every_json_run_prints_one_document() {
    let l = Loop::new();
    let json = |out: &std::process::Output| -> serde_json::Value {
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("one JSON document ({e}): {text:?}"))
    };
    // Nothing published yet.
    std::fs::create_dir_all(l.server.join("web1")).unwrap();
    let doc = json(&l.agent(&["--json"]));
    assert_eq!(
        (
            doc["format"].as_u64(),
            doc["host"].as_str(),
            doc["state"].as_str()
        ),
        (Some(1), Some("web1"), Some("nothing-published"))
    );
    assert!(doc["generation"].is_null());
    // A run that applies: the report.
    l.deploy();
    let doc = json(&l.agent(&["--json"]));
    assert_eq!(
        (doc["state"].as_str(), doc["generation"].as_u64()),
        (Some("applied"), Some(1))
    );
    // Up to date.
    let out = l.agent(&["--json"]);
    ok(&out);
    let doc = json(&out);
    assert_eq!(
        (doc["state"].as_str(), doc["generation"].as_u64()),
        (Some("up-to-date"), Some(1))
    );
    // A failed generation, then skipped.
    let base = l.state.parent().unwrap().to_path_buf();
    std::fs::write(base.join("fail-rebuild"), "").unwrap();
    l.deploy_config("{ v = 2; }\n");
    let doc = json(&l.agent(&["--json"]));
    assert_eq!(
        (doc["state"].as_str(), doc["generation"].as_u64()),
        (Some("failed"), Some(2))
    );
    let doc = json(&l.agent(&["--json"]));
    assert_eq!(
        (doc["state"].as_str(), doc["generation"].as_u64()),
        (Some("skipped"), Some(2))
    );
    assert_eq!(doc["host"], "web1");
}

/// A rebuild that does not activate the secrets (a stand-in, a host without the NixOS
/// module): the report lists no secret as changed and says why, instead of the bundle's.
#[test]
fn a_rebuild_that_activates_nothing_is_reported_as_such() {
    let l = Loop::new();
    l.deploy();
    l.rebuild_with("rebuild-only", "exit 0");
    let (out, report) = l.agent_json();
    ok(&out);
    assert_eq!(report["state"], "applied");
    assert_eq!(report["secrets_changed"], serde_json::json!([]));
    let note = report["note"].as_str().unwrap();
    assert!(
        note.starts_with("the rebuild activated no secret (no `bento activate` ran under ")
            && note.contains("3 changed secrets are not live"),
        "{note}"
    );
    assert!(
        stderr(&out).contains("3 changed secrets are not live"),
        "{}",
        stderr(&out)
    );
    assert!(!l.secrets.join("secrets").exists());
}

/// A failed rebuild is reported by its first `error:` line, not by whatever it printed last.
#[test]
fn a_failed_rebuild_is_named_by_its_error_line() {
    let l = Loop::new();
    l.deploy();
    l.rebuild_with(
        "failing-rebuild",
        "echo 'building the system configuration...' >&2\n\
         echo 'error: attribute services.nginx.virtualHosts.x.root missing' >&2\n\
         echo '       at /etc/nixos/configuration.nix:12:5' >&2\n\
         echo 'secrets generation 3 active: 0 added, 0 changed, 0 removed, 2 unchanged' >&2\n\
         exit 1",
    );
    let (out, report) = l.agent_json();
    assert!(!out.status.success());
    let error = report["error"].as_str().unwrap();
    assert!(
        error.ends_with(
            "failed (exit status: 1): error: attribute services.nginx.virtualHosts.x.root missing"
        ),
        "{error}"
    );
}

/// With `activate_after_rebuild` (the NixOS module's systemd-only way, where a switch
/// reruns the secrets' services only when their units changed), a rebuild that
/// activated nothing is followed by the activation: the changed secrets go live.
#[test]
fn activate_after_rebuild_makes_the_changed_secrets_live() {
    let l = Loop::new();
    l.deploy();
    l.rebuild_with("rebuild-only", "exit 0");
    let mut config = std::fs::read_to_string(&l.config).unwrap();
    config.push_str("activate_after_rebuild = true\n");
    std::fs::write(&l.config, config).unwrap();
    let (out, report) = l.agent_json();
    ok(&out);
    assert_eq!(report["state"], "applied");
    assert_eq!(
        report["secrets_changed"],
        serde_json::json!(["db-password", "tls", "web-only"])
    );
    assert!(report.get("note").is_none(), "{report}");
    assert_eq!(l.secret("db-password"), "v1 of db-password");
}

/// A missing `identity` is named before any connection, not left for the server to refuse.
#[test]
fn a_missing_identity_is_named_before_connecting() {
    let l = Loop::new();
    let rebuild = l.fleet.script("rebuild-unused", "exit 0");
    l.write_config("sftp://bento-web1@127.0.0.1:1", &rebuild, None);
    let config = std::fs::read_to_string(&l.config).unwrap();
    let key = s(&l.keys.web1).to_owned();
    std::fs::write(
        &l.config,
        config.replacen(&key, "/nonexistent/ssh_host_ed25519_key", 1),
    )
    .unwrap();
    let err = crate::harness::fails(&l.agent(&[]));
    assert_eq!(
        err,
        "error: /nonexistent/ssh_host_ed25519_key: No such file or directory (os error 2): this is \
         agent.toml's identity, the key this host logs in to the server with (and decrypts its \
         secrets with); point identity at the host's private key"
    );
}
