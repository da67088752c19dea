//! The publishing account and the server get nothing from root's deploy or the admin:
//! the account that owns `generations/` racing a root deploy, hostile sftp peers, a server
//! that swaps the unsigned `manifest.json`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{example, fails, needs_root, ok, pub_line, s, Fleet, Keys};

/// The uid and gid the racing "publishing account" runs as: no account of this machine
/// (ownership needs only numbers), so nothing is created or left behind.
const RACER_ID: u32 = 64_917;

/// A fleet ready to deploy (the example's secrets written, a configuration per host with
/// many files, the signing key registered as an admin's) and a server root in a 0755 dir
/// that another uid can reach.
struct Setup {
    fleet: Fleet,
    _keys: Keys,
    base: tempfile::TempDir,
}

impl Setup {
    fn new(config_files: usize) -> Setup {
        let (fleet, keys) = example();
        for name in ["db-password", "web-only", "tls"] {
            ok(&fleet.bento_stdin(&["secret", "edit", name], format!("value of {name}").as_bytes()));
        }
        fleet.signing_admin();
        for host in ["web1", "db1"] {
            let dir = fleet.path(&format!("hosts/{host}"));
            std::fs::create_dir_all(dir.join("modules")).unwrap();
            std::fs::write(dir.join("configuration.nix"), "{ }\n").unwrap();
            for i in 0..config_files {
                std::fs::write(dir.join(format!("modules/m{i}.nix")), format!("{{ }} # {i}\n")).unwrap();
            }
        }
        let base = tempfile::tempdir().unwrap();
        set_mode(base.path(), 0o755);
        Setup {
            fleet,
            _keys: keys,
            base,
        }
    }

    fn server(&self) -> PathBuf {
        self.base.path().join("server")
    }

    fn deploy(&self) -> std::process::Output {
        self.fleet.bento(&["deploy", "--server-root", s(&self.server())])
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A small deterministic generator (xorshift64*), so a failing run can be replayed from
/// the seed it prints.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn seed() -> u64 {
    let seed = std::env::var("BENTO_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_b0b0_1234_5678);
    eprintln!("seed {seed} (BENTO_TEST_SEED replays it)");
    seed
}

/// Everything under `dir` with its owner and mode, to see that nothing changed there.
fn listing(dir: &Path) -> Vec<(PathBuf, u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let meta = std::fs::symlink_metadata(&d).unwrap();
        out.push((d.clone(), meta.uid(), meta.mode()));
        if meta.is_dir() {
            for e in std::fs::read_dir(&d).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

/// The publishing account, as a thread with its own credentials (only this thread's: the
/// raw `setresuid` of rustix, not libc's process-wide one): it drops root for `RACER_ID`,
/// then, until `stop` (or a minute), swaps every root-made staging dir of `gens` for one
/// of its own whose `config` and `secrets` lead to `outside` (or for a link to `outside`
/// itself, as `rng` picks). Returns how many swaps it made.
fn racer(
    gens: Vec<PathBuf>,
    outside: PathBuf,
    stop: Arc<AtomicBool>,
    mut rng: Rng,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        use rustix::thread::{set_thread_groups, set_thread_res_gid, set_thread_res_uid};
        let gid = rustix::process::Gid::from_raw(RACER_ID);
        let uid = rustix::process::Uid::from_raw(RACER_ID);
        set_thread_groups(&[]).unwrap();
        set_thread_res_gid(gid, gid, gid).unwrap();
        set_thread_res_uid(uid, uid, uid).unwrap();
        assert!(
            std::fs::write(outside.join("probe"), "x").is_err(),
            "the racer must not be able to write outside itself"
        );
        let swaps = AtomicUsize::new(0);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            for g in &gens {
                let Ok(entries) = std::fs::read_dir(g) else {
                    continue;
                };
                for e in entries.flatten() {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    if !name.starts_with(".new-") {
                        continue;
                    }
                    let path = e.path();
                    n += 1;
                    if std::fs::rename(&path, g.join(format!(".stolen-{n}"))).is_err() {
                        continue;
                    }
                    let planted = if rng.next() % 3 == 0 {
                        std::os::unix::fs::symlink(&outside, &path)
                    } else {
                        std::fs::create_dir(&path)
                            .and_then(|()| std::os::unix::fs::symlink(&outside, path.join("config")))
                            .and_then(|()| std::os::unix::fs::symlink(&outside, path.join("secrets")))
                    };
                    if planted.is_ok() {
                        swaps.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        swaps.into_inner()
    })
}

#[test]
fn the_publishing_account_racing_a_root_deploy_never_gets_a_write_outside_the_root() {
    if !needs_root("a racer with another uid, and chown") {
        return;
    }
    let setup = Setup::new(150);
    // Root's own directory the racer points at: it must stay exactly as it is.
    let outside = setup.base.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    set_mode(&outside, 0o700);
    std::fs::write(outside.join("keep"), "root's").unwrap();
    let before = listing(&outside);

    // `bento server setup`'s layout: the publishing account owns each generations/.
    ok(&setup.deploy());
    let gens: Vec<PathBuf> = ["web1", "db1"]
        .iter()
        .map(|h| setup.server().join(h).join("generations"))
        .collect();
    for g in &gens {
        std::os::unix::fs::chown(g, Some(RACER_ID), Some(RACER_ID)).unwrap();
    }

    let mut rng = Rng(seed() | 1);
    let rounds = 16;
    let mut swaps = 0;
    let mut published = 0;
    for round in 0..rounds {
        // A change in every host, so every deploy stages a generation per host.
        let file = format!(
            "hosts/{}/modules/m{}.nix",
            ["web1", "db1"][round % 2],
            rng.next() % 150
        );
        std::fs::write(setup.fleet.path(&file), format!("{{ }} # round {round}\n")).unwrap();
        std::fs::write(
            setup.fleet.path("hosts/web1/configuration.nix"),
            format!("{{ }} # {round}\n"),
        )
        .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = racer(gens.clone(), outside.clone(), stop.clone(), Rng(rng.next() | 1));
        let out = setup.deploy();
        stop.store(true, Ordering::Relaxed);
        swaps += thread.join().unwrap();
        if out.status.success() {
            published += 1;
        } else {
            // Losing the race may stop the deploy, with one clear line.
            let e = fails(&out);
            assert!(e.contains("generations"), "{e}");
        }
        let after = listing(&outside);
        let changed: Vec<_> = after.iter().filter(|e| !before.contains(e)).take(5).collect();
        assert!(
            after == before,
            "round {round}: root wrote outside the server root: {changed:?}"
        );
    }
    assert!(
        swaps > 0,
        "the racer never swapped a staging dir: the test proved nothing"
    );
    eprintln!("{swaps} staging dirs swapped, {published} of {rounds} deploys published");
}

/// The generation `host`'s `current` names.
fn current(server: &Path, host: &str) -> u64 {
    std::fs::read_to_string(server.join(host).join("current"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn unchanged_is_decided_from_what_a_current_admin_signed() {
    let setup = Setup::new(1);
    let server = setup.server();
    let config = setup.fleet.path("hosts/web1/configuration.nix");
    ok(&setup.deploy());
    std::fs::write(&config, "{ } # B\n").unwrap();
    ok(&setup.deploy());
    assert_eq!(current(&server, "web1"), 2);

    // The server swaps generation 2's manifest for generation 1's: the content the admin
    // is about to revert to. Its signature no longer matches, so it proves nothing: the
    // revert is published.
    let gens = server.join("web1/generations");
    std::fs::copy(gens.join("1/manifest.json"), gens.join("2/manifest.json")).unwrap();
    std::fs::write(&config, "{ }\n").unwrap();
    let out = ok(&setup.deploy());
    assert_eq!(current(&server, "web1"), 3, "{out}");
    assert_eq!(
        current(&server, "db1"),
        1,
        "db1 is unchanged and signed: untouched"
    );
    // A manifest signed by a current admin, with the same content: unchanged.
    ok(&setup.deploy());
    assert_eq!(current(&server, "web1"), 3);

    // A signing key that is no admin's: refused before anything is written, naming the
    // admins' keys.
    let stranger = setup.fleet.ssh_key("stranger", "ed25519", "");
    std::fs::write(
        setup.fleet.path("bento.toml"),
        format!("[deploy]\nsigning_key = \"{}\"\n", s(&stranger)),
    )
    .unwrap();
    std::fs::write(&config, "{ } # C\n").unwrap();
    let before = listing(&server);
    let e = fails(&setup.deploy());
    assert!(
        e.contains("is not an admin key of this fleet")
            && e.contains("keys/admins/admin.pub (SHA256:")
            && e.contains("keys/admins/bob.pub (SHA256:")
            && e.contains("bento admin add"),
        "{e}"
    );
    assert_eq!(listing(&server), before, "nothing written");

    // The fix: the key becomes the admin key (the old one is no admin's any more). What
    // the old key signed is published again, same content or not, then left alone.
    std::fs::write(&config, "{ }\n").unwrap();
    std::fs::write(
        setup.fleet.path("keys/admins/admin.pub"),
        format!("{}\n", pub_line(&stranger)),
    )
    .unwrap();
    ok(&setup.deploy());
    assert_eq!((current(&server, "web1"), current(&server, "db1")), (4, 2));
    ok(&setup.deploy());
    assert_eq!((current(&server, "web1"), current(&server, "db1")), (4, 2));
}

/// A fleet whose `[deploy] target` is an sftp server played by `script`, installed as the
/// `ssh` that deploy runs (first on PATH): it speaks sftp on stdin/stdout, as ssh would.
struct Hostile {
    setup: Setup,
    bin: PathBuf,
}

impl Hostile {
    fn new(script: &str, deploy_settings: &str) -> Hostile {
        let setup = Setup::new(1);
        let admin = setup.fleet.keys.join("admin");
        std::fs::write(
            setup.fleet.path("bento.toml"),
            format!(
                "[deploy]\nsigning_key = \"{}\"\ntarget = \"sftp://bento-publish@127.0.0.1:2222/\"\n{deploy_settings}",
                s(&admin)
            ),
        )
        .unwrap();
        std::fs::write(
            setup.fleet.path("keys/server_known_hosts"),
            "[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ\n",
        )
        .unwrap();
        let bin = setup.base.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let ssh = bin.join("ssh");
        std::fs::write(&ssh, format!("#!/bin/sh\n{script}")).unwrap();
        set_mode(&ssh, 0o755);
        Hostile { setup, bin }
    }

    /// `bento deploy` against it; how long it took.
    fn deploy(&self) -> (std::process::Output, Duration) {
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let started = Instant::now();
        let out = self
            .setup
            .fleet
            .cmd(&["deploy"])
            .env("PATH", path)
            .output()
            .unwrap();
        (out, started.elapsed())
    }
}

/// The sftp handshake as a server answers it: the client's INIT read (9 bytes), then
/// VERSION 3 without extensions.
const HANDSHAKE: &str = "head -c 9 >/dev/null\nprintf '\\000\\000\\000\\005\\002\\000\\000\\000\\003'\n";

#[test]
fn a_huge_sftp_packet_length_is_refused_at_its_header() {
    // After the handshake, the first request is answered with a length of almost 4 GiB.
    let h = Hostile::new(
        &format!("{HANDSHAKE}head -c 4 >/dev/null\nprintf '\\377\\377\\377\\360\\145'\nexec sleep 20\n"),
        "",
    );
    let (out, took) = h.deploy();
    let e = fails(&out);
    assert!(
        e.contains("an sftp packet of 4294967280 bytes") && e.contains("262144"),
        "{e}"
    );
    assert!(e.contains("/web1/") || e.contains("/db1/"), "names the host: {e}");
    assert!(
        took < Duration::from_secs(10),
        "refused at once, not read: {took:?}"
    );
}

#[test]
fn a_stalled_sftp_server_ends_the_deploy_at_its_request_timeout_or_its_deadline() {
    // The handshake, then silence (ssh keep-alives would still be answered).
    let stall = format!("{HANDSHAKE}exec sleep 20\n");
    let h = Hostile::new(&stall, "request_timeout = \"2s\"\n");
    let (out, took) = h.deploy();
    let e = fails(&out);
    assert!(
        e.contains("answered nothing for 2 s (deploy.request_timeout)")
            && (e.contains("/web1/") || e.contains("/db1/")),
        "{e}"
    );
    assert!(took < Duration::from_secs(12), "{took:?}");

    // The whole deploy's deadline, when it comes first.
    let h = Hostile::new(&stall, "timeout = \"2s\"\nrequest_timeout = \"1h\"\n");
    let (out, took) = h.deploy();
    let e = fails(&out);
    assert!(
        e.contains("longer than deploy.timeout (2 s)") && (e.contains("/web1/") || e.contains("/db1/")),
        "{e}"
    );
    assert!(took < Duration::from_secs(12), "{took:?}");
}

#[test]
fn the_agent_refuses_a_huge_sftp_packet_length_at_its_header() {
    let l = crate::agent::Loop::new();
    let bin = l.fleet.home.join("hostile-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let ssh = bin.join("ssh");
    std::fs::write(
        &ssh,
        format!(
            "#!/bin/sh\n{HANDSHAKE}head -c 4 >/dev/null\nprintf '\\377\\377\\377\\360\\145'\nexec sleep 20\n"
        ),
    )
    .unwrap();
    set_mode(&ssh, 0o755);
    let known_hosts = l.fleet.home.join("known_hosts");
    std::fs::write(&known_hosts, "[127.0.0.1]:2222 ssh-ed25519 AAAA\n").unwrap();
    l.write_config(
        "sftp://bento-web1@127.0.0.1:2222",
        &l.fleet.keys.join("nixos-rebuild"),
        Some(&known_hosts),
    );
    let mut config = std::fs::read_to_string(&l.config).unwrap();
    config.push_str(&format!("ssh = \"{}\"\n", ssh.display()));
    std::fs::write(&l.config, config).unwrap();
    let started = Instant::now();
    let e = fails(&l.agent(&[]));
    assert!(
        e.contains("an sftp packet of 4294967280 bytes") && e.contains("262144"),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // The same length as the answer to the client's first packet (the handshake): refused
    // for good at once, not retried as a passing failure until the run's deadline.
    std::fs::write(
        &ssh,
        "#!/bin/sh
head -c 9 >/dev/null
printf '\\377\\377\\377\\360\\002'
exec sleep 20
",
    )
    .unwrap();
    let started = Instant::now();
    let out = l.agent(&[]);
    let e = fails(&out);
    assert!(e.contains("an sftp packet of 4294967280 bytes"), "{e}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("retrying"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}
