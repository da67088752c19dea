//! A Nix binary cache's `.narinfo` file, as a closure host reads its own `cache/` (the
//! agent) and as `bento deploy` walks a system's closure in `<root>/cache` to give each
//! closure host its share. Whoever writes the server chose the text: it is bounded, every
//! path in it must be a plain store path and the NAR's name one plain file name of
//! `nar/`. Nothing here is trusted for what it claims: Nix checks the signature and the
//! NAR's hash when the agent imports it; the sizes only bound what is downloaded.

use crate::store_path::{StorePath, STORE_DIR};

/// The most a `.narinfo` may hold (real ones are a few hundred bytes, more with many
/// references).
pub const NARINFO_LIMIT: u64 = 256 * 1024;
/// The cache's description file, at its top.
pub const CACHE_INFO: &str = "nix-cache-info";
/// Its content: a cache of `/nix/store` paths.
pub const CACHE_INFO_TEXT: &str = "StoreDir: /nix/store\n";
/// The directory of the NAR files in a cache.
pub const NAR_DIR: &str = "nar";
/// The most references one path may have.
const MAX_REFERENCES: usize = 100_000;

/// What a `.narinfo` says of one store path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NarInfo {
    /// The path it describes.
    pub store_path: StorePath,
    /// Its NAR file's name in `nar/`.
    pub nar_file: String,
    /// The NAR file's size, as the cache says.
    pub file_size: u64,
    /// The unpacked NAR's size (covered by the signature).
    pub nar_size: u64,
    /// The paths it refers to (itself possibly among them).
    pub references: Vec<StorePath>,
}

/// Why a `.narinfo` was refused; one line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NarInfoError {
    /// Not text.
    #[error("not UTF-8 text")]
    NotText,
    /// A field it must have is missing.
    #[error("no `{0}:` line")]
    Missing(&'static str),
    /// A line that is not `Key: value`.
    #[error("line {0} is not `Key: value`")]
    Line(usize),
    /// A store path that is not a plain one under /nix/store.
    #[error("`{field}` names `{path}`, which is not a store path")]
    Path {
        /// The field.
        field: &'static str,
        /// The text, escaped.
        path: String,
    },
    /// A NAR URL that is not `nar/<name>`.
    #[error("URL `{0}` is not nar/<file name>")]
    Url(String),
    /// A size that is not a number.
    #[error("`{0}` is not a number of bytes")]
    Size(&'static str),
    /// More references than any real path has.
    #[error("more than {MAX_REFERENCES} references")]
    TooManyReferences,
}

impl NarInfo {
    /// Reads a `.narinfo` file's bytes.
    pub fn parse(bytes: &[u8]) -> Result<NarInfo, NarInfoError> {
        let text = std::str::from_utf8(bytes).map_err(|_| NarInfoError::NotText)?;
        let (mut store_path, mut url, mut file_size, mut nar_size, mut references) =
            (None, None, None, None, None);
        for (i, line) in text.lines().enumerate() {
            let (key, value) = line.split_once(": ").ok_or(NarInfoError::Line(i + 1))?;
            match key {
                "StorePath" => store_path = Some(value),
                "URL" => url = Some(value),
                "FileSize" => file_size = Some(value),
                "NarSize" => nar_size = Some(value),
                "References" => references = Some(value),
                _ => {}
            }
        }
        let path = |field: &'static str, text: &str| {
            StorePath::parse(text).map_err(|_| NarInfoError::Path {
                field,
                path: text.escape_default().to_string(),
            })
        };
        let size = |field: &'static str, text: Option<&str>| {
            text.ok_or(NarInfoError::Missing(field))?
                .parse::<u64>()
                .map_err(|_| NarInfoError::Size(field))
        };
        let store_path = path("StorePath", store_path.ok_or(NarInfoError::Missing("StorePath"))?)?;
        let url = url.ok_or(NarInfoError::Missing("URL"))?;
        let nar_file = url
            .strip_prefix(&format!("{NAR_DIR}/"))
            .filter(|name| is_file_name(name))
            .ok_or_else(|| NarInfoError::Url(url.escape_default().to_string()))?;
        let words: Vec<&str> = references.unwrap_or_default().split_whitespace().collect();
        if words.len() > MAX_REFERENCES {
            return Err(NarInfoError::TooManyReferences);
        }
        let references = words
            .into_iter()
            .map(|base| path("References", &format!("{STORE_DIR}{base}")))
            .collect::<Result<_, _>>()?;
        Ok(NarInfo {
            store_path,
            nar_file: nar_file.to_owned(),
            file_size: size("FileSize", file_size)?,
            nar_size: size("NarSize", nar_size)?,
            references,
        })
    }
}

/// The name of `path`'s `.narinfo` in a cache: `<hash>.narinfo`.
pub fn narinfo_name(path: &StorePath) -> String {
    format!("{}.narinfo", path.hash_part())
}

/// One plain file name: letters, digits and `._+-`, not starting with `.`.
fn is_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0c7a0n8gdq7q2rcwmpv8yyhpjwxvlmvs-system";
    const B: &str = "1c7a0n8gdq7q2rcwmpv8yyhpjwxvlmvs-lib";

    fn text(url: &str, refs: &str) -> String {
        format!(
            "StorePath: /nix/store/{A}\nURL: {url}\nCompression: xz\nFileHash: sha256:x\nFileSize: 120\n\
             NarHash: sha256:y\nNarSize: 456\nReferences: {refs}\nSig: k:abc\n"
        )
    }

    #[test]
    fn a_narinfo_gives_its_path_nar_sizes_and_references() {
        let info = NarInfo::parse(text("nar/abc.nar.xz", &format!("{A} {B}")).as_bytes()).unwrap();
        assert_eq!(info.store_path.as_str(), format!("/nix/store/{A}"));
        assert_eq!(
            (info.nar_file.as_str(), info.file_size, info.nar_size),
            ("abc.nar.xz", 120, 456)
        );
        assert_eq!(info.references.len(), 2);
        assert_eq!(
            narinfo_name(&info.store_path),
            "0c7a0n8gdq7q2rcwmpv8yyhpjwxvlmvs.narinfo"
        );
        let none = NarInfo::parse(text("nar/abc.nar", "").as_bytes()).unwrap();
        assert!(none.references.is_empty());
    }

    #[test]
    fn what_the_server_could_plant_is_refused() {
        for url in [
            "nar/../x",
            "../nar/x",
            "nar/.x",
            "nar/a/b",
            "http://x/nar/y",
            "nar/",
        ] {
            let e = NarInfo::parse(text(url, "").as_bytes()).unwrap_err();
            assert!(matches!(e, NarInfoError::Url(_)), "{url}: {e}");
        }
        for refs in ["../../etc", "x", "0c7a0n8gdq7q2rcwmpv8yyhpjwxvlmvs-a/../b"] {
            let e = NarInfo::parse(text("nar/a", refs).as_bytes()).unwrap_err();
            assert!(
                matches!(
                    e,
                    NarInfoError::Path {
                        field: "References",
                        ..
                    }
                ),
                "{refs}: {e}"
            );
        }
        let outside = text("nar/a", "").replace("/nix/store/", "/tmp/store/");
        assert!(matches!(
            NarInfo::parse(outside.as_bytes()),
            Err(NarInfoError::Path {
                field: "StorePath",
                ..
            })
        ));
        let huge = text("nar/a", "").replace("FileSize: 120", "FileSize: -1");
        assert_eq!(
            NarInfo::parse(huge.as_bytes()),
            Err(NarInfoError::Size("FileSize"))
        );
        assert_eq!(NarInfo::parse(b"junk"), Err(NarInfoError::Line(1)));
        assert_eq!(NarInfo::parse(b"\xff"), Err(NarInfoError::NotText));
    }
}
