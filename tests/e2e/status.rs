//! `bento status` and `bento diff`: states produced by real agent runs and by report files
//! written here, the JSON shape, the Prometheus text (read back by a real parser), the
//! watch mode waking on a new report, and the diff's error paths.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::agent::Loop;
use crate::harness::{fails, ok, s, Fleet};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn time(ago: u64) -> String {
    bento_deploy::time::rfc3339(now() - ago)
}

/// `bento status --json`: the document and the exit code.
pub(crate) fn status_json(fleet: &Fleet, server: &Path) -> (Value, Option<i32>) {
    let out = fleet.bento(&["status", "--json", "--server-root", s(server)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    (doc, out.status.code())
}

pub(crate) fn host<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == name)
        .unwrap_or_else(|| panic!("no {name} in {doc}"))
}

pub(crate) fn status_of(doc: &Value, name: &str) -> String {
    host(doc, name)["status"].as_str().unwrap().to_owned()
}

#[test]
fn states_from_real_agent_runs() {
    let l = Loop::new();
    // Nothing deployed: the server root does not exist yet.
    let err = fails(&l.fleet.bento(&["status", "--server-root", s(&l.server)]));
    assert!(err.contains("the server root does not exist"), "{err}");

    l.deploy();
    let (doc, code) = status_json(&l.fleet, &l.server);
    assert_eq!(code, Some(0));
    assert_eq!(status_of(&doc, "web1"), "never-seen");
    assert_eq!(status_of(&doc, "db1"), "never-seen");
    assert_eq!(host(&doc, "web1")["generation_lag"], 1);

    ok(&l.agent(&[]));
    let (doc, code) = status_json(&l.fleet, &l.server);
    assert_eq!(code, Some(0));
    let web1 = host(&doc, "web1");
    assert_eq!(web1["status"], "up-to-date");
    assert_eq!(web1["reported_state"], "applied");
    assert_eq!(web1["reported_generation"], 1);
    assert_eq!(web1["generation_lag"], 0);
    let system = l.base().join("store/fake-system-1");
    assert_eq!(web1["reported_system"], system.display().to_string());
    // Problems first: db1 (never seen) sorts before web1 (up to date).
    assert_eq!(doc["hosts"][0]["host"], "db1");

    // A new generation, not yet picked up.
    let config = l.fleet.path("hosts/web1/configuration.nix");
    std::fs::write(&config, "{ services.nginx.enable = true; }\n").unwrap();
    l.deploy();
    let (doc, _) = status_json(&l.fleet, &l.server);
    assert_eq!(status_of(&doc, "web1"), "pending");
    assert_eq!(host(&doc, "web1")["generation_lag"], 1);

    // Its rebuild fails: failed, and the exit status says so.
    std::fs::write(l.base().join("fail-rebuild"), "").unwrap();
    assert!(!l.agent(&[]).status.success());
    let (doc, code) = status_json(&l.fleet, &l.server);
    assert_eq!(code, Some(1));
    assert_eq!(status_of(&doc, "web1"), "failed");
    let error = host(&doc, "web1")["error"].as_str().unwrap().to_owned();
    assert!(error.contains("evaluation failed"), "{error}");
    let table = l.fleet.bento(&["status", "--server-root", s(&l.server)]);
    assert_eq!(table.status.code(), Some(1));
    let text = String::from_utf8_lossy(&table.stdout);
    let first = text.lines().nth(1).unwrap();
    assert!(first.starts_with("web1") && first.contains("failed"), "{text}");
    assert!(text.contains("evaluation failed"), "{text}");
    std::fs::remove_file(l.base().join("fail-rebuild")).unwrap();

    // A bundle tampered with after signing is rejected.
    std::fs::write(&config, "{ services.nginx.enable = false; }\n").unwrap();
    l.deploy();
    let file = l.server.join("web1/generations/3/config/configuration.nix");
    std::fs::write(&file, "{ users.users.evil = {}; }\n").unwrap();
    assert!(!l.agent(&[]).status.success());
    let (doc, code) = status_json(&l.fleet, &l.server);
    assert_eq!(code, Some(1));
    assert_eq!(status_of(&doc, "web1"), "rejected");

    // A switch that loses the server is rolled back.
    std::fs::write(&config, "{ networking.firewall.enable = true; }\n").unwrap();
    l.deploy();
    std::fs::write(l.base().join("lose-server"), "").unwrap();
    assert!(!l.agent(&[]).status.success());
    std::fs::remove_file(l.base().join("lose-server")).unwrap();
    std::fs::rename(l.server.join("web1.away"), l.server.join("web1")).unwrap();
    ok(&l.agent(&[])); // sends the queued report
    let (doc, code) = status_json(&l.fleet, &l.server);
    assert_eq!(status_of(&doc, "web1"), "rolled-back", "{doc}");
    assert_eq!(code, Some(1));
}

/// Publishes generation `g` of `host` into the server root `server`, `ago` seconds ago,
/// as `bento deploy` lays it out (a manifest, no files).
pub(crate) fn publish_by_hand(server: &Path, host: &str, g: u64, ago: u64, system: Option<&str>) {
    let dir = server.join(host);
    std::fs::create_dir_all(dir.join(format!("generations/{g}"))).unwrap();
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let manifest = json!({
        "format": 1, "host": host, "generation": g, "created": time(ago),
        "git_commit": null, "system": system, "files": {}, "secrets": [],
    });
    std::fs::write(
        dir.join(format!("generations/{g}/manifest.json")),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("current"), format!("{g}\n")).unwrap();
}

/// Writes into `server`'s `host/logs/` a report as an agent (or a host lying) would;
/// returns its file name.
pub(crate) fn report_by_hand(
    server: &Path,
    host: &str,
    g: u64,
    state: &str,
    ago: u64,
    system: Option<&str>,
    error: Option<&str>,
) -> String {
    let t = time(ago);
    let report = json!({
        "format": 1, "host": host, "generation": g, "previous_generation": null,
        "state": state, "time": t, "system_before": null, "system_after": system,
        "system_expected": null, "duration_ms": 1200, "bytes": 4096,
        "error": error, "secrets_changed": [], "kernel_changed": false, "agent": "0.1.0",
    });
    let name = format!("report-{g:08}-{}.json", t.replace(':', ""));
    let logs = server.join(host).join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(logs.join(&name), serde_json::to_vec_pretty(&report).unwrap()).unwrap();
    name
}

/// A fleet of hosts that exist only by name, and a server root written by hand.
pub(crate) struct Written {
    pub(crate) fleet: Fleet,
    pub(crate) server: PathBuf,
}

pub(crate) const SYSTEM_A: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-a";
pub(crate) const SYSTEM_B: &str = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-nixos-system-b";

impl Written {
    pub(crate) fn new(hosts: &[&str]) -> Written {
        let fleet = Fleet::new();
        for h in hosts {
            let dir = fleet.path(&format!("hosts/{h}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("configuration.nix"), "{ }\n").unwrap();
            // Status reads host names only, never the keys.
            std::fs::write(fleet.path(&format!("keys/hosts/{h}.pub")), "ssh-ed25519 AAAA\n").unwrap();
        }
        let server = fleet.home.join("server");
        std::fs::create_dir_all(&server).unwrap();
        Written { fleet, server }
    }

    /// Publishes generation `g` of `host`, `ago` seconds ago.
    pub(crate) fn publish(&self, host: &str, g: u64, ago: u64, system: Option<&str>) {
        publish_by_hand(&self.server, host, g, ago, system);
    }

    /// Writes a report as an agent would; returns its file name.
    pub(crate) fn report(&self, host: &str, g: u64, state: &str, ago: u64, system: Option<&str>) -> String {
        let error = (state == "failed").then_some("nixos-rebuild: error: boom");
        report_by_hand(&self.server, host, g, state, ago, system, error)
    }

    /// Writes the heartbeat an agent leaves at each poll, `ago` seconds ago.
    pub(crate) fn seen(&self, host: &str, ago: u64) {
        let beat = json!({
            "format": 1, "host": host, "time": time(ago), "applied": 1, "agent": "0.1.0",
        });
        let logs = self.server.join(host).join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::write(logs.join("seen.json"), serde_json::to_vec(&beat).unwrap()).unwrap();
    }

    pub(crate) fn bento(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend(["--server-root", s(&self.server)]);
        self.fleet.bento(&all)
    }
}

const HOSTS: [&str; 10] = [
    "ok", "failed", "rolled", "refused", "stale", "cut", "bad", "never", "unpub", "waiting",
];

/// Every state, from report files.
fn every_state() -> Written {
    let w = Written::new(&HOSTS);
    let hour = 3600;
    w.publish("ok", 2, 250 * hour, Some(SYSTEM_A));
    w.report("ok", 1, "applied", 260 * hour, Some(SYSTEM_B));
    // Ten days idle after applying: still up to date (an idle host does not report).
    w.report("ok", 2, "applied", 240 * hour, Some(SYSTEM_A));
    w.publish("failed", 1, hour, None);
    w.report("failed", 1, "failed", 60, None);
    w.publish("rolled", 1, hour, None);
    w.report("rolled", 1, "rolled-back", 60, None);
    w.publish("refused", 1, hour, None);
    w.report("refused", 1, "refused", 60, None);
    // Published four hours ago; the host last reported generation 1, a day ago.
    w.publish("stale", 2, 4 * hour, None);
    w.report("stale", 1, "applied", 24 * hour, None);
    w.publish("cut", 1, 600, None);
    w.report("cut", 1, "interrupted", 60, None);
    w.publish("bad", 1, hour, None);
    w.report("bad", 1, "applied", 2 * hour, None);
    std::fs::write(
        w.server.join("bad/logs/report-00000001-2099-01-01T000000Z.json"),
        b"{\"format\": 1, \"host\": \"bad\", \"gener",
    )
    .unwrap();
    w.publish("never", 1, hour, None);
    w.publish("waiting", 2, 60, None);
    w.report("waiting", 1, "applied", hour, None);
    // A directory on the server that the fleet does not define.
    w.publish("ghost", 1, hour, None);
    w
}

#[test]
fn states_from_report_files() {
    let w = every_state();
    let (doc, code) = status_json(&w.fleet, &w.server);
    assert_eq!(code, Some(1), "failed hosts make the exit status 1");
    let expect = [
        ("ok", "up-to-date"),
        ("failed", "failed"),
        ("rolled", "rolled-back"),
        ("refused", "rejected"),
        ("stale", "stale"),
        ("cut", "interrupted"),
        ("bad", "bad-report"),
        ("never", "never-seen"),
        ("unpub", "unpublished"),
        ("waiting", "pending"),
        ("ghost", "never-seen"),
    ];
    for (name, want) in expect {
        assert_eq!(status_of(&doc, name), want, "{name}: {doc}");
    }
    assert_eq!(host(&doc, "ghost")["in_fleet"], false);
    assert_eq!(host(&doc, "ok")["in_fleet"], true);
    // The unreadable report is named, and the one before it still shows.
    let bad = host(&doc, "bad");
    let problem = bad["problem"].as_str().unwrap();
    assert!(
        problem.contains("logs/report-00000001-2099-01-01T000000Z.json: not a report"),
        "{problem}"
    );
    assert_eq!(bad["reported_state"], "applied");
    // Ages and lag.
    let ok_host = host(&doc, "ok");
    let ago = ok_host["reported_ago_seconds"].as_u64().unwrap();
    assert!((240 * 3600..240 * 3600 + 60).contains(&ago), "{ago}");
    assert_eq!(ok_host["expected_system"], SYSTEM_A);
    assert_eq!(ok_host["reported_system"], SYSTEM_A);
    assert_eq!(host(&doc, "stale")["generation_lag"], 1);
    assert_eq!(host(&doc, "never")["generation_lag"], 1);
    assert_eq!(host(&doc, "unpub")["generation_lag"], Value::Null);
    // Sorted: problems first, by severity.
    let order: Vec<&str> = doc["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(order.first(), Some(&"failed"));
    assert_eq!(order.last(), Some(&"up-to-date"));
    assert_eq!(doc["totals"]["never-seen"], 2);
    assert_eq!(doc["totals"]["up-to-date"], 1);

    // Without failures, exit 0.
    for h in ["failed", "rolled", "refused"] {
        std::fs::remove_dir_all(w.server.join(h)).unwrap();
    }
    let (_, code) = status_json(&w.fleet, &w.server);
    assert_eq!(code, Some(0));
}

#[test]
fn a_longer_interval_makes_the_same_host_pending() {
    let w = every_state();
    let (doc, _) = status_json(&w.fleet, &w.server);
    assert_eq!(doc["stale_after_seconds"], 2700);
    std::fs::write(
        w.fleet.path("bento.toml"),
        "[status]\ninterval = \"1h\"\nstale_after = 5\n",
    )
    .unwrap();
    let (doc, _) = status_json(&w.fleet, &w.server);
    assert_eq!(doc["stale_after_seconds"], 18_000);
    assert_eq!(status_of(&doc, "stale"), "pending");
}

#[test]
fn garbage_on_the_server_is_shown_not_fatal() {
    let w = Written::new(&["a", "b", "c", "d"]);
    w.publish("a", 1, 60, None);
    std::fs::write(w.server.join("a/current"), "seven\n").unwrap();
    w.publish("b", 3, 60, None);
    std::fs::remove_file(w.server.join("b/generations/3/manifest.json")).unwrap();
    w.publish("c", 1, 60, None);
    let logs = w.server.join("c/logs");
    std::fs::write(logs.join("report-00000001-2026-01-01T000000Z.json"), b"").unwrap();
    std::fs::write(logs.join("report-00000001-2026-01-02T000000Z.json"), b"[1, 2]").unwrap();
    std::fs::write(logs.join("report-nonsense.json"), b"x").unwrap();
    w.publish("d", 1, 60, None);
    w.report("c", 1, "applied", 60, None);
    // d's logs hold c's report.
    let name = w.report("c", 1, "applied", 30, None);
    std::fs::rename(logs.join(&name), w.server.join("d/logs").join(&name)).unwrap();
    let (doc, _) = status_json(&w.fleet, &w.server);
    assert_eq!(status_of(&doc, "a"), "bad-current");
    let problem = host(&doc, "a")["problem"].as_str().unwrap().to_owned();
    assert!(
        problem.starts_with("current: not a generation number"),
        "{problem}"
    );
    assert_eq!(status_of(&doc, "b"), "never-seen");
    let problem = host(&doc, "b")["problem"].as_str().unwrap().to_owned();
    assert!(
        problem.contains("generations/3/manifest.json is missing"),
        "{problem}"
    );
    // c's newest report (by time) is readable: the broken older ones do not matter.
    assert_eq!(status_of(&doc, "c"), "up-to-date");
    assert_eq!(status_of(&doc, "d"), "bad-report");
    let problem = host(&doc, "d")["problem"].as_str().unwrap().to_owned();
    assert!(problem.contains("a report of another host, not `d`"), "{problem}");
    // The table shows them too, and does not fail for them.
    let out = w.bento(&["status"]);
    let text = ok(&out);
    assert!(
        text.contains("bad-current") && text.contains("not a generation number"),
        "{text}"
    );
    assert!(!text.contains("seven"), "file content is never echoed: {text}");
}

#[test]
fn json_field_names_are_stable() {
    let w = every_state();
    std::fs::write(
        w.fleet.path("bento.toml"),
        "[hosts.ok]\naddress = \"ok.example.org\"\nssh_user = \"root\"\n",
    )
    .unwrap();
    let (doc, _) = status_json(&w.fleet, &w.server);
    let keys = |v: &Value| -> BTreeSet<String> { v.as_object().unwrap().keys().cloned().collect() };
    let set = |names: &[&str]| -> BTreeSet<String> { names.iter().map(|s| s.to_string()).collect() };
    assert_eq!(
        keys(&doc),
        set(&[
            "format",
            "time",
            "server_root",
            "stale_after_seconds",
            "hosts",
            "totals"
        ])
    );
    assert_eq!(doc["format"], 1);
    let host_fields = set(&[
        "host",
        "in_fleet",
        "status",
        "expected_generation",
        "expected_system",
        "signers",
        "mode",
        "published",
        "published_ago_seconds",
        "reported_generation",
        "reported_state",
        "reported_system",
        "reported_at",
        "reported_ago_seconds",
        "seen_at",
        "seen_ago_seconds",
        "generation_lag",
        "report_file",
        "error",
        "failed_check",
        "problem",
        "ssh",
        "addresses",
        "ssh_port",
    ]);
    for h in doc["hosts"].as_array().unwrap() {
        assert_eq!(keys(h), host_fields, "{h}");
    }
    assert_eq!(
        keys(&doc["totals"]),
        set(&[
            "failed",
            "rolled-back",
            "unhealthy-rolled-back",
            "rejected",
            "bad-report",
            "bad-current",
            "interrupted",
            "stale",
            "never-seen",
            "pending",
            "unpublished",
            "up-to-date",
        ])
    );
    assert_eq!(host(&doc, "ok")["ssh"], "ssh root@ok.example.org");
    assert_eq!(host(&doc, "failed")["ssh"], Value::Null);
    let file = host(&doc, "ok")["report_file"].as_str().unwrap().to_owned();
    assert!(
        file.starts_with("report-00000002-") && file.ends_with("Z.json"),
        "{file}"
    );
}

#[test]
fn prometheus_output_parses() {
    let w = every_state();
    let out = w.bento(&["status", "--prometheus"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    for metric in [
        "bento_host_up_to_date",
        "bento_host_last_report_timestamp_seconds",
        "bento_host_published_timestamp_seconds",
        "bento_host_generation_lag",
        "bento_host_state",
        "bento_hosts",
    ] {
        assert!(scrape.docs.contains_key(metric), "no HELP for {metric}");
        assert!(
            text.contains(&format!("# TYPE {metric} gauge\n")),
            "no TYPE for {metric}"
        );
    }
    let value = |name: &str, label: (&str, &str), label2: Option<(&str, &str)>| -> Option<f64> {
        scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == name
                    && s.labels.get(label.0) == Some(label.1)
                    && label2.is_none_or(|(k, v)| s.labels.get(k) == Some(v))
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
                ref other => panic!("{name}: {other:?}"),
            })
    };
    assert_eq!(value("bento_host_up_to_date", ("host", "ok"), None), Some(1.0));
    assert_eq!(
        value("bento_host_up_to_date", ("host", "failed"), None),
        Some(0.0)
    );
    assert_eq!(
        value("bento_host_generation_lag", ("host", "stale"), None),
        Some(1.0)
    );
    assert_eq!(
        value(
            "bento_host_last_report_timestamp_seconds",
            ("host", "never"),
            None
        ),
        None
    );
    let t = value(
        "bento_host_last_report_timestamp_seconds",
        ("host", "failed"),
        None,
    )
    .unwrap();
    assert!((t - (now() - 60) as f64).abs() < 30.0, "{t}");
    assert_eq!(
        value(
            "bento_host_state",
            ("host", "refused"),
            Some(("state", "rejected"))
        ),
        Some(1.0)
    );
    // One-hot: every host has exactly one state set.
    let mut per_host: BTreeMap<String, f64> = BTreeMap::new();
    for sample in scrape.samples.iter().filter(|s| s.metric == "bento_host_state") {
        let prometheus_parse::Value::Gauge(v) = sample.value else {
            panic!("{sample:?}")
        };
        *per_host
            .entry(sample.labels.get("host").unwrap().to_owned())
            .or_default() += v;
    }
    assert_eq!(per_host.len(), HOSTS.len() + 1);
    assert!(per_host.values().all(|&v| v == 1.0), "{per_host:?}");
    assert_eq!(value("bento_hosts", ("status", "never-seen"), None), Some(2.0));
    assert_eq!(value("bento_hosts", ("status", "bad-current"), None), Some(0.0));
}

/// Collects a child's stdout as it comes.
pub(crate) fn collect(mut child_out: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = child_out.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    text
}

pub(crate) fn wait_for(text: &Arc<Mutex<String>>, what: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if text.lock().unwrap().contains(what) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn watch_redraws_when_a_report_arrives() {
    let w = Written::new(&["web1"]);
    w.publish("web1", 1, 60, None);
    let mut child = w
        .fleet
        .cmd(&["status", "--watch", "--server-root", s(&w.server)])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let text = collect(child.stdout.take().unwrap());
    let first = wait_for(&text, "never-seen", Duration::from_secs(10));
    // bento installs its watches before it draws a frame: a report written after the
    // first frame is seen.
    let started = Instant::now();
    if first {
        w.report("web1", 1, "applied", 0, None);
    }
    let woke = first && wait_for(&text, "up-to-date", Duration::from_secs(3));
    let took = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    let seen = text.lock().unwrap().clone();
    assert!(first, "no first frame: {seen}");
    assert!(woke, "no new frame within 3 s of the report: {seen}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(seen.matches("HOST").count(), 2, "exactly two frames: {seen}");
}

#[test]
fn diff_runs_nvd_or_nix_and_says_why_it_cannot() {
    let w = Written::new(&["web1", "db1"]);
    w.publish("web1", 2, 60, Some(SYSTEM_B));
    w.report("web1", 1, "applied", 600, Some(SYSTEM_A));
    w.publish("db1", 1, 60, None);
    w.report("db1", 1, "applied", 30, Some(SYSTEM_A));
    let bin = w.fleet.home.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let diff = |host: &str, path: &Path| {
        w.fleet
            .cmd(&["diff", host, "--server-root", s(&w.server)])
            .env("PATH", path)
            .output()
            .unwrap()
    };
    // Neither tool installed.
    let err = fails(&diff("web1", &bin));
    assert!(err.contains("needs `nvd` or `nix` on PATH"), "{err}");
    // Unknown host.
    let err = fails(&diff("web9", &bin));
    assert!(err.contains("no such host `web9` on the server"), "{err}");
    // No expected system recorded.
    let err = fails(&diff("db1", &bin));
    assert!(
        err.contains("generation 1 records no expected system: run `bento build db1`"),
        "{err}"
    );
    // nix only: `nix store diff-closures RUNNING EXPECTED`.
    let log = w.fleet.home.join("calls");
    let record = format!("echo \"${{0##*/}} $*\" >> {}", log.display());
    let nix = w.fleet.script("nix", &record);
    std::fs::copy(&nix, bin.join("nix")).unwrap();
    ok(&diff("web1", &bin));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        format!(
            "nix --extra-experimental-features nix-command --option max-jobs 0 --option substitute false store diff-closures -- {SYSTEM_A} {SYSTEM_B}\n"
        )
    );
    // nvd is preferred when present.
    std::fs::copy(&nix, bin.join("nvd")).unwrap();
    std::fs::remove_file(&log).unwrap();
    ok(&diff("web1", &bin));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        format!("nvd diff -- {SYSTEM_A} {SYSTEM_B}\n")
    );
    // A tool that fails (paths not in the store) is one error line.
    std::fs::write(bin.join("nvd"), "#!/bin/sh\nexit 3\n").unwrap();
    let err = fails(&diff("web1", &bin));
    assert!(err.contains("must be in the local Nix store"), "{err}");
    // Same system: nothing to diff.
    w.report("web1", 2, "applied", 0, Some(SYSTEM_B));
    let out = diff("web1", &bin);
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("runs the expected system"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_status_settings_are_one_clear_line() {
    let w = Written::new(&["web1"]);
    std::fs::write(w.fleet.path("bento.toml"), "[status]\ninterval = \"soon\"\n").unwrap();
    let err = fails(&w.bento(&["status"]));
    assert!(
        err.contains("bento.toml:2: status.interval `soon` is not a time span"),
        "{err}"
    );
    std::fs::write(w.fleet.path("bento.toml"), "[status]\nstale_after = 0\n").unwrap();
    let err = fails(&w.bento(&["status"]));
    assert!(
        err.contains("bento.toml:2: status.stale_after must be between 1 and 1000"),
        "{err}"
    );
    std::fs::write(w.fleet.path("bento.toml"), "[hosts.web1]\naddress = \"a b\"\n").unwrap();
    let err = fails(&w.bento(&["status"]));
    assert!(
        err.contains("bento.toml:2: address `a b` is not a host name or IP address"),
        "{err}"
    );
    std::fs::write(w.fleet.path("bento.toml"), "").unwrap();
    let err = fails(
        &w.fleet
            .bento(&["status", "--server-root", "/nonexistent-bento-root"]),
    );
    assert!(
        err.contains("/nonexistent-bento-root: the server root does not exist"),
        "{err}"
    );
}

#[test]
fn the_fleet_is_its_registered_hosts_and_no_flake_is_evaluated() {
    let w = Written::new(&["web1"]);
    // A flake dir defining two hosts, each registered; and a host registered before its
    // configuration exists.
    let flake = w.fleet.path("hosts/edge");
    std::fs::create_dir_all(&flake).unwrap();
    std::fs::write(flake.join("flake.nix"), "{ outputs = _: { }; }\n").unwrap();
    for h in ["edge-a", "edge-b", "db9"] {
        std::fs::write(w.fleet.path(&format!("keys/hosts/{h}.pub")), "ssh-ed25519 AAAA\n").unwrap();
    }
    w.publish("edge-a", 1, 60, None);
    w.report("edge-a", 1, "applied", 30, None);
    // A `nix` on PATH that leaves a mark when run: status must not need it.
    let bin = w.fleet.home.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let mark = w.fleet.home.join("nix-ran");
    let nix = bin.join("nix");
    std::fs::write(&nix, format!("#!/bin/sh\ntouch {}\nexit 1\n", mark.display())).unwrap();
    std::fs::set_permissions(&nix, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = w
        .fleet
        .cmd(&["status", "--json", "--server-root", s(&w.server)])
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(!mark.exists(), "status ran nix");
    assert_eq!(status_of(&doc, "edge-a"), "up-to-date", "{doc}");
    assert_eq!(status_of(&doc, "edge-b"), "unpublished", "{doc}");
    assert_eq!(status_of(&doc, "db9"), "unpublished", "{doc}");
    assert_eq!(status_of(&doc, "web1"), "unpublished", "{doc}");
    assert_eq!(doc["hosts"].as_array().unwrap().len(), 4, "{doc}");
    assert_eq!(host(&doc, "edge-a")["in_fleet"], true);
}

#[test]
fn the_heartbeat_tells_an_idle_host_from_a_silent_one() {
    let w = Written::new(&["idle", "gone", "failing", "garbled", "old-agent"]);
    let day = 24 * 3600;
    for h in ["idle", "gone", "failing", "garbled", "old-agent"] {
        w.publish(h, 1, 10 * day, None);
    }
    // Both applied ten days ago and stayed quiet; one still polls, one stopped a day ago.
    w.report("idle", 1, "applied", 10 * day, None);
    w.seen("idle", 60);
    w.report("gone", 1, "applied", 10 * day, None);
    w.seen("gone", day);
    // A specific problem stays what it is.
    w.report("failing", 1, "failed", 10 * day, None);
    w.seen("failing", day);
    // A heartbeat that cannot be read is named; the status comes from the report.
    w.report("garbled", 1, "applied", 10 * day, None);
    std::fs::write(
        w.server.join("garbled/logs/seen.json"),
        br#"{"format": 1, "host": "idle""#,
    )
    .unwrap();
    // An agent without heartbeats: judged by its reports alone, as before.
    w.report("old-agent", 1, "applied", 10 * day, None);

    let (doc, _) = status_json(&w.fleet, &w.server);
    assert_eq!(status_of(&doc, "idle"), "up-to-date", "{doc}");
    let seen = host(&doc, "idle")["seen_ago_seconds"].as_u64().unwrap();
    assert!((60..120).contains(&seen), "{seen}");
    assert_eq!(status_of(&doc, "gone"), "stale", "{doc}");
    assert!(host(&doc, "gone")["seen_ago_seconds"].as_u64().unwrap() >= day);
    assert_eq!(status_of(&doc, "failing"), "failed", "{doc}");
    assert_eq!(status_of(&doc, "garbled"), "up-to-date", "{doc}");
    let problem = host(&doc, "garbled")["problem"].as_str().unwrap().to_owned();
    assert!(problem.contains("logs/seen.json: not a heartbeat"), "{problem}");
    assert_eq!(status_of(&doc, "old-agent"), "up-to-date", "{doc}");
    assert_eq!(host(&doc, "old-agent")["seen_at"], Value::Null);

    // The table has a column for it: ten days since the report, a minute since the poll.
    let table = String::from_utf8_lossy(&w.bento(&["status"]).stdout).into_owned();
    assert!(table.lines().next().unwrap().contains("LAST SEEN"), "{table}");
    let idle = table.lines().find(|l| l.starts_with("idle ")).unwrap();
    assert!(idle.contains("10d ago") && idle.contains("1m ago"), "{table}");

    // The Prometheus output carries the last-seen time.
    let out = w.bento(&["status", "--prometheus"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("bento_host_last_seen_timestamp_seconds{host=\"idle\"}")),
        "{text}"
    );
}

/// `--html FILE --watch`: the page is rewritten when a report arrives, and reloads itself
/// at the poll interval.
#[test]
fn the_html_page_is_rewritten_when_a_report_arrives() {
    let w = Written::new(&["web1"]);
    w.publish("web1", 1, 60, None);
    let page = w.fleet.home.join("fleet.html");
    let mut child = w
        .fleet
        .cmd(&[
            "status",
            "--html",
            s(&page),
            "--watch",
            "--server-root",
            s(&w.server),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let read_when = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&page).unwrap_or_default();
            if text.contains(want) || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let first = read_when(">never-seen<");
    w.report("web1", 1, "applied", 0, None);
    let second = read_when(">up-to-date<");
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.contains(">never-seen<"), "{first}");
    assert!(
        first.contains("<meta http-equiv=\"refresh\" content=\"900\">"),
        "{first}"
    );
    assert!(second.contains(">up-to-date<"), "not rewritten: {second}");
}
