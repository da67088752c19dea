//! `bento secret edit`: new content for a secret, from the user's editor or from stdin.
//!
//! The editor works on a 0600 file inside a private 0700 directory on a RAM filesystem
//! (see [`crate::scratch`]). That directory is removed on every way out: success, error,
//! editor failure, panic, and SIGTERM/SIGHUP, which also end the editor (see
//! [`crate::editor`]). Ctrl-C belongs to the editor; if it kills the editor, the edit is
//! abandoned. The ciphertext is replaced only when the content changed, atomically.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use signal_hook::consts::SIGINT;
use zeroize::Zeroizing;

use crate::crypt;
use crate::editor::{self, Ended};
use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::fleet_lock::FleetLock;
use crate::identity::Identities;
use crate::plaintext::read_file;
use crate::ramfs::is_ram_fs;
use crate::rules::SecretRule;
use crate::scratch::{self, Scratch};
use crate::store;

/// What an edit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The content did not change; the file was not touched.
    Unchanged,
    /// The secret was (re-)encrypted to this many keys.
    Written(usize),
    /// The old content could not be decrypted with the identities at hand (stdin mode), so
    /// it was replaced unread, encrypted to this many keys.
    Overwritten(usize),
    /// The secret did not exist and the new content is empty: nothing was created.
    NothingToCreate,
}

/// Where the editor's plaintext may live.
#[derive(Debug, Clone, Default)]
pub struct TempPolicy {
    /// Accept a directory that is not on a RAM filesystem.
    pub unsafe_tmp: bool,
}

/// Edits secret `name` with the user's editor (`$VISUAL`, `$EDITOR`, else `vi`).
///
/// `ids` is needed only when the secret exists (to show its current content). The fleet
/// lock is held by the caller for the whole session, editor included: no other bento
/// command changes the secret meanwhile, and a change by anything else (a `git pull`, a
/// hand-run `age`) is detected and not overwritten. Scratch dirs left by a killed bento
/// are removed first.
pub fn edit_with_editor(
    fleet: &Fleet,
    held: &FleetLock,
    name: &str,
    ids: impl FnOnce() -> Result<Identities>,
    policy: &TempPolicy,
) -> Result<Outcome> {
    let rule = fleet.rule(name)?;
    let name = rule.name.as_str();
    let shown = fleet.secret_shown(rule);
    let base = ram_dir(policy)?;
    scratch::remove_stale(&base);
    let before = store::read_ciphertext(fleet, rule)?;
    let old = match &before {
        Some(ciphertext) => Some(
            crypt::decrypt(ciphertext, &ids()?, &shown, &store::who(rule))
                .map_err(|e| crate::verify::explain_undecryptable(fleet, rule, e))?,
        ),
        None => None,
    };
    let scratch = Scratch::new(&base, name).map_err(|e| Error::io(base.display().to_string(), e))?;
    let file = scratch.path().join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&file)
        .map_err(|e| Error::io(file.display().to_string(), e))?;
    if let Some(old) = &old {
        f.write_all(old)
            .map_err(|e| Error::io(file.display().to_string(), e))?;
    }
    drop(f);

    run_editor(&file, &shown)?;
    let new = read_file(&file).map_err(|e| Error::io(file.display().to_string(), e))?;
    drop(scratch);
    if store::read_ciphertext(fleet, rule)? != before {
        return Err(Error::ChangedDuringEdit {
            file: shown,
            name: rule.name.clone(),
            command: fleet.command(),
        });
    }
    finish(fleet, held, rule, old.as_ref().map(|o| o.as_slice()), &new, false)
}

/// Sets secret `name` to `content` (read from stdin by the caller).
///
/// Empty content is refused unless `allow_empty`: an empty stdin is far more often a
/// mistake (a cron job, `ssh` without `-t`) than a wish. When the secret exists and can
/// be decrypted, unchanged content leaves it untouched.
pub fn replace_with(
    fleet: &Fleet,
    held: &FleetLock,
    name: &str,
    ids: impl FnOnce() -> Result<Identities>,
    content: &[u8],
    allow_empty: bool,
) -> Result<Outcome> {
    let rule = fleet.rule(name)?;
    if content.is_empty() && !allow_empty {
        return Err(Error::EmptyInput {
            file: fleet.secret_shown(rule),
        });
    }
    let (old, unread) = match store::read_ciphertext(fleet, rule)? {
        None => (None, false),
        Some(_) => match ids().and_then(|ids| store::open(fleet, &rule.name)?.decrypt(&ids)) {
            Ok(old) => (Some(old), false),
            // Cannot read the old content: it is being replaced anyway, and the caller says so.
            Err(Error::NoIdentity | Error::NoMatchingIdentity { .. }) => (None, true),
            Err(e) => return Err(e),
        },
    };
    let outcome = finish(
        fleet,
        held,
        rule,
        old.as_ref().map(|o| o.as_slice()),
        content,
        allow_empty,
    )?;
    Ok(match outcome {
        Outcome::Written(n) if unread => Outcome::Overwritten(n),
        other => other,
    })
}

/// Writes `new` unless it is `old`. Empty content creates no new secret unless
/// `create_empty`.
fn finish(
    fleet: &Fleet,
    held: &FleetLock,
    rule: &SecretRule,
    old: Option<&[u8]>,
    new: &[u8],
    create_empty: bool,
) -> Result<Outcome> {
    match old {
        Some(old) if old == new => Ok(Outcome::Unchanged),
        None if new.is_empty() && !create_empty && !fleet.secret_path(rule).exists() => {
            Ok(Outcome::NothingToCreate)
        }
        _ => {
            let entry = store::write(fleet, held, rule, new)?;
            let keys = entry.recipients.len();
            store::record(fleet, held, [(rule.name.clone(), entry)], false)?;
            Ok(Outcome::Written(keys))
        }
    }
}

/// The base directory for the scratch dir: `$XDG_RUNTIME_DIR`, else `/dev/shm`; refused
/// unless it is RAM-backed or the user accepted the risk.
fn ram_dir(policy: &TempPolicy) -> Result<PathBuf> {
    const FALLBACK: &str = "/dev/shm";
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|x| !x.is_empty())
        .map(PathBuf::from);
    // Why XDG_RUNTIME_DIR cannot be used, when it cannot be at all.
    let unusable = match &runtime {
        None => Some("XDG_RUNTIME_DIR is not set".to_owned()),
        Some(d) if !d.is_dir() => Some(format!(
            "XDG_RUNTIME_DIR is {}, which is not a directory",
            d.display()
        )),
        Some(_) => None,
    };
    let dir = match (&runtime, &unusable) {
        (Some(d), None) => d.clone(),
        _ => PathBuf::from(FALLBACK),
    };
    if is_ram_fs(&dir) || (policy.unsafe_tmp && dir.is_dir()) {
        return Ok(dir);
    }
    if policy.unsafe_tmp {
        return Ok(std::env::temp_dir());
    }
    Err(match unusable {
        Some(why) => Error::NoRuntimeDir {
            why,
            fallback: FALLBACK.to_owned(),
        },
        None => Error::UnsafeTmp {
            dir: dir.display().to_string(),
        },
    })
}

/// Runs the editor on `file` (see [`crate::editor`]).
fn run_editor(file: &Path, shown: &str) -> Result<()> {
    let editor = ["VISUAL", "EDITOR"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "vi".to_owned());
    let editor_error = |status: String| Error::Editor {
        editor: editor.clone(),
        status,
        file: shown.to_owned(),
    };
    match editor::run(&editor, file) {
        Err(e) => Err(editor_error(format!("could not start ({e})"))),
        Ok(Ended::Signalled(signal)) => Err(Error::Signalled {
            signal,
            file: shown.to_owned(),
        }),
        Ok(Ended::Exited(s)) if s.success() => Ok(()),
        Ok(Ended::Exited(s)) => {
            use std::os::unix::process::ExitStatusExt;
            if s.signal() == Some(SIGINT) || s.code() == Some(130) {
                return Err(Error::Interrupted {
                    file: shown.to_owned(),
                });
            }
            Err(editor_error(match (s.code(), s.signal()) {
                (Some(c), _) => format!("exited with status {c}"),
                (None, Some(sig)) => format!("was killed by signal {sig}"),
                _ => "failed".to_owned(),
            }))
        }
    }
}

/// Reads new content from a reader (stdin), into wiped-on-drop memory.
pub fn read_content(reader: impl std::io::Read) -> std::io::Result<Zeroizing<Vec<u8>>> {
    crate::plaintext::read_all(reader, 4096)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::TempFleet;

    #[test]
    fn an_edit_writes_only_what_changed_and_creates_nothing_empty() {
        let t = TempFleet::new(
            &["web1"],
            "admins = [\"alice\"]\n[secrets.db]\nrecipients = [\"web1\"]\n",
        );
        let fleet = t.load();
        let held = t.lock();
        let rule = fleet.rule("db").unwrap();
        let file = || std::fs::read(fleet.secret_path(rule)).ok();
        let edit = |content: &[u8], allow_empty: bool| {
            replace_with(&fleet, &held, "db", || t.ids(), content, allow_empty)
        };
        // Empty input on stdin is refused unless asked for; an editor saving nothing for a
        // new secret creates nothing.
        assert!(matches!(edit(b"", false), Err(Error::EmptyInput { .. })));
        assert_eq!(
            finish(&fleet, &held, rule, None, b"", false).unwrap(),
            Outcome::NothingToCreate
        );
        assert_eq!(file(), None);
        // To alice and web1.
        assert_eq!(edit(b"v1", false).unwrap(), Outcome::Written(2));
        let before = file().unwrap();
        assert_eq!(edit(b"v1", false).unwrap(), Outcome::Unchanged);
        assert_eq!(file().unwrap(), before, "an unchanged edit leaves the file alone");
        // Emptying an existing secret in the editor is a change.
        assert_eq!(
            finish(&fleet, &held, rule, Some(b"v1"), b"", false).unwrap(),
            Outcome::Written(2)
        );
        assert_ne!(file().unwrap(), before);
        assert!(matches!(
            replace_with(&fleet, &held, "nope", || t.ids(), b"x", false),
            Err(Error::UnknownSecret { .. })
        ));
    }

    #[test]
    fn read_content_takes_everything() {
        let content = read_content(&b"line 1\nline 2\n"[..]).unwrap();
        assert_eq!(&content[..], b"line 1\nline 2\n");
    }
}
