//! `bento secret verify`: no private key, every problem named by secret and recipient.

use crate::harness::{example, fails, ok, pub_of, Fleet, Keys};

/// The example fleet with every secret written by bento.
fn written() -> (Fleet, Keys) {
    let (fleet, keys) = example();
    for name in ["db-password", "web-only", "tls"] {
        ok(&fleet.bento_stdin(&["secret", "edit", name], format!("value of {name}").as_bytes()));
    }
    (fleet, keys)
}

fn verify(fleet: &Fleet) -> (bool, String) {
    let out = fleet.bento(&["secret", "verify"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn age_encrypt(fleet: &Fleet, to: &[String], file: &str) {
    let input = fleet.keys.join("plain");
    std::fs::write(&input, "by hand").unwrap();
    let mut cmd = std::process::Command::new("age");
    for r in to {
        cmd.args(["-r", r]);
    }
    let out = cmd.arg("-o").arg(fleet.path(file)).arg(&input).output().unwrap();
    ok(&out);
}

#[test]
fn fresh_secrets_verify_without_any_private_key() {
    let (fleet, _) = written();
    // HOME has no keys and no -i is given: verify needs none.
    let out = fleet.bento(&["secret", "verify"]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 secrets verified"));
    let lock = std::fs::read_to_string(fleet.path("secrets/recipients.lock")).unwrap();
    assert!(
        lock.contains("[db-password]") && lock.contains("\"db1 SHA256:"),
        "{lock}"
    );
}

#[test]
fn host_added_to_a_group_is_missing() {
    let (fleet, _) = written();
    let web2 = fleet.ssh_key("web2", "ed25519", "");
    fleet.add_host("web2", &web2);
    fleet.rules(&crate::harness::EXAMPLE_RULES.replace(r#"web = ["web1"]"#, r#"web = ["web1", "web2"]"#));
    let (good, out) = verify(&fleet);
    assert!(!good);
    assert_eq!(
        out,
        "db-password: missing web2 (in @web)\nweb-only: missing web2 (in @web)\n"
    );
}

#[test]
fn host_removed_from_a_group_is_extra() {
    let (fleet, _) = written();
    fleet.rules(&crate::harness::EXAMPLE_RULES.replace(r#"web = ["web1"]"#, "web = []"));
    let (good, out) = verify(&fleet);
    assert!(!good);
    assert_eq!(
        out,
        "db-password: extra recipient web1\nweb-only: extra recipient web1\n"
    );
}

#[test]
fn admin_key_added_is_missing_even_though_x25519_is_anonymous() {
    let (fleet, _) = written();
    let carol = fleet.age_key("carol.txt");
    fleet.add_admin("carol", &fleet.age_recipient(&carol));
    fleet.rules(
        &crate::harness::EXAMPLE_RULES.replace(r#"admins = ["alice"]"#, r#"admins = ["alice", "carol"]"#),
    );
    let (good, out) = verify(&fleet);
    assert!(!good);
    assert_eq!(
        out,
        "db-password: missing carol (in admins)\ntls: missing carol (in admins)\nweb-only: missing carol (in admins)\n"
    );
}

#[test]
fn hand_made_file_to_the_wrong_set_is_caught() {
    let (fleet, keys) = written();
    // web-only should go to web1 and alice; made by hand for db1 and an unknown age key.
    let stranger = fleet.age_key("stranger.txt");
    let db1 = std::fs::read_to_string(pub_of(&keys.db1))
        .unwrap()
        .trim()
        .to_owned();
    age_encrypt(
        &fleet,
        &[db1, fleet.age_recipient(&stranger)],
        "secrets/web-only.age",
    );
    let (good, out) = verify(&fleet);
    assert!(!good);
    assert!(
        out.contains("web-only: secrets/web-only.age changed outside bento"),
        "{out}"
    );
    assert!(out.contains("web-only: missing web1 (in @web)\n"), "{out}");
    assert!(out.contains("web-only: extra recipient db1\n"), "{out}");
    assert!(!out.contains("db-password") && !out.contains("tls"), "{out}");
}

#[test]
fn without_a_lock_x25519_recipients_are_counted() {
    let (fleet, keys) = written();
    std::fs::remove_file(fleet.path("secrets/recipients.lock")).unwrap();
    assert!(verify(&fleet).0, "header checks alone pass on bento's files");
    // Right ssh recipients, but the age admin is left out.
    let web1 = std::fs::read_to_string(pub_of(&keys.web1))
        .unwrap()
        .trim()
        .to_owned();
    age_encrypt(&fleet, &[web1], "secrets/web-only.age");
    let (good, out) = verify(&fleet);
    assert!(!good);
    assert_eq!(
        out,
        "web-only: encrypted to 0 age1 (X25519) recipients, the rules name 1 (alice)\n"
    );
}

#[test]
fn orphan_and_missing_files() {
    let (fleet, _) = written();
    std::fs::copy(fleet.path("secrets/tls.age"), fleet.path("secrets/orphan.age")).unwrap();
    std::fs::remove_file(fleet.path("secrets/tls.age")).unwrap();
    let (good, out) = verify(&fleet);
    assert!(!good);
    assert!(out.contains("orphan.age: no rule"), "{out}");
    assert!(
        out.contains("tls: secrets/tls.age is missing; create it with `bento secret edit tls`"),
        "{out}"
    );
}

#[test]
fn a_lock_edited_by_hand_is_caught() {
    let (fleet, _) = written();
    let path = fleet.path("secrets/recipients.lock");
    let lock = std::fs::read_to_string(&path).unwrap();
    // Drop bob from db-password's entry: the file still has bob's stanza, the lock does not.
    let bob_line = lock
        .lines()
        .find(|l| l.contains("\"bob SHA256:"))
        .unwrap()
        .to_owned();
    std::fs::write(&path, lock.replacen(&format!("{bob_line}\n"), "", 1)).unwrap();
    let (good, out) = verify(&fleet);
    assert!(!good);
    assert_eq!(out, "db-password: missing bob (named directly)\n");
    // A forged hash: the file no longer matches its entry.
    std::fs::write(&path, lock.replacen("sha256 = \"", "sha256 = \"00", 1)).unwrap();
    let (good, out) = verify(&fleet);
    assert!(!good);
    assert!(out.contains("changed outside bento"), "{out}");
    // Garbage: one clear line naming the file.
    std::fs::write(&path, "[db-password\n").unwrap();
    let err = fails(&fleet.bento(&["secret", "verify"]));
    assert!(err.starts_with("error: secrets/recipients.lock:1:"), "{err}");
}

#[test]
fn corrupt_header_is_reported_not_fatal() {
    let (fleet, _) = written();
    std::fs::write(
        fleet.path("secrets/tls.age"),
        b"age-encryption.org/v1\n-> X25519 abc\n",
    )
    .unwrap();
    let (good, out) = verify(&fleet);
    assert!(!good);
    assert!(out.starts_with("tls: secrets/tls.age:"), "{out}");
}

#[test]
fn json_findings_for_machines() {
    let (fleet, _) = written();
    fleet.rules(&crate::harness::EXAMPLE_RULES.replace(r#"web = ["web1"]"#, "web = []"));
    let out = fleet.bento(&["secret", "verify", "--json"]);
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["secrets"], 3);
    assert_eq!(v["locked"], true);
    let findings = v["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 2);
    assert_eq!(findings[0]["secret"], "db-password");
    assert_eq!(findings[0]["kind"], "extra-recipient");
    assert_eq!(findings[0]["recipient"], "web1");
    assert_eq!(findings[0]["file"], "secrets/db-password.age");
}

#[test]
fn list_shows_recipients_and_stale_marks() {
    let (fleet, _) = written();
    fleet.rules(
        &crate::harness::EXAMPLE_RULES.replace(r#"recipients = ["@web"]"#, r#"recipients = ["@web", "db1"]"#),
    );
    let out = ok(&fleet.bento(&["secret", "list"]));
    let web_only = out.lines().find(|l| l.starts_with("web-only")).unwrap();
    assert!(
        web_only.contains("alice +db1 web1") && web_only.ends_with("stale"),
        "{out}"
    );
    let db = out.lines().find(|l| l.starts_with("db-password")).unwrap();
    assert!(db.contains("alice bob db1 web1") && db.ends_with("ok"), "{out}");
    let v: serde_json::Value =
        serde_json::from_slice(&fleet.bento(&["secret", "list", "--json"]).stdout).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let row = rows.iter().find(|r| r["name"] == "web-only").unwrap();
    assert_eq!(row["status"], "stale");
    assert_eq!(row["recipients"][1]["name"], "db1");
}

#[test]
fn a_world_readable_mode_is_a_warning_not_an_error() {
    let (fleet, _) = written();
    let rules = crate::harness::EXAMPLE_RULES.replace(
        "[secrets.tls]\nrecipients = [\"web1\"]\n",
        "[secrets.tls]\nrecipients = [\"web1\"]\nmode = \"0644\"\n",
    );
    fleet.rules(&rules);
    let line = rules.lines().position(|l| l.starts_with("mode")).unwrap() + 1;
    let expected = format!(
        "warning: secrets/secrets.toml:{line}: tls.mode \"0644\" lets every user of the host read \
         the secret; use e.g. \"0440\" with a `group`"
    );
    // verify passes, with the warning as its own line.
    let out = fleet.bento(&["secret", "verify"]);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings, [expected.as_str()], "{stderr}");
    assert!(!stderr.contains("error:"), "{stderr}");
    // deploy says it too, before its own one error (no host has a configuration here).
    let server = fleet.home.join("server");
    let out = fleet.bento(&["deploy", "--server-root", crate::harness::s(&server)]);
    let err = fails(&out);
    assert!(err.contains("no host has a configuration"), "{err}");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(stderr.lines().next(), Some(expected.as_str()), "{stderr}");
    // A failing command that warns still has exactly one error line.
    std::fs::write(fleet.path("secrets/web-only.age"), b"").unwrap();
    let err = fails(&fleet.bento(&["secret", "verify"]));
    assert!(err.contains("problem"), "{err}");
    let out = fleet.bento(&["secret", "verify"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains(&expected));
}

#[test]
fn a_lock_entry_without_a_rule_is_dropped_by_the_rekey_verify_names() {
    let (fleet, _) = written();
    // tls leaves the rules and its file goes: the lock still lists it.
    fleet.rules(
        &crate::harness::EXAMPLE_RULES.replace("[secrets.tls]\nrecipients = [\"web1\"]\narmor = true\n", ""),
    );
    std::fs::remove_file(fleet.path("secrets/tls.age")).unwrap();
    let (good, out) = verify(&fleet);
    assert!(!good);
    assert_eq!(
        out,
        "recipients.lock: entry for `tls`, which has no rule; `bento secret rekey` drops it\n"
    );
    // The advice is true: nothing to re-encrypt, and the entry goes (no identity needed).
    let out = fleet.bento(&["secret", "rekey"]);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("secrets/recipients.lock: dropped the entry for `tls`, which has no rule")
            && !stderr.contains("nothing to rekey"),
        "{stderr}"
    );
    assert!(verify(&fleet).0, "{}", verify(&fleet).1);
    let lock = std::fs::read_to_string(fleet.path("secrets/recipients.lock")).unwrap();
    assert!(!lock.contains("tls") && lock.contains("db-password"), "{lock}");
}
