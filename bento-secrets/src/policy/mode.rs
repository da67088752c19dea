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

/// A mode parsed from its octal text (`"0440"`, `"640"`), shown as that text: a spec's
/// mode, checked once, then used as a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode {
    bits: u32,
    digits: u8,
}

impl Mode {
    /// Parses the text as [`parse_mode`] does.
    pub fn parse(text: &str) -> Option<Mode> {
        let bits = parse_mode(text)?;
        Some(Mode {
            bits,
            digits: text.len() as u8,
        })
    }

    /// Every bit, the special ones included.
    pub fn bits(self) -> u32 {
        self.bits
    }

    /// The permission bits only: what a file gets (special bits never reach one).
    pub fn permissions(self) -> u32 {
        self.bits & 0o777
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:0width$o}", self.bits, width = usize::from(self.digits))
    }
}
