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
    for args in [
        &["--help"][..],
        &["init", "--help"],
        &["secret", "--help"],
        &["secret", "edit", "--help"],
        &["secret", "show", "--help"],
    ] {
        let out = ok(&fleet.bento(args));
        assert!(out.contains("Usage:"), "{args:?}: {out}");
    }
}
