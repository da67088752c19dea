//! `bento agent` against a server directory someone hostile could write: planted symlinks,
//! FIFOs, files grown after signing, oversized pointers and manifests, a rebuild that
//! never ends. Over the real `file://` transport and, where it matters, a real sshd.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::agent::Loop;
use crate::harness::{fails, ok, pub_line, s};
use crate::sshd::Sshd;

/// Runs `cmd`, failing the test (and killing it) if it takes longer than `limit`: a
/// regression that hangs fails instead of hanging the suite.
fn run_within(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("the agent did not return within {limit:?}: it hangs");
        }
    }
}

fn agent_cmd(l: &Loop, extra: &[&str]) -> Command {
    let mut args = vec!["agent", "--once", "--config", s(&l.config)];
    args.extend_from_slice(extra);
    l.fleet.cmd(&args)
}

fn report_of(out: &Output) -> serde_json::Value {
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn error_of(report: &serde_json::Value) -> &str {
    report["error"].as_str().unwrap()
}

/// Nothing installed, nothing half-downloaded left in the state dir, nothing run.
fn nothing_installed(l: &Loop) {
    assert!(
        std::fs::read_link(l.state.join("current")).is_err(),
        "nothing switched"
    );
    let left: Vec<_> = std::fs::read_dir(l.state.join("bundles"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "staging left behind: {left:?}");
    assert_eq!(l.calls(), "", "nothing ran");
}

fn mkfifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

fn append_config(l: &Loop, extra: &str) {
    let text = std::fs::read_to_string(&l.config).unwrap();
    std::fs::write(&l.config, format!("{text}{extra}")).unwrap();
}

#[test]
fn heartbeat_and_reports_replace_planted_links_instead_of_writing_through_them() {
    let l = Loop::new();
    l.deploy();
    let victim = l.fleet.home.join("victim");
    std::fs::write(&victim, "root:precious\n").unwrap();
    let logs = l.server.join("web1/logs");
    // Temp names the old code wrote through, and the heartbeat itself.
    for name in ["seen.tmp", "seen.json.tmp", "seen.json"] {
        symlink(&victim, logs.join(name)).unwrap();
    }
    ok(&l.agent(&[]));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root:precious\n");
    let seen = logs.join("seen.json");
    assert!(
        std::fs::symlink_metadata(&seen).unwrap().is_file(),
        "the link was replaced"
    );
    let beat: serde_json::Value = serde_json::from_slice(&std::fs::read(&seen).unwrap()).unwrap();
    assert_eq!(beat["applied"], serde_json::Value::Null);
    assert_eq!(l.reports().len(), 1, "the report went up");

    // `logs` itself a link out of the server: nothing is written there; the run works and
    // its report waits in the outbox.
    std::fs::write(
        l.fleet.path("hosts/web1/configuration.nix"),
        "{ services.nginx.enable = true; }\n",
    )
    .unwrap();
    l.deploy();
    let outside = tempfile::tempdir().unwrap();
    std::fs::rename(&logs, l.server.join("web1/logs.real")).unwrap();
    symlink(outside.path(), &logs).unwrap();
    ok(&l.agent(&[]));
    assert_eq!(
        std::fs::read_link(l.state.join("current")).unwrap(),
        Path::new("bundles/2")
    );
    let written: Vec<_> = std::fs::read_dir(outside.path()).unwrap().flatten().collect();
    assert!(written.is_empty(), "written through the link: {written:?}");
    let queued: Vec<_> = std::fs::read_dir(l.state.join("outbox"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        queued.iter().any(|n| n.starts_with("report-00000002")),
        "{queued:?}"
    );
}

#[test]
fn linked_bundle_files_and_a_linked_host_dir_are_refused() {
    let l = Loop::new();
    l.deploy();
    let file = l.server.join("web1/generations/1/config/configuration.nix");
    std::fs::remove_file(&file).unwrap();
    symlink("/etc/passwd", &file).unwrap();
    let report = report_of(&l.agent(&["--json"]));
    assert_eq!(report["state"], "refused");
    assert!(
        error_of(&report).contains("generations/1/config/configuration.nix")
            && error_of(&report).contains("symlink"),
        "{report}"
    );
    nothing_installed(&l);

    // The host's directory itself a link (to a copy elsewhere): refused, one clear line.
    let elsewhere = l.fleet.home.join("elsewhere");
    std::fs::rename(l.server.join("web1"), &elsewhere).unwrap();
    symlink(&elsewhere, l.server.join("web1")).unwrap();
    let e = fails(&l.agent(&[]));
    assert!(e.contains("web1: refused") && e.contains("symlink"), "{e}");
    nothing_installed(&l);
}

#[test]
fn a_bundle_file_grown_or_shrunk_after_signing_is_refused_by_its_signed_size() {
    let l = Loop::new();
    l.deploy();
    let file = l.server.join("web1/generations/1/config/configuration.nix");
    let signed = std::fs::metadata(&file).unwrap().len();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(l.server.join("web1/generations/1/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["sizes"]["config/configuration.nix"], signed);
    for (path, size) in manifest["sizes"].as_object().unwrap() {
        let on_disk = std::fs::metadata(l.server.join("web1/generations/1").join(path)).unwrap();
        assert_eq!(on_disk.len(), size.as_u64().unwrap(), "{path}");
    }

    // 64 MiB (sparse) swapped in after signing: refused before it is read.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let report = report_of(&run_within(agent_cmd(&l, &["--json"]), Duration::from_secs(60)));
    assert_eq!(report["state"], "refused");
    assert_eq!(
        error_of(&report),
        format!("config/configuration.nix: larger than the signed size {signed}")
    );
    assert!(report["bytes"].as_u64().unwrap() < 1 << 20, "{report}");
    nothing_installed(&l);

    std::fs::write(&file, "{ }\n").unwrap();
    let report = report_of(&l.agent(&["--json"]));
    assert_eq!(
        error_of(&report),
        format!("config/configuration.nix: 4 bytes, the signed size is {signed}")
    );
    nothing_installed(&l);
}

#[test]
fn a_manifest_without_sizes_is_refused_and_the_next_deploy_publishes_sizes() {
    let l = Loop::new();
    l.deploy();
    // What an older bento published: the same manifest without `sizes`, signed.
    let dir = l.server.join("web1/generations/1");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    manifest.as_object_mut().unwrap().remove("sizes");
    let mut bytes = serde_json::to_vec_pretty(&manifest).unwrap();
    bytes.push(b'\n');
    std::fs::write(dir.join("manifest.json"), &bytes).unwrap();
    let admin = l.fleet.keys.join("admin");
    let signed = Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", "bento", "-f", s(&admin)])
        .arg(dir.join("manifest.json"))
        .output()
        .unwrap();
    assert!(signed.status.success(), "{signed:?}");
    std::fs::rename(dir.join("manifest.json.sig"), dir.join("manifest.sig")).unwrap();

    let report = report_of(&l.agent(&["--json"]));
    assert_eq!(report["state"], "refused");
    assert!(
        error_of(&report).contains("no signed size") && error_of(&report).contains("bento deploy"),
        "{report}"
    );
    nothing_installed(&l);

    // Same content, but published again, now with sizes.
    let out = l
        .fleet
        .bento(&["deploy", "--server-root", s(&l.server), "--json"]);
    let hosts: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    let web1 = hosts["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "web1")
        .unwrap();
    assert_eq!(
        (web1["changed"].as_bool(), web1["generation"].as_u64()),
        (Some(true), Some(2))
    );
    ok(&l.agent(&[]));
    assert_eq!(
        std::fs::read_link(l.state.join("current")).unwrap(),
        Path::new("bundles/2")
    );
}

#[test]
fn a_fifo_current_and_oversized_unsigned_files_are_refused_at_once() {
    let l = Loop::new();
    l.deploy();
    let current = l.server.join("web1/current");
    mkfifo(&current);
    let e = fails(&run_within(agent_cmd(&l, &[]), Duration::from_secs(30)));
    assert!(e.contains("`current`") && e.contains("not a regular file"), "{e}");

    // A pointer of 5 KiB (a number padded with spaces would still parse).
    std::fs::remove_file(&current).unwrap();
    std::fs::write(&current, format!("1{}\n", " ".repeat(5000))).unwrap();
    let e = fails(&l.agent(&[]));
    assert!(e.contains("current: larger than 4096 bytes"), "{e}");
    std::fs::write(&current, "1\n").unwrap();

    // A manifest past 4 MiB, a signature past 64 KiB: refused before being read.
    let dir = l.server.join("web1/generations/1");
    let manifest = std::fs::read(dir.join("manifest.json")).unwrap();
    let mut padded = manifest.clone();
    padded.resize(4 * 1024 * 1024 + 1, b' ');
    std::fs::write(dir.join("manifest.json"), &padded).unwrap();
    let report = report_of(&l.agent(&["--json"]));
    assert_eq!(report["state"], "refused");
    assert!(
        error_of(&report).contains("manifest.json: larger than 4194304 bytes"),
        "{report}"
    );
    std::fs::write(dir.join("manifest.json"), &manifest).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("manifest.sig"))
        .unwrap()
        .set_len(64 * 1024 + 1)
        .unwrap();
    let report = report_of(&l.agent(&["--json"]));
    assert!(
        error_of(&report).contains("manifest.sig: larger than 65536 bytes"),
        "{report}"
    );
    nothing_installed(&l);
}

/// Whether process `pid` still runs (a zombie waiting to be reaped does not).
fn running(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

#[test]
fn the_run_deadline_stops_a_rebuild_that_never_ends() {
    let l = Loop::new();
    l.deploy();
    let pid_file = l.base().join("sleep.pid");
    let rebuild = l.fleet.script(
        "slow-rebuild",
        &format!(
            "echo \"nixos-rebuild $*\" >> {calls}\nsleep 300 &\necho $! > {pid}\nwait",
            calls = l.calls.display(),
            pid = pid_file.display()
        ),
    );
    l.write_config(&format!("file://{}", l.server.display()), &rebuild, None);
    append_config(&l, "run_timeout = 2\n");
    let started = Instant::now();
    let out = run_within(agent_cmd(&l, &["--json"]), Duration::from_secs(60));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let report = report_of(&out);
    assert_eq!(report["state"], "failed");
    assert_eq!(
        error_of(&report),
        "the rebuild command was stopped: the run took longer than run_timeout = 2 s"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{stderr}"
    );
    // The command's own child is gone too, `current` is put back, the report is out.
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    assert!(!running(pid.trim()), "the rebuild's child {pid} still runs");
    assert!(std::fs::read_link(l.state.join("current")).is_err());
    assert_eq!(l.reports().last().unwrap()["state"], "failed");
    // The lock is free: the next run starts at once (and waits for a newer generation).
    let out = run_within(agent_cmd(&l, &[]), Duration::from_secs(30));
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("failed before"));
}

#[test]
fn over_sftp_writes_never_follow_planted_links_and_a_fifo_is_refused() {
    if !crate::harness::needs_root("a real sshd with chroots under /srv, in a private mount namespace") {
        return;
    }
    let l = Loop::new();
    let sshd = Sshd::start(&[("bento-web1", "web1", &pub_line(&l.keys.web1))]);
    ok(&l.fleet.bento(&["deploy", "--server-root", s(&sshd.root)]));
    let logs = sshd.root.join("web1/logs");
    // The host's own file, and links to it where the old code put its temp files.
    std::fs::write(logs.join("victim"), "precious\n").unwrap();
    for name in ["seen.json.tmp", "seen.json"] {
        symlink("victim", logs.join(name)).unwrap();
    }
    let chown = |path: &Path| {
        let out = Command::new("chown")
            .args(["-h", "64991"])
            .arg(path)
            .status()
            .unwrap();
        assert!(out.success());
    };
    for entry in std::fs::read_dir(&logs).unwrap().flatten() {
        chown(&entry.path());
    }
    chown(&logs);
    let rebuild = l.fleet.keys.join("nixos-rebuild");
    l.write_config(
        &format!("sftp://bento-web1@127.0.0.1:{}", sshd.port),
        &rebuild,
        Some(&sshd.known_hosts),
    );
    ok(&run_within(agent_cmd(&l, &[]), Duration::from_secs(60)));
    assert_eq!(
        std::fs::read_to_string(logs.join("victim")).unwrap(),
        "precious\n"
    );
    let seen = logs.join("seen.json");
    assert!(std::fs::symlink_metadata(&seen).unwrap().is_file());
    let beat: serde_json::Value = serde_json::from_slice(&std::fs::read(&seen).unwrap()).unwrap();
    assert_eq!(beat["host"], "web1");
    let temps: Vec<_> = std::fs::read_dir(&logs)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(temps.is_empty(), "temp files left: {temps:?}");

    // `current` a FIFO: opening it would block the server's sftp process for good.
    mkfifo(&sshd.root.join("web1/current"));
    let e = fails(&run_within(agent_cmd(&l, &[]), Duration::from_secs(60)));
    assert!(e.contains("`current`") && e.contains("not a regular file"), "{e}");
}

#[test]
fn a_server_that_stops_answering_ends_the_run_at_its_deadline() {
    if !crate::harness::needs_root("a real sshd with chroots under /srv, in a private mount namespace") {
        return;
    }
    let l = Loop::new();
    let sshd = Sshd::start(&[("bento-web1", "web1", &pub_line(&l.keys.web1))]);
    ok(&l.fleet.bento(&["deploy", "--server-root", s(&sshd.root)]));
    // An ssh whose stream goes silent after 1200 bytes (in the manifest's download) while
    // its TCP connection and keep-alives are fine.
    let pid_file = l.base().join("ssh.pid");
    let ssh = l.fleet.script(
        "ssh-stalls",
        &format!(
            "echo $$ > {}\nssh \"$@\" | dd bs=1 count=1200 status=none\nexec sleep 600",
            pid_file.display()
        ),
    );
    let rebuild = l.fleet.keys.join("nixos-rebuild");
    l.write_config(
        &format!("sftp://bento-web1@127.0.0.1:{}", sshd.port),
        &rebuild,
        Some(&sshd.known_hosts),
    );
    append_config(&l, &format!("run_timeout = 3\nssh = \"{}\"\n", ssh.display()));
    let started = Instant::now();
    let out = run_within(agent_cmd(&l, &[]), Duration::from_secs(60));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let e = fails(&out);
    assert!(e.contains("the run's deadline passed"), "{e}");
    nothing_installed(&l);
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    assert!(!running(pid.trim()), "the stalled ssh wrapper {pid} still runs");
}
