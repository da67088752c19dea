//! The kinds of generated secrets: the `generate = "<kind>"` value of a secret's rule,
//! parsed and shown.

use std::fmt;

/// The largest `N` accepted in `password:N`, `hex:N` and `base64:N`.
pub const MAX_LEN: usize = 4096;

/// What the accepted kinds look like, for error messages.
pub const KINDS: &str = "password:N, hex:N, base64:N (N from 1 to 4096), ssh-ed25519, wireguard, age";

/// Why a `generate` value is not a kind.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KindError {
    /// `password:N`, `hex:N` or `base64:N` with `N` not a number in range.
    #[error("`{}`: N must be a number from 1 to {MAX_LEN}", .0.escape_default())]
    Length(String),
    /// No kind of that name.
    #[error("`{}` is not a kind", .0.escape_default())]
    Unknown(String),
}

/// A kind of generated secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `N` characters of `A-Z a-z 0-9`.
    Password(usize),
    /// `N` random bytes, as `2N` lowercase hex digits.
    Hex(usize),
    /// `N` random bytes, in standard padded base64.
    Base64(usize),
    /// An OpenSSH ed25519 private key; the public line goes to `.pub`.
    SshEd25519,
    /// A WireGuard (Curve25519) private key in base64; the public key goes to `.pub`.
    Wireguard,
    /// An age X25519 identity (`AGE-SECRET-KEY-1…`); the `age1…` recipient goes to `.pub`.
    Age,
}

impl Kind {
    /// Parses a `generate` value; the error says what is wrong (the caller adds where).
    pub fn parse(text: &str) -> Result<Kind, KindError> {
        let sized = |n: &str, make: fn(usize) -> Kind| match n.parse::<usize>() {
            Ok(v) if (1..=MAX_LEN).contains(&v) && n.bytes().all(|b| b.is_ascii_digit()) => Ok(make(v)),
            _ => Err(KindError::Length(text.to_owned())),
        };
        match text.split_once(':') {
            Some(("password", n)) => sized(n, Kind::Password),
            Some(("hex", n)) => sized(n, Kind::Hex),
            Some(("base64", n)) => sized(n, Kind::Base64),
            None if text == "ssh-ed25519" => Ok(Kind::SshEd25519),
            None if text == "wireguard" => Ok(Kind::Wireguard),
            None if text == "age" => Ok(Kind::Age),
            _ => Err(KindError::Unknown(text.to_owned())),
        }
    }

    /// Whether this kind has a public part (written to `secrets/<name>.pub`).
    pub fn has_public(self) -> bool {
        matches!(self, Kind::SshEd25519 | Kind::Wireguard | Kind::Age)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Password(n) => write!(f, "password:{n}"),
            Kind::Hex(n) => write!(f, "hex:{n}"),
            Kind::Base64(n) => write!(f, "base64:{n}"),
            Kind::SshEd25519 => f.write_str("ssh-ed25519"),
            Kind::Wireguard => f.write_str("wireguard"),
            Kind::Age => f.write_str("age"),
        }
    }
}
