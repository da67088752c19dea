//! `bento secret edit` with a real editor process on a pseudo-terminal.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{example, fails, ok, s, Fleet, EXAMPLE_RULES};

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
            // bento-edit.<pid>.<start>.<name>.<random>
            let Some(rest) = file.strip_prefix("bento-edit.") else {
                continue;
            };
            let mut parts = rest.splitn(3, '.');
            let (pid, name_part) = (parts.next().unwrap_or(""), parts.nth(1).unwrap_or(""));
            // A bento still running is another test's edit, in progress (the bento of this
            // test has exited); one that has exited must have removed its dir.
            let alive = Path::new("/proc").join(pid).exists();
            let ours = name_part.starts_with(&format!("{name}.")) && !alive;
            assert!(!ours || !entry.path().exists(), "residue {dir}/{file}");
        }
    }
}

/// Shell lines that set `p` to the pid of the bento running the script.
const FIND_BENTO: &str = r#"p=$PPID
while [ "$(cat /proc/$p/comm)" != bento ]; do p=$(cut -d' ' -f4 /proc/$p/stat); done"#;

/// Has process `pid` ended (gone, or a zombie waiting to be reaped)?
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// Waits (up to a minute) for process `pid` to end.
fn wait_ended(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ended(pid) {
        assert!(Instant::now() < deadline, "process {pid} still runs");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Processes killed when dropped, should a test fail with them still running.
struct Leftovers(Vec<u32>);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for pid in self.0.iter().filter(|p| !ended(**p)) {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    }
}

/// Writes a line to a fifo when dropped if a reader waits on it (a blocked editor, should
/// a test fail before it releases it).
struct Release(PathBuf);

impl Drop for Release {
    fn drop(&mut self) {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        const O_NONBLOCK: i32 = 0o4000;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(O_NONBLOCK)
            .open(&self.0)
        {
            let _ = f.write_all(b"go\n");
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
    dialog: &[(&str, &[u8])],
) -> std::process::Output {
    fleet.bento_tty(
        &["secret", "edit", name, "-i", s(id)],
        &[("EDITOR", s(editor)), ("XDG_RUNTIME_DIR", s(xdg))],
        dialog,
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
    ok(&edit_tty(&fleet, "web-only", &ed, xdg.path(), &keys.web1, &[]));
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
        &[],
    ));
    assert_eq!(
        ok(&fleet.bento(&["secret", "show", "web-only", "-i", s(&keys.web1)])),
        "written by the editor again"
    );
    assert_no_residue(xdg.path(), "web-only");
}

#[test]
fn a_terminal_editor_owns_the_terminal() {
    let (fleet, keys) = example();
    let xdg = runtime_dir();
    // The editor runs in its own process group: that group must be the terminal's
    // foreground one, or reading the keyboard would stop it.
    let ed = editor(
        &fleet,
        "reader",
        r#"echo 'reading a line'; read line; printf '%s' "$line" > "$1""#,
    );
    ok(&edit_tty(
        &fleet,
        "web-only",
        &ed,
        xdg.path(),
        &keys.web1,
        &[("reading a line", b"typed\n")],
    ));
    assert_eq!(
        ok(&fleet.bento(&["secret", "show", "web-only", "-i", s(&keys.web1)])),
        "typed"
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
        &[],
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
    let out = ok(&edit_tty(&fleet, "db-password", &ed, xdg.path(), &keys.bob, &[]));
    assert!(out.contains("unchanged"), "{out}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
    assert_no_residue(xdg.path(), "db-password");
}

/// An edit of db-password (holding `original`) by an editor running `body`, `dialog`
/// typed on the way, which must fail: the file is as before, no plaintext is left behind,
/// and the screen (returned) says why.
fn aborted_edit(body: &str, dialog: &[(&str, &[u8])]) -> String {
    let (fleet, keys) = example();
    let xdg = runtime_dir();
    ok(&fleet.bento_stdin(&["secret", "edit", "db-password"], b"original"));
    let path = fleet.path("secrets/db-password.age");
    let before = std::fs::read(&path).unwrap();
    let ed = editor(&fleet, "ed", body);
    let out = edit_tty(&fleet, "db-password", &ed, xdg.path(), &keys.bob, dialog);
    let screen = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{screen}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_no_residue(xdg.path(), "db-password");
    screen
}

/// One test per editor that ends an edit early: its name, the editor's script, the keys
/// typed, and what the screen says (and never shows).
macro_rules! aborted_edits {
    ($($name:ident: $body:expr, $dialog:expr,
       says [$($says:expr),*], never [$($never:expr),*];)*) => {$(
        #[test]
        fn $name() {
            let screen = aborted_edit($body, $dialog);
            let (says, never): (&[&str], &[&str]) = (&[$($says),*], &[$($never),*]);
            for text in says {
                assert!(screen.contains(text), "no `{text}`: {screen}");
            }
            for text in never {
                assert!(!screen.contains(text), "`{text}` shown: {screen}");
            }
        }
    )*};
}

aborted_edits! {
    failing_editor_changes_nothing:
        r#"printf 'half-typed' > "$1"; exit 1"#, &[],
        says ["exited with status 1", "unchanged"], never ["half-typed", "original"];
    // The editor holds the terminal from its first instruction (else Ctrl-C would go to
    // bento, which ignores it), writes, then waits; Ctrl-C on the terminal kills it.
    ctrl_c_in_the_editor_changes_nothing:
        r#"read -r pid comm state ppid pgrp session tty tpgid rest < /proc/$$/stat
[ "$pgrp" = "$tpgid" ] || { echo "the editor started in the background"; exit 0; }
printf 'half-typed' > "$1"; echo 'editor running'; sleep 20"#,
        &[("editor running", b"\x03")],
        says ["unchanged"], never [];
    // The editor finds its bento ancestor and sends it SIGTERM.
    sigterm_while_editing_removes_the_plaintext:
        &format!("{FIND_BENTO}\nkill -TERM $p\nsleep 5"), &[],
        says [], never [];
}

#[test]
fn disk_temp_dir_is_refused_unless_unsafe_tmp() {
    let (fleet, keys) = example();
    // The build's temp dir lives with the sources, on disk.
    let disk = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let ed = editor(&fleet, "w", r#"printf 'x' > "$1""#);
    let env = [("EDITOR", s(&ed)), ("XDG_RUNTIME_DIR", s(disk.path()))];
    let args = ["secret", "edit", "web-only", "-i", s(&keys.web1)];
    let out = fleet.bento_tty(&args, &env, &[]);
    assert!(!out.status.success());
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        screen.contains("is not on a RAM filesystem") && screen.contains("--unsafe-tmp"),
        "{screen}"
    );
    assert!(!fleet.path("secrets/web-only.age").exists());

    let mut unsafe_args = args.to_vec();
    unsafe_args.push("--unsafe-tmp");
    ok(&fleet.bento_tty(&unsafe_args, &env, &[]));
    assert_eq!(
        ok(&fleet.bento(&["secret", "show", "web-only", "-i", s(&keys.web1)])),
        "x"
    );
    assert_no_residue(disk.path(), "web-only");
}

#[test]
fn empty_stdin_is_refused_unless_allow_empty() {
    let (fleet, keys) = example();
    ok(&fleet.bento_stdin(&["secret", "edit", "db-password"], b"keep me"));
    ok(&fleet.bento_stdin(&["secret", "edit", "tls"], b"cert"));
    let path = fleet.path("secrets/db-password.age");
    let lock = fleet.path("secrets/recipients.lock");
    let (before, lock_before) = (std::fs::read(&path).unwrap(), std::fs::read(&lock).unwrap());
    // An empty pipe, and stdin from /dev/null (cron, `ssh host cmd`).
    for out in [
        fleet.bento_stdin(&["secret", "edit", "db-password"], b""),
        fleet.bento(&["secret", "edit", "db-password"]),
    ] {
        let err = fails(&out);
        assert!(
            err.contains("stdin is empty") && err.contains("--allow-empty"),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), before, "the secret changed");
        assert_eq!(std::fs::read(&lock).unwrap(), lock_before);
    }
    // Nor is an empty new secret created.
    fails(&fleet.bento(&["secret", "edit", "web-only"]));
    assert!(!fleet.path("secrets/web-only.age").exists());

    // Asked for, an empty secret is stored.
    ok(&fleet.bento(&["secret", "edit", "db-password", "--allow-empty"]));
    assert_eq!(
        ok(&fleet.bento(&["secret", "show", "db-password", "-i", s(&keys.bob)])),
        ""
    );
    ok(&fleet.bento(&["secret", "edit", "web-only", "--allow-empty"]));
    assert_eq!(
        ok(&fleet.bento(&["secret", "show", "web-only", "-i", s(&keys.web1)])),
        ""
    );
    ok(&fleet.bento(&["secret", "verify"]));
}

#[test]
fn a_rekey_waits_for_an_open_editor_and_both_land() {
    let (fleet, keys) = example();
    for name in ["db-password", "web-only", "tls"] {
        ok(&fleet.bento_stdin(&["secret", "edit", name], b"old"));
    }
    // web2 joins @web: both secrets are stale.
    let web2 = fleet.ssh_key("web2", "ed25519", "");
    fleet.add_host("web2", &web2);
    fleet.rules(&EXAMPLE_RULES.replace(r#"web = ["web1"]"#, r#"web = ["web1", "web2"]"#));
    let xdg = runtime_dir();
    let (started, release) = (fleet.fifo("started"), fleet.fifo("release"));
    let _release = Release(release.clone());
    // The editor says which bento runs it, then waits to be released.
    let ed = editor(
        &fleet,
        "held",
        &format!(
            "{FIND_BENTO}\necho $p > {}\nread go < {}\nprintf 'edited' > \"$1\"",
            s(&started),
            s(&release)
        ),
    );
    let mut edit = fleet.spawn_tty(
        &["secret", "edit", "db-password", "-i", s(&keys.bob)],
        &[("EDITOR", s(&ed)), ("XDG_RUNTIME_DIR", s(xdg.path()))],
    );
    let _keyboard = edit.stdin.take();
    let editing = std::fs::read_to_string(&started).unwrap();

    let mut rekey = fleet
        .cmd(&["secret", "rekey", "-i", s(&keys.alice)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut rekey_err = std::io::BufReader::new(rekey.stderr.take().unwrap());
    let mut first = String::new();
    rekey_err.read_line(&mut first).unwrap();
    assert_eq!(
        first,
        format!(
            "· waiting for another bento secret command (pid {})…\n",
            editing.trim()
        )
    );
    assert!(
        rekey.try_wait().unwrap().is_none(),
        "the rekey ended while the edit held the lock"
    );

    std::fs::write(&release, "go\n").unwrap();
    ok(&edit.wait_with_output().unwrap());
    let mut rest = String::new();
    rekey_err.read_to_string(&mut rest).unwrap();
    assert!(rekey.wait().unwrap().success(), "{rest}");
    assert!(
        rest.contains("web-only: re-encrypted") && rest.contains("rekeyed 1 secret"),
        "{rest}"
    );
    // Both landed: the edit's content, encrypted to the new rule, and the rekey's.
    for (name, content) in [("db-password", "edited"), ("web-only", "old")] {
        assert_eq!(
            ok(&fleet.bento(&["secret", "show", name, "-i", s(&web2)])),
            content
        );
    }
    ok(&fleet.bento(&["secret", "verify"]));
    assert_no_residue(xdg.path(), "db-password");
}

#[test]
fn a_file_changed_during_the_edit_is_not_overwritten() {
    let (fleet, keys) = example();
    let xdg = runtime_dir();
    ok(&fleet.bento_stdin(&["secret", "edit", "db-password"], b"original"));
    let path = fleet.path("secrets/db-password.age");
    // Something outside bento (a `git pull`, say) replaces the file meanwhile.
    let ed = editor(
        &fleet,
        "racer",
        &format!("printf 'theirs' >> {}\nprintf 'mine' > \"$1\"", s(&path)),
    );
    let mut theirs = std::fs::read(&path).unwrap();
    theirs.extend_from_slice(b"theirs");
    let out = edit_tty(&fleet, "db-password", &ed, xdg.path(), &keys.bob, &[]);
    assert!(!out.status.success());
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        screen.contains("changed by another program while the editor was open"),
        "{screen}"
    );
    assert!(!screen.contains("mine"));
    assert_eq!(std::fs::read(&path).unwrap(), theirs);
    assert_no_residue(xdg.path(), "db-password");
}

#[test]
fn sigterm_to_bento_ends_the_editor_and_what_it_started() {
    let (fleet, keys) = example();
    let xdg = runtime_dir();
    ok(&fleet.bento_stdin(&["secret", "edit", "db-password"], b"original"));
    let path = fleet.path("secrets/db-password.age");
    let before = std::fs::read(&path).unwrap();
    let started = fleet.fifo("started");
    // The editor ignores SIGHUP (so that the pseudo-terminal closing does not end it, as
    // a real terminal staying open would not), starts a child, and says who is who.
    let ed = editor(
        &fleet,
        "stays",
        &format!(
            "trap '' HUP\n{FIND_BENTO}\nsleep 60 &\necho $p $$ $! > {}\nwait",
            s(&started)
        ),
    );
    let mut edit = fleet.spawn_tty(
        &["secret", "edit", "db-password", "-i", s(&keys.bob)],
        &[("EDITOR", s(&ed)), ("XDG_RUNTIME_DIR", s(xdg.path()))],
    );
    let keyboard = edit.stdin.take();
    let pids: Vec<u32> = std::fs::read_to_string(&started)
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let (bento, editor_and_child) = (pids[0], pids[1..].to_vec());
    let _leftovers = Leftovers(editor_and_child.clone());
    assert_eq!(
        std::fs::read_dir(xdg.path()).unwrap().count(),
        1,
        "no scratch dir while editing"
    );

    let status = Command::new("kill")
        .args(["-TERM", &bento.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_ended(bento);
    for pid in &editor_and_child {
        assert!(ended(*pid), "process {pid} of the editor survived bento");
    }
    let out = edit.wait_with_output().unwrap();
    drop(keyboard);
    assert!(!out.status.success());
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(screen.contains("the editor was ended"), "{screen}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_no_residue(xdg.path(), "db-password");
}

#[test]
fn stale_scratch_dirs_of_dead_bentos_are_removed_others_kept() {
    if !crate::harness::needs_root("a scratch dir owned by another user (chown)") {
        return;
    }
    let (fleet, keys) = example();
    let xdg = runtime_dir();
    let dead = {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    };
    let me = std::process::id();
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let my_start: u64 = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    let plant = |name: String, owner: Option<u32>| {
        let dir = xdg.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("db-password"), "plaintext").unwrap();
        if let Some(uid) = owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(uid)).unwrap();
        }
        dir
    };
    let stale = plant(format!("bento-edit.{dead}.123.db-password.aaaaaa"), None);
    // This test's own pid, but another start time: a dead bento whose pid was reused.
    let reused = plant(
        format!("bento-edit.{me}.{}.db-password.bbbbbb", my_start + 1),
        None,
    );
    let live = plant(format!("bento-edit.{me}.{my_start}.db-password.cccccc"), None);
    let foreign = plant(format!("bento-edit.{dead}.123.tls.dddddd"), Some(65534));
    let target = fleet.keys.join("target");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), "x").unwrap();
    let link = xdg.path().join(format!("bento-edit.{dead}.123.tls.eeeeee"));
    std::os::unix::fs::symlink(&target, &link).unwrap();

    let ed = editor(&fleet, "w", r#"printf 'new' > "$1""#);
    ok(&edit_tty(&fleet, "web-only", &ed, xdg.path(), &keys.web1, &[]));
    assert!(!stale.exists(), "a dead bento's plaintext was kept");
    assert!(!reused.exists(), "a dead bento's plaintext (pid reused) was kept");
    assert!(
        live.join("db-password").exists(),
        "a live process's dir was removed"
    );
    assert!(
        foreign.join("db-password").exists(),
        "another user's dir was removed"
    );
    assert!(link.symlink_metadata().is_ok() && target.join("keep").exists());
    assert_eq!(std::fs::read_dir(xdg.path()).unwrap().count(), 3);
}

#[test]
fn an_unset_runtime_dir_is_named_as_such() {
    if !crate::harness::needs_root("mounts over /dev/shm in a private mount namespace") {
        return;
    }
    crate::harness::require("unshare");
    crate::harness::require("script");
    let (fleet, keys) = example();
    let ed = editor(&fleet, "w", r#"printf 'x' > "$1""#);
    // No XDG_RUNTIME_DIR, and /dev/shm (the fallback) on disk, in a private namespace.
    let disk = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let line = format!(
        "mount --bind '{}' /dev/shm && exec '{}' secret edit web-only -i '{}'",
        disk.path().display(),
        env!("CARGO_BIN_EXE_bento"),
        keys.web1.display()
    );
    let mut child = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "script",
            "-qec",
            &line,
            "/dev/null",
        ])
        .current_dir(&fleet.root)
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("BENTO_FLEET")
        .env_remove("VISUAL")
        .env("EDITOR", &ed)
        .env("HOME", &fleet.home)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The terminal stays open until bento is done.
    let keyboard = child.stdin.take();
    let out = child.wait_with_output().unwrap();
    drop(keyboard);
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{screen}");
    assert!(
        screen.contains("XDG_RUNTIME_DIR is not set, and /dev/shm is not a RAM filesystem either")
            && screen.contains("--unsafe-tmp"),
        "{screen}"
    );
    assert!(!fleet.path("secrets/web-only.age").exists());

    // A runtime dir that does not exist is not "not on a RAM filesystem": the RAM
    // /dev/shm stands in.
    let out = fleet.bento_tty(
        &["secret", "edit", "web-only", "-i", s(&keys.web1)],
        &[("EDITOR", s(&ed)), ("XDG_RUNTIME_DIR", "/nonexistent/run")],
        &[],
    );
    ok(&out);
    assert_eq!(
        ok(&fleet.bento(&["secret", "show", "web-only", "-i", s(&keys.web1)])),
        "x"
    );
}

/// A secret not yet re-encrypted to a newly added admin: the editor's (and show's) error
/// does not offer that admin as able to decrypt, and says how it gets fixed; from stdin
/// the secret can still be replaced, and bento says it was replaced unread.
#[test]
fn a_secret_not_yet_rekeyed_to_you_is_said_so() {
    let (fleet, keys) = example();
    ok(&fleet.bento_stdin(&["secret", "edit", "web-only"], b"first"));
    // bob joins web-only's rule; nobody has rekeyed it yet.
    fleet.rules(&EXAMPLE_RULES.replace(
        "[secrets.web-only]\nrecipients = [\"@web\"]",
        "[secrets.web-only]\nrecipients = [\"@web\", \"bob\"]",
    ));
    let xdg = runtime_dir();
    let ed = editor(&fleet, "w", r#"printf 'x' > "$1""#);
    let out = edit_tty(&fleet, "web-only", &ed, xdg.path(), &keys.bob, &[]);
    assert!(!out.status.success());
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        screen.contains(
            "it is meant for alice, web1; pass -i with one of their private keys \
             (not re-encrypted to bob yet: an admin who can decrypt runs `bento secret rekey`)"
        ),
        "{screen}"
    );
    let err = fails(&fleet.bento(&["secret", "show", "web-only", "-i", s(&keys.bob)]));
    assert!(err.contains("(not re-encrypted to bob yet"), "{err}");
    // From stdin it is replaced, and bento says it could not read what it replaced.
    let out = fleet.bento_stdin(&["secret", "edit", "web-only", "-i", s(&keys.bob)], b"second");
    let stderr = ok_stderr(&out);
    assert!(
        stderr.contains(
            "secrets/web-only.age: none of your identities decrypts it, so its old content was replaced unread"
        ),
        "{stderr}"
    );
    assert_eq!(
        ok(&fleet.bento(&["secret", "show", "web-only", "-i", s(&keys.bob)])),
        "second"
    );
}

fn ok_stderr(out: &std::process::Output) -> String {
    ok(out);
    String::from_utf8_lossy(&out.stderr).into_owned()
}
