use crate::harness::{fails, ok, Fleet};

#[test]
fn init_lays_out_a_fleet_and_refuses_to_overwrite() {
    let fleet = Fleet::new();
    for f in [
        "bento.toml",
        "secrets/secrets.toml",
        "hosts",
        "keys/hosts",
        "keys/admins",
    ] {
        assert!(fleet.path(f).exists(), "{f} missing after init");
    }
    let toml = std::fs::read_to_string(fleet.path("bento.toml")).unwrap();
    assert!(toml.contains("[server]") && toml.contains("signing_key") && toml.contains('#'));

    std::fs::write(fleet.path("bento.toml"), "# mine\n").unwrap();
    let err = fails(&fleet.bento(&["init"]));
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(
        std::fs::read_to_string(fleet.path("bento.toml")).unwrap(),
        "# mine\n"
    );
}

#[test]
fn init_honours_fleet_flag() {
    let fleet = Fleet::new();
    let other = fleet.home.join("second");
    ok(&fleet.bento(&["--fleet", other.to_str().unwrap(), "init"]));
    assert!(other.join("secrets/secrets.toml").exists());
    // The new fleet is immediately usable: an unknown secret is a clean error, not a crash.
    let err = fails(&fleet.bento(&["--fleet", other.to_str().unwrap(), "secret", "show", "x"]));
    assert!(err.contains("no rule for secret `x`"), "{err}");
}

#[test]
fn every_command_has_help() {
    let fleet = Fleet::new();
    let commands: &[&[&str]] = &[
        &["--help"],
        &["init", "--help"],
        &["host", "add", "--help"],
        &["host", "list", "--help"],
        &["host", "remove", "--help"],
        &["secret", "--help"],
        &["secret", "edit", "--help"],
        &["secret", "show", "--help"],
        &["secret", "verify", "--help"],
        &["secret", "rekey", "--help"],
        &["secret", "list", "--help"],
        &["secret", "import-agenix", "--help"],
        &["build", "--help"],
        &["deploy", "--help"],
        &["server", "setup", "--help"],
        &["agent", "--help"],
        &["trigger", "--help"],
        &["activate", "--help"],
        &["completions", "--help"],
        &["manpage", "--help"],
    ];
    for args in commands {
        let out = ok(&fleet.bento(args));
        assert!(out.contains("Usage:"), "{args:?}: {out}");
    }
}

#[test]
fn completions_and_man_page() {
    let fleet = Fleet::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = ok(&fleet.bento(&["completions", shell]));
        assert!(out.contains("secret") && out.contains("deploy"), "{shell}: {out}");
    }
    let man = ok(&fleet.bento(&["manpage"]));
    assert!(man.contains(".TH bento 1") && man.contains("activate"), "{man}");
    // The bash script is valid bash.
    let script = fleet.home.join("bento.bash");
    std::fs::write(&script, ok(&fleet.bento(&["completions", "bash"]))).unwrap();
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    ok(&check);
}
