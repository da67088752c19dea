//! The age v1 file format, read in one place: `secret verify` reads the recipient stanzas
//! without any key, and `extend` takes a file apart to add recipients to it.
//!
//! An age v1 file is `age-encryption.org/v1`, then stanzas (`-> TYPE ARGS…` followed by
//! canonical base64 body lines, the last one shorter than 64 columns), then `--- MAC`, then
//! the payload. Armored files are unwrapped first. Stanzas are parsed by `age_core`, the
//! parser the age crate itself uses; this module adds the framing and one-line errors.

use std::io::Read;

use age::armor::ArmoredReader;
use age_core::format::{FileKey, Stanza};
use age_core::secrecy::ExposeSecret;
use base64::prelude::{Engine, BASE64_STANDARD_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The first line of every age v1 file.
const VERSION_LINE: &[u8] = b"age-encryption.org/v1\n";
/// What starts a recipient stanza.
const STANZA_TAG: &[u8] = b"-> ";
/// What starts the MAC line; the header MAC covers the header through these bytes.
pub(crate) const MAC_TAG: &[u8] = b"---";
/// age derives the header MAC key from the file key with this HKDF label.
const HEADER_KEY_LABEL: &[u8] = b"header";
/// The largest header read when only the stanzas are wanted; real headers are a few
/// hundred bytes per recipient.
const MAX_HEADER: u64 = 1 << 20;
/// The first line of an armored age file.
const ARMOR_BEGIN: &[u8] = b"-----BEGIN AGE ENCRYPTED FILE-----";
/// How much of an unexpected line an error quotes.
const QUOTED: usize = 20;

/// Why bytes are not an age v1 file; each renders as one line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Nothing at all.
    #[error("the file is empty (0 bytes), not an age file")]
    Empty,
    /// The ASCII armor could not be undone.
    #[error("{0}")]
    Armor(String),
    /// The first line is something else.
    #[error("not an age v1 file (first line is not `age-encryption.org/v1`)")]
    NotAge,
    /// The bytes end before the `---` line does.
    #[error("no end of header (`---` line): the file is truncated or not an age file")]
    Truncated,
    /// A stanza's `-> TYPE ARGS` line or base64 body breaks the format.
    #[error(
        "recipient stanza {0} is malformed: `-> TYPE ARGS` then base64 lines of 64 columns, \
         the last one shorter"
    )]
    Stanza(usize),
    /// A line where a stanza or the `---` line was expected.
    #[error("unexpected header line `{0}`")]
    Line(String),
    /// A header without any recipient.
    #[error("header has no recipient stanzas")]
    NoStanzas,
    /// The `--- MAC` line is not `--- ` and 43 base64 characters (32 bytes).
    #[error("the header MAC line is not `--- ` followed by base64")]
    Mac,
}

/// One recipient stanza of a header, as `secret verify` compares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StanzaInfo {
    /// The stanza type: `X25519`, `ssh-ed25519`, `ssh-rsa`, a plugin's, or grease.
    pub tag: String,
    /// Its arguments (for ssh stanzas, the first is the key tag).
    pub args: Vec<String>,
}

/// A binary (unarmored) age file taken apart.
#[derive(Debug)]
pub struct Header<'a> {
    /// The recipient stanzas, in file order.
    pub stanzas: Vec<Stanza>,
    /// What the header MAC covers: the version line through `---`.
    pub authenticated: &'a [u8],
    /// The header MAC.
    pub mac: Vec<u8>,
    /// The nonce and the encrypted stream (possibly cut short, when only a prefix was read).
    pub payload: &'a [u8],
}

impl<'a> Header<'a> {
    /// Parses the header of a binary age file; whatever follows the MAC line is the payload.
    pub fn parse(binary: &'a [u8]) -> Result<Header<'a>, FormatError> {
        if binary.is_empty() {
            return Err(FormatError::Empty);
        }
        let Some(mut rest) = binary.strip_prefix(VERSION_LINE) else {
            return Err(if VERSION_LINE.starts_with(binary) {
                FormatError::Truncated
            } else {
                FormatError::NotAge
            });
        };
        let mut stanzas = Vec::new();
        while !rest.starts_with(MAC_TAG) {
            if !rest.starts_with(STANZA_TAG) {
                return Err(if STANZA_TAG.starts_with(rest) || MAC_TAG.starts_with(rest) {
                    FormatError::Truncated
                } else {
                    FormatError::Line(quote(rest))
                });
            }
            match age_core::format::read::age_stanza(rest) {
                Ok((next, stanza)) => {
                    stanzas.push(Stanza::from(stanza));
                    rest = next;
                }
                Err(e) if e.is_incomplete() => return Err(FormatError::Truncated),
                Err(_) => return Err(FormatError::Stanza(stanzas.len() + 1)),
            }
        }
        if stanzas.is_empty() {
            return Err(FormatError::NoStanzas);
        }
        let authenticated = &binary[..binary.len() - rest.len() + MAC_TAG.len()];
        let line_end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(FormatError::Truncated)?;
        let mac = rest[..line_end]
            .strip_prefix(b"--- ")
            .and_then(|encoded| BASE64_STANDARD_NO_PAD.decode(encoded).ok())
            // HMAC-SHA-256: 32 bytes, nothing else.
            .filter(|mac| mac.len() == 32)
            .ok_or(FormatError::Mac)?;
        Ok(Header {
            stanzas,
            authenticated,
            mac,
            payload: &rest[line_end + 1..],
        })
    }

    /// The stanzas' types and arguments.
    pub fn stanza_infos(&self) -> Vec<StanzaInfo> {
        self.stanzas
            .iter()
            .map(|s| StanzaInfo {
                tag: s.tag.clone(),
                args: s.args.clone(),
            })
            .collect()
    }
}

/// The first bytes of `rest`'s first line, quotable in a one-line error.
fn quote(rest: &[u8]) -> String {
    let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
    String::from_utf8_lossy(line)
        .chars()
        .take(QUOTED)
        .flat_map(char::escape_debug)
        .collect()
}

/// `file` without its ASCII armor, if it has one; at most `limit` bytes of it. A read error
/// after some bytes were read ends the output there (a header-only reader needs no more).
fn unarmor(file: &[u8], limit: u64, partial_ok: bool) -> Result<Vec<u8>, FormatError> {
    let start = file
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(file.len());
    if !file[start..].starts_with(ARMOR_BEGIN) {
        // Binary (or not age at all: the header parser says why, not the armor reader).
        let end = usize::try_from(limit).unwrap_or(usize::MAX).min(file.len());
        return Ok(file[..end].to_vec());
    }
    let mut out = Vec::new();
    match ArmoredReader::new(file).take(limit).read_to_end(&mut out) {
        Ok(_) => Ok(out),
        Err(_) if partial_ok && !out.is_empty() => Ok(out),
        Err(e) => Err(FormatError::Armor(e.to_string())),
    }
}

/// The whole of an age file (binary or armored) in binary form.
pub fn dearmor(file: &[u8]) -> Result<Vec<u8>, FormatError> {
    if file.is_empty() {
        return Err(FormatError::Empty);
    }
    unarmor(file, u64::MAX, false)
}

/// Parses the recipient stanzas of an age file (binary or armored), reading no further
/// than its header.
pub fn stanzas(file: &[u8]) -> Result<Vec<StanzaInfo>, FormatError> {
    if file.is_empty() {
        return Err(FormatError::Empty);
    }
    let head = unarmor(file, MAX_HEADER, true)?;
    Ok(Header::parse(&head)?.stanza_infos())
}

/// The header MAC keyed by `file_key`, fed `header` (through `---`).
pub(crate) fn header_mac(file_key: &FileKey, header: &[u8]) -> Hmac<Sha256> {
    let key = age_core::primitives::hkdf(&[], HEADER_KEY_LABEL, file_key.expose_secret());
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(header);
    mac
}

/// Appends `stanza` to `header` in the age format.
pub(crate) fn write_stanza(header: &mut Vec<u8>, stanza: &Stanza) -> std::io::Result<()> {
    let args: Vec<&str> = stanza.args.iter().map(String::as_str).collect();
    cookie_factory::gen_simple(
        age_core::format::write::age_stanza(&stanza.tag, &args, &stanza.body),
        header,
    )
    .map(|_| ())
    .map_err(|e| std::io::Error::other(e.to_string()))
}

/// Appends the MAC line (`--- ` and the base64 MAC over `header`, which ends in `---`).
pub(crate) fn write_mac(header: &mut Vec<u8>, file_key: &FileKey) {
    let mac = header_mac(file_key, header).finalize().into_bytes();
    header.push(b' ');
    header.extend_from_slice(BASE64_STANDARD_NO_PAD.encode(mac).as_bytes());
    header.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::RecipientKey;

    fn x25519_file(plain: &[u8], armor: bool) -> Vec<u8> {
        let id = age::x25519::Identity::generate();
        let x = RecipientKey::parse(&id.to_public().to_string()).unwrap();
        crate::crypt::encrypt(plain, &[&x], armor, "t").unwrap()
    }

    #[test]
    fn reads_stanzas_of_bento_files() {
        let id = age::x25519::Identity::generate();
        let x = RecipientKey::parse(&id.to_public().to_string()).unwrap();
        let ssh = RecipientKey::parse(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN",
        )
        .unwrap();
        for armor in [false, true] {
            let file = crate::crypt::encrypt(b"hi", &[&x, &ssh], armor, "t").unwrap();
            let st = stanzas(&file).unwrap();
            let tags: Vec<_> = st.iter().map(|s| s.tag.as_str()).collect();
            assert!(
                tags.contains(&"X25519") && tags.contains(&"ssh-ed25519"),
                "{tags:?}"
            );
            let ssh_stanza = st.iter().find(|s| s.tag == "ssh-ed25519").unwrap();
            assert_eq!(ssh_stanza.args[0], ssh.ssh_tag().unwrap());
        }
    }

    #[test]
    fn header_parts_frame_the_file() {
        let file = x25519_file(b"hi", false);
        let header = Header::parse(&file).unwrap();
        assert!(header.authenticated.starts_with(VERSION_LINE));
        assert!(header.authenticated.ends_with(b"\n---"));
        assert_eq!(header.mac.len(), 32);
        // Nonce (16 bytes) and one chunk of "hi" with its tag (2 + 16).
        assert_eq!(header.payload.len(), 16 + 2 + 16);
        assert_eq!(header.stanzas.iter().filter(|s| s.tag == "X25519").count(), 1);
        // The stanzas written back give the same bytes.
        let mut again = VERSION_LINE.to_vec();
        for s in &header.stanzas {
            write_stanza(&mut again, s).unwrap();
        }
        again.extend_from_slice(MAC_TAG);
        assert_eq!(again, header.authenticated);
    }

    #[test]
    fn each_kind_of_damage_has_its_error() {
        let file = x25519_file(b"hi", false);
        let end = file.windows(4).position(|w| w == b"\n---").unwrap();
        let cases: Vec<(&[u8], FormatError)> = vec![
            (b"", FormatError::Empty),
            (b"hello\n--- x\n", FormatError::NotAge),
            (b"age-encr", FormatError::Truncated),
            (b"age-encryption.org/v1\n-> X25519 abc\n", FormatError::Truncated),
            (b"age-encryption.org/v1\n--- AAAA\n", FormatError::NoStanzas),
            (&file[..end / 2], FormatError::Truncated),
            (&file[..end + 3], FormatError::Truncated),
            (
                b"age-encryption.org/v1\nhello there\n--- x\n",
                FormatError::Line("hello there".into()),
            ),
            (
                b"age-encryption.org/v1\n-> X25519 abc\n!!!!\n--- x\n",
                FormatError::Stanza(1),
            ),
            (
                b"age-encryption.org/v1\n-> X25519 abc\n\n--- !\n",
                FormatError::Mac,
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                Header::parse(bytes).map(|_| ()),
                Err(want),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn a_few_bytes_of_something_else_are_not_an_age_file() {
        assert_eq!(stanzas(b"not age"), Err(FormatError::NotAge));
        assert_eq!(stanzas(b"age"), Err(FormatError::Truncated));
        assert!(matches!(
            stanzas(b"-----BEGIN AGE ENCRYPTED FILE-----\n!!!\n"),
            Err(FormatError::Armor(_))
        ));
    }

    #[test]
    fn a_long_line_is_quoted_short_and_escaped() {
        let err = Header::parse(b"age-encryption.org/v1\n\x1b[31mred and a very long line\n")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "unexpected header line `\\u{1b}[31mred and a very `");
    }

    #[test]
    fn stanzas_reads_only_the_header_of_a_cut_armored_file() {
        let file = x25519_file(&[b'x'; 4096], true);
        let cut = &file[..file.len() - 40];
        let read = stanzas(cut).unwrap();
        assert!(read.iter().any(|s| s.tag == "X25519"), "{read:?}");
        assert!(matches!(dearmor(cut), Err(FormatError::Armor(_))));
        assert!(Header::parse(&dearmor(&file).unwrap()).is_ok());
    }
}
