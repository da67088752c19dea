//! "Did you mean …?": the closest known name to a mistyped host, admin, group or secret
//! name. Every lookup of those names (command-line arguments and the references in
//! `secrets.toml`) goes through [`hint`], so a typo gets the same help everywhere.

/// The edit distance between `a` and `b`: insertions, deletions, substitutions and swaps of
/// two neighbours each count one (Damerau–Levenshtein, optimal string alignment), ignoring
/// case.
pub fn distance(a: &str, b: &str) -> usize {
    strsim::osa_distance(&a.to_lowercase(), &b.to_lowercase())
}

/// How many edits still look like a typo of a name of `len` characters: one for short
/// names, about a third of the length for longer ones, never more than three.
fn threshold(len: usize) -> usize {
    (len / 3).clamp(1, 3)
}

/// `name` as it sounds more than as it is spelled: lower case, `ph` as `f`, doubled letters
/// once (`alfa` and `alpha`, `gatway` and `gateway`'s typos meet here).
fn spoken(name: &str) -> String {
    let lower = name.to_lowercase().replace("ph", "f");
    let mut out = String::with_capacity(lower.len());
    for c in lower.chars() {
        if !out.ends_with(c) || !c.is_alphabetic() {
            out.push(c);
        }
    }
    out
}

/// How far apart two names are as a typo: as written, or as they sound.
fn typo_distance(a: &str, b: &str) -> usize {
    distance(a, b).min(distance(&spoken(a), &spoken(b)))
}

/// The candidate closest to `name`, when it is close enough to be what was meant (ties go
/// to the first candidate). `name` itself is never suggested.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = threshold(name.chars().count());
    candidates
        .into_iter()
        .filter(|c| *c != name)
        .map(|c| (typo_distance(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// ` (did you mean NAME?)` for the closest candidate, or nothing: to append to an
/// "unknown …" message.
pub fn hint<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(name, candidates)
        .map(|c| format!(" (did you mean {c}?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(distance("db-password", "db-password"), 0);
        assert_eq!(distance("db-pasword", "db-password"), 1);
        assert_eq!(distance("db-passwrod", "db-password"), 1);
        assert_eq!(distance("Web1", "web1"), 0);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn suggests_only_close_names() {
        let names = ["db-password", "web-only", "tls"];
        assert_eq!(closest("db-pasword", names), Some("db-password"));
        assert_eq!(closest("tsl", names), Some("tls"));
        assert_eq!(closest("nginx", names), None);
        // Spelled as it sounds: f for ph, a letter doubled or not.
        assert_eq!(closest("alfa", ["alpha", "bravo"]), Some("alpha"));
        assert_eq!(closest("bravvo", ["alpha", "bravo"]), Some("bravo"));
        assert_eq!(closest("web11", ["web1", "db1"]), Some("web1"));
        assert_eq!(closest("alfa", ["gamma", "delta"]), None);
        assert_eq!(closest("web1", ["web2", "web1"]), Some("web2"));
        assert_eq!(hint("x", ["y"]), " (did you mean y?)");
        assert_eq!(hint("abc", ["xyz"]), "");
        assert_eq!(hint("web9", Vec::<&str>::new()), "");
    }
}
