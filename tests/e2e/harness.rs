//! A small harness for end-to-end tests: a temporary fleet repo, keys made by the real
//! `ssh-keygen` and `age-keygen`, and the `bento` binary run in it (optionally under a
//! pseudo-terminal, through `script`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Fails the test with a clear message when a tool the tests need is missing.
pub fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "this test needs `{tool}` on PATH (Debian: see .ci/run for the packages)"
    );
}

/// Whether the tests run as root. Tests that need it (mounts, namespaces, chown, sshd's
/// chroots) call [`needs_root`] first.
pub fn is_root() -> bool {
    bento_deploy::layout::is_root()
}

/// For a test that needs root (`what` says for what): true as root. Otherwise, in CI (`CI`
/// set) the test fails, saying so; elsewhere it is skipped with a
/// `SKIPPED (needs root): <what>` line, so a plain `cargo test` as a user runs the rest.
pub fn needs_root(what: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "this test needs root ({what}); CI runs the suite as root"
    );
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    skipped(&format!("SKIPPED (needs root): {test}: {what}"));
    false
}

/// For a test that runs Nix (`nix-instantiate`, `nix flake`): true when Nix works for this
/// user. A single-user Nix owned by root does not: as another user, the test is skipped
/// with a `SKIPPED (needs root): …` line (in CI, it fails).
pub fn needs_nix() -> bool {
    static WORKS: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let works = WORKS.get_or_init(|| {
        // Not installed: the test's own `require` names the package.
        let Ok(out) = Command::new("nix-instantiate")
            .args(["--eval", "--expr", "1"])
            .output()
        else {
            return Ok(());
        };
        match out.status.success() {
            true => Ok(()),
            false => Err(String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()),
        }
    });
    match works {
        Ok(()) => true,
        Err(_) if is_root() => true,
        Err(why) => needs_root(&format!("Nix, which fails as this user: {why}")),
    }
}

/// Says on the real stderr that a test was left out: the test harness captures `eprintln!`
/// of passing tests, but not writes to the stderr handle, so a plain `cargo test` shows it.
fn skipped(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Data kept beside the clone (`../shared/`: upstream examples, nixpkgs' lib), which a
/// plain clone does not have. Present: `Some(path)`. Absent: in CI (`CI` set) the test
/// fails, saying what is missing; elsewhere it is skipped with a `SKIPPED:` line.
pub fn shared_data(path: &Path, what: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path.to_path_buf());
    }
    let why = format!(
        "{what} is missing: {} (kept in `shared/` beside the clone)",
        path.display()
    );
    assert!(std::env::var_os("CI").is_none(), "{why}");
    skipped(&format!("SKIPPED: {why}"));
    None
}

/// Leaves the caller's terminal, once per test run, before any `bento` starts: the test
/// process becomes a session of its own, so no child can open `/dev/tty` and wait there for
/// a passphrase nobody types — `cargo test` from a terminal (or under `sudo`) runs unattended,
/// as in CI. Tests that want a terminal give their child a new pseudo-terminal of its own
/// ([`Fleet::bento_tty`]). The test process still ends with cargo: it asks for SIGTERM when
/// its parent dies (Ctrl-C in the terminal no longer reaches it directly).
pub fn detach_from_terminal() {
    static DETACHED: std::sync::Once = std::sync::Once::new();
    DETACHED.call_once(|| {
        let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM));
        // Fails only for a process group leader (the binary started by hand from a shell):
        // it keeps the terminal then, as before.
        let _ = rustix::process::setsid();
    });
}

/// An `ssh-agent -D` on `sock`, returned once it accepts connections (its socket file
/// exists from `bind`, before it listens: a client in between is refused).
pub fn ssh_agent(sock: &Path) -> std::process::Child {
    require("ssh-agent");
    let mut child = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(sock)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_until_it_answers(sock, &mut child, "ssh-agent");
    child
}

/// Waits (10 s at most) until a connection to the unix socket `sock` succeeds, failing the
/// test if `server` exits first or never answers.
pub fn wait_until_it_answers(sock: &Path, server: &mut std::process::Child, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match std::os::unix::net::UnixStream::connect(sock) {
            Ok(_) => return,
            Err(e) => {
                if let Some(status) = server.try_wait().unwrap() {
                    panic!("{what} exited ({status}) before answering on {}", sock.display());
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{what} did not answer on {} in 10 s: {e}",
                    sock.display()
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

/// A fleet repo in a temp dir, with a private HOME so the user's own keys never leak in.
pub struct Fleet {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub home: PathBuf,
    pub keys: PathBuf,
}

impl Fleet {
    /// A fresh fleet laid out by `bento init`.
    pub fn new() -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("fleet");
        let home = dir.path().join("home");
        let keys = dir.path().join("private-keys");
        for d in [&root, &home, &keys] {
            std::fs::create_dir_all(d).unwrap();
        }
        let fleet = Fleet {
            _dir: dir,
            root,
            home,
            keys,
        };
        let out = fleet.bento(&["init"]);
        ok(&out);
        fleet
    }

    /// A path inside the fleet.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// A `bento` command run in the fleet, with a clean environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        detach_from_terminal();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bento"));
        cmd.args(args).current_dir(&self.root);
        self.clean_env(&mut cmd);
        cmd.stdin(Stdio::null());
        cmd
    }

    fn clean_env(&self, cmd: &mut Command) {
        for var in [
            "BENTO_IDENTITY",
            "BENTO_FLEET",
            "BENTO_VERBOSE",
            "VISUAL",
            "EDITOR",
            "XDG_RUNTIME_DIR",
            "XDG_CACHE_HOME",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("HOME", &self.home).env("NO_COLOR", "1");
    }

    /// Runs `bento ARGS` with stdin from /dev/null.
    pub fn bento(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs `bento ARGS` with `input` on stdin.
    pub fn bento_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs `bento ARGS` on a pseudo-terminal (so stdin is a TTY), with extra environment,
    /// and holds a `dialog` with it: each step waits until the screen shows its text (for
    /// the n-th step with the same text, n times), then types its keys. No step types
    /// before the program asks, so nothing depends on how fast it starts. The keyboard
    /// stays open until the program exits; the screen is returned as stdout.
    pub fn bento_tty(&self, args: &[&str], env: &[(&str, &str)], dialog: &[(&str, &[u8])]) -> Output {
        use std::io::{Read, Write};
        use std::sync::{Arc, Condvar, Mutex};
        use std::time::{Duration, Instant};

        let mut child = self.spawn_tty(args, env);
        let mut keyboard = child.stdin.take().unwrap();
        // The screen so far, and whether it has ended.
        let screen = Arc::new((Mutex::new((Vec::<u8>::new(), false)), Condvar::new()));
        let mut stdout = child.stdout.take().unwrap();
        let reader = {
            let screen = Arc::clone(&screen);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    let n = stdout.read(&mut buf).unwrap_or(0);
                    let (lock, changed) = &*screen;
                    let mut seen = lock.lock().unwrap();
                    seen.0.extend_from_slice(&buf[..n]);
                    seen.1 = n == 0;
                    changed.notify_all();
                    if n == 0 {
                        break;
                    }
                }
            })
        };
        let mut stderr = child.stderr.take().unwrap();
        let errors = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = stderr.read_to_end(&mut bytes);
            bytes
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        for (i, (prompt, keys)) in dialog.iter().enumerate() {
            let times = dialog[..=i].iter().filter(|(p, _)| p == prompt).count();
            let (lock, changed) = &*screen;
            let mut seen = lock.lock().unwrap();
            while String::from_utf8_lossy(&seen.0).matches(prompt).count() < times && !seen.1 {
                let left = deadline.saturating_duration_since(Instant::now());
                assert!(
                    !left.is_zero(),
                    "no `{prompt}` on the screen: {}",
                    String::from_utf8_lossy(&seen.0)
                );
                seen = changed.wait_timeout(seen, left).unwrap().0;
            }
            if seen.1 {
                break; // the program ended without asking: the caller's checks say why
            }
            drop(seen);
            let _ = keyboard.write_all(keys);
        }
        // The dialog is over: bento must end by the deadline, not wait for more keys.
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "bento still running after the dialog: {}",
                    String::from_utf8_lossy(&screen.0.lock().unwrap().0)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        drop(keyboard);
        reader.join().unwrap();
        let stdout = std::mem::take(&mut screen.0.lock().unwrap().0);
        Output {
            status,
            stdout,
            stderr: errors.join().unwrap(),
        }
    }

    /// Starts `bento ARGS` on a pseudo-terminal, with extra environment: its stdin is the
    /// keyboard (keep it open while bento runs), its stdout the screen.
    pub fn spawn_tty(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Child {
        require("script");
        let line = std::iter::once(env!("CARGO_BIN_EXE_bento"))
            .chain(args.iter().copied())
            .map(shell_quote)
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &line, "/dev/null"]).current_dir(&self.root);
        self.clean_env(&mut cmd);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Makes a named pipe in the private keys dir (to synchronise with scripts).
    pub fn fifo(&self, name: &str) -> PathBuf {
        let path = self.keys.join(name);
        let status = Command::new("mkfifo").arg(&path).status().unwrap();
        assert!(status.success(), "mkfifo {} failed", path.display());
        path
    }

    /// Generates an ssh key pair (`ed25519` or `rsa`) with an optional passphrase;
    /// returns the private key's path (the public key is next to it, `.pub`).
    pub fn ssh_key(&self, name: &str, kind: &str, passphrase: &str) -> PathBuf {
        require("ssh-keygen");
        let path = self.keys.join(name);
        let mut cmd = Command::new("ssh-keygen");
        cmd.args(["-q", "-t", kind, "-N", passphrase, "-C", name, "-f"])
            .arg(&path);
        if kind == "rsa" {
            cmd.args(["-b", "2048"]);
        }
        assert!(cmd.status().unwrap().success(), "ssh-keygen failed");
        path
    }

    /// Generates an age identity; returns its path.
    pub fn age_key(&self, name: &str) -> PathBuf {
        require("age-keygen");
        let path = self.keys.join(name);
        let out = Command::new("age-keygen").arg("-o").arg(&path).output().unwrap();
        assert!(out.status.success(), "age-keygen failed");
        path
    }

    /// The recipient line of an age identity file.
    pub fn age_recipient(&self, identity: &Path) -> String {
        let out = Command::new("age-keygen")
            .arg("-y")
            .arg(identity)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Registers a host by copying a `.pub` file into keys/hosts/.
    pub fn add_host(&self, name: &str, private: &Path) {
        std::fs::copy(pub_of(private), self.path(&format!("keys/hosts/{name}.pub"))).unwrap();
    }

    /// Registers an admin with a recipient line.
    pub fn add_admin(&self, name: &str, line: &str) {
        std::fs::write(self.path(&format!("keys/admins/{name}.pub")), format!("{line}\n")).unwrap();
    }

    /// An admin key `admin` (ed25519), registered in keys/admins/ and named as
    /// `deploy.signing_key` in a bento.toml holding only that: deploy signs with a key the
    /// fleet knows. Returns the private key's path.
    pub fn signing_admin(&self) -> PathBuf {
        let admin = self.ssh_key("admin", "ed25519", "");
        self.add_admin("admin", &pub_line(&admin));
        std::fs::write(
            self.path("bento.toml"),
            format!("[deploy]\nsigning_key = \"{}\"\n", admin.display()),
        )
        .unwrap();
        admin
    }

    /// Replaces secrets/secrets.toml.
    pub fn rules(&self, text: &str) {
        std::fs::write(self.path("secrets/secrets.toml"), text).unwrap();
    }

    /// Writes an executable script (an editor, say) and returns its path.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.keys.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }
}

/// The `.pub` next to a private key.
pub fn pub_of(private: &Path) -> PathBuf {
    let mut p = private.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

/// Reads a public key line.
pub fn pub_line(private: &Path) -> String {
    std::fs::read_to_string(pub_of(private))
        .unwrap()
        .trim()
        .to_owned()
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Asserts success; returns stdout.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "expected success, got {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts a clean failure: non-zero exit, one `error:` line, no panic; returns it.
pub fn fails(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "expected failure, got success\nstderr: {stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "panic: {stderr}"
    );
    let errors: Vec<_> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "expected one error line, got: {stderr}");
    errors[0].to_owned()
}

/// The private keys of [`example`]'s fleet.
pub struct Keys {
    /// Host web1, ssh-ed25519.
    pub web1: PathBuf,
    /// Host db1, ssh-rsa.
    pub db1: PathBuf,
    /// Admin alice, age X25519.
    pub alice: PathBuf,
    /// Admin bob, ssh-ed25519.
    pub bob: PathBuf,
}

/// The rules of [`example`]'s fleet.
pub const EXAMPLE_RULES: &str = r#"admins = ["alice"]

[groups]
web = ["web1"]

[secrets.db-password]
recipients = ["@web", "db1", "bob"]

[secrets.web-only]
recipients = ["@web"]

[secrets.tls]
recipients = ["web1"]
armor = true
"#;

/// A fleet with two hosts (ed25519, rsa) and two admins (age, ssh), and three secrets
/// with rules but no ciphertexts yet.
pub fn example() -> (Fleet, Keys) {
    let fleet = Fleet::new();
    let keys = Keys {
        web1: fleet.ssh_key("web1", "ed25519", ""),
        db1: fleet.ssh_key("db1", "rsa", ""),
        alice: fleet.age_key("alice.txt"),
        bob: fleet.ssh_key("bob", "ed25519", ""),
    };
    fleet.add_host("web1", &keys.web1);
    fleet.add_host("db1", &keys.db1);
    fleet.add_admin("alice", &fleet.age_recipient(&keys.alice));
    fleet.add_admin("bob", &pub_line(&keys.bob));
    fleet.rules(EXAMPLE_RULES);
    (fleet, keys)
}

/// Reads from `reader` until `needle` has been seen; returns what was read. Panics at
/// end of input without it.
pub fn read_until(reader: &mut impl std::io::Read, needle: &str) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let n = reader.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "expected `{needle}`, got: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// Turns a path into the `&str` that `args` wants.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A syntactically valid age plugin recipient (`age1<plugin>1…`) for plugin `name`.
pub fn plugin_recipient(name: &str) -> String {
    let hrp = bech32::Hrp::parse(&format!("age1{name}")).unwrap();
    bech32::encode::<bech32::Bech32>(hrp, &[7u8; 33]).unwrap()
}
