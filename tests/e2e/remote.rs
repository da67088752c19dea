//! `bento deploy --target sftp://…`: publishing to a real chrooted sshd as the publishing
//! account of `bento server setup`, the host pulling over its own chrooted sftp user, an
//! upload cut mid-way, and what the publishing account and the hosts cannot do.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::agent::Loop;
use crate::harness::{fails, ok, pub_line, s};
use crate::reach::Agent;
use crate::sshd::{Sshd, PUBLISH_UID};

/// Host uids in the server's namespace: `Sshd::start` numbers them from 64991.
const WEB1_UID: u32 = 64991;
const DB1_UID: u32 = 64992;

/// A [`Loop`] whose server is a real sshd with the publishing account; the admin's
/// publishing key in an ssh-agent, the server's key in keys/server_known_hosts.
struct Remote {
    l: Loop,
    sshd: Sshd,
    agent: Agent,
    publisher: PathBuf,
}

impl Remote {
    fn new() -> Remote {
        crate::harness::require("ssh");
        let l = Loop::new();
        let publisher = l.fleet.ssh_key("publisher", "ed25519", "");
        let sshd = Sshd::start_with(
            &[
                ("bento-web1", "web1", &pub_line(&l.keys.web1)),
                ("bento-db1", "db1", &pub_line(&l.keys.db1)),
            ],
            Some(&pub_line(&publisher)),
        );
        // What `bento server setup` has root make for each host.
        for (host, uid) in [("web1", WEB1_UID), ("db1", DB1_UID)] {
            let dir = sshd.root.join(host);
            std::fs::create_dir_all(dir.join("logs")).unwrap();
            std::fs::create_dir_all(dir.join("generations")).unwrap();
            // logs/: the host's, readable by the publishing account's group (setgid).
            std::os::unix::fs::chown(dir.join("logs"), Some(uid), Some(PUBLISH_UID)).unwrap();
            chmod(&dir.join("logs"), 0o2750);
            std::os::unix::fs::chown(dir.join("generations"), Some(PUBLISH_UID), Some(PUBLISH_UID)).unwrap();
            std::os::unix::fs::symlink("generations/current", dir.join("current")).unwrap();
        }
        std::fs::copy(&sshd.known_hosts, l.fleet.path("keys/server_known_hosts")).unwrap();
        let agent = Agent::with(&l.fleet, &publisher);
        let rebuild = l.fleet.keys.join("nixos-rebuild");
        l.write_config(
            &format!("sftp://bento-web1@127.0.0.1:{}", sshd.port),
            &rebuild,
            Some(&sshd.known_hosts),
        );
        Remote {
            l,
            sshd,
            agent,
            publisher,
        }
    }

    fn url(&self) -> String {
        format!("sftp://bento-publish@127.0.0.1:{}/", self.sshd.port)
    }

    /// `bento deploy --target URL`, with `path` first on PATH when given.
    fn deploy(&self, path: Option<&Path>) -> Output {
        let url = self.url();
        self.bento(&["deploy", "--target", &url], path)
    }

    /// `bento ARGS` with the admin's ssh-agent, and `path` first on PATH when given.
    fn bento(&self, args: &[&str], path: Option<&Path>) -> Output {
        let mut cmd = self.l.fleet.cmd(args);
        cmd.env("SSH_AUTH_SOCK", &self.agent.sock);
        if let Some(dir) = path {
            let old = std::env::var("PATH").unwrap_or_default();
            cmd.env("PATH", format!("{}:{old}", dir.display()));
        }
        cmd.output().unwrap()
    }

    fn host(&self, host: &str) -> PathBuf {
        self.sshd.root.join(host)
    }

    /// The names in a host's generations/, sorted.
    /// The entries of `host`'s generations/, but its history.
    fn generations(&self, host: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.host(host).join("generations"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name != "history")
            .collect();
        names.sort();
        names
    }

    fn current(&self, host: &str) -> String {
        std::fs::read_to_string(self.host(host).join("generations/current")).unwrap()
    }
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that `current` is still root's link to generations/current.
fn assert_link(r: &Remote, host: &str) {
    let current = r.host(host).join("current");
    assert_eq!(
        std::fs::read_link(&current).unwrap(),
        Path::new("generations/current")
    );
    assert_eq!(std::fs::symlink_metadata(&current).unwrap().uid(), 0);
}

#[test]
fn publishes_over_sftp_and_the_host_pulls_it_through_the_current_link() {
    if !crate::harness::needs_root("a real sshd with chroots under /srv, in a private mount namespace") {
        return;
    }
    let r = Remote::new();
    let out = r.deploy(None);
    ok(&out);
    assert!(stderr(&out).contains("2 published"), "{}", stderr(&out));
    for host in ["web1", "db1"] {
        assert_eq!(r.generations(host), ["1", "current"], "{host}");
        assert_eq!(r.current(host), "1\n");
        assert_link(&r, host);
        let manifest = r.host(host).join("generations/1/manifest.json");
        let meta = std::fs::metadata(&manifest).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o777), (PUBLISH_UID, 0o644));
        assert!(r.host(host).join("generations/1/manifest.sig").is_file());
    }

    // Unchanged: nothing uploaded, nothing renamed, nothing created or removed.
    let stamp = |host: &str| {
        let dir = std::fs::metadata(r.host(host).join("generations")).unwrap();
        let current = std::fs::metadata(r.host(host).join("generations/current")).unwrap();
        (dir.mtime(), dir.mtime_nsec(), current.ino())
    };
    let before = (stamp("web1"), stamp("db1"));
    let out = r.deploy(None);
    ok(&out);
    assert!(
        stderr(&out).contains("0 published, 2 unchanged"),
        "{}",
        stderr(&out)
    );
    assert_eq!((stamp("web1"), stamp("db1")), before);

    // The host's agent reads `current` (the link) over its own chrooted sftp user.
    let out = r.l.agent(&["--json"]);
    ok(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["state"].as_str(), report["generation"].as_u64()),
        (Some("applied"), Some(1))
    );
    assert_eq!(r.l.secret("web-only"), "v1 of web-only");
    // So does `bento status` reading the root locally.
    let status = ok(&r
        .l
        .fleet
        .bento(&["status", "--json", "--server-root", s(&r.sshd.root)]));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let web1 = status["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "web1")
        .unwrap()
        .clone();
    assert_eq!(web1["expected_generation"], 1, "{web1}");

    // The target of bento.toml, without --target; keep_generations: the oldest goes once
    // there are more.
    std::fs::write(
        r.l.fleet.path("bento.toml"),
        format!(
            "[deploy]\nsigning_key = \"{}\"\nkeep_generations = 2\ntarget = \"{}\"\n",
            s(&r.l.fleet.keys.join("admin")),
            r.url()
        ),
    )
    .unwrap();
    for round in 2..=3 {
        std::fs::write(
            r.l.fleet.path("hosts/web1/configuration.nix"),
            format!("{{ networking.hostName = \"web1\"; # round {round}\n}}\n"),
        )
        .unwrap();
        let out = r.bento(&["deploy"], None);
        ok(&out);
        assert!(stderr(&out).contains(&r.url()), "{}", stderr(&out));
    }
    assert_eq!(r.generations("web1"), ["2", "3", "current"]);
    assert_eq!(r.current("web1"), "3\n");
    assert_eq!(r.generations("db1"), ["1", "current"]);
}

#[test]
fn an_upload_cut_mid_way_leaves_the_host_on_its_generation_and_the_next_deploy_completes() {
    if !crate::harness::needs_root("a real sshd with chroots under /srv, in a private mount namespace") {
        return;
    }
    let r = Remote::new();
    ok(&r.deploy(None));
    ok(&r.l.agent(&[]));
    // A new generation with 1 MiB to upload; an `ssh` that lets 256 KiB through, then
    // closes its input: the connection ends mid-file, every time.
    let big: String = (0..1024 * 1024 / 64).map(|i| format!("{i:063x}\n")).collect();
    std::fs::write(r.l.fleet.path("hosts/web1/data.txt"), big).unwrap();
    let wrapper = r.l.fleet.keys.join("cut");
    std::fs::create_dir_all(&wrapper).unwrap();
    let ssh = Command::new("sh")
        .args(["-c", "command -v ssh"])
        .output()
        .unwrap();
    let ssh = String::from_utf8(ssh.stdout).unwrap().trim().to_owned();
    std::fs::write(
        wrapper.join("ssh"),
        // Unbuffered: the exchange before the cut goes through as it comes.
        format!("#!/bin/sh\nstdbuf -o0 head -c 262144 | {ssh} \"$@\"\n"),
    )
    .unwrap();
    chmod(&wrapper.join("ssh"), 0o755);
    let out = r.deploy(Some(&wrapper));
    let error = fails(&out);
    assert!(
        error.contains("/web1/generations/") && error.contains("run `bento deploy` again"),
        "{error}"
    );
    // The partial upload is there, under its temp name; `current` did not move.
    let names = r.generations("web1");
    assert!(names.iter().any(|n| n.starts_with(".new-2-")), "{names:?}");
    assert!(!names.contains(&"2".to_owned()), "{names:?}");
    assert_eq!(r.current("web1"), "1\n");
    assert_link(&r, "web1");

    // The host keeps seeing its complete generation.
    let out = r.l.agent(&[]);
    ok(&out);
    assert!(stderr(&out).contains("up to date"), "{}", stderr(&out));

    // The next deploy completes and clears what was left.
    let out = r.deploy(None);
    ok(&out);
    assert!(stderr(&out).contains("1 published"), "{}", stderr(&out));
    assert_eq!(r.generations("web1"), ["1", "2", "current"]);
    assert_eq!(r.current("web1"), "2\n");
    let out = r.l.agent(&["--json"]);
    ok(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["state"].as_str(), report["generation"].as_u64()),
        (Some("applied"), Some(2))
    );
    assert_eq!(
        std::fs::read(r.l.state.join("current/config/data.txt"))
            .unwrap()
            .len(),
        1024 * 1024
    );
}

/// `sftp -b -` as `user` with `key` only, running `batch` (lines starting with `-` may
/// fail), in `cwd`.
fn sftp(r: &Remote, key: &Path, user: &str, batch: &str, cwd: &Path) -> Output {
    let mut child = Command::new("sftp")
        .args([
            "-b",
            "-",
            "-F",
            "none",
            "-i",
            s(key),
            "-P",
            &r.sshd.port.to_string(),
        ])
        .args([
            "-o",
            &format!("UserKnownHostsFile={}", r.sshd.known_hosts.display()),
        ])
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes"])
        .args(["-o", "IdentityAgent=none", "-o", "BatchMode=yes"])
        .arg(format!("{user}@127.0.0.1"))
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(batch.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn the_publishing_account_publishes_only_and_hosts_still_write_only_their_logs() {
    if !crate::harness::needs_root("a real sshd with chroots under /srv, in a private mount namespace") {
        return;
    }
    crate::harness::require("sftp");
    let r = Remote::new();
    ok(&r.deploy(None));
    let work = r.l.fleet.home.join("sftp");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("x"), "planted\n").unwrap();
    let db1_logs = r.host("db1/logs");
    std::fs::write(db1_logs.join("seen.json"), "{}").unwrap();

    // The publisher: no shell (even with /bin/sh as its shell), only the root.
    let shell = Command::new("ssh")
        .args([
            "-F",
            "none",
            "-i",
            s(&r.publisher),
            "-p",
            &r.sshd.port.to_string(),
        ])
        .args([
            "-o",
            &format!("UserKnownHostsFile={}", r.sshd.known_hosts.display()),
        ])
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
        ])
        .args(["bento-publish@127.0.0.1", "echo shell-ran; id"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&shell.stdout).contains("shell-ran"),
        "{shell:?}"
    );
    let out = sftp(
        &r,
        &r.publisher,
        "bento-publish",
        "-get /etc/passwd passwd\n-get /../../etc/passwd passwd2\n-get /db1/logs/seen.json seen\n\
         -put x /db1/logs/x\n-rm /web1/current\n-put x /planted\n\
         -rename /web1/generations/current /web1/current\nput x /web1/generations/allowed\n",
        &work,
    );
    ok(&out);
    for name in ["passwd", "passwd2"] {
        assert!(!work.join(name).exists(), "the publisher read {name}");
    }
    // It reads hosts' logs/ (for `bento status` over sftp), and writes nothing there.
    assert_eq!(std::fs::read(work.join("seen")).unwrap(), b"{}");
    assert!(!db1_logs.join("x").exists());
    assert!(!r.sshd.root.join("planted").exists());
    assert_link(&r, "web1");
    assert_eq!(r.current("web1"), "1\n");
    // It did write where it may: generations/.
    assert!(r.host("web1/generations/allowed").is_file());
    // Its key does not open a host's account.
    let out = sftp(&r, &r.publisher, "bento-web1", "ls\n", &work);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("Permission denied"), "{}", stderr(&out));

    // A host: its logs/ only; not its pointer, not its generations, not another host.
    let out = sftp(
        &r,
        &r.l.keys.web1,
        "bento-web1",
        "-put x /generations/1/manifest.json\n-put x /generations/current\n-rm /current\n\
         -put x /current\n-rename /generations/1 /generations/9\n-put x /../db1/logs/x\n\
         put x /logs/x\n",
        &work,
    );
    ok(&out);
    assert_eq!(r.current("web1"), "1\n");
    assert_link(&r, "web1");
    assert_eq!(r.generations("web1"), ["1", "allowed", "current"]);
    assert!(!db1_logs.join("x").exists());
    assert!(r.host("web1/logs/x").is_file());
    assert_ne!(
        std::fs::read(r.host("web1/generations/1/manifest.json")).unwrap(),
        b"planted\n"
    );

    // What sshd applies to the publishing account.
    let effective = r.sshd.effective("bento-publish");
    for line in [
        format!("chrootdirectory {}", r.sshd.root.display()),
        "forcecommand internal-sftp".into(),
        "disableforwarding yes".into(),
        "permittty no".into(),
    ] {
        assert!(effective.lines().any(|l| l == line), "{line}: {effective}");
    }
}

#[test]
fn a_bad_target_is_one_error_line() {
    let l = Loop::new();
    let error = fails(
        &l.fleet
            .bento(&["deploy", "--target", "sftp://nouser.example.org/srv"]),
    );
    assert!(
        error.contains("--target") && error.contains("sftp://user@"),
        "{error}"
    );
    std::fs::write(l.fleet.path("bento.toml"), "[deploy]\ntarget = \"/srv/bento\"\n").unwrap();
    let error = fails(&l.fleet.bento(&["deploy"]));
    assert!(error.contains("bento.toml:2: deploy.target"), "{error}");
}

#[test]
fn a_remote_root_not_set_up_for_publishing_is_refused_naming_the_host() {
    if !crate::harness::needs_root("a real sshd with chroots under /srv, in a private mount namespace") {
        return;
    }
    let r = Remote::new();
    // db1's `current` is a plain file, as a local deploy leaves it: the publisher could
    // not replace it.
    std::fs::remove_file(r.host("db1/current")).unwrap();
    std::fs::write(r.host("db1/current"), "1\n").unwrap();
    let error = fails(&r.deploy(None));
    assert!(
        error.contains("/db1/current") && error.contains("bento server setup"),
        "{error}"
    );
    // Nothing was uploaded for anyone.
    assert_eq!(r.generations("web1"), Vec::<String>::new());
    // No pinned server key: refused before connecting.
    std::fs::remove_file(r.l.fleet.path("keys/server_known_hosts")).unwrap();
    let error = fails(&r.deploy(None));
    assert!(error.contains("keys/server_known_hosts"), "{error}");
    // A server whose key is not the pinned one.
    std::fs::write(
        r.l.fleet.path("keys/server_known_hosts"),
        format!("[127.0.0.1]:{} {}\n", r.sshd.port, pub_line(&r.l.keys.db1)),
    )
    .unwrap();
    let error = fails(&r.deploy(None));
    assert!(error.contains("sftp://bento-publish@127.0.0.1"), "{error}");
    assert_eq!(r.generations("web1"), Vec::<String>::new());
}

/// The JSON status of `host` read from `root` (`bento status` exits 1 while a host failed:
/// not asked here).
pub(crate) fn status_of(l: &Loop, root: &Path, host: &str) -> serde_json::Value {
    let out = l.fleet.bento(&["status", "--json", "--server-root", s(root)]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    status["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == host)
        .unwrap()
        .clone()
}

#[test]
fn a_local_root_accepts_exactly_the_current_link_and_refuses_any_other() {
    let l = Loop::new();
    // web1 laid out for a publishing account; db1's `current` a link somewhere else.
    let outside = l.fleet.home.join("elsewhere");
    std::fs::write(&outside, "1\n").unwrap();
    for host in ["web1", "db1"] {
        std::fs::create_dir_all(l.server.join(host).join("generations")).unwrap();
    }
    std::os::unix::fs::symlink("generations/current", l.server.join("web1/current")).unwrap();
    std::os::unix::fs::symlink(&outside, l.server.join("db1/current")).unwrap();
    let error = fails(&l.fleet.bento(&["deploy", "--server-root", s(&l.server)]));
    assert!(
        error.contains("db1/current") && error.contains("the only link bento accepts"),
        "{error}"
    );
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "1\n");
    let db1 = status_of(&l, &l.server, "db1");
    assert_eq!(db1["expected_generation"], serde_json::Value::Null, "{db1}");
    assert!(
        db1["problem"].as_str().is_some_and(|p| p.contains("current")),
        "{db1}"
    );

    // web1 alone: its pointer is written behind the link, the link left as it is.
    ok(&l.fleet.bento(&["deploy", "web1", "--server-root", s(&l.server)]));
    let web1 = l.server.join("web1");
    assert_eq!(
        std::fs::read_link(web1.join("current")).unwrap(),
        Path::new("generations/current")
    );
    assert_eq!(
        std::fs::read_to_string(web1.join("generations/current")).unwrap(),
        "1\n"
    );
    assert_eq!(status_of(&l, &l.server, "web1")["expected_generation"], 1);
    // The agent reading a file:// server takes the link too.
    let out = l.agent(&["--json"]);
    ok(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["state"].as_str(), report["generation"].as_u64()),
        (Some("applied"), Some(1))
    );
    // Unchanged: nothing rewritten.
    let ino = std::fs::metadata(web1.join("generations/current")).unwrap().ino();
    ok(&l.fleet.bento(&["deploy", "web1", "--server-root", s(&l.server)]));
    assert_eq!(
        std::fs::metadata(web1.join("generations/current")).unwrap().ino(),
        ino
    );
    // The same link, made to point elsewhere, is refused by the agent as well.
    std::fs::remove_file(web1.join("current")).unwrap();
    std::os::unix::fs::symlink(&outside, web1.join("current")).unwrap();
    std::fs::write(&outside, "7\n").unwrap();
    let error = fails(&l.agent(&[]));
    assert!(
        error.contains("`current`") && error.contains("symlink"),
        "{error}"
    );
}

#[test]
fn server_setup_adds_the_publishing_account_and_turns_current_into_the_link() {
    if !crate::harness::needs_root("a private mount namespace with its own users") {
        return;
    }
    crate::harness::require("unshare");
    let l = Loop::new();
    // A root that a local deploy filled: `current` a plain file, generations root's.
    let base = tempfile::Builder::new()
        .prefix("bento-test-")
        .tempdir_in("/srv")
        .unwrap();
    let root = base.path().join("root");
    std::fs::write(
        l.fleet.path("bento.toml"),
        format!(
            "[server]\nroot = \"{}\"\n[deploy]\nsigning_key = \"{}\"\n",
            root.display(),
            s(&l.fleet.keys.join("admin"))
        ),
    )
    .unwrap();
    ok(&l.fleet.bento(&["deploy"]));
    assert_eq!(std::fs::read_to_string(root.join("web1/current")).unwrap(), "1\n");
    // An ssh admin: the publishing account's key (bob, of the example fleet).
    let out = ok(&l.fleet.bento(&["server", "setup"]));
    let shown = root.display().to_string();
    assert!(
        out.contains(&bento_deploy::fleet::server::match_block(
            "User bento-publish",
            &shown,
            None,
            "    "
        )),
        "{out}"
    );
    assert!(out.contains(&format!(
        "\"L+ {shown}/web1/current - - - - generations/current\""
    )));
    // bob's key among the admins' (the signing admin's too).
    assert!(out.contains(&format!(
        "' '{}' > /etc/ssh/bento_authorized_keys/bento-publish",
        pub_line(&l.keys.bob).rsplit_once(' ').unwrap().0
    )));
    // The shell form's lines for the hosts' directories, run as root in a namespace where
    // the accounts exist (nothing added to the machine).
    let other = &out[out.find("### Other Linux servers").unwrap()..];
    let lines: Vec<&str> = other
        .lines()
        .filter(|line| line.contains("/generations") || line.contains("/logs") || line.contains("/cache"))
        .collect();
    assert_eq!(lines.len(), 10, "{other}");
    // What web1's agent wrote into logs/ before: its report gets the publishing account's
    // group; a link planted there is not followed.
    let web1_logs = root.join("web1/logs");
    std::fs::create_dir_all(&web1_logs).unwrap();
    std::fs::write(web1_logs.join("report-00000001-t.json"), "{}").unwrap();
    // The link leads out of the host's logs/ to a root file (here, a scratch one).
    let outside = base.path().join("outside.json");
    std::fs::write(&outside, "{}").unwrap();
    std::os::unix::fs::symlink(&outside, web1_logs.join("planted.json")).unwrap();
    for name in ["", "report-00000001-t.json", "planted.json"] {
        std::os::unix::fs::lchown(web1_logs.join(name), Some(WEB1_UID), Some(0)).unwrap();
    }
    let outside_gid = std::fs::metadata(&outside).unwrap().gid();
    // web1's own cache as root left it (0700), with a link planted at cache/nar (its owner
    // could plant one) leading to a root directory: the link is not followed.
    let web1_cache = root.join("web1/cache");
    std::fs::create_dir_all(web1_cache.join("nar")).unwrap();
    std::fs::remove_dir(web1_cache.join("nar")).unwrap();
    chmod(&web1_cache, 0o700);
    let outside_dir = base.path().join("outside-dir");
    std::fs::create_dir(&outside_dir).unwrap();
    chmod(&outside_dir, 0o700);
    std::os::unix::fs::symlink(&outside_dir, web1_cache.join("nar")).unwrap();
    // Twice: applying the setup again changes nothing.
    let twice: Vec<&str> = lines.iter().chain(lines.iter()).copied().collect();
    let run = with_publishing_account(base.path(), &twice);
    ok(&run);
    for host in ["web1", "db1"] {
        let dir = root.join(host);
        assert_eq!(
            std::fs::read_link(dir.join("current")).unwrap(),
            Path::new("generations/current")
        );
        // The generation it named is kept.
        assert_eq!(
            std::fs::read_to_string(dir.join("generations/current")).unwrap(),
            "1\n"
        );
        for path in ["generations", "generations/1", "generations/1/manifest.json"] {
            assert_eq!(
                std::fs::metadata(dir.join(path)).unwrap().uid(),
                PUBLISH_UID,
                "{path}"
            );
        }
        assert_eq!(std::fs::symlink_metadata(dir.join("current")).unwrap().uid(), 0);
        // The host's own cache: the publishing account's, as generations/, 0755 (cache/nar
        // of web1 is the planted link, checked below).
        let cache_dirs: &[&str] = if host == "web1" {
            &["cache"]
        } else {
            &["cache", "cache/nar"]
        };
        for path in cache_dirs {
            let meta = std::fs::symlink_metadata(dir.join(path)).unwrap();
            assert!(meta.is_dir(), "{host}/{path}");
            assert_eq!(
                (meta.uid(), meta.gid(), meta.mode() & 0o7777),
                (PUBLISH_UID, PUBLISH_UID, 0o755),
                "{host}/{path}"
            );
        }
        // logs/: the host's, readable by the publishing account's group, setgid.
        let logs = std::fs::metadata(dir.join("logs")).unwrap();
        assert_eq!(
            (logs.uid(), logs.gid(), logs.mode() & 0o7777),
            (
                if host == "web1" { WEB1_UID } else { DB1_UID },
                PUBLISH_UID,
                0o2750
            ),
            "{host}"
        );
    }
    assert_eq!(
        std::fs::metadata(web1_logs.join("report-00000001-t.json"))
            .unwrap()
            .gid(),
        PUBLISH_UID
    );
    assert_eq!(std::fs::metadata(&outside).unwrap().gid(), outside_gid);
    // The link planted at web1's cache/nar is still a link (the deploy refuses it), now the
    // account's; where it leads is untouched.
    let nar = std::fs::symlink_metadata(web1_cache.join("nar")).unwrap();
    assert!(nar.file_type().is_symlink());
    assert_eq!(nar.uid(), PUBLISH_UID);
    let target = std::fs::metadata(&outside_dir).unwrap();
    assert_eq!(
        (target.uid(), target.gid(), target.mode() & 0o7777),
        (0, 0, 0o700)
    );
    // The hosts see the same generation; the next local deploy (as root) keeps the link,
    // and leaves what it writes to the publishing account, which can prune it later.
    assert_eq!(status_of(&l, &root, "web1")["expected_generation"], 1);
    std::fs::write(
        l.fleet.path("hosts/web1/configuration.nix"),
        "{ networking.hostName = \"web1\"; # 2\n}\n",
    )
    .unwrap();
    ok(&l.fleet.bento(&["deploy"]));
    let web1 = root.join("web1");
    assert!(std::fs::symlink_metadata(web1.join("current"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::read_to_string(web1.join("generations/current")).unwrap(),
        "2\n"
    );
    for path in [
        "generations/2",
        "generations/2/config",
        "generations/2/manifest.sig",
        "generations/current",
    ] {
        assert_eq!(
            std::fs::symlink_metadata(web1.join(path)).unwrap().uid(),
            PUBLISH_UID,
            "{path}"
        );
    }
}

#[test]
fn status_watch_wakes_when_generations_current_is_replaced() {
    use crate::status::{collect, wait_for};
    use std::time::Duration;
    let l = Loop::new();
    let web1 = l.server.join("web1");
    std::fs::create_dir_all(web1.join("generations")).unwrap();
    std::os::unix::fs::symlink("generations/current", web1.join("current")).unwrap();
    ok(&l.fleet.bento(&["deploy", "web1", "--server-root", s(&l.server)]));
    let mut child = l
        .fleet
        .cmd(&["status", "--watch", "--json", "--server-root", s(&l.server)])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let text = collect(child.stdout.take().unwrap());
    let first = wait_for(&text, "\"expected_generation\": 1", Duration::from_secs(10));
    // Give the watches a moment to be in place after the first frame.
    std::thread::sleep(Duration::from_millis(300));
    if first {
        // As the publishing account switches over sftp: a generation dir appears, then
        // a temp file is renamed over generations/current. Nothing else is touched.
        let gens = web1.join("generations");
        let copied = Command::new("cp")
            .arg("-a")
            .arg(gens.join("1"))
            .arg(gens.join(".new-2-x"))
            .status()
            .unwrap();
        assert!(copied.success());
        std::fs::rename(gens.join(".new-2-x"), gens.join("2")).unwrap();
        std::fs::write(gens.join(".current.2.tmp"), "2\n").unwrap();
        std::fs::rename(gens.join(".current.2.tmp"), gens.join("current")).unwrap();
    }
    // Only generations/ changed (the link did not): the watch must see it, well before
    // its once-a-minute refresh.
    let woke = first && wait_for(&text, "\"expected_generation\": 2", Duration::from_secs(5));
    let _ = child.kill();
    let _ = child.wait();
    let seen = text.lock().unwrap().clone();
    assert!(first, "no first frame: {seen}");
    assert!(woke, "no new frame after generations/current changed: {seen}");
}

/// Runs `lines` (shell, as root) in a private mount namespace where the publishing account
/// `bento-publish`, the hosts `web1` and `db1` and their group `bento` exist: `/etc/passwd` and `/etc/group` are bind-mounted over with copies
/// that add it, made under `scratch` (nothing added to the machine).
pub(crate) fn with_publishing_account(scratch: &Path, lines: &[&str]) -> Output {
    let etc = scratch.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    let mut passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd.push_str(&format!(
        "bento-publish:x:{PUBLISH_UID}:{PUBLISH_UID}::/:/usr/sbin/nologin\n\
         web1:x:{WEB1_UID}:64990::/:/usr/sbin/nologin\ndb1:x:{DB1_UID}:64990::/:/usr/sbin/nologin\n"
    ));
    let mut group = std::fs::read_to_string("/etc/group").unwrap();
    group.push_str(&format!("bento-publish:x:{PUBLISH_UID}:\nbento:x:64990:\n"));
    std::fs::write(etc.join("passwd"), passwd).unwrap();
    std::fs::write(etc.join("group"), group).unwrap();
    let script = format!(
        "set -e\nmount --bind {e}/passwd /etc/passwd\nmount --bind {e}/group /etc/group\n{}\n",
        lines.join("\n"),
        e = etc.display()
    );
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap()
}

/// Whoever writes the server chooses what `generations/` holds: a listing past 10,000
/// entries is refused with one line, never read on without end.
#[test]
fn an_oversized_remote_generations_listing_is_refused() {
    if !crate::harness::needs_root("a real sshd with chroots under /srv, in a private mount namespace") {
        return;
    }
    let r = Remote::new();
    let generations = r.host("web1/generations");
    for i in 0..10_001 {
        std::fs::write(generations.join(format!("planted-{i}")), "").unwrap();
    }
    let error = fails(&r.deploy(None));
    assert!(
        error.contains("web1/generations")
            && error
                .contains("holds more than 10000 entries: refused; remove what bento did not write there"),
        "{error}"
    );
    assert!(!generations.join("1").exists(), "nothing published for web1");
}

/// `bento status`, `diff` and `ssh` on the admin's machine read the server over the
/// target (bento.toml's `deploy.target`, or `--target`), as the publishing account: the
/// hosts' `logs/` are readable by its group, not by other hosts.
#[test]
fn status_diff_and_ssh_read_the_target_from_the_admins_machine() {
    if !crate::harness::needs_root("a real sshd with chroots under /srv, in a private mount namespace") {
        return;
    }
    crate::harness::require("setpriv");
    let r = Remote::new();
    ok(&r.deploy(None));
    ok(&r.l.agent(&[]));
    // What the host wrote over its own sftp user got the publishing account's group.
    let reports: Vec<PathBuf> = std::fs::read_dir(r.host("web1/logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("report-"))
        .collect();
    assert_eq!(reports.len(), 1, "{reports:?}");
    let meta = std::fs::metadata(&reports[0]).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (WEB1_UID, PUBLISH_UID));
    // A heartbeat naming where the host answers, as its agent writes one.
    let beat = r.host("web1/logs/seen.json");
    std::fs::write(
        &beat,
        format!(
            "{{\"host\":\"web1\",\"time\":\"{}\",\"addresses\":[\"192.0.2.7\"],\"ssh_port\":2222}}",
            bento_deploy::time::rfc3339(bento_deploy::time::now())
        ),
    )
    .unwrap();
    std::os::unix::fs::chown(&beat, Some(WEB1_UID), None).unwrap();

    // bento.toml's server.root is left at its default, a directory of this machine
    // without these hosts; its target is the server.
    let config = format!(
        "[deploy]\nsigning_key = \"{}\"\ntarget = \"{}\"\n",
        s(&r.l.fleet.keys.join("admin")),
        r.url()
    );
    std::fs::write(r.l.fleet.path("bento.toml"), &config).unwrap();
    let host = |status: &serde_json::Value, name: &str| {
        status["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["host"] == name)
            .unwrap()
            .clone()
    };
    let status: serde_json::Value = serde_json::from_str(&ok(&r.bento(&["status", "--json"], None))).unwrap();
    assert_eq!(status["server_root"], r.url(), "{status}");
    let web1 = host(&status, "web1");
    assert_eq!(
        (
            &web1["status"],
            &web1["expected_generation"],
            &web1["reported_generation"]
        ),
        (&"up-to-date".into(), &1.into(), &1.into()),
        "{web1}"
    );
    assert_eq!(web1["addresses"], serde_json::json!(["192.0.2.7"]));
    assert_eq!(host(&status, "db1")["status"], "never-seen");
    // The table too, naming the target.
    let table = ok(&r.bento(&["status"], None));
    assert!(table.contains(&r.url()), "{table}");

    // `bento diff` reads the host's report and its generation's manifest there.
    let error = fails(&r.bento(&["diff", "web1"], None));
    assert!(
        error.contains("bundle generation 1 records no expected system"),
        "{error}"
    );
    // `bento ssh` the heartbeat's address and port.
    let printed = ok(&r.bento(&["ssh", "web1", "--print"], None));
    assert!(
        printed.contains("192.0.2.7") && printed.contains("2222"),
        "{printed}"
    );

    // --target names the server whatever bento.toml says; --server-root a local root.
    std::fs::write(
        r.l.fleet.path("bento.toml"),
        config.replace("target = ", "# target = "),
    )
    .unwrap();
    let url = r.url();
    let status: serde_json::Value =
        serde_json::from_str(&ok(&r.bento(&["status", "--json", "--target", &url], None))).unwrap();
    assert_eq!(host(&status, "web1")["reported_generation"], 1);
    let local = ok(&r.bento(&["status", "--json", "--server-root", s(&r.sshd.root)], None));
    assert!(local.contains("\"reported_generation\": 1"), "{local}");
    // --watch over sftp draws its first frame at once.
    let mut child =
        r.l.fleet
            .cmd(&["status", "--watch", "--json", "--target", &url])
            .env("SSH_AUTH_SOCK", &r.agent.sock)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
    let text = crate::status::collect(child.stdout.take().unwrap());
    let drawn = crate::status::wait_for(
        &text,
        "\"reported_generation\": 1",
        std::time::Duration::from_secs(20),
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(drawn, "{}", text.lock().unwrap());

    // Hosts still cannot read each other's logs/: db1's user, in its own group only.
    let other = Command::new("setpriv")
        .args([
            "--reuid",
            &DB1_UID.to_string(),
            "--regid",
            "64990",
            "--clear-groups",
            "cat",
        ])
        .arg(&reports[0])
        .output()
        .unwrap();
    assert!(!other.status.success(), "{other:?}");
    assert!(String::from_utf8_lossy(&other.stderr).contains("Permission denied"));
}

/// Closure mode over sftp: the publishing account links web1's closure into web1's own
/// cache with `hardlink@openssh.com` (no copy), web1's agent fetches and imports it
/// through its chroot into a store of its own and switches, and web1's login does not
/// reach db1's cache.
#[test]
fn a_closure_host_gets_its_closure_over_sftp_and_sees_no_other_hosts() {
    use crate::closure::{closure_fleet, hash_of, set_system, NixRoot};
    if !crate::harness::needs_root("a real sshd with chroots, and Nix stores of their own on /nix")
        || !crate::harness::needs_nix()
    {
        return;
    }
    let r = Remote::new();
    let (admin, host) = (NixRoot::new(), NixRoot::new());
    closure_fleet(&r.l, &admin);
    let switched = r.l.base().join("switched");
    set_system(&r.l, &switched, "lib-b v1");
    // What `bento server setup` makes with [cache]: the fleet cache and each host's own,
    // the publishing account's.
    for dir in [
        "cache",
        "cache/nar",
        "web1/cache",
        "web1/cache/nar",
        "db1/cache",
        "db1/cache/nar",
    ] {
        let dir = r.sshd.root.join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(PUBLISH_UID), Some(PUBLISH_UID)).unwrap();
    }
    ok(&admin.run(&r.l.fleet.cmd(&["build", "web1"])));
    let mut deploy = r.l.fleet.cmd(&["deploy", "--target", &r.url()]);
    deploy.env("SSH_AUTH_SOCK", &r.agent.sock);
    ok(&admin.run(&deploy));
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(r.l.fleet.path(".bento/expected.json")).unwrap()).unwrap();
    let system = expected["hosts"]["web1"]["system"].as_str().unwrap().to_owned();
    let name = format!("{}.narinfo", hash_of(&system));
    let own = std::fs::metadata(r.host("web1/cache").join(&name)).unwrap();
    let fleet = std::fs::metadata(r.sshd.root.join("cache").join(&name)).unwrap();
    assert_eq!((own.ino(), own.nlink()), (fleet.ino(), 2));
    assert_eq!(std::fs::read_dir(r.host("web1/cache/nar")).unwrap().count(), 3);
    assert_eq!(std::fs::read_dir(r.host("db1/cache/nar")).unwrap().count(), 0);

    let out = host.run(
        &r.l.fleet
            .cmd(&["agent", "--once", "--json", "--config", s(&r.l.config)]),
    );
    ok(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["state"], "applied", "{report}");
    assert_eq!(report["note"], "3 store paths fetched", "{report}");
    assert_eq!(
        std::fs::read_to_string(&switched).unwrap(),
        format!("{system} switch\n")
    );

    // web1's login: its own cache (`/cache` of its chroot), nothing of db1's.
    std::fs::write(r.host("db1/cache/nix-cache-info"), "StoreDir: /nix/store\n").unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let own = sftp(
        &r,
        &r.l.keys.web1,
        "bento-web1",
        &format!("get /cache/{name} own\n"),
        scratch.path(),
    );
    ok(&own);
    for other in [
        "/db1/cache/nix-cache-info",
        "../db1/cache/nix-cache-info",
        "/../db1/cache/nix-cache-info",
        "/../../db1/cache/nix-cache-info",
    ] {
        let out = sftp(
            &r,
            &r.l.keys.web1,
            "bento-web1",
            &format!("get {other} stolen\n"),
            scratch.path(),
        );
        assert!(!out.status.success(), "web1 read {other}");
        assert!(!scratch.path().join("stolen").exists(), "{other}");
    }
}

/// `bento rollout --target`: waves published over sftp as the publishing account, the
/// hosts' reports read back over it, the hosts pulling through their own chroots.
#[test]
fn a_rollout_over_sftp_goes_wave_by_wave() {
    use crate::rollout::{db1_agent, drive, text, with_rollout};
    if !crate::harness::needs_root("a real sshd with chroots under /srv, in a private mount namespace") {
        return;
    }
    let r = Remote::new();
    with_rollout(&r.l, "waves = [[\"web1\"], [\"db1\"]]\nwait = \"60s\"\n");
    let db1 = db1_agent(
        &r.l,
        &format!("sftp://bento-db1@127.0.0.1:{}", r.sshd.port),
        Some(&r.sshd.known_hosts),
    );
    let url = r.url();
    let rollout =
        r.l.fleet
            .cmd(&["rollout", "--target", &url])
            .env("SSH_AUTH_SOCK", &r.agent.sock)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    let out = drive(&r.l, &db1, rollout, &["web1", "db1"]);
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    let at = |needle: &str| said.find(needle).unwrap_or_else(|| panic!("{needle}: {said}"));
    assert!(
        at("wave 1: web1: applied") < at("wave 2/2: published db1"),
        "{said}"
    );
    assert_eq!(r.current("db1"), "1\n");
}

/// The two-person rule over sftp: the first admin's deploy is pending on the server, the
/// second admin's `approve --target` signs it and moves `generations/current`, and only
/// then does the host, pulling through its chroot, apply it.
#[test]
fn a_pending_deploy_is_approved_over_sftp() {
    if !crate::harness::needs_root("a real sshd with chroots under /srv, in a private mount namespace") {
        return;
    }
    let r = Remote::new();
    let second = r.l.fleet.ssh_key("second-admin", "ed25519", "");
    r.l.fleet.add_admin("second", &pub_line(&second));
    let toml = r.l.fleet.path("bento.toml");
    let first = std::fs::read_to_string(&toml)
        .unwrap()
        .replace("[deploy]\n", "[deploy]\nrequired_signatures = 2\n");
    std::fs::write(&toml, &first).unwrap();
    r.l.require_two_signatures(&second);
    ok(&r.deploy(None));
    assert!(
        !r.host("web1/generations/current").exists(),
        "pending: no current yet"
    );
    ok(&r.l.agent(&[]));
    assert!(r.l.calls().is_empty());

    std::fs::write(
        &toml,
        first.replace(
            &format!("signing_key = \"{}\"", r.l.fleet.keys.join("admin").display()),
            &format!("signing_key = \"{}\"", second.display()),
        ),
    )
    .unwrap();
    let url = r.url();
    let out = r.bento(&["approve", "web1", "--yes", "--target", &url], None);
    ok(&out);
    assert_eq!(r.current("web1"), "1\n");
    let out = r.l.agent(&[]);
    ok(&out);
    assert!(r.l.calls().contains("nixos-rebuild switch"), "{}", r.l.calls());
    // The history over sftp names both admins as its signers.
    let out = r.bento(&["log", "web1", "--json", "--target", &url], None);
    let doc: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(
        doc["hosts"][0]["generations"][0]["signers"],
        serde_json::json!(["admin", "second"]),
        "{doc}"
    );
}

/// Over sftp: a host that missed pruned generations follows the history in its chroot down
/// to the manifest it runs; `bento log --target` verifies the chain and catches a link the
/// server dropped.
#[test]
fn the_history_is_followed_by_the_host_and_verified_by_log_over_sftp() {
    if !crate::harness::needs_root("a real sshd with chroots under /srv, in a private mount namespace") {
        return;
    }
    let r = Remote::new();
    let toml = r.l.fleet.path("bento.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replace("[deploy]\n", "[deploy]\nkeep_generations = 1\n"),
    )
    .unwrap();
    ok(&r.deploy(None));
    ok(&r.l.agent(&[]));
    for n in [2, 3] {
        std::fs::write(
            r.l.fleet.path("hosts/web1/configuration.nix"),
            format!("{{ networking.hostName = \"web1\"; boot.kernelParams = [ \"n={n}\" ]; }}\n"),
        )
        .unwrap();
        ok(&r.deploy(None));
    }
    assert!(!r.host("web1/generations/2").exists(), "pruned");
    let (out, report) = r.l.agent_json();
    ok(&out);
    assert_eq!(report["state"], "applied", "{report}");
    assert_eq!(report["generation"], 3);
    let url = r.url();
    let out = r.bento(&["log", "web1", "--target", &url], None);
    let text = ok(&out);
    assert!(
        text.contains("web1: 3 generations, every link verified"),
        "{text}"
    );

    // The server drops generation 2's manifest from the history: caught.
    let history = r.host("web1/generations/history");
    for entry in std::fs::read_dir(&history).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        if path.extension().is_some_and(|x| x == "json")
            && String::from_utf8_lossy(&bytes).contains("\"generation\": 2,")
        {
            std::fs::remove_file(&path).unwrap();
        }
    }
    let out = r.bento(&["log", "web1", "--target", &url], None);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("history does not verify") && text.contains("is missing"),
        "{text}"
    );
}
