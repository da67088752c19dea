//! `bento activate` as root, with real ramfs/tmpfs mounts. Every test runs bento inside a
//! private mount namespace (`unshare --mount`), so its mounts, and the private
//! `/etc/group` it may bind-mount, vanish with it: nothing is left on the machine.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::json;

use crate::harness::{example, ok, require, s, Fleet, Keys};

pub(crate) fn require_root() {
    let uid = Command::new("id").arg("-u").output().expect("id");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "the activation tests mount RAM filesystems and change owners: run them as root"
    );
    require("unshare");
}

/// A bundle laid out as `bento deploy` makes it: manifest.json + secrets/<name>.age.
struct Bundle {
    dir: PathBuf,
    specs: Vec<serde_json::Value>,
}

impl Bundle {
    fn new(fleet: &Fleet, name: &str) -> Bundle {
        let dir = fleet.home.join(name);
        std::fs::create_dir_all(dir.join("secrets")).unwrap();
        Bundle {
            dir,
            specs: Vec::new(),
        }
    }

    /// Adds fleet secret `secret` (already written) with extra attributes.
    fn add(&mut self, fleet: &Fleet, secret: &str, attrs: serde_json::Value) -> &mut Self {
        let bytes = std::fs::read(fleet.path(&format!("secrets/{secret}.age"))).unwrap();
        std::fs::write(self.dir.join(format!("secrets/{secret}.age")), &bytes).unwrap();
        let mut spec = json!({
            "name": secret,
            "file": format!("secrets/{secret}.age"),
            "sha256": sha256(&bytes),
            "owner": "root",
            "mode": "0400",
        });
        spec.as_object_mut()
            .unwrap()
            .extend(attrs.as_object().unwrap().clone());
        self.specs.push(spec);
        self
    }

    fn write(&self) -> &Path {
        let manifest = json!({"format": 1, "host": "web1", "generation": 1, "secrets": self.specs});
        std::fs::write(
            self.dir.join("manifest.json"),
            serde_json::to_vec_pretty(&manifest).unwrap(),
        )
        .unwrap();
        &self.dir
    }
}

fn sha256(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x");
    std::fs::write(&f, bytes).unwrap();
    let out = Command::new("sha256sum").arg(&f).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// Sets secrets from stdin through bento (encrypted to web1 and the admins).
fn set(fleet: &Fleet, secret: &str, content: &str) {
    ok(&fleet.bento_stdin(&["secret", "edit", secret], content.as_bytes()));
}

/// A fleet whose secrets all go to web1, and a fake systemctl that records its calls; `None`
/// when not run as root (the test is skipped, saying so).
fn setup(rules_extra: &str) -> Option<(Fleet, Keys, PathBuf)> {
    if !crate::harness::needs_root("mounts RAM filesystems and sets owners") {
        return None;
    }
    require_root();
    let (fleet, keys) = example();
    fleet.rules(&format!(
        "admins = [\"alice\"]\n[secrets.db]\nrecipients = [\"web1\"]\n[secrets.tls]\nrecipients = [\"web1\"]\n\
         [secrets.api]\nrecipients = [\"web1\"]\n[secrets.hash]\nrecipients = [\"web1\"]\n{rules_extra}"
    ));
    let bin = fleet.home.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let calls = fleet.home.join("systemctl.calls");
    let script = format!("#!/bin/sh\necho \"$*\" >> {}\n", calls.display());
    std::fs::write(bin.join("systemctl"), script).unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(bin.join("systemctl"))
        .status()
        .unwrap();
    Some((fleet, keys, bin))
}

/// Runs `script` with `sh -eu` in a private mount namespace. `$BENTO` is the binary and
/// the fake systemctl comes first on PATH.
pub(crate) fn in_namespace(fleet: &Fleet, bin: &Path, script: &str) -> Output {
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-euc", script])
        .env("BENTO", env!("CARGO_BIN_EXE_bento"))
        .env("PATH", path)
        .env("NO_COLOR", "1")
        // Outside a unit, whatever runs the tests: restarts are not queued.
        .env_remove("INVOCATION_ID")
        .current_dir(&fleet.home)
        .output()
        .unwrap()
}

pub(crate) fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn secrets_land_on_a_real_ramfs_with_owner_group_and_mode() {
    let Some((fleet, keys, bin)) = setup("") else {
        return;
    };
    set(&fleet, "db", "db-pass");
    set(&fleet, "tls", "tls-key");
    set(&fleet, "api", "api-token");
    let mut b = Bundle::new(&fleet, "bundle");
    b.add(&fleet, "db", json!({"owner": "daemon", "mode": "0440"}))
        .add(
            &fleet,
            "tls",
            json!({"owner": "root", "group": "bentotest", "mode": "0640"}),
        )
        .add(
            &fleet,
            "api",
            json!({"owner": "daemon", "group": "daemon", "mode": "0400", "path": "/mnt/links/api.key"}),
        );
    let bundle = b.write();
    let root = fleet.home.join("run");
    let script = format!(
        r#"cp /etc/group group.private && echo 'bentotest:x:4242:' >> group.private
mount --bind group.private /etc/group
mount -t tmpfs -o mode=0755 links /mnt
$BENTO activate --bundle {bundle} -i {key} --root {root}
grep " {root}/secrets.d " /proc/self/mountinfo
stat -c '%n %U %G %a' {root}/secrets.d {root}/secrets/db {root}/secrets/tls {root}/secrets/api
readlink {root}/secrets
readlink /mnt/links/api.key
cat {root}/secrets/db /mnt/links/api.key"#,
        bundle = bundle.display(),
        key = s(&keys.web1),
        root = root.display()
    );
    let out = in_namespace(&fleet, &bin, &script);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let mount = t.lines().find(|l| l.contains("/secrets.d ")).unwrap();
    assert!(
        mount.contains(" - ramfs ") && mount.contains("nosuid,nodev,noexec"),
        "{mount}"
    );
    assert!(mount.contains("mode=751"), "{mount}");
    assert!(t.contains("/run/secrets.d root root 751"), "{t}");
    assert!(t.contains("/run/secrets/db daemon daemon 440"), "{t}");
    assert!(t.contains("/run/secrets/tls root bentotest 640"), "{t}");
    assert!(t.contains("/run/secrets/api daemon daemon 400"), "{t}");
    assert!(t.contains("\nsecrets.d/1\n"), "{t}");
    assert!(t.contains(&format!("{}/secrets/api\n", root.display())), "{t}");
    assert!(t.contains("db-passapi-token"), "{t}");
    assert!(t.contains("+ api\n+ db\n+ tls\n") || t.contains("+ db"), "{t}");
    // The mount was private: nothing is mounted outside, nothing left in the secrets dir.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&root.display().to_string()));
    assert_eq!(std::fs::read_dir(root.join("secrets.d")).unwrap().count(), 0);
}

#[test]
fn generations_switch_prune_and_restart_changed_units() {
    let Some((fleet, keys, bin)) = setup("") else {
        return;
    };
    let root = fleet.home.join("run");
    let mut script = String::new();
    for (i, (db, tls)) in [("one", "t"), ("two", "t"), ("three", "t"), ("three", "t")]
        .iter()
        .enumerate()
    {
        set(&fleet, "db", db);
        set(&fleet, "tls", tls);
        let mut b = Bundle::new(&fleet, &format!("bundle{i}"));
        b.add(
            &fleet,
            "db",
            json!({"restart_units": ["db.service", "web.service"]}),
        )
        .add(&fleet, "tls", json!({"restart_units": ["web.service"]}));
        let bundle = b.write();
        script.push_str(&format!(
            "$BENTO activate --bundle {} -i {} --root {}\necho gens: $(ls {}/secrets.d) link: $(readlink {}/secrets)\n",
            bundle.display(),
            s(&keys.web1),
            root.display(),
            root.display(),
            root.display()
        ));
    }
    let out = in_namespace(&fleet, &bin, &script);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let gens: Vec<_> = t.lines().filter(|l| l.starts_with("gens:")).collect();
    assert_eq!(
        gens,
        [
            "gens: 1 link: secrets.d/1",
            "gens: 1 2 link: secrets.d/2",
            "gens: 2 3 link: secrets.d/3",
            "gens: 3 4 link: secrets.d/4"
        ],
        "{t}"
    );
    assert!(t.contains("~ db"), "{t}");
    // First run: both added (both units); runs 2 and 3: db changed; run 4: nothing.
    let calls = std::fs::read_to_string(fleet.home.join("systemctl.calls")).unwrap();
    assert_eq!(
        calls,
        "try-restart db.service web.service\ntry-restart db.service web.service\ntry-restart db.service web.service\n"
    );
}

#[test]
fn users_phase_is_separate_and_root_only() {
    let Some((fleet, keys, bin)) = setup("[secrets.later]\nrecipients = [\"web1\"]\n") else {
        return;
    };
    set(&fleet, "hash", "$6$hash");
    set(&fleet, "later", "$6$later");
    set(&fleet, "db", "db");
    let mut b = Bundle::new(&fleet, "bundle");
    b.add(
        &fleet,
        "hash",
        json!({"owner": "daemon", "mode": "0444", "needed_for_users": true}),
    )
    // Its owner is created by the users phase itself: it is not looked up then.
    .add(
        &fleet,
        "later",
        json!({"owner": "created-by-this-boot", "needed_for_users": true}),
    )
    .add(&fleet, "db", json!({}));
    let bundle = b.write();
    let root = fleet.home.join("run");
    let script = format!(
        r#"$BENTO activate --phase users --bundle {bundle} -i {key} --root {root}
stat -c '%n %U %G %a' {root}/secrets.d/users-1 {root}/secrets-for-users/hash {root}/secrets-for-users/later
test ! -e {root}/secrets && echo "no secrets link yet"
$BENTO activate --bundle {bundle} -i {key} --root {root}
ls {root}/secrets/"#,
        bundle = bundle.display(),
        key = s(&keys.web1),
        root = root.display()
    );
    let out = in_namespace(&fleet, &bin, &script);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("/run/secrets.d/users-1 root root 700"), "{t}");
    assert!(t.contains("/run/secrets-for-users/hash root root 400"), "{t}");
    assert!(t.contains("/run/secrets-for-users/later root root 400"), "{t}");
    assert!(t.contains("no secrets link yet"), "{t}");
    // Each phase's summary says which it is.
    assert!(
        t.contains("secrets for users generation 1 active: 2 added, 0 changed, 0 removed, 0 unchanged"),
        "{t}"
    );
    assert!(
        t.contains("secrets generation 1 active: 1 added, 0 changed, 0 removed, 0 unchanged"),
        "{t}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let listing: Vec<_> = stdout.lines().skip_while(|l| *l != "+ db").skip(1).collect();
    assert_eq!(listing, ["db"], "{t}");
}

#[test]
fn wrong_identity_keeps_the_last_good_content() {
    let Some((fleet, keys, bin)) = setup("") else {
        return;
    };
    set(&fleet, "db", "good-db");
    set(&fleet, "tls", "good-tls");
    let mut b = Bundle::new(&fleet, "bundle");
    b.add(&fleet, "db", json!({"owner": "daemon", "mode": "0440"}))
        .add(&fleet, "tls", json!({}));
    let bundle = b.write();
    let root = fleet.home.join("run");
    let script = format!(
        r#"$BENTO activate --bundle {bundle} -i {key} --root {root}
if $BENTO activate --bundle {bundle} -i {wrong} --root {root}; then echo UNEXPECTED-SUCCESS; fi
readlink {root}/secrets
cat {root}/secrets/db {root}/secrets/tls; echo
stat -c '%U %a' {root}/secrets/db"#,
        bundle = bundle.display(),
        key = s(&keys.web1),
        wrong = s(&keys.db1),
        root = root.display()
    );
    let out = in_namespace(&fleet, &bin, &script);
    let t = text(&out);
    assert!(out.status.success() && !t.contains("UNEXPECTED-SUCCESS"), "{t}");
    assert!(
        t.contains("error: secret db: secrets/db.age: the host key"),
        "{t}"
    );
    assert!(
        t.contains("error: secret tls:") && t.contains("(previous content kept)"),
        "{t}"
    );
    assert!(t.contains("good-dbgood-tls"), "{t}");
    assert!(t.contains("daemon 440"), "{t}");
    assert!(!t.contains("panicked"));
}

#[test]
fn a_corrupt_or_tampered_secret_fails_alone() {
    let Some((fleet, keys, bin)) = setup("") else {
        return;
    };
    for (n, v) in [("db", "db"), ("tls", "tls"), ("api", "api")] {
        set(&fleet, n, v);
    }
    let mut b = Bundle::new(&fleet, "bundle");
    b.add(&fleet, "db", json!({}))
        .add(&fleet, "tls", json!({}))
        .add(&fleet, "api", json!({}));
    // tls: one byte flipped after the manifest was made (hash mismatch).
    let bundle = b.write().to_path_buf();
    let tls = bundle.join("secrets/tls.age");
    let mut bytes = std::fs::read(&tls).unwrap();
    let last = bytes.len() - 5;
    bytes[last] ^= 1;
    std::fs::write(&tls, &bytes).unwrap();
    // api: corrupt, but with a matching hash in the manifest (decryption fails).
    let api = bundle.join("secrets/api.age");
    let mut bytes = std::fs::read(&api).unwrap();
    let last = bytes.len() - 5;
    bytes[last] ^= 1;
    std::fs::write(&api, &bytes).unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap()).unwrap();
    manifest["secrets"][2]["sha256"] = json!(sha256(&bytes));
    std::fs::write(bundle.join("manifest.json"), manifest.to_string()).unwrap();
    let root = fleet.home.join("run");
    let script = format!(
        "if $BENTO activate --bundle {} -i {} --root {}; then echo UNEXPECTED-SUCCESS; fi\nls {}/secrets/",
        bundle.display(),
        s(&keys.web1),
        root.display(),
        root.display()
    );
    let t = text(&in_namespace(&fleet, &bin, &script));
    assert!(!t.contains("UNEXPECTED-SUCCESS"), "{t}");
    assert!(
        t.contains("error: secret tls: secrets/tls.age: SHA-256 differs from the manifest"),
        "{t}"
    );
    assert!(
        t.contains("error: secret api: secrets/api.age:") && t.contains("corrupt"),
        "{t}"
    );
    assert!(t.contains("\ndb\n"), "db still activates: {t}");
}

#[test]
fn a_full_ram_filesystem_keeps_the_previous_generation() {
    let Some((fleet, keys, bin)) = setup("") else {
        return;
    };
    set(&fleet, "db", "small");
    let mut b = Bundle::new(&fleet, "small");
    b.add(&fleet, "db", json!({}));
    let small = b.write().to_path_buf();
    set(&fleet, "db", &"x".repeat(256 * 1024));
    let mut b = Bundle::new(&fleet, "big");
    b.add(&fleet, "db", json!({}));
    let big = b.write().to_path_buf();
    let root = fleet.home.join("run");
    let script = format!(
        r#"mkdir -p {root}/secrets.d && mount -t tmpfs -o size=64k,mode=0751 tiny {root}/secrets.d
$BENTO activate --fs tmpfs --bundle {small} -i {key} --root {root}
if $BENTO activate --fs tmpfs --bundle {big} -i {key} --root {root}; then echo UNEXPECTED-SUCCESS; fi
readlink {root}/secrets; cat {root}/secrets/db; echo; ls {root}/secrets.d"#,
        root = root.display(),
        small = small.display(),
        big = big.display(),
        key = s(&keys.web1)
    );
    let t = text(&in_namespace(&fleet, &bin, &script));
    assert!(!t.contains("UNEXPECTED-SUCCESS"), "{t}");
    assert!(
        t.contains("the RAM filesystem is full; secrets generation 1 is still active"),
        "{t}"
    );
    assert!(t.contains("secrets.d/1\nsmall\n1\n"), "{t}");
}

#[test]
fn planted_symlinks_are_not_followed() {
    let Some((fleet, keys, bin)) = setup("") else {
        return;
    };
    set(&fleet, "db", "db");
    let mut b = Bundle::new(&fleet, "bundle");
    b.add(&fleet, "db", json!({}));
    let bundle = b.write();
    let root = fleet.home.join("run");
    let evil = fleet.home.join("evil");
    std::fs::create_dir_all(&evil).unwrap();
    let script = format!(
        r#"$BENTO activate --bundle {bundle} -i {key} --root {root}
ln -s {evil} {root}/secrets.d/2
$BENTO activate --bundle {bundle} -i {key} --root {root}
readlink {root}/secrets; ls -A {evil} | wc -l
umount {root}/secrets.d && rmdir {root}/secrets.d && ln -s {evil} {root}/secrets.d
if $BENTO activate --bundle {bundle} -i {key} --root {root}; then echo UNEXPECTED-SUCCESS; fi
ls -A {evil} | wc -l"#,
        bundle = bundle.display(),
        key = s(&keys.web1),
        root = root.display(),
        evil = evil.display()
    );
    let out = in_namespace(&fleet, &bin, &script);
    let t = text(&out);
    // The planted "2" is skipped over (and never written through): generation 3 is made.
    assert!(t.contains("secrets.d/3\n0\n"), "{t}");
    assert!(
        !t.contains("UNEXPECTED-SUCCESS") && t.contains("is a symlink; refusing"),
        "{t}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).trim_end().ends_with('0'),
        "{t}"
    );
    assert_eq!(std::fs::read_dir(&evil).unwrap().count(), 0);
}

#[test]
fn bad_names_unknown_users_and_dry_run() {
    let Some((fleet, keys, bin)) = setup("") else {
        return;
    };
    set(&fleet, "db", "one");
    set(&fleet, "tls", "tls");
    let mut b = Bundle::new(&fleet, "first");
    b.add(&fleet, "db", json!({"restart_units": ["db.service"]}));
    let first = b.write().to_path_buf();
    set(&fleet, "db", "two");
    let mut b = Bundle::new(&fleet, "second");
    b.add(&fleet, "db", json!({"restart_units": ["db.service"]})).add(
        &fleet,
        "tls",
        json!({"owner": "no-such-user"}),
    );
    b.specs.push(json!({"name": "../escape", "file": "secrets/../../x.age", "sha256": "00", "owner": "root", "mode": "0400"}));
    let second = b.write().to_path_buf();
    let root = fleet.home.join("run");
    let script = format!(
        r#"$BENTO activate --bundle {first} -i {key} --root {root}
find {root}/secrets.d | sort > before
if $BENTO activate --dry-run --bundle {second} -i {key} --root {root}; then echo UNEXPECTED-SUCCESS; fi
find {root}/secrets.d | sort > after
cmp before after && echo "dry run changed nothing"
cat {root}/secrets/db; echo"#,
        first = first.display(),
        second = second.display(),
        key = s(&keys.web1),
        root = root.display()
    );
    let t = text(&in_namespace(&fleet, &bin, &script));
    assert!(!t.contains("UNEXPECTED-SUCCESS"), "{t}");
    assert!(t.contains("dry run changed nothing"), "{t}");
    assert!(
        t.contains("~ db") && t.contains("would restart: db.service"),
        "{t}"
    );
    assert!(
        t.contains("error: secret ../escape:") && t.contains("is not allowed"),
        "{t}"
    );
    assert!(
        t.contains("error: secret tls: unknown user `no-such-user`"),
        "{t}"
    );
    assert!(t.contains("dry run changed nothing\none\n"), "{t}");
    let calls = std::fs::read_to_string(fleet.home.join("systemctl.calls")).unwrap_or_default();
    assert_eq!(calls, "try-restart db.service\n", "the dry run restarted nothing");
}

#[test]
fn removed_secrets_are_reported_with_and_without_mounts_alike() {
    let Some((fleet, keys, _bin)) = setup("") else {
        return;
    };
    set(&fleet, "db", "db");
    set(&fleet, "tls", "tls");
    let mut both = Bundle::new(&fleet, "both");
    both.add(&fleet, "db", json!({})).add(&fleet, "tls", json!({}));
    let mut one = Bundle::new(&fleet, "one");
    one.add(&fleet, "db", json!({}));
    let root = fleet.home.join("run");
    let activate = |bundle: &Path, extra: &[&str]| {
        let mut args = vec!["activate", "--no-mount", "--json", "--bundle", s(bundle)];
        args.extend(["-i", s(&keys.web1), "--root", s(&root)]);
        args.extend(extra);
        let out: serde_json::Value = serde_json::from_str(&ok(&fleet.bento(&args))).unwrap();
        out
    };
    let first = activate(both.write(), &[]);
    assert_eq!(first["added"], json!(["db", "tls"]));
    // The test's root is on disk, and bento says so.
    assert!(
        first["warnings"].to_string().contains("is not a RAM filesystem"),
        "{first}"
    );
    let one = one.write();
    // The dry run and the activation itself say the same.
    assert_eq!(activate(one, &["--dry-run"])["removed"], json!(["tls"]));
    assert_eq!(activate(one, &[])["removed"], json!(["tls"]));
    assert!(!root.join("secrets/tls").exists());
}

#[test]
fn no_mount_on_a_ram_filesystem_has_nothing_to_warn_about() {
    let Some((fleet, keys, bin)) = setup("") else {
        return;
    };
    set(&fleet, "db", "db");
    let mut b = Bundle::new(&fleet, "bundle");
    b.add(&fleet, "db", json!({}));
    let root = fleet.home.join("run");
    std::fs::create_dir_all(&root).unwrap();
    let script = format!(
        "mount -t tmpfs tmpfs {root}\n$BENTO activate --no-mount --json --bundle {bundle} -i {key} --root {root}",
        bundle = b.write().display(),
        key = s(&keys.web1),
        root = root.display()
    );
    let out = in_namespace(&fleet, &bin, &script);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["added"], json!(["db"]), "{t}");
    assert_eq!(report["warnings"], json!([]), "{t}");
}

#[test]
fn a_symlinked_root_is_refused_before_anything_is_mounted() {
    let Some((fleet, keys, bin)) = setup("") else {
        return;
    };
    set(&fleet, "db", "db");
    let mut b = Bundle::new(&fleet, "bundle");
    b.add(&fleet, "db", json!({}));
    let bundle = b.write();
    let real = fleet.home.join("real");
    std::fs::create_dir_all(&real).unwrap();
    let link = fleet.home.join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    for root in [link.clone(), link.join("sub")] {
        let script = format!(
            r#"if $BENTO activate --bundle {bundle} -i {key} --root {root}; then echo UNEXPECTED-SUCCESS; fi
echo "mounts: $(grep -c ' {real}/' /proc/self/mountinfo || true)"
echo "entries: $(ls -A {real} | wc -l)""#,
            bundle = bundle.display(),
            key = s(&keys.web1),
            root = root.display(),
            real = real.display(),
        );
        let out = in_namespace(&fleet, &bin, &script);
        let t = text(&out);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.contains("UNEXPECTED-SUCCESS"), "{t}");
        assert!(stdout.contains("mounts: 0\nentries: 0\n"), "{t}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(
            errors,
            [format!(
                "error: {}: is a symlink (to {}); refusing to activate under it: pass the real \
                 directory as --root",
                link.display(),
                real.display()
            )],
            "{t}"
        );
    }
}

#[test]
fn a_bundle_asking_for_setuid_setgid_or_sticky_bits_is_refused() {
    let Some((fleet, keys, _bin)) = setup("") else {
        return;
    };
    set(&fleet, "db", "db");
    set(&fleet, "tls", "tls");
    set(&fleet, "api", "api");
    // A hostile (or hand-made) manifest: bento deploy never writes these modes.
    let mut b = Bundle::new(&fleet, "bundle");
    b.add(&fleet, "db", json!({"mode": "4755"}))
        .add(&fleet, "tls", json!({"mode": "2440"}))
        .add(&fleet, "api", json!({"mode": "0440"}));
    let root = fleet.home.join("run");
    let out = fleet.bento(&[
        "activate",
        "--no-mount",
        "--json",
        "--bundle",
        s(b.write()),
        "-i",
        s(&keys.web1),
        "--root",
        s(&root),
    ]);
    assert!(!out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["added"], json!(["api"]), "{report}");
    let failed = report["failed"].to_string();
    for (name, mode) in [("db", "4755"), ("tls", "2440")] {
        assert!(
            failed.contains(&format!(
                "{name}: mode `{mode}` has setuid/setgid/sticky bits, which are not allowed for secrets"
            )),
            "{failed}"
        );
        assert!(!root.join("secrets").join(name).exists());
    }
    use std::os::unix::fs::PermissionsExt;
    let api = std::fs::metadata(root.join("secrets/api")).unwrap();
    assert_eq!(api.permissions().mode() & 0o7777, 0o440);
}

/// Units are restarted through `systemctl` (the recording fake on PATH): directly
/// outside a unit, with `--no-block` inside one (`INVOCATION_ID`) or with
/// `--from-activation`; `--no-restart` leaves them; a systemctl that fails or is missing
/// fails the run: no restart is ever claimed that did not happen. No activation list is
/// written under /run/nixos (on a fresh tmpfs /run, in the test's mount namespace).
#[test]
fn units_are_restarted_through_systemctl_inside_and_outside_a_unit() {
    let Some((fleet, keys, bin)) = setup("") else {
        return;
    };
    let failing = fleet.script(
        "failing-systemctl",
        "echo \"Unit a.service not loaded.\" >&2; exit 1",
    );
    let root = fleet.home.join("run");
    // A fresh /run of the namespace's own: nothing is created on the machine's.
    let mut script = "mount -t tmpfs none /run && mkdir /run/nixos\n".to_owned();
    for (i, (env, flags)) in [
        ("env -u INVOCATION_ID", "--from-activation".to_owned()),
        ("env INVOCATION_ID=0123abcd", String::new()),
        ("env -u INVOCATION_ID", String::new()),
        ("env INVOCATION_ID=0123abcd", "--no-restart".to_owned()),
        (
            "env -u INVOCATION_ID",
            format!("--systemctl {}", failing.display()),
        ),
        (
            "env INVOCATION_ID=0123abcd",
            format!("--systemctl {}", failing.display()),
        ),
        (
            "env -u INVOCATION_ID",
            "--systemctl /nonexistent/systemctl".to_owned(),
        ),
    ]
    .iter()
    .enumerate()
    {
        set(&fleet, "db", &format!("v{i}"));
        let mut b = Bundle::new(&fleet, &format!("bundle{i}"));
        b.add(&fleet, "db", json!({"restart_units": ["a.service", "b.service"]}));
        let bundle = b.write();
        script.push_str(&format!(
            "echo '#run {i}'\nif {env} $BENTO activate --bundle {} -i {} --root {} {flags}; then echo 'exit 0'; else echo 'exit 1'; fi\n",
            bundle.display(),
            s(&keys.web1),
            root.display(),
        ));
    }
    script.push_str("echo \"lists: $(ls -A /run/nixos)\"\n");
    let out = in_namespace(&fleet, &bin, &script);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    // Each run's lines (stdout and stderr are captured apart: stderr holds the notes).
    let stderr = String::from_utf8_lossy(&out.stderr);
    let notes: Vec<&str> = stderr.lines().filter(|l| l.contains("restart")).collect();
    assert_eq!(
        notes,
        [
            "· restart queued (systemctl --no-block): a.service b.service",
            "· restart queued (systemctl --no-block): a.service b.service",
            "· restarted: a.service b.service",
            "· not restarted (--no-restart): a.service b.service",
            &format!(
                "error: units not restarted: `{} try-restart a.service b.service` failed (exit status: 1)",
                failing.display()
            ),
            &format!(
                "error: units not restarted: `{} --no-block try-restart a.service b.service` failed (exit status: 1)",
                failing.display()
            ),
            "error: units not restarted: could not run `/nonexistent/systemctl`: No such file or directory (os error 2); pass --systemctl PROGRAM",
        ],
        "{t}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let exits: Vec<&str> = stdout.lines().filter(|l| l.starts_with("exit ")).collect();
    assert_eq!(
        exits,
        ["exit 0", "exit 0", "exit 0", "exit 0", "exit 1", "exit 1", "exit 1"],
        "{t}"
    );
    // Nothing for switch-to-configuration: every restart went through systemctl.
    assert!(stdout.lines().any(|l| l == "lists: "), "{t}");
    let calls = std::fs::read_to_string(fleet.home.join("systemctl.calls")).unwrap();
    assert_eq!(
        calls,
        "--no-block try-restart a.service b.service\n\
         --no-block try-restart a.service b.service\n\
         try-restart a.service b.service\n"
    );
}

/// Reload units are reported as what really happened to them: queued with `systemctl
/// --no-block` from activation, or left with `--no-restart`; never "reloaded" when
/// nothing was, and no empty restart line.
#[test]
fn reload_units_are_reported_as_they_were_handled() {
    let Some((fleet, keys, bin)) = setup("") else {
        return;
    };
    let root = fleet.home.join("run");
    let mut script = String::new();
    for (i, flags) in ["--no-restart", "--from-activation"].iter().enumerate() {
        set(&fleet, "db", &format!("v{i}"));
        let mut b = Bundle::new(&fleet, &format!("bundle{i}"));
        b.add(&fleet, "db", json!({"reload_units": ["r.service"]}));
        let bundle = b.write();
        script.push_str(&format!(
            "$BENTO activate --bundle {} -i {} --root {} {flags}\n",
            bundle.display(),
            s(&keys.web1),
            root.display(),
        ));
    }
    let out = in_namespace(&fleet, &bin, &script);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let notes: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("restart") || l.contains("reload"))
        .collect();
    assert_eq!(
        notes,
        [
            "· not reloaded (--no-restart): r.service",
            "· reload queued (systemctl --no-block): r.service",
        ],
        "{t}"
    );
    let calls = std::fs::read_to_string(fleet.home.join("systemctl.calls")).unwrap();
    assert_eq!(calls, "--no-block try-reload-or-restart r.service\n");
}
