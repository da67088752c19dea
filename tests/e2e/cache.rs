//! `[cache] signing_key`: `bento deploy` fills `<root>/cache`, a signed Nix binary cache of
//! the hosts' built closures, checked with the real Nix: `nix store verify` with the
//! public key (and refused with another), a second, empty store substituting a closure
//! from the cache served over HTTP, and nothing copied twice. Every Nix store here is a
//! private one in a temp dir (`NIX_CONFIG` `store = DIR`), so nothing is left behind.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::Value;

use crate::harness::{fails, ok, pub_line, require, s, Fleet};

/// A private Nix store and the settings that point every Nix command at it.
pub(crate) struct Store {
    dir: tempfile::TempDir,
}

impl Store {
    pub(crate) fn new() -> Store {
        require("nix");
        Store {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// `NIX_CONFIG` for a command on this store, with `extra` settings.
    pub(crate) fn config(&self, extra: &str) -> String {
        format!(
            "store = {}\nbuild-users-group =\nsubstituters =\nexperimental-features = nix-command\n{extra}",
            self.root().display()
        )
    }

    /// A Nix command on this store (its caches in the temp dir too).
    fn cmd(&self, program: &str, extra: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("NIX_CONFIG", self.config(extra))
            .env("HOME", self.dir.path())
            .env("XDG_CACHE_HOME", self.dir.path().join("cache-home"));
        cmd
    }

    /// Adds to the store an input-addressed path (signatures matter for it, unlike
    /// for a content-addressed one) named `name`: a file holding `text`, then the
    /// paths `refs` (its references). Imported from a `nix-store --export` stream made
    /// here: builds in a store under a temp dir cannot run `/bin/sh`. Returns its path.
    pub(crate) fn text(&self, name: &str, text: &str, refs: &[&str]) -> String {
        let content: String = std::iter::once(text.to_owned())
            .chain(refs.iter().map(|r| format!(" {r}")))
            .collect();
        let path = format!("/nix/store/{}-{name}", fake_hash(&content));
        let mut stream = Vec::new();
        stream.extend(1u64.to_le_bytes());
        for field in ["nix-archive-1", "(", "type", "regular", "contents"] {
            nix_string(&mut stream, field.as_bytes());
        }
        nix_string(&mut stream, content.as_bytes());
        nix_string(&mut stream, b")");
        stream.extend(0x4558_494e_u64.to_le_bytes());
        nix_string(&mut stream, path.as_bytes());
        stream.extend((refs.len() as u64).to_le_bytes());
        for r in refs {
            nix_string(&mut stream, r.as_bytes());
        }
        nix_string(&mut stream, b"");
        stream.extend(0u64.to_le_bytes());
        stream.extend(0u64.to_le_bytes());
        let mut child = self
            .cmd("nix-store", "")
            .arg("--import")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&stream).unwrap();
        ok(&child.wait_with_output().unwrap());
        path
    }

    /// Whether `path` is in this store, on disk.
    fn has(&self, path: &str) -> bool {
        self.root().join(path.trim_start_matches('/')).exists()
    }
}

/// A fleet with hosts web1 and db1 whose fake build prints the system written in
/// `<keys>/<host>.system`, a cache key, and a server root.
pub(crate) struct Cached {
    pub(crate) fleet: Fleet,
    pub(crate) store: Store,
    pub(crate) server: PathBuf,
    pub(crate) public: String,
}

impl Cached {
    pub(crate) fn new() -> Cached {
        let fleet = Fleet::new();
        let store = Store::new();
        for host in ["web1", "db1"] {
            let key = fleet.ssh_key(host, "ed25519", "");
            fleet.add_host(host, &key);
            write(
                &fleet.path(&format!("hosts/{host}/configuration.nix")),
                &format!("{{ networking.hostName = \"{host}\"; }}\n"),
            );
        }
        let admin = fleet.ssh_key("admin", "ed25519", "");
        fleet.add_admin("admin", &pub_line(&admin));
        let keys = fleet.keys.clone();
        let build = fleet.script(
            "fake-rebuild",
            &format!(
                "for h in web1 db1; do case \"$*\" in *hosts/$h/*) cat {keys}/$h.system;; esac; done",
                keys = s(&keys)
            ),
        );
        let out = store
            .cmd("nix-store", "")
            .arg("--generate-binary-cache-key")
            .arg("bento-test-1")
            .arg(keys.join("cache.sec"))
            .arg(keys.join("cache.pub"))
            .output()
            .unwrap();
        ok(&out);
        let public = std::fs::read_to_string(keys.join("cache.pub")).unwrap();
        write(
            &fleet.path("bento.toml"),
            &format!(
                "[deploy]\nsigning_key = \"{}\"\n[build]\ncommand = \"{} build\"\n\
                 [cache]\nsigning_key = \"{}\"\ncompression = \"xz\"\n",
                s(&admin),
                s(&build),
                s(&keys.join("cache.sec"))
            ),
        );
        let server = fleet.home.parent().unwrap().join("server");
        Cached {
            fleet,
            store,
            server,
            public: public.trim().to_owned(),
        }
    }

    /// Records `system` as what building `host` gives.
    pub(crate) fn system(&self, host: &str, system: &str) {
        write(
            &self.fleet.keys.join(format!("{host}.system")),
            &format!("{system}\n"),
        );
    }

    pub(crate) fn bento(&self, args: &[&str]) -> Output {
        self.fleet
            .cmd(args)
            .env("NIX_CONFIG", self.store.config(""))
            .output()
            .unwrap()
    }

    /// `bento build`, then `bento deploy --json`: host → its report.
    fn build_and_deploy(&self) -> BTreeMap<String, Value> {
        ok(&self.bento(&["build"]));
        self.deploy()
    }

    fn deploy(&self) -> BTreeMap<String, Value> {
        let out = ok(&self.bento(&["deploy", "--json", "--server-root", s(&self.server)]));
        let v: Value = serde_json::from_str(&out).unwrap();
        v["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h["host"].as_str().unwrap().to_owned(), h.clone()))
            .collect()
    }

    pub(crate) fn cache(&self) -> PathBuf {
        self.server.join("cache")
    }

    /// `nix store verify` of `paths` in the cache, trusting `key` only.
    pub(crate) fn verify(&self, key: &str, paths: &[&str]) -> Output {
        let url = format!("file://{}", self.cache().display());
        self.store
            .cmd("nix", "")
            .args(["store", "verify", "--store", &url, "--trusted-public-keys", key])
            .args(["--sigs-needed", "1"])
            .args(paths)
            .output()
            .unwrap()
    }
}

/// A string of the Nix wire format: length, bytes, zero padding to 8.
fn nix_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend((bytes.len() as u64).to_le_bytes());
    out.extend(bytes);
    out.resize(out.len().next_multiple_of(8), 0);
}

/// 32 characters of Nix base-32 derived from `seed`.
fn fake_hash(seed: &str) -> String {
    use std::hash::{Hash, Hasher};
    const ALPHABET: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    (0..32u64)
        .map(|i| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (seed, i).hash(&mut h);
            char::from(ALPHABET[(h.finish() % 32) as usize])
        })
        .collect()
}

pub(crate) fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

pub(crate) fn copied(reports: &BTreeMap<String, Value>, host: &str) -> u64 {
    reports[host]["cache"]["copied"].as_u64().unwrap()
}

/// Every file under `dir` with its inode and modification time.
pub(crate) fn files(dir: &Path) -> BTreeMap<PathBuf, (u64, i64, i64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path(), (meta.ino(), meta.mtime(), meta.mtime_nsec()));
            }
        }
    }
    out
}

/// A static file server on 127.0.0.1 for the cache, in a thread of the test: HTTP/1.0,
/// GET and HEAD, one request per connection. Stopped (and joined) on drop.
struct Http {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Http {
    fn serve(dir: PathBuf) -> Http {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let _ = answer(&dir, conn);
                }
            }
        });
        Http {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(dir: &Path, mut conn: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let mut words = request.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or("/"));
    let rel = path.trim_start_matches('/');
    let file = (!rel.split('/').any(|c| c == ".." || c.is_empty()))
        .then(|| std::fs::read(dir.join(rel)).ok())
        .flatten();
    match file {
        Some(body) => {
            write!(
                conn,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            if method == "GET" {
                conn.write_all(&body)?;
            }
        }
        None => write!(
            conn,
            "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?,
    }
    conn.flush()
}

#[test]
fn deploy_fills_a_signed_cache_that_an_empty_store_substitutes_over_http() {
    let c = Cached::new();
    let lib = c.store.text("lib", "shared by both systems", &[]);
    let web = c.store.text("system-web1", "web1 uses", &[&lib]);
    let db = c.store.text("system-db1", "db1 uses", &[&lib]);
    c.system("web1", &web);
    c.system("db1", &db);

    let reports = c.build_and_deploy();
    // Three paths in all; the shared one is counted once.
    assert_eq!(
        copied(&reports, "web1") + copied(&reports, "db1"),
        3,
        "{reports:?}"
    );
    assert!(c.cache().join("nix-cache-info").is_file());
    let hash = |p: &str| p.trim_start_matches("/nix/store/")[..32].to_owned();
    for path in [&lib, &web, &db] {
        assert!(
            c.cache().join(format!("{}.narinfo", hash(path))).is_file(),
            "{path}"
        );
    }
    assert!(std::fs::read_dir(c.cache().join("nar")).unwrap().count() >= 3);
    // No staging dir left in the fleet.
    let left: Vec<_> = std::fs::read_dir(c.fleet.path(".bento"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".gitignore" && n != "expected.json" && n != "build")
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // Signed by the key: verified with its public half, refused with another key.
    ok(&c.verify(&c.public, &[&web, &db, &lib]));
    let other = "bento-test-1:wS2SGiAuzmxcbLjWVK8BkBc4rcd+IQKjmFk83l2yVxU=";
    let refused = c.verify(other, &[&web]);
    assert!(!refused.status.success(), "verified with another key");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("untrusted"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // A second, empty store substitutes web1's closure from the cache over HTTP; not
    // without trusting the key.
    let http = Http::serve(c.cache());
    let second = Store::new();
    let substitute = |key: &str| {
        second
            .cmd(
                "nix-store",
                &format!("substituters = {}\ntrusted-public-keys = {key}\n", http.url()),
            )
            .args(["--realise", &web])
            .output()
            .unwrap()
    };
    let out = substitute(other);
    assert!(!out.status.success(), "substituted from an untrusted cache");
    assert!(!second.has(&web));
    ok(&substitute(&c.public));
    assert!(second.has(&web) && second.has(&lib));
    assert!(!second.has(&db));
    let text = std::fs::read_to_string(second.root().join(web.trim_start_matches('/'))).unwrap();
    assert_eq!(text, format!("web1 uses {lib}"));
    assert!(second.has(&lib));
    let refs = second
        .cmd("nix-store", "")
        .args(["--query", "--references", &web])
        .output()
        .unwrap();
    assert!(ok(&refs).contains(&lib));
}

#[test]
fn a_closure_in_the_cache_is_never_copied_again() {
    let c = Cached::new();
    let lib = c.store.text("lib", "shared", &[]);
    let web = c.store.text("system-web1", "web1 v1 uses", &[&lib]);
    let db = c.store.text("system-db1", "db1 uses", &[&lib]);
    c.system("web1", &web);
    c.system("db1", &db);
    c.build_and_deploy();
    let before = files(&c.cache());
    assert!(before.len() >= 7, "{before:?}");

    // Nothing changed: nothing copied, no file of the cache rewritten.
    let reports = c.deploy();
    assert_eq!(copied(&reports, "web1") + copied(&reports, "db1"), 0);
    assert_eq!(files(&c.cache()), before);

    // web1's configuration changes (a new generation) but builds the same system: its
    // closure is in the cache, nothing is copied.
    write(&c.fleet.path("hosts/web1/extra.nix"), "{ }\n");
    let reports = c.build_and_deploy();
    assert_eq!(reports["web1"]["changed"], true);
    assert_eq!(copied(&reports, "web1"), 0);
    assert_eq!(files(&c.cache()), before);

    // A new system for web1 that shares `lib`: only its own path is copied, every file
    // already there is left as it was.
    let web2 = c.store.text("system-web1", "web1 v2 uses", &[&lib]);
    c.system("web1", &web2);
    write(&c.fleet.path("hosts/web1/extra.nix"), "{ v = 2; }\n");
    // A staging dir left by a deploy that was killed goes with the next copy.
    let stale = c.fleet.path(".bento/bento-edit.999999999.1.cache.left");
    write(&stale.join("nar/x.nar.xz"), "partial");
    // Temp files of uploads a killed deploy left in the cache go too. A link planted
    // under such a name is not a file of the cache: left as it is, never followed.
    let cache = c.cache();
    let left_top = cache.join(".abc.narinfo.4242.7.tmp");
    let left_nar = cache.join("nar/.def.nar.xz.4242.8.tmp");
    write(&left_top, "partial");
    write(&left_nar, "partial");
    let outside = c.fleet.home.join("outside");
    write(&outside, "keep");
    let left_link = cache.join("nar/.ghi.nar.xz.4242.9.tmp");
    std::os::unix::fs::symlink(&outside, &left_link).unwrap();
    let reports = c.build_and_deploy();
    assert!(!stale.exists());
    for left in [&left_top, &left_nar] {
        assert!(
            std::fs::symlink_metadata(left).is_err(),
            "{} left",
            left.display()
        );
    }
    assert!(std::fs::symlink_metadata(&left_link).unwrap().is_symlink());
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep");
    std::fs::remove_file(&left_link).unwrap();
    assert_eq!(copied(&reports, "web1"), 1);
    assert_eq!(copied(&reports, "db1"), 0);
    let after = files(&c.cache());
    for (path, id) in &before {
        assert_eq!(after.get(path), Some(id), "{} rewritten", path.display());
    }
    assert_eq!(after.len(), before.len() + 2, "one narinfo and one nar more");
    ok(&c.verify(&c.public, &[&web2]));
}

#[test]
fn a_bad_key_or_a_missing_system_stops_the_deploy_and_a_host_without_build_is_named() {
    let c = Cached::new();
    let web = c.store.text("system-web1", "web1", &[]);
    c.system("web1", &web);
    c.system("db1", &c.store.text("system-db1", "db1", &[]));
    ok(&c.bento(&["build"]));
    let deploy = || c.bento(&["deploy", "--server-root", s(&c.server)]);
    let key = c.fleet.keys.join("cache.sec");
    let good = std::fs::read(&key).unwrap();

    // A malformed key, then a missing one: one error each, nothing published.
    std::fs::write(&key, "bento-test-1:bm90IGEga2V5").unwrap();
    let e = fails(&deploy());
    assert!(
        e.contains("cache.signing_key") && e.contains("not a Nix binary cache secret key"),
        "{e}"
    );
    std::fs::remove_file(&key).unwrap();
    let e = fails(&deploy());
    assert!(
        e.contains("cache.signing_key") && e.contains("nix-store --generate-binary-cache-key"),
        "{e}"
    );
    assert!(!c.server.join("web1/current").exists());
    std::fs::write(&key, good).unwrap();

    // A recorded system that is no longer in the local store (garbage-collected).
    let gone = format!("/nix/store/{}-system-web1", "0".repeat(32));
    c.system("web1", &gone);
    ok(&c.bento(&["build", "web1"]));
    let e = fails(&deploy());
    assert!(
        e.contains("host web1") && e.contains(&gone) && e.contains("bento build web1"),
        "{e}"
    );
    assert!(!c.server.join("web1/current").exists());
    assert!(!c.server.join("db1/current").exists());

    // A host without a recorded build is published, with a warning: its system is not
    // in the cache.
    std::fs::remove_file(c.fleet.path(".bento/expected.json")).unwrap();
    c.system("web1", &web);
    ok(&c.bento(&["build", "db1"]));
    let out = c.bento(&["deploy", "--json", "--server-root", s(&c.server)]);
    let reports: Value = serde_json::from_str(&ok(&out)).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: web1: no build recorded") && !stderr.contains("db1: no build"),
        "{stderr}"
    );
    assert!(c.server.join("web1/current").exists());
    let hosts = reports["hosts"].as_array().unwrap();
    let web1 = hosts.iter().find(|h| h["host"] == "web1").unwrap();
    let db1 = hosts.iter().find(|h| h["host"] == "db1").unwrap();
    assert!(web1["cache"]["skipped"]
        .as_str()
        .unwrap()
        .contains("bento build web1"));
    assert!(db1["cache"]["skipped"].is_null() && db1["cache"]["copied"] == 1);
}

#[test]
fn a_host_named_cache_is_refused_with_a_cache() {
    let c = Cached::new();
    let key = c.fleet.ssh_key("cache-host", "ed25519", "");
    c.fleet.add_host("cache", &key);
    write(&c.fleet.path("hosts/cache/configuration.nix"), "{ }\n");
    c.system("web1", &c.store.text("system-web1", "web1", &[]));
    c.system("db1", &c.store.text("system-db1", "db1", &[]));
    let e = fails(&c.bento(&["deploy", "--server-root", s(&c.server)]));
    assert!(e.contains("host cache") && e.contains("[cache]"), "{e}");
    assert!(!c.server.join("cache").exists(), "nothing written");
}
