//! Who owns an activated secret: user and group names resolved to ids on the host.

use nix::unistd::{Group, Uid, User};

/// A resolved owner: uid and gid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The user id.
    pub uid: u32,
    /// The group id.
    pub gid: u32,
}

/// Why an owner or group does not resolve on this host.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    /// No such user.
    #[error("unknown user `{0}` on this host (create it, or fix `owner` in the rules)")]
    UnknownUser(String),
    /// No such group.
    #[error("unknown group `{0}` on this host (create it, or fix `group` in the rules)")]
    UnknownGroup(String),
    /// The user database could not be read.
    #[error("looking up user `{name}`: {source}")]
    UserLookup {
        /// The user name.
        name: String,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// The group database could not be read.
    #[error("looking up group `{name}`: {source}")]
    GroupLookup {
        /// The group name.
        name: String,
        /// Why.
        #[source]
        source: nix::Error,
    },
}

/// Resolves `owner` (a user name or numeric id) and `group` (a group name or numeric id;
/// `None` means the owner's primary group, else root's group 0).
pub fn resolve(owner: &str, group: Option<&str>) -> Result<Owner, AccountError> {
    let (uid, primary_gid) = lookup_user(owner)?;
    let gid = match group {
        Some(g) => lookup_group(g)?,
        None => primary_gid.unwrap_or(0),
    };
    Ok(Owner { uid, gid })
}

/// A user's uid and, when the user exists, its primary gid. A numeric id is accepted
/// even without a passwd entry.
fn lookup_user(name: &str) -> Result<(u32, Option<u32>), AccountError> {
    if let Ok(id) = name.parse::<u32>() {
        let primary = User::from_uid(Uid::from_raw(id))
            .ok()
            .flatten()
            .map(|u| u.gid.as_raw());
        return Ok((id, primary));
    }
    match User::from_name(name) {
        Ok(Some(u)) => Ok((u.uid.as_raw(), Some(u.gid.as_raw()))),
        Ok(None) => Err(AccountError::UnknownUser(name.to_owned())),
        Err(source) => Err(AccountError::UserLookup {
            name: name.to_owned(),
            source,
        }),
    }
}

fn lookup_group(name: &str) -> Result<u32, AccountError> {
    if let Ok(id) = name.parse::<u32>() {
        return Ok(id);
    }
    match Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(AccountError::UnknownGroup(name.to_owned())),
        Err(source) => Err(AccountError::GroupLookup {
            name: name.to_owned(),
            source,
        }),
    }
}

/// The user `name` (not a numeric id) with its primary group, when it exists.
pub fn user(name: &str) -> Option<Owner> {
    let user = User::from_name(name).ok()??;
    Some(Owner {
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn root_and_unknowns() {
        assert_eq!(
            super::resolve("root", None).unwrap(),
            super::Owner { uid: 0, gid: 0 }
        );
        assert_eq!(
            super::resolve("0", Some("0")).unwrap(),
            super::Owner { uid: 0, gid: 0 }
        );
        let e = super::resolve("no-such-user-here", None).unwrap_err().to_string();
        assert!(e.contains("unknown user `no-such-user-here`"), "{e}");
        let e = super::resolve("root", Some("no-such-group-here"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown group"), "{e}");
        assert_eq!(super::user("root"), Some(super::Owner { uid: 0, gid: 0 }));
        assert_eq!(super::user("no-such-user-here"), None);
    }
}
