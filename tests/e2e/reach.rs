//! Reaching a host: the addresses and sshd port its heartbeat reports (shown by
//! `bento status --json`, checked since the host writes them), and `bento ssh` against a
//! real sshd, with the host key pinned from `keys/hosts/HOST.pub`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use crate::agent::Loop;
use crate::harness::{fails, ok, pub_line, s, Fleet};
use crate::status::{host, status_json};

#[test]
fn status_shows_the_addresses_an_agent_reports() {
    let l = Loop::new();
    l.deploy();
    ok(&l.agent(&[]));
    let (doc, _) = status_json(&l.fleet, &l.server);
    let web1 = host(&doc, "web1");
    // The agent runs on this machine: it reports this machine's addresses.
    let here: Vec<Value> = bento_deploy::reach::local_addresses()
        .into_iter()
        .map(Value::from)
        .collect();
    assert_eq!(web1["addresses"], Value::from(here), "{web1}");
    assert_eq!(web1["ssh_port"], 22, "{web1}");
    // db1 never polled: nothing known.
    assert_eq!(host(&doc, "db1")["addresses"], json!([]));
    assert_eq!(host(&doc, "db1")["ssh_port"], Value::Null);
}

/// A fleet with host web1 (a real key) and a server root where web1's heartbeat says
/// `addresses` and `ssh_port`.
fn reported(addresses: Value, ssh_port: Value) -> (Fleet, PathBuf) {
    let fleet = Fleet::new();
    let key = fleet.ssh_key("web1", "ed25519", "");
    fleet.add_host("web1", &key);
    let server = fleet.home.join("server");
    let logs = server.join("web1/logs");
    std::fs::create_dir_all(&logs).unwrap();
    let beat = json!({
        "format": 1, "host": "web1", "time": bento_deploy::time::now_rfc3339(),
        "applied": null, "agent": "0.1.0", "addresses": addresses, "ssh_port": ssh_port,
    });
    std::fs::write(logs.join("seen.json"), serde_json::to_vec(&beat).unwrap()).unwrap();
    (fleet, server)
}

#[test]
fn reported_addresses_are_checked_before_use() {
    let mut claimed = vec![
        json!("-oProxyCommand=touch /tmp/pwned"),
        json!("\u{1b}]0;title\u{7}"),
        json!("127.0.0.1"),
        json!(["nested"]),
        json!("192.0.2.7"),
        json!("2001:db8::7"),
    ];
    claimed.extend((1..=100).map(|i| json!(format!("10.1.{}.{}", i / 250, i % 250))));
    let (fleet, server) = reported(Value::from(claimed), json!(2222));
    let (doc, _) = status_json(&fleet, &server);
    let web1 = host(&doc, "web1");
    let addresses = web1["addresses"].as_array().unwrap();
    assert_eq!(addresses.len(), bento_deploy::reach::MAX_ADDRESSES, "{web1}");
    assert_eq!(addresses[0], "192.0.2.7");
    assert_eq!(addresses[1], "2001:db8::7");
    assert!(addresses
        .iter()
        .all(|a| a.as_str().unwrap().parse::<std::net::IpAddr>().is_ok()));
    assert_eq!(web1["ssh_port"], 2222);
    assert_eq!(web1["problem"], Value::Null, "{web1}");

    // Without hosts.web1.address, `bento ssh` takes the first reported address and port,
    // after `--`, with the registered key pinned.
    let out = ok(&fleet.bento(&["ssh", "web1", "--print", "--server-root", s(&server)]));
    let line = out.trim();
    assert!(line.ends_with(" -p 2222 -- 192.0.2.7"), "{line}");
    assert!(line.contains("StrictHostKeyChecking=yes"), "{line}");
    assert!(line.contains("HostKeyAlias=web1"), "{line}");
    let known = known_hosts_of(line);
    let pinned = std::fs::read_to_string(&known).unwrap();
    let key = pub_line(&fleet.keys.join("web1"));
    let mut fields = key.split_whitespace();
    assert_eq!(
        pinned,
        format!("web1 {} {}\n", fields.next().unwrap(), fields.next().unwrap())
    );
    assert!(known.starts_with(std::fs::canonicalize(fleet.path(".bento/known_hosts")).unwrap()));

    // A heartbeat with no usable address: a clear refusal, no ssh run.
    let (fleet, server) = reported(json!(["-oProxyCommand=x", "localhost"]), json!("22"));
    let err = fails(&fleet.bento(&["ssh", "web1", "--server-root", s(&server)]));
    assert!(
        err.contains("no address for web1") && err.contains("hosts.web1.address"),
        "{err}"
    );
}

#[test]
fn ssh_refuses_an_unknown_host() {
    let (fleet, server) = reported(json!(["192.0.2.7"]), json!(22));
    let err = fails(&fleet.bento(&["ssh", "web2", "--print", "--server-root", s(&server)]));
    assert!(
        err.contains("no such host `web2`") && err.contains("web1"),
        "{err}"
    );
}

/// The path after `UserKnownHostsFile=` in a printed ssh command.
fn known_hosts_of(line: &str) -> PathBuf {
    let at = line.find("UserKnownHostsFile=").unwrap() + "UserKnownHostsFile=".len();
    PathBuf::from(line[at..].split_whitespace().next().unwrap())
}

/// A real sshd on 127.0.0.1 presenting `host_key`, letting root in with `authorized`
/// (a public key line) and running commands; killed when dropped.
struct ShellSshd {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl ShellSshd {
    fn start(host_key: &Path, authorized: &str) -> ShellSshd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("authorized_keys"), format!("{authorized}\n")).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let log = d.join("sshd.log");
        let (child, port) = crate::sshd::listen_on_free_port(&log, |port| {
            std::fs::write(
                d.join("sshd_config"),
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile none\nUsePAM no\n\
                     PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                     PermitRootLogin prohibit-password\nAuthorizedKeysFile {d}/authorized_keys\n\
                     StrictModes no\nLogLevel ERROR\n",
                    hk = host_key.display(),
                    d = d.display()
                ),
            )
            .unwrap();
            Command::new("/usr/sbin/sshd")
                .args(["-D", "-e", "-f"])
                .arg(d.join("sshd_config"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap()
        });
        ShellSshd {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for ShellSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An ssh-agent holding `key`; killed when dropped.
pub(crate) struct Agent {
    child: Child,
    pub(crate) sock: PathBuf,
}

impl Agent {
    pub(crate) fn with(fleet: &Fleet, key: &Path) -> Agent {
        let sock = fleet.keys.join("agent.sock");
        let child = crate::harness::ssh_agent(&sock);
        let agent = Agent { child, sock };
        let added = Command::new("ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", &agent.sock)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        ok(&added);
        agent
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fleet whose host web1 is registered with `registered`'s public key and reachable at
/// an sshd presenting `presented`; the admin's key in an ssh-agent.
fn ssh_setup(presented_is_registered: bool) -> (Fleet, ShellSshd, Agent) {
    crate::harness::require("ssh");
    let fleet = Fleet::new();
    let registered = fleet.ssh_key("web1", "ed25519", "");
    fleet.add_host("web1", &registered);
    let presented = if presented_is_registered {
        registered
    } else {
        fleet.ssh_key("impostor", "ed25519", "")
    };
    let admin = fleet.ssh_key("admin", "ed25519", "");
    let sshd = ShellSshd::start(&presented, &pub_line(&admin));
    std::fs::write(
        fleet.path("bento.toml"),
        format!(
            "[hosts.web1]\naddress = \"127.0.0.1\"\nssh_port = {}\nssh_user = \"root\"\n",
            sshd.port
        ),
    )
    .unwrap();
    let agent = Agent::with(&fleet, &admin);
    (fleet, sshd, agent)
}

#[test]
fn ssh_reaches_a_host_presenting_its_registered_key() {
    if !crate::harness::needs_root("a real sshd run as root") {
        return;
    }
    let (fleet, _sshd, agent) = ssh_setup(true);
    let marker = fleet.home.join("ran");
    let out = fleet
        .cmd(&["ssh", "web1", "--", "touch", s(&marker)])
        .env("SSH_AUTH_SOCK", &agent.sock)
        .output()
        .unwrap();
    ok(&out);
    assert!(marker.exists(), "the command did not run on the host");
    // The remote command's exit status is bento's.
    let out = fleet
        .cmd(&["ssh", "web1", "--", "exit", "3"])
        .env("SSH_AUTH_SOCK", &agent.sock)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    // The printed command works as printed, from elsewhere.
    let printed = ok(&fleet.bento(&["ssh", "web1", "--print", "--", "true"]));
    let run = Command::new("sh")
        .args(["-c", printed.trim()])
        .current_dir("/")
        .env("SSH_AUTH_SOCK", &agent.sock)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(run.status.success(), "{printed}: {run:?}");
}

#[test]
fn ssh_refuses_a_host_whose_key_differs() {
    let (fleet, _sshd, agent) = ssh_setup(false);
    let marker = fleet.home.join("ran");
    let out = fleet
        .cmd(&["ssh", "web1", "--", "touch", s(&marker)])
        .env("SSH_AUTH_SOCK", &agent.sock)
        .output()
        .unwrap();
    let err = fails(&out);
    assert!(
        err.contains("ssh to web1 at 127.0.0.1") && err.contains("keys/hosts/web1.pub"),
        "{err}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Host key verification failed"), "{stderr}");
    assert!(!marker.exists(), "the command ran on an impostor");
}
