//! `manifest.sig`: an SSH signature (SSHSIG, namespace `bento`, SHA-512) over the exact
//! bytes of `manifest.json`, as `ssh-keygen -Y sign -n bento` makes and
//! `ssh-keygen -Y verify -n bento` checks.
//!
//! The admin's key is `deploy.signing_key`: an OpenSSH private key (ed25519 or rsa; a
//! passphrase is asked once per run), or a `.pub` file whose private half is held by
//! ssh-agent. A passphrase-protected key is also used through the agent when
//! `SSH_AUTH_SOCK` is set and its `.pub` sits next to it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ssh_key::{HashAlg, LineEnding, PrivateKey, SshSig};

/// An ssh public key, as trusted by hosts (`PublicKey::from_openssh(line)`).
pub use ssh_key::PublicKey;

/// The SSHSIG namespace of bundle signatures.
pub const NAMESPACE: &str = "bento";

/// How many times a wrong passphrase may be typed.
const PASSPHRASE_TRIES: usize = 3;

/// Something that signs manifests.
#[derive(Debug)]
pub enum Signer {
    /// A private key held in memory.
    Key(Box<PrivateKey>),
    /// A key held by ssh-agent, named by its public key file; `ssh-keygen -Y sign` signs.
    Agent {
        /// The `.pub` file given to `ssh-keygen -f`.
        public_file: PathBuf,
        /// Its key.
        public: Box<PublicKey>,
    },
}

impl Signer {
    /// Opens the signing key at `path` (shown as `shown`), unlocking it if needed.
    pub fn load(path: &Path, shown: &str) -> Result<Signer, SignatureError> {
        let shown = shown.to_owned();
        let text = std::fs::read_to_string(path).map_err(|source| SignatureError::KeyUnreadable {
            shown: shown.clone(),
            source,
        })?;
        if path.extension().is_some_and(|e| e == "pub") {
            let public = PublicKey::from_openssh(text.trim())
                .map_err(|source| SignatureError::NotPublicKey { shown, source })?;
            return Ok(Signer::Agent {
                public_file: path.to_path_buf(),
                public: Box::new(public),
            });
        }
        let key = PrivateKey::from_openssh(&text).map_err(|source| SignatureError::NotPrivateKey {
            shown: shown.clone(),
            source,
        })?;
        if !key.is_encrypted() {
            return Ok(Signer::Key(Box::new(key)));
        }
        let public_file = PathBuf::from(format!("{}.pub", path.display()));
        if std::env::var_os("SSH_AUTH_SOCK").is_some() && public_file.is_file() {
            return Ok(Signer::Agent {
                public_file,
                public: Box::new(key.public_key().clone()),
            });
        }
        unlock(&key, &shown).map(|k| Signer::Key(Box::new(k)))
    }

    /// The public half of the signing key.
    pub fn public_key(&self) -> &PublicKey {
        match self {
            Signer::Key(k) => k.public_key(),
            Signer::Agent { public, .. } => public,
        }
    }

    /// Signs `message`; returns the armored signature (`-----BEGIN SSH SIGNATURE-----`).
    pub fn sign(&self, message: &[u8]) -> Result<String, SignatureError> {
        match self {
            Signer::Key(key) => key
                .sign(NAMESPACE, HashAlg::Sha512, message)
                .and_then(|sig| sig.to_pem(LineEnding::LF))
                .map_err(|source| SignatureError::Sign {
                    algorithm: key.algorithm().to_string(),
                    source,
                }),
            Signer::Agent { public_file, .. } => sign_with_agent(public_file, message),
        }
    }
}

/// Asks the passphrase of an encrypted key on the terminal, up to three times.
fn unlock(key: &PrivateKey, shown: &str) -> Result<PrivateKey, SignatureError> {
    for _ in 0..PASSPHRASE_TRIES {
        let passphrase =
            rpassword::prompt_password(format!("Passphrase for {shown}: ")).map_err(|source| {
                SignatureError::NoTerminal {
                    shown: shown.to_owned(),
                    source,
                }
            })?;
        let passphrase = zeroize::Zeroizing::new(passphrase);
        if let Ok(key) = key.decrypt(passphrase.as_bytes()) {
            return Ok(key);
        }
        eprintln!("wrong passphrase");
    }
    Err(SignatureError::WrongPassphrase {
        shown: shown.to_owned(),
    })
}

/// Signs through ssh-agent: `ssh-keygen -Y sign -n bento -f KEY.pub` reads the message on
/// stdin and prints the signature.
fn sign_with_agent(public_file: &Path, message: &[u8]) -> Result<String, SignatureError> {
    let err = |problem: AgentProblem| SignatureError::Agent {
        public_file: public_file.to_path_buf(),
        problem,
    };
    let mut child = Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", NAMESPACE, "-f"])
        .arg(public_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(AgentProblem::Spawn(e)))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(message)
            .map_err(|e| err(AgentProblem::Write(e)))?;
    }
    let out = child.wait_with_output().map_err(|e| err(AgentProblem::Wait(e)))?;
    let pem = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || !pem.starts_with("-----BEGIN SSH SIGNATURE-----") {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("failed");
        return Err(err(AgentProblem::Refused(last.trim().to_owned())));
    }
    Ok(pem)
}

/// The fleet's admin ssh keys (`keys/admins/<name>.pub`; age keys cannot sign), each
/// with its admin's name: the keys a manifest must be signed by.
#[derive(Clone, Debug, Default)]
pub struct AdminKeys {
    keys: Vec<(String, PublicKey)>,
}

impl AdminKeys {
    /// The ssh keys of `admins` (admin name → key lines, as `Fleet::admins`).
    pub fn new(admins: &std::collections::BTreeMap<String, Vec<bento_secrets::RecipientKey>>) -> AdminKeys {
        let keys = admins
            .iter()
            .flat_map(|(name, keys)| keys.iter().map(move |k| (name, k)))
            .filter_map(|(name, k)| {
                PublicKey::from_openssh(k.text())
                    .ok()
                    .map(|key| (name.clone(), key))
            })
            .collect();
        AdminKeys { keys }
    }

    /// Each key with its admin's name.
    pub fn named_keys(&self) -> impl Iterator<Item = (&str, &PublicKey)> {
        self.keys.iter().map(|(name, key)| (name.as_str(), key))
    }

    /// The public keys.
    pub fn keys(&self) -> Vec<PublicKey> {
        self.keys.iter().map(|(_, k)| k.clone()).collect()
    }

    /// Refuses `signer` unless its key is an admin's; `shown` names it as configured.
    pub fn check(&self, signer: &Signer, shown: &str) -> Result<(), SignatureError> {
        let key = signer.public_key();
        if self.keys.iter().any(|(_, k)| k.key_data() == key.key_data()) {
            return Ok(());
        }
        let admins = if self.keys.is_empty() {
            "the admins' ssh keys, but keys/admins/ holds none".to_owned()
        } else {
            self.keys
                .iter()
                .map(|(name, k)| format!("keys/admins/{name}.pub ({})", k.fingerprint(HashAlg::Sha256)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(SignatureError::NotAnAdmin {
            shown: shown.to_owned(),
            fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
            admins,
        })
    }

    /// The admin name of `signer`'s key, when it is an admin's.
    pub fn name_of(&self, signer: &Signer) -> Option<&str> {
        self.name_of_key(signer.public_key())
    }

    /// The admin name of `key`, when it is an admin's.
    pub fn name_of_key(&self, key: &PublicKey) -> Option<&str> {
        self.keys
            .iter()
            .find(|(_, k)| k.key_data() == key.key_data())
            .map(|(name, _)| name.as_str())
    }

    /// Whether `signatures` (one or more) hold a valid `bento` signature of `message` by
    /// one of these keys.
    pub fn signed(&self, message: &[u8], signatures: &str) -> bool {
        verify_threshold(message, signatures, &self.keys(), 1).is_ok()
    }

    /// The names of the admins whose valid signatures of `message` `signatures` holds, each
    /// once, in the order they signed.
    pub fn signers(&self, message: &[u8], signatures: &str) -> Vec<String> {
        let keys = self.keys();
        let valid = verify_threshold(message, signatures, &keys, 0).unwrap_or_default();
        let mut names: Vec<String> = Vec::new();
        for name in valid.into_iter().filter_map(|key| self.name_of_key(key)) {
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        }
        names
    }
}

/// The keys that made the valid `bento` signatures of `message` in `signatures` (one or
/// more armored SSHSIG blocks), each once, in order, whoever's they are: each block is
/// checked against the key it carries. For showing who signed (`bento log`), not for
/// trusting: see [`verify_threshold`].
pub fn valid_signers(message: &[u8], signatures: &str) -> Vec<PublicKey> {
    let mut keys: Vec<PublicKey> = Vec::new();
    for block in blocks(signatures) {
        let Ok(sig) = SshSig::from_pem(block.trim().as_bytes()) else {
            continue;
        };
        let key = PublicKey::from(sig.public_key().clone());
        let valid = sig.namespace() == NAMESPACE && key.verify(NAMESPACE, message, &sig).is_ok();
        if valid && !keys.iter().any(|k| k.key_data() == key.key_data()) {
            keys.push(key);
        }
    }
    keys
}

/// Checks that `signature` (armored SSHSIG) is a `bento` signature of `message` by one of
/// `trusted`; returns that key.
pub fn verify<'k>(
    message: &[u8],
    signature: &str,
    trusted: &'k [PublicKey],
) -> Result<&'k PublicKey, SignatureError> {
    let sig = SshSig::from_pem(signature.trim().as_bytes()).map_err(SignatureError::NotASignature)?;
    if sig.namespace() != NAMESPACE {
        return Err(SignatureError::Namespace(
            sig.namespace().escape_default().to_string(),
        ));
    }
    let Some(key) = trusted.iter().find(|k| k.key_data() == sig.public_key()) else {
        return Err(SignatureError::Untrusted);
    };
    key.verify(NAMESPACE, message, &sig)
        .map_err(|_| SignatureError::BadSignature(key.fingerprint(HashAlg::Sha256).to_string()))?;
    Ok(key)
}

/// The armor lines of one SSH signature.
const ARMOR_END: &str = "-----END SSH SIGNATURE-----";

/// The armored blocks of `signatures`, one after the other.
fn blocks(signatures: &str) -> impl Iterator<Item = &str> {
    signatures
        .split_inclusive(ARMOR_END)
        .filter(|b| !b.trim().is_empty())
}

/// Verifies `manifest.sig` that may hold several signatures (one armored block after the
/// other) of `message`, and counts the distinct trusted keys whose signature is valid: at
/// least `required` of them, or an error naming how many there are and what is wrong with
/// the others (an untrusted key, a bad signature, the same key twice).
pub fn verify_threshold<'k>(
    message: &[u8],
    signatures: &str,
    trusted: &'k [PublicKey],
    required: usize,
) -> Result<Vec<&'k PublicKey>, SignatureError> {
    let mut valid: Vec<&PublicKey> = Vec::new();
    let mut problems = Vec::new();
    let blocks: Vec<&str> = blocks(signatures).collect();
    for block in &blocks {
        match verify(message, block, trusted) {
            Ok(key) if valid.iter().any(|k| k.key_data() == key.key_data()) => {
                problems.push(format!(
                    "{} signed twice (counted once)",
                    key.fingerprint(HashAlg::Sha256)
                ));
            }
            Ok(key) => valid.push(key),
            Err(e) => problems.push(e.to_string().trim_start_matches("manifest.sig: ").to_owned()),
        }
    }
    if valid.len() >= required {
        return Ok(valid);
    }
    match (required, blocks.len(), problems.len()) {
        // One required, one signature: its own error, as before.
        (1, 1, 1) => Err(verify(message, blocks[0], trusted)
            .err()
            .unwrap_or(SignatureError::Untrusted)),
        _ => Err(SignatureError::TooFew {
            have: valid.len(),
            need: required,
            problems: problems.join("; "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_threshold_counts_distinct_trusted_keys_only() {
        let (a, b, c) = (ed25519(), ed25519(), ed25519());
        let message = b"{\"format\": 1}\n";
        let sig = |k: &PrivateKey, m: &[u8]| -> String {
            let s = k.sign(NAMESPACE, HashAlg::Sha512, m).unwrap();
            s.to_pem(ssh_key::LineEnding::LF).unwrap()
        };
        let trusted = [a.public_key().clone(), b.public_key().clone()];
        let two = format!("{}{}", sig(&a, message), sig(&b, message));
        assert_eq!(verify_threshold(message, &two, &trusted, 2).unwrap().len(), 2);
        // The same key twice, an untrusted key, a signature of other bytes: not counted.
        for (what, text) in [
            ("twice", format!("{}{}", sig(&a, message), sig(&a, message))),
            ("untrusted", format!("{}{}", sig(&a, message), sig(&c, message))),
            (
                "other bytes",
                format!("{}{}", sig(&a, message), sig(&b, b"other")),
            ),
        ] {
            let e = verify_threshold(message, &text, &trusted, 2).unwrap_err();
            match &e {
                SignatureError::TooFew {
                    have: 1,
                    need: 2,
                    problems,
                } => assert!(!problems.is_empty(), "{what}"),
                other => panic!("{what}: {other}"),
            }
        }
        // One required: one good signature among others is enough; alone and bad, its own error.
        assert!(verify_threshold(message, &two, &trusted, 1).is_ok());
        let e = verify_threshold(message, &sig(&c, message), &trusted, 1).unwrap_err();
        assert!(matches!(e, SignatureError::Untrusted), "{e}");
    }

    fn ed25519() -> PrivateKey {
        let mut rng = ssh_key::rand_core::OsRng;
        PrivateKey::random(&mut rng, ssh_key::Algorithm::Ed25519).unwrap()
    }

    #[test]
    fn signs_and_verifies_and_rejects_changes() {
        let key = ed25519();
        let other = ed25519();
        let signer = Signer::Key(Box::new(key.clone()));
        let pem = signer.sign(b"{\"format\": 1}\n").unwrap();
        assert!(pem.starts_with("-----BEGIN SSH SIGNATURE-----"));
        let trusted = [other.public_key().clone(), key.public_key().clone()];
        assert_eq!(
            verify(b"{\"format\": 1}\n", &pem, &trusted).unwrap(),
            key.public_key()
        );
        let e = verify(b"{\"format\": 2}\n", &pem, &trusted)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad signature"), "{e}");
        let e = verify(b"{\"format\": 1}\n", &pem, &trusted[..1])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not among the trusted"), "{e}");
        assert!(verify(b"x", "garbage", &trusted).is_err());
    }

    #[test]
    fn refuses_other_namespaces() {
        let key = ed25519();
        let pem = key
            .sign("git", HashAlg::Sha512, b"m")
            .unwrap()
            .to_pem(LineEnding::LF)
            .unwrap();
        let e = verify(b"m", &pem, &[key.public_key().clone()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("namespace `git`"), "{e}");
    }
}

/// Why signing or verifying a manifest failed; each one line naming the key or file.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// The signing key file cannot be read.
    #[error(
        "deploy.signing_key {shown}: {source}; set [deploy] signing_key in bento.toml to an admin \
         ssh key (or its .pub in ssh-agent)"
    )]
    KeyUnreadable {
        /// The key's path as configured.
        shown: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A `.pub` signing key is not a public key.
    #[error("deploy.signing_key {shown}: not an ssh public key: {source}")]
    NotPublicKey {
        /// The key's path as configured.
        shown: String,
        /// The parser's error.
        #[source]
        source: ssh_key::Error,
    },
    /// The signing key is not an OpenSSH private key.
    #[error(
        "deploy.signing_key {shown}: not an OpenSSH private key ({source}); convert it with \
         `ssh-keygen -p -f`, or name its .pub to sign with ssh-agent"
    )]
    NotPrivateKey {
        /// The key's path as configured.
        shown: String,
        /// The parser's error.
        #[source]
        source: ssh_key::Error,
    },
    /// The key needs a passphrase and there is no terminal to ask it on.
    #[error(
        "deploy.signing_key {shown} is passphrase-protected and no terminal is available ({source}); \
         add it to ssh-agent (ssh-add) and set SSH_AUTH_SOCK"
    )]
    NoTerminal {
        /// The key's path as configured.
        shown: String,
        /// The terminal's error.
        #[source]
        source: std::io::Error,
    },
    /// Every passphrase try was wrong.
    #[error("deploy.signing_key {shown}: wrong passphrase {PASSPHRASE_TRIES} times")]
    WrongPassphrase {
        /// The key's path as configured.
        shown: String,
    },
    /// Signing with an in-memory key failed.
    #[error("signing with {algorithm}: {source}")]
    Sign {
        /// The key's algorithm.
        algorithm: String,
        /// The underlying error.
        #[source]
        source: ssh_key::Error,
    },
    /// Signing through ssh-agent failed.
    #[error("signing with ssh-agent ({}): {problem}", public_file.display())]
    Agent {
        /// The `.pub` file given to `ssh-keygen`.
        public_file: PathBuf,
        /// What went wrong.
        problem: AgentProblem,
    },
    /// The signing key is not one of the fleet's admin keys (`keys/admins/*.pub`): hosts
    /// trust only admins' keys, so what it signs would be refused.
    #[error(
        "deploy.signing_key {shown} ({fingerprint}) is not an admin key of this fleet, so hosts \
         would refuse what it signs: set it to one of {admins}, or register it with \
         `bento admin add NAME --key FILE.pub`"
    )]
    NotAnAdmin {
        /// The key's path as configured.
        shown: String,
        /// The key's SHA-256 fingerprint.
        fingerprint: String,
        /// The admins' ssh keys, by file and fingerprint (or a note that there are none).
        admins: String,
    },
    /// `manifest.sig` is not an armored SSH signature.
    #[error("manifest.sig: not an SSH signature: {0}")]
    NotASignature(#[source] ssh_key::Error),
    /// The signature is for another namespace (shown escaped).
    #[error("manifest.sig: namespace `{0}` is not `{NAMESPACE}`")]
    Namespace(String),
    /// The signing key is not trusted.
    #[error("manifest.sig: signed by a key that is not among the trusted admin keys")]
    Untrusted,
    /// The signature does not match the manifest; the key's fingerprint.
    #[error("manifest.sig: bad signature by {0}: manifest.json was changed after signing")]
    BadSignature(String),
    /// Fewer distinct trusted keys signed than agent.toml's `required_signatures`.
    #[error(
        "manifest.sig: {have} of the {need} signatures by distinct trusted admin keys that required_signatures asks{}",
        if problems.is_empty() { String::new() } else { format!(" ({problems})") }
    )]
    TooFew {
        /// Valid signatures by distinct trusted keys.
        have: usize,
        /// How many are required.
        need: usize,
        /// What is wrong with the others, joined.
        problems: String,
    },
}

/// What went wrong signing through `ssh-keygen -Y sign` and ssh-agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentProblem {
    /// `ssh-keygen` cannot be started.
    #[error("cannot run ssh-keygen: {0}; install OpenSSH")]
    Spawn(#[source] std::io::Error),
    /// Writing the message to it failed.
    #[error("writing to ssh-keygen: {0}")]
    Write(#[source] std::io::Error),
    /// Waiting for it failed.
    #[error("ssh-keygen: {0}")]
    Wait(#[source] std::io::Error),
    /// It refused; its last line on stderr.
    #[error("{0}; is the key loaded (`ssh-add -l`) and SSH_AUTH_SOCK set?")]
    Refused(String),
}
