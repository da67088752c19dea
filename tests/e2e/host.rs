//! `bento host add|list|remove`.

use crate::harness::{example, fails, ok, pub_line, pub_of, s};
use crate::sshd::Sshd;

#[test]
fn add_list_replace_remove() {
    let (fleet, keys) = example();
    let web2 = fleet.ssh_key("web2", "ed25519", "");
    ok(&fleet.bento(&["host", "add", "web2", "--key", s(&pub_of(&web2))]));
    let stored = std::fs::read_to_string(fleet.path("keys/hosts/web2.pub")).unwrap();
    assert_eq!(
        stored.split_whitespace().take(2).collect::<Vec<_>>(),
        pub_line(&web2).split_whitespace().take(2).collect::<Vec<_>>()
    );

    let err = fails(&fleet.bento(&["host", "add", "web2", "--key", s(&pub_of(&keys.db1))]));
    assert!(
        err.contains("keys/hosts/web2.pub: exists already; pass --replace"),
        "{err}"
    );
    let err = fails(&fleet.bento(&["host", "add", "../x", "--key", s(&pub_of(&web2))]));
    assert!(err.contains("bad host name"), "{err}");
    let age = fleet.age_key("agehost.txt");
    std::fs::write(fleet.home.join("age.pub"), fleet.age_recipient(&age)).unwrap();
    let err = fails(&fleet.bento(&["host", "add", "web3", "--key", s(&fleet.home.join("age.pub"))]));
    assert!(err.contains("ssh-ed25519 or ssh-rsa"), "{err}");

    let list: serde_json::Value =
        serde_json::from_slice(&fleet.bento(&["host", "list", "--json"]).stdout).unwrap();
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["db1", "web1", "web2"]);
    assert_eq!(list[1]["groups"], serde_json::json!(["web"]));
    assert!(list[2]["keys"][0]["fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("SHA256:"));

    // Rotation: the secrets of web1 then need a rekey, which verify names.
    ok(&fleet.bento_stdin(&["secret", "edit", "web-only"], b"x"));
    let new_web1 = fleet.ssh_key("web1-new", "ed25519", "");
    ok(&fleet.bento(&["host", "add", "web1", "--replace", "--key", s(&pub_of(&new_web1))]));
    let out = fleet.bento(&["secret", "verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("web-only: missing web1 (in @web)") && text.contains("web-only: extra recipient"),
        "{text}"
    );

    let err = fails(&fleet.bento(&["host", "remove", "web1"]));
    assert!(err.contains("group web still lists web1"), "{err}");
    ok(&fleet.bento(&["host", "remove", "web2"]));
    assert!(!fleet.path("keys/hosts/web2.pub").exists());
}

#[test]
fn add_by_scanning_a_real_sshd() {
    if !crate::harness::needs_root("a real sshd with chroots under /srv, in a private mount namespace") {
        return;
    }
    crate::harness::require("ssh-keyscan");
    let (fleet, _) = example();
    let sshd = Sshd::start(&[]);
    ok(&fleet.bento(&[
        "host",
        "add",
        "srv",
        "--scan",
        &format!("127.0.0.1:{}", sshd.port),
    ]));
    let stored = std::fs::read_to_string(fleet.path("keys/hosts/srv.pub")).unwrap();
    let pinned = std::fs::read_to_string(&sshd.known_hosts).unwrap();
    let key = stored.split_whitespace().nth(1).unwrap();
    assert!(
        pinned.contains(key),
        "the scanned key is the server's: {stored} vs {pinned}"
    );
}

#[test]
fn a_second_host_with_the_same_key_is_refused_and_every_command_still_runs() {
    let (fleet, keys) = example();
    let err = fails(&fleet.bento(&["host", "add", "web3", "--key", s(&pub_of(&keys.web1))]));
    assert!(
        err.contains(s(&pub_of(&keys.web1)))
            && err.contains("already registered as host web1 (keys/hosts/web1.pub)")
            && err.contains("nothing changed"),
        "{err}"
    );
    assert!(!fleet.path("keys/hosts/web3.pub").exists());
    // Before, the second file made every command refuse to run, `host remove` included.
    ok(&fleet.bento(&["host", "list"]));
    ok(&fleet.bento(&["secret", "list"]));
    // Rotating a host to its own key is no duplicate.
    ok(&fleet.bento(&[
        "host",
        "add",
        "web1",
        "--replace",
        "--key",
        s(&pub_of(&keys.web1)),
    ]));
}

#[test]
fn key_file_errors_name_the_file() {
    let (fleet, _) = example();
    let bad = fleet.home.join("bad.pub");
    std::fs::write(&bad, "# a comment\nssh-ed25519 AAAAnotbase64\n").unwrap();
    let err = fails(&fleet.bento(&["host", "add", "web3", "--key", s(&bad)]));
    assert!(err.starts_with(&format!("error: {}:2: ", bad.display())), "{err}");
    let err = fails(&fleet.bento(&["admin", "add", "eve", "--key", s(&bad)]));
    assert!(err.starts_with(&format!("error: {}:2: ", bad.display())), "{err}");
    let two = fleet.ssh_key("two", "ed25519", "");
    let other = fleet.ssh_key("other", "ed25519", "");
    std::fs::write(&bad, format!("{}\n{}\n", pub_line(&two), pub_line(&other))).unwrap();
    let err = fails(&fleet.bento(&["host", "add", "web3", "--key", s(&bad)]));
    assert!(err.contains(&format!("{}: holds 2 keys", bad.display())), "{err}");

    // Key files inside the fleet: named with their line, by every command.
    std::fs::write(fleet.path("keys/admins/eve.pub"), "\nage1nope\n").unwrap();
    for args in [&["host", "list"][..], &["secret", "verify"], &["admin", "list"]] {
        let err = fails(&fleet.bento(args));
        assert!(err.contains("keys/admins/eve.pub:2: "), "{args:?}: {err}");
    }
    std::fs::remove_file(fleet.path("keys/admins/eve.pub")).unwrap();
    std::fs::write(fleet.path("keys/hosts/web9.pub"), "ssh-dss AAAA\n").unwrap();
    let err = fails(&fleet.bento(&["secret", "list"]));
    assert!(err.contains("keys/hosts/web9.pub:1: "), "{err}");
}
