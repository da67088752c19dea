//! Property tests of the parsers that read outside input: `secrets.toml`, recipient key
//! lines, and age headers. Arbitrary bytes, and valid documents with random edits, never
//! panic and fail with one line; a parsed key prints back to itself.
//!
//! CI runs the case counts below; `bench/fuzz.sh` runs many more through `PROPTEST_CASES`.

use bento_secrets::format::stanzas;
use bento_secrets::rules::{Directory, Rules};
use bento_secrets::RecipientKey;
use proptest::prelude::*;

#[path = "../../tests/support/mutation.rs"]
mod mutation;
use mutation::{cases, mutate, one_line, Edit};

/// The example fleet's rules, keys and one secret: the seeds that edits start from.
const RULES: &str = include_str!("../../secrets/secrets.toml");
const KEYS: [&str; 3] = [
    include_str!("../../keys/admins/alice.pub"),
    include_str!("../../keys/hosts/web1.pub"),
    "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
];
const AGE_FILE: &[u8] = include_bytes!("../../secrets/db-password.age");

/// The example fleet's names.
struct Names;

impl Directory for Names {
    fn is_host(&self, name: &str) -> bool {
        ["web1", "edge", "db1"].contains(&name)
    }
    fn is_admin(&self, name: &str) -> bool {
        name == "alice"
    }
    fn host_names(&self) -> Vec<&str> {
        vec!["web1", "edge", "db1"]
    }
    fn admin_names(&self) -> Vec<&str> {
        vec!["alice"]
    }
}

/// Snippets that matter to the formats: quotes, escapes, brackets, newlines, keys.
fn snippet() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,6}",
        prop::sample::select(vec![
            "\"",
            "'",
            "\\n",
            "\\u0000",
            "\n",
            "=",
            "[",
            "]",
            "{",
            "}",
            ",",
            "#",
            "@",
            "..",
            "/",
            "\u{0}",
            "\"\\n\"",
            "[[secrets]]",
            "[secrets.x]",
            "recipients = [\"web1\\n\"]",
            "admins = [\"a\\nb\"]",
            "mode = 0400",
            "mode = \"9999\"",
            "owner = \"\\n\"",
            "-> ",
            "---",
            "\n-> X25519 ",
            "AAAA",
            "ssh-ed25519 ",
            "ssh-rsa ",
            "age1",
            "AGE-SECRET-KEY-1",
            "-----BEGIN AGE ENCRYPTED FILE-----\n",
        ])
        .prop_map(str::to_owned),
    ]
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    mutation::edits(snippet())
}

fn check_rules(text: &str) -> Result<(), TestCaseError> {
    if let Err(e) = Rules::parse(text, "secrets.toml", &Names) {
        one_line(&e)?;
    }
    Ok(())
}

fn check_key(line: &str) -> Result<(), TestCaseError> {
    match RecipientKey::parse(line) {
        Ok(key) => prop_assert_eq!(RecipientKey::parse(key.text()), Ok(key)),
        Err(e) => one_line(&e)?,
    }
    Ok(())
}

fn check_header(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Err(e) = stanzas(bytes) {
        one_line(&e)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(2000))]

    #[test]
    fn rules_any_text(text in ".{0,200}") {
        check_rules(&text)?;
    }

    #[test]
    fn rules_edited(edits in edits()) {
        let doc = mutate(RULES.as_bytes(), &edits);
        check_rules(&String::from_utf8_lossy(&doc))?;
    }

    #[test]
    fn key_any_text(text in ".{0,120}") {
        check_key(&text)?;
    }

    #[test]
    fn key_edited(which in 0..KEYS.len(), edits in edits()) {
        let line = mutate(KEYS[which].as_bytes(), &edits);
        check_key(&String::from_utf8_lossy(&line))?;
    }

    #[test]
    fn header_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        check_header(&bytes)?;
    }

    #[test]
    fn header_edited(edits in edits()) {
        check_header(&mutate(AGE_FILE, &edits))?;
    }
}

#[test]
fn the_seeds_parse() {
    Rules::parse(RULES, "secrets.toml", &Names).unwrap();
    for key in KEYS {
        RecipientKey::parse(key).unwrap();
    }
    assert!(!stanzas(AGE_FILE).unwrap().is_empty());
}

// Regressions the properties found: a quoted "\n" in the input reached an error message.

#[test]
fn a_line_break_in_a_unit_name_stays_on_the_error_line() {
    let text = RULES.replace("[\"postgresql.service\"]", "[\"\\npostgresql.service\"]");
    let e = Rules::parse(&text, "secrets.toml", &Names)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "secrets.toml:23: db-password.restart_units: `\\npostgresql.service` is not a unit name"
    );
}

#[test]
fn a_line_break_in_a_key_line_stays_on_the_error_line() {
    let e = RecipientKey::parse("s\nsh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKQ")
        .unwrap_err()
        .to_string();
    assert!(!e.contains('\n') && e.starts_with("`s\\nsh-ed25519 AAAA"), "{e}");
}
