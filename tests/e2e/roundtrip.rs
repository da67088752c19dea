use crate::harness::{example, fails, ok, s};

#[test]
fn each_key_type_round_trips() {
    let (fleet, keys) = example();
    let out = fleet.bento_stdin(&["secret", "edit", "db-password"], b"correct horse\n");
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("encrypted to 4 keys (alice, bob, db1, web1)"));
    // ed25519 host, rsa host, age admin, ssh admin.
    for key in [&keys.web1, &keys.db1, &keys.alice, &keys.bob] {
        let shown = ok(&fleet.bento(&["secret", "show", "db-password", "-i", s(key)]));
        assert_eq!(shown, "correct horse\n", "with {}", key.display());
    }
    let raw = std::fs::read(fleet.path("secrets/db-password.age")).unwrap();
    assert!(
        raw.starts_with(b"age-encryption.org/v1\n"),
        "binary age file expected"
    );
    assert!(
        !raw.windows(13).any(|w| w == b"correct horse"),
        "plaintext in ciphertext"
    );
}

#[test]
fn armor_rule_writes_armored_age() {
    let (fleet, keys) = example();
    ok(&fleet.bento_stdin(&["secret", "edit", "tls"], b"-----BEGIN KEY-----\n"));
    let raw = std::fs::read_to_string(fleet.path("secrets/tls.age")).unwrap();
    assert!(raw.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"), "{raw}");
    let shown = ok(&fleet.bento(&["secret", "show", "tls", "-i", s(&keys.web1)]));
    assert_eq!(shown, "-----BEGIN KEY-----\n");
}

#[test]
fn identity_from_env_and_default_home_key() {
    let (fleet, keys) = example();
    ok(&fleet.bento_stdin(&["secret", "edit", "db-password"], b"v1"));
    // BENTO_IDENTITY
    let out = fleet
        .cmd(&["secret", "show", "db-password"])
        .env("BENTO_IDENTITY", &keys.db1)
        .output()
        .unwrap();
    assert_eq!(ok(&out), "v1");
    // ~/.ssh/id_ed25519
    std::fs::create_dir_all(fleet.home.join(".ssh")).unwrap();
    std::fs::copy(&keys.bob, fleet.home.join(".ssh/id_ed25519")).unwrap();
    assert_eq!(ok(&fleet.bento(&["secret", "show", "db-password"])), "v1");
}

#[test]
fn a_host_not_among_the_recipients_cannot_decrypt() {
    let (fleet, keys) = example();
    ok(&fleet.bento_stdin(&["secret", "edit", "web-only"], b"only for web"));
    let err = fails(&fleet.bento(&["secret", "show", "web-only", "-i", s(&keys.db1)]));
    assert!(
        err.contains("secrets/web-only.age: none of the identities"),
        "{err}"
    );
    assert!(err.contains("meant for alice, web1"), "{err}");
    assert!(!err.contains("only for web"));
    // And the age CLI agrees.
    let out = std::process::Command::new("age")
        .args(["-d", "-i", s(&keys.db1)])
        .arg(fleet.path("secrets/web-only.age"))
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn stdin_with_same_content_leaves_file_byte_identical() {
    let (fleet, keys) = example();
    ok(&fleet.bento_stdin(&["secret", "edit", "db-password", "-i", s(&keys.bob)], b"same"));
    let before = std::fs::read(fleet.path("secrets/db-password.age")).unwrap();
    let out = fleet.bento_stdin(&["secret", "edit", "db-password", "-i", s(&keys.bob)], b"same");
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unchanged"));
    assert_eq!(
        std::fs::read(fleet.path("secrets/db-password.age")).unwrap(),
        before
    );
}

#[test]
fn passphrase_is_asked_once_and_wrong_passphrase_is_retried() {
    let (fleet, _) = example();
    let locked = fleet.ssh_key("locked", "ed25519", "pa55word");
    fleet.add_admin("bob", &crate::harness::pub_line(&locked));
    ok(&fleet.bento_stdin(&["secret", "edit", "db-password"], b"behind a passphrase"));

    let out = fleet.bento_tty(
        &["secret", "show", "db-password", "-i", s(&locked)],
        &[],
        &[
            ("Passphrase for", b"wrong\n".as_slice()),
            ("Passphrase for", b"pa55word\n"),
        ],
    );
    let screen = ok(&out);
    assert!(screen.contains("behind a passphrase"), "{screen}");
    assert_eq!(
        screen.matches("wrong passphrase, try again").count(),
        1,
        "{screen}"
    );
    assert_eq!(screen.matches("Passphrase for").count(), 2, "{screen}");

    // Without a terminal there is nobody to ask: a clear error, not a hang.
    let err = fails(&fleet.bento(&["secret", "show", "db-password", "-i", s(&locked)]));
    assert!(
        err.contains(&format!(
            "the key that can decrypt it, {}, is passphrase-protected and there is no terminal",
            s(&locked)
        )) && err.contains("pass -i with a key without a passphrase"),
        "{err}"
    );
}
