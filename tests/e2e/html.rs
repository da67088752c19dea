//! `bento status --html FILE`: the fleet page, loaded in headless Chromium. What hosts
//! wrote shows as text, nothing runs, nothing is fetched.

use std::path::Path;
use std::process::Command;

use crate::agent::Loop;
use crate::harness::{ok, s};
use crate::status::{publish_by_hand, report_by_hand};

/// Strings a hostile host puts in its reports.
const SCRIPT: &str = "<script>alert(1)</script>";
const IMG: &str = "\"><img src=x onerror=fetch('http://attacker.invalid/img')>";
const JS_URL: &str = "javascript:fetch('http://attacker.invalid/js')";

/// Chromium, headless, on `url`, with a network log in `dir`; `what` is the output flag
/// (`--dump-dom`, `--screenshot=…`). Its profile and log stay in `dir`.
fn chromium(dir: &Path, url: &str, what: &str) -> std::process::Output {
    // Chromium's own files (dconf, caches) go below `dir` too, not the user's home.
    let out = Command::new("timeout")
        .env("HOME", dir)
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("XDG_RUNTIME_DIR", dir.join("runtime"))
        .arg("120")
        .arg("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--window-size=1400,900",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("--log-net-log={}", dir.join("net.json").display()))
        .arg(what)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The URLs of the requests in Chromium's network log that the page started (Chromium's
/// own background requests have no origin as their initiator).
fn page_requests(net_log: &Path) -> Vec<String> {
    let log: serde_json::Value = serde_json::from_slice(&std::fs::read(net_log).unwrap()).unwrap();
    let start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].clone();
    let mut urls = Vec::new();
    for event in log["events"].as_array().unwrap() {
        let params = &event["params"];
        // A job's end carries no URL: only its start is looked at.
        let Some(url) = params["url"].as_str() else {
            continue;
        };
        let by_page = event["type"] == start && params["initiator"] != "not an origin";
        if by_page || url.contains("attacker.invalid") {
            urls.push(url.to_owned());
        }
    }
    urls
}

#[test]
fn the_page_shows_every_host_and_what_hosts_wrote_only_as_text() {
    crate::harness::require("chromium");
    let l = Loop::new();
    // web1, a real agent: applied, then a failed rebuild.
    l.deploy();
    ok(&l.agent(&[]));
    std::fs::write(l.base().join("fail-rebuild"), "").unwrap();
    l.deploy_config("{ networking.hostName = \"web1\"; time.timeZone = \"UTC\"; }\n");
    assert!(!l.agent(&[]).status.success());
    // Hosts whose directories hold what they wrote: db1 applied what deploy published for
    // it, one rolled back, one stale, one hostile.
    let hour = 3600;
    report_by_hand(&l.server, "db1", 1, "applied", 60, None, None);
    publish_by_hand(&l.server, "rolled", 2, 2 * hour, None);
    report_by_hand(&l.server, "rolled", 1, "applied", 3 * hour, None, None);
    report_by_hand(&l.server, "rolled", 2, "rolled-back", 60, None, None);
    publish_by_hand(&l.server, "stale", 2, 4 * hour, None);
    report_by_hand(&l.server, "stale", 1, "applied", 24 * hour, None, None);
    publish_by_hand(&l.server, "evil", 1, hour, None);
    let error = format!("{SCRIPT} {IMG} {JS_URL}");
    report_by_hand(&l.server, "evil", 1, "failed", 60, Some(JS_URL), Some(&error));
    // A report name is the host's to choose too: it shows in the timeline.
    let named = l
        .server
        .join("evil/logs/report-00000001-<svg onload=alert(4)>.json");
    let written = l.server.join("evil/logs").join(report_by_hand(
        &l.server,
        "evil",
        1,
        "failed",
        30,
        Some(JS_URL),
        Some(&error),
    ));
    std::fs::rename(written, named).unwrap();

    // A rollout stopped at its first wave, with what the host said.
    let rollout = serde_json::json!({
        "format": 1, "fleet": "0", "started": "2026-12-01T00:00:00Z",
        "waves": [
            { "hosts": ["web1"], "state": "failed", "published_at": 1, "generations": { "web1": 2 },
              "hosts_state": { "web1": format!("failed: {SCRIPT}") } },
            { "hosts": ["rolled", "stale"], "state": "waiting", "published_at": null,
              "generations": {}, "hosts_state": {} },
        ],
    });
    std::fs::create_dir_all(l.fleet.path(".bento")).unwrap();
    std::fs::write(l.fleet.path(".bento/rollout.json"), rollout.to_string()).unwrap();

    let dir = l.fleet.home.join("page");
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("fleet.html");
    let out = l
        .fleet
        .bento(&["status", "--html", s(&page), "--server-root", s(&l.server)]);
    assert_eq!(out.status.code(), Some(1), "failed hosts: exit 1, as status");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("<script") && !html.contains("<img"),
        "markup from a host"
    );
    // Links are the page's own fragments only.
    for href in html.split("href=\"").skip(1) {
        assert!(
            href.starts_with('#'),
            "a link out of the page: {}",
            &href[..40.min(href.len())]
        );
    }
    assert!(html.contains("http-equiv=\"Content-Security-Policy\""));

    // Loaded in Chromium: every host with its status, the hostile strings as text.
    let url = format!("file://{}", page.display());
    let dom = String::from_utf8(chromium(&dir, &url, "--dump-dom").stdout).unwrap();
    for (host, status) in [
        ("web1", "failed"),
        ("db1", "up-to-date"),
        ("rolled", "rolled-back"),
        ("stale", "stale"),
        ("evil", "failed"),
    ] {
        let row = dom
            .split("<tr")
            .find(|r| r.contains(&format!(">{host}<")) || r.contains(&format!(">{host} (not in fleet)<")))
            .unwrap_or_else(|| panic!("no row of {host}: {dom}"));
        assert!(row.contains(&format!(">{status}<")), "{host}: {row}");
    }
    assert!(dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{dom}");
    let waves = &dom[dom.find("<h2>Rollout</h2>").expect("the rollout")..];
    assert!(
        waves.contains(">failed</span> web1 (failed: &lt;script&gt;alert(1)&lt;/script&gt;)")
            && waves.contains(">waiting</span> rolled, stale"),
        "{waves}"
    );
    assert!(dom.contains("\"&gt;&lt;img src=x onerror="), "{dom}");
    assert!(
        dom.contains("&lt;svg onload=alert(4)&gt;"),
        "the report name, as text"
    );
    assert!(!dom.contains("<script") && !dom.contains("<img"), "{dom}");
    // Nothing was fetched, nothing ran (a script or an onerror would have fetched).
    assert_eq!(page_requests(&dir.join("net.json")), Vec::<String>::new());

    // A screenshot, in the test's own directory.
    let shot = dir.join("fleet.png");
    chromium(&dir, &url, &format!("--screenshot={}", shot.display()));
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
}
