//! `[cache]` with a remote target: `bento deploy --target sftp://…` fills the server's
//! `<root>/cache` over its own sftp connection, as the publishing account that `bento
//! server setup` makes the owner of the cache; checked with the real Nix (`nix store
//! verify` against the server's cache) and a real sshd. Nothing reaches the server root
//! but that connection: the local `server.root` points elsewhere.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::cache::{copied, files, Cached};
use crate::harness::{fails, ok, pub_line, s};
use crate::reach::Agent;
use crate::sshd::{Sshd, PUBLISH_UID};

/// A [`Cached`] fleet (hosts web1 and db1, a cache key, a private Nix store) whose server
/// is a real sshd with the publishing account, laid out by the shell form of `bento
/// server setup`; the admin's publishing key in an ssh-agent.
struct RemoteCached {
    c: Cached,
    sshd: Sshd,
    agent: Agent,
    /// The local `server.root` of bento.toml: never created.
    elsewhere: PathBuf,
}

impl RemoteCached {
    fn new() -> RemoteCached {
        crate::harness::require("ssh");
        let mut c = Cached::new();
        let publisher = c.fleet.ssh_key("publisher", "ed25519", "");
        c.fleet.add_admin("publisher", &pub_line(&publisher));
        let sshd = Sshd::start_with(&[], Some(&pub_line(&publisher)));
        std::fs::copy(&sshd.known_hosts, c.fleet.path("keys/server_known_hosts")).unwrap();
        let toml = c.fleet.path("bento.toml");
        let base = std::fs::read_to_string(&toml).unwrap();
        let with_root = |root: &Path| format!("{base}[server]\nroot = \"{}\"\n", s(root));
        std::fs::write(&toml, with_root(&sshd.root)).unwrap();
        let setup = ok(&c.fleet.bento(&["server", "setup"]));
        apply_setup(&c.fleet.keys, &setup);
        let elsewhere = c.fleet.keys.join("not-the-server");
        std::fs::write(&toml, with_root(&elsewhere)).unwrap();
        c.server = sshd.root.clone();
        let agent = Agent::with(&c.fleet, &publisher);
        RemoteCached {
            c,
            sshd,
            agent,
            elsewhere,
        }
    }

    fn url(&self) -> String {
        format!("sftp://bento-publish@127.0.0.1:{}/", self.sshd.port)
    }

    /// `bento deploy --json --target URL` with the admin's agent and the private store.
    fn deploy(&self) -> Output {
        self.c
            .fleet
            .cmd(&["deploy", "--json", "--target", &self.url()])
            .env("NIX_CONFIG", self.c.store.config(""))
            .env("SSH_AUTH_SOCK", &self.agent.sock)
            .output()
            .unwrap()
    }

    /// Records web1's and db1's systems (sharing a path) and builds; returns them.
    fn systems(&self) -> [String; 3] {
        let store = &self.c.store;
        let lib = store.text("lib", "shared by both systems", &[]);
        let web = store.text("system-web1", "web1 uses", &[&lib]);
        let db = store.text("system-db1", "db1 uses", &[&lib]);
        self.c.system("web1", &web);
        self.c.system("db1", &db);
        ok(&self.c.bento(&["build"]));
        [lib, web, db]
    }
}

/// Runs, as root, the lines of the shell form of `bento server setup` that lay out the
/// root (the hosts' generations/ and own caches, and the cache), in a mount namespace
/// where the publishing account exists (nothing added to the machine).
fn apply_setup(scratch: &Path, setup: &str) {
    let other = &setup[setup.find("### Other Linux servers").unwrap()..];
    let lines: Vec<&str> = other
        .lines()
        .filter(|l| l.contains("/generations") || l.contains("/cache"))
        .collect();
    assert_eq!(lines.len(), 7, "{other}");
    ok(&crate::remote::with_publishing_account(scratch, &lines));
}

fn reports_of(out: &Output) -> BTreeMap<String, Value> {
    let v: Value = serde_json::from_str(&ok(out)).unwrap();
    v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["host"].as_str().unwrap().to_owned(), h.clone()))
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn narinfo(cache: &Path, path: &str) -> PathBuf {
    cache.join(format!(
        "{}.narinfo",
        &path.trim_start_matches("/nix/store/")[..32]
    ))
}

#[test]
fn deploy_to_a_remote_target_fills_its_signed_cache_over_sftp_and_never_twice() {
    if !crate::harness::needs_root("a real sshd with chroots under /srv, in a private mount namespace") {
        return;
    }
    let r = RemoteCached::new();
    let c = &r.c;
    let cache = c.cache();
    // What `bento server setup` made: the cache the publishing account's, readable by all.
    for dir in [&cache, &cache.join("nar")] {
        let meta = std::fs::symlink_metadata(dir).unwrap();
        assert!(meta.is_dir());
        assert_eq!((meta.uid(), meta.mode() & 0o777), (PUBLISH_UID, 0o755));
    }
    let [lib, web, db] = r.systems();

    let out = r.deploy();
    let reports = reports_of(&out);
    assert_eq!(
        copied(&reports, "web1") + copied(&reports, "db1"),
        3,
        "{reports:?}"
    );
    let shown = format!("{}cache", r.url());
    assert!(
        stderr(&out).contains(&format!("binary cache {shown}: 3 store paths added")),
        "{}",
        stderr(&out)
    );
    // On the server, written by the publishing account, 0644 for the web server, no temp
    // file left; nothing under the local server.root.
    assert!(cache.join("nix-cache-info").is_file());
    for path in [&lib, &web, &db] {
        assert!(narinfo(&cache, path).is_file(), "{path}");
    }
    let written = files(&cache);
    assert!(written.len() >= 7, "{written:?}");
    for file in written.keys() {
        let meta = std::fs::symlink_metadata(file).unwrap();
        assert!(meta.is_file(), "{}", file.display());
        assert_eq!(
            (meta.uid(), meta.mode() & 0o777),
            (PUBLISH_UID, 0o644),
            "{}",
            file.display()
        );
        let name = file.file_name().unwrap().to_string_lossy();
        assert!(!name.starts_with('.'), "temp file left: {name}");
    }
    assert!(!r.elsewhere.exists());
    // The hosts' generations went over the same connection.
    for host in ["web1", "db1"] {
        let current = r.sshd.root.join(host).join("generations/current");
        assert_eq!(std::fs::read_to_string(current).unwrap(), "1\n");
    }

    // The server's cache verifies with the key's public half, and not with another key.
    ok(&c.verify(&c.public, &[&web, &db, &lib]));
    let other = "bento-test-1:wS2SGiAuzmxcbLjWVK8BkBc4rcd+IQKjmFk83l2yVxU=";
    assert!(!c.verify(other, &[&web]).status.success());

    // Deployed again, unchanged: nothing uploaded to the cache, no file of it replaced.
    let out = r.deploy();
    let reports = reports_of(&out);
    assert_eq!(copied(&reports, "web1") + copied(&reports, "db1"), 0);
    assert!(
        stderr(&out).contains(&format!("binary cache {shown}: 0 store paths added")),
        "{}",
        stderr(&out)
    );
    assert_eq!(files(&cache), written);

    // A new system for web1 sharing `lib`: only its own path goes up; the rest is left.
    let web2 = c.store.text("system-web1", "web1 v2 uses", &[&lib]);
    c.system("web1", &web2);
    crate::cache::write(&c.fleet.path("hosts/web1/extra.nix"), "{ }\n");
    ok(&c.bento(&["build"]));
    // Temp files an upload cut short left on the server go with the next deploy that
    // lists their directory.
    let left = [
        cache.join(".abc.narinfo.4242.7.tmp"),
        cache.join("nar/.def.nar.xz.4242.8.tmp"),
    ];
    for path in &left {
        crate::cache::write(path, "partial");
        std::os::unix::fs::chown(path, Some(PUBLISH_UID), Some(PUBLISH_UID)).unwrap();
    }
    let reports = reports_of(&r.deploy());
    for path in &left {
        assert!(!path.exists(), "{} left", path.display());
    }
    assert_eq!((copied(&reports, "web1"), copied(&reports, "db1")), (1, 0));
    let after = files(&cache);
    for (path, id) in &written {
        assert_eq!(after.get(path), Some(id), "{} rewritten", path.display());
    }
    assert_eq!(after.len(), written.len() + 2, "one narinfo and one nar more");
    ok(&c.verify(&c.public, &[&web2]));
}

#[test]
fn a_remote_cache_dir_that_is_a_link_or_missing_is_refused_and_a_planted_file_link_replaced() {
    if !crate::harness::needs_root("a real sshd with chroots under /srv, in a private mount namespace") {
        return;
    }
    let r = RemoteCached::new();
    let c = &r.c;
    let cache = c.cache();
    let [_, web, _] = r.systems();
    let outside = tempfile::tempdir().unwrap();
    let published = || r.sshd.root.join("web1/generations/current").exists();

    // cache/nar a link (the publishing account owns cache/, so it could plant one): refused
    // before anything is published, nothing written where it points.
    std::fs::remove_dir(cache.join("nar")).unwrap();
    std::os::unix::fs::symlink(outside.path(), cache.join("nar")).unwrap();
    let e = fails(&r.deploy());
    assert!(
        e.contains(&format!("{}cache/nar", r.url())) && e.contains("symlink"),
        "{e}"
    );
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    assert!(!published());

    // No cache/ at all: the account cannot create it in root's root; setup is named.
    std::fs::remove_file(cache.join("nar")).unwrap();
    std::fs::remove_dir(&cache).unwrap();
    let e = fails(&r.deploy());
    assert!(
        e.contains(&format!("{}cache", r.url())) && e.contains("bento server setup"),
        "{e}"
    );
    assert!(!cache.exists() && !published());

    // Made again as setup makes it, with a link planted at a .narinfo's name: replaced
    // by the real file, its target left alone.
    for dir in [&cache, &cache.join("nar")] {
        std::fs::create_dir(dir).unwrap();
        std::os::unix::fs::chown(dir, Some(PUBLISH_UID), Some(PUBLISH_UID)).unwrap();
    }
    let target = outside.path().join("keep");
    std::fs::write(&target, "keep").unwrap();
    std::os::unix::fs::symlink(&target, narinfo(&cache, &web)).unwrap();
    let reports = reports_of(&r.deploy());
    assert_eq!(
        copied(&reports, "web1") + copied(&reports, "db1"),
        3,
        "{reports:?}"
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    assert!(std::fs::symlink_metadata(narinfo(&cache, &web))
        .unwrap()
        .is_file());
    assert!(published());
    ok(&c.verify(&c.public, &[&web]));
}
