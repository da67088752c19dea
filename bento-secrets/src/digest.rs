//! Hex SHA-256, as `recipients.lock` and a bundle's manifest name contents (the admin
//! writes them, hosts and activation check them).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::names::{checked_string, NameError};

checked_string!(
    /// A SHA-256 as bento writes it: 64 lowercase hex digits.
    Sha256,
    |s| {
        let ok = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then_some(()).ok_or_else(|| NameError::Sha256(s.escape_default().to_string()))
    }
);

impl Sha256 {
    /// The SHA-256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Sha256 {
        Sha256::from_digest(&sha2::Sha256::digest(bytes).into())
    }

    /// A finished digest (a download hashed piece by piece).
    pub fn from_digest(digest: &[u8; 32]) -> Sha256 {
        Sha256(hex(digest))
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::of(bytes).into()
}

/// `bytes` in lowercase hex (a digest made piece by piece, as a download is hashed).
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)].into());
        out.push(HEX[usize::from(b & 0xf)].into());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn hashes_as_sha256sum_does() {
        assert_eq!(
            super::sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
