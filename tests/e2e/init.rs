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

#[test]
fn commands_find_the_fleet_from_a_subdirectory() {
    let (fleet, keys) = crate::harness::example();
    let deep = fleet.path("hosts/web1/modules");
    std::fs::create_dir_all(&deep).unwrap();
    let out = fleet.cmd(&["host", "list"]).current_dir(&deep).output().unwrap();
    let list = ok(&out);
    assert!(list.contains("web1") && list.contains("db1"), "{list}");
    // A secret written from a subdirectory lands in the fleet's secrets/.
    let mut edit = fleet.cmd(&["secret", "edit", "web-only"]);
    edit.current_dir(&deep).stdin(std::process::Stdio::piped());
    let out = {
        use std::io::Write;
        let mut child = edit
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"found").unwrap();
        child.wait_with_output().unwrap()
    };
    ok(&out);
    assert!(fleet.path("secrets/web-only.age").exists());
    let shown = fleet
        .cmd(&["secret", "show", "web-only", "-i", crate::harness::s(&keys.web1)])
        .current_dir(fleet.path("keys"))
        .output()
        .unwrap();
    assert_eq!(ok(&shown), "found");

    // A rules-only checkout (no bento.toml) is a fleet too.
    std::fs::remove_file(fleet.path("bento.toml")).unwrap();
    ok(&fleet
        .cmd(&["secret", "list"])
        .current_dir(&deep)
        .output()
        .unwrap());

    // `init` works where it is run, even inside another fleet.
    let sub = fleet.path("hosts/newfleet");
    std::fs::create_dir_all(&sub).unwrap();
    ok(&fleet.cmd(&["init"]).current_dir(&sub).output().unwrap());
    assert!(sub.join("secrets/secrets.toml").exists());
}

#[test]
fn outside_any_fleet_the_error_says_where_it_looked_and_what_to_do() {
    let fleet = Fleet::new();
    let outside = tempfile::tempdir().unwrap();
    let out = fleet
        .cmd(&["secret", "list"])
        .current_dir(outside.path())
        .output()
        .unwrap();
    let err = fails(&out);
    assert!(
        err.contains(&format!("no fleet repository in {}", outside.path().display()))
            && err.contains("bento init")
            && err.contains("--fleet DIR"),
        "{err}"
    );
    // --fleet and BENTO_FLEET still point anywhere.
    let flag = fleet
        .cmd(&["--fleet", crate::harness::s(&fleet.root), "secret", "list"])
        .current_dir(outside.path())
        .output()
        .unwrap();
    ok(&flag);
    let env = fleet
        .cmd(&["secret", "list"])
        .env("BENTO_FLEET", &fleet.root)
        .current_dir(outside.path())
        .output()
        .unwrap();
    ok(&env);
}

#[test]
fn init_comments_point_to_help_that_exists_in_a_fleet() {
    let fleet = Fleet::new();
    for file in ["bento.toml", "secrets/secrets.toml"] {
        let text = std::fs::read_to_string(fleet.path(file)).unwrap();
        assert!(
            !text.contains("docs/"),
            "{file} points to bento's own docs: {text}"
        );
        assert!(
            text.contains("--help") && text.contains("bento manpage"),
            "{file}: {text}"
        );
    }
    // What they point to is there.
    let page = ok(&fleet.bento(&["manpage"]));
    assert!(page.contains(".TH bento"), "{}", &page[..page.len().min(200)]);
    ok(&fleet.bento(&["secret", "--help"]));
    ok(&fleet.bento(&["admin", "--help"]));
}
