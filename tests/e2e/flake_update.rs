//! `bento flake-update [INPUT]` with real Nix and no network: host flakes whose inputs are
//! local `path:` flakes, in a private Nix store under the test's temp dir.

use std::path::Path;
use std::process::Output;

use crate::harness::{fails, ok, Fleet};

/// `bento flake-update ARGS` with a private store.
fn flake_update(fleet: &Fleet, args: &[&str]) -> Output {
    let mut all = vec!["flake-update"];
    all.extend_from_slice(args);
    fleet
        .cmd(&all)
        .env(
            "NIX_CONFIG",
            format!("store = {}", fleet.home.join("nix-store").display()),
        )
        .output()
        .unwrap()
}

/// The hosts named on stdout, in order.
fn named(out: &Output) -> Vec<String> {
    ok(out)
        .lines()
        .map(|l| l.split(':').next().unwrap().to_owned())
        .collect()
}

/// A local flake in `dir`, with a data file whose content changes its hash.
fn input_flake(dir: &Path, data: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("flake.nix"), "{ outputs = { self }: { }; }\n").unwrap();
    std::fs::write(dir.join("data"), data).unwrap();
}

fn host_flake(fleet: &Fleet, host: &str, input: &str, dir: &Path) {
    let flake = fleet.path(&format!("hosts/{host}"));
    std::fs::create_dir_all(&flake).unwrap();
    std::fs::write(
        flake.join("flake.nix"),
        format!(
            "{{ inputs.{input}.url = \"path:{}\";\n  outputs = {{ self, {input} }}: {{ nixosConfigurations.{host} = {{ }}; }}; }}\n",
            dir.display()
        ),
    )
    .unwrap();
}

#[test]
fn flake_update_names_the_hosts_whose_lock_changed() {
    crate::harness::require("nix");
    let fleet = Fleet::new();
    let lib = fleet.home.join("lib");
    let other = fleet.home.join("other");
    input_flake(&lib, "1");
    input_flake(&other, "1");
    host_flake(&fleet, "web1", "lib", &lib);
    host_flake(&fleet, "db1", "other", &other);
    let lock = |h: &str| std::fs::read(fleet.path(&format!("hosts/{h}/flake.lock"))).ok();

    // No lock yet: both are written.
    assert_eq!(named(&flake_update(&fleet, &[])), ["db1", "web1"]);
    let (web1, db1) = (lock("web1").unwrap(), lock("db1").unwrap());

    // web1's input changed: only its lock moves.
    input_flake(&lib, "2");
    let out = flake_update(&fleet, &[]);
    assert_eq!(named(&out), ["web1"]);
    assert!(ok(&out).contains("web1: hosts/web1/flake.lock changed"));
    assert_ne!(lock("web1").unwrap(), web1);
    assert_eq!(lock("db1").unwrap(), db1);

    // Nothing changed since: nothing named.
    let web1 = lock("web1").unwrap();
    let out = flake_update(&fleet, &[]);
    assert_eq!(named(&out), Vec::<String>::new());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no lock changed"));
    assert_eq!(lock("web1").unwrap(), web1);

    // Both inputs changed, only `lib` asked for: db1's `other` stays locked where it was.
    input_flake(&lib, "3");
    input_flake(&other, "3");
    assert_eq!(named(&flake_update(&fleet, &["lib"])), ["web1"]);
    assert_ne!(lock("web1").unwrap(), web1);
    assert_eq!(lock("db1").unwrap(), db1);

    // The fleet's own flake is updated too.
    std::fs::write(
        fleet.path("flake.nix"),
        format!(
            "{{ inputs.other.url = \"path:{}\"; outputs = {{ self, other }}: {{ }}; }}\n",
            other.display()
        ),
    )
    .unwrap();
    let out = flake_update(&fleet, &["other"]);
    let stdout = ok(&out);
    assert!(
        stdout.starts_with("the fleet's own flake: flake.lock changed\n"),
        "{stdout}"
    );
    assert_eq!(named(&out), ["the fleet's own flake", "db1"]);
}

#[test]
fn flake_update_refuses_a_fleet_without_flakes_and_a_bad_input_name() {
    let fleet = Fleet::new();
    let err = fails(&flake_update(&fleet, &[]));
    assert!(err.contains("no flake.nix"), "{err}");
    let err = fails(&flake_update(&fleet, &["--", "--recreate-lock-file"]));
    assert!(err.contains("is not a flake input name"), "{err}");
}
