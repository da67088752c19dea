//! Age header vectors: each file in `tests/vectors/` is an age file (or something that is
//! not one) with the outcome the format parser must give it.
//!
//! A vector is `key: value` lines, a blank line, then the file's bytes exactly as bento
//! reads them. The keys:
//! - `expect`: `ok`, or the [`FormatError`] variant the file is refused with (`Stanza(n)`
//!   with the stanza's number; the others by name alone);
//! - `expect-header-only`: what [`format::stanzas`] gives instead, where it differs (it
//!   reads no further than the header);
//! - `stanzas` (with `ok`, and only then): the stanzas' types in file order, comma-separated;
//! - `comment`: what the vector is about.
//!
//! Each vector goes through both ways bento reads an age file: [`format::stanzas`] (what
//! `secret verify` reads, the header only) and [`format::dearmor`] then [`Header::parse`]
//! (what `extend` takes apart). Both must give the expected outcome.

use std::path::{Path, PathBuf};

use bento_secrets::format::{self, FormatError, Header};

/// A vector file, read.
struct Vector {
    expect: String,
    expect_header_only: Option<String>,
    stanzas: Option<String>,
    bytes: Vec<u8>,
}

impl Vector {
    fn read(path: &Path) -> Vector {
        let file = std::fs::read(path).unwrap();
        let split = file
            .windows(2)
            .position(|w| w == b"\n\n")
            .unwrap_or_else(|| panic!("{}: no blank line after the metadata", path.display()));
        let meta = std::str::from_utf8(&file[..split]).unwrap();
        let (mut expect, mut expect_header_only, mut stanzas) = (None, None, None);
        for line in meta.lines() {
            let (key, value) = line
                .split_once(": ")
                .unwrap_or_else(|| panic!("{}: `{line}` is not `key: value`", path.display()));
            match key {
                "expect" => expect = Some(value.to_owned()),
                "expect-header-only" => expect_header_only = Some(value.to_owned()),
                "stanzas" => stanzas = Some(value.to_owned()),
                "comment" => {}
                _ => panic!("{}: unknown key `{key}`", path.display()),
            }
        }
        Vector {
            expect: expect.unwrap_or_else(|| panic!("{}: no `expect:`", path.display())),
            expect_header_only,
            stanzas,
            bytes: file[split + 2..].to_vec(),
        }
    }
}

/// The error's variant as a vector names it.
fn variant(error: &FormatError) -> String {
    match error {
        FormatError::Empty => "Empty".into(),
        FormatError::Armor(_) => "Armor".into(),
        FormatError::NotAge => "NotAge".into(),
        FormatError::Truncated => "Truncated".into(),
        FormatError::Stanza(n) => format!("Stanza({n})"),
        FormatError::Line(_) => "Line".into(),
        FormatError::NoStanzas => "NoStanzas".into(),
        FormatError::Mac => "Mac".into(),
    }
}

/// What the parser makes of `bytes`, read one way and the other: `ok` with the stanzas'
/// types, or the error's variant.
fn outcomes(bytes: &[u8]) -> [(&'static str, Result<String, String>); 2] {
    let tags = |tags: Vec<String>| tags.join(", ");
    let by_stanzas = format::stanzas(bytes)
        .map(|infos| tags(infos.into_iter().map(|s| s.tag).collect()))
        .map_err(|e| variant(&e));
    let by_header = format::dearmor(bytes)
        .and_then(|binary| {
            Header::parse(&binary).map(|h| tags(h.stanzas.into_iter().map(|s| s.tag).collect()))
        })
        .map_err(|e| variant(&e));
    [("stanzas", by_stanzas), ("dearmor + Header::parse", by_header)]
}

/// The vector files, sorted.
fn vector_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    files
}

#[test]
fn every_vector_gives_its_expected_outcome() {
    let files = vector_files();
    assert!(files.len() >= 20, "only {} vectors", files.len());
    let mut wrong = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy();
        let vector = Vector::read(path);
        let want = |expect: &str| match expect {
            "ok" => Ok(vector
                .stanzas
                .clone()
                .unwrap_or_else(|| panic!("{name}: `expect: ok` without `stanzas:`"))),
            error => Err(error.to_owned()),
        };
        let header_only = vector.expect_header_only.as_deref().unwrap_or(&vector.expect);
        assert!(
            vector.stanzas.is_none() || vector.expect == "ok" || header_only == "ok",
            "{name}: `stanzas:` without `ok`"
        );
        let [(stanzas, by_stanzas), (whole, by_header)] = outcomes(&vector.bytes);
        for (how, got, want) in [
            (stanzas, by_stanzas, want(header_only)),
            (whole, by_header, want(&vector.expect)),
        ] {
            if got != want {
                wrong.push(format!("{name} ({how}): expected {want:?}, got {got:?}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// A header longer than the 1 MiB `stanzas` reads is cut there, so it is truncated, while
/// the whole file still parses (too large for a vector file, so made here).
#[test]
fn a_header_past_the_read_limit_is_truncated_for_stanzas_only() {
    let mut file = b"age-encryption.org/v1\n".to_vec();
    let body = format!("{}\n", "A".repeat(64)).repeat(100);
    let mut n = 0;
    while file.len() <= 1 << 20 {
        file.extend_from_slice(format!("-> grease-{n}\n{body}\n").as_bytes());
        n += 1;
    }
    file.extend_from_slice(b"--- ");
    file.extend_from_slice(&[b'A'; 43]);
    file.extend_from_slice(b"\npayload");
    assert_eq!(format::stanzas(&file), Err(FormatError::Truncated));
    let binary = format::dearmor(&file).unwrap();
    let header = Header::parse(&binary).unwrap();
    assert_eq!(header.stanzas.len(), n);
    assert_eq!(header.payload, b"payload");
}
