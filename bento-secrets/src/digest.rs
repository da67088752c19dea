//! Hex SHA-256, as `recipients.lock` and a bundle's manifest name contents (the admin
//! writes them, hosts and activation check them).

use sha2::{Digest, Sha256};

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
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
