//! Where things are in a TOML text, by the parser's own spans: the line of a key, of an
//! array's element, of a table's header. A configuration error names the line to fix;
//! searching the text for `key =` would find the same key in another table, a dotted or
//! quoted key not at all, and a value inside a multi-line string as if it were a key.

use toml_edit::{ImDocument, TableLike};

/// A TOML text, parsed to answer where its keys are. Asked about a text that does not
/// parse, or about a key it lacks, it answers `None`.
pub(crate) struct Positions<'a> {
    text: &'a str,
    doc: Option<ImDocument<&'a str>>,
}

impl<'a> Positions<'a> {
    /// Parses `text` for its positions.
    pub(crate) fn new(text: &'a str) -> Self {
        Positions {
            text,
            doc: ImDocument::parse(text).ok(),
        }
    }

    /// The table at `path` (`&[]`: the top level), inline or not.
    fn table(&self, path: &[&str]) -> Option<&dyn TableLike> {
        let mut table: &dyn TableLike = self.doc.as_ref()?.as_table();
        for name in path {
            table = table.get(name)?.as_table_like()?;
        }
        Some(table)
    }

    /// The 1-based line of `key` in the table at `path`.
    pub(crate) fn key(&self, path: &[&str], key: &str) -> Option<usize> {
        let (key, item) = self.table(path)?.get_key_value(key)?;
        // A dotted key's segments carry no span; its value, on the same line, does.
        let span = key.span().or_else(|| item.span())?;
        Some(self.line(span.start))
    }

    /// The line of the `index`th element of the array `key` in the table at `path`.
    pub(crate) fn element(&self, path: &[&str], key: &str, index: usize) -> Option<usize> {
        let array = self.table(path)?.get(key)?.as_array()?;
        let span = array.get(index)?.span()?;
        Some(self.line(span.start))
    }

    /// The line of the header of the table at `path` (`[hosts.web1]`); for an inline or
    /// dotted table, the line of its key.
    pub(crate) fn table_line(&self, path: &[&str]) -> Option<usize> {
        let (name, parent) = path.split_last()?;
        let header = self.table(parent)?.get(name)?.as_table().and_then(|t| t.span());
        match header {
            Some(span) => Some(self.line(span.start)),
            None => self.key(parent, name),
        }
    }

    fn line(&self, offset: usize) -> usize {
        bento_secrets::rules::line_col(self.text, offset).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_in_their_own_table_only() {
        let text = "# address = \"in a comment\"\n[hosts.web1]\naddress = \"10.0.0.1\"\n\n[server]\naddress = \"\"\n";
        let p = Positions::new(text);
        assert_eq!(p.key(&["server"], "address"), Some(6));
        assert_eq!(p.key(&["hosts", "web1"], "address"), Some(3));
        assert_eq!(p.table_line(&["hosts", "web1"]), Some(2));
        assert_eq!(p.key(&["server"], "port"), None);
    }

    #[test]
    fn dotted_quoted_and_inline_keys_have_lines() {
        let text = "server.port = 0\n\"host\" = \"x\"\n\nbuild = { jobs = 0, command = \"\" }\n";
        let p = Positions::new(text);
        assert_eq!(p.key(&["server"], "port"), Some(1));
        assert_eq!(p.key(&[], "host"), Some(2));
        assert_eq!(p.key(&["build"], "command"), Some(4));
        assert_eq!(p.table_line(&["build"]), Some(4));
    }

    #[test]
    fn a_key_inside_a_multi_line_string_is_no_key() {
        let text = "rebuild = \"\"\"\nrun_timeout = 5\n\"\"\"\nrun_timeout = 0\n";
        let p = Positions::new(text);
        assert_eq!(p.key(&[], "run_timeout"), Some(4));
    }

    #[test]
    fn array_elements_have_their_own_lines() {
        let text = "# \"ssh-ed25519 AAAA bad\" was the old key\nkeys = [\n  \"a\",\n  \"ssh-ed25519 AAAA bad\",\n]\n";
        let p = Positions::new(text);
        assert_eq!(p.element(&[], "keys", 1), Some(4));
        assert_eq!(p.element(&[], "keys", 2), None);
    }

    #[test]
    fn an_unparsable_text_has_no_positions() {
        assert_eq!(Positions::new("a = [").key(&[], "a"), None);
    }
}
