//! The keys requests to the store are signed with.
//!
//! On a host: the file `s3_credentials` of agent.toml (root's, 0600; never in the Nix
//! store). On the admin's machine: `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and
//! `AWS_SESSION_TOKEN`), else the profile `AWS_PROFILE` (default `default`) of
//! `AWS_SHARED_CREDENTIALS_FILE` (default `~/.aws/credentials`). Both files have the AWS
//! shape:
//!
//! ```ini
//! [default]
//! aws_access_key_id = GK…
//! aws_secret_access_key = …
//! ```

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// An access key and its secret.
#[derive(Clone)]
pub struct S3Credentials {
    /// The access key id.
    pub key: String,
    /// The secret, wiped when dropped.
    pub secret: Zeroizing<String>,
    /// A session token, for temporary credentials.
    pub token: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Credentials({}, secret hidden)", self.key)
    }
}

/// Why no credentials could be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file lacks the profile or a key.
    #[error("{path}: no `{what}` in [{profile}]; the file holds [{profile}] with aws_access_key_id and aws_secret_access_key")]
    Missing {
        /// The file.
        path: PathBuf,
        /// The profile.
        profile: String,
        /// The key missing.
        what: &'static str,
    },
    /// The file is readable by others than its owner.
    #[error("{path}: readable by others (mode {mode:o}): chmod 600 it; it holds a secret key")]
    Open {
        /// The file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// Nothing in the environment, no file.
    #[error("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile in ~/.aws/credentials (AWS_PROFILE)")]
    None,
}

/// The most a credentials file may hold.
const LIMIT: u64 = 64 * 1024;

impl S3Credentials {
    /// Reads profile `profile` of the credentials file `path` (refused when others can
    /// read it).
    pub fn from_file(path: &Path, profile: &str) -> Result<S3Credentials, CredentialsError> {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        let unreadable = |source| CredentialsError::Unreadable {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(unreadable)?;
        let mode = file.metadata().map_err(unreadable)?.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CredentialsError::Open {
                path: path.to_path_buf(),
                mode,
            });
        }
        let mut text = Zeroizing::new(String::new());
        file.take(LIMIT).read_to_string(&mut text).map_err(unreadable)?;
        let mut section = String::new();
        let (mut key, mut secret, mut token) = (None, None, None);
        for line in text.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.trim().to_owned();
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            if section != profile {
                continue;
            }
            let v = v.trim().to_owned();
            match k.trim() {
                "aws_access_key_id" => key = Some(v),
                "aws_secret_access_key" => secret = Some(Zeroizing::new(v)),
                "aws_session_token" => token = Some(Zeroizing::new(v)),
                _ => {}
            }
        }
        let missing = |what| CredentialsError::Missing {
            path: path.to_path_buf(),
            profile: profile.to_owned(),
            what,
        };
        Ok(S3Credentials {
            key: key.ok_or_else(|| missing("aws_access_key_id"))?,
            secret: secret.ok_or_else(|| missing("aws_secret_access_key"))?,
            token,
        })
    }

    /// The admin's credentials: the environment, else the shared credentials file.
    pub fn from_environment() -> Result<S3Credentials, CredentialsError> {
        let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let (Some(key), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            return Ok(S3Credentials {
                key,
                secret: Zeroizing::new(secret),
                token: var("AWS_SESSION_TOKEN").map(Zeroizing::new),
            });
        }
        let file = var("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")));
        match file {
            Some(file) if file.exists() => {
                S3Credentials::from_file(&file, &var("AWS_PROFILE").unwrap_or_else(|| "default".into()))
            }
            _ => Err(CredentialsError::None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn reads_a_profile_and_refuses_an_open_or_incomplete_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        std::fs::write(
            &path,
            "[other]\naws_access_key_id = X\n[default]\naws_access_key_id = GK1\naws_secret_access_key = s3cret\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = S3Credentials::from_file(&path, "default").unwrap();
        assert_eq!((c.key.as_str(), c.secret.as_str()), ("GK1", "s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
        let e = S3Credentials::from_file(&path, "other").unwrap_err().to_string();
        assert!(e.contains("no `aws_secret_access_key` in [other]"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = S3Credentials::from_file(&path, "default")
            .unwrap_err()
            .to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }
}
