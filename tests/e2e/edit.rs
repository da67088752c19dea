//! `bento secret edit` with a real editor process on a pseudo-terminal.

use std::path::{Path, PathBuf};

use crate::harness::{example, ok, s, Fleet};

/// A private RAM-backed runtime dir, so residue checks see only this test's files.
fn runtime_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("bento-test-xdg.")
        .tempdir_in("/dev/shm")
        .unwrap()
}

/// Asserts that nothing bento made for editing `name` is left in the usual places.
fn assert_no_residue(xdg: &Path, name: &str) {
    assert_eq!(
        std::fs::read_dir(xdg).unwrap().count(),
        0,
        "plaintext residue in XDG_RUNTIME_DIR"
    );
    for dir in ["/dev/shm", "/tmp"] {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            assert!(
                !file.starts_with(&format!("bento-edit-{name}.")),
                "residue {dir}/{file}"
            );
        }
    }
}

fn editor(fleet: &Fleet, name: &str, body: &str) -> PathBuf {
    fleet.script(name, body)
}

fn edit_tty(
    fleet: &Fleet,
    name: &str,
    editor: &Path,
    xdg: &Path,
    id: &Path,
    typed: &[u8],
) -> std::process::Output {
    fleet.bento_tty(
        &["secret", "edit", name, "-i", s(id)],
        &[("EDITOR", s(editor)), ("XDG_RUNTIME_DIR", s(xdg))],
        typed,
    )
}

#[test]
fn editor_writes_new_content() {
    let (fleet, keys) = example();
    let xdg = runtime_dir();
    // The editor checks it got a private file on a RAM dir, then writes.
    let ed = editor(
        &fleet,
        "writer",
        r#"[ "$(stat -c %a "$1")" = 600 ] || exit 3
[ "$(stat -c %a "$(dirname "$1")")" = 700 ] || exit 4
case "$1" in "$XDG_RUNTIME_DIR"/*) ;; *) exit 5;; esac
printf 'written by the editor' > "$1""#,
    );
    ok(&edit_tty(&fleet, "web-only", &ed, xdg.path(), &keys.web1, b""));
    assert_eq!(
        ok(&fleet.bento(&["secret", "show", "web-only", "-i", s(&keys.web1)])),
        "written by the editor"
    );
    assert_no_residue(xdg.path(), "web-only");

    // Editing again shows the current content to the editor.
    let append = editor(&fleet, "append", r#"printf ' again' >> "$1""#);
    ok(&edit_tty(
        &fleet,
        "web-only",
        &append,
        xdg.path(),
        &keys.web1,
        b"",
    ));
    assert_eq!(
        ok(&fleet.bento(&["secret", "show", "web-only", "-i", s(&keys.web1)])),
        "written by the editor again"
    );
    assert_no_residue(xdg.path(), "web-only");
}

#[test]
fn editor_with_arguments_in_editor_variable() {
    let (fleet, keys) = example();
    let xdg = runtime_dir();
    let ed = editor(
        &fleet,
        "args",
        r#"[ "$1" = --wait ] || exit 9; printf 'ok' > "$2""#,
    );
    let with_args = format!("{} --wait", s(&ed));
    let out = fleet.bento_tty(
        &["secret", "edit", "web-only", "-i", s(&keys.web1)],
        &[
            ("VISUAL", &with_args),
            ("EDITOR", "false"),
            ("XDG_RUNTIME_DIR", s(xdg.path())),
        ],
        b"",
    );
    ok(&out);
    assert_eq!(
        ok(&fleet.bento(&["secret", "show", "web-only", "-i", s(&keys.web1)])),
        "ok"
    );
}

#[test]
fn unchanged_content_leaves_the_file_byte_identical() {
    let (fleet, keys) = example();
    let xdg = runtime_dir();
    ok(&fleet.bento_stdin(&["secret", "edit", "db-password"], b"keep me"));
    let path = fleet.path("secrets/db-password.age");
    let before = std::fs::read(&path).unwrap();
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let ed = editor(&fleet, "noop", "true");
    let out = ok(&edit_tty(&fleet, "db-password", &ed, xdg.path(), &keys.bob, b""));
    assert!(out.contains("unchanged"), "{out}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
    assert_no_residue(xdg.path(), "db-password");
}

#[test]
fn failing_editor_changes_nothing() {
    let (fleet, keys) = example();
    let xdg = runtime_dir();
    ok(&fleet.bento_stdin(&["secret", "edit", "db-password"], b"original"));
    let path = fleet.path("secrets/db-password.age");
    let before = std::fs::read(&path).unwrap();
    let ed = editor(&fleet, "fail", r#"printf 'half-typed' > "$1"; exit 1"#);
    let out = edit_tty(&fleet, "db-password", &ed, xdg.path(), &keys.bob, b"");
    assert!(!out.status.success());
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        screen.contains("exited with status 1") && screen.contains("unchanged"),
        "{screen}"
    );
    assert!(!screen.contains("half-typed") && !screen.contains("original"));
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_no_residue(xdg.path(), "db-password");
}

#[test]
fn ctrl_c_in_the_editor_changes_nothing() {
    let (fleet, keys) = example();
    let xdg = runtime_dir();
    ok(&fleet.bento_stdin(&["secret", "edit", "db-password"], b"original"));
    let path = fleet.path("secrets/db-password.age");
    let before = std::fs::read(&path).unwrap();
    // The editor writes, then waits; Ctrl-C on the terminal kills it.
    let ed = editor(&fleet, "slow", r#"printf 'half-typed' > "$1"; sleep 20"#);
    let out = edit_tty(&fleet, "db-password", &ed, xdg.path(), &keys.bob, b"\x03");
    assert!(!out.status.success());
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(screen.contains("unchanged"), "{screen}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_no_residue(xdg.path(), "db-password");
}

#[test]
fn sigterm_while_editing_removes_the_plaintext() {
    let (fleet, keys) = example();
    let xdg = runtime_dir();
    ok(&fleet.bento_stdin(&["secret", "edit", "db-password"], b"original"));
    let path = fleet.path("secrets/db-password.age");
    let before = std::fs::read(&path).unwrap();
    // The editor finds its bento ancestor and sends it SIGTERM.
    let ed = editor(
        &fleet,
        "term",
        r#"p=$PPID
while [ "$(cat /proc/$p/comm)" != bento ]; do p=$(cut -d' ' -f4 /proc/$p/stat); done
kill -TERM $p
sleep 5"#,
    );
    let out = edit_tty(&fleet, "db-password", &ed, xdg.path(), &keys.bob, b"");
    assert!(!out.status.success());
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_no_residue(xdg.path(), "db-password");
}

#[test]
fn disk_temp_dir_is_refused_unless_unsafe_tmp() {
    let (fleet, keys) = example();
    // The build's temp dir lives with the sources, on disk.
    let disk = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let ed = editor(&fleet, "w", r#"printf 'x' > "$1""#);
    let env = [("EDITOR", s(&ed)), ("XDG_RUNTIME_DIR", s(disk.path()))];
    let args = ["secret", "edit", "web-only", "-i", s(&keys.web1)];
    let out = fleet.bento_tty(&args, &env, b"");
    assert!(!out.status.success());
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        screen.contains("is not on a RAM filesystem") && screen.contains("--unsafe-tmp"),
        "{screen}"
    );
    assert!(!fleet.path("secrets/web-only.age").exists());

    let mut unsafe_args = args.to_vec();
    unsafe_args.push("--unsafe-tmp");
    ok(&fleet.bento_tty(&unsafe_args, &env, b""));
    assert_eq!(
        ok(&fleet.bento(&["secret", "show", "web-only", "-i", s(&keys.web1)])),
        "x"
    );
    assert_no_residue(disk.path(), "web-only");
}
