//! Many hosts polling one server at the same moment: a stock sshd (default
//! `MaxStartups 10:30:100`) drops unauthenticated connections past ten at once; the agents
//! retry with backoff and every one applies.
//!
//! Bounded: only 127.0.0.1, one sshd, each agent's `run_timeout` caps its retries, the
//! whole test has a hard deadline, and every agent still running is killed (with what it
//! started) on any failure.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{ok, pub_line, s, Fleet};
use crate::sshd::Sshd;

/// How many hosts poll at once.
const HOSTS: usize = 100;
/// The whole swarm must be done by then.
const HARD_TIMEOUT: Duration = Duration::from_secs(120);

/// Agents still running, each in its own process group; all killed when dropped.
struct Swarm(Vec<(String, Child)>);

impl Drop for Swarm {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            if child.try_wait().ok().flatten().is_none() {
                // The agent and its ssh: the whole group.
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", child.id())])
                    .status();
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

#[test]
fn a_hundred_hosts_polling_one_stock_sshd_at_once_all_apply() {
    if !crate::harness::needs_root("a real sshd with chroots under /srv, in a private mount namespace") {
        return;
    }
    use std::os::unix::process::CommandExt;
    let fleet = Fleet::new();
    let admin = fleet.signing_admin();
    let names: Vec<String> = (0..HOSTS).map(|i| format!("h{i:03}")).collect();
    let mut lines = Vec::new();
    for name in &names {
        let key = fleet.ssh_key(name, "ed25519", "");
        fleet.add_host(name, &key);
        let dir = fleet.path(&format!("hosts/{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("configuration.nix"),
            format!("{{ networking.hostName = \"{name}\"; }}\n"),
        )
        .unwrap();
        lines.push(pub_line(&key));
    }
    let users: Vec<(String, &str, &str)> = names
        .iter()
        .zip(&lines)
        .map(|(n, l)| (format!("bento-{n}"), n.as_str(), l.as_str()))
        .collect();
    let users: Vec<(&str, &str, &str)> = users.iter().map(|(u, n, l)| (u.as_str(), *n, *l)).collect();
    let sshd = Sshd::start(&users);
    ok(&fleet.bento(&["deploy", "--server-root", s(&sshd.root)]));
    let admin_pub = pub_line(&admin);
    let mut configs = Vec::new();
    for (i, name) in names.iter().enumerate() {
        // Host i's sftp user is uid 64991 + i in the server's namespace: it owns its logs/.
        Command::new("chown")
            .arg((64991 + i).to_string())
            .arg(sshd.root.join(name).join("logs"))
            .status()
            .unwrap();
        let base = fleet.home.join(name);
        std::fs::create_dir_all(&base).unwrap();
        let config = base.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "host = \"{name}\"\nserver = \"sftp://bento-{name}@127.0.0.1:{port}\"\n\
                 identity = \"{key}\"\nknown_hosts = \"{kh}\"\ntrusted_keys = [\"{admin_pub}\"]\n\
                 state_dir = \"{b}/state\"\nsecrets_root = \"{b}/run\"\nrebuild = \"true\"\n\
                 rollback = \"false\"\ncurrent_system = \"{b}/system\"\nbooted_system = \"{b}/booted\"\n\
                 connect_timeout = 10\nrun_timeout = 180\n",
                port = sshd.port,
                key = s(&fleet.keys.join(name)),
                kh = sshd.known_hosts.display(),
                b = base.display(),
            ),
        )
        .unwrap();
        configs.push((name.clone(), config, base.join("agent.log")));
    }

    // All at once: each agent is started before any is waited for.
    let started = Instant::now();
    let mut swarm = Swarm(Vec::new());
    for (name, config, log) in &configs {
        let child = fleet
            .cmd(&["agent", "--once", "--config", s(config)])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .process_group(0)
            .spawn()
            .unwrap();
        swarm.0.push((name.clone(), child));
    }
    let mut failed = Vec::new();
    let mut pending: Vec<usize> = (0..swarm.0.len()).collect();
    while !pending.is_empty() {
        assert!(
            started.elapsed() < HARD_TIMEOUT,
            "{} agents still running after {HARD_TIMEOUT:?}",
            pending.len()
        );
        pending.retain(|&i| {
            let (name, child) = &mut swarm.0[i];
            match child.try_wait().unwrap() {
                None => true,
                Some(status) => {
                    if !status.success() {
                        failed.push(name.clone());
                    }
                    false
                }
            }
        });
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = started.elapsed();
    let log = |i: usize| std::fs::read_to_string(&configs[i].2).unwrap_or_default();
    assert!(
        failed.is_empty(),
        "{} of {HOSTS} agents failed ({failed:?}); first: {}",
        failed.len(),
        failed
            .first()
            .map(|f| log(names.iter().position(|n| n == f).unwrap()))
            .unwrap_or_default()
    );
    let retried = (0..HOSTS).filter(|&i| log(i).contains("retrying in")).count();
    eprintln!("{HOSTS} agents applied in {took:?}; {retried} retried a dropped connection");
    // The stock sshd really dropped some: the retries were needed.
    assert!(retried >= 1, "no agent was dropped: the test proves nothing");
    for (name, _, _) in &configs {
        let base: PathBuf = fleet.home.join(name);
        assert_eq!(
            std::fs::read_link(base.join("state/current")).unwrap(),
            PathBuf::from("bundles/1"),
            "{name}"
        );
        let reports = std::fs::read_dir(sshd.root.join(name).join("logs"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("report-"))
            .count();
        assert_eq!(reports, 1, "{name}: its report reached the server");
    }
}

/// A fresh agent.toml of web1 against `server` (with `known_hosts`), run_timeout
/// `run_timeout`.
fn one_agent(
    fleet: &Fleet,
    key: &std::path::Path,
    server: &str,
    known_hosts: &std::path::Path,
    (connect_timeout, run_timeout): (u64, u64),
) -> PathBuf {
    let base = tempfile::tempdir_in(&fleet.home).unwrap().keep();
    let config = base.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "host = \"web1\"\nserver = \"{server}\"\nidentity = \"{key}\"\nknown_hosts = \"{kh}\"\n\
             trusted_keys = [\"{admin}\"]\nstate_dir = \"{b}/state\"\n\
             connect_timeout = {connect_timeout}\nrun_timeout = {run_timeout}\n",
            key = s(key),
            kh = known_hosts.display(),
            admin = pub_line(key),
            b = base.display(),
        ),
    )
    .unwrap();
    config
}

#[test]
fn a_refused_connection_is_retried_until_the_deadline_then_interrupted() {
    let fleet = Fleet::new();
    let key = fleet.ssh_key("web1", "ed25519", "");
    // A port nobody listens on (bound, then let go): every connect is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kh = fleet.home.join("known_hosts");
    std::fs::write(&kh, "").unwrap();
    let config = one_agent(
        &fleet,
        &key,
        &format!("sftp://web1@127.0.0.1:{port}"),
        &kh,
        (2, 4),
    );
    let started = Instant::now();
    let out = fleet.bento(&["agent", "--once", "--config", s(&config)]);
    let took = started.elapsed();
    let err = crate::harness::fails(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("interrupted")
            && err.contains("run_timeout = 4 s")
            && err.contains("Connection refused"),
        "{err}"
    );
    // Retried (1 s, 2 s … ±50 %) until the deadline, not past it by much; the first retry
    // says for how long, and what to check (a wrong port looks like this).
    assert!(stderr.contains("retrying in"), "{stderr}");
    assert!(
        stderr.contains("(run_timeout = 4 s): if the server stays unreachable, check agent.toml's server address and port")
            && stderr.matches("check agent.toml's server").count() == 1,
        "{stderr}"
    );
    assert!(took >= Duration::from_secs(4), "gave up after {took:?}: {stderr}");
    assert!(took < Duration::from_secs(15), "took {took:?}: {stderr}");
}

#[test]
fn a_refused_login_or_host_key_fails_at_once() {
    if !crate::harness::needs_root("a real sshd with chroots under /srv, in a private mount namespace") {
        return;
    }
    let fleet = Fleet::new();
    let key = fleet.ssh_key("web1", "ed25519", "");
    let other = fleet.ssh_key("db1", "ed25519", "");
    let sshd = Sshd::start(&[("bento-web1", "web1", &pub_line(&key))]);
    // The wrong key for this user: permission denied.
    let server = format!("sftp://bento-web1@127.0.0.1:{}", sshd.port);
    // A generous handshake time (20 s): on a loaded machine, a refusal that is slow to come
    // must still be a refusal, not a handshake that timed out (which is retried).
    let wrong_login = one_agent(&fleet, &other, &server, &sshd.known_hosts, (20, 60));
    // The right key, but another server key pinned: host key verification fails.
    let kh = fleet.home.join("wrong_known_hosts");
    std::fs::write(&kh, format!("[127.0.0.1]:{} {}\n", sshd.port, pub_line(&other))).unwrap();
    for (config, expected) in [
        (wrong_login, "Permission denied"),
        (
            one_agent(&fleet, &key, &server, &kh, (20, 60)),
            "Host key verification failed",
        ),
    ] {
        let started = Instant::now();
        let out = fleet.bento(&["agent", "--once", "--config", s(&config)]);
        let err = crate::harness::fails(&out);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{stderr}");
        assert!(
            !stderr.contains("retrying") && !err.contains("interrupted"),
            "{stderr}"
        );
        // Not retried until the deadline (60 s): well within it, even on a loaded machine.
        assert!(started.elapsed() < Duration::from_secs(30), "{stderr}");
    }
}
