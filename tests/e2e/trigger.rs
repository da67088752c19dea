//! `bento trigger`: the unix socket (mode, group, peer credentials), its client, TCP only
//! when opted in, and the socket-activated (`--inetd`) form. Unprivileged clients run as
//! uid/gid 65534 through `setpriv` (no user is added to the machine).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Output, Stdio};

use crate::agent::Loop;
use crate::harness::{fails, ok, require, s};

/// A running `bento trigger --listen`; killed when dropped.
pub(crate) struct Listener {
    child: Child,
    stderr: BufReader<ChildStderr>,
}

impl Listener {
    /// Starts it with `l`'s agent.toml; returns once it says it listens.
    pub(crate) fn start(l: &Loop) -> Listener {
        let mut child = l
            .fleet
            .cmd(&["trigger", "--listen", "--config", s(&l.config)])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        stderr.read_line(&mut first).unwrap();
        assert!(first.contains("trigger listening on"), "{first}");
        Listener { child, stderr }
    }

    /// Stops it; returns what it logged after starting.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut rest = String::new();
        let _ = self.stderr.read_to_string(&mut rest);
        rest
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn require_root() {
    let uid = Command::new("id").arg("-u").output().expect("id");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "the trigger tests check socket owners and run clients as another user: run them as root"
    );
    require("setpriv");
}

/// A deployed loop whose agent.toml puts the trigger socket in a directory any user may
/// traverse (the socket's own mode is what is tested), plus `extra` keys.
fn setup(extra: &str) -> (Loop, tempfile::TempDir, PathBuf) {
    require_root();
    let l = Loop::new();
    l.deploy();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("bento/trigger.sock");
    let text = std::fs::read_to_string(&l.config).unwrap();
    std::fs::write(
        &l.config,
        format!("{text}trigger_socket = \"{}\"\n{extra}", socket.display()),
    )
    .unwrap();
    (l, dir, socket)
}

/// `bento trigger --socket SOCKET` as uid/gid 65534 with `groups` as its supplementary
/// groups (`None`: none).
fn as_nobody(socket: &Path, groups: Option<u32>) -> Output {
    let groups = groups.map_or("--clear-groups".to_owned(), |g| format!("--groups={g}"));
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", &groups])
        .args([env!("CARGO_BIN_EXE_bento"), "trigger", "--socket", s(socket)])
        .current_dir("/")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn nothing_ran(l: &Loop) {
    assert_eq!(l.calls(), "", "no rebuild ran");
    assert!(!l.state.join("current").exists(), "no bundle installed");
}

fn group_id(name: &str) -> u32 {
    let out = Command::new("getent").args(["group", name]).output().unwrap();
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    line.split(':')
        .nth(2)
        .and_then(|g| g.parse().ok())
        .unwrap_or_else(|| panic!("this test needs group {name} on the machine: {line}"))
}

fn assert_applied(page: &str) {
    assert!(
        page.contains("web1: bundle generation 1 applied") && page.trim_end().ends_with("done"),
        "{page}"
    );
    assert!(
        page.contains("generation 1 active"),
        "the activation's output is streamed: {page}"
    );
}

#[test]
fn the_socket_is_root_only_by_default_and_checks_its_peer() {
    if !crate::harness::needs_root("checks socket owners and runs clients as another user") {
        return;
    }
    let (l, _dir, socket) = setup("");
    let listener = Listener::start(&l);
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!((meta.mode() & 0o7777, meta.uid(), meta.gid()), (0o600, 0, 0));
    // Another user cannot even connect...
    let err = fails(&as_nobody(&socket, None));
    assert!(err.contains("permission denied"), "{err}");
    nothing_ran(&l);
    // ...and were the socket's mode widened by mistake, its credentials are still checked.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let err = fails(&as_nobody(&socket, None));
    assert!(
        err.starts_with("error: the trigger refused: uid 65534 (pid ")
            && err.ends_with("is not root (no trigger_group is set)"),
        "{err}"
    );
    nothing_ran(&l);
    // Root's run works, streamed to the client.
    let page = ok(&l.fleet.bento(&["trigger", "--socket", s(&socket)]));
    assert_applied(&page);
    let log = listener.stop();
    let refusals: Vec<&str> = log.lines().filter(|l| l.contains("refused")).collect();
    assert_eq!(refusals.len(), 1, "{log}");
    assert!(
        refusals[0].starts_with("warning: trigger refused: uid 65534"),
        "{log}"
    );
}

#[test]
fn a_trigger_group_gets_a_0660_socket_and_only_its_members_in() {
    if !crate::harness::needs_root("checks socket owners and runs clients as another user") {
        return;
    }
    let adm = group_id("adm");
    let (l, _dir, socket) = setup("trigger_group = \"adm\"\n");
    let listener = Listener::start(&l);
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert_eq!((meta.mode() & 0o7777, meta.uid(), meta.gid()), (0o660, 0, adm));
    let err = fails(&as_nobody(&socket, None));
    assert!(err.contains("permission denied"), "{err}");
    nothing_ran(&l);
    // A member (here through its supplementary groups) may start a run.
    let page = ok(&as_nobody(&socket, Some(adm)));
    assert_applied(&page);
    drop(listener);
}

#[test]
fn tcp_only_when_opted_in() {
    if !crate::harness::needs_root("checks socket owners and runs clients as another user") {
        return;
    }
    let (l, _dir, socket) = setup("");
    let listener = Listener::start(&l);
    let refused = std::net::TcpStream::connect("127.0.0.1:51337")
        .map(|_| ())
        .map_err(|e| e.kind());
    assert_eq!(
        refused,
        Err(std::io::ErrorKind::ConnectionRefused),
        "nothing listens on TCP without trigger_tcp"
    );
    nothing_ran(&l);
    drop(listener);
    std::fs::remove_file(&socket).unwrap();
    let text = std::fs::read_to_string(&l.config).unwrap();
    std::fs::write(&l.config, format!("{text}trigger_tcp = true\n")).unwrap();
    let listener = Listener::start(&l);
    let mut conn = std::net::TcpStream::connect("127.0.0.1:51337").unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut page = String::new();
    conn.read_to_string(&mut page).unwrap();
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert_applied(&page);
    drop(listener);
}

#[test]
fn inetd_mode_checks_its_stdin_socket() {
    if !crate::harness::needs_root("checks socket owners and runs clients as another user") {
        return;
    }
    let (l, _dir, _socket) = setup("");
    // Not a socket at all (no credentials to check): refused, no run.
    let out = l.fleet.bento_stdin(
        &["trigger", "--inetd", "--config", s(&l.config)],
        b"GET / HTTP/1.1\r\n\r\n",
    );
    let err = fails(&out);
    assert_eq!(err, "error: trigger refused: the connection is not a socket");
    nothing_ran(&l);
    // A unix socket whose peer is root (as systemd hands over with Accept=yes): the run
    // streams as a plain-text page.
    let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let child = l
        .fleet
        .cmd(&["trigger", "--inetd", "--config", s(&l.config)])
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    ours.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut page = String::new();
    ours.read_to_string(&mut page).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(
        page.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/plain"),
        "{page}"
    );
    assert_applied(&page);
}
