//! A local (non-root) user on a host is hostile: the directories they own, the files they
//! can open, the sockets they reach. What activation and the agent (both root) do about
//! it: `path` links only through root's directories, the run lock out of their reach, a
//! trigger client that cannot stall or stop a run, bounded trigger connections, and a
//! silent server retried rather than given up on. Users are uid 65534 through `setpriv`
//! (no user is added to the machine); root's own trees live in a fresh dir under /srv,
//! removed at the end.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::activate::{in_namespace, text};
use crate::agent::Loop;
use crate::harness::{fails, needs_root, ok, require, s};

/// The user: uid and gid 65534.
const NOBODY: u32 = 65534;

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs `cmd`, killed (and the test failed) past `limit`: a regression that hangs fails.
fn within(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn agent_cmd(l: &Loop) -> Command {
    l.fleet.cmd(&["agent", "--once", "--config", s(&l.config)])
}

fn append_config(l: &Loop, extra: &str) {
    let text = std::fs::read_to_string(&l.config).unwrap();
    std::fs::write(&l.config, format!("{text}{extra}")).unwrap();
}

// ---- `path` links ---------------------------------------------------------------------

/// A deployed fleet whose secrets have `path`s below `base`, a tree only root can write
/// (outside /tmp): `home/u` is the user's, `etc/` root's with `etc/app` a link to
/// `rootonly/`, a directory only root may read.
struct Links {
    _tree: tempfile::TempDir,
    base: PathBuf,
    l: Loop,
    bundle: PathBuf,
    root: PathBuf,
}

impl Links {
    fn new() -> Links {
        let tree = tempfile::Builder::new()
            .prefix("bento-local-user-")
            .tempdir_in("/srv")
            .unwrap();
        chmod(tree.path(), 0o755);
        let base = tree.path().to_path_buf();
        let ssh = base.join("home/u/.ssh");
        std::fs::create_dir_all(&ssh).unwrap();
        for d in [base.join("home/u"), ssh] {
            std::os::unix::fs::lchown(&d, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        std::fs::create_dir(base.join("rootonly")).unwrap();
        chmod(&base.join("rootonly"), 0o700);
        std::fs::create_dir_all(base.join("etc/ok")).unwrap();
        std::os::unix::fs::symlink(base.join("rootonly"), base.join("etc/app")).unwrap();
        let l = Loop::new();
        l.fleet.rules(&format!(
            r#"admins = ["alice"]

[groups]
web = ["web1"]

[secrets.db-password]
recipients = ["@web", "db1", "bob"]
path = "{b}/etc/app/db-password"

[secrets.web-only]
recipients = ["@web"]
path = "{b}/home/u/.ssh/id_ed25519"

[secrets.tls]
recipients = ["web1"]
armor = true
path = "{b}/etc/ok/tls"
"#,
            b = base.display()
        ));
        l.deploy();
        let bundle = l.server.join("web1/generations/1");
        let root = l.fleet.home.join("run");
        Links {
            _tree: tree,
            base,
            l,
            bundle,
            root,
        }
    }

    /// `bento activate` of the bundle, with its ramfs, in a private mount namespace.
    fn activate(&self) -> String {
        let script = format!(
            "$BENTO activate --bundle {} -i {} --root {} --no-restart",
            self.bundle.display(),
            s(&self.l.keys.web1),
            self.root.display()
        );
        text(&in_namespace(&self.l.fleet, &self.l.fleet.home, &script))
    }

    fn refusals_and_rest(&self, t: &str) {
        let b = self.base.display();
        assert!(
            t.contains(&format!(
                "symlink {b}/home/u/.ssh/id_ed25519: {b}/home/u is owned by uid 65534, not root: \
                 another user could swap what lies below it"
            )),
            "{t}"
        );
        assert!(
            t.contains(&format!(
                "symlink {b}/etc/app/db-password: {b}/etc/app is a symlink; a `path` is placed only \
                 through real directories"
            )),
            "{t}"
        );
        // The other secret's link is placed.
        assert_eq!(
            std::fs::read_link(self.base.join("etc/ok/tls")).unwrap(),
            self.root.join("secrets/tls"),
            "{t}"
        );
        self.nothing_outside(t);
    }

    fn nothing_outside(&self, t: &str) {
        let inside: Vec<_> = std::fs::read_dir(self.base.join("rootonly"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            inside.is_empty(),
            "written into a root-only directory: {inside:?}: {t}"
        );
    }
}

#[test]
fn a_path_through_a_users_directory_or_a_link_is_refused_and_the_rest_activates() {
    if !needs_root("mounts RAM filesystems, owns directories as another user") {
        return;
    }
    require("unshare");
    let x = Links::new();
    // The user turns `.ssh` into a link to a directory only root may read.
    let home = x.base.join("home/u");
    std::fs::rename(home.join(".ssh"), home.join(".ssh-real")).unwrap();
    std::os::unix::fs::symlink(x.base.join("rootonly"), home.join(".ssh")).unwrap();
    let t = x.activate();
    x.refusals_and_rest(&t);
    // As a real directory, theirs all the same: refused too.
    std::fs::remove_file(home.join(".ssh")).unwrap();
    std::fs::rename(home.join(".ssh-real"), home.join(".ssh")).unwrap();
    let t = x.activate();
    x.refusals_and_rest(&t);
    assert!(!home.join(".ssh/id_ed25519").exists(), "{t}");
}

#[test]
fn a_user_swapping_their_directory_during_activations_never_gets_a_file_written_outside() {
    if !needs_root("mounts RAM filesystems, owns directories as another user") {
        return;
    }
    require("unshare");
    let x = Links::new();
    let home = x.base.join("home/u");
    std::os::unix::fs::symlink(x.base.join("rootonly"), home.join(".ssh-link")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // The user flips `.ssh` between their directory and a link to root's, with seeded
    // pauses, as fast as renames go, for as long as the activations run (bounded).
    let swapper = {
        let (stop, home) = (stop.clone(), home.clone());
        std::thread::spawn(move || {
            let mut seed: u64 = 0x5eed_0001;
            let mut pause = || {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                std::thread::sleep(Duration::from_micros((seed >> 33) % 300));
            };
            let mut flips = 0u32;
            while !stop.load(Ordering::SeqCst) && flips < 1_000_000 {
                std::fs::rename(home.join(".ssh"), home.join(".ssh-real")).unwrap();
                std::fs::rename(home.join(".ssh-link"), home.join(".ssh")).unwrap();
                pause();
                std::fs::rename(home.join(".ssh"), home.join(".ssh-link")).unwrap();
                std::fs::rename(home.join(".ssh-real"), home.join(".ssh")).unwrap();
                pause();
                flips += 1;
            }
            flips
        })
    };
    for _ in 0..12 {
        let t = x.activate();
        x.nothing_outside(&t);
        assert!(t.contains("home/u is owned by uid 65534, not root"), "{t}");
    }
    stop.store(true, Ordering::SeqCst);
    assert!(swapper.join().unwrap() > 0);
}

// ---- the run lock and the state dir ----------------------------------------------------

/// Holds a flock on `path` (shared, or exclusive) in a process of its own, as `uid` when
/// given; returns once it is held. Killed when the test is done with it.
fn hold_lock(path: &Path, uid: Option<u32>, exclusive: bool) -> Child {
    let script = format!(
        "exec 9<{}; flock {} 9; echo held; exec sleep 120",
        path.display(),
        if exclusive { "-x" } else { "-s" }
    );
    let mut cmd = match uid {
        Some(uid) => {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
                "sh",
                "-c",
                &script,
            ]);
            c
        }
        None => {
            let mut c = Command::new("sh");
            c.args(["-c", &script]);
            c
        }
    };
    let mut child = cmd.current_dir("/").stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "held");
    child
}

#[test]
fn a_user_holding_an_old_lock_file_does_not_stop_the_agent_and_the_state_dir_closes() {
    if !needs_root("opens the lock as another user") {
        return;
    }
    require("setpriv");
    require("flock");
    let l = Loop::new();
    l.deploy();
    // An install of an older version: state dir, bundles/ and outbox/ 0755, lock 0644,
    // reachable by any user.
    for d in [l.state.clone(), l.state.join("bundles"), l.state.join("outbox")] {
        std::fs::create_dir_all(&d).unwrap();
        chmod(&d, 0o755);
    }
    let lock = l.state.join("lock");
    std::fs::write(&lock, b"").unwrap();
    chmod(&lock, 0o644);
    for dir in l
        .state
        .ancestors()
        .skip(1)
        .take_while(|d| *d != std::env::temp_dir())
    {
        chmod(dir, mode(dir) | 0o011);
    }
    let mut user = hold_lock(&lock, Some(NOBODY), false);
    let out = within(agent_cmd(&l), Duration::from_secs(60));
    let _ = user.kill();
    let _ = user.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("web1: bundle generation 1 applied"), "{err}");
    for d in [l.state.clone(), l.state.join("bundles"), l.state.join("outbox")] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
    let meta = std::fs::symlink_metadata(&lock).unwrap();
    assert_eq!((meta.mode() & 0o7777, meta.uid()), (0o600, 0));
}

#[test]
fn a_lock_held_past_the_deadline_ends_the_run_with_one_line() {
    if !needs_root("the agent's state dir is root's") {
        return;
    }
    require("flock");
    let l = Loop::new();
    l.deploy();
    append_config(&l, "run_timeout = 3\n");
    std::fs::create_dir_all(&l.state).unwrap();
    chmod(&l.state, 0o700);
    let lock = l.state.join("lock");
    std::fs::write(&lock, b"").unwrap();
    chmod(&lock, 0o600);
    // Another run (root's) holds it.
    let mut other = hold_lock(&lock, None, true);
    let started = Instant::now();
    let out = within(agent_cmd(&l), Duration::from_secs(30));
    let took = started.elapsed();
    let _ = other.kill();
    let _ = other.wait();
    let err = fails(&out);
    assert!(
        err.contains(&format!(
            "locking {}: another run held it until this run's deadline (run_timeout = 3 s); \
             the next run tries again",
            lock.display()
        )),
        "{err}"
    );
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(15),
        "{took:?}"
    );
    assert_eq!(l.calls(), "", "nothing ran");
}

// ---- the trigger -----------------------------------------------------------------------

/// A deployed loop whose rebuild prints 3 MB (stdout and stderr) around the usual
/// stand-in (after `delay` seconds), then records that it finished; a trigger socket.
fn trigger_loop(delay: u32) -> (Loop, PathBuf) {
    let l = Loop::new();
    l.deploy();
    let inner = l.fleet.keys.join("nixos-rebuild");
    let noisy = l.fleet.script(
        "noisy-rebuild",
        &format!(
            "echo started >> {calls}.noisy\nsleep {delay}\n\
             head -c 1500000 /dev/zero | tr '\\0' x | fold -w 99\n\
             head -c 1500000 /dev/zero | tr '\\0' y | fold -w 99 >&2\n\
             {inner} \"$@\" || exit $?\necho finished >> {calls}.noisy",
            calls = l.calls.display(),
            inner = inner.display()
        ),
    );
    l.write_config(&format!("file://{}", l.server.display()), &noisy, None);
    let socket = l.fleet.home.join("trigger/trigger.sock");
    append_config(
        &l,
        &format!("trigger_socket = \"{}\"\nrun_timeout = 40\n", socket.display()),
    );
    (l, socket)
}

fn noisy_log(l: &Loop) -> String {
    std::fs::read_to_string(format!("{}.noisy", l.calls.display())).unwrap_or_default()
}

/// Waits (at most 60 s) for the run's report; returns its state.
fn report_state(l: &Loop) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(r) = l.reports().last() {
            return r["state"].as_str().unwrap_or_default().to_owned();
        }
        assert!(Instant::now() < deadline, "no report after 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn request(socket: &Path) -> UnixStream {
    let mut conn = UnixStream::connect(socket).unwrap();
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    conn
}

#[test]
fn a_trigger_client_that_hangs_up_at_once_does_not_stop_the_run() {
    if !needs_root("the trigger socket is root's") {
        return;
    }
    let (l, socket) = trigger_loop(0);
    let _listener = crate::trigger::Listener::start(&l);
    drop(request(&socket));
    assert_eq!(report_state(&l), "applied");
    assert_eq!(noisy_log(&l), "started\nfinished\n");
}

#[test]
fn a_trigger_client_that_never_reads_does_not_stall_the_run() {
    if !needs_root("the trigger socket is root's") {
        return;
    }
    let (l, socket) = trigger_loop(0);
    let _listener = crate::trigger::Listener::start(&l);
    let conn = request(&socket);
    let started = Instant::now();
    assert_eq!(report_state(&l), "applied");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(noisy_log(&l), "started\nfinished\n");
    drop(conn);
}

#[test]
fn trigger_connections_are_capped_and_a_silent_one_is_dropped_without_a_run() {
    if !needs_root("the trigger socket is root's") {
        return;
    }
    let (l, socket) = trigger_loop(0);
    let _listener = crate::trigger::Listener::start(&l);
    let started = Instant::now();
    let idle: Vec<UnixStream> = (0..8).map(|_| UnixStream::connect(&socket).unwrap()).collect();
    // The ninth is turned away at once.
    let mut ninth = request(&socket);
    let mut page = String::new();
    ninth.read_to_string(&mut page).unwrap();
    assert!(page.starts_with("HTTP/1.1 503"), "{page}");
    assert!(
        page.contains("refused: too many connections (at most 8)"),
        "{page}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    // The silent ones are dropped after the request deadline, without a run.
    for mut conn in idle {
        conn.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert_eq!(l.calls(), "", "no run");
    // Their slots are free again: a request runs.
    let page = ok(&l.fleet.bento(&["trigger", "--socket", s(&socket)]));
    assert!(page.contains("web1: bundle generation 1 applied"), "{page}");
}

#[test]
fn a_second_trigger_request_while_a_run_goes_on_is_refused() {
    if !needs_root("the trigger socket is root's") {
        return;
    }
    let (l, socket) = trigger_loop(3);
    let _listener = crate::trigger::Listener::start(&l);
    let page_file = l.fleet.home.join("first-page");
    let first = l
        .fleet
        .cmd(&["trigger", "--socket", s(&socket)])
        .stdout(std::fs::File::create(&page_file).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while noisy_log(&l).is_empty() {
        assert!(Instant::now() < deadline, "the first run did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = l.fleet.cmd(&["trigger", "--socket", s(&socket)]);
    let err = fails(&within(second, Duration::from_secs(20)));
    assert_eq!(
        err,
        "error: the trigger refused: a run is already in progress; try again when it ends"
    );
    let out = first.wait_with_output().unwrap();
    let page = std::fs::read_to_string(&page_file).unwrap();
    assert!(out.status.success(), "{page}");
    assert!(page.contains("web1: bundle generation 1 applied"), "{page}");
}

// ---- the connection ----------------------------------------------------------------------

#[test]
fn a_server_that_never_sends_its_banner_is_retried_until_the_deadline() {
    let l = Loop::new();
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    server.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // Accepts, and says nothing.
    let silent = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match server.accept() {
                    Ok((conn, _)) => held.push(conn),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            held.len()
        })
    };
    let known_hosts = l.fleet.home.join("known_hosts");
    std::fs::write(&known_hosts, "").unwrap();
    l.write_config(
        &format!("sftp://bento-web1@127.0.0.1:{port}"),
        &l.fleet.keys.join("nixos-rebuild"),
        Some(&known_hosts),
    );
    append_config(&l, "run_timeout = 9\n");
    let out = within(agent_cmd(&l), Duration::from_secs(60));
    stop.store(true, Ordering::SeqCst);
    let accepted = silent.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("retrying in"),
        "a banner timeout is a passing failure: {err}"
    );
    assert!(
        err.contains(
            "interrupted: the server was not reachable before the run's deadline (run_timeout = 9 s"
        ),
        "{err}"
    );
    assert!(accepted >= 2, "{accepted} connections: {err}");
}
