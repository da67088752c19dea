//! An existing agenix repository: `--rules secrets.nix`, and the migration import.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{fails, ok, pub_line, require, s, Fleet};

struct Agenix {
    fleet: Fleet, // only for its key helpers and temp dir
    dir: PathBuf,
    user: PathBuf,
    host1: PathBuf,
    host2: PathBuf,
}

/// An agenix repo: let-bound keys, publicKeys lists, one armored secret, files made by
/// the `age` CLI. No bento.toml anywhere.
fn agenix_repo() -> Agenix {
    require("nix-instantiate");
    require("age");
    let fleet = Fleet::new();
    let dir = fleet.home.join("agenix-repo/secrets");
    std::fs::create_dir_all(&dir).unwrap();
    let user = fleet.ssh_key("user1", "ed25519", "");
    let host1 = fleet.ssh_key("system1", "ed25519", "");
    let host2 = fleet.ssh_key("system2", "rsa", "");
    let nix = format!(
        r#"let
  user1 = "{}";
  system1 = "{}";
  system2 = "{}";
  systems = [ system1 system2 ];
in
{{
  "secret1.age".publicKeys = [ user1 system1 ];
  "secret2.age" = {{ publicKeys = [ user1 ] ++ systems; armor = true; }};
  "admin-only.age".publicKeys = [ user1 ];
}}
"#,
        pub_line(&user),
        pub_line(&host1),
        pub_line(&host2)
    );
    std::fs::write(dir.join("secrets.nix"), nix).unwrap();
    let repo = Agenix {
        fleet,
        dir,
        user,
        host1,
        host2,
    };
    repo.age(
        &["-R", &pubs(&repo.user), "-R", &pubs(&repo.host1)],
        "secret1.age",
        "one",
    );
    repo.age(
        &[
            "-a",
            "-R",
            &pubs(&repo.user),
            "-R",
            &pubs(&repo.host1),
            "-R",
            &pubs(&repo.host2),
        ],
        "secret2.age",
        "two",
    );
    repo.age(&["-R", &pubs(&repo.user)], "admin-only.age", "three");
    repo
}

fn pubs(key: &Path) -> String {
    crate::harness::pub_of(key).to_str().unwrap().to_owned()
}

impl Agenix {
    fn age(&self, args: &[&str], file: &str, content: &str) {
        let input = self.fleet.keys.join("plain");
        std::fs::write(&input, content).unwrap();
        let out = Command::new("age")
            .args(args)
            .arg("-o")
            .arg(self.dir.join(file))
            .arg(&input)
            .output()
            .unwrap();
        ok(&out);
    }

    /// `bento secret --rules secrets.nix ARGS` run from the repo's parent directory.
    fn bento(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["secret", "--rules", "secrets/secrets.nix"];
        all.extend_from_slice(args);
        self.fleet
            .cmd(&all)
            .current_dir(self.dir.parent().unwrap())
            .output()
            .unwrap()
    }
}

#[test]
fn agenix_repo_verifies_and_a_stale_one_does_not() {
    let repo = agenix_repo();
    let out = repo.bento(&["verify"]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 secrets verified"));
    // secret1 re-made for the user only: system1 is missing.
    repo.age(&["-R", &pubs(&repo.user)], "secret1.age", "one");
    let out = repo.bento(&["verify"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "secret1: missing system1 (named directly)\n"
    );
}

#[test]
fn show_edit_rekey_work_in_an_agenix_repo() {
    let repo = agenix_repo();
    assert_eq!(ok(&repo.bento(&["show", "secret2", "-i", s(&repo.host2)])), "two");
    // Stale after a hand-made file; rekey fixes it and the host can decrypt with age.
    repo.age(&["-R", &pubs(&repo.user)], "secret1.age", "one");
    ok(&repo.bento(&["rekey", "-i", s(&repo.user)]));
    ok(&repo.bento(&["verify"]));
    assert!(repo.dir.join("recipients.lock").exists());
    let out = Command::new("age")
        .args(["-d", "-i", s(&repo.host1)])
        .arg(repo.dir.join("secret1.age"))
        .output()
        .unwrap();
    assert_eq!(ok(&out), "one");
    // Edit from stdin keeps armor for secret2.
    let mut cmd = repo.fleet.cmd(&[
        "secret",
        "--rules",
        "secrets/secrets.nix",
        "edit",
        "secret2",
        "-i",
        s(&repo.user),
    ]);
    cmd.current_dir(repo.dir.parent().unwrap())
        .stdin(std::process::Stdio::piped());
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"changed").unwrap();
    ok(&child.wait_with_output().unwrap());
    let raw = std::fs::read_to_string(repo.dir.join("secret2.age")).unwrap();
    assert!(raw.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
    assert_eq!(
        ok(&repo.bento(&["show", "secret2", "-i", s(&repo.host1)])),
        "changed"
    );
}

#[test]
fn import_agenix_makes_a_fleet_that_verifies() {
    let repo = agenix_repo();
    let fleet = &repo.fleet;
    let nix = repo.dir.join("secrets.nix");
    ok(&fleet.bento(&["secret", "import-agenix", s(&nix)]));
    let rules = std::fs::read_to_string(fleet.path("secrets/secrets.toml")).unwrap();
    assert!(rules.contains("admins = [\"user1\"]"), "{rules}");
    assert!(fleet.path("keys/hosts/system1.pub").exists() && fleet.path("keys/admins/user1.pub").exists());
    assert!(
        rules.contains("[secrets.secret2]") && rules.contains("armor = true"),
        "{rules}"
    );
    ok(&fleet.bento(&["secret", "verify"]));
    assert_eq!(
        ok(&fleet.bento(&["secret", "show", "secret1", "-i", s(&repo.host1)])),
        "one"
    );
    // A second import refuses: the fleet has secrets now.
    let err = fails(&fleet.bento(&["secret", "import-agenix", s(&nix)]));
    assert!(err.contains("already defines secrets"), "{err}");
}

#[test]
fn bad_secrets_nix_and_missing_nix_instantiate() {
    let repo = agenix_repo();
    std::fs::write(
        repo.dir.join("secrets.nix"),
        "{ \"a.age\".publicKeys = [ \"ssh-ed25519 nope\" ]; }",
    )
    .unwrap();
    let err = fails(&repo.bento(&["verify"]));
    assert!(
        err.starts_with("error: secrets/secrets.nix: \"a.age\": publicKeys:"),
        "{err}"
    );
    std::fs::write(repo.dir.join("secrets.nix"), "{ \"a.age\".publicKeys = [ ").unwrap();
    let err = fails(&repo.bento(&["verify"]));
    assert!(err.contains("nix-instantiate failed"), "{err}");
    // No nix on PATH.
    let empty = repo.fleet.home.join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let out = repo
        .fleet
        .cmd(&["secret", "--rules", "secrets/secrets.nix", "verify"])
        .current_dir(repo.dir.parent().unwrap())
        .env("PATH", &empty)
        .output()
        .unwrap();
    let err = fails(&out);
    assert!(
        err.contains("needs `nix-instantiate`, which is not installed"),
        "{err}"
    );
}
