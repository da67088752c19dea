//! `bento secret generate`: every kind checked with an independent tool (the `age` CLI to
//! decrypt, `ssh-keygen -y`, `wg pubkey`, `age-keygen -y` to derive the public part), no
//! secret replaced without `--force`, and `verify` watching the `.pub` files.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::harness::{example, fails, ok, require, s, Fleet, Keys};

const RULES: &str = r#"admins = ["alice"]

[secrets.pw]
recipients = ["web1"]
generate = "password:32"

[secrets.token]
recipients = ["web1"]
generate = "hex:16"

[secrets.cookie]
recipients = ["web1"]
generate = "base64:24"

[secrets.deploy-key]
recipients = ["web1"]
generate = "ssh-ed25519"

[secrets.wg]
recipients = ["web1"]
generate = "wireguard"

[secrets.agekey]
recipients = ["web1"]
generate = "age"

[secrets.by-hand]
recipients = ["web1"]
"#;

/// The fleet of [`RULES`], with `by-hand` set by `secret edit` and nothing generated yet.
fn fleet() -> (Fleet, Keys) {
    let (fleet, keys) = example();
    fleet.rules(RULES);
    ok(&fleet.bento_stdin(&["secret", "edit", "by-hand"], b"typed in"));
    (fleet, keys)
}

/// Decrypts a secret with the real `age` CLI and admin alice's identity.
fn age_decrypt(fleet: &Fleet, keys: &Keys, name: &str) -> Vec<u8> {
    require("age");
    let out = Command::new("age")
        .args(["-d", "-i", s(&keys.alice)])
        .arg(fleet.path(&format!("secrets/{name}.age")))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "age -d {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs `tool args` with `input` on stdin; returns its trimmed stdout.
fn tool(tool: &str, args: &[&str], input: &[u8]) -> String {
    require(tool);
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Writes a private key where only its owner can read it (ssh-keygen insists).
fn private_file(fleet: &Fleet, name: &str, bytes: &[u8]) -> String {
    let path = fleet.keys.join(name);
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_str().unwrap().to_owned()
}

fn public(fleet: &Fleet, name: &str) -> String {
    std::fs::read_to_string(fleet.path(&format!("secrets/{name}.pub"))).unwrap()
}

/// The key type and base64 of an OpenSSH public key line (the comment aside).
fn ssh_key_part(line: &str) -> String {
    line.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

#[test]
fn every_kind_is_what_an_independent_tool_says_it_is() {
    let (fleet, keys) = fleet();
    let out = fleet.bento(&["secret", "generate"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(&out);
    assert!(
        stderr.contains("secrets/pw.age: generated (password:32), encrypted to 2 keys"),
        "{stderr}"
    );
    assert!(!stderr.contains("by-hand"), "no kind, not generated: {stderr}");
    assert_eq!(age_decrypt(&fleet, &keys, "by-hand"), b"typed in");

    let pw = age_decrypt(&fleet, &keys, "pw");
    assert_eq!(pw.len(), 32, "{pw:?}");
    assert!(pw.iter().all(u8::is_ascii_alphanumeric), "{pw:?}");

    let token = age_decrypt(&fleet, &keys, "token");
    assert_eq!(token.len(), 32);
    assert!(
        token
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)),
        "{token:?}"
    );

    let cookie = age_decrypt(&fleet, &keys, "cookie");
    assert_eq!(cookie.len(), 32, "24 bytes are 32 base64 characters");
    let decoded = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn();
    let mut child = decoded.unwrap();
    child.stdin.take().unwrap().write_all(&cookie).unwrap();
    assert_eq!(child.wait_with_output().unwrap().stdout.len(), 24);

    let ssh = age_decrypt(&fleet, &keys, "deploy-key");
    assert!(ssh.starts_with(b"-----BEGIN OPENSSH PRIVATE KEY-----\n"));
    let file = private_file(&fleet, "deploy-key", &ssh);
    let derived = tool("ssh-keygen", &["-y", "-f", &file], b"");
    let pub_line = public(&fleet, "deploy-key");
    assert!(
        pub_line.starts_with("ssh-ed25519 ") && pub_line.ends_with('\n'),
        "{pub_line}"
    );
    assert_eq!(ssh_key_part(&derived), ssh_key_part(&pub_line));

    let wg = age_decrypt(&fleet, &keys, "wg");
    assert_eq!(wg.len(), 44, "a base64 32-byte key, no newline");
    assert_eq!(tool("wg", &["pubkey"], &wg), public(&fleet, "wg").trim());

    let agekey = age_decrypt(&fleet, &keys, "agekey");
    assert!(agekey.starts_with(b"AGE-SECRET-KEY-1"));
    let file = private_file(&fleet, "agekey", &agekey);
    let recipient = public(&fleet, "agekey");
    assert!(recipient.starts_with("age1"));
    assert_eq!(tool("age-keygen", &["-y", &file], b""), recipient.trim());

    // Hosts decrypt them too, and verify (no key) is content, the .pub hashes recorded.
    let out = Command::new("age")
        .args(["-d", "-i", s(&keys.web1)])
        .arg(fleet.path("secrets/pw.age"))
        .output()
        .unwrap();
    assert_eq!(out.stdout, pw);
    ok(&fleet.bento(&["secret", "verify"]));
    let lock = std::fs::read_to_string(fleet.path("secrets/recipients.lock")).unwrap();
    assert_eq!(lock.matches("public_sha256 = ").count(), 3, "{lock}");
}

#[test]
fn nothing_is_replaced_without_force() {
    let (fleet, keys) = fleet();
    ok(&fleet.bento(&["secret", "generate", "pw", "wg"]));
    let pw = std::fs::read(fleet.path("secrets/pw.age")).unwrap();
    let wg = std::fs::read(fleet.path("secrets/wg.age")).unwrap();
    let wg_pub = public(&fleet, "wg");

    // By name or not, existing secrets stay as they are.
    let out = fleet.bento(&["secret", "generate", "pw", "wg"]);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("secrets/pw.age: exists, kept (pass --force to replace it)"),
        "{stderr}"
    );
    ok(&fleet.bento(&["secret", "generate"]));
    assert_eq!(std::fs::read(fleet.path("secrets/pw.age")).unwrap(), pw);
    assert_eq!(std::fs::read(fleet.path("secrets/wg.age")).unwrap(), wg);
    assert_eq!(public(&fleet, "wg"), wg_pub);
    let out = fleet.bento(&["secret", "generate"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to generate"));

    // --force rotates: a new secret, a new public key, still consistent.
    ok(&fleet.bento(&["secret", "generate", "--force", "wg"]));
    let new_pub = public(&fleet, "wg");
    assert_ne!(new_pub, wg_pub);
    assert_eq!(
        tool("wg", &["pubkey"], &age_decrypt(&fleet, &keys, "wg")),
        new_pub.trim()
    );
    assert_eq!(
        std::fs::read(fleet.path("secrets/pw.age")).unwrap(),
        pw,
        "only the named one"
    );

    // A secret without a kind, or without a rule, is refused by name.
    let e = fails(&fleet.bento(&["secret", "generate", "by-hand"]));
    assert!(
        e.contains("secret `by-hand` has no `generate` kind") && e.contains("bento secret edit by-hand"),
        "{e}"
    );
    let e = fails(&fleet.bento(&["secret", "generate", "nope"]));
    assert!(e.contains("no rule for secret `nope`"), "{e}");
}

#[test]
fn verify_watches_the_public_part_and_generate_restores_it() {
    let (fleet, keys) = fleet();
    ok(&fleet.bento(&["secret", "generate"]));
    let good = public(&fleet, "wg");
    let verify = |fleet: &Fleet| {
        let out = fleet.bento(&["secret", "verify"]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };

    // Another key in the .pub (a hand edit, a bad merge): verify names it and the fix.
    std::fs::write(
        fleet.path("secrets/wg.pub"),
        "bm90IHRoZSBrZXkgbm90IHRoZSBrZXkgbm90IHRoZSBrZXk=\n",
    )
    .unwrap();
    let (passed, out) = verify(&fleet);
    assert!(!passed);
    assert_eq!(
        out,
        "wg: secrets/wg.pub is not the public key recorded in recipients.lock (changed outside bento); \
         `bento secret generate wg` writes it again from the secret\n"
    );
    // Without --force, generate writes the .pub again from the secret (decrypted with -i).
    let out = fleet.bento(&["secret", "generate", "wg", "-i", s(&keys.alice)]);
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("secrets/wg.pub: written again from secrets/wg.age")
    );
    assert_eq!(public(&fleet, "wg"), good);
    assert!(verify(&fleet).0);

    // A lost .pub: the same.
    std::fs::remove_file(fleet.path("secrets/deploy-key.pub")).unwrap();
    let (passed, out) = verify(&fleet);
    assert!(!passed);
    assert!(
        out.contains("deploy-key: secrets/deploy-key.pub is missing; `bento secret generate deploy-key`"),
        "{out}"
    );
    ok(&fleet.bento(&["secret", "generate", "-i", s(&keys.alice), "deploy-key"]));
    assert!(verify(&fleet).0);

    // A rekey keeps the record of the .pub (the .pub does not change).
    ok(&fleet.bento(&["secret", "rekey", "--all", "-i", s(&keys.alice)]));
    let lock = std::fs::read_to_string(fleet.path("secrets/recipients.lock")).unwrap();
    assert_eq!(lock.matches("public_sha256 = ").count(), 3, "{lock}");
    std::fs::write(fleet.path("secrets/agekey.pub"), "age1nothing\n").unwrap();
    assert!(!verify(&fleet).0, "still checked after the rekey");
}

#[test]
fn verify_names_the_command_that_makes_a_missing_generated_secret() {
    let (fleet, _) = fleet();
    let out = fleet.bento(&["secret", "verify"]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("pw: secrets/pw.age is missing; create it with `bento secret generate pw`"),
        "{stdout}"
    );
    std::fs::remove_file(fleet.path("secrets/by-hand.age")).unwrap();
    let stdout = String::from_utf8_lossy(&fleet.bento(&["secret", "verify"]).stdout).into_owned();
    assert!(
        stdout
            .contains("by-hand: secrets/by-hand.age is missing; create it with `bento secret edit by-hand`"),
        "{stdout}"
    );
}

#[test]
fn a_bad_kind_is_refused_at_load_with_its_line() {
    let (fleet, _) = fleet();
    fleet.rules(&RULES.replace("generate = \"wireguard\"", "generate = \"wireguard:32\""));
    let e = fails(&fleet.bento(&["secret", "generate"]));
    assert_eq!(
        e,
        "error: secrets/secrets.toml:21: wg.generate: `wireguard:32` is not a kind; the kinds are \
         password:N, hex:N, base64:N (N from 1 to 4096), ssh-ed25519, wireguard, age"
    );
    assert!(
        !Path::new(&fleet.path("secrets/pw.age")).exists(),
        "nothing generated"
    );
}
