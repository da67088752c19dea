//! A real OpenSSH server for the tests: listening on 127.0.0.1, one chrooted sftp-only
//! user per host, key authentication only.
//!
//! sshd runs inside a private mount namespace (`unshare --mount`) where `/etc/passwd`,
//! `/etc/group` and `/etc/shadow` are private copies holding the test users: nothing is
//! added to the machine, and killing sshd ends the namespace. The server root is a fresh
//! root-owned 0755 directory under `/srv`, since sshd refuses a chroot with a
//! world-writable parent such as `/tmp`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The uid (and gid) of the publishing account in the server's namespace.
pub const PUBLISH_UID: u32 = 64980;

/// A running sshd; killed when dropped.
pub struct Sshd {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The server root (`<root>/<host>` are the chroots).
    pub root: PathBuf,
    /// A known_hosts file pinning this server's key.
    pub known_hosts: PathBuf,
    /// Its sshd_config.
    pub config: PathBuf,
    _dir: tempfile::TempDir,
    _root_dir: tempfile::TempDir,
}

impl Sshd {
    /// Starts sshd with sftp users `(user, host, public key line)`; user U is chrooted
    /// in `<root>/<host>`.
    pub fn start(users: &[(&str, &str, &str)]) -> Sshd {
        Sshd::start_with(users, None)
    }

    /// As [`Sshd::start`], plus the publishing account of `bento server setup`
    /// (`bento-publish`, uid and gid [`PUBLISH_UID`], chrooted to the root) with key
    /// `publish_key`.
    pub fn start_with(users: &[(&str, &str, &str)], publish_key: Option<&str>) -> Sshd {
        crate::harness::require("unshare");
        assert!(
            Path::new("/usr/sbin/sshd").exists(),
            "these tests need sshd (Debian: openssh-server)"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all("/srv").unwrap();
        let root_dir = tempfile::Builder::new()
            .prefix("bento-test-")
            .tempdir_in("/srv")
            .unwrap();
        let root = root_dir.path().to_path_buf();
        chmod(&root, "0755");
        let d = dir.path();
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(d.join("host_key"))
            .output()
            .unwrap();
        assert!(out.status.success());

        let mut passwd = std::fs::read_to_string("/etc/passwd").unwrap();
        let mut group = std::fs::read_to_string("/etc/group").unwrap();
        let mut shadow = std::fs::read_to_string("/etc/shadow").unwrap_or_default();
        group.push_str("bentosftp:x:64990:\n");
        let keys = d.join("authorized_keys");
        std::fs::create_dir_all(&keys).unwrap();
        let mut matches = String::new();
        if let Some(key) = publish_key {
            let user = bento_deploy::fleet::server::PUBLISH_USER;
            passwd.push_str(&format!("{user}:x:{PUBLISH_UID}:{PUBLISH_UID}::/:/bin/sh\n"));
            group.push_str(&format!("{user}:x:{PUBLISH_UID}:\n"));
            shadow.push_str(&format!("{user}:*:19000:0:99999:7:::\n"));
            std::fs::write(keys.join(user), format!("{key}\n")).unwrap();
            matches.push_str(&bento_deploy::fleet::server::match_block(
                &format!("User {user}"),
                &root.display().to_string(),
                None,
                "",
            ));
        }
        for (i, (user, host, key)) in users.iter().enumerate() {
            let uid = 64991 + i;
            passwd.push_str(&format!("{user}:x:{uid}:64990::/:/usr/sbin/nologin\n"));
            shadow.push_str(&format!("{user}:*:19000:0:99999:7:::\n"));
            std::fs::write(keys.join(user), format!("{key}\n")).unwrap();
            // The block `bento server setup` prints (authorized keys: see AuthorizedKeysFile).
            matches.push_str(&bento_deploy::fleet::server::match_block(
                &format!("User {user}"),
                &root.join(host).display().to_string(),
                None,
                "",
            ));
        }
        for (f, text) in [("passwd", &passwd), ("group", &group), ("shadow", &shadow)] {
            std::fs::write(d.join(f), text).unwrap();
        }
        chmod(&keys, "0755");
        let log = d.join("sshd.log");
        let (child, port) = listen_on_free_port(&log, |port| {
            let config = format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile none\nUsePAM no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 AuthorizedKeysFile {keys}/%u\nStrictModes no\nSubsystem sftp internal-sftp\nLogLevel ERROR\n{matches}",
                hk = d.join("host_key").display(),
                keys = keys.display(),
            );
            std::fs::write(d.join("sshd_config"), config).unwrap();
            let script = format!(
                "mount --bind {d}/passwd /etc/passwd && mount --bind {d}/group /etc/group && \
                 mount --bind {d}/shadow /etc/shadow && mkdir -p /run/sshd && exec /usr/sbin/sshd -D -e -f {d}/sshd_config",
                d = d.display()
            );
            Command::new("unshare")
                .args(["--mount", "--propagation", "private", "sh", "-c", &script])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap()
        });
        let host_pub = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
        let known_hosts = d.join("known_hosts");
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_pub}")).unwrap();
        Sshd {
            child,
            port,
            root,
            known_hosts,
            config: d.join("sshd_config"),
            _dir: dir,
            _root_dir: root_dir,
        }
    }
}

impl Sshd {
    /// The settings this sshd applies to a connection of `user` from 127.0.0.1
    /// (`sshd -T`), one `keyword value` per line, keywords in lower case.
    pub fn effective(&self, user: &str) -> String {
        let out = Command::new("/usr/sbin/sshd")
            .args(["-T", "-f"])
            .arg(&self.config)
            .args(["-C", &format!("user={user},host=localhost,addr=127.0.0.1")])
            .output()
            .unwrap();
        assert!(out.status.success(), "sshd -T: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chmod(path: &Path, mode: &str) {
    Command::new("chmod").arg(mode).arg(path).status().unwrap();
}

/// Starts a server listening on 127.0.0.1 at a port chosen here: `start(port)` writes its
/// configuration and spawns it (its stderr going to `log`). The port was free when chosen,
/// but another process may bind it first: the server then exits instead of listening, and
/// is started again on another port. Returns once the server itself (not whoever else)
/// holds the listening socket and answers there with its SSH banner.
pub(crate) fn listen_on_free_port(log: &Path, mut start: impl FnMut(u16) -> Child) -> (Child, u16) {
    for _ in 0..5 {
        let port = free_port();
        let mut child = start(port);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if listens(child.id(), port) && answers(port) {
                return (child, port);
            }
            if let Some(status) = child.try_wait().unwrap() {
                let why = std::fs::read_to_string(log).unwrap_or_default();
                assert!(
                    why.contains("Address already in use") || why.contains("Cannot bind"),
                    "sshd on port {port} exited ({status}): {why}"
                );
                break; // the port was taken: another one
            }
            assert!(Instant::now() < deadline, "sshd did not start on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("sshd found no free port in 5 tries");
}

/// Whether an ssh server on 127.0.0.1:`port` sends its banner (`SSH-2.0-…`) within 5 s.
fn answers(port: u16) -> bool {
    use std::io::Read;
    let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut banner = [0u8; 4];
    conn.read_exact(&mut banner).is_ok() && &banner == b"SSH-"
}

/// Whether process `pid` holds a socket listening on 127.0.0.1:`port`.
fn listens(pid: u32, port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!("0100007F:{port:04X}");
    let Some(inode) = table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        (cols.get(1) == Some(&local.as_str()) && cols.get(3) == Some(&"0A"))
            .then(|| cols.get(9).map(|i| format!("socket:[{i}]")))
            .flatten()
    }) else {
        return false;
    };
    std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
        fds.flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == inode))
    })
}

/// A port of 127.0.0.1 free at the time of the call (see [`listen_on_free_port`]).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn chrooted_sftp_user_sees_only_its_directory() {
    if !crate::harness::needs_root("a real sshd with chroots under /srv, in a private mount namespace") {
        return;
    }
    crate::harness::require("sftp");
    let fleet = crate::harness::Fleet::new();
    let key = fleet.ssh_key("web1", "ed25519", "");
    let line = crate::harness::pub_line(&key);
    let sshd = Sshd::start(&[("bento-web1", "web1", &line)]);
    for dir in ["web1", "web1/logs", "db1"] {
        std::fs::create_dir_all(sshd.root.join(dir)).unwrap();
    }
    std::fs::write(sshd.root.join("web1/current"), "7\n").unwrap();
    std::fs::write(sshd.root.join("db1/current"), "secret of db1\n").unwrap();
    let batch = "get /current got\n-get /../db1/current other\n-put got /current\n-put got /generations\n";
    let out = Command::new("sftp")
        .args([
            "-b",
            "-",
            "-i",
            crate::harness::s(&key),
            "-P",
            &sshd.port.to_string(),
        ])
        .args([
            "-o",
            &format!("UserKnownHostsFile={}", sshd.known_hosts.display()),
            "-o",
            "StrictHostKeyChecking=yes",
        ])
        .arg("bento-web1@127.0.0.1")
        .current_dir(&fleet.home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(batch.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(fleet.home.join("got")).unwrap(),
        "7\n",
        "{out:?}"
    );
    // `..` stays inside the chroot: /../db1/current does not exist there.
    assert!(!fleet.home.join("other").exists());
    // The host cannot write its own pointer (its directory is root's).
    assert_eq!(
        std::fs::read_to_string(sshd.root.join("web1/current")).unwrap(),
        "7\n"
    );
    assert!(!sshd.root.join("web1/generations").exists());
}

/// `ssh` as host user `user` of `sshd`, with the host key pinned and no config file.
fn ssh(sshd: &Sshd, key: &Path, user: &str) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.args([
        "-F",
        "none",
        "-i",
        crate::harness::s(key),
        "-p",
        &sshd.port.to_string(),
    ])
    .args([
        "-o",
        &format!("UserKnownHostsFile={}", sshd.known_hosts.display()),
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
    ])
    .arg(format!("{user}@127.0.0.1"));
    cmd
}

#[test]
fn a_host_user_cannot_forward_anything() {
    if !crate::harness::needs_root("a real sshd with chroots under /srv, in a private mount namespace") {
        return;
    }
    use std::io::{Read, Write};
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::{UnixListener, UnixStream};
    let fleet = crate::harness::Fleet::new();
    let key = fleet.ssh_key("web1", "ed25519", "");
    let sshd = Sshd::start(&[("bento-web1", "web1", &crate::harness::pub_line(&key))]);
    std::fs::create_dir_all(sshd.root.join("web1/logs")).unwrap();
    // A unix socket inside the host's chroot that its user could reach through a
    // streamlocal forwarding (`AllowTcpForwarding no` alone does not cover those). It
    // answers "ping" with "pong"; "stop" ends it.
    let target = sshd.root.join("web1/target.sock");
    let listener = UnixListener::bind(&target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o666)).unwrap();
    let server = std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut word = [0u8; 4];
            if stream.read_exact(&mut word).is_err() || &word == b"stop" {
                return;
            }
            let _ = stream.write_all(b"pong");
        }
    });
    // ssh -L local.sock:/target.sock (a local streamlocal forwarding).
    let local = fleet.home.join("local.sock");
    let mut forward = ssh(&sshd, &key, "bento-web1")
        .arg("-N")
        .arg("-L")
        .arg(format!("{}:/target.sock", local.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut conn = loop {
        match UnixStream::connect(&local) {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("ssh -L did not listen on {}: {e}", local.display()),
        }
    };
    // A refused forwarding may be closed before the ping is even written (EPIPE): only
    // an answer would mean it was opened.
    let _ = conn.write_all(b"ping");
    // The server end answers only if the forwarding was opened; a refused one is closed.
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    let _ = forward.kill();
    let out = forward.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        String::from_utf8_lossy(&answer),
        "",
        "a streamlocal forwarding reached the socket"
    );
    assert!(stderr.contains("open failed"), "{stderr}");
    // A remote streamlocal listener in its own (writable) logs/, and TCP (-W host:port).
    let remote = ssh(&sshd, &key, "bento-web1")
        .args(["-o", "ExitOnForwardFailure=yes", "-R"])
        .arg(format!("/logs/listen.sock:{}", target.display()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!remote.status.success(), "{remote:?}");
    assert!(
        String::from_utf8_lossy(&remote.stderr).contains("remote port forwarding failed"),
        "{remote:?}"
    );
    assert!(!sshd.root.join("web1/logs/listen.sock").exists());
    let tcp = ssh(&sshd, &key, "bento-web1")
        .args(["-W", &format!("127.0.0.1:{}", sshd.port)])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!tcp.status.success());
    assert!(
        String::from_utf8_lossy(&tcp.stderr).contains("administratively prohibited"),
        "{tcp:?}"
    );
    UnixStream::connect(&target).unwrap().write_all(b"stop").unwrap();
    server.join().unwrap();
    // What sshd itself applies to the host's user: every kind of forwarding off, sftp only.
    let effective = sshd.effective("bento-web1");
    for line in [
        "disableforwarding yes",
        "allowtcpforwarding no",
        "allowstreamlocalforwarding no",
        "allowagentforwarding no",
        "x11forwarding no",
        "permittunnel no",
        "permittty no",
        "forcecommand internal-sftp",
    ] {
        assert!(effective.lines().any(|l| l == line), "{line}: {effective}");
    }
}
