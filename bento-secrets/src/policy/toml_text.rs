//! Positions and keys in TOML text: the line and column of a byte offset, a name
//! written as a key.

/// `name` as a TOML key: bare when it can be, quoted otherwise.
pub fn toml_key(name: &str) -> String {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b))
    {
        name.to_owned()
    } else {
        // As a key, never a multi-line string (which the value encoder may choose).
        toml_edit::Key::new(name).display_repr().into_owned()
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}
