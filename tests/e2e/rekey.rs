//! `bento secret rekey`: only stale secrets, in parallel, failures isolated.

use std::io::{BufRead, Read, Write};
use std::process::Stdio;

use crate::harness::{example, fails, ok, pub_line, read_until, s, EXAMPLE_RULES};

fn read(fleet: &crate::harness::Fleet, name: &str) -> Vec<u8> {
    std::fs::read(fleet.path(&format!("secrets/{name}.age"))).unwrap()
}

/// The example fleet with its three secrets written (`v-<name>`), then host web2 joins
/// @web: db-password and web-only are stale. Returns web2's private key too.
fn web2_joins() -> (crate::harness::Fleet, crate::harness::Keys, std::path::PathBuf) {
    let (fleet, keys) = example();
    for name in ["db-password", "web-only", "tls"] {
        ok(&fleet.bento_stdin(&["secret", "edit", name], format!("v-{name}").as_bytes()));
    }
    let web2 = fleet.ssh_key("web2", "ed25519", "");
    fleet.add_host("web2", &web2);
    fleet.rules(&EXAMPLE_RULES.replace(r#"web = ["web1"]"#, r#"web = ["web1", "web2"]"#));
    (fleet, keys, web2)
}

#[test]
fn only_stale_secrets_are_touched_and_the_new_host_decrypts() {
    let (fleet, keys, web2) = web2_joins();
    let tls_before = read(&fleet, "tls");
    let tls_mtime = std::fs::metadata(fleet.path("secrets/tls.age"))
        .unwrap()
        .modified()
        .unwrap();

    let out = fleet.bento(&["secret", "rekey", "-i", s(&keys.bob), "-i", s(&keys.web1)]);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("db-password: re-encrypted") && stderr.contains("web-only: re-encrypted"),
        "{stderr}"
    );
    assert!(
        stderr.contains("rekeyed 2 secrets") && !stderr.contains("tls"),
        "{stderr}"
    );
    assert_eq!(
        read(&fleet, "tls"),
        tls_before,
        "a secret that was not stale changed"
    );
    assert_eq!(
        std::fs::metadata(fleet.path("secrets/tls.age"))
            .unwrap()
            .modified()
            .unwrap(),
        tls_mtime
    );
    let age = std::process::Command::new("age")
        .args(["-d", "-i", s(&web2)])
        .arg(fleet.path("secrets/db-password.age"))
        .output()
        .unwrap();
    assert_eq!(ok(&age), "v-db-password");
}

#[test]
fn one_failure_does_not_stop_the_others() {
    let (fleet, keys, _web2) = web2_joins();
    let web_only_before = read(&fleet, "web-only");
    // bob can decrypt db-password but not web-only (web1 and alice only).
    let out = fleet.bento(&["secret", "rekey", "-i", s(&keys.bob)]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("✓ db-password: re-encrypted"), "{stderr}");
    assert!(
        stderr.contains("error: secrets/web-only.age: none of the identities"),
        "{stderr}"
    );
    assert!(stderr.contains("error: rekeyed 1, failed 1"), "{stderr}");
    assert!(!stderr.contains("panicked"));
    assert_eq!(read(&fleet, "web-only"), web_only_before);
    // verify now names only the one left.
    let out = fleet.bento(&["secret", "verify"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "web-only: missing web2 (in @web)\n"
    );
    // With both identities, everything is rekeyed.
    ok(&fleet.bento(&["secret", "rekey", "-i", s(&keys.bob), "-i", s(&keys.alice)]));
    ok(&fleet.bento(&["secret", "verify"]));
}

/// Marks a file immutable (even root cannot replace it) until dropped.
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn set(path: std::path::PathBuf) -> Immutable {
        let status = std::process::Command::new("chattr")
            .arg("+i")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success(), "chattr +i {} failed", path.display());
        Immutable(path)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_secret_that_cannot_be_written_is_reported_and_left_out_of_the_lock() {
    if !crate::harness::needs_root("an immutable file (chattr +i)") {
        return;
    }
    let (fleet, keys, _web2) = web2_joins();
    let web_only_before = read(&fleet, "web-only");
    let pinned = Immutable::set(fleet.path("secrets/web-only.age"));

    let out = fleet.bento(&["secret", "rekey", "-i", s(&keys.alice)]);
    drop(pinned);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("✓ db-password: re-encrypted"), "{stderr}");
    assert!(stderr.contains("error: secrets/web-only.age:"), "{stderr}");
    assert!(stderr.contains("error: rekeyed 1, failed 1"), "{stderr}");
    assert_eq!(read(&fleet, "web-only"), web_only_before);
    // The lock describes what is on disk: web-only is still stale, not "changed outside
    // bento", and db-password is in line.
    let out = fleet.bento(&["secret", "verify"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "web-only: missing web2 (in @web)\n"
    );
}

#[test]
fn nothing_stale_means_nothing_written_and_no_identity_needed() {
    let (fleet, keys) = example();
    ok(&fleet.bento_stdin(&["secret", "edit", "db-password"], b"x"));
    let before = read(&fleet, "db-password");
    let lock_before = std::fs::read(fleet.path("secrets/recipients.lock")).unwrap();
    let out = ok(&fleet.bento(&["secret", "rekey"]));
    assert!(out.is_empty());
    assert_eq!(read(&fleet, "db-password"), before);
    assert_eq!(
        std::fs::read(fleet.path("secrets/recipients.lock")).unwrap(),
        lock_before
    );
    // --all re-encrypts anyway; names restrict it.
    ok(&fleet.bento(&["secret", "rekey", "--all", "db-password", "-i", s(&keys.web1)]));
    assert_ne!(read(&fleet, "db-password"), before);
    let err = fails(&fleet.bento(&["secret", "rekey", "nope"]));
    assert!(err.contains("no rule for secret `nope`"), "{err}");
}

#[test]
fn passphrase_is_asked_once_for_many_files() {
    let (fleet, keys) = example();
    let locked = fleet.ssh_key("locked", "ed25519", "pa55word");
    fleet.add_admin("bob", &pub_line(&locked));
    let many = (0..6)
        .map(|i| format!("[secrets.s{i}]\nrecipients = [\"bob\"]\n"))
        .collect::<String>();
    fleet.rules(&format!("{EXAMPLE_RULES}\n{many}"));
    for i in 0..6 {
        ok(&fleet.bento_stdin(&["secret", "edit", &format!("s{i}")], b"x"));
    }
    // Make all six stale: web1 joins every one.
    let rules = std::fs::read_to_string(fleet.path("secrets/secrets.toml")).unwrap();
    fleet.rules(&rules.replace(r#"recipients = ["bob"]"#, r#"recipients = ["bob", "web1"]"#));
    let out = fleet.bento_tty(
        &["secret", "rekey", "-i", s(&locked)],
        &[],
        &[("Passphrase for", b"pa55word\n")],
    );
    let screen = ok(&out);
    assert_eq!(screen.matches("Passphrase for").count(), 1, "{screen}");
    assert!(screen.contains("rekeyed 6 secrets"), "{screen}");
    for i in 0..6 {
        let age = std::process::Command::new("age")
            .args(["-d", "-i", s(&keys.web1)])
            .arg(fleet.path(&format!("secrets/s{i}.age")))
            .output()
            .unwrap();
        assert_eq!(ok(&age), "x");
    }
}

/// The bytes after an age header: the payload.
fn payload(file: &[u8]) -> Vec<u8> {
    let mac = file.windows(4).position(|w| w == b"\n---").unwrap();
    let end = mac + 1 + file[mac + 1..].iter().position(|&b| b == b'\n').unwrap();
    file[end + 1..].to_vec()
}

#[test]
fn adding_keeps_the_payload_removing_re_encrypts() {
    let (fleet, keys) = example();
    for name in ["db-password", "web-only", "tls"] {
        ok(&fleet.bento_stdin(&["secret", "edit", name], b"rotate me"));
    }
    let first = read(&fleet, "db-password");
    let web2 = fleet.ssh_key("web2", "ed25519", "");
    fleet.add_host("web2", &web2);
    fleet.rules(&EXAMPLE_RULES.replace(r#"web = ["web1"]"#, r#"web = ["web1", "web2"]"#));
    ok(&fleet.bento(&["secret", "rekey", "-i", s(&keys.alice)]));
    let widened = read(&fleet, "db-password");
    assert_eq!(
        payload(&first),
        payload(&widened),
        "adding a host must not re-encrypt the payload"
    );
    ok(&fleet.bento(&["secret", "verify"]));

    // web1 leaves: a new file key, so web1's old stanza is useless even with old copies.
    fleet.rules(&EXAMPLE_RULES.replace(r#"web = ["web1"]"#, r#"web = ["web2"]"#));
    ok(&fleet.bento(&["secret", "rekey", "-i", s(&keys.alice)]));
    let narrowed = read(&fleet, "db-password");
    assert_ne!(payload(&widened), payload(&narrowed));
    ok(&fleet.bento(&["secret", "verify"]));
    for (key, can) in [
        (&keys.web1, false),
        (&web2, true),
        (&keys.db1, true),
        (&keys.alice, true),
    ] {
        let out = std::process::Command::new("age")
            .args(["-d", "-i", s(key)])
            .arg(fleet.path("secrets/db-password.age"))
            .output()
            .unwrap();
        assert_eq!(out.status.success(), can, "{}", key.display());
        if can {
            assert_eq!(out.stdout, b"rotate me");
        }
    }
}

#[test]
fn two_concurrent_rekeys_leave_the_lock_consistent() {
    let (fleet, keys) = example();
    let locked = fleet.ssh_key("locked", "ed25519", "pa55word");
    fleet.add_admin("bob", &pub_line(&locked));
    for name in ["db-password", "web-only", "tls"] {
        ok(&fleet.bento_stdin(&["secret", "edit", name], format!("v-{name}").as_bytes()));
    }
    fleet.rules(&EXAMPLE_RULES.replace(r#"web = ["web1"]"#, r#"web = ["web1", "web2"]"#));
    let web2 = fleet.ssh_key("web2", "ed25519", "");
    fleet.add_host("web2", &web2);

    // The first rekey stops at bob's passphrase prompt, in the middle of its work.
    let mut first = fleet.spawn_tty(&["secret", "rekey", "db-password", "-i", s(&locked)], &[]);
    let mut keyboard = first.stdin.take().unwrap();
    let mut screen = first.stdout.take().unwrap();
    read_until(&mut screen, "Passphrase for");
    // The second one, on another secret, meanwhile.
    let mut second = fleet
        .cmd(&["secret", "rekey", "web-only", "-i", s(&keys.alice)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut second_err = std::io::BufReader::new(second.stderr.take().unwrap());
    let mut second_first_line = String::new();
    second_err.read_line(&mut second_first_line).unwrap();

    keyboard.write_all(b"pa55word\n").unwrap();
    let mut first_screen = String::new();
    screen.read_to_string(&mut first_screen).unwrap();
    assert!(first.wait().unwrap().success(), "{first_screen}");
    drop(keyboard);
    let mut rest = String::new();
    second_err.read_to_string(&mut rest).unwrap();
    assert!(second.wait().unwrap().success(), "{second_first_line}{rest}");

    // Each rekey's files and lock entries are on disk together.
    ok(&fleet.bento(&["secret", "verify"]));
    assert!(
        second_first_line.starts_with("· waiting for another bento secret command (pid "),
        "{second_first_line}"
    );
    for name in ["db-password", "web-only"] {
        let age = std::process::Command::new("age")
            .args(["-d", "-i", s(&web2)])
            .arg(fleet.path(&format!("secrets/{name}.age")))
            .output()
            .unwrap();
        assert_eq!(ok(&age), format!("v-{name}"));
    }
}

#[test]
fn an_empty_age_file_is_reported_by_rekey() {
    let (fleet, keys, _web2) = web2_joins();
    std::fs::write(fleet.path("secrets/tls.age"), b"").unwrap();
    let out = fleet.bento(&["secret", "rekey", "-i", s(&keys.alice)]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("✓ db-password: re-encrypted") && stderr.contains("✓ web-only: re-encrypted"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: tls: secrets/tls.age: the file is empty")
            && stderr.contains("git checkout -- secrets/tls.age"),
        "{stderr}"
    );
    assert!(stderr.contains("error: rekeyed 2, failed 1"), "{stderr}");
    assert_eq!(read(&fleet, "tls"), b"");

    // With nothing else to do, and no identity at all, it is still reported.
    let out = fleet.bento(&["secret", "rekey"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: tls: secrets/tls.age: the file is empty")
            && !stderr.contains("already matches"),
        "{stderr}"
    );
    // A rekey restricted to other secrets is not about it.
    ok(&fleet.bento(&["secret", "rekey", "web-only"]));
}

#[test]
fn rekey_list_and_verify_of_nothing_say_so() {
    let empty = crate::harness::Fleet::new();
    for args in [
        &["secret", "list"][..],
        &["secret", "verify"],
        &["secret", "rekey"],
    ] {
        let out = empty.bento(args);
        ok(&out);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("no secrets in secrets/secrets.toml yet") && stderr.contains("[secrets.NAME]"),
            "{args:?}: {stderr}"
        );
    }

    let (fleet, keys) = example();
    ok(&fleet.bento_stdin(&["secret", "edit", "db-password"], b"pw"));
    let out = fleet.bento(&["secret", "rekey", "db-password", "tls", "-i", s(&keys.alice)]);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("db-password: already encrypted to exactly its rule's recipients; pass --all"),
        "{stderr}"
    );
    assert!(
        stderr.contains("tls: secrets/tls.age does not exist yet")
            && stderr.contains("bento secret edit tls"),
        "{stderr}"
    );
    let out = fleet.bento(&["secret", "rekey", "-i", s(&keys.alice)]);
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("without a file yet: tls, web-only"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A rekey makes its files durable without waiting for other programs' data: each file it
/// wrote (the secrets, the lock) is fsynced before its rename, then their directory; the
/// filesystem as a whole never is (no `syncfs`, no `sync`), since that would also wait for
/// whatever else is being written to the same disk.
#[test]
fn rekey_syncs_only_the_files_it_wrote_and_their_directory() {
    crate::harness::require("strace");
    let (fleet, keys, _) = web2_joins();
    let trace = fleet.home.join("sync.trace");
    let out = std::process::Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-y",
            "-e",
            "trace=fsync,fdatasync,syncfs,sync",
            "-o",
            s(&trace),
        ])
        .arg(env!("CARGO_BIN_EXE_bento"))
        .args(["--fleet", s(&fleet.root), "secret", "rekey"])
        .args(["-i", s(&keys.bob), "-i", s(&keys.web1)])
        .env("HOME", &fleet.home)
        .env("NO_COLOR", "1")
        .env_remove("BENTO_IDENTITY")
        .env_remove("BENTO_FLEET")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    ok(&out);
    let trace = std::fs::read_to_string(&trace).unwrap();
    // "PID syscall(FD</path>) = 0", one per line.
    let calls: Vec<(&str, &str)> = trace
        .lines()
        .filter_map(|l| l.split_once(" ").map(|(_, call)| call.trim_start()))
        .filter_map(|call| call.split_once('('))
        .collect();
    assert!(
        calls.iter().all(|(name, _)| *name == "fsync"),
        "a sync other than fsync of bento's own files:\n{trace}"
    );
    let secrets = fleet.path("secrets");
    let synced = |prefix: &str| {
        let temp = format!("<{}/.{prefix}", secrets.display());
        calls
            .iter()
            .any(|(_, args)| args.starts_with(|c: char| c.is_ascii_digit()) && args.contains(&temp))
    };
    for name in ["db-password.age.", "web-only.age.", "recipients.lock."] {
        assert!(
            synced(name),
            "{name}: its temp file was not fsynced before the rename:\n{trace}"
        );
    }
    assert!(
        !synced("tls.age."),
        "a secret that was not stale was written:\n{trace}"
    );
    let dir = format!("<{}>)", secrets.display());
    assert!(
        calls.iter().any(|(_, args)| args.contains(&dir)),
        "the secrets directory was not fsynced after the renames:\n{trace}"
    );
}
