//! `bento admin add|list|remove`, and a key that would belong to two names.

use crate::harness::{example, fails, ok, pub_line, pub_of, s};

/// Everything under keys/ and the rules, to check that a refusal changed nothing.
fn snapshot(fleet: &crate::harness::Fleet) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for dir in ["keys/hosts", "keys/admins", "secrets"] {
        let mut names: Vec<_> = std::fs::read_dir(fleet.path(dir))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        names.sort();
        for path in names {
            files.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    files
}

const RULES: &str = r#"# Our rules. Keep this comment.
admins = ["alice"]   # alice is on call

[groups]
web = ["web1"]  # the front

[secrets.db-password]
recipients = ["@web", "db1", "bob"]
"#;

#[test]
fn add_list_remove_edit_only_the_admins_list() {
    let (fleet, keys) = example();
    fleet.rules(RULES);
    ok(&fleet.bento_stdin(&["secret", "edit", "db-password"], b"pw"));

    let carol = fleet.ssh_key("carol", "ed25519", "");
    let out = fleet.bento(&["admin", "add", "carol", "--key", s(&pub_of(&carol))]);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("next: `bento secret rekey` (1 stale secret), by an admin who can decrypt"),
        "{stderr}"
    );
    let stored = std::fs::read_to_string(fleet.path("keys/admins/carol.pub")).unwrap();
    assert_eq!(
        stored.split_whitespace().take(2).collect::<Vec<_>>(),
        pub_line(&carol).split_whitespace().take(2).collect::<Vec<_>>()
    );
    // Only the list changed: comments and layout are the user's.
    assert_eq!(
        std::fs::read_to_string(fleet.path("secrets/secrets.toml")).unwrap(),
        RULES.replace(r#"["alice"]"#, r#"["alice", "carol"]"#)
    );
    // The new admin is a recipient from now on: verify says so until a rekey.
    let out = fleet.bento(&["secret", "verify"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("db-password: missing carol"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    ok(&fleet.bento(&["secret", "rekey", "-i", s(&keys.alice)]));
    assert_eq!(
        ok(&fleet.bento(&["secret", "show", "db-password", "-i", s(&carol)])),
        "pw"
    );

    let list: serde_json::Value =
        serde_json::from_str(&ok(&fleet.bento(&["admin", "list", "--json"]))).unwrap();
    let rows: Vec<(&str, bool, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap(),
                a["default"].as_bool().unwrap(),
                a["keys"][0]["type"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("alice", true, "age"),
            ("bob", false, "ssh-ed25519"),
            ("carol", true, "ssh-ed25519")
        ]
    );
    let table = ok(&fleet.bento(&["admin", "list"]));
    assert!(table.contains("carol") && table.contains("SHA256:"), "{table}");

    // bob is named by a rule: removing his key would break the rules. Nothing changes.
    let before = snapshot(&fleet);
    let err = fails(&fleet.bento(&["admin", "remove", "bob"]));
    assert!(
        err.contains("db-password.recipients still names bob; remove it there first"),
        "{err}"
    );
    assert_eq!(snapshot(&fleet), before);
    let err = fails(&fleet.bento(&["admin", "remove", "crol"]));
    assert!(err.contains("no admin `crol` (did you mean carol?)"), "{err}");

    let out = fleet.bento(&["admin", "remove", "carol"]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("next: `bento secret rekey` (1 stale secret)"));
    assert!(!fleet.path("keys/admins/carol.pub").exists());
    assert_eq!(
        std::fs::read_to_string(fleet.path("secrets/secrets.toml")).unwrap(),
        RULES
    );
    let out = fleet.bento(&["secret", "verify"]);
    assert!(!out.status.success(), "carol's stanza is still there: stale");
}

#[test]
fn add_creates_the_admins_list_when_there_is_none() {
    let (fleet, _) = example();
    let rules = "# mine\n\n[secrets.x]\nrecipients = [\"web1\"]\n";
    fleet.rules(rules);
    let dave = fleet.age_key("dave.txt");
    std::fs::write(fleet.home.join("dave.pub"), fleet.age_recipient(&dave) + "\n").unwrap();
    ok(&fleet.bento(&["admin", "add", "dave", "--key", s(&fleet.home.join("dave.pub"))]));
    assert_eq!(
        std::fs::read_to_string(fleet.path("secrets/secrets.toml")).unwrap(),
        "# mine\n\nadmins = [\"dave\"]\n\n[secrets.x]\nrecipients = [\"web1\"]\n"
    );
    ok(&fleet.bento(&["secret", "list"]));
}

#[test]
fn a_key_or_name_registered_elsewhere_is_refused_changing_nothing() {
    let (fleet, keys) = example();
    let before = snapshot(&fleet);
    let (web1, bob, db1) = (pub_of(&keys.web1), pub_of(&keys.bob), pub_of(&keys.db1));
    let cases = [
        (
            vec!["admin", "add", "eve", "--key", s(&web1)],
            "is already registered as host web1 (keys/hosts/web1.pub)",
        ),
        (
            vec!["admin", "add", "eve", "--key", s(&bob)],
            "is already registered as admin bob (keys/admins/bob.pub)",
        ),
        (
            vec!["host", "add", "web3", "--key", s(&bob)],
            "is already registered as admin bob (keys/admins/bob.pub)",
        ),
        (
            vec!["host", "add", "web3", "--key", s(&db1)],
            "is already registered as host db1 (keys/hosts/db1.pub)",
        ),
    ];
    for (args, expected) in &cases {
        let err = fails(&fleet.bento(args));
        assert!(err.contains(expected), "{args:?}: {err}");
        // The message names the file the key came from.
        assert!(err.contains(args[4]), "{args:?}: {err}");
    }
    let fresh = fleet.ssh_key("fresh", "ed25519", "");
    let err = fails(&fleet.bento(&["admin", "add", "web1", "--key", s(&pub_of(&fresh))]));
    assert!(
        err.contains("`web1` is already a host (keys/hosts/web1.pub)"),
        "{err}"
    );
    let err = fails(&fleet.bento(&["host", "add", "alice", "--key", s(&pub_of(&fresh))]));
    assert!(err.contains("`alice` is already an admin"), "{err}");
    let err = fails(&fleet.bento(&["admin", "add", "bob", "--key", s(&pub_of(&fresh))]));
    assert!(err.contains("keys/admins/bob.pub: exists already"), "{err}");
    assert_eq!(snapshot(&fleet), before, "a refusal changes nothing");
    // And the fleet still works.
    ok(&fleet.bento(&["host", "list"]));
    ok(&fleet.bento(&["admin", "list"]));
}

/// `next:` hints suggest a rekey only when there is something to rekey.
#[test]
fn no_rekey_is_suggested_when_nothing_is_stale() {
    let (fleet, _) = example();
    fleet.rules("admins = []\n");
    let dave = fleet.ssh_key("dave", "ed25519", "");
    let out = fleet.bento(&["admin", "add", "dave", "--key", s(&pub_of(&dave))]);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("dave added to admins") && !stderr.contains("rekey"),
        "{stderr}"
    );
    let out = fleet.bento(&["admin", "remove", "dave"]);
    ok(&out);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("rekey"));
    let out = fleet.bento(&["host", "remove", "web1"]);
    ok(&out);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("rekey"));
}
