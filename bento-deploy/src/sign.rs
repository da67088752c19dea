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

use crate::error::Error;

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
    pub fn load(path: &Path, shown: &str) -> Result<Signer, Error> {
        let err = |msg: String| Error::Signature(format!("deploy.signing_key {shown}: {msg}"));
        let text = std::fs::read_to_string(path).map_err(|e| {
            err(format!(
                "{e}; set [deploy] signing_key in bento.toml to an admin ssh key (or its .pub in ssh-agent)"
            ))
        })?;
        if path.extension().is_some_and(|e| e == "pub") {
            let public = PublicKey::from_openssh(text.trim())
                .map_err(|e| err(format!("not an ssh public key: {e}")))?;
            return Ok(Signer::Agent {
                public_file: path.to_path_buf(),
                public: Box::new(public),
            });
        }
        let key = PrivateKey::from_openssh(&text).map_err(|e| {
            err(format!(
                "not an OpenSSH private key ({e}); convert it with `ssh-keygen -p -f`, or name its .pub to sign with ssh-agent"
            ))
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
        unlock(&key, shown).map(|k| Signer::Key(Box::new(k)))
    }

    /// The public half of the signing key.
    pub fn public_key(&self) -> &PublicKey {
        match self {
            Signer::Key(k) => k.public_key(),
            Signer::Agent { public, .. } => public,
        }
    }

    /// Signs `message`; returns the armored signature (`-----BEGIN SSH SIGNATURE-----`).
    pub fn sign(&self, message: &[u8]) -> Result<String, Error> {
        match self {
            Signer::Key(key) => key
                .sign(NAMESPACE, HashAlg::Sha512, message)
                .and_then(|sig| sig.to_pem(LineEnding::LF))
                .map_err(|e| Error::Signature(format!("signing with {}: {e}", key.algorithm()))),
            Signer::Agent { public_file, .. } => sign_with_agent(public_file, message),
        }
    }
}

/// Asks the passphrase of an encrypted key on the terminal, up to three times.
fn unlock(key: &PrivateKey, shown: &str) -> Result<PrivateKey, Error> {
    for _ in 0..PASSPHRASE_TRIES {
        let passphrase = rpassword::prompt_password(format!("Passphrase for {shown}: ")).map_err(|e| {
            Error::Signature(format!(
                "deploy.signing_key {shown} is passphrase-protected and no terminal is available ({e}); \
                 add it to ssh-agent (ssh-add) and set SSH_AUTH_SOCK"
            ))
        })?;
        let passphrase = zeroize::Zeroizing::new(passphrase);
        if let Ok(key) = key.decrypt(passphrase.as_bytes()) {
            return Ok(key);
        }
        eprintln!("wrong passphrase");
    }
    Err(Error::Signature(format!(
        "deploy.signing_key {shown}: wrong passphrase {PASSPHRASE_TRIES} times"
    )))
}

/// Signs through ssh-agent: `ssh-keygen -Y sign -n bento -f KEY.pub` reads the message on
/// stdin and prints the signature.
fn sign_with_agent(public_file: &Path, message: &[u8]) -> Result<String, Error> {
    let err = |msg: String| {
        Error::Signature(format!(
            "signing with ssh-agent ({}): {msg}",
            public_file.display()
        ))
    };
    let mut child = Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", NAMESPACE, "-f"])
        .arg(public_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("cannot run ssh-keygen: {e}; install OpenSSH")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(message)
            .map_err(|e| err(format!("writing to ssh-keygen: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| err(format!("ssh-keygen: {e}")))?;
    let pem = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || !pem.starts_with("-----BEGIN SSH SIGNATURE-----") {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("failed");
        return Err(err(format!(
            "{}; is the key loaded (`ssh-add -l`) and SSH_AUTH_SOCK set?",
            last.trim()
        )));
    }
    Ok(pem)
}

/// Checks that `signature` (armored SSHSIG) is a `bento` signature of `message` by one of
/// `trusted`; returns that key.
pub fn verify<'k>(message: &[u8], signature: &str, trusted: &'k [PublicKey]) -> Result<&'k PublicKey, Error> {
    let sig = SshSig::from_pem(signature.trim().as_bytes())
        .map_err(|e| Error::Signature(format!("manifest.sig: not an SSH signature: {e}")))?;
    if sig.namespace() != NAMESPACE {
        return Err(Error::Signature(format!(
            "manifest.sig: namespace `{}` is not `{NAMESPACE}`",
            sig.namespace().escape_default()
        )));
    }
    let Some(key) = trusted.iter().find(|k| k.key_data() == sig.public_key()) else {
        return Err(Error::Signature(
            "manifest.sig: signed by a key that is not among the trusted admin keys".into(),
        ));
    };
    key.verify(NAMESPACE, message, &sig).map_err(|_| {
        Error::Signature(format!(
            "manifest.sig: bad signature by {}: manifest.json was changed after signing",
            key.fingerprint(HashAlg::Sha256)
        ))
    })?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

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
