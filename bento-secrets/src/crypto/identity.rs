//! Private keys that decrypt secrets: OpenSSH keys (ed25519, rsa), age identity files and
//! age plugin identities.
//!
//! A passphrase-protected ssh key is unlocked lazily — only when a file actually has a
//! stanza for it — and at most once per run, however many files are decrypted (also from
//! several threads).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use age::ssh::{EncryptedKey, UnsupportedKey};
use age_core::format::{FileKey, Stanza};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::keys::ssh_tag_of_wire;
use crate::prompt::{Prompt, Terminal};

/// The environment variable naming identity files (`:`-separated).
pub const IDENTITY_ENV: &str = "BENTO_IDENTITY";

/// How many passphrase attempts a locked key gets.
const PASSPHRASE_TRIES: usize = 3;

/// The identity files to use: `-i` flags, else `$BENTO_IDENTITY`, else the user's
/// `~/.ssh/id_ed25519` and `~/.ssh/id_rsa` that exist; each with the name messages give
/// it: a path taken from `$BENTO_IDENTITY` says so, so that a mistake there is found where
/// it was made.
pub fn identity_files(explicit: &[PathBuf]) -> Vec<(PathBuf, String)> {
    if !explicit.is_empty() {
        return explicit.iter().cloned().map(named).collect();
    }
    if let Some(env) = std::env::var_os(IDENTITY_ENV).filter(|v| !v.is_empty()) {
        return std::env::split_paths(&env)
            .map(|p| {
                let shown = format!("{} (from ${IDENTITY_ENV})", p.display());
                (p, shown)
            })
            .collect();
    }
    let Some(home) = std::env::var_os("HOME") else {
        return Vec::new();
    };
    let ssh = Path::new(&home).join(".ssh");
    ["id_ed25519", "id_rsa"]
        .iter()
        .map(|f| ssh.join(f))
        .filter(|p| p.exists())
        .map(named)
        .collect()
}

/// `path` with its name in messages: itself.
fn named(path: PathBuf) -> (PathBuf, String) {
    let shown = path.display().to_string();
    (path, shown)
}

/// A set of loaded identities, ready to decrypt many files.
pub struct Identities {
    list: Vec<Box<dyn age::Identity + Send + Sync>>,
    shown: Vec<String>,
    /// Why passphrase-protected keys could not be unlocked, one sentence per key.
    locked_out: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities").field("files", &self.shown).finish()
    }
}

impl Identities {
    /// Loads the identities from `paths`, asking passphrases through `prompt`.
    pub fn load_with(paths: &[PathBuf], prompt: Arc<dyn Prompt>) -> Result<Identities> {
        let named: Vec<(PathBuf, String)> = paths.iter().cloned().map(named).collect();
        Self::load_named(&named, prompt)
    }

    /// Loads the identities from `files` (each path with its name in messages, as
    /// [`identity_files`] gives them), asking passphrases on the terminal when needed.
    pub fn load_files(files: &[(PathBuf, String)]) -> Result<Identities> {
        Self::load_named(files, Arc::new(Terminal))
    }

    fn load_named(files: &[(PathBuf, String)], prompt: Arc<dyn Prompt>) -> Result<Identities> {
        if files.is_empty() {
            return Err(Error::NoIdentity);
        }
        let mut ids = Identities {
            list: Vec::new(),
            shown: Vec::new(),
            locked_out: Arc::default(),
        };
        for (path, shown) in files {
            let shown = shown.clone();
            let text = read_identity_text(path, &shown)?;
            ids.list
                .extend(parse_identity_file(&text, &shown, &prompt, &ids.locked_out)?);
            ids.shown.push(shown);
        }
        Ok(ids)
    }

    /// The identities, as age wants them.
    pub fn iter(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.list.iter().map(|i| i.as_ref() as &dyn age::Identity)
    }

    /// Why the passphrase-protected keys that were tried could not be unlocked (naming
    /// each key file), or `None` when none was.
    pub fn locked_out(&self) -> Option<String> {
        let why = self.locked_out.lock().unwrap_or_else(|p| p.into_inner());
        (!why.is_empty()).then(|| why.join("; "))
    }

    /// The identity files, comma-separated, for messages.
    pub fn describe(&self) -> String {
        self.shown.join(", ")
    }
}

fn read_identity_text(path: &Path, shown: &str) -> Result<Zeroizing<String>> {
    let bytes = crate::plaintext::read_file(path).map_err(|e| Error::io(shown, e))?;
    let not_text = "is not a text file; expected an OpenSSH private key or an age identity file";
    let text = std::str::from_utf8(&bytes).map_err(|_| Error::input(shown, None, not_text))?;
    Ok(Zeroizing::new(text.to_owned()))
}

fn parse_identity_file(
    text: &str,
    shown: &str,
    prompt: &Arc<dyn Prompt>,
    locked_out: &Arc<Mutex<Vec<String>>>,
) -> Result<Vec<Box<dyn age::Identity + Send + Sync>>> {
    if text.contains("-----BEGIN OPENSSH PRIVATE KEY-----")
        || text.contains("-----BEGIN RSA PRIVATE KEY-----")
    {
        let parsed = age::ssh::Identity::from_buffer(text.as_bytes(), Some(shown.to_owned()))
            .map_err(|e| Error::input(shown, None, format!("not a usable ssh private key ({e})")))?;
        return match parsed {
            age::ssh::Identity::Unencrypted(_) => {
                Ok(vec![
                    match crate::ssh_ed25519::SshEd25519::new(text, parsed.clone()) {
                        Some(prepared) => Box::new(prepared),
                        None => Box::new(parsed),
                    },
                ])
            }
            age::ssh::Identity::Encrypted(key) => Ok(vec![Box::new(LockedSshKey::new(
                text,
                shown,
                key,
                prompt.clone(),
                locked_out.clone(),
            ))]),
            age::ssh::Identity::Unsupported(why) => Err(Error::input(shown, None, unsupported(&why))),
        };
    }
    if looks_like_a_public_key(text) {
        return Err(Error::input(
            shown,
            None,
            "that is a public key; pass the private key instead (the same file without .pub)",
        ));
    }
    let file = age::IdentityFile::from_buffer(text.as_bytes())
        .map_err(|e| {
            Error::input(
                shown,
                None,
                format!("{e}; expected an OpenSSH private key or AGE-SECRET-KEY-1… lines"),
            )
        })?
        .with_callbacks(Terminal);
    let ids = file.into_identities().map_err(|e| match e {
        age::DecryptError::PluginResolve(age::plugin::ResolveError::MissingPlugin { binary_name }) => {
            Error::MissingPlugin {
                what: format!("identity file {shown}"),
                binary: binary_name,
            }
        }
        other => Error::input(shown, None, other.to_string()),
    })?;
    if ids.is_empty() {
        return Err(Error::input(
            shown,
            None,
            "holds no identity; expected an OpenSSH private key or AGE-SECRET-KEY-1… lines",
        ));
    }
    Ok(ids)
}

/// Whether `text` is a public key line (an ssh `.pub` file or an `age1…` recipient), given
/// where a private key was expected.
fn looks_like_a_public_key(text: &str) -> bool {
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'));
    first.is_some_and(|l| {
        l.starts_with("ssh-")
            || l.starts_with("ecdsa-sha2-")
            || l.starts_with("sk-")
            || (l.starts_with("age1") && !l.contains(char::is_whitespace))
    })
}

fn unsupported(why: &UnsupportedKey) -> String {
    match why {
        UnsupportedKey::EncryptedPem => {
            "encrypted PEM keys are not supported; convert it with `ssh-keygen -p -f FILE` (OpenSSH format)"
                .into()
        }
        UnsupportedKey::EncryptedSsh(cipher) => {
            format!(
                "keys encrypted with {cipher} are not supported; re-encrypt it with `ssh-keygen -p -f FILE`"
            )
        }
        UnsupportedKey::Hardware(t) => {
            format!("{t} is a hardware key and cannot decrypt age files; use age-plugin-yubikey")
        }
        UnsupportedKey::Type(t) => format!("{t} keys cannot decrypt age files; use an ed25519 or rsa key"),
    }
}

/// A passphrase-protected ssh key, unlocked on first use.
struct LockedSshKey {
    shown: String,
    /// The key's stanza tag, so only stanzas meant for it trigger a passphrase prompt.
    tag: Option<String>,
    key: EncryptedKey,
    prompt: Arc<dyn Prompt>,
    /// `None`: not tried yet; `Some(None)`: the user could not unlock it.
    unlocked: Mutex<Option<Option<age::ssh::Identity>>>,
    /// Where to say why it could not be unlocked (see [`Identities::locked_out`]).
    locked_out: Arc<Mutex<Vec<String>>>,
}

impl LockedSshKey {
    fn new(
        text: &str,
        shown: &str,
        key: EncryptedKey,
        prompt: Arc<dyn Prompt>,
        locked_out: Arc<Mutex<Vec<String>>>,
    ) -> Self {
        let tag = ssh_key::PrivateKey::from_openssh(text)
            .ok()
            .and_then(|k| k.public_key().to_bytes().ok())
            .map(|wire| ssh_tag_of_wire(&wire));
        LockedSshKey {
            shown: shown.to_owned(),
            tag,
            key,
            prompt,
            unlocked: Mutex::new(None),
            locked_out,
        }
    }

    fn unlock(&self) -> Option<age::ssh::Identity> {
        let identity = self.try_unlock();
        if let Err(why) = &identity {
            let mut list = self.locked_out.lock().unwrap_or_else(|p| p.into_inner());
            list.push(why.to_string());
        }
        identity.ok()
    }

    fn try_unlock(&self) -> std::result::Result<age::ssh::Identity, UnlockError> {
        for attempt in 0..PASSPHRASE_TRIES {
            let Some(pass) = self.prompt.passphrase(&format!("Passphrase for {}", self.shown)) else {
                return Err(UnlockError::NoTerminal(self.shown.clone()));
            };
            let secret = age::secrecy::SecretString::from(pass.as_str().to_owned());
            match self.key.decrypt(secret) {
                Ok(k) => return Ok(age::ssh::Identity::Unencrypted(k)),
                Err(_) if attempt + 1 < PASSPHRASE_TRIES => eprintln!("wrong passphrase, try again"),
                Err(_) => eprintln!("wrong passphrase; giving up on {}", self.shown),
            }
        }
        Err(UnlockError::WrongPassphrase(self.shown.clone()))
    }
}

/// Why a passphrase-protected ssh key stayed locked.
#[derive(Debug, thiserror::Error)]
enum UnlockError {
    /// No terminal to ask the passphrase on.
    #[error(
        "the key that can decrypt it, {0}, is passphrase-protected and there is no terminal \
         to ask its passphrase on: run bento on a terminal, or pass -i with a key without a \
         passphrase (ssh-agent cannot decrypt age files)"
    )]
    NoTerminal(String),
    /// Wrong every time.
    #[error("the key that can decrypt it, {0}, was not unlocked: wrong passphrase {PASSPHRASE_TRIES} times")]
    WrongPassphrase(String),
}

impl age::Identity for LockedSshKey {
    fn unwrap_stanza(&self, stanza: &Stanza) -> Option<std::result::Result<FileKey, age::DecryptError>> {
        if stanza.tag != "ssh-ed25519" && stanza.tag != "ssh-rsa" {
            return None;
        }
        if let Some(tag) = &self.tag {
            if stanza.args.first() != Some(tag) {
                return None;
            }
        }
        let mut state = self.unlocked.lock().unwrap_or_else(|p| p.into_inner());
        let identity = state.get_or_insert_with(|| self.unlock());
        match identity {
            Some(id) => id.unwrap_stanza(stanza),
            None => Some(Err(age::DecryptError::KeyDecryptionFailed)),
        }
    }
}
