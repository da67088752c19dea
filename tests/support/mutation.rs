//! What the property tests of both libraries share: the case count, random edits of valid
//! documents, and the one-line-error check. Included by path from each crate's
//! `tests/props.rs` (a file in a subdirectory of `tests/` is no test target of its own).

use proptest::prelude::*;

/// Cases per property: `PROPTEST_CASES` when set (bench/fuzz.sh), else `ci`.
pub fn cases(ci: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ci);
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(n)
    }
}

/// One random edit: at a position (a fraction of the length), delete some bytes, then
/// insert a snippet.
pub type Edit = (prop::sample::Index, usize, String);

/// One to five edits, inserting snippets drawn from `snippet`.
pub fn edits(snippet: impl Strategy<Value = String>) -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec((any::<prop::sample::Index>(), 0usize..8, snippet), 1..6)
}

/// `seed` with `edits` applied (on bytes: the result need not be UTF-8).
pub fn mutate(seed: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut doc = seed.to_vec();
    for (at, delete, insert) in edits {
        let at = at.index(doc.len() + 1);
        let end = (at + delete).min(doc.len());
        doc.splice(at..end, insert.bytes());
    }
    doc
}

/// An error renders as one non-empty line.
pub fn one_line(e: &impl std::fmt::Display) -> Result<(), TestCaseError> {
    let text = e.to_string();
    prop_assert!(!text.contains('\n'), "a multi-line error: {text:?}");
    prop_assert!(!text.is_empty());
    Ok(())
}
