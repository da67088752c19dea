//! Closure deployments against real Nix: the admin builds a small system with `nix-build`
//! (several store paths and a `bin/switch-to-configuration` that records its call) in a
//! Nix store of its own, `bento deploy` publishes it for a closure host, and the host's
//! agent — in a second, separate store that starts empty — fetches what it lacks from its
//! own cache on the server, imports it against the pinned cache key and switches.
//!
//! Each store is a temp dir bind-mounted on `/nix` in a private mount namespace of the
//! command that uses it (`unshare -m`), so the machine's own `/nix` is never touched.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::agent::Loop;
use crate::harness::{fails, needs_nix, needs_root, ok, require, s};

/// Settings for every Nix command here: no build users, no sandbox, no substituter.
const NIX_CONFIG: &str =
    "build-users-group =\nsandbox = false\nsubstituters =\nexperimental-features = nix-command\n";

/// A Nix store of its own: a directory mounted on `/nix` for the commands run in it.
pub(crate) struct NixRoot {
    dir: tempfile::TempDir,
}

impl NixRoot {
    pub(crate) fn new() -> NixRoot {
        NixRoot {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// `cmd` run in a private mount namespace where this store is `/nix`.
    pub(crate) fn run(&self, cmd: &Command) -> Output {
        let mut wrapped = Command::new("unshare");
        wrapped
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg("mount --bind \"$0\" /nix && exec \"$@\"")
            .arg(self.dir.path())
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .env("NIX_CONFIG", NIX_CONFIG)
            .stdin(std::process::Stdio::null());
        if let Some(dir) = cmd.get_current_dir() {
            wrapped.current_dir(dir);
        }
        for (key, value) in cmd.get_envs() {
            match value {
                Some(value) => wrapped.env(key, value),
                None => wrapped.env_remove(key),
            };
        }
        wrapped.output().unwrap()
    }

    /// Where `/nix/…` of this store is seen from outside: `rel` below its directory.
    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel.trim_start_matches("/nix/"))
    }
}

/// A fleet whose web1 is a closure host (db1 stays a source host), the admin's store and
/// web1's, the cache key, and web1's agent configured for closure mode.
pub(crate) struct Closure {
    pub(crate) l: Loop,
    pub(crate) admin: NixRoot,
    pub(crate) host: NixRoot,
    /// Where the switch script records its calls.
    pub(crate) switched: PathBuf,
}

impl Closure {
    /// `None` when this machine cannot run it (not root, no Nix).
    pub(crate) fn new() -> Option<Closure> {
        if !needs_root("private mount namespaces with a Nix store of their own on /nix") || !needs_nix() {
            return None;
        }
        require("unshare");
        let l = Loop::new();
        let admin = NixRoot::new();
        closure_fleet(&l, &admin);
        let c = Closure {
            switched: l.base().join("switched"),
            l,
            admin,
            host: NixRoot::new(),
        };
        c.set_system("lib-b v1");
        Some(c)
    }

    /// web1's configuration (see [`set_system`]).
    pub(crate) fn set_system(&self, lib_b: &str) {
        set_system(&self.l, &self.switched, lib_b);
    }

    /// `bento ARGS` with the admin's store.
    pub(crate) fn bento(&self, args: &[&str]) -> Output {
        self.admin.run(&self.l.fleet.cmd(args))
    }

    /// `bento build web1`, then `bento deploy --server-root <server>`; the built system.
    pub(crate) fn build_and_deploy(&self) -> String {
        ok(&self.bento(&["build", "web1"]));
        ok(&self.bento(&["deploy", "--server-root", s(&self.l.server)]));
        let expected: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.l.fleet.path(".bento/expected.json")).unwrap())
                .unwrap();
        expected["hosts"]["web1"]["system"].as_str().unwrap().to_owned()
    }

    /// web1's agent, once, in web1's store, with `--json`; its output and report.
    pub(crate) fn agent(&self, extra: &[&str]) -> (Output, serde_json::Value) {
        let mut args = vec!["agent", "--once", "--json", "--config", s(&self.l.config)];
        args.extend_from_slice(extra);
        let out = self.host.run(&self.l.fleet.cmd(&args));
        let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (out, report)
    }

    pub(crate) fn switches(&self) -> Vec<String> {
        std::fs::read_to_string(&self.switched)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// What web1's system profile points at, in web1's store.
    pub(crate) fn profile(&self) -> Option<PathBuf> {
        let link = std::fs::read_link(self.host.path("/nix/var/nix/profiles/system")).ok()?;
        std::fs::read_link(self.host.path("/nix/var/nix/profiles").join(link)).ok()
    }

    /// Whether `path` is valid in web1's store.
    pub(crate) fn host_has(&self, path: &str) -> bool {
        let mut check = Command::new("nix-store");
        check.args(["--check-validity", path]);
        self.host.run(&check).status.success()
    }

    /// The store paths web1's system refers to (`uses`), from the admin's store.
    pub(crate) fn libs(&self, system: &str) -> Vec<String> {
        std::fs::read_to_string(self.admin.path(&format!("{system}/uses")))
            .unwrap()
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// web1's cache on the server: `rel` of it.
    pub(crate) fn host_cache(&self, rel: &str) -> PathBuf {
        self.l.server.join("web1/cache").join(rel)
    }
}

/// Makes `l`'s fleet publish web1 in closure mode (db1 stays a source host): a cache key
/// made in `admin`'s store, a build command running `nix-build` on web1's configuration,
/// and web1's agent.toml in closure mode pinning the key.
pub(crate) fn closure_fleet(l: &Loop, admin: &NixRoot) {
    let keys = l.fleet.keys.clone();
    let mut make_key = Command::new("nix-store");
    make_key
        .args(["--generate-binary-cache-key", "bento-closure-1"])
        .arg(keys.join("cache.sec"))
        .arg(keys.join("cache.pub"));
    ok(&admin.run(&make_key));
    let cache_public = std::fs::read_to_string(keys.join("cache.pub"))
        .unwrap()
        .trim()
        .to_owned();
    let build = l.fleet.script(
        "closure-build",
        "exec nix-build --no-out-link \"${3#nixos-config=}\"",
    );
    let admin_key = l.fleet.keys.join("admin");
    std::fs::write(
        l.fleet.path("bento.toml"),
        format!(
            "[deploy]\nsigning_key = \"{}\"\n[build]\ncommand = \"{} build\"\n\
             [cache]\nsigning_key = \"{}\"\n[hosts.web1]\nmode = \"closure\"\n",
            s(&admin_key),
            s(&build),
            s(&keys.join("cache.sec"))
        ),
    )
    .unwrap();
    let mut text = std::fs::read_to_string(&l.config).unwrap();
    text.push_str(&format!(
        "mode = \"closure\"\ncache_public_keys = [\"{cache_public}\"]\n"
    ));
    std::fs::write(&l.config, text).unwrap();
}

/// web1's configuration: a system of three paths (itself, lib-a, and lib-b holding
/// `lib_b`), whose `switch-to-configuration` records its call in `switched`, points the
/// current-system link at the system, and activates the bundle's secrets as NixOS's would.
pub(crate) fn set_system(l: &Loop, switched: &Path, lib_b: &str) {
    let text = format!(
        r#"let
  mk = name: script: derivation {{
inherit name; system = builtins.currentSystem; builder = "/bin/sh";
PATH = "/usr/bin:/bin"; args = [ "-c" script ];
  }};
  libA = mk "lib-a" "echo lib-a > $out";
  libB = mk "lib-b" "echo '{lib_b}' > $out";
in mk "nixos-system-web1" ''
  mkdir -p $out/bin
  echo ${{libA}} ${{libB}} > $out/uses
  cat > $out/bin/switch-to-configuration <<EOF
#!/bin/sh
sys=\$(dirname \$(dirname \$0))
echo "\$sys \$*" >> {switched}
ln -sfn \$sys {system}
[ -e {base}/lose-server ] && mv {server}/web1 {server}/web1.away
exec {bento} activate --no-mount --bundle {state}/current -i {key} --root {secrets}
EOF
  chmod +x $out/bin/switch-to-configuration
''
"#,
        switched = switched.display(),
        system = l.system.display(),
        base = l.base().display(),
        server = l.server.display(),
        bento = env!("CARGO_BIN_EXE_bento"),
        state = l.state.display(),
        key = s(&l.keys.web1),
        secrets = l.secrets.display(),
    );
    std::fs::write(l.fleet.path("hosts/web1/configuration.nix"), text).unwrap();
}

/// The hash part of a store path: its `.narinfo`'s name without the suffix.
pub(crate) fn hash_of(path: &str) -> &str {
    &path["/nix/store/".len().."/nix/store/".len() + 32]
}

/// Replaces `path` with `text` as a new file (a new inode: the fleet cache's hard link
/// keeps the old content).
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-test");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The offline procedure, end to end: deploy onto a directory (a USB stick), the host's
/// agent reading `file://` of it; the first run brings the whole closure, a change of
/// one path brings only what changed; the host's cache holds hard links, not copies; a
/// source host in the same fleet gets its sources as before.
#[test]
fn a_closure_host_fetches_what_it_lacks_signed_and_switches_offline() {
    let Some(c) = Closure::new() else { return };
    let system = c.build_and_deploy();
    let [lib_a, lib_b] = <[String; 2]>::try_from(c.libs(&system)).unwrap();
    // web1's bundle: the system and the secrets, no sources; db1's: its sources.
    let gen1 = c.l.server.join("web1/generations/1");
    assert!(!gen1.join("config").exists());
    assert!(gen1.join("secrets/db-password.age").is_file());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(gen1.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["system"], system.as_str());
    assert!(c
        .l
        .server
        .join("db1/generations/1/config/configuration.nix")
        .is_file());
    assert!(
        !c.l.server.join("db1/cache").exists(),
        "a source host has no cache of its own"
    );
    // web1's cache: its closure's narinfos and NARs, hard links into the fleet's.
    for path in [&system, &lib_a, &lib_b] {
        let name = format!("{}.narinfo", hash_of(path));
        let own = std::fs::metadata(c.host_cache(&name)).unwrap();
        let fleet = std::fs::metadata(c.l.server.join("cache").join(&name)).unwrap();
        assert_eq!((own.ino(), own.nlink()), (fleet.ino(), 2), "{name}");
    }
    assert_eq!(std::fs::read_dir(c.host_cache("nar")).unwrap().count(), 3);
    assert!(c.host_cache("nix-cache-info").is_file());

    // The first pull: all three paths, imported, the profile set, the switch run.
    assert!(!c.host_has(&system));
    let (out, report) = c.agent(&[]);
    ok(&out);
    assert_eq!(report["state"], "applied", "{report}");
    assert_eq!(report["note"], "3 store paths fetched", "{report}");
    assert_eq!(report["system_after"], system.as_str());
    assert_eq!(report["system_expected"], system.as_str());
    for path in [&system, &lib_a, &lib_b] {
        assert!(c.host_has(path), "{path}");
    }
    assert_eq!(c.switches(), [format!("{system} switch")]);
    assert_eq!(c.profile().unwrap(), PathBuf::from(&system));
    assert_eq!(c.l.secret("db-password"), "v1 of db-password");
    assert!(c.l.calls().is_empty(), "no nixos-rebuild: {}", c.l.calls());

    // One path changed: the system and it come, lib-a stays.
    c.set_system("lib-b v2");
    let system2 = c.build_and_deploy();
    assert_ne!(system2, system);
    // Status shows each host's mode; diff shows what the closure host will get.
    let server = s(&c.l.server);
    let status: serde_json::Value =
        serde_json::from_str(&ok(&c.bento(&["status", "--json", "--server-root", server]))).unwrap();
    let mode_of = |host: &str| {
        status["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["host"] == host)
            .unwrap()["mode"]
            .clone()
    };
    assert_eq!(
        (mode_of("web1"), mode_of("db1")),
        ("closure".into(), "source".into())
    );
    let table = ok(&c.bento(&["status", "--server-root", server]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("web1") && l.contains(" closure ")),
        "{table}"
    );
    // (Nix's diff-closures leaves out paths without a version whose size hardly moved.)
    let diff = c.bento(&["diff", "web1", "--server-root", server]);
    ok(&diff);
    let said = String::from_utf8_lossy(&diff.stderr);
    assert!(
        said.contains(&format!("web1: running {system} → expected {system2}")),
        "{said}"
    );
    let (out, report) = c.agent(&[]);
    ok(&out);
    assert_eq!(report["state"], "applied", "{report}");
    assert_eq!(report["note"], "2 store paths fetched", "{report}");
    assert_eq!(c.switches().last().unwrap(), &format!("{system2} switch"));
    assert_eq!(c.profile().unwrap(), PathBuf::from(&system2));

    // A secret alone changed: no fetch, no switch; the secret activated.
    ok(&c
        .l
        .fleet
        .bento_stdin(&["secret", "edit", "db-password"], b"v2 of db-password"));
    ok(&c.bento(&["deploy", "--server-root", s(&c.l.server)]));
    let (out, report) = c.agent(&[]);
    ok(&out);
    assert_eq!(report["state"], "secrets-updated", "{report}");
    assert_eq!(c.switches().len(), 2);
    assert_eq!(c.l.secret("db-password"), "v2 of db-password");
}

/// What the server (or whoever writes it) could hand a closure host — a NAR changed after
/// signing, a narinfo signed by another key, a system its cache lacks, a path outside the
/// store — fails the run with one line, and nothing is switched.
#[test]
fn a_tampered_closure_is_refused_and_nothing_switches() {
    let Some(c) = Closure::new() else { return };
    // Uncompressed NARs: a changed byte leaves a well-formed NAR that only its hash tells.
    let config = std::fs::read_to_string(c.l.fleet.path("bento.toml")).unwrap();
    let config = config.replace("[hosts.web1]", "compression = \"none\"\n[hosts.web1]");
    std::fs::write(c.l.fleet.path("bento.toml"), config).unwrap();
    let system = c.build_and_deploy();
    let [_, lib_b] = <[String; 2]>::try_from(c.libs(&system)).unwrap();
    let narinfo = c.host_cache(&format!("{}.narinfo", hash_of(&lib_b)));
    let original = std::fs::read_to_string(&narinfo).unwrap();
    let nar_name = original
        .lines()
        .find_map(|l| l.strip_prefix("URL: nar/"))
        .unwrap()
        .to_owned();
    let nar = c.host_cache(&format!("nar/{nar_name}"));
    let nar_bytes = std::fs::read(&nar).unwrap();
    let refused = |what: &str, expect: &str| {
        let (out, report) = c.agent(&["--force"]);
        assert!(!out.status.success(), "{what}: the run succeeded");
        // The run's own line comes last (Nix's output is shown as it comes).
        let stderr = String::from_utf8_lossy(&out.stderr);
        let e = stderr.lines().last().unwrap_or_default();
        assert!(e.contains(expect), "{what}: {stderr}");
        assert_eq!(report["state"], "refused", "{what}: {report}");
        assert!(c.switches().is_empty(), "{what}: switched");
        assert!(c.profile().is_none(), "{what}: the profile moved");
        assert!(!c.host_has(&system), "{what}: the system was imported");
    };

    // A NAR whose bytes changed after signing (same size: only its hash tells).
    let mut tampered = nar_bytes.clone();
    let at = nar_bytes.windows(6).position(|w| w == b"lib-b ").unwrap();
    tampered[at] = b'L';
    std::fs::remove_file(&nar).unwrap();
    std::fs::write(&nar, &tampered).unwrap();
    refused("a tampered NAR", "importing the system's closure");
    let (out, _) = c.agent(&["--force"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("hash mismatch"),
        "Nix checked the hash"
    );
    std::fs::remove_file(&nar).unwrap();
    std::fs::write(&nar, &nar_bytes).unwrap();

    // The narinfo signed by a key the host does not pin.
    let forged: String = original
        .lines()
        .map(|l| match l.starts_with("Sig: ") {
            true => format!("Sig: mallory-1:{}\n", "A".repeat(86) + "=="),
            false => format!("{l}\n"),
        })
        .collect();
    replace(&narinfo, &forged);
    refused(
        "a narinfo signed by another key",
        "importing the system's closure",
    );
    let (out, _) = c.agent(&["--force"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("lacks a valid signature"),
        "Nix checked the signature: {said}"
    );

    // A path outside /nix/store.
    replace(
        &narinfo,
        &original.replace("StorePath: /nix/store/", "StorePath: /tmp/store/"),
    );
    refused("a path outside the store", "is not a store path");
    replace(&narinfo, &original);

    // The system missing from the host's cache.
    std::fs::remove_file(c.host_cache(&format!("{}.narinfo", hash_of(&system)))).unwrap();
    refused(
        "the system not in the host's cache",
        "is not in this host's cache",
    );

    // The next deploy puts back what the host's cache lost; the same generation goes through.
    ok(&c.bento(&["deploy", "--server-root", s(&c.l.server)]));
    let (out, report) = c.agent(&["--force"]);
    ok(&out);
    assert_eq!(report["state"], "applied", "{report}");
    assert_eq!(c.switches(), [format!("{system} switch")]);
}

/// A closure host that loses its server right after the switch runs its rollback, as a
/// source host does.
#[test]
fn a_closure_host_rolls_back_when_its_server_is_lost_after_the_switch() {
    let Some(c) = Closure::new() else { return };
    let system = c.build_and_deploy();
    std::fs::write(c.l.base().join("lose-server"), "").unwrap();
    let (out, report) = c.agent(&[]);
    assert!(!out.status.success());
    assert_eq!(report["state"], "rolled-back", "{report}");
    assert_eq!(c.switches(), [format!("{system} switch")]);
    assert!(c.l.calls().contains("switch --rollback"), "{}", c.l.calls());
}

/// `bento deploy` publishes a closure host only with a signed cache and a build of
/// exactly its configuration; an agent refuses a bundle that does not suit its mode.
#[test]
fn a_closure_host_needs_a_cache_and_a_build_of_this_configuration() {
    let l = Loop::new();
    let admin = l.fleet.keys.join("admin");
    std::fs::write(
        l.fleet.path("bento.toml"),
        format!(
            "[deploy]\nsigning_key = \"{}\"\nmode = \"closure\"\n[hosts.db1]\nmode = \"source\"\n",
            s(&admin)
        ),
    )
    .unwrap();
    let e = fails(&l.fleet.bento(&["deploy", "--server-root", s(&l.server)]));
    assert!(
        e.contains("host web1") && e.contains("needs [cache] signing_key"),
        "{e}"
    );
    let key = l.fleet.keys.join("cache.sec");
    std::fs::write(&key, format!("k:{}\n", "A".repeat(86) + "==")).unwrap();
    std::fs::write(
        l.fleet.path("bento.toml"),
        format!(
            "[deploy]\nsigning_key = \"{}\"\nmode = \"closure\"\n[hosts.db1]\nmode = \"source\"\n\
             [cache]\nsigning_key = \"{}\"\n",
            s(&admin),
            s(&key)
        ),
    )
    .unwrap();
    let e = fails(&l.fleet.bento(&["deploy", "--server-root", s(&l.server)]));
    assert!(
        e.contains("host ") && e.contains("has no build") && e.contains("bento build"),
        "{e}"
    );
    assert!(!l.server.join("web1/generations/1").exists(), "nothing published");

    // A source agent handed a closure bundle, a closure agent a source bundle: refused.
    std::fs::write(
        l.fleet.path("bento.toml"),
        format!("[deploy]\nsigning_key = \"{}\"\n", s(&admin)),
    )
    .unwrap();
    l.deploy();
    let mut text = std::fs::read_to_string(&l.config).unwrap();
    text.push_str(
        "mode = \"closure\"\ncache_public_keys = [\"k:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\"]\n",
    );
    std::fs::write(&l.config, &text).unwrap();
    let (out, report) = l.agent_json();
    let e = fails(&out);
    assert!(
        e.contains("closure mode, and the bundle names no built system"),
        "{e}"
    );
    assert_eq!(report["state"], "refused");
    // Without the key: agent.toml is refused at its line.
    std::fs::write(
        &l.config,
        text.replace(
            "cache_public_keys = [\"k:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\"]\n",
            "",
        ),
    )
    .unwrap();
    let e = fails(&l.agent(&[]));
    assert!(
        e.contains("agent.toml:") && e.contains("needs cache_public_keys"),
        "{e}"
    );
}

/// A closure host's cache keeps what its kept generations' systems need: with one
/// generation kept, the old system and its changed path leave web1's cache, the shared path
/// stays, and the fleet cache keeps everything.
#[test]
fn a_closure_hosts_cache_is_pruned_to_its_kept_generations() {
    let Some(c) = Closure::new() else { return };
    let toml = c.l.fleet.path("bento.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replace("[deploy]\n", "[deploy]\nkeep_generations = 1\n"),
    )
    .unwrap();
    let system1 = c.build_and_deploy();
    let [lib_a, lib_b1] = <[String; 2]>::try_from(c.libs(&system1)).unwrap();
    c.set_system("lib-b v2");
    let system2 = c.build_and_deploy();
    let [_, lib_b2] = <[String; 2]>::try_from(c.libs(&system2)).unwrap();
    let narinfos = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".narinfo"))
            .collect();
        names.sort();
        names
    };
    let names = |paths: &[&String]| {
        let mut names: Vec<String> = paths.iter().map(|p| format!("{}.narinfo", hash_of(p))).collect();
        names.sort();
        names
    };
    assert_eq!(narinfos(&c.host_cache("")), names(&[&system2, &lib_a, &lib_b2]));
    assert_eq!(std::fs::read_dir(c.host_cache("nar")).unwrap().count(), 3);
    assert_eq!(
        narinfos(&c.l.server.join("cache")),
        names(&[&system1, &system2, &lib_a, &lib_b1, &lib_b2])
    );
}
