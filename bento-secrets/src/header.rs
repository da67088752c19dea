//! Reading an age file's header without any key: the recipient stanzas, which is what
//! `bento secret verify` checks in CI.
//!
//! An age v1 header is `age-encryption.org/v1`, then stanzas (`-> TYPE ARGS…` followed by
//! base64 body lines, the last one shorter than 64 columns), then `--- MAC`. Armored files
//! are unwrapped first.

use std::io::Read;

use age::armor::ArmoredReader;

/// One recipient stanza of a header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StanzaInfo {
    /// The stanza type: `X25519`, `ssh-ed25519`, `ssh-rsa`, a plugin's, or grease.
    pub tag: String,
    /// Its arguments (for ssh stanzas, the first is the key tag).
    pub args: Vec<String>,
}

/// The largest header read; real headers are a few hundred bytes per recipient.
const MAX_HEADER: u64 = 1 << 20;

/// Parses the recipient stanzas of an age file (binary or armored).
pub fn stanzas(file: &[u8]) -> Result<Vec<StanzaInfo>, String> {
    if file.is_empty() {
        return Err("the file is empty (0 bytes), not an age file".into());
    }
    let mut head = Vec::new();
    ArmoredReader::new(file)
        .take(MAX_HEADER)
        .read_to_end(&mut head)
        .or_else(|e| {
            if head.is_empty() {
                Err(e.to_string())
            } else {
                Ok(0)
            }
        })?;
    let end = head
        .windows(4)
        .position(|w| w == b"\n---")
        .ok_or("no end of header (`---` line): the file is truncated or not an age file")?;
    let text = std::str::from_utf8(&head[..end]).map_err(|_| "header is not text")?;
    let mut lines = text.split('\n');
    if lines.next() != Some("age-encryption.org/v1") {
        return Err("not an age v1 file (first line is not `age-encryption.org/v1`)".into());
    }
    let mut out = Vec::new();
    let mut in_body = false;
    for line in lines {
        if let Some(rest) = line.strip_prefix("-> ") {
            if in_body {
                return Err("stanza body ends without a short final line".into());
            }
            let mut words = rest.split(' ');
            let tag = words
                .next()
                .filter(|t| !t.is_empty())
                .ok_or("stanza without a type")?;
            out.push(StanzaInfo {
                tag: tag.to_owned(),
                args: words.map(str::to_owned).collect(),
            });
            in_body = true;
        } else if in_body {
            // Body lines are full 64-column lines until one shorter line ends the stanza.
            if line.len() > 64 {
                return Err("stanza body line longer than 64 columns".into());
            }
            in_body = line.len() == 64;
        } else {
            return Err(format!(
                "unexpected header line `{}`",
                line.chars().take(20).collect::<String>()
            ));
        }
    }
    if in_body {
        return Err("last stanza body ends without a short final line".into());
    }
    if out.is_empty() {
        return Err("header has no recipient stanzas".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::RecipientKey;

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
    fn rejects_garbage_and_truncation() {
        assert!(stanzas(b"").is_err());
        assert!(stanzas(b"hello\n--- x\n").is_err());
        assert!(stanzas(b"age-encryption.org/v1\n-> X25519 abc\n").is_err());
    }
}
