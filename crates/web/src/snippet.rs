//! Highlighted snippets: the words a search looked for, marked where they
//! stand in a result's subject and body text.
//!
//! The catalog's full-text index keeps no text (it is contentless), so a
//! snippet is cut from the message itself, for the results of one page
//! only. Words are compared the way the index's tokenizer splits them: a
//! run of letters and digits, case folded. A snippet is a list of
//! [`Segment`]s, text that a page escapes and an API client renders as it
//! likes, never markup from the message.

use mailkeep_query::{Expr, Query, Term, TextField};
use serde::Serialize;

/// A piece of text, marked when it is one of the words searched for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Segment {
    /// The text, as in the message (whitespace runs made one space).
    pub text: String,
    /// Whether it is a word searched for.
    pub mark: bool,
}

/// Body text looked at for a snippet at most, in bytes.
const SCAN: usize = 64 * 1024;

/// The words of the query's positive text terms that can appear in a
/// subject or body (no field, `subject:`, `body:`), lowercased, once each.
pub fn words(query: &Query) -> Vec<String> {
    fn walk(e: &Expr, out: &mut Vec<String>) {
        match e {
            // What a search must not contain is not in its results.
            Expr::Not(_) => {}
            Expr::And(v) | Expr::Or(v) => v.iter().for_each(|x| walk(x, out)),
            Expr::Term(Term::Text {
                field: None | Some(TextField::Subject) | Some(TextField::Body),
                value,
            }) => {
                for (_, w) in tokens(value.as_str()) {
                    let w = w.to_lowercase();
                    if !out.contains(&w) {
                        out.push(w);
                    }
                }
            }
            Expr::Term(_) => {}
        }
    }
    let mut out = Vec::new();
    if let Some(e) = &query.expr {
        walk(e, &mut out);
    }
    out
}

/// The words of `text` (runs of letters and digits) with their byte offsets.
fn tokens(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut start = None;
    let mut chars = text
        .char_indices()
        .chain(std::iter::once((text.len(), ' ')));
    std::iter::from_fn(move || {
        for (i, c) in chars.by_ref() {
            match (start, c.is_alphanumeric()) {
                (None, true) => start = Some(i),
                (Some(s), false) => {
                    start = None;
                    return Some((s, &text[s..i]));
                }
                _ => {}
            }
        }
        None
    })
}

fn is_word(w: &str, words: &[String]) -> bool {
    words.iter().any(|x| x.as_str() == w.to_lowercase())
}

/// `text` cut into segments, the words searched for marked.
pub fn mark(text: &str, words: &[String]) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    let mut push = |s: &str, mark: bool| {
        if s.is_empty() {
            return;
        }
        match out.last_mut() {
            Some(last) if last.mark == mark && !mark => last.text.push_str(s),
            _ => out.push(Segment {
                text: s.to_string(),
                mark,
            }),
        }
    };
    let mut at = 0;
    for (i, w) in tokens(text) {
        if is_word(w, words) {
            push(&text[at..i], false);
            push(w, true);
            at = i + w.len();
        }
    }
    push(&text[at..], false);
    out
}

/// About `width` characters of `body` around the first word searched for,
/// marked; `None` when no such word is in the text given (at most the
/// first 64 KiB of it is looked at).
pub fn snippet(body: &str, words: &[String], width: usize) -> Option<Vec<Segment>> {
    if words.is_empty() {
        return None;
    }
    let mut end = body.len().min(SCAN);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    let flat: String = body[..end].split_whitespace().collect::<Vec<_>>().join(" ");
    let (hit, _) = tokens(&flat).find(|(_, w)| is_word(w, words))?;
    // A third of the width before the word, from a word's start.
    let before: Vec<(usize, char)> = flat[..hit].char_indices().collect();
    let lead = width / 3;
    let mut start = before.len().saturating_sub(lead);
    while start > 0 && start < before.len() && before[start - 1].1 != ' ' {
        start += 1;
    }
    let from = before.get(start).map(|(i, _)| *i).unwrap_or(hit);
    let rest = &flat[from..];
    let mut cut = rest
        .char_indices()
        .nth(width)
        .map(|(i, _)| i)
        .unwrap_or(rest.len());
    if cut < rest.len() {
        // End at a word's end when there is one in the window.
        if let Some(space) = rest[..cut].rfind(' ').filter(|s| *s > hit - from) {
            cut = space;
        }
    }
    let mut segments = Vec::new();
    if from > 0 {
        segments.push(Segment {
            text: "… ".into(),
            mark: false,
        });
    }
    segments.extend(mark(&rest[..cut], words));
    if cut < rest.len() {
        segments.push(Segment {
            text: " …".into(),
            mark: false,
        });
    }
    Some(segments)
}

/// Segments as HTML: each text escaped, the marked ones in `<mark>`.
pub fn html(segments: &[Segment]) -> String {
    segments
        .iter()
        .map(|s| {
            let t = crate::pages::esc(&s.text);
            if s.mark {
                format!("<mark>{t}</mark>")
            } else {
                t
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(q: &str) -> Vec<String> {
        words(&mailkeep_query::parse(q).unwrap())
    }

    fn shown(s: &[Segment]) -> String {
        s.iter()
            .map(|x| {
                if x.mark {
                    format!("[{}]", x.text)
                } else {
                    x.text.clone()
                }
            })
            .collect()
    }

    #[test]
    fn words_come_from_positive_text_terms_only() {
        assert_eq!(
            w("Quarterly subject:\"Big Numbers\" -secret from:bob to:carol body:pdf"),
            ["quarterly", "big", "numbers", "pdf"]
        );
        assert_eq!(w("(a OR b) -(c d)"), ["a", "b"]);
        assert!(w("has:attachment sender:bob@example.com").is_empty());
    }

    #[test]
    fn marks_whole_words_ignoring_case() {
        let words = w("numbers");
        assert_eq!(
            shown(&mark("Numbers: the numbers, renumbers.", &words)),
            "[Numbers]: the [numbers], renumbers."
        );
        assert_eq!(
            shown(&mark("数字 numbers 数字", &w("数字"))),
            "[数字] numbers [数字]"
        );
        assert_eq!(shown(&mark("שלום עולם", &w("עולם"))), "שלום [עולם]");
    }

    #[test]
    fn a_snippet_is_a_window_around_the_first_match() {
        let body = format!("{} needle {}", "word ".repeat(100), "tail ".repeat(100));
        let s = shown(&snippet(&body, &w("needle"), 60).unwrap());
        assert!(s.starts_with("… word"), "{s}");
        assert!(s.contains("[needle]"), "{s}");
        assert!(s.ends_with(" …"), "{s}");
        assert!(s.chars().count() < 80, "{s}");
        assert_eq!(snippet("no match here", &w("needle"), 60), None);
        assert_eq!(snippet("anything", &[], 60), None);
        // Short text: whole, no ellipsis; whitespace made one space.
        assert_eq!(
            shown(&snippet("a\r\n\r\n  needle\tb", &w("needle"), 60).unwrap()),
            "a [needle] b"
        );
        // Multi-byte text is cut on character boundaries.
        let cjk = format!("{} needle {}", "字".repeat(300), "字".repeat(300));
        let s = shown(&snippet(&cjk, &w("needle"), 40).unwrap());
        assert!(s.contains("[needle]"), "{s}");
    }

    #[test]
    fn html_escapes_every_segment() {
        let segs = mark("<script>alert(1)</script> needle &", &w("needle"));
        assert_eq!(
            html(&segs),
            "&lt;script&gt;alert(1)&lt;/script&gt; <mark>needle</mark> &amp;"
        );
        let segs = mark("<b>needle</b>", &w("needle"));
        assert_eq!(html(&segs), "&lt;b&gt;<mark>needle</mark>&lt;/b&gt;");
    }
}
