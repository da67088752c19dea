//! The hash chain of a host's manifests: every manifest names the previous one's SHA-256,
//! the server keeps each in `generations/history/`, a host applies only what descends from
//! the manifest it runs (across pruned generations too), and `bento log` shows and checks
//! the chain, link by link.

use std::path::Path;

use crate::agent::Loop;
use crate::harness::{ok, s};

/// `bento log --json` of `root`: the document and the exit code.
fn log_json(l: &Loop, root: &Path) -> (serde_json::Value, Option<i32>) {
    let out = l
        .fleet
        .bento(&["log", "web1", "--json", "--server-root", s(root)]);
    let doc = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (doc, out.status.code())
}

/// The text of web1's problems in a `bento log --json` document.
fn problems(doc: &serde_json::Value) -> String {
    doc["hosts"][0]["problems"].to_string()
}

/// The history file of web1's generation `g` on `root`: found by reading each one.
fn history_file(root: &Path, g: u64) -> std::path::PathBuf {
    let dir = root.join("web1/generations/history");
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .find(|p| {
            let m: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
            m["generation"] == g
        })
        .unwrap_or_else(|| panic!("no history file of generation {g} in {}", dir.display()))
}

fn config(n: u32) -> String {
    format!("{{ networking.hostName = \"web1\"; boot.kernelParams = [ \"n={n}\" ]; }}\n")
}

#[test]
fn hosts_apply_only_what_descends_and_log_verifies_each_link() {
    let l = Loop::new();
    l.deploy();
    let (out, report) = l.agent_json();
    ok(&out);
    assert_eq!(report["state"], "applied");
    let first_calls = l.calls();
    let toml = l.fleet.path("bento.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replace("[deploy]\n", "[deploy]\nkeep_generations = 1\n"),
    )
    .unwrap();

    // Two deploys the host does not see: generation 2 is pruned from generations/.
    l.deploy_config(&config(2));
    l.deploy_config(&config(3));
    assert!(!l.server.join("web1/generations/2").exists());
    let two = history_file(&l.server, 2);
    let m3: serde_json::Value =
        serde_json::from_slice(&std::fs::read(l.server.join("web1/generations/3/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(m3["format"], 2);
    assert_eq!(
        format!("{}.json", m3["previous"].as_str().unwrap()),
        two.file_name().unwrap().to_str().unwrap(),
        "generation 3 names generation 2's manifest"
    );

    // A server that drops a link: the host refuses, `bento log` says which.
    let kept = std::fs::read(&two).unwrap();
    std::fs::remove_file(&two).unwrap();
    let (out, report) = l.agent_json();
    assert!(!out.status.success());
    assert_eq!(report["state"], "refused", "{report}");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("does not descend from generation 1") && error.contains("is missing"),
        "{error}"
    );
    let (doc, code) = log_json(&l, &l.server);
    assert_eq!(code, Some(1));
    assert!(problems(&doc).contains("is missing"), "{doc}");

    // One that rewrites it (the same name, other bytes): refused, and caught.
    let edited = String::from_utf8(kept.clone())
        .unwrap()
        .replacen("\"created\": \"", "\"created\": \"1", 1);
    std::fs::write(&two, edited).unwrap();
    let (_, report) = l.agent_json();
    assert_eq!(report["state"], "refused", "{report}");
    assert!(
        report["error"].as_str().unwrap().contains("was edited"),
        "{report}"
    );
    let (doc, code) = log_json(&l, &l.server);
    assert_eq!(code, Some(1));
    assert!(problems(&doc).contains("was edited"), "{doc}");
    assert_eq!(l.calls(), first_calls, "only the first generation was applied");

    // Put back: the host follows 3 → 2 → 1 across the pruned generation and applies 3.
    std::fs::write(&two, &kept).unwrap();
    let (out, report) = l.agent_json();
    ok(&out);
    assert_eq!(report["state"], "applied", "{report}");
    assert_eq!(report["generation"], 3);
    let (doc, code) = log_json(&l, &l.server);
    assert_eq!(code, Some(0), "{doc}");
    let gens = doc["hosts"][0]["generations"].as_array().unwrap();
    let numbers: Vec<u64> = gens.iter().map(|g| g["generation"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [3, 2, 1]);
    for g in gens {
        assert_eq!(g["signers"], serde_json::json!(["admin"]), "{g}");
    }
    assert_eq!(
        gens[1]["changes"]["files"],
        serde_json::json!(["~ config/configuration.nix"])
    );
    assert!(gens[2]["changes"]["secrets_added"]
        .as_array()
        .unwrap()
        .contains(&"db-password".into()));
    let text = ok(&l.fleet.bento(&["log", "--server-root", s(&l.server)]));
    assert!(
        text.contains("web1: 3 generations, every link verified"),
        "{text}"
    );
    assert!(text.contains("~ config/configuration.nix"), "{text}");

    // A fork: a copy of the server taken now gets two deploys (a stolen key's work), the
    // real server one; the host applies the real one.
    let fork = l.fleet.home.join("fork");
    ok(&std::process::Command::new("cp")
        .args(["-a", s(&l.server), s(&fork)])
        .output()
        .unwrap());
    for n in [40, 50] {
        std::fs::write(l.fleet.path("hosts/web1/configuration.nix"), config(n)).unwrap();
        ok(&l.fleet.bento(&["deploy", "--server-root", s(&fork)]));
    }
    l.deploy_config(&config(4));
    let (out, report) = l.agent_json();
    ok(&out);
    assert_eq!(report["generation"], 4);
    let calls = l.calls();

    // The server then offers the fork's generation 5, validly signed, with its history.
    let gens = l.server.join("web1/generations");
    ok(&std::process::Command::new("cp")
        .args(["-a", s(&fork.join("web1/generations/5")), s(&gens.join("5"))])
        .output()
        .unwrap());
    let fork_four = history_file(&fork, 4);
    std::fs::copy(
        &fork_four,
        gens.join("history").join(fork_four.file_name().unwrap()),
    )
    .unwrap();
    std::fs::write(l.server.join("web1/current"), "5\n").unwrap();
    let (out, report) = l.agent_json();
    assert!(!out.status.success());
    assert_eq!(report["state"], "refused", "{report}");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("generation 5 does not descend from generation 4")
            && error.contains("passes generation 4 through another manifest"),
        "{error}"
    );
    assert_eq!(l.calls(), calls, "nothing applied");
    // `bento log` sees the real generation 4 left off the chain current descends from.
    let (doc, code) = log_json(&l, &l.server);
    assert_eq!(code, Some(1));
    assert!(problems(&doc).contains("not on the chain"), "{doc}");
}

/// The signers of the current generation, in `bento status`.
#[test]
fn status_names_who_signed_the_current_generation() {
    let l = Loop::new();
    l.deploy();
    let (doc, _) = crate::status::status_json(&l.fleet, &l.server);
    let web1 = crate::status::host(&doc, "web1");
    assert_eq!(web1["signers"], serde_json::json!(["admin"]), "{web1}");
    let table = String::from_utf8(l.fleet.bento(&["status", "--server-root", s(&l.server)]).stdout).unwrap();
    let head = table.lines().next().unwrap();
    assert!(head.contains("SIGNED BY"), "{table}");
    let row = table.lines().find(|r| r.starts_with("web1")).unwrap();
    assert!(row.contains(" admin "), "{table}");
}

/// Rewrites web1's generation `g` on `root` as a bento from before history would have
/// published it (format 1, no `previous`), signed again by the admin.
fn as_before_history(l: &Loop, g: u64) {
    let dir = l.server.join(format!("web1/generations/{g}"));
    let text = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    let old = text.replacen("\"format\": 2", "\"format\": 1", 1);
    let old = without_previous(&old);
    std::fs::write(dir.join("manifest.json"), &old).unwrap();
    let _ = std::fs::remove_file(dir.join("manifest.json.sig"));
    ok(&std::process::Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", "bento", "-f"])
        .arg(l.fleet.keys.join("admin"))
        .arg(dir.join("manifest.json"))
        .output()
        .unwrap());
    std::fs::rename(dir.join("manifest.json.sig"), dir.join("manifest.sig")).unwrap();
}

/// `text` without its `"previous": …,` line.
fn without_previous(text: &str) -> String {
    text.lines()
        .filter(|line| !line.trim_start().starts_with("\"previous\":"))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// A host that runs a manifest from before history, and missed another such generation,
/// still takes the first generation with history: descent is not provable from before
/// history began, and it was not asked before.
#[test]
fn a_host_that_lagged_through_the_upgrade_to_history_is_not_stuck() {
    crate::harness::require("ssh-keygen");
    let l = Loop::new();
    l.deploy();
    as_before_history(&l, 1);
    let (out, report) = l.agent_json();
    ok(&out);
    assert_eq!(report["state"], "applied", "{report}");
    // Another generation from before history, which the host misses.
    l.deploy_config(&config(2));
    as_before_history(&l, 2);
    // The first one with history names generation 2's manifest.
    l.deploy_config(&config(3));
    let (out, report) = l.agent_json();
    ok(&out);
    assert_eq!(report["state"], "applied", "{report}");
    assert_eq!(report["generation"], 3);
}
