//! Faults proven, not assumed: `kill -9` at random moments of every command that writes,
//! full disks (small tmpfs mounts, only inside private mount namespaces), and the server
//! going away in the middle of a report upload. After each fault every file is old or new
//! and the next run completes.
//!
//! The kill points are random; the seed is printed (`fault seed: N`) and `FAULT_SEED=N`
//! replays a run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::activate::require_root;
use crate::agent::Loop;
use crate::harness::{example, fails, ok, s, Fleet};

/// Kill iterations per command.
const KILLS: u32 = 8;

/// Files left by an interrupted atomic write (`.<name>.<random>.tmp`, `.<name>.bento-tmp`)
/// anywhere under `dir`.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let kind = e.file_type().unwrap();
        if name.starts_with('.') && (name.ends_with(".tmp") || name.ends_with(".bento-tmp")) {
            found.push(e.path());
        } else if kind.is_dir() {
            found.extend(leftovers(&e.path()));
        }
    }
    found
}

/// The kills of one command: `kill -9` at random moments (xorshift, seeded from the clock
/// or `FAULT_SEED`, the seed printed) of a window as long as its last full run, and how
/// many landed while it ran.
struct Kills {
    what: &'static str,
    state: u64,
    window: Duration,
    hits: u32,
}

impl Kills {
    /// `first` is a full run, which must succeed; its time is the first window.
    fn new(what: &'static str, first: impl FnOnce() -> Output) -> Kills {
        let seed = std::env::var("FAULT_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{what}: fault seed: {seed} (FAULT_SEED={seed} replays it)");
        let mut kills = Kills {
            what,
            state: seed | 1,
            window: Duration::ZERO,
            hits: 0,
        };
        kills.rerun(first);
        kills
    }

    /// A full run, which must succeed; its time is the next window (a warm full run).
    fn rerun(&mut self, run: impl FnOnce() -> Output) {
        let start = Instant::now();
        let out = run();
        self.window = start.elapsed();
        ok(&out);
    }

    /// Starts `cmd` quietly, with `input` on its stdin, lets it run for a random part of
    /// the window, then SIGKILLs its whole process group (as systemd kills a unit's cgroup:
    /// the commands it started die with it).
    fn kill(&mut self, mut cmd: Command, input: &[u8]) {
        use std::io::Write;
        use std::os::unix::process::CommandExt;
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let delay = self.window.mul_f64((self.state % 10_001) as f64 / 10_000.0);
        let mut child = cmd
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(input);
        std::thread::sleep(delay);
        let running = child.try_wait().unwrap().is_none();
        let group = format!("-{}", child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        child.wait().unwrap();
        self.hits += u32::from(running);
    }

    /// Asserts that some kills landed while the command ran.
    fn assert_some_hit(self) {
        let (what, hits) = (self.what, self.hits);
        eprintln!("{what}: {hits} of {KILLS} kills landed mid-run");
        assert!(hits > 0, "{what}: every run finished before its kill");
    }
}

/// Decrypts a fleet secret with the `age` CLI.
fn age_decrypt(fleet: &Fleet, identity: &Path, name: &str) -> Result<String, String> {
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(identity)
        .arg(fleet.path(&format!("secrets/{name}.age")))
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn killed_rekeys_leave_every_secret_whole_and_the_next_rekey_completes() {
    let (fleet, keys) = example();
    let web2 = fleet.ssh_key("web2", "ed25519", "");
    fleet.add_host("web2", &web2);
    const N: usize = 40;
    let rules = |hosts: &str| {
        let mut text = format!("admins = [\"alice\"]\n[groups]\nweb = [{hosts}]\n");
        for i in 0..N {
            text.push_str(&format!("[secrets.s{i}]\nrecipients = [\"@web\"]\n"));
        }
        text
    };
    fleet.rules(&rules("\"web1\""));
    for i in 0..N {
        ok(&fleet.bento_stdin(
            &["secret", "edit", &format!("s{i}")],
            format!("value {i}").as_bytes(),
        ));
    }
    let rekey = || fleet.cmd(&["secret", "rekey", "-i", s(&keys.alice)]);
    let groups = ["\"web1\", \"web2\"", "\"web1\""];
    // The first change, measured.
    fleet.rules(&rules(groups[0]));
    let mut kills = Kills::new("rekey", || rekey().output().unwrap());
    for round in 1..=KILLS as usize {
        let with_web2 = round % 2 == 0;
        fleet.rules(&rules(groups[round % 2]));
        kills.kill(rekey(), b"");
        for i in 0..N {
            let name = format!("s{i}");
            assert_eq!(
                age_decrypt(&fleet, &keys.alice, &name),
                Ok(format!("value {i}")),
                "round {round}: {name} after the kill"
            );
        }
        kills.rerun(|| rekey().output().unwrap());
        assert_eq!(leftovers(&fleet.root), Vec::<PathBuf>::new(), "round {round}");
        for i in 0..N {
            let name = format!("s{i}");
            assert_eq!(
                age_decrypt(&fleet, &web2, &name).is_ok(),
                with_web2,
                "round {round}: {name} for web2 after the next rekey"
            );
        }
        // Nothing stale is left (the lock agrees): no identity needed.
        let out = fleet.bento(&["secret", "rekey"]);
        ok(&out);
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("rekeyed"),
            "round {round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    kills.assert_some_hit();
}

#[test]
fn killed_edits_leave_the_old_or_the_new_value_and_the_next_edit_completes() {
    let (fleet, keys) = example();
    let edit = || fleet.cmd(&["secret", "edit", "db-password"]);
    let mut kills = Kills::new("edit", || {
        fleet.bento_stdin(&["secret", "edit", "db-password"], b"v0")
    });
    for round in 1..=KILLS {
        let (old, new) = (format!("v{}", round - 1), format!("v{round}"));
        kills.kill(edit(), new.as_bytes());
        let now = age_decrypt(&fleet, &keys.alice, "db-password").unwrap();
        assert!(now == old || now == new, "round {round}: {now:?}");
        kills.rerun(|| fleet.bento_stdin(&["secret", "edit", "db-password"], new.as_bytes()));
        assert_eq!(age_decrypt(&fleet, &keys.alice, "db-password"), Ok(new));
        // The killed edit's temporary file does not stay in the repo (to be committed).
        assert_eq!(leftovers(&fleet.root), Vec::<PathBuf>::new(), "round {round}");
    }
    kills.assert_some_hit();
}

/// The host's `current` link's generation and state.json's `applied`.
fn host_state(l: &Loop) -> (Option<u64>, Option<u64>) {
    host_state_in(&l.state)
}

/// [`host_state`] of the state dir `state`.
fn host_state_in(state: &Path) -> (Option<u64>, Option<u64>) {
    let current = std::fs::read_link(state.join("current")).ok().map(|t| {
        t.to_string_lossy()
            .strip_prefix("bundles/")
            .unwrap_or_else(|| panic!("current -> {}", t.display()))
            .parse()
            .unwrap()
    });
    let applied = std::fs::read(state.join("state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["applied"].as_u64());
    (current, applied)
}

/// The generation the server's `current` names.
fn server_generation(l: &Loop) -> u64 {
    std::fs::read_to_string(l.server.join("web1/current"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// After a full agent run: `current` and state.json agree on the server's generation.
fn assert_caught_up(l: &Loop, round: u32) {
    let generation = server_generation(l);
    assert_eq!(
        host_state(l),
        (Some(generation), Some(generation)),
        "round {round}"
    );
}

fn change_config(l: &Loop, round: u32) {
    std::fs::write(
        l.fleet.path("hosts/web1/configuration.nix"),
        format!("{{ networking.hostName = \"web1\"; boot.round = {round}; }}\n"),
    )
    .unwrap();
}

#[test]
fn killed_deploys_leave_a_whole_signed_generation_and_the_next_deploy_completes() {
    let l = Loop::new();
    let deploy = || l.fleet.cmd(&["deploy", "--server-root", s(&l.server)]);
    let mut kills = Kills::new("deploy", || deploy().output().unwrap());
    ok(&l.agent(&[]));
    for round in 1..=KILLS {
        change_config(&l, round);
        ok(&l
            .fleet
            .bento_stdin(&["secret", "edit", "web-only"], format!("v{round}").as_bytes()));
        let before = server_generation(&l);
        kills.kill(deploy(), b"");
        let after = server_generation(&l);
        assert!(
            after == before || after == before + 1,
            "round {round}: {before} -> {after}"
        );
        // The agent verifies the signature and every file of what `current` names.
        ok(&l.agent(&[]));
        assert_caught_up(&l, round);
        kills.rerun(|| deploy().output().unwrap());
        ok(&l.agent(&[]));
        assert_caught_up(&l, round);
        assert_eq!(l.secret("web-only"), format!("v{round}"));
    }
    kills.assert_some_hit();
}

#[test]
fn killed_agent_runs_leave_old_or_new_and_the_next_run_completes() {
    let l = Loop::new();
    l.deploy();
    let mut kills = Kills::new("agent", || l.agent(&[]));
    for round in 1..=KILLS {
        let old = l.secret("web-only");
        let new = format!("v{round}");
        // Odd rounds change the config (rebuild), even ones only a secret (activation).
        if round % 2 == 1 {
            change_config(&l, round);
        }
        ok(&l
            .fleet
            .bento_stdin(&["secret", "edit", "web-only"], new.as_bytes()));
        l.deploy();
        let (previous, target) = (server_generation(&l) - 1, server_generation(&l));
        let agent = l.fleet.cmd(&["agent", "--once", "--config", s(&l.config)]);
        kills.kill(agent, b"");
        // `current` is switched before the rebuild (which reads it), state.json after it
        // succeeded: a kill in between leaves `current` one ahead, never anything else.
        // state.json is written after the switch succeeded: it never runs ahead.
        let (current, applied) = host_state(&l);
        assert!(
            matches!(
                (current, applied),
                (Some(c), Some(a)) if (c, a) == (previous, previous)
                    || (c, a) == (target, previous)
                    || (c, a) == (target, target)
            ),
            "round {round}: current {current:?}, applied {applied:?}"
        );
        let now = l.secret("web-only");
        assert!(now == old || now == new, "round {round}: {now:?}");
        kills.rerun(|| l.agent(&[]));
        assert_caught_up(&l, round);
        assert_eq!(l.secret("web-only"), new);
    }
    kills.assert_some_hit();
}

#[test]
fn killed_activations_leave_a_whole_generation_and_the_next_one_completes() {
    let l = Loop::new();
    l.deploy();
    ok(&l.agent(&[]));
    // Two bundles whose secrets all differ.
    let bundle_a = l.fleet.home.join("bundle-a");
    let bundle_b = l.fleet.home.join("bundle-b");
    copy_current(&l, &bundle_a);
    for name in ["db-password", "web-only", "tls"] {
        ok(&l
            .fleet
            .bento_stdin(&["secret", "edit", name], format!("v2 of {name}").as_bytes()));
    }
    l.deploy();
    ok(&l.agent(&[]));
    copy_current(&l, &bundle_b);
    let activate = |bundle: &Path| activate_cmd(&l, bundle, &["--no-mount"]);
    let contents = || {
        ["web-only", "tls"]
            .map(|n| l.secret(n))
            .map(|v| v.split(" of ").next().unwrap().to_owned())
    };
    let mut kills = Kills::new("activate", || activate(&bundle_a).output().unwrap());
    for round in 1..=KILLS {
        let (to, new) = if round % 2 == 1 {
            (&bundle_b, "v2")
        } else {
            (&bundle_a, "v1")
        };
        kills.kill(activate(to), b"");
        let seen = contents();
        assert!(
            seen == ["v1", "v1"] || seen == ["v2", "v2"],
            "round {round}: a mixed generation {seen:?}"
        );
        kills.rerun(|| activate(to).output().unwrap());
        assert_eq!(contents(), [new, new], "round {round}");
    }
    kills.assert_some_hit();
}

/// Copies web1's current bundle to `to`.
fn copy_current(l: &Loop, to: &Path) {
    let cp = Command::new("cp")
        .arg("-rL")
        .arg(l.state.join("current"))
        .arg(to)
        .status();
    assert!(cp.unwrap().success());
}

/// `bento activate` of `bundle` into web1's secrets root, with `flags` for the mount.
fn activate_cmd(l: &Loop, bundle: &Path, flags: &[&str]) -> Command {
    let mut args = vec!["activate"];
    args.extend(flags);
    args.extend([
        "--bundle",
        s(bundle),
        "-i",
        s(&l.keys.web1),
        "--root",
        s(&l.secrets),
    ]);
    l.fleet.cmd(&args)
}

/// A private mount namespace kept alive by a sleeping process; commands join it with
/// `nsenter`. Its mounts vanish with it (the sleeper is killed on drop).
struct Namespace {
    sleeper: Child,
}

impl Namespace {
    fn new() -> Namespace {
        require_root();
        crate::harness::require("nsenter");
        let sleeper = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sleep", "120"])
            .spawn()
            .unwrap();
        // unshare execs sleep once the namespace is made: wait for that.
        let ns = format!("/proc/{}/ns/mnt", sleeper.id());
        let mine = std::fs::read_link("/proc/self/ns/mnt").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(&ns).ok().as_ref() == Some(&mine)
            || std::fs::read_to_string(format!("/proc/{}/comm", sleeper.id()))
                .is_ok_and(|c| c.trim() != "sleep")
        {
            assert!(Instant::now() < deadline, "unshare did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        Namespace { sleeper }
    }

    /// `cmd` run inside the namespace.
    fn run(&self, cmd: &Command) -> Output {
        let mut inside = Command::new("nsenter");
        inside.args(["-t", &self.sleeper.id().to_string(), "-m"]);
        if let Some(dir) = cmd.get_current_dir() {
            inside.arg(format!("--wd={}", dir.display()));
        }
        inside.arg("--").arg(cmd.get_program()).args(cmd.get_args());
        inside.env_clear();
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                inside.env(k, v);
            }
        }
        for (k, v) in std::env::vars_os() {
            if cmd.get_envs().all(|(name, _)| name != k.as_os_str()) {
                inside.env(k, v);
            }
        }
        inside.stdin(Stdio::null()).output().unwrap()
    }

    /// A shell line run inside the namespace; must succeed.
    fn sh(&self, line: &str) {
        let mut cmd = Command::new("sh");
        cmd.args(["-euc", line]);
        let out = self.run(&cmd);
        assert!(
            out.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Namespace {
    /// `path` as seen from inside the namespace.
    fn view(&self, path: &Path) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{}", self.sleeper.id(), path.display()))
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.sleeper.kill();
        let _ = self.sleeper.wait();
    }
}

fn agent_cmd(l: &Loop) -> Command {
    l.fleet.cmd(&["agent", "--once", "--config", s(&l.config)])
}

#[test]
fn a_full_state_dir_fails_cleanly_and_the_next_run_applies() {
    if !crate::harness::needs_root("fills filesystems in private mount namespaces") {
        return;
    }
    let l = Loop::new();
    l.deploy();
    ok(&l.agent(&[]));
    change_config(&l, 1);
    l.deploy();
    let ns = Namespace::new();
    // The state dir moves onto a small tmpfs, then filled.
    let state = l.state.display();
    ns.sh(&format!(
        "mkdir -p {state}.mnt && mount -t tmpfs -o size=256k t {state}.mnt && cp -a {state}/. {state}.mnt/ \
         && mount --bind {state}.mnt {state} && (cat /dev/zero > {state}/filler 2>/dev/null || true)"
    ));
    let err = fails(&ns.run(&agent_cmd(&l)));
    assert!(err.contains("No space left on device"), "{err}");
    let inside = ns.view(&l.state);
    assert_eq!(host_state_in(&inside), (Some(1), Some(1)), "nothing half-applied");
    assert_eq!(l.secret("web-only"), "v1 of web-only");
    ns.sh(&format!("rm {state}/filler"));
    ok(&ns.run(&agent_cmd(&l)));
    assert_eq!(host_state_in(&inside), (Some(2), Some(2)));
}

#[test]
fn a_full_ram_filesystem_fails_cleanly_and_the_next_activation_applies() {
    if !crate::harness::needs_root("fills filesystems in private mount namespaces") {
        return;
    }
    let l = Loop::new();
    l.deploy();
    ok(&l.agent(&[]));
    let small = l.fleet.home.join("small");
    let big = l.fleet.home.join("big");
    copy_current(&l, &small);
    ok(&l
        .fleet
        .bento_stdin(&["secret", "edit", "web-only"], "x".repeat(200 * 1024).as_bytes()));
    l.deploy();
    ok(&l.agent(&[]));
    copy_current(&l, &big);
    let ns = Namespace::new();
    let mnt = l.secrets.join("secrets.d");
    ns.sh(&format!(
        "mkdir -p {m} && mount -t tmpfs -o size=64k,mode=0751 ram {m}",
        m = mnt.display()
    ));
    let activate = |bundle: &Path| activate_cmd(&l, bundle, &["--fs", "tmpfs"]);
    let secret = |name: &str| std::fs::read_to_string(ns.view(&l.secrets.join("secrets")).join(name));
    ok(&ns.run(&activate(&small)));
    let err = fails(&ns.run(&activate(&big)));
    assert!(err.contains("the RAM filesystem is full"), "{err}");
    assert!(err.contains("is still active, nothing changed"), "{err}");
    assert_eq!(
        secret("web-only").unwrap(),
        "v1 of web-only",
        "nothing half-applied"
    );
    ns.sh(&format!("mount -o remount,size=2m {}", mnt.display()));
    ok(&ns.run(&activate(&big)));
    assert_eq!(secret("web-only").unwrap().len(), 200 * 1024);
}

#[test]
fn a_full_server_root_fails_the_deploy_cleanly_and_the_next_deploy_publishes() {
    if !crate::harness::needs_root("fills filesystems in private mount namespaces") {
        return;
    }
    let l = Loop::new();
    let ns = Namespace::new();
    ns.sh(&format!(
        "mkdir -p {s} && mount -t tmpfs -o size=1m srv {s}",
        s = l.server.display()
    ));
    let deploy = || l.fleet.cmd(&["deploy", "--server-root", s(&l.server)]);
    ok(&ns.run(&deploy()));
    ok(&ns.run(&agent_cmd(&l)));
    ok(&l.fleet.bento_stdin(
        &["secret", "edit", "web-only"],
        "x".repeat(2 * 1024 * 1024).as_bytes(),
    ));
    let err = fails(&ns.run(&deploy()));
    assert!(err.contains("No space left on device"), "{err}");
    // The server still names generation 1, whole and signed: the agent is up to date.
    let out = ns.run(&agent_cmd(&l));
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("up to date (bundle generation 1)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ns.sh(&format!("mount -o remount,size=16m {}", l.server.display()));
    ok(&ns.run(&deploy()));
    ok(&ns.run(&agent_cmd(&l)));
    assert_eq!(host_state(&l), (Some(2), Some(2)));
    assert_eq!(l.secret("web-only").len(), 2 * 1024 * 1024);
}

/// The names of the report files on the server.
fn report_files(logs: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(logs)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("report-"))
        .collect();
    names.sort();
    names
}

fn outbox(l: &Loop) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(l.state.join("outbox"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]

fn a_report_cut_off_mid_upload_waits_in_the_outbox_and_is_sent_once() {
    if !crate::harness::needs_root("fills filesystems in private mount namespaces") {
        return;
    }
    let l = Loop::new();
    l.deploy();
    ok(&l.agent(&[]));
    let logs: PathBuf = l.server.join("web1/logs");
    let ns = Namespace::new();
    // The server's logs/ takes one more file, then no more: the log of the next run goes
    // up, its report is cut off.
    let used = std::fs::read_dir(&logs).unwrap().count();
    ns.sh(&format!(
        "mkdir -p {l}.mnt && mount -t tmpfs -o size=1m,nr_inodes={n} t {l}.mnt && cp -a {l}/. {l}.mnt/ \
         && mount --bind {l}.mnt {l}",
        l = logs.display(),
        n = used + 2, // the dir itself and one new file
    ));
    let seen = ns.view(&logs);
    let before = report_files(&seen);
    change_config(&l, 1);
    l.deploy();
    let out = ns.run(&agent_cmd(&l));
    ok(&out);
    assert_eq!(host_state(&l), (Some(2), Some(2)));
    let queued = outbox(&l);
    assert!(
        queued.iter().any(|n| n.starts_with("report-")),
        "the report waits: {queued:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report_files(&seen), before, "no report went up");
    let logs_of_2 = || {
        std::fs::read_dir(&seen)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("log-00000002-"))
            .count()
    };
    assert_eq!(
        logs_of_2(),
        1,
        "the upload was cut after the log, before its report"
    );
    // Space again: the next run (nothing new to apply) sends it, once.
    ns.sh(&format!("mount -o remount,nr_inodes=1000 {}", logs.display()));
    ok(&ns.run(&agent_cmd(&l)));
    assert!(outbox(&l).is_empty(), "{:?}", outbox(&l));
    let after = report_files(&seen);
    assert_eq!(after.len(), before.len() + 1, "{after:?}");
    ok(&ns.run(&agent_cmd(&l)));
    assert_eq!(report_files(&seen), after, "never sent twice");
    assert_eq!(logs_of_2(), 1, "its log is not duplicated either");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(seen.join(after.last().unwrap())).unwrap()).unwrap();
    assert_eq!(
        (report["generation"].as_u64(), report["state"].as_str()),
        (Some(2), Some("applied"))
    );
}
