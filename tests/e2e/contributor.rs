//! A contributor's pull request to the fleet repo is hostile input, read by the admin's
//! bento: strings that would reach sshd_config or a terminal, symlinks into `.git` or out of
//! the fleet, files linked to `/dev/zero`, a `.bento` link, a plugin binary planted in the
//! fleet. Each gets one `error:` line (or a `warning:`), and nothing is published, read
//! forever, written elsewhere or run.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{example, fails, ok, plugin_recipient, require, s, Fleet, Keys};

/// A fleet ready to deploy (the example's secrets written, a configuration per host, an
/// admin signing key) and a server root beside it.
struct Deployable {
    fleet: Fleet,
    _keys: Keys,
    server: PathBuf,
}

impl Deployable {
    /// `deploy::Deployable`'s fleet, whose hosts import a shared `base.nix` through a link
    /// inside the fleet (which must keep working).
    fn new() -> Deployable {
        let crate::deploy::Deployable {
            fleet, keys, server, ..
        } = crate::deploy::Deployable::new();
        for host in ["web1", "db1"] {
            write(
                &fleet.path(&format!("hosts/{host}/configuration.nix")),
                &format!("{{ imports = [ ./base.nix ]; networking.hostName = \"{host}\"; }}\n"),
            );
            symlink(
                "../../common/base.nix",
                fleet.path(&format!("hosts/{host}/base.nix")),
            )
            .unwrap();
        }
        write(&fleet.path("common/base.nix"), "{ }\n");
        Deployable {
            fleet,
            _keys: keys,
            server,
        }
    }

    fn deploy(&self) -> Output {
        self.fleet.bento(&["deploy", "--server-root", s(&self.server)])
    }

    /// The fleet as a git repo, everything but `.gitignore`d paths committed.
    fn commit(&self) {
        require("git");
        self.git(&["init", "-q"]);
        self.git(&["add", "-A"]);
        self.git(&["commit", "-qm", "fleet"]);
    }

    fn git(&self, args: &[&str]) {
        ok(&Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .current_dir(&self.fleet.root)
            .output()
            .unwrap());
    }

    /// The files of `host`'s newest generation on the server, relative to it.
    fn published(&self, host: &str) -> Vec<String> {
        let gens = self.server.join(host).join("generations");
        let newest = std::fs::read_dir(&gens)
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().to_str()?.parse::<u64>().ok())
            .max()
            .unwrap();
        let mut out = Vec::new();
        walk(&gens.join(newest.to_string()), "", &mut out);
        out.sort();
        out
    }
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = format!("{rel}{}", entry.file_name().to_string_lossy());
        if entry.file_type().unwrap().is_dir() {
            walk(&entry.path(), &format!("{name}/"), out);
        } else {
            out.push(name);
        }
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Every file under `dir`, as bytes, for "nothing of it was published".
fn contains_bytes(dir: &Path, needle: &[u8]) -> bool {
    let mut files = Vec::new();
    if !dir.exists() {
        return false;
    }
    walk(dir, "", &mut files);
    files
        .iter()
        .any(|f| std::fs::read(dir.join(f)).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)))
}

/// Runs `cmd`, failing the test if it has not ended after `limit` (then killed).
fn bounded(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {limit:?}: it reads without end");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The injected `server.root` values: sshd_config lines, a `%` token, a space, quotes.
const INJECTED_ROOTS: &[&str] = &[
    "/srv/bento\\nMatch all\\n  PermitRootLogin yes",
    "/srv/bento\\r\\nAuthorizedKeysCommand /tmp/x\\nAuthorizedKeysCommandUser root",
    "/srv/%u",
    "/srv/bento x",
    "/srv/\\\"bento\\\"",
    "/srv/../etc",
];

#[test]
fn an_injected_server_root_is_refused_before_sshd_sees_it() {
    let d = Deployable::new();
    for root in INJECTED_ROOTS {
        write(
            &d.fleet.path("bento.toml"),
            &format!("[server]\nroot = \"{root}\"\n"),
        );
        for args in [&["server", "setup"][..], &["status"][..]] {
            let out = d.fleet.bento(args);
            let error = fails(&out);
            assert!(
                error.contains("bento.toml:2: server.root: path `")
                    && error.contains("hold only letters, digits"),
                "{root}: {error}"
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                !stdout.contains("PermitRootLogin") && !stdout.contains("Match"),
                "{stdout}"
            );
        }
    }
    // A valid root: what `bento server setup` prints for sshd is accepted by the real sshd.
    if !crate::harness::needs_root("sshd -t (its privilege separation directory)") {
        return;
    }
    write(
        &d.fleet.path("bento.toml"),
        "[server]\nroot = \"/srv/bento-contrib\"\n",
    );
    let out = ok(&d.fleet.bento(&["server", "setup"]));
    let other = out.split("### Other Linux servers").nth(1).unwrap();
    let block: String = other
        .lines()
        .take_while(|l| !l.starts_with("# Then"))
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(block.contains("ChrootDirectory /srv/bento-contrib/%u"), "{block}");
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("host_key");
    ok(&Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
        .unwrap());
    let config = dir.path().join("sshd_config");
    std::fs::write(&config, format!("HostKey {}\nUsePAM no\n{block}", key.display())).unwrap();
    std::fs::create_dir_all("/run/sshd").unwrap();
    ok(&Command::new("/usr/sbin/sshd")
        .arg("-t")
        .arg("-f")
        .arg(&config)
        .output()
        .unwrap());
    // The same lines with the first injected root: sshd itself would have taken them,
    // root login allowed (what bento now refuses to print).
    let injected = bento_deploy::fleet::server::match_block(
        "Group bento",
        "/srv/bento\nMatch all\n  PermitRootLogin yes",
        None,
        "",
    );
    std::fs::write(
        &config,
        format!("HostKey {}\nUsePAM no\n{injected}", key.display()),
    )
    .unwrap();
    let effective = ok(&Command::new("/usr/sbin/sshd")
        .args(["-T", "-f"])
        .arg(&config)
        .args(["-C", "user=root,host=x,addr=127.0.0.1"])
        .output()
        .unwrap());
    assert!(effective.contains("permitrootlogin yes"), "{effective}");
}

#[test]
fn the_server_module_refuses_a_root_it_would_write_into_sshd_config() {
    if !crate::harness::needs_nix() {
        return;
    }
    crate::nixos::with_lib(|lib| {
        for case in [
            "server-root-newline",
            "server-root-percent",
            "server-root-space",
            "server-root-dotdot",
            "server-root-relative",
        ] {
            let error = crate::nixos::refused(lib, case);
            assert!(
                error.contains("Failed assertions: - services.bento-server.root")
                    && error.contains("must be an absolute path"),
                "{case}: {error}"
            );
        }
    });
}

#[test]
fn a_secret_or_template_path_that_is_not_one_safe_word_is_refused_at_its_line() {
    let (fleet, _keys) = example();
    for path in [
        "/run/x\\nPermitRootLogin yes",
        "/run/%h/x",
        "/run/a b",
        "/run/$(id)",
    ] {
        fleet.rules(&format!(
            "admins = [\"alice\"]\n[secrets.db]\nrecipients = [\"web1\"]\npath = \"{path}\"\n"
        ));
        let error = fails(&fleet.bento(&["secret", "verify"]));
        assert!(
            error.contains("secrets/secrets.toml:4: db.path `") && error.contains("must be absolute"),
            "{path}: {error}"
        );
    }
}

#[test]
fn only_what_git_tracks_is_published_and_links_into_git_are_refused() {
    let d = Deployable::new();
    let token = "ghp_CONTRIBUTOR_CAN_READ_THIS";
    write(&d.fleet.path(".gitignore"), "/cache/\n/untracked.nix\n");
    write(&d.fleet.path("cache/signing.key"), "bento-1:SECRETCACHEKEY\n");
    d.commit();
    d.git(&["config", "http.extraHeader", &format!("Authorization: {token}")]);
    // An untracked file in a host's directory is not part of its configuration.
    write(&d.fleet.path("hosts/web1/notes.nix"), "# not committed\n");
    ok(&d.deploy());
    let web1 = d.published("web1");
    assert!(web1.contains(&"config/base.nix".to_owned()), "{web1:?}");
    assert!(!web1.iter().any(|f| f.contains("notes.nix")), "{web1:?}");

    // Each of a contributor's links, committed: refused, naming the link.
    let cases: [(&str, &str, &str); 3] = [
        ("hosts/web1/common", "../../.git", "leads into `.git`"),
        (
            "hosts/web1/cache.nix",
            "../../cache/signing.key",
            "git does not track",
        ),
        ("hosts/db1/up.nix", "../../.git/config", "leads into `.git`"),
    ];
    for (link, target, why) in cases {
        symlink(target, d.fleet.path(link)).unwrap();
        d.git(&["add", link]);
        let error = fails(&d.deploy());
        assert!(error.contains(link) && error.contains(why), "{link}: {error}");
        assert!(error.contains(&format!("-> {target}")), "{error}");
        d.git(&["rm", "-q", "--cached", link]);
        std::fs::remove_file(d.fleet.path(link)).unwrap();
    }
    // A template `file` linked to .git/config.
    std::fs::create_dir_all(d.fleet.path("templates")).unwrap();
    symlink("../.git/config", d.fleet.path("templates/leak.env")).unwrap();
    d.git(&["add", "templates/leak.env"]);
    let rules = std::fs::read_to_string(d.fleet.path("secrets/secrets.toml")).unwrap();
    write(
        &d.fleet.path("secrets/secrets.toml"),
        &format!("{rules}\n[templates.leak]\nhosts = [\"web1\"]\nfile = \"templates/leak.env\"\n"),
    );
    let error = fails(&d.deploy());
    assert!(
        error.contains("templates/leak.env") && error.contains("leads into `.git`"),
        "{error}"
    );
    assert!(!contains_bytes(&d.server, token.as_bytes()));
    assert!(!contains_bytes(&d.server, b"SECRETCACHEKEY"));
}

#[test]
fn outside_git_no_dot_directory_is_published() {
    let d = Deployable::new();
    write(&d.fleet.path(".cache/signing.key"), "bento-1:SECRETCACHEKEY\n");
    symlink("../../.cache/signing.key", d.fleet.path("hosts/web1/key.nix")).unwrap();
    let error = fails(&d.deploy());
    assert!(
        error.contains("hosts/web1/key.nix") && error.contains("leads into `.cache`"),
        "{error}"
    );
    std::fs::remove_file(d.fleet.path("hosts/web1/key.nix")).unwrap();
    symlink("../../.bento", d.fleet.path("hosts/web1/state")).unwrap();
    let error = fails(&d.deploy());
    assert!(
        error.contains("hosts/web1/state") && error.contains("leads into `.bento`"),
        "{error}"
    );
    std::fs::remove_file(d.fleet.path("hosts/web1/state")).unwrap();
    // A dot-directory in a host's directory stays out; a link inside the fleet still works.
    write(&d.fleet.path("hosts/web1/.direnv/env"), "SECRET=1\n");
    ok(&d.deploy());
    let web1 = d.published("web1");
    assert!(web1.contains(&"config/base.nix".to_owned()), "{web1:?}");
    assert!(!web1.iter().any(|f| f.contains(".direnv")), "{web1:?}");
    assert!(!contains_bytes(&d.server, b"SECRETCACHEKEY"));
}

#[test]
fn fleet_files_linked_to_dev_zero_are_refused_not_read() {
    let d = Deployable::new();
    let files = [
        "keys/hosts/web1.pub",
        "keys/admins/alice.pub",
        "secrets/secrets.toml",
        "secrets/recipients.lock",
        "secrets/db-password.age",
        "bento.toml",
    ];
    for rel in files {
        let path = d.fleet.path(rel);
        let saved = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        symlink("/dev/zero", &path).unwrap();
        // Every command reads bento.toml or the fleet; verify reads the secrets too.
        let args: &[&str] = if rel == "bento.toml" {
            &["server", "setup"]
        } else {
            &["secret", "verify"]
        };
        let out = bounded(d.fleet.cmd(args), Duration::from_secs(60));
        let error = fails(&out);
        assert!(
            error.contains(rel) && error.contains("is a symlink"),
            "{rel}: {error}"
        );
        // A FIFO is not waited on, and a huge file is not read.
        std::fs::remove_file(&path).unwrap();
        Command::new("mkfifo").arg(&path).status().unwrap();
        let error = fails(&bounded(d.fleet.cmd(args), Duration::from_secs(60)));
        assert!(
            error.contains(rel) && error.contains("not a regular file"),
            "{rel}: {error}"
        );
        std::fs::remove_file(&path).unwrap();
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(65 * 1024 * 1024).unwrap();
        let error = fails(&bounded(d.fleet.cmd(args), Duration::from_secs(60)));
        assert!(
            error.contains(rel) && error.contains("larger than"),
            "{rel}: {error}"
        );
        std::fs::write(&path, saved).unwrap();
    }
    ok(&d.fleet.bento(&["secret", "verify"]));
}

#[test]
fn a_host_address_with_control_characters_is_refused_at_its_line() {
    let d = Deployable::new();
    let toml = std::fs::read_to_string(d.fleet.path("bento.toml")).unwrap();
    for address in [
        "web1\\u001b]0;owned\\u0007",
        "-oProxyCommand=id",
        "web1\\nx",
        "web 1",
    ] {
        write(
            &d.fleet.path("bento.toml"),
            &format!("{toml}[hosts.web1]\naddress = \"{address}\"\n"),
        );
        let out = d.fleet.bento(&["ssh", "web1", "--print"]);
        let error = fails(&out);
        assert!(error.contains("bento.toml:4: address `"), "{address}: {error}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains('\u{1b}'));
        assert!(!error.contains('\u{1b}') && !error.contains('\u{7}'), "{error:?}");
    }
}

#[test]
fn a_committed_bento_link_makes_bento_write_nowhere() {
    let (fleet, _keys) = example();
    let elsewhere = tempfile::tempdir().unwrap();
    let planted = elsewhere.path().join("gitignore");
    // `.bento/.gitignore` a dangling link: `.bento` is used, nothing created where it points.
    let _ = std::fs::remove_dir_all(fleet.path(".bento"));
    std::fs::create_dir(fleet.path(".bento")).unwrap();
    symlink(&planted, fleet.path(".bento/.gitignore")).unwrap();
    ok(&fleet.bento_stdin(&["secret", "edit", "db-password"], b"v1"));
    assert!(!planted.exists());
    // `.bento` itself a link: refused in one line, nothing written there.
    std::fs::remove_dir_all(fleet.path(".bento")).unwrap();
    symlink(elsewhere.path(), fleet.path(".bento")).unwrap();
    let error = fails(&fleet.bento_stdin(&["secret", "edit", "web-only"], b"v1"));
    assert!(error.contains(".bento: is a symlink"), "{error}");
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
}

#[test]
fn a_plugin_binary_in_the_fleet_never_runs() {
    let (fleet, _keys) = example();
    let marker = fleet.home.join("plugin-ran");
    let plugin = format!("#!/bin/sh\ntouch {}\nexit 1\n", marker.display());
    for dir in ["bin", "."] {
        let path = fleet.path(&format!("{dir}/age-plugin-evil"));
        write(&path, &plugin);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(
        fleet.path("keys/hosts/pl.pub"),
        format!("{}\n", plugin_recipient("evil")),
    )
    .unwrap();
    fleet.rules("admins = [\"alice\"]\n[secrets.db]\nrecipients = [\"pl\"]\n");
    let system = std::env::var("PATH").unwrap_or_default();
    for (entry, why) in [
        (s(&fleet.path("bin")).to_owned(), "inside the fleet"),
        (".".to_owned(), "relative"),
        (String::new(), "relative"),
    ] {
        let mut child = fleet
            .cmd(&["secret", "edit", "db"])
            .env("PATH", format!("{entry}:{system}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"value").unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let error = fails(&out);
        assert!(
            error.contains("refusing to look for age-plugin-evil") && error.contains(why),
            "{entry}: {error}"
        );
        assert!(error.contains(&format!("`{entry}`")), "{error}");
        assert!(!marker.exists(), "the fleet's plugin ran");
    }
}

#[test]
fn templates_wider_than_their_secrets_are_warned_about() {
    let (fleet, _keys) = example();
    fleet.rules(
        "admins = [\"alice\"]\n[secrets.db]\nrecipients = [\"web1\"]\nmode = \"0400\"\n\
         [templates.open]\nhosts = [\"web1\"]\ncontent = \"x={{ secrets.db }}\"\nmode = \"0644\"\n\
         [templates.group]\nhosts = [\"web1\"]\ncontent = \"x={{ secrets.db }}\"\nmode = \"0440\"\n\
         [templates.same]\nhosts = [\"web1\"]\ncontent = \"x={{ secrets.db }}\"\nmode = \"0400\"\n",
    );
    ok(&fleet.bento_stdin(&["secret", "edit", "db"], b"v"));
    let out = fleet.bento(&["secret", "verify"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.starts_with("warning:")).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("templates.open.mode \"0644\" lets every user")),
        "{stderr}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("templates.group.mode \"0440\" is wider than secrets.db.mode")),
        "{stderr}"
    );
    assert!(!warnings.iter().any(|w| w.contains("templates.same")), "{stderr}");
}
