//! Where each value sits in the configuration text.
//!
//! The validated settings no longer know where a value was written, and
//! serde stops at the first error. A second pass with `toml_edit` (the
//! parser behind `toml`, which keeps spans) finds the line of any value
//! by its path (`filter.dedup_dir`, `rule.2.archive.1`), so every error
//! found while validating names the line of the value at fault and
//! validation goes on to the next one.

use std::ops::Range;
use toml_edit::{ImDocument, Item};

/// The parsed text, for looking up spans.
pub struct Spans {
    doc: Option<ImDocument<String>>,
}

impl Spans {
    /// Parses `text`; text that is not TOML has no spans (its syntax
    /// error is reported by the first pass).
    pub fn new(text: &str) -> Spans {
        Spans {
            doc: ImDocument::parse(text.to_string()).ok(),
        }
    }

    /// The span of the value at `path` (keys and list positions joined by
    /// `.`), or of its nearest written ancestor when it is absent (a
    /// default: the section it would go in); `None` for the top level.
    pub fn find(&self, path: &str) -> Option<Range<usize>> {
        let doc = self.doc.as_ref()?;
        let mut item: &Item = doc.as_item();
        let mut best = None;
        for seg in path.split('.').filter(|s| !s.is_empty()) {
            let next = match seg.parse::<usize>() {
                Ok(i) if item.is_array() || item.is_array_of_tables() => item.get(i),
                _ => item.get(seg),
            };
            let Some(next) = next else { break };
            // A table made implicit by a dotted key (`spool.dir = ...`) has
            // no span of its own; its key does.
            let key_span = item
                .as_table_like()
                .and_then(|t| t.key(seg))
                .and_then(|k| k.span());
            best = next.span().or(key_span).or(best);
            item = next;
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str, path: &str) -> Option<usize> {
        Spans::new(text)
            .find(path)
            .map(|r| text[..r.start].matches('\n').count() + 1)
    }

    #[test]
    fn every_shape_of_toml_has_its_line() {
        let text = "top = 1\n\
                    [filter]\n\
                    listen = \"x\"\n\
                    allowed_clients = [\n  \"a\",\n  \"b\",\n]\n\
                    when = 1979-05-27T07:32:00Z\n\
                    \n\
                    [[rule]]\n\
                    name = \"one\"\n\
                    [[rule]]\n\
                    archive = [\"a\",\n \"b\"]\n\
                    inline = { k = 1, list = [1, 2] }\n\
                    [store]\n\
                    path = \"/s\"\n\
                    spool.dir = \"/d\"\n";
        assert_eq!(line(text, "top"), Some(1));
        assert_eq!(line(text, "filter"), Some(2));
        assert_eq!(line(text, "filter.listen"), Some(3));
        assert_eq!(line(text, "filter.allowed_clients.1"), Some(6));
        assert_eq!(line(text, "filter.when"), Some(8));
        assert_eq!(
            line(text, "filter.dedup_dir"),
            Some(2),
            "absent: the section"
        );
        assert_eq!(line(text, "rule.0.name"), Some(11));
        assert_eq!(line(text, "rule.1.archive.0"), Some(13));
        assert_eq!(line(text, "rule.1.archive.1"), Some(14));
        assert_eq!(line(text, "rule.1.inline.list.1"), Some(15));
        assert_eq!(line(text, "rule.1.skip"), Some(12), "absent: the rule");
        assert_eq!(line(text, "store.spool.dir"), Some(18));
        assert_eq!(line(text, "store.path"), Some(17));
        assert_eq!(line(text, "nothing"), None);
        assert_eq!(line("[x\n", "x"), None);
    }
}
