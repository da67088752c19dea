//! Bad input gets one clear line naming the file, the position and the fix.

use crate::harness::{example, fails, ok, s};

#[test]
fn unknown_secret() {
    let (fleet, keys) = example();
    let err = fails(&fleet.bento(&["secret", "show", "nope", "-i", s(&keys.web1)]));
    assert_eq!(
        err,
        "error: no rule for secret `nope` in secrets/secrets.toml; add a [secrets.nope] table with its recipients"
    );
    let err = fails(&fleet.bento_stdin(&["secret", "edit", "nope"], b"x"));
    assert!(err.contains("no rule for secret `nope`"), "{err}");
    assert!(!fleet.path("secrets/nope.age").exists());
}

#[test]
fn secret_with_rule_but_no_file() {
    let (fleet, keys) = example();
    let err = fails(&fleet.bento(&["secret", "show", "tls", "-i", s(&keys.web1)]));
    assert!(
        err.contains("secrets/tls.age does not exist yet; create it with `bento secret edit tls`"),
        "{err}"
    );
}

#[test]
fn malformed_rules_name_file_and_line() {
    let (fleet, keys) = example();
    let cases: &[(&str, &str)] = &[
        (
            "admins = [\"alice\"]\n[secrets.a]\nrecipients = [\"web1\",\n",
            "secrets/secrets.toml:4:",
        ),
        (
            "[secrets.a]\nrecipients = [\"web1\"]\nmode = \"0999\"\n",
            "secrets/secrets.toml:3: a.mode `0999` is not an octal mode",
        ),
        (
            "[secrets.a]\nrecipients = [\"web9\"]\n",
            "secrets/secrets.toml:2: unknown recipient `web9`",
        ),
        (
            "[groups]\nweb = [\"web1\", \"ghost\"]\n",
            "secrets/secrets.toml:2: unknown host `ghost` in group web",
        ),
        (
            "admins = [\"alice\", \"carol\"]\n",
            "secrets/secrets.toml:1: unknown admin `carol`",
        ),
        (
            "[secrets.a]\nrecipients = [\"web1\"]\nowner = \"root\"\nowner = \"x\"\n",
            "secrets/secrets.toml:4:",
        ),
        (
            "[secrets.a]\nrecipients = [\"web1\"]\nrecipents = []\n",
            "secrets/secrets.toml:3: column 1: unknown field `recipents`",
        ),
        (
            "[secrets.\"a/b\"]\nrecipients = [\"web1\"]\n",
            "secrets/secrets.toml:1: bad secret name `a/b`",
        ),
        (
            "[secrets.a]\nrecipients = [\"web1\"]\npath = \"relative/x\"\n",
            "secrets/secrets.toml:3: a.path",
        ),
        (
            "[secrets.a]\nrecipients = [\"web1\"]\nmode = \"4755\"\n",
            "secrets/secrets.toml:3: a.mode \"4755\": setuid/setgid/sticky bits are not allowed for \
             secrets; use e.g. \"0400\"",
        ),
        (
            "[secrets.a]\nrecipients = [\"web1\"]\n\nmode = \"2440\"\n",
            "secrets/secrets.toml:4: a.mode \"2440\": setuid/setgid/sticky bits are not allowed",
        ),
        (
            "[secrets.a]\nrecipients = [\"web1\"]\nmode = \"1600\"\n",
            "secrets/secrets.toml:3: a.mode \"1600\": setuid/setgid/sticky bits are not allowed",
        ),
    ];
    for (rules, expected) in cases {
        fleet.rules(rules);
        let err = fails(&fleet.bento(&["secret", "show", "a", "-i", s(&keys.web1)]));
        assert!(
            err.starts_with(&format!("error: {expected}")),
            "rules {rules:?}\ngot: {err}"
        );
    }
}

#[test]
fn invalid_key_lines_name_file_and_line() {
    let (fleet, keys) = example();
    let cases: &[(&str, &str, &str)] = &[
        ("keys/admins/carol.pub", "# carol\nssh-ed25519 AAAAnotbase64!!\n", "keys/admins/carol.pub:2: `ssh-ed25519 AAAAnotbase64!!` is not a valid ssh public key"),
        ("keys/admins/carol.pub", "AGE-SECRET-KEY-1XYZ\n", "keys/admins/carol.pub:1: this is a PRIVATE age identity"),
        ("keys/hosts/web2.pub", "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBHFliOyIZs1gxGF3fmDxFykQhE88wy6AKDGFBfn0R6ZuvRmENABZQa9+pj9hMki+LX0qDJbmHTiWDbYv/cmFt/Q=\n", "keys/hosts/web2.pub:1: `ecdsa-sha2"),
        ("keys/hosts/web2.pub", "\n", "keys/hosts/web2.pub: holds no key"),
        ("keys/admins/web1.pub", &format!("{}\n", std::fs::read_to_string(crate::harness::pub_of(&keys.bob)).unwrap().trim()), "keys/admins/web1.pub: `web1` is also a host"),
        ("keys/hosts/web2.pub", &std::fs::read_to_string(crate::harness::pub_of(&keys.web1)).unwrap(), "keys/hosts/web2.pub: holds the same key as keys/hosts/web1.pub"),
    ];
    for (file, content, expected) in cases {
        std::fs::write(fleet.path(file), content).unwrap();
        let err = fails(&fleet.bento(&["secret", "show", "db-password", "-i", s(&keys.web1)]));
        assert!(
            err.starts_with(&format!("error: {expected}")),
            "{file}: {content:?}\ngot: {err}"
        );
        std::fs::remove_file(fleet.path(file)).unwrap();
    }
}

#[test]
fn wrong_identity_names_who_can_decrypt() {
    let (fleet, _) = example();
    ok(&fleet.bento_stdin(&["secret", "edit", "web-only"], b"x"));
    let stranger = fleet.ssh_key("stranger", "ed25519", "");
    let err = fails(&fleet.bento(&["secret", "show", "web-only", "-i", s(&stranger)]));
    assert!(err.contains("none of the identities"), "{err}");
    assert!(err.contains("alice") && err.contains("web1"), "{err}");
    // Not an identity at all.
    let junk = fleet.keys.join("junk");
    std::fs::write(&junk, "hello\n").unwrap();
    let err = fails(&fleet.bento(&["secret", "show", "web-only", "-i", s(&junk)]));
    assert!(err.contains(s(&junk)), "{err}");
    // An ecdsa key cannot decrypt age files.
    let ecdsa = fleet.ssh_key("ecdsa", "ecdsa", "");
    let err = fails(&fleet.bento(&["secret", "show", "web-only", "-i", s(&ecdsa)]));
    assert!(err.contains("ed25519 or rsa"), "{err}");
}

#[test]
fn truncated_and_corrupt_age_files() {
    let (fleet, keys) = example();
    ok(&fleet.bento_stdin(&["secret", "edit", "db-password"], &[b'z'; 2000]));
    let path = fleet.path("secrets/db-password.age");
    let good = std::fs::read(&path).unwrap();
    let header_end = good.windows(4).position(|w| w == b"\n---").unwrap();

    let mut payload_flip = good.clone();
    let last = payload_flip.len() - 10;
    payload_flip[last] ^= 1;
    let mut header_flip = good.clone();
    header_flip[header_end + 6] ^= 1;
    let variants: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("truncated header", good[..header_end / 2].to_vec()),
        ("truncated payload", good[..good.len() - 100].to_vec()),
        ("flipped payload byte", payload_flip),
        ("flipped MAC byte", header_flip),
        ("not age at all", b"hello world\n".to_vec()),
    ];
    for (what, bytes) in variants {
        std::fs::write(&path, &bytes).unwrap();
        let err = fails(&fleet.bento(&["secret", "show", "db-password", "-i", s(&keys.web1)]));
        assert!(
            err.starts_with("error: secrets/db-password.age:") && err.contains("corrupt or truncated"),
            "{what}: {err}"
        );
        assert!(!err.contains("zzzz"), "{what}: plaintext in error");
    }
}

#[test]
fn plugin_recipient_without_its_plugin_names_the_binary() {
    let (fleet, _) = example();
    let recipient = crate::harness::plugin_recipient("yubikey");
    fleet.add_admin("carol", &recipient);
    fleet.rules("admins = [\"alice\", \"carol\"]\n[secrets.a]\nrecipients = [\"web1\"]\n");
    let err = fails(&fleet.bento_stdin(&["secret", "edit", "a"], b"x"));
    assert!(
        err.contains("`age-plugin-yubikey`, which is not installed"),
        "{err}"
    );
    assert!(!fleet.path("secrets/a.age").exists());
}

#[test]
fn typos_get_the_closest_name_everywhere() {
    let (fleet, keys) = example();
    std::fs::create_dir_all(fleet.path("hosts/web1")).unwrap();
    std::fs::write(fleet.path("hosts/web1/configuration.nix"), "{ }\n").unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["secret", "show", "db-pasword", "-i", s(&keys.web1)],
            "no rule for secret `db-pasword` in secrets/secrets.toml (did you mean db-password?)",
        ),
        (&["secret", "rekey", "web-onyl"], "(did you mean web-only?)"),
        (&["host", "remove", "wbe1"], "no host `wbe1` (did you mean web1?)"),
        (
            &["admin", "remove", "alcie"],
            "no admin `alcie` (did you mean alice?)",
        ),
        (&["build", "wbe1"], "no such host `wbe1` (did you mean web1?)"),
        (
            &["build", "db1"],
            "host `db1` has a key but no configuration: create hosts/db1/configuration.nix",
        ),
    ];
    for (args, expected) in cases {
        let err = fails(&fleet.bento(args));
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    // A host on the server.
    let server = fleet.home.join("server");
    std::fs::create_dir_all(server.join("web1")).unwrap();
    let err = fails(&fleet.bento(&["diff", "wbe1", "--server-root", s(&server)]));
    assert!(
        err.contains("no such host `wbe1` on the server (did you mean web1?)"),
        "{err}"
    );
    // Far from every name: no guess.
    let err = fails(&fleet.bento(&["secret", "show", "nginx", "-i", s(&keys.web1)]));
    assert!(!err.contains("did you mean"), "{err}");

    // References inside secrets.toml.
    let rules: &[(&str, &str)] = &[
        (
            "admins = [\"alcie\"]\n",
            "unknown admin `alcie` in admins (did you mean alice?)",
        ),
        (
            "[groups]\nweb = [\"wbe1\"]\n",
            "unknown host `wbe1` in group web (did you mean web1?)",
        ),
        (
            "[groups]\nweb = [\"web1\"]\n[secrets.a]\nrecipients = [\"@wbe\"]\n",
            "unknown group `@wbe` in a.recipients (did you mean @web?)",
        ),
        (
            "[groups]\nweb = [\"web1\"]\n[secrets.a]\nrecipients = [\"web\"]\n",
            "unknown recipient `web` in a.recipients (did you mean @web?)",
        ),
        (
            "[secrets.a]\nrecipients = [\"bbo\"]\n",
            "unknown recipient `bbo` in a.recipients (did you mean bob?)",
        ),
    ];
    for (text, expected) in rules {
        fleet.rules(text);
        let err = fails(&fleet.bento(&["secret", "verify"]));
        assert!(err.contains(expected), "{text}: {err}");
    }
}

#[test]
fn an_unquoted_mode_says_it_is_a_quoted_octal_string() {
    let (fleet, _) = example();
    for (value, line) in [("0440", 3), ("440", 3), ("0o440", 3)] {
        fleet.rules(&format!("[secrets.a]\nrecipients = [\"web1\"]\nmode = {value}\n"));
        let err = fails(&fleet.bento(&["secret", "list"]));
        assert_eq!(
            err,
            format!(
                "error: secrets/secrets.toml:{line}: `mode` is a quoted octal string: write mode = \"0440\", not mode = {value}"
            )
        );
    }
}

#[test]
fn identity_mistakes_name_where_they_were_made() {
    let (fleet, keys) = example();
    ok(&fleet.bento_stdin(&["secret", "edit", "web-only"], b"v"));
    // A public key where the private one belongs.
    let public = crate::harness::pub_of(&keys.web1);
    let err = fails(&fleet.bento(&["secret", "show", "web-only", "-i", s(&public)]));
    assert_eq!(
        err,
        format!(
            "error: {}: that is a public key; pass the private key instead (the same file without .pub)",
            public.display()
        )
    );
    // A wrong path in BENTO_IDENTITY names the variable.
    let out = fleet
        .cmd(&["secret", "show", "web-only"])
        .env("BENTO_IDENTITY", "/nonexistent/key")
        .output()
        .unwrap();
    let err = fails(&out);
    assert!(
        err.starts_with("error: /nonexistent/key (from $BENTO_IDENTITY):"),
        "{err}"
    );
}
