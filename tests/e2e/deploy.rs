//! `bento deploy`, `bento build`, `bento server setup`: the server layout, signed
//! bundles checked with `ssh-keygen -Y verify`, no-op and partial deploys, refusals.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use crate::harness::{example, fails, ok, pub_line, s, Fleet, Keys};

/// A fleet ready to deploy: the example's secrets written, a configuration per host, an
/// admin signing key, and a server root next to the fleet.
pub(crate) struct Deployable {
    pub(crate) fleet: Fleet,
    pub(crate) keys: Keys,
    admin: PathBuf,
    pub(crate) server: PathBuf,
}

impl Deployable {
    pub(crate) fn new() -> Deployable {
        let (fleet, keys) = example();
        for name in ["db-password", "web-only", "tls"] {
            ok(&fleet.bento_stdin(&["secret", "edit", name], format!("value of {name}").as_bytes()));
        }
        for host in ["web1", "db1"] {
            write(
                &fleet.path(&format!("hosts/{host}/configuration.nix")),
                &format!("{{ networking.hostName = \"{host}\"; }}\n"),
            );
        }
        let admin = fleet.ssh_key("admin", "ed25519", "");
        fleet.add_admin("admin", &pub_line(&admin));
        let server = fleet.home.parent().unwrap().join("server");
        let d = Deployable {
            fleet,
            keys,
            admin,
            server,
        };
        d.settings("");
        d
    }

    /// Rewrites bento.toml: the signing key, plus `extra` lines.
    fn settings(&self, extra: &str) {
        write(
            &self.fleet.path("bento.toml"),
            &format!("[deploy]\nsigning_key = \"{}\"\n{extra}", s(&self.admin)),
        );
    }

    fn deploy(&self, extra: &[&str]) -> std::process::Output {
        let mut args = vec!["deploy", "--server-root", s(&self.server)];
        args.extend_from_slice(extra);
        self.fleet.bento(&args)
    }

    fn host(&self, host: &str) -> PathBuf {
        self.server.join(host)
    }

    fn current(&self, host: &str) -> u64 {
        std::fs::read_to_string(self.host(host).join("current"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn generation(&self, host: &str, g: u64) -> PathBuf {
        self.host(host).join(format!("generations/{g}"))
    }

    fn manifest(&self, host: &str, g: u64) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.generation(host, g).join("manifest.json")).unwrap())
            .unwrap()
    }

    /// The generations of `host` (its history aside).
    fn generations(&self, host: &str) -> Vec<u64> {
        let mut out: Vec<u64> = std::fs::read_dir(self.host(host).join("generations"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name != "history")
            .map(|name| name.parse().unwrap())
            .collect();
        out.sort();
        out
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

/// Every path under `dir` with its modification time and size.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (SystemTime, u64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let meta = std::fs::symlink_metadata(&d).unwrap();
        out.insert(d.clone(), (meta.modified().unwrap(), meta.len()));
        if meta.is_dir() {
            for e in std::fs::read_dir(&d).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out
}

#[test]
fn bundle_layout_and_content() {
    let d = Deployable::new();
    // A shared module reached through symlinks (a file and a directory), as with rsync -L.
    write(&d.fleet.path("common/base.nix"), "{ }\n");
    write(&d.fleet.path("common/mods/a.nix"), "{ a = 1; }\n");
    std::os::unix::fs::symlink("../../common/base.nix", d.fleet.path("hosts/web1/base.nix")).unwrap();
    std::os::unix::fs::symlink("../../common/mods", d.fleet.path("hosts/web1/mods")).unwrap();
    let out = ok(&d.deploy(&[]));
    assert!(out.contains("web1") && out.contains("published"), "{out}");

    assert_eq!(
        std::fs::read_to_string(d.host("web1").join("current")).unwrap(),
        "1\n"
    );
    let gen = d.generation("web1", 1);
    for f in [
        "config/configuration.nix",
        "config/base.nix",
        "config/mods/a.nix",
        "secrets/db-password.age",
        "secrets/web-only.age",
        "secrets/tls.age",
        "manifest.json",
        "manifest.sig",
    ] {
        let meta = std::fs::symlink_metadata(gen.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(meta.is_file(), "{f} is not a regular file");
    }
    assert_eq!(
        std::fs::read_to_string(gen.join("config/mods/a.nix")).unwrap(),
        "{ a = 1; }\n"
    );
    assert_eq!(
        std::fs::read(gen.join("secrets/tls.age")).unwrap(),
        std::fs::read(d.fleet.path("secrets/tls.age")).unwrap()
    );

    let m = d.manifest("web1", 1);
    assert_eq!(m["format"], 2);
    assert_eq!(m["previous"], serde_json::Value::Null, "a host's first manifest");
    assert_eq!(m["host"], "web1");
    assert_eq!(m["generation"], 1);
    assert!(m["git_commit"].is_null() && m["system"].is_null(), "{m}");
    assert!(m["created"].as_str().unwrap().ends_with('Z'));
    let files = m["files"].as_object().unwrap();
    assert_eq!(files.len(), 6, "{m}");
    for (path, hash) in files {
        assert_eq!(hash.as_str().unwrap(), sha256(&gen.join(path)), "{path}");
    }
    let secrets: Vec<&str> = m["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(secrets, ["db-password", "tls", "web-only"]);
    assert_eq!(m["secrets"][0]["file"], "secrets/db-password.age");
    assert_eq!(m["secrets"][0]["mode"], "0400");

    // db1 is a recipient of db-password only: it never gets web1's secrets.
    let db1 = d.generation("db1", 1);
    let mut got: Vec<String> = std::fs::read_dir(db1.join("secrets"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    got.sort();
    assert_eq!(got, ["db-password.age"]);
    assert!(!d.manifest("db1", 1).to_string().contains("web-only"));

    // The chroot layout: host dir 0755, logs/ 0700.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(d.host("web1")), 0o755);
    assert_eq!(mode(d.host("web1").join("logs")), 0o700);
}

#[test]
fn git_commit_is_recorded() {
    let d = Deployable::new();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .current_dir(&d.fleet.root)
            .output()
            .unwrap();
        ok(&out)
    };
    crate::harness::require("git");
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "fleet"]);
    let head = git(&["rev-parse", "HEAD"]);
    ok(&d.deploy(&["web1"]));
    assert_eq!(d.manifest("web1", 1)["git_commit"], head.trim());
    assert!(!d.host("db1").exists(), "only the named host is published");
}

#[test]
fn ssh_keygen_and_bento_agree_on_the_signature() {
    let d = Deployable::new();
    ok(&d.deploy(&[]));
    let gen = d.generation("web1", 1);
    let signers = d.fleet.keys.join("allowed_signers");
    std::fs::write(&signers, format!("admin {}\n", pub_line(&d.admin))).unwrap();
    let manifest = std::fs::read(gen.join("manifest.json")).unwrap();
    let sig = std::fs::read_to_string(gen.join("manifest.sig")).unwrap();
    assert!(sig.starts_with("-----BEGIN SSH SIGNATURE-----"));
    let trusted = [bento_deploy::sign::PublicKey::from_openssh(&pub_line(&d.admin)).unwrap()];

    let keygen_accepts = |bytes: &[u8]| {
        use std::io::Write;
        let mut child = Command::new("ssh-keygen")
            .args(["-Y", "verify", "-n", "bento", "-I", "admin", "-f"])
            .arg(&signers)
            .arg("-s")
            .arg(gen.join("manifest.sig"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(bytes).unwrap();
        child.wait().unwrap().success()
    };
    assert!(keygen_accepts(&manifest));
    assert!(bento_deploy::sign::verify(&manifest, &sig, &trusted).is_ok());

    let mut tampered = manifest.clone();
    let i = tampered.iter().position(|&b| b == b'1').unwrap();
    tampered[i] = b'2';
    assert!(!keygen_accepts(&tampered));
    assert!(bento_deploy::sign::verify(&tampered, &sig, &trusted).is_err());
}

#[test]
fn signs_through_ssh_agent_with_a_locked_key() {
    let d = Deployable::new();
    let locked = d.fleet.ssh_key("locked", "ed25519", "secret phrase");
    d.fleet.add_admin("locked", &pub_line(&locked));
    let sock = d.fleet.keys.join("agent.sock");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _agent = Kill(crate::harness::ssh_agent(&sock));
    let askpass = d.fleet.script("askpass", "echo 'secret phrase'");
    let added = Command::new("ssh-add")
        .arg(&locked)
        .env("SSH_AUTH_SOCK", &sock)
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", "none")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    ok(&added);
    write(
        &d.fleet.path("bento.toml"),
        &format!("[deploy]\nsigning_key = \"{}\"\n", s(&locked)),
    );
    let out = d
        .fleet
        .cmd(&["deploy", "--server-root", s(&d.server)])
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    ok(&out);
    let gen = d.generation("db1", 1);
    let trusted = [bento_deploy::sign::PublicKey::from_openssh(&pub_line(&locked)).unwrap()];
    let manifest = std::fs::read(gen.join("manifest.json")).unwrap();
    let sig = std::fs::read_to_string(gen.join("manifest.sig")).unwrap();
    bento_deploy::sign::verify(&manifest, &sig, &trusted).unwrap();

    // Without an agent, a locked key needs a terminal, and says so.
    std::fs::write(
        d.fleet.path("hosts/db1/configuration.nix"),
        "{ changed = true; }\n",
    )
    .unwrap();
    let e = fails(&d.deploy(&[]));
    assert!(
        e.contains("passphrase-protected") && e.contains("ssh-agent"),
        "{e}"
    );
}

#[test]
fn a_no_op_deploy_touches_no_file() {
    let d = Deployable::new();
    ok(&d.deploy(&[]));
    let before = snapshot(&d.server);
    std::thread::sleep(std::time::Duration::from_millis(20));
    // No key is needed when nothing changed.
    std::fs::remove_file(&d.admin).unwrap();
    let out = ok(&d.deploy(&[]));
    assert!(out.contains("unchanged") && !out.contains("published"), "{out}");
    assert_eq!(snapshot(&d.server), before);
}

#[test]
fn one_changed_host_gets_a_new_generation_alone() {
    let d = Deployable::new();
    ok(&d.deploy(&[]));
    write(
        &d.fleet.path("hosts/db1/configuration.nix"),
        "{ services.postgresql.enable = true; }\n",
    );
    let out = ok(&d.deploy(&["--json"]));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let changed: Vec<(&str, bool, u64)> = json["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["host"].as_str().unwrap(),
                h["changed"].as_bool().unwrap(),
                h["generation"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(changed, [("db1", true, 2), ("web1", false, 1)]);
    assert_eq!((d.current("db1"), d.current("web1")), (2, 1));
    assert_eq!(d.generations("web1"), [1]);
    assert_eq!(d.manifest("db1", 2)["generation"], 2);
}

#[test]
fn old_generations_are_pruned() {
    let d = Deployable::new();
    d.settings("keep_generations = 2\n");
    for i in 0..5 {
        write(
            &d.fleet.path("hosts/web1/configuration.nix"),
            &format!("{{ v = {i}; }}\n"),
        );
        ok(&d.deploy(&["web1"]));
    }
    assert_eq!(d.current("web1"), 5);
    assert_eq!(d.generations("web1"), [4, 5]);
    let names: Vec<_> = std::fs::read_dir(d.host("web1").join("generations"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 3, "no temp dirs left: {names:?}");
    // Pruned generations' manifests stay in the history: all five.
    let history = std::fs::read_dir(d.host("web1").join("generations/history"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count();
    assert_eq!(history, 5);
}

#[test]
fn a_stale_secret_blocks_the_deploy() {
    let d = Deployable::new();
    let web2 = d.fleet.ssh_key("web2", "ed25519", "");
    d.fleet.add_host("web2", &web2);
    d.fleet
        .rules(&crate::harness::EXAMPLE_RULES.replace(r#"web = ["web1"]"#, r#"web = ["web1", "web2"]"#));
    let e = fails(&d.deploy(&[]));
    assert!(e.contains("refusing to deploy"), "{e}");
    assert!(
        e.contains("db-password: missing web2") && e.contains("web-only"),
        "{e}"
    );
    assert!(!d.server.join("web1").exists() && !d.server.join("db1").exists());
}

#[test]
fn manifests_with_escaping_paths_are_refused() {
    let d = Deployable::new();
    ok(&d.deploy(&[]));
    let bytes = std::fs::read(d.generation("web1", 1).join("manifest.json")).unwrap();
    bento_deploy::manifest::Manifest::parse(&bytes).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    for evil in [
        "config/../../etc/shadow",
        "/etc/shadow",
        "../x",
        "config/a\\u0000b",
    ] {
        let tampered = text.replacen("config/configuration.nix", evil, 1);
        let e = bento_deploy::manifest::Manifest::parse(tampered.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("manifest.json: path"), "{evil}: {e}");
    }
}

#[test]
fn current_always_names_a_complete_generation() {
    let d = Deployable::new();
    let big = "x".repeat(256 * 1024);
    for i in 0..8 {
        write(&d.fleet.path(&format!("hosts/web1/big{i}.nix")), &big);
        write(&d.fleet.path(&format!("hosts/db1/big{i}.nix")), &big);
    }
    for round in 0..12u64 {
        write(
            &d.fleet.path("hosts/web1/configuration.nix"),
            &format!("{{ round = {round}; }}\n"),
        );
        write(
            &d.fleet.path("hosts/db1/configuration.nix"),
            &format!("{{ round = {round}; }}\n"),
        );
        let mut child = d
            .fleet
            .cmd(&["deploy", "--server-root", s(&d.server)])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5 + round * 7));
        let _ = child.kill();
        let _ = child.wait();
        for host in ["web1", "db1"] {
            let Ok(text) = std::fs::read_to_string(d.host(host).join("current")) else {
                continue;
            };
            let g: u64 = text.trim().parse().expect("current holds a number");
            let gen = d.generation(host, g);
            let m = d.manifest(host, g);
            assert!(gen.join("manifest.sig").is_file());
            for (path, hash) in m["files"].as_object().unwrap() {
                assert_eq!(
                    hash.as_str().unwrap(),
                    sha256(&gen.join(path)),
                    "round {round}: {host} {path}"
                );
            }
        }
    }
    // A deploy after all those kills completes and cleans up.
    ok(&d.deploy(&[]));
    for host in ["web1", "db1"] {
        let leftovers = std::fs::read_dir(d.host(host).join("generations"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with('.'))
            .count();
        assert_eq!(leftovers, 0);
    }
}

#[test]
fn bad_host_inputs_are_clear_errors() {
    let d = Deployable::new();
    write(&d.fleet.path("hosts/web9/configuration.nix"), "{ }\n");
    let e = fails(&d.deploy(&[]));
    assert!(
        e.contains("hosts/web9") && e.contains("add keys/hosts/web9.pub"),
        "{e}"
    );
    std::fs::remove_dir_all(d.fleet.path("hosts/web9")).unwrap();

    write(&d.fleet.path("hosts/fl/flake.nix"), "{ outputs = _: { }; }\n");
    let out = d
        .fleet
        .cmd(&["deploy", "--server-root", s(&d.server)])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let e = fails(&out);
    assert!(
        e.contains("hosts/fl/flake.nix") && e.contains("`nix`") && e.contains("not on PATH"),
        "{e}"
    );
    std::fs::remove_dir_all(d.fleet.path("hosts/fl")).unwrap();

    std::os::unix::fs::symlink("/etc/passwd", d.fleet.path("hosts/web1/passwd")).unwrap();
    let e = fails(&d.deploy(&[]));
    assert!(
        e.contains("hosts/web1/passwd") && e.contains("outside the fleet repo"),
        "{e}"
    );
    std::fs::remove_file(d.fleet.path("hosts/web1/passwd")).unwrap();

    std::os::unix::fs::symlink("..", d.fleet.path("hosts/web1/up")).unwrap();
    let e = fails(&d.deploy(&[]));
    assert!(e.contains("hosts/web1/up") && e.contains("loop"), "{e}");
    std::fs::remove_file(d.fleet.path("hosts/web1/up")).unwrap();

    std::os::unix::fs::symlink("self", d.fleet.path("hosts/web1/self")).unwrap();
    let e = fails(&d.deploy(&[]));
    assert!(e.contains("hosts/web1/self") && e.contains("loop"), "{e}");
    std::fs::remove_file(d.fleet.path("hosts/web1/self")).unwrap();

    std::os::unix::fs::symlink("gone.nix", d.fleet.path("hosts/web1/dangling")).unwrap();
    let e = fails(&d.deploy(&[]));
    assert!(
        e.contains("hosts/web1/dangling") && e.contains("dangling symlink"),
        "{e}"
    );
    std::fs::remove_file(d.fleet.path("hosts/web1/dangling")).unwrap();

    let fifo = d.fleet.path("hosts/web1/pipe");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let e = fails(&d.deploy(&[]));
    assert!(
        e.contains("hosts/web1/pipe") && e.contains("not a regular file"),
        "{e}"
    );
    std::fs::remove_file(&fifo).unwrap();

    let odd = d
        .fleet
        .path("hosts/web1")
        .join(std::ffi::OsStr::from_bytes(b"caf\xe9.nix"));
    write(&odd, "{ }\n");
    let e = fails(&d.deploy(&[]));
    assert!(
        e.contains("hosts/web1/caf") && e.contains("not UTF-8; rename it"),
        "{e}"
    );
    std::fs::remove_file(&odd).unwrap();

    write(&d.fleet.path("hosts/web1/a\\b.nix"), "{ }\n");
    let e = fails(&d.deploy(&[]));
    assert!(e.contains("holds a backslash"), "{e}");
    std::fs::remove_file(d.fleet.path("hosts/web1/a\\b.nix")).unwrap();

    let e = fails(&d.deploy(&["nosuch"]));
    assert!(e.contains("no such host `nosuch`"), "{e}");

    d.settings("keep_generations = 0\n");
    let e = fails(&d.deploy(&[]));
    assert_eq!(
        e,
        "error: bento.toml:3: deploy.keep_generations must be between 1 and 1000"
    );

    write(
        &d.fleet.path("bento.toml"),
        "[deploy]\nsigning_key = \"/nonexistent/key\"\n",
    );
    let e = fails(&d.deploy(&[]));
    assert!(e.contains("deploy.signing_key /nonexistent/key"), "{e}");
    assert!(!d.server.join("web1").join("current").exists());
}

#[test]
fn build_records_the_system_and_deploy_ships_it() {
    let d = Deployable::new();
    let calls = d.fleet.keys.join("calls");
    let fake = d.fleet.script(
        "fake-rebuild",
        &format!(
            "echo \"$PWD $*\" >> {calls}\necho 'building the system configuration...' >&2\n\
             case \"$*\" in *db1*) h=db1;; *) h=web1;; esac\necho /nix/store/00000000000000000000000000000000-nixos-system-$h",
            calls = s(&calls)
        ),
    );
    d.settings(&format!("[build]\ncommand = \"{} build\"\njobs = 2\n", s(&fake)));
    let out = ok(&d.fleet.bento(&["build"]));
    assert!(
        out.contains("nixos-system-web1") && out.contains("nixos-system-db1"),
        "{out}"
    );
    let log = std::fs::read_to_string(&calls).unwrap();
    assert!(
        log.contains(" build -I nixos-config=") && log.contains("hosts/web1/configuration.nix"),
        "{log}"
    );
    assert!(
        log.contains("/.bento/build/web1 "),
        "the build runs in .bento/build/<host>: {log}"
    );
    let expected = std::fs::read_to_string(d.fleet.path(".bento/expected.json")).unwrap();
    assert!(expected.contains("nixos-system-db1"), "{expected}");

    ok(&d.deploy(&[]));
    assert_eq!(
        d.manifest("web1", 1)["system"],
        "/nix/store/00000000000000000000000000000000-nixos-system-web1"
    );
    // The configuration changed since the build: its recorded system no longer applies.
    write(
        &d.fleet.path("hosts/web1/configuration.nix"),
        "{ changed = 1; }\n",
    );
    let out = d.deploy(&[]);
    ok(&out);
    assert!(d.manifest("web1", 2)["system"].is_null());
    assert_eq!(d.current("db1"), 1);
    // ...and deploy says so, naming the fix.
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("web1: its configuration changed since `bento build`, so it was published without an expected system")
            && said.contains("run `bento build web1` and deploy again")
            && !said.contains("db1: its configuration"),
        "{said}"
    );

    // --dry runs dry-build and records nothing.
    std::fs::remove_file(&calls).unwrap();
    let before = std::fs::read(d.fleet.path(".bento/expected.json")).unwrap();
    ok(&d.fleet.bento(&["build", "--dry", "db1"]));
    let log = std::fs::read_to_string(&calls).unwrap();
    assert!(
        log.contains(" dry-build -I nixos-config=") && !log.contains("web1"),
        "{log}"
    );
    assert_eq!(
        std::fs::read(d.fleet.path(".bento/expected.json")).unwrap(),
        before
    );
}

#[test]
fn a_failed_build_shows_its_log_tail() {
    let d = Deployable::new();
    let fake = d.fleet.script(
        "failing",
        "for i in $(seq 1 30); do echo \"line $i\" >&2; done\nexit 3",
    );
    d.settings(&format!("[build]\ncommand = \"{} build\"\n", s(&fake)));
    let out = d.fleet.bento(&["build", "web1"]);
    let e = fails(&out);
    assert_eq!(e, "error: 1 of 1 hosts failed to build: web1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 30") && stderr.contains("line 11") && !stderr.contains("line 10\n"),
        "{stderr}"
    );
}

#[test]
fn server_setup_prints_users_chroots_and_a_module_that_parses() {
    if !crate::harness::needs_nix() {
        return;
    }
    crate::harness::require("nix-instantiate");
    let d = Deployable::new();
    let out = ok(&d.fleet.bento(&["server", "setup"]));
    assert!(
        out.contains("users.users.\"web1\"") && out.contains("users.users.\"db1\""),
        "{out}"
    );
    assert!(out.contains("ChrootDirectory /srv/bento/%u"), "{out}");
    assert!(out.contains("ForceCommand internal-sftp"));
    // The Match blocks go last in sshd_config, as the reusable module puts them.
    assert!(out.contains("extraConfig = lib.mkOrder 2000 ''"), "{out}");
    assert!(
        out.contains("useradd --system --gid bento")
            && out.contains(pub_line(&d.keys.web1).rsplit_once(' ').unwrap().0),
        "{out}"
    );
    let module = out
        .split("### Other Linux servers")
        .next()
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("###"))
        .collect::<Vec<_>>()
        .join("\n");
    let file = d.fleet.keys.join("server-module.nix");
    std::fs::write(&file, module).unwrap();
    ok(&Command::new("nix-instantiate")
        .arg("--parse")
        .arg(&file)
        .output()
        .unwrap());
    let repo_module = Path::new(env!("CARGO_MANIFEST_DIR")).join("nix/server.nix");
    ok(&Command::new("nix-instantiate")
        .arg("--parse")
        .arg(&repo_module)
        .output()
        .unwrap());

    // With a user prefix, one Match block per user, chrooted to the host's directory.
    write(
        &d.fleet.path("bento.toml"),
        "[server]\nroot = \"/srv/fleet\"\nuser_prefix = \"bento-\"\n",
    );
    let out = ok(&d.fleet.bento(&["server", "setup"]));
    assert!(
        out.contains("Match User bento-web1") && out.contains("ChrootDirectory /srv/fleet/web1"),
        "{out}"
    );
}

#[test]
fn a_flake_directory_holds_several_hosts() {
    if !crate::harness::needs_nix() {
        return;
    }
    crate::harness::require("nix");
    let d = Deployable::new();
    for host in ["alpha", "beta"] {
        let key = d.fleet.ssh_key(host, "ed25519", "");
        d.fleet.add_host(host, &key);
    }
    write(
        &d.fleet.path("hosts/pair/flake.nix"),
        "{ outputs = { self }: {\n  nixosConfigurations.alpha = { config = { }; };\n  \
         nixosConfigurations.beta = { config = { }; };\n}; }\n",
    );
    let out = ok(&d.deploy(&["alpha", "beta"]));
    assert!(out.contains("alpha") && out.contains("beta"), "{out}");
    for host in ["alpha", "beta"] {
        let m = d.manifest(host, 1);
        assert_eq!(m["host"], host);
        assert!(
            m["files"].as_object().unwrap().contains_key("config/flake.nix"),
            "{m}"
        );
    }
}

#[test]
fn deploys_without_root_privileges() {
    use std::os::unix::fs::PermissionsExt;
    let d = Deployable::new();
    let is_root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    if !is_root {
        // Already unprivileged: the plain deploy is the test.
        ok(&d.deploy(&[]));
        return;
    }
    crate::harness::require("setpriv");
    // Let user nobody read the fleet and own the server root.
    let top = d.fleet.home.parent().unwrap().to_path_buf();
    let mut stack = vec![top.clone()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let mode = if meta.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    std::fs::create_dir(&d.server).unwrap();
    std::os::unix::fs::chown(&d.server, Some(65534), Some(65534)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_bento"))
        .args(["deploy", "--server-root", s(&d.server)])
        .current_dir(&d.fleet.root)
        .env("HOME", &d.fleet.home)
        .env("NO_COLOR", "1")
        .env_remove("BENTO_FLEET")
        .output()
        .unwrap();
    ok(&out);
    assert_eq!(d.current("web1"), 1);
    assert!(d.generation("db1", 1).join("manifest.sig").is_file());
}

#[test]
fn deploy_and_build_of_hosts_without_configuration_say_what_to_create() {
    let d = Deployable::new();
    for host in ["web1", "db1"] {
        std::fs::remove_dir_all(d.fleet.path(&format!("hosts/{host}"))).unwrap();
    }
    for args in [
        vec!["deploy", "--server-root", s(&d.server)],
        vec!["build"],
        vec!["build", "--dry"],
    ] {
        let err = fails(&d.fleet.bento(&args));
        assert!(
            err.contains("no host has a configuration")
                && err.contains("db1, web1 are registered")
                && err.contains("hosts/<name>/configuration.nix"),
            "{args:?}: {err}"
        );
    }
    assert!(!d.server.join("web1").exists());

    // One configured, one not: the other is named, not silently skipped.
    write(&d.fleet.path("hosts/web1/configuration.nix"), "{ }\n");
    let out = d.deploy(&[]);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not deployed, no configuration: db1") && stderr.contains("1 host: 1 published"),
        "{stderr}"
    );

    // A fleet with no host at all says how to add one.
    let empty = Fleet::new();
    let err = fails(&empty.bento(&["build"]));
    assert!(
        err.contains("no hosts in this fleet yet") && err.contains("bento host add"),
        "{err}"
    );
    let out = empty.bento(&["host", "list"]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no hosts yet"));
    let out = empty.bento(&["server", "setup"]);
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no hosts registered yet"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_dry_build_keeps_its_state_dir_out_of_git() {
    let fleet = Fleet::new();
    let key = fleet.ssh_key("web1", "ed25519", "");
    fleet.add_host("web1", &key);
    write(&fleet.path("hosts/web1/configuration.nix"), "{ }\n");
    let fake = fleet.script("fake-rebuild", "echo ok");
    write(
        &fleet.path("bento.toml"),
        &format!("[build]\ncommand = \"{} build\"\n", s(&fake)),
    );
    assert!(!fleet.path(".bento").exists());
    ok(&fleet.bento(&["build", "--dry"]));
    assert!(fleet.path(".bento/build/web1").is_dir());
    assert_eq!(
        std::fs::read_to_string(fleet.path(".bento/.gitignore")).unwrap(),
        "# bento's local state: not for git\n*\n"
    );
}

#[test]
fn a_missing_login_key_is_named_before_any_connection() {
    let d = Deployable::new();
    write(
        &d.fleet.path("keys/server_known_hosts"),
        "[127.0.0.1]:1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB5bXc5cWlDWFdkhKPQ7pMd1I2WmM1fEIGGyj/4V8NCz\n",
    );
    d.settings(
        "target = \"sftp://bento-publish@127.0.0.1:1/srv/bento\"\nlogin_key = \"/nonexistent/publish_key\"\n",
    );
    let err = fails(&d.fleet.bento(&["deploy"]));
    assert_eq!(
        err,
        "error: /nonexistent/publish_key: no such key file (deploy.login_key in bento.toml): the key that \
         logs in to sftp://bento-publish@127.0.0.1:1/srv/bento as bento-publish; fix the path, or remove \
         login_key to use ssh's own"
    );
}
