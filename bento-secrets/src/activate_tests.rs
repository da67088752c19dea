//! Unit tests of activation's transitions, run without mounting anything: secrets added,
//! changed, unchanged, removed, a failing one keeping its previous content, and old
//! generations pruned.

use std::path::{Path, PathBuf};

use age_core::secrecy::ExposeSecret;

use crate::activate::{activate, Options, Phase, Report};
use crate::keys::RecipientKey;
use crate::manifest::MANIFEST_FILE;
use crate::ramfs::FsKind;
use crate::recipients_lock::sha256_hex;
use crate::units::UnitControl;

/// A host key, and bundles made for it in turn.
struct Host {
    dir: tempfile::TempDir,
    key: RecipientKey,
    identity: PathBuf,
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::tempdir().unwrap();
        let id = age::x25519::Identity::generate();
        let identity = dir.path().join("host.txt");
        std::fs::write(&identity, id.to_string().expose_secret()).unwrap();
        let key = RecipientKey::parse(&id.to_public().to_string()).unwrap();
        Host { dir, key, identity }
    }

    /// Writes bundle `n` with `secrets` (name, plaintext); `tamper` names one whose file is
    /// changed after its hash went into the manifest.
    fn bundle(&self, n: u32, secrets: &[(&str, &str)], tamper: Option<&str>) -> PathBuf {
        let bundle = self.dir.path().join(format!("bundle-{n}"));
        std::fs::create_dir_all(bundle.join("secrets")).unwrap();
        let specs: Vec<serde_json::Value> = secrets
            .iter()
            .map(|(name, plain)| {
                let file = format!("secrets/{name}.age");
                let ciphertext = crate::crypt::encrypt(plain.as_bytes(), &[&self.key], false, name).unwrap();
                let sha256 = sha256_hex(&ciphertext);
                let written = if tamper == Some(*name) { b"tampered".to_vec() } else { ciphertext };
                std::fs::write(bundle.join(&file), written).unwrap();
                serde_json::json!({"name": name, "file": file, "sha256": sha256, "owner": "root", "mode": "0400"})
            })
            .collect();
        let manifest = serde_json::json!({"format": 1, "host": "web1", "generation": n, "secrets": specs});
        std::fs::write(bundle.join(MANIFEST_FILE), manifest.to_string()).unwrap();
        bundle
    }

    fn activate(&self, bundle: PathBuf, root: &Path) -> Report {
        activate(&Options {
            bundle,
            root: root.to_path_buf(),
            identities: vec![self.identity.clone()],
            phase: Phase::Secrets,
            dry_run: false,
            keep: 1,
            fs: FsKind::Ramfs,
            mount: false,
            units: UnitControl::Leave,
        })
        .unwrap()
    }
}

fn read(root: &Path, name: &str) -> String {
    std::fs::read_to_string(root.join("secrets").join(name)).unwrap()
}

#[test]
fn each_activation_reports_what_changed_and_a_failure_keeps_the_old_content() {
    let host = Host::new();
    let root = tempfile::tempdir().unwrap();
    let root = root.path();

    let r = host.activate(host.bundle(1, &[("a", "1"), ("b", "2")], None), root);
    assert_eq!(
        (r.added, r.generation),
        (vec!["a".to_owned(), "b".to_owned()], Some(1))
    );
    assert_eq!((read(root, "a"), read(root, "b")), ("1".into(), "2".into()));

    let r = host.activate(host.bundle(2, &[("a", "1"), ("b", "22"), ("c", "3")], None), root);
    assert_eq!(
        (r.unchanged, r.changed, r.added),
        (vec!["a".into()], vec!["b".into()], vec!["c".into()])
    );
    assert_eq!(read(root, "b"), "22");

    // a's file no longer matches its hash: refused, its last good content kept; c is gone.
    let r = host.activate(host.bundle(3, &[("a", "new"), ("b", "22")], Some("a")), root);
    assert_eq!(r.removed, ["c"]);
    assert_eq!(r.unchanged, ["b"]);
    assert!(
        matches!(&r.failed[..], [f] if f.name == "a" && f.kept_previous && f.error.contains("SHA-256")),
        "{:?}",
        r.failed
    );
    assert_eq!(read(root, "a"), "1");
    assert!(!root.join("secrets/c").exists());

    // keep = 1: the current generation and one before it.
    let mut left: Vec<String> = std::fs::read_dir(root.join(crate::secrets_tree::STORE_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    left.sort();
    assert_eq!(left, ["2", "3"]);
}

#[test]
fn a_dry_run_changes_nothing() {
    let host = Host::new();
    let root = tempfile::tempdir().unwrap();
    host.activate(host.bundle(1, &[("a", "1")], None), root.path());
    let r = activate(&Options {
        bundle: host.bundle(2, &[("a", "2"), ("b", "x")], None),
        root: root.path().to_path_buf(),
        identities: vec![host.identity.clone()],
        phase: Phase::Secrets,
        dry_run: true,
        keep: 1,
        fs: FsKind::Ramfs,
        mount: false,
        units: UnitControl::Leave,
    })
    .unwrap();
    assert_eq!(
        (r.changed, r.added, r.generation),
        (vec!["a".into()], vec!["b".into()], None)
    );
    assert_eq!(read(root.path(), "a"), "1");
    assert!(!root.path().join("secrets/b").exists());
}

#[test]
fn a_new_mode_alone_is_reported_as_such_and_restarts_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let host = Host::new();
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    host.activate(host.bundle(1, &[("a", "1")], None), root);
    // The same content, another mode, and a unit that a content change would restart.
    let bundle = host.bundle(2, &[("a", "1")], None);
    let manifest = bundle.join(MANIFEST_FILE);
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    m["secrets"][0]["mode"] = "0440".into();
    m["secrets"][0]["restart_units"] = serde_json::json!(["a.service"]);
    std::fs::write(&manifest, m.to_string()).unwrap();
    let r = host.activate(bundle, root);
    assert_eq!(r.attributes_changed, ["a"]);
    assert!(r.changed.is_empty() && r.unchanged.is_empty() && r.added.is_empty());
    assert!(r.restart_units.is_empty(), "{:?}", r.restart_units);
    let mode = std::fs::metadata(root.join("secrets/a"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o440);
}
