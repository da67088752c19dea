//! A small fleet in a temp dir for unit tests: ssh-ed25519 host keys, one age admin whose
//! identity file can decrypt everything, and rules given as text.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use age_core::secrecy::ExposeSecret;
use ssh_key::rand_core::OsRng;

use crate::fleet::Fleet;
use crate::fleet_lock::FleetLock;
use crate::identity::Identities;

/// A fleet on disk, removed when dropped.
pub(crate) struct TempFleet {
    dir: tempfile::TempDir,
    /// The admin's identity file (`alice`).
    pub admin: PathBuf,
}

impl TempFleet {
    /// Hosts `hosts` (fresh ed25519 keys), admin `alice` (a fresh age key), and `rules`.
    pub fn new(hosts: &[&str], rules: &str) -> TempFleet {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        for sub in ["keys/hosts", "keys/admins", "secrets", "private"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        let admin = root.join("private/alice.txt");
        let fleet = TempFleet { dir, admin };
        for host in hosts {
            fleet.add_host(host);
        }
        let alice = age::x25519::Identity::generate();
        std::fs::write(&fleet.admin, alice.to_string().expose_secret()).unwrap();
        std::fs::write(
            root.join("keys/admins/alice.pub"),
            format!("{}\n", alice.to_public()),
        )
        .unwrap();
        fleet.rules(rules);
        // As `bento init` leaves it: an empty lock, filled as secrets are written.
        std::fs::write(
            root.join("secrets").join(crate::recipients_lock::LOCK_FILE),
            crate::recipients_lock::HEADER,
        )
        .unwrap();
        fleet
    }

    /// The fleet's root.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Adds host `name` with a fresh ed25519 key.
    pub fn add_host(&self, name: &str) {
        let key = ssh_key::PrivateKey::random(&mut OsRng, ssh_key::Algorithm::Ed25519).unwrap();
        let line = key.public_key().to_openssh().unwrap();
        std::fs::write(
            self.root().join(format!("keys/hosts/{name}.pub")),
            format!("{line}\n"),
        )
        .unwrap();
    }

    /// Replaces `secrets/secrets.toml`.
    pub fn rules(&self, text: &str) {
        std::fs::write(self.root().join("secrets/secrets.toml"), text).unwrap();
    }

    /// The fleet as it is on disk now.
    pub fn load(&self) -> Fleet {
        Fleet::load(self.root()).unwrap()
    }

    /// The fleet lock.
    pub fn lock(&self) -> FleetLock {
        FleetLock::acquire(self.root(), |_| {}).unwrap()
    }

    /// The admin's identities.
    pub fn ids(&self) -> crate::Result<Identities> {
        Identities::load_with(
            std::slice::from_ref(&self.admin),
            Arc::new(crate::prompt::Terminal),
        )
    }

    /// Writes secret `name` and records it in the lock, as `bento secret edit` does.
    pub fn write(&self, name: &str, content: &[u8]) {
        let fleet = self.load();
        let (held, rule) = (self.lock(), fleet.rule(name).unwrap());
        let entry = crate::store::write(&fleet, &held, rule, content).unwrap();
        crate::store::record(&fleet, &held, [(rule.name.clone(), entry)], false).unwrap();
    }
}
