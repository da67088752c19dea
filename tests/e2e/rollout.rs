//! `bento rollout`: the fleet published wave by wave to a local root, real agents for web1
//! and db1 pulling as the rollout waits, reports read back as `bento status` reads them.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::agent::Loop;
use crate::harness::{ok, pub_line, s};

/// db1's agent (see [`agent_for`]).
pub(crate) fn db1_agent(l: &Loop, server: &str, known_hosts: Option<&Path>) -> PathBuf {
    agent_for(l, "db1", &l.keys.db1, server, known_hosts)
}

/// `host`'s agent: its own key, state and secrets dirs; rebuild, rollback and activation
/// are no-ops (web1's agent is the one whose system and secrets the tests look at).
pub(crate) fn agent_for(
    l: &Loop,
    host: &str,
    key: &Path,
    server: &str,
    known_hosts: Option<&Path>,
) -> PathBuf {
    let base = l.fleet.home.join(format!("{host}-host"));
    std::fs::create_dir_all(&base).unwrap();
    let config = base.join("agent.toml");
    let mut text = format!(
        "host = \"{host}\"\nserver = \"{server}\"\nidentity = \"{key}\"\ntrusted_keys = [\"{admin}\"]\n\
         state_dir = \"{base}/state\"\nsecrets_root = \"{base}/run\"\nrebuild = \"true\"\nrollback = \"true\"\n\
         activate = \"true\"\ncurrent_system = \"{base}/system\"\nbooted_system = \"{base}/system\"\nconnect_timeout = 3\n",
        key = s(key),
        admin = pub_line(&l.fleet.keys.join("admin")),
        base = base.display(),
    );
    if let Some(kh) = known_hosts {
        text.push_str(&format!("known_hosts = \"{}\"\n", kh.display()));
    }
    std::fs::write(&config, text).unwrap();
    config
}

/// A fleet of web1 and db1 with `[rollout]` (`rollout` is the table's body).
fn fleet(rollout: &str) -> (Loop, PathBuf) {
    let l = Loop::new();
    with_rollout(&l, rollout);
    let db1 = db1_agent(&l, &format!("file://{}", l.server.display()), None);
    (l, db1)
}

/// Appends `[rollout]` (`body`) to the fleet's bento.toml.
pub(crate) fn with_rollout(l: &Loop, body: &str) {
    let toml = l.fleet.path("bento.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    text.push_str("[rollout]\n");
    text.push_str(body);
    std::fs::write(&toml, text).unwrap();
}

fn start(l: &Loop, extra: &[&str]) -> Child {
    let mut args = vec!["rollout", "--server-root", s(&l.server)];
    args.extend_from_slice(extra);
    l.fleet
        .cmd(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs the agents named in `agents` (web1: the Loop's, db1: `db1`) every 200 ms until
/// the rollout ends; its output.
pub(crate) fn drive(l: &Loop, db1: &Path, rollout: Child, agents: &[&str]) -> std::process::Output {
    drive_all(l, &[db1], rollout, agents)
}

/// As [`drive`], running the agents of every config of `others` where `agents` names
/// `db1`, besides web1's.
pub(crate) fn drive_all(
    l: &Loop,
    others: &[&Path],
    mut rollout: Child,
    agents: &[&str],
) -> std::process::Output {
    let started = Instant::now();
    while rollout.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the rollout did not end"
        );
        for agent in agents {
            match *agent {
                "web1" => drop(l.agent(&[])),
                _ => {
                    for config in others {
                        drop(l.fleet.bento(&["agent", "--once", "--config", s(config)]));
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    rollout.wait_with_output().unwrap()
}

pub(crate) fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[test]
fn a_rollout_goes_wave_by_wave_and_stops_at_an_unhealthy_canary() {
    let (l, db1) = fleet("waves = [[\"web1\"], [\"db1\"], [\"*\"]]\nwait = \"60s\"\n");
    // A third host for the third wave.
    let mail1_key = l.fleet.ssh_key("mail1", "ed25519", "");
    l.fleet.add_host("mail1", &mail1_key);
    std::fs::create_dir_all(l.fleet.path("hosts/mail1")).unwrap();
    std::fs::write(
        l.fleet.path("hosts/mail1/configuration.nix"),
        "{ networking.hostName = \"mail1\"; }\n",
    )
    .unwrap();
    let mail1 = agent_for(
        &l,
        "mail1",
        &mail1_key,
        &format!("file://{}", l.server.display()),
        None,
    );
    let out = drive_all(&l, &[&db1, &mail1], start(&l, &[]), &["web1", "db1"]);
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    // web1 reported before db1 was published.
    let at = |needle: &str| said.find(needle).unwrap_or_else(|| panic!("{needle}: {said}"));
    assert!(
        at("wave 1/3: published web1") < at("wave 1: web1: applied"),
        "{said}"
    );
    assert!(
        at("wave 1: web1: applied") < at("wave 2/3: published db1"),
        "{said}"
    );
    assert!(
        at("wave 2: db1: applied") < at("wave 3/3: published mail1"),
        "{said}"
    );
    assert!(at("wave 3: mail1: applied") < at("wave 3/3: healthy"), "{said}");
    let status: serde_json::Value =
        serde_json::from_str(&ok(&l.fleet.bento(&["rollout", "--status", "--json"]))).unwrap();
    for wave in 0..3 {
        assert_eq!(status["waves"][wave]["state"], "healthy", "{status}");
    }

    // A change for all, and web1's health check fails: the canary rolls itself back, the
    // rollout stops, and db1 and mail1 keep their generation, byte for byte.
    let flag = l.base().join("unhealthy");
    std::fs::write(&flag, "").unwrap();
    let mut config = std::fs::read_to_string(&l.config).unwrap();
    config.push_str(&format!(
        "[health]\ncommands = [[\"sh\", \"-c\", \"test ! -e {} || {{ echo 'canary down'; exit 1; }}\"]]\n\
         settle = \"1s\"\ntimeout = \"1s\"\n",
        flag.display()
    ));
    std::fs::write(&l.config, config).unwrap();
    for host in ["web1", "db1", "mail1"] {
        std::fs::write(
            l.fleet.path(&format!("hosts/{host}/configuration.nix")),
            format!("{{ networking.hostName = \"{host}\"; time.timeZone = \"UTC\"; }}\n"),
        )
        .unwrap();
    }
    let db1_current = std::fs::read(l.server.join("db1/current")).unwrap();
    let mail1_current = std::fs::read(l.server.join("mail1/current")).unwrap();
    let out = drive_all(&l, &[&db1, &mail1], start(&l, &[]), &["web1", "db1"]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("wave 1 of 3 stopped")
            && err.contains("web1: unhealthy-rolled-back")
            && err.contains("canary down"),
        "{err}"
    );
    assert_eq!(std::fs::read(l.server.join("db1/current")).unwrap(), db1_current);
    assert_eq!(
        std::fs::read(l.server.join("mail1/current")).unwrap(),
        mail1_current
    );
    assert_eq!(
        std::fs::read_to_string(l.server.join("web1/current")).unwrap(),
        "2\n"
    );
    // Run again: the stop is said again, nothing published; with --restart after a fix it
    // goes through.
    let again = l.fleet.bento(&["rollout", "--server-root", s(&l.server)]);
    assert!(
        text(&again.stderr).contains("wave 1 of 3 stopped"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(std::fs::read(l.server.join("db1/current")).unwrap(), db1_current);
    std::fs::remove_file(&flag).unwrap();
    std::fs::write(
        l.fleet.path("hosts/web1/configuration.nix"),
        "{ networking.hostName = \"web1\"; time.timeZone = \"Europe/Paris\"; }\n",
    )
    .unwrap();
    let refused = l.fleet.bento(&["rollout", "--server-root", s(&l.server)]);
    assert!(
        text(&refused.stderr).contains("--restart"),
        "{}",
        text(&refused.stderr)
    );
    let out = drive_all(&l, &[&db1, &mail1], start(&l, &["--restart"]), &["web1", "db1"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_ne!(std::fs::read(l.server.join("db1/current")).unwrap(), db1_current);
    assert_ne!(
        std::fs::read(l.server.join("mail1/current")).unwrap(),
        mail1_current
    );
}

#[test]
fn a_silent_host_stops_its_wave_at_wait_unless_max_unreached_allows_it() {
    let (l, db1) = fleet("waves = [[\"web1\", \"db1\"]]\nwait = \"3s\"\n");
    // Only web1's agent runs: db1 never reports.
    let out = drive(&l, &db1, start(&l, &[]), &["web1"]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("db1: unreached"), "{err}");
    let toml = l.fleet.path("bento.toml");
    let text_now = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, format!("{text_now}max_unreached = 1\n")).unwrap();
    let out = drive(&l, &db1, start(&l, &["--restart"]), &["web1"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
}

#[test]
fn a_rollout_killed_mid_wave_resumes_without_publishing_twice_and_one_runs_at_a_time() {
    let (l, db1) = fleet("waves = [[\"web1\"], [\"db1\"]]\nwait = \"60s\"\n");
    let mut first = start(&l, &[]);
    // Wave 1 published; no agent runs yet, so the rollout waits.
    let state = l.fleet.path(".bento/rollout.json");
    let started = Instant::now();
    while !std::fs::read_to_string(&state)
        .unwrap_or_default()
        .contains("\"published\"")
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "wave 1 never published"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let busy = l.fleet.bento(&["rollout", "--server-root", s(&l.server)]);
    assert!(
        text(&busy.stderr).contains("another `bento rollout` is running"),
        "{}",
        text(&busy.stderr)
    );
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let out = drive(&l, &db1, start(&l, &[]), &["web1", "db1"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        !said.contains("wave 1/2: published"),
        "wave 1 published again: {said}"
    );
    let gens = std::fs::read_dir(l.server.join("web1/generations"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name() != "history")
        .count();
    assert_eq!(gens, 1, "one generation of web1");
}
