//! The names in a host's directory on the server (see [`crate::layout`]), and the most a
//! reader (the agent, status) takes of its unsigned files: whoever writes the server
//! directory chooses their size.

/// A host's pointer to its current generation.
pub const CURRENT_FILE: &str = "current";
/// The one link a host directory may hold: `current` pointing at this (relative) path,
/// where the publishing account keeps the pointer.
pub const CURRENT_LINK: &str = "generations/current";
/// The directory of a host's generations.
pub const GENERATIONS_DIR: &str = "generations";
/// The directory a host writes its reports into.
pub const LOGS_DIR: &str = "logs";

/// The most `current` may hold: a generation number and a newline need a few bytes.
pub const CURRENT_LIMIT: u64 = 4 * 1024;
/// The most `manifest.json` may hold (a manifest of thousands of files is well below).
pub const MANIFEST_LIMIT: u64 = 4 * 1024 * 1024;
/// The most `manifest.sig` may hold (an SSHSIG is under 2 KiB, even with RSA-4096).
pub const SIGNATURE_LIMIT: u64 = 64 * 1024;

/// The generation number a `current` file holds (surrounding whitespace allowed).
pub fn parse_generation(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}
