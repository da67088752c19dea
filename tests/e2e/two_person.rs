//! `required_signatures` on the host: a bundle is applied only when that many distinct
//! trusted admin keys signed its manifest; the same key twice, an untrusted key or a
//! signature of other bytes does not count, and the report says so.

use std::process::Command;

use crate::agent::Loop;
use crate::harness::{ok, pub_line};

/// Appends to generation `g`'s manifest.sig on the server a signature of its manifest by
/// the private key `key` (`ssh-keygen -Y sign`, namespace bento), or of `other` bytes.
fn add_signature(l: &Loop, g: u64, key: &std::path::Path, other: Option<&[u8]>) {
    let dir = l.server.join(format!("web1/generations/{g}"));
    let scratch = l.fleet.home.join("to-sign");
    match other {
        Some(bytes) => std::fs::write(&scratch, bytes).unwrap(),
        None => {
            std::fs::copy(dir.join("manifest.json"), &scratch).unwrap();
        }
    }
    let out = Command::new("ssh-keygen")
        .args(["-Y", "sign", "-n", "bento", "-f"])
        .arg(key)
        .arg(&scratch)
        .output()
        .unwrap();
    ok(&out);
    let sig = std::fs::read_to_string(scratch.with_extension("sig")).unwrap();
    let _ = std::fs::remove_file(scratch.with_extension("sig"));
    let mut all = std::fs::read_to_string(dir.join("manifest.sig")).unwrap();
    all.push_str(&sig);
    std::fs::write(dir.join("manifest.sig"), all).unwrap();
}

/// web1's entry of `bento approve --list --json`.
fn pending_web1(l: &Loop, server: &str) -> serde_json::Value {
    let listed: serde_json::Value = serde_json::from_str(&ok(&l.fleet.bento(&[
        "approve",
        "--list",
        "--json",
        "--server-root",
        server,
    ])))
    .unwrap();
    listed["pending"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["host"] == "web1")
        .unwrap()
        .clone()
}

#[test]
fn two_admins_must_sign_before_a_host_applies_a_bundle() {
    crate::harness::require("ssh-keygen");
    let l = Loop::new();
    let alice = l.fleet.keys.join("admin");
    let bob = l.fleet.ssh_key("second-admin", "ed25519", "");
    let mallory = l.fleet.ssh_key("intruder", "ed25519", "");
    let text = std::fs::read_to_string(&l.config).unwrap();
    let text = text.replace(
        "trusted_keys = [\"",
        &format!(
            "required_signatures = 2\ntrusted_keys = [\"{}\", \"",
            pub_line(&bob)
        ),
    );
    std::fs::write(&l.config, text).unwrap();
    l.deploy();

    // Signed by alice alone (what deploy made): refused, nothing applied.
    let (out, report) = l.agent_json();
    assert!(!out.status.success());
    assert_eq!(report["state"], "refused", "{report}");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("1 of the 2 signatures"), "{error}");
    assert!(l.calls().is_empty());
    // Alice again, mallory, bob over other bytes: still one.
    for (what, key, other) in [
        ("alice twice", &alice, None),
        ("an untrusted key", &mallory, None),
        ("bob over other bytes", &bob, Some(&b"{\"format\": 1}\n"[..])),
    ] {
        add_signature(&l, 1, key, other);
        let (_, report) = l.agent_json();
        assert_eq!(report["state"], "refused", "{what}: {report}");
        assert!(l.calls().is_empty(), "{what}: applied");
    }
    let (_, report) = l.agent_json();
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("signed twice")
            && error.contains("not among the trusted")
            && error.contains("bad signature"),
        "{error}"
    );
    // Bob signs the manifest itself: two distinct trusted admins, applied.
    add_signature(&l, 1, &bob, None);
    let (out, report) = l.agent_json();
    ok(&out);
    assert_eq!(report["state"], "applied", "{report}");

    // A required count above the trusted keys is refused at its line.
    let text = std::fs::read_to_string(&l.config).unwrap();
    std::fs::write(
        &l.config,
        text.replace("required_signatures = 2", "required_signatures = 3"),
    )
    .unwrap();
    let e = crate::harness::fails(&l.agent(&[]));
    assert!(
        e.contains("agent.toml:") && e.contains("required_signatures = 3"),
        "{e}"
    );
}

/// `[deploy] required_signatures = 2`: a deploy is pending until a second admin approves
/// it; the host applies only then.
#[test]
fn a_deploy_waits_for_a_second_admins_approval() {
    let l = Loop::new();
    let second = l.fleet.ssh_key("second-admin", "ed25519", "");
    l.fleet.add_admin("second", &pub_line(&second));
    let toml = l.fleet.path("bento.toml");
    let first_admin = std::fs::read_to_string(&toml)
        .unwrap()
        .replace("[deploy]\n", "[deploy]\nrequired_signatures = 2\n");
    std::fs::write(&toml, &first_admin).unwrap();
    let as_second = first_admin.replace(
        &format!("signing_key = \"{}\"", l.fleet.keys.join("admin").display()),
        &format!("signing_key = \"{}\"", second.display()),
    );
    l.require_two_signatures(&second);
    let server = crate::harness::s(&l.server).to_owned();

    // The first admin's deploy: pending, `current` not written, the host has nothing.
    let out = ok(&l.fleet.bento(&["deploy", "--json", "--server-root", &server]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let web1 = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "web1")
        .unwrap();
    assert_eq!(web1["pending"], true, "{web1}");
    assert!(!l.server.join("web1/current").exists());
    ok(&l.agent(&[]));
    assert!(l.calls().is_empty(), "applied before approval");
    // Deployed again unchanged: still the same pending generation, not a new one.
    ok(&l.fleet.bento(&["deploy", "--server-root", &server]));
    assert_eq!(
        std::fs::read_dir(l.server.join("web1/generations"))
            .unwrap()
            .count(),
        1
    );

    // What is pending, and who signed it.
    let p = pending_web1(&l, &server);
    assert_eq!(p["signers"], serde_json::json!(["admin"]));
    assert_eq!(
        p["changes"]["files"],
        serde_json::json!(["+ config/configuration.nix"])
    );
    assert!(p["changes"]["secrets_added"]
        .as_array()
        .unwrap()
        .contains(&"db-password".into()));
    // Who can decrypt it, read from the pending file's own header.
    let after = p["changes"]["recipients"]["db-password"]["after"].clone();
    assert!(
        after.as_array().unwrap().contains(&"web1".into())
            && after.as_array().unwrap().contains(&"db1".into()),
        "{p}"
    );
    assert_eq!(
        p["changes"]["recipients"]["db-password"]["before"],
        serde_json::Value::Null
    );

    // The same admin cannot approve their own deploy.
    let same = l
        .fleet
        .bento(&["approve", "web1", "--yes", "--server-root", &server]);
    assert!(!same.status.success());
    assert!(String::from_utf8_lossy(&same.stderr).contains("signed by admin already"));
    assert!(!l.server.join("web1/current").exists());

    // The second admin approves: current, and the host applies it.
    std::fs::write(&toml, &as_second).unwrap();
    let out = l
        .fleet
        .bento(&["approve", "web1", "--yes", "--server-root", &server]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("+ config/configuration.nix") && said.contains("approved by admin, second"),
        "{said}"
    );
    assert!(
        said.contains("secret added: db-password\n    recipients: "),
        "{said}"
    );
    assert_eq!(
        std::fs::read_to_string(l.server.join("web1/current")).unwrap(),
        "1\n"
    );
    let (out, report) = l.agent_json();
    ok(&out);
    assert_eq!(report["state"], "applied", "{report}");

    // With one generation kept, a new pending one does not prune the one the host runs.
    std::fs::write(
        &toml,
        as_second.replace("[deploy]\n", "[deploy]\nkeep_generations = 1\n"),
    )
    .unwrap();
    l.deploy_config("{ networking.hostName = \"web1\"; time.timeZone = \"UTC\"; }\n");
    assert!(
        l.server.join("web1/generations/1").is_dir(),
        "the current generation pruned"
    );
    // What approve shows of it is exactly the change made: one file.
    let p = pending_web1(&l, &server);
    assert_eq!(
        p["changes"],
        serde_json::json!({
            "files": ["~ config/configuration.nix"],
            "secrets_added": [], "secrets_changed": [], "secrets_removed": [],
            "templates": [], "system": null,
        }),
        "{p}"
    );
    assert!(l.server.join("web1/generations/2").is_dir());
    assert_eq!(
        std::fs::read_to_string(l.server.join("web1/current")).unwrap(),
        "1\n"
    );
}
