//! File modes of activated secrets and templates: the octal text parsed, the bits
//! refused or warned about.

/// The setuid, setgid and sticky bits: never allowed on an activated secret.
pub const SPECIAL_BITS: u32 = 0o7000;

/// The "others may read" bit, warned about.
pub const WORLD_READABLE: u32 = 0o004;

/// Parses a mode string such as `"0400"` or `"640"`.
pub fn parse_mode(s: &str) -> Option<u32> {
    if !(3..=4).contains(&s.len()) || !s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(s, 8).ok()
}
