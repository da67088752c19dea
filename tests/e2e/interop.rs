//! Every file bento writes is a standard age file, and the other way round.

use std::process::Command;

use crate::harness::{example, ok, pub_of, require, s};

fn age(args: &[&str]) -> std::process::Output {
    require("age");
    Command::new("age").args(args).output().unwrap()
}

#[test]
fn bento_files_decrypt_with_the_age_cli() {
    let (fleet, keys) = example();
    ok(&fleet.bento_stdin(&["secret", "edit", "db-password"], b"for the go cli"));
    ok(&fleet.bento_stdin(&["secret", "edit", "tls"], b"armored too"));
    let db = fleet.path("secrets/db-password.age");
    let tls = fleet.path("secrets/tls.age");
    for key in [&keys.web1, &keys.db1, &keys.bob, &keys.alice] {
        let out = age(&["-d", "-i", s(key), s(&db)]);
        assert_eq!(ok(&out), "for the go cli", "age -d -i {}", key.display());
    }
    assert_eq!(ok(&age(&["-d", "-i", s(&keys.web1), s(&tls)])), "armored too");
}

#[test]
fn age_cli_files_decrypt_with_bento() {
    let (fleet, keys) = example();
    let db = fleet.path("secrets/db-password.age");
    let web1_pub = pub_of(&keys.web1);
    let alice = fleet.age_recipient(&keys.alice);
    let input = fleet.keys.join("input");
    std::fs::write(&input, "made by age").unwrap();
    ok(&age(&["-R", s(&web1_pub), "-r", &alice, "-o", s(&db), s(&input)]));
    for key in [&keys.web1, &keys.alice] {
        assert_eq!(
            ok(&fleet.bento(&["secret", "show", "db-password", "-i", s(key)])),
            "made by age"
        );
    }
    // Armored, ssh-rsa recipient.
    let tls = fleet.path("secrets/tls.age");
    ok(&age(&[
        "-a",
        "-R",
        s(&pub_of(&keys.db1)),
        "-o",
        s(&tls),
        s(&input),
    ]));
    assert_eq!(
        ok(&fleet.bento(&["secret", "show", "tls", "-i", s(&keys.db1)])),
        "made by age"
    );
}

#[test]
fn edit_re_encrypts_an_age_cli_file_to_the_rules() {
    let (fleet, keys) = example();
    let db = fleet.path("secrets/db-password.age");
    let input = fleet.keys.join("input");
    std::fs::write(&input, "old").unwrap();
    // Made by hand for web1 only; the rules also name db1, bob and alice.
    ok(&age(&["-R", s(&pub_of(&keys.web1)), "-o", s(&db), s(&input)]));
    ok(&fleet.bento_stdin(&["secret", "edit", "db-password", "-i", s(&keys.web1)], b"new"));
    let out = age(&["-d", "-i", s(&keys.db1), s(&db)]);
    assert_eq!(ok(&out), "new");
}
