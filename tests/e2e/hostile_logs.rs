//! What a hostile host can put in its `logs/` (or a hostile server in a host directory),
//! and what the admin's `bento status` and `bento diff` make of it: no symlink followed,
//! no special file opened for long, no oversized file read, no file content echoed, no
//! escape sequence reaching the terminal, no host-chosen string handed to nix as an option
//! or an installable.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{fails, ok, s};
use crate::status::{host, status_json, status_of, Written, SYSTEM_A, SYSTEM_B};

/// A report file as an agent writes it, with `fields` overriding the defaults.
fn report_json(host: &str, g: u64, fields: Value) -> Vec<u8> {
    let mut report = json!({
        "format": 1, "host": host, "generation": g, "previous_generation": null,
        "state": "failed", "time": bento_deploy::time::now_rfc3339(),
        "system_before": null, "system_after": null, "system_expected": null,
        "duration_ms": 1, "bytes": 1, "error": "boom", "secrets_changed": [],
        "kernel_changed": false, "agent": "0.1.0",
    });
    for (k, v) in fields.as_object().unwrap() {
        report[k] = v.clone();
    }
    serde_json::to_vec(&report).unwrap()
}

/// `bento ARGS` with a deadline: a regression that blocks (a FIFO) fails instead of hanging.
fn bento_within(w: &Written, args: &[&str], limit: Duration) -> std::process::Output {
    let mut all = args.to_vec();
    all.extend(["--server-root", s(&w.server)]);
    let mut child = w
        .fleet
        .cmd(&all)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("bento {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn mkfifo(path: &Path) {
    let made = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(made.success(), "mkfifo {}", path.display());
}

#[test]
fn status_follows_no_link_and_opens_no_special_file_in_logs() {
    let w = Written::new(&["zero", "linked", "fifo", "logslink", "fine"]);
    // A file elsewhere on the server that root can read, holding a perfectly valid report
    // for the host that links to it: its content must never be read nor shown.
    let elsewhere = w.fleet.home.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let private = elsewhere.join("report-00000001-2099-01-01T000000Z.json");
    std::fs::write(
        &private,
        report_json("linked", 1, json!({"error": "TOP-SECRET-LINE"})),
    )
    .unwrap();

    for h in ["zero", "linked", "fifo", "logslink", "fine"] {
        w.publish(h, 1, 60, None);
    }
    // seen.json -> /dev/zero: before, status read it until memory ran out.
    symlink("/dev/zero", w.server.join("zero/logs/seen.json")).unwrap();
    // A report that is a symlink to a readable file elsewhere.
    symlink(
        &private,
        w.server
            .join("linked/logs/report-00000001-2099-01-01T000000Z.json"),
    )
    .unwrap();
    // A report and the heartbeat as FIFOs: opening them for reading would block forever.
    mkfifo(&w.server.join("fifo/logs/report-00000001-2099-01-01T000000Z.json"));
    mkfifo(&w.server.join("fifo/logs/seen.json"));
    // logs/ itself a symlink to a directory elsewhere.
    std::fs::remove_dir_all(w.server.join("logslink/logs")).unwrap();
    symlink(&elsewhere, w.server.join("logslink/logs")).unwrap();
    w.report("fine", 1, "applied", 30, None);
    w.seen("fine", 10);

    let out = bento_within(&w, &["status", "--json"], Duration::from_secs(20));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("memory"),
        "{stderr}"
    );
    assert!(
        !stdout.contains("TOP-SECRET-LINE"),
        "content behind a link was shown: {stdout}"
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(status_of(&doc, "fine"), "up-to-date", "{doc}");
    let problem = |h: &str| host(&doc, h)["problem"].as_str().unwrap_or_default().to_owned();
    assert!(problem("zero").contains("logs/seen.json: refused"), "{doc}");
    assert_eq!(status_of(&doc, "linked"), "bad-report", "{doc}");
    assert!(problem("linked").contains("symlink"), "{doc}");
    assert_eq!(status_of(&doc, "fifo"), "bad-report", "{doc}");
    assert!(problem("fifo").contains("not a regular file"), "{doc}");
    assert_eq!(status_of(&doc, "logslink"), "bad-report", "{doc}");
    assert!(
        problem("logslink").contains("logs: refused: it is a symlink"),
        "{doc}"
    );

    // The table and watch's frames come from the same reads.
    let out = bento_within(&w, &["status"], Duration::from_secs(20));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(!table.contains("TOP-SECRET-LINE"), "{table}");
    assert!(table.contains("bad-report"), "{table}");
}

#[test]
fn a_host_directory_that_is_a_link_is_flagged_not_followed() {
    let w = Written::new(&["web1", "db1"]);
    w.publish("db1", 1, 60, None);
    w.report("db1", 1, "applied", 30, None);
    // Something with write access to the server root points web1's dir at db1's.
    symlink(w.server.join("db1"), w.server.join("web1")).unwrap();
    let (doc, _) = status_json(&w.fleet, &w.server);
    assert_eq!(status_of(&doc, "web1"), "bad-current", "{doc}");
    let problem = host(&doc, "web1")["problem"].as_str().unwrap().to_owned();
    assert!(problem.contains("web1: refused: it is a symlink"), "{problem}");
    assert_eq!(status_of(&doc, "db1"), "up-to-date", "{doc}");
}

#[test]
fn oversized_files_in_logs_are_flagged_and_ignored() {
    let w = Written::new(&["big", "fine"]);
    w.publish("big", 1, 60, None);
    w.publish("fine", 1, 60, None);
    w.report("fine", 1, "applied", 30, None);
    // An older, good report, and a newest one of 64 MiB (sparse: no disk used).
    w.report("big", 1, "applied", 600, None);
    let huge =
        std::fs::File::create(w.server.join("big/logs/report-00000001-2099-01-01T000000Z.json")).unwrap();
    huge.set_len(64 << 20).unwrap();
    let beat = std::fs::File::create(w.server.join("big/logs/seen.json")).unwrap();
    beat.set_len(16 << 20).unwrap();

    let started = Instant::now();
    let (doc, _) = status_json(&w.fleet, &w.server);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(status_of(&doc, "big"), "bad-report", "{doc}");
    let problem = host(&doc, "big")["problem"].as_str().unwrap().to_owned();
    assert!(
        problem.contains("report-00000001-2099-01-01T000000Z.json: larger than 1048576 bytes, ignored"),
        "{problem}"
    );
    assert!(
        problem.contains("logs/seen.json: larger than 65536 bytes"),
        "{problem}"
    );
    // The older report was still read; the other host is untouched.
    assert_eq!(host(&doc, "big")["reported_state"], "applied", "{doc}");
    assert_eq!(status_of(&doc, "fine"), "up-to-date", "{doc}");
}

#[test]
fn report_content_is_never_echoed_in_problems() {
    let w = Written::new(&["web1", "db1"]);
    w.publish("web1", 1, 60, None);
    w.publish("db1", 1, 60, None);
    // Wrong shapes: serde would quote the offending values in its messages.
    std::fs::write(
        w.server.join("web1/logs/report-00000001-2099-01-01T000000Z.json"),
        report_json("web1", 1, json!({"state": "LEAKED-VARIANT", "generation": 1})),
    )
    .unwrap();
    std::fs::write(
        w.server.join("db1/logs/seen.json"),
        serde_json::to_vec(
            &json!({"format": 1, "host": "LEAKED-HOST", "time": "x", "applied": 1, "agent": "1"}),
        )
        .unwrap(),
    )
    .unwrap();
    std::fs::write(
        w.server.join("db1/logs/report-00000001-2099-01-01T000000Z.json"),
        report_json("LEAKED-OTHER\u{1b}[2J", 1, json!({})),
    )
    .unwrap();
    let (doc, _) = status_json(&w.fleet, &w.server);
    let text = doc.to_string();
    assert!(!text.contains("LEAKED"), "{text}");
    let problem = host(&doc, "web1")["problem"].as_str().unwrap().to_owned();
    assert!(
        problem.contains("not a report (not the expected shape at line 1 column"),
        "{problem}"
    );
    let problem = host(&doc, "db1")["problem"].as_str().unwrap().to_owned();
    assert!(problem.contains("the heartbeat of another host"), "{problem}");
    assert!(
        problem.contains("a report of another host, not `db1`"),
        "{problem}"
    );
}

#[test]
fn escape_sequences_from_a_report_never_reach_the_terminal() {
    let w = Written::new(&["web1"]);
    w.publish("web1", 1, 60, Some(SYSTEM_B));
    // Clear the screen, set the window title, write the clipboard, reorder the text.
    let hostile = "boom\u{1b}[2J\u{1b}]0;owned\u{7}\u{1b}]52;c;cm0gLXJmIH4=\u{7}\u{9b}31m\u{202e}evil";
    std::fs::write(
        w.server.join("web1/logs/report-00000001-2099-01-01T000000Z.json"),
        report_json(
            "web1",
            1,
            json!({"error": hostile, "system_after": "/x\u{1b}[1m"}),
        ),
    )
    .unwrap();
    // The table (what --watch redraws): nothing a terminal acts on, the text still there.
    let out = w.bento(&["status"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "a failed host: {table}");
    for control in ['\u{1b}', '\u{7}', '\u{9b}', '\u{202e}'] {
        assert!(
            !table.contains(control),
            "{control:?} reached the terminal: {table:?}"
        );
    }
    assert!(table.contains("boom\\u{1b}[2J\\u{1b}]0;owned\\u{7}"), "{table}");
    // JSON stays exact: the same string, escaped the JSON way.
    let (doc, _) = status_json(&w.fleet, &w.server);
    assert_eq!(host(&doc, "web1")["error"], hostile);
    // `bento diff`'s messages are escaped the same way (and the path refused, below).
    let out = w.bento(&["diff", "web1"]);
    let err = fails(&out);
    assert!(!String::from_utf8_lossy(&out.stderr).contains('\u{1b}'), "{err}");
}

/// Two store paths in a private Nix store under `dir` (no residue in the machine's store),
/// named as NixOS systems of versions 1.0 and 2.0 so `diff-closures` has something to say.
fn private_store_paths(dir: &Path) -> (String, String, String) {
    crate::harness::require("nix-store");
    let store = dir.join("nix-store");
    let config = format!("store = {}", store.display());
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let add = |name: &str| {
        std::fs::write(src.join(name), name).unwrap();
        let out = Command::new("nix-store")
            .arg("--add")
            .arg(src.join(name))
            .env("NIX_CONFIG", &config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    (add("nixos-system-web1-1.0"), add("nixos-system-web1-2.0"), config)
}

#[test]
fn diff_hands_nix_only_plain_store_paths_after_double_dash() {
    let w = Written::new(&["web1", "db1"]);
    let (running, expected, nix_config) = private_store_paths(&w.fleet.home);
    let real_path = std::env::var_os("PATH").unwrap();
    let diff = |h: &str| {
        w.fleet
            .cmd(&["diff", h, "--server-root", s(&w.server)])
            .env("NIX_CONFIG", &nix_config)
            .env("PATH", &real_path)
            .output()
            .unwrap()
    };
    // Real paths, real nix: the closure diff shows the version change.
    w.publish("web1", 2, 60, Some(&expected));
    w.report("web1", 1, "applied", 600, Some(&running));
    let out = diff("web1");
    let text = ok(&out);
    assert!(
        text.contains("1.0 → 2.0"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A host-chosen "system" that nix would read as an option, or as a flake to fetch,
    // evaluate and build: refused before anything runs.
    let flake = w.fleet.home.join("flake");
    std::fs::create_dir_all(&flake).unwrap();
    std::fs::write(flake.join("flake.nix"), "{ outputs = { self }: { }; }\n").unwrap();
    for hostile in [
        "--version".to_owned(),
        format!("path:{}", flake.display()),
        format!("{SYSTEM_A}/../../../etc"),
        "/nix/store/../../etc/shadow".to_owned(),
    ] {
        w.report("web1", 1, "applied", 0, Some(&hostile));
        let out = diff("web1");
        let err = fails(&out);
        assert!(
            err.contains("the host's report names a running system that is not a Nix store path")
                && err.contains("untrusted"),
            "{hostile}: {err}"
        );
        assert!(!err.contains(&hostile), "the refused string is not echoed: {err}");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !all.contains("nix (Nix)"),
            "nix ran with the host's string: {all}"
        );
    }
    // The expected system comes from a manifest on the server: checked the same way.
    w.publish("db1", 1, 60, Some("--help"));
    w.report("db1", 1, "applied", 0, Some(SYSTEM_B));
    let err = fails(&diff("db1"));
    assert!(
        err.contains("names an expected system that is not a Nix store path"),
        "{err}"
    );
}
