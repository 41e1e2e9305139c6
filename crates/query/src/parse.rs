//! The search query language: the text a user types after `mailkeep search`
//! (and, later, into the web UI) turned into a list of [`Term`]s that are all
//! ANDed together.
//!
//! Sans-IO and single-pass: [`parse`] takes a `&str` and either returns a
//! [`Query`] or a [`QueryError`] naming the offending term and its byte
//! position. The input may come from strangers, so the parser never panics,
//! its work is linear in the input, and both the input length
//! ([`MAX_QUERY_BYTES`]) and the number of terms ([`MAX_TERMS`]) are capped.
//!
//! # Grammar
//!
//! ```text
//! query   = ws* (term (ws+ term)*)? ws*          ws = any Unicode whitespace
//! term    = "-"? body                            "-" negates when a non-space follows
//! body    = phrase | field ":" value | word
//! field   = from | to | cc | subject | body | attachment | message-id | msgid
//!         | login | after | before | has | id   (ASCII case-insensitive)
//! value   = phrase | word
//! phrase  = '"' (char | '\"' | '\\')* '"'       must be followed by whitespace or the end
//! word    = non-whitespace characters
//! ```
//!
//! Decisions worth knowing:
//! - A lone `-`, or a `-` anywhere but the start of a term, is literal text
//!   (`-` and `e-mail` are words). Only one leading `-` is consumed, so `--x`
//!   is the negated word `-x`.
//! - `xyz:value` with an unknown `xyz` is one plain word, so `http://x` and
//!   `re:` in text still search for themselves. A quote inside such a word is
//!   literal. A known field with nothing after the colon (`from:`, also
//!   `from: alice`) is an error rather than a silent "match everything".
//! - Quotes are special only at the start of a term or of a known field's
//!   value; elsewhere (`5"`) they are literal. Inside a phrase `\"` and `\\`
//!   are escapes and any other backslash is literal.
//! - `after:`/`before:` take exactly `YYYY-MM-DD`. `after:` ≥ `before:` is
//!   allowed (it matches nothing). Negating a date is its exact complement:
//!   `-after:D` is `before:D` and `-before:D` is `after:D`.
//! - `id:` takes `b3:` plus 1–64 hex digits (lowercased) or a decimal number
//!   of up to 20 digits; it cannot be negated.
//! - Values keep the case the user typed; case-insensitive matching (for
//!   `login:` in particular) is the store's job.

use std::fmt;

use chrono::NaiveDate;

/// The longest query accepted, in bytes. Big enough for any query a person
/// types; small enough that a stranger's request costs next to nothing.
pub const MAX_QUERY_BYTES: usize = 4096;

/// The most terms a query may have. Each term becomes a condition in the
/// store's search, so this bounds the work one query can ask for.
pub const MAX_TERMS: usize = 64;

/// How much of an offending term an error message quotes.
const MAX_QUOTED_TERM_CHARS: usize = 48;

/// A parsed query: every term must match. No terms means every message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Query {
    /// The terms, in the order they were typed.
    pub terms: Vec<Term>,
}

/// One condition of a [`Query`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// Words or a phrase, in one field or (`field: None`) anywhere.
    Text {
        field: Option<TextField>,
        value: Text,
        negated: bool,
    },
    /// The exact login the message was archived for, compared case-insensitively.
    Login { value: String, negated: bool },
    /// Received at or after 00:00 UTC on this day.
    After(NaiveDate),
    /// Received before 00:00 UTC on this day.
    Before(NaiveDate),
    /// The message has (or, negated, has no) attachment.
    HasAttachment { negated: bool },
    /// A delivery id as printed by mailkeep: `b3:<hex>` or a number.
    Id(String),
}

/// The part of a message a [`Term::Text`] is restricted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextField {
    From,
    To,
    Cc,
    Subject,
    Body,
    /// Attachment file names.
    Attachment,
    MessageId,
}

/// What a [`Term::Text`] searches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
    /// A single word, as typed.
    Word(String),
    /// The text between the quotes, escapes resolved, whitespace kept.
    Phrase(String),
}

/// Why a query was rejected. Every variant about a term names the term (cut
/// short if long) and the byte offset where it starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("query is {len} bytes long; the limit is {MAX_QUERY_BYTES}")]
    TooLong { len: usize },
    #[error("query has more than {MAX_TERMS} terms; `{term}` at byte {pos} is one too many")]
    TooManyTerms { term: String, pos: usize },
    #[error("unterminated quote in `{term}` at byte {pos}")]
    UnterminatedQuote { term: String, pos: usize },
    #[error("`{term}` at byte {pos}: a closing quote must be followed by a space or the end")]
    TextAfterQuote { term: String, pos: usize },
    #[error("`{term}` at byte {pos}: `{field}:` needs a value right after the colon")]
    EmptyValue {
        field: &'static str,
        term: String,
        pos: usize,
    },
    #[error("`{term}` at byte {pos}: a phrase needs some text between the quotes")]
    EmptyPhrase { term: String, pos: usize },
    #[error("`{term}` at byte {pos}: {reason}")]
    BadDate {
        reason: &'static str,
        term: String,
        pos: usize,
    },
    #[error("`{term}` at byte {pos}: `has:` only accepts `attachment`")]
    BadHas { term: String, pos: usize },
    #[error("`{term}` at byte {pos}: an id is `b3:` and hex digits, or a number")]
    BadId { term: String, pos: usize },
    #[error("`{term}` at byte {pos}: `{field}:` cannot be negated")]
    CannotNegate {
        field: &'static str,
        term: String,
        pos: usize,
    },
}

impl QueryError {
    /// The byte offset the error is about: the offending term's start, or the
    /// limit for [`QueryError::TooLong`].
    pub fn position(&self) -> usize {
        match self {
            QueryError::TooLong { .. } => MAX_QUERY_BYTES,
            QueryError::TooManyTerms { pos, .. }
            | QueryError::UnterminatedQuote { pos, .. }
            | QueryError::TextAfterQuote { pos, .. }
            | QueryError::EmptyValue { pos, .. }
            | QueryError::EmptyPhrase { pos, .. }
            | QueryError::BadDate { pos, .. }
            | QueryError::BadHas { pos, .. }
            | QueryError::BadId { pos, .. }
            | QueryError::CannotNegate { pos, .. } => *pos,
        }
    }
}

/// Parses a search query. The empty (or all-whitespace) query has no terms.
pub fn parse(input: &str) -> Result<Query, QueryError> {
    if input.len() > MAX_QUERY_BYTES {
        return Err(QueryError::TooLong { len: input.len() });
    }
    let mut terms = Vec::new();
    let mut pos = 0;
    loop {
        pos = skip_whitespace(input, pos);
        if pos >= input.len() {
            break;
        }
        let (term, end) = parse_term(input, pos)?;
        if terms.len() == MAX_TERMS {
            return Err(QueryError::TooManyTerms {
                term: quote_term(&input[pos..end]),
                pos,
            });
        }
        terms.push(term);
        pos = end;
    }
    Ok(Query { terms })
}

/// The fields `name:` can select, before the value is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Text(TextField),
    Login,
    After,
    Before,
    Has,
    Id,
}

impl Field {
    fn lookup(name: &str) -> Option<Field> {
        const NAMES: &[(&str, Field)] = &[
            ("from", Field::Text(TextField::From)),
            ("to", Field::Text(TextField::To)),
            ("cc", Field::Text(TextField::Cc)),
            ("subject", Field::Text(TextField::Subject)),
            ("body", Field::Text(TextField::Body)),
            ("attachment", Field::Text(TextField::Attachment)),
            ("message-id", Field::Text(TextField::MessageId)),
            ("msgid", Field::Text(TextField::MessageId)),
            ("login", Field::Login),
            ("after", Field::After),
            ("before", Field::Before),
            ("has", Field::Has),
            ("id", Field::Id),
        ];
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, f)| f)
    }

    fn name(self) -> &'static str {
        match self {
            Field::Text(t) => t.name(),
            Field::Login => "login",
            Field::After => "after",
            Field::Before => "before",
            Field::Has => "has",
            Field::Id => "id",
        }
    }
}

impl TextField {
    /// The canonical field name, as [`Term`]'s `Display` writes it.
    pub fn name(self) -> &'static str {
        match self {
            TextField::From => "from",
            TextField::To => "to",
            TextField::Cc => "cc",
            TextField::Subject => "subject",
            TextField::Body => "body",
            TextField::Attachment => "attachment",
            TextField::MessageId => "message-id",
        }
    }
}

/// A value as written: bare, or between quotes (escapes resolved).
enum Value<'a> {
    Bare(&'a str),
    Quoted(String),
}

impl Value<'_> {
    fn as_str(&self) -> &str {
        match self {
            Value::Bare(s) => s,
            Value::Quoted(s) => s,
        }
    }
}

/// Parses the term starting at `start` (a non-whitespace byte); returns it
/// and the byte offset just past it.
fn parse_term(input: &str, start: usize) -> Result<(Term, usize), QueryError> {
    let rest = &input[start..];
    let negated =
        rest.starts_with('-') && rest[1..].chars().next().is_some_and(|c| !c.is_whitespace());
    let body = if negated { start + 1 } else { start };

    if input[body..].starts_with('"') {
        let (phrase, end) = quoted(input, start, body)?;
        if phrase.trim().is_empty() {
            return Err(QueryError::EmptyPhrase {
                term: quote_term(&input[start..end]),
                pos: start,
            });
        }
        let term = Term::Text {
            field: None,
            value: Text::Phrase(phrase),
            negated,
        };
        return Ok((term, end));
    }

    let word_end = find_whitespace(input, body);
    let word = &input[body..word_end];
    let field = word
        .split_once(':')
        .and_then(|(name, _)| Field::lookup(name).map(|f| (f, name.len())));
    let Some((field, name_len)) = field else {
        let term = Term::Text {
            field: None,
            value: Text::Word(word.to_owned()),
            negated,
        };
        return Ok((term, word_end));
    };

    let value_start = body + name_len + 1;
    let (value, end) = if input[value_start..].starts_with('"') {
        let (v, end) = quoted(input, start, value_start)?;
        (Value::Quoted(v), end)
    } else {
        (Value::Bare(&input[value_start..word_end]), word_end)
    };
    let raw = &input[start..end];
    if value.as_str().trim().is_empty() {
        return Err(QueryError::EmptyValue {
            field: field.name(),
            term: quote_term(raw),
            pos: start,
        });
    }
    let term = field_term(field, value, negated).map_err(|kind| kind.at(raw, start))?;
    Ok((term, end))
}

/// Why a field's value was rejected, before the term and position are known.
enum ValueError {
    BadDate(&'static str),
    BadHas,
    BadId,
    CannotNegate(&'static str),
}

impl ValueError {
    fn at(self, raw: &str, pos: usize) -> QueryError {
        let term = quote_term(raw);
        match self {
            ValueError::BadDate(reason) => QueryError::BadDate { reason, term, pos },
            ValueError::BadHas => QueryError::BadHas { term, pos },
            ValueError::BadId => QueryError::BadId { term, pos },
            ValueError::CannotNegate(field) => QueryError::CannotNegate { field, term, pos },
        }
    }
}

fn field_term(field: Field, value: Value<'_>, negated: bool) -> Result<Term, ValueError> {
    Ok(match field {
        Field::Text(f) => Term::Text {
            field: Some(f),
            value: match value {
                Value::Bare(w) => Text::Word(w.to_owned()),
                Value::Quoted(p) => Text::Phrase(p),
            },
            negated,
        },
        Field::Login => Term::Login {
            value: value.as_str().to_owned(),
            negated,
        },
        // NOT (received >= d) is received < d, and vice versa: the complement
        // is exact, so a negated date needs no variant of its own.
        Field::After => match (date(value.as_str())?, negated) {
            (d, false) => Term::After(d),
            (d, true) => Term::Before(d),
        },
        Field::Before => match (date(value.as_str())?, negated) {
            (d, false) => Term::Before(d),
            (d, true) => Term::After(d),
        },
        Field::Has => {
            if !value.as_str().eq_ignore_ascii_case("attachment") {
                return Err(ValueError::BadHas);
            }
            Term::HasAttachment { negated }
        }
        Field::Id => {
            if negated {
                return Err(ValueError::CannotNegate("id"));
            }
            Term::Id(delivery_id(value.as_str()).ok_or(ValueError::BadId)?)
        }
    })
}

/// Strict `YYYY-MM-DD`: chrono's `%Y-%m-%d` would also take `2026-1-1` and
/// signed or five-digit years, which a user did not mean to type.
fn date(s: &str) -> Result<NaiveDate, ValueError> {
    let b = s.as_bytes();
    let shape_ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape_ok {
        return Err(ValueError::BadDate("a date must be YYYY-MM-DD"));
    }
    // The shape check made these all ASCII digits, so parse cannot fail.
    let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap_or(0);
    let year = i32::try_from(num(0..4)).unwrap_or(0);
    NaiveDate::from_ymd_opt(year, num(5..7), num(8..10))
        .ok_or(ValueError::BadDate("no such day in the calendar"))
}

/// `b3:` and 1–64 hex digits (a prefix of the BLAKE3 hex digest; mailkeep
/// prints 16), normalised to lower case as mailkeep prints them; or a number.
fn delivery_id(s: &str) -> Option<String> {
    let hex = s
        .get(..3)
        .filter(|p| p.eq_ignore_ascii_case("b3:"))
        .map(|_| &s[3..]);
    match hex {
        Some(h) if (1..=64).contains(&h.len()) && h.bytes().all(|c| c.is_ascii_hexdigit()) => {
            Some(format!("b3:{}", h.to_ascii_lowercase()))
        }
        Some(_) => None,
        None if (1..=20).contains(&s.len()) && s.bytes().all(|c| c.is_ascii_digit()) => {
            Some(s.to_owned())
        }
        None => None,
    }
}

/// Reads the phrase whose opening quote is at `open`, for the term starting
/// at `term_start`. Returns the unescaped text and the offset past the
/// closing quote, which must end the term.
fn quoted(input: &str, term_start: usize, open: usize) -> Result<(String, usize), QueryError> {
    let mut out = String::new();
    let mut chars = input[open + 1..].char_indices();
    let close = loop {
        match chars.next() {
            None => {
                return Err(QueryError::UnterminatedQuote {
                    term: quote_term(&input[term_start..]),
                    pos: term_start,
                })
            }
            Some((i, '"')) => break open + 1 + i,
            Some((_, '\\')) => match chars.next() {
                Some((_, c @ ('"' | '\\'))) => out.push(c),
                Some((_, c)) => {
                    out.push('\\');
                    out.push(c);
                }
                None => {
                    return Err(QueryError::UnterminatedQuote {
                        term: quote_term(&input[term_start..]),
                        pos: term_start,
                    })
                }
            },
            Some((_, c)) => out.push(c),
        }
    };
    let end = close + 1;
    if input[end..]
        .chars()
        .next()
        .is_some_and(|c| !c.is_whitespace())
    {
        return Err(QueryError::TextAfterQuote {
            term: quote_term(&input[term_start..find_whitespace(input, end)]),
            pos: term_start,
        });
    }
    Ok((out, end))
}

fn skip_whitespace(input: &str, from: usize) -> usize {
    input[from..]
        .char_indices()
        .find(|&(_, c)| !c.is_whitespace())
        .map_or(input.len(), |(i, _)| from + i)
}

fn find_whitespace(input: &str, from: usize) -> usize {
    input[from..]
        .char_indices()
        .find(|&(_, c)| c.is_whitespace())
        .map_or(input.len(), |(i, _)| from + i)
}

/// The term as an error message quotes it: cut at a character boundary so a
/// stranger's 4 KiB term does not become a 4 KiB error line.
fn quote_term(raw: &str) -> String {
    match raw.char_indices().nth(MAX_QUOTED_TERM_CHARS) {
        Some((cut, _)) => format!("{}…", &raw[..cut]),
        None => raw.to_owned(),
    }
}

/// Writes `s` between quotes, escaping `"` and `\` the way [`parse`] reads them.
fn write_phrase(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        if matches!(c, '"' | '\\') {
            f.write_str("\\")?;
        }
        write!(f, "{c}")?;
    }
    f.write_str("\"")
}

/// Writes a non-text field's value, quoting it only when it would not
/// survive a re-parse bare.
fn write_value(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    if s.is_empty() || s.starts_with('"') || s.chars().any(char::is_whitespace) {
        write_phrase(f, s)
    } else {
        f.write_str(s)
    }
}

/// Query syntax: for any term [`parse`] produced, parsing the output gives
/// the same term back.
impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let neg = |f: &mut fmt::Formatter<'_>, negated: bool| {
            if negated {
                f.write_str("-")
            } else {
                Ok(())
            }
        };
        match self {
            Term::Text {
                field,
                value,
                negated,
            } => {
                neg(f, *negated)?;
                if let Some(field) = field {
                    write!(f, "{}:", field.name())?;
                }
                match value {
                    Text::Word(w) => f.write_str(w),
                    Text::Phrase(p) => write_phrase(f, p),
                }
            }
            Term::Login { value, negated } => {
                neg(f, *negated)?;
                f.write_str("login:")?;
                write_value(f, value)
            }
            Term::After(d) => write!(f, "after:{}", d.format("%Y-%m-%d")),
            Term::Before(d) => write!(f, "before:{}", d.format("%Y-%m-%d")),
            Term::HasAttachment { negated } => {
                neg(f, *negated)?;
                f.write_str("has:attachment")
            }
            Term::Id(id) => {
                f.write_str("id:")?;
                write_value(f, id)
            }
        }
    }
}

impl Term {
    /// The term in query syntax, for messages and debugging.
    pub fn describe(&self) -> String {
        self.to_string()
    }
}

/// The terms in query syntax, separated by single spaces.
impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, term) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{term}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn word(field: Option<TextField>, w: &str, negated: bool) -> Term {
        Term::Text {
            field,
            value: Text::Word(w.into()),
            negated,
        }
    }

    fn phrase(field: Option<TextField>, p: &str, negated: bool) -> Term {
        Term::Text {
            field,
            value: Text::Phrase(p.into()),
            negated,
        }
    }

    fn terms(input: &str) -> Vec<Term> {
        match parse(input) {
            Ok(q) => q.terms,
            Err(e) => panic!("{input:?} should parse: {e}"),
        }
    }

    #[test]
    fn the_issue_example_parses_into_exactly_its_terms() {
        let q = r#"from:alice to:bob@example.com login:bob subject:invoice after:2026-01-01 before:2026-07-01 has:attachment "exact phrase" words"#;
        assert_eq!(
            terms(q),
            vec![
                word(Some(TextField::From), "alice", false),
                word(Some(TextField::To), "bob@example.com", false),
                Term::Login {
                    value: "bob".into(),
                    negated: false
                },
                word(Some(TextField::Subject), "invoice", false),
                Term::After(day("2026-01-01")),
                Term::Before(day("2026-07-01")),
                Term::HasAttachment { negated: false },
                phrase(None, "exact phrase", false),
                word(None, "words", false),
            ]
        );
        assert_eq!(parse(q).unwrap().to_string(), q);
    }

    #[test]
    fn empty_and_whitespace_only_queries_have_no_terms() {
        for q in ["", " ", "\t\n  \r", "\u{3000}\u{a0}"] {
            assert_eq!(parse(q), Ok(Query::default()), "{q:?}");
        }
        assert_eq!(terms("  a \t b\n").len(), 2);
    }

    #[test]
    fn negation() {
        assert_eq!(
            terms(r#"-spam -from:bob -"big sale" -has:attachment -login:Eve"#),
            vec![
                word(None, "spam", true),
                word(Some(TextField::From), "bob", true),
                phrase(None, "big sale", true),
                Term::HasAttachment { negated: true },
                Term::Login {
                    value: "Eve".into(),
                    negated: true
                },
            ]
        );
        // A lone dash, a dash inside a word, and a value starting with one
        // are all literal; only the first leading dash negates.
        assert_eq!(
            terms("- e-mail subject:-x --y"),
            vec![
                word(None, "-", false),
                word(None, "e-mail", false),
                word(Some(TextField::Subject), "-x", false),
                word(None, "-y", true),
            ]
        );
        assert_eq!(
            terms("a -"),
            vec![word(None, "a", false), word(None, "-", false)]
        );
    }

    #[test]
    fn a_negated_date_is_its_complement() {
        assert_eq!(
            terms("-after:2026-03-01 -before:2026-02-01"),
            vec![
                Term::Before(day("2026-03-01")),
                Term::After(day("2026-02-01"))
            ]
        );
    }

    #[test]
    fn after_not_before_before_is_allowed() {
        assert_eq!(
            terms("after:2026-07-01 before:2026-01-01"),
            vec![
                Term::After(day("2026-07-01")),
                Term::Before(day("2026-01-01"))
            ]
        );
    }

    #[test]
    fn quotes_with_fields() {
        assert_eq!(
            terms(r#"subject:"quarterly  invoice" FROM:"Alice Example" -body:"do not""#),
            vec![
                phrase(Some(TextField::Subject), "quarterly  invoice", false),
                phrase(Some(TextField::From), "Alice Example", false),
                phrase(Some(TextField::Body), "do not", true),
            ]
        );
        assert_eq!(
            terms(r#""say \"hi\" \\ c:\dir""#),
            vec![phrase(None, r#"say "hi" \ c:\dir"#, false)]
        );
        assert_eq!(
            terms(r#"login:"bob" has:"Attachment""#),
            vec![
                Term::Login {
                    value: "bob".into(),
                    negated: false
                },
                Term::HasAttachment { negated: false },
            ]
        );
        // Mid-word quotes are literal.
        assert_eq!(
            terms(r#"5" x"y"#),
            vec![word(None, "5\"", false), word(None, "x\"y", false)]
        );
    }

    #[test]
    fn display_is_query_syntax_that_parses_back() {
        let input = r#"-"say \"hi\" \\ c:\dir" login:"a b" login:"\"q" -after:2026-03-01 msgid:<x@y> id:B3:AB"#;
        let q = parse(input).unwrap();
        assert_eq!(
            q.to_string(),
            r#"-"say \"hi\" \\ c:\\dir" login:"a b" login:"\"q" before:2026-03-01 message-id:<x@y> id:b3:ab"#
        );
        assert_eq!(parse(&q.to_string()), Ok(q.clone()));
        assert_eq!(q.terms[0].describe(), q.terms[0].to_string());
    }

    #[test]
    fn every_field_name_case_insensitively() {
        assert_eq!(
            terms("Cc:c BODY:b attachment:a.pdf Message-ID:<m@x> msgid:n To:t"),
            vec![
                word(Some(TextField::Cc), "c", false),
                word(Some(TextField::Body), "b", false),
                word(Some(TextField::Attachment), "a.pdf", false),
                word(Some(TextField::MessageId), "<m@x>", false),
                word(Some(TextField::MessageId), "n", false),
                word(Some(TextField::To), "t", false),
            ]
        );
        assert_eq!(
            terms("id:B3:00FFab12 ID:12345 has:ATTACHMENT"),
            vec![
                Term::Id("b3:00ffab12".into()),
                Term::Id("12345".into()),
                Term::HasAttachment { negated: false },
            ]
        );
    }

    #[test]
    fn unknown_field_is_kept_as_a_word() {
        assert_eq!(
            terms(r#"http://x re: xyz:"a b" :x subject:re:hi"#),
            vec![
                word(None, "http://x", false),
                word(None, "re:", false),
                word(None, "xyz:\"a", false),
                word(None, "b\"", false),
                word(None, ":x", false),
                word(Some(TextField::Subject), "re:hi", false),
            ]
        );
    }

    #[test]
    fn known_field_with_empty_value_is_an_error() {
        for (q, field, pos) in [
            ("from:", "from", 0),
            ("a from: alice", "from", 2),
            ("-subject:\"\"", "subject", 0),
            ("x login:\" \"", "login", 2),
            ("msgid:", "message-id", 0),
        ] {
            match parse(q) {
                Err(QueryError::EmptyValue {
                    field: f, pos: p, ..
                }) => {
                    assert_eq!((f, p), (field, pos), "{q:?}")
                }
                other => panic!("{q:?}: {other:?}"),
            }
        }
        assert!(matches!(
            parse(r#""""#),
            Err(QueryError::EmptyPhrase { pos: 0, .. })
        ));
    }

    #[test]
    fn unterminated_quote_is_an_error() {
        for (q, pos) in [
            (r#""abc"#, 0),
            (r#"x subject:"a b"#, 2),
            (r#"y "a\""#, 2),
            ("\"\\", 0),
        ] {
            let e = parse(q).unwrap_err();
            assert!(
                matches!(e, QueryError::UnterminatedQuote { .. }),
                "{q:?}: {e:?}"
            );
            assert_eq!(e.position(), pos, "{q:?}");
            assert!(e.to_string().contains(&format!("at byte {pos}")), "{e}");
        }
        let e = parse(r#"a "b"c"#).unwrap_err();
        assert_eq!(
            e,
            QueryError::TextAfterQuote {
                term: "\"b\"c".into(),
                pos: 2
            }
        );
    }

    #[test]
    fn bad_dates_are_errors_naming_the_term() {
        for q in [
            "after:2026-1-1",
            "after:yesterday",
            "before:+2026-01-01",
            "before:20260101",
            "after:2026-02-30",
            "after:2026-13-01",
            "after:2026-01-01x",
            "after:2026-01x01",
            "after:2026x01-01",
            "after:２０２６-01-01",
        ] {
            let e = parse(&format!("ok {q}")).unwrap_err();
            assert!(matches!(e, QueryError::BadDate { .. }), "{q:?}: {e:?}");
            let msg = e.to_string();
            assert!(msg.contains(&format!("`{q}` at byte 3")), "{msg}");
        }
        assert_eq!(
            terms("after:0000-01-01"),
            vec![Term::After(day("0000-01-01"))]
        );
        assert_eq!(
            terms("before:2024-02-29"),
            vec![Term::Before(day("2024-02-29"))]
        );
    }

    #[test]
    fn bad_has_and_id_are_errors() {
        assert!(matches!(
            parse("has:pdf"),
            Err(QueryError::BadHas { pos: 0, .. })
        ));
        for q in [
            "id:b3:",
            "id:b3:xyz",
            "id:abc",
            "id:-1",
            "id:123456789012345678901",
        ] {
            assert!(matches!(parse(q), Err(QueryError::BadId { .. })), "{q:?}");
        }
        assert!(matches!(
            parse("-id:7"),
            Err(QueryError::CannotNegate { field: "id", .. })
        ));
    }

    #[test]
    fn over_long_query_is_an_error() {
        let at_limit = "a".repeat(MAX_QUERY_BYTES);
        assert_eq!(terms(&at_limit).len(), 1);
        let over = "a".repeat(MAX_QUERY_BYTES + 1);
        assert_eq!(
            parse(&over),
            Err(QueryError::TooLong {
                len: MAX_QUERY_BYTES + 1
            })
        );
        // A long bad term is quoted short in the message.
        let e = parse(&format!("after:{}", "9".repeat(4000))).unwrap_err();
        assert!(e.to_string().len() < 200, "{e}");
    }

    #[test]
    fn too_many_terms_is_an_error() {
        let ok = vec!["w"; MAX_TERMS].join(" ");
        assert_eq!(terms(&ok).len(), MAX_TERMS);
        let over = format!("{ok} extra");
        assert_eq!(
            parse(&over),
            Err(QueryError::TooManyTerms {
                term: "extra".into(),
                pos: ok.len() + 1
            })
        );
    }

    #[test]
    fn unicode_words() {
        assert_eq!(
            terms("Grüße from:José subject:\"日本語 テスト\"\u{3000}-🙂 résumé：x"),
            vec![
                word(None, "Grüße", false),
                word(Some(TextField::From), "José", false),
                phrase(Some(TextField::Subject), "日本語 テスト", false),
                word(None, "🙂", true),
                // A fullwidth colon does not make a field.
                word(None, "résumé：x", false),
            ]
        );
        let e = parse("日本 has:添付").unwrap_err();
        assert_eq!(e.position(), "日本 ".len());
    }

    /// A tiny deterministic generator: the test needs no extra crates and
    /// reproduces exactly on every run.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn garbage_never_panics_and_what_parses_round_trips() {
        const PIECES: &[&str] = &[
            "a",
            "Z",
            "9",
            " ",
            " ",
            "\t",
            "\n",
            "\u{3000}",
            "\u{a0}",
            "-",
            "-",
            ":",
            ":",
            "\"",
            "\"",
            "\\",
            "from:",
            "TO:",
            "subject:",
            "login:",
            "after:",
            "before:2026-01-01",
            "has:",
            "attachment",
            "id:",
            "b3:",
            "ff",
            "msgid:",
            "2026-02-30",
            "é",
            "日",
            "🙂",
            "\0",
            "\u{7f}",
            "\u{fffd}",
            "http://",
            "x:",
            "--",
            "\"\"",
        ];
        let mut rng = Lcg(0x6d61_696c_6b65_6570);
        let (mut ok, mut err) = (0, 0);
        for round in 0..6000 {
            let input: String = if round % 4 == 3 {
                // Raw bytes, made valid UTF-8 the way a lossy front end would.
                let bytes: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                (0..rng.below(24))
                    .map(|_| PIECES[rng.below(PIECES.len())])
                    .collect()
            };
            match parse(&input) {
                Ok(q) => {
                    ok += 1;
                    assert!(q.terms.len() <= MAX_TERMS);
                    let again = parse(&q.to_string());
                    assert_eq!(again.as_ref(), Ok(&q), "{input:?} -> {q}");
                }
                Err(e) => {
                    err += 1;
                    let pos = e.position();
                    assert!(input.is_char_boundary(pos), "{input:?}: {e:?}");
                    assert!(pos < input.len(), "{input:?}: {e:?}");
                    assert!(!e.to_string().is_empty());
                }
            }
        }
        // Both outcomes were exercised, or the generator is not testing much.
        assert!(ok > 500 && err > 500, "ok {ok}, err {err}");

        let long: String = (0..MAX_QUERY_BYTES * 2)
            .map(|_| PIECES[rng.below(PIECES.len())])
            .collect::<String>();
        for cut in [MAX_QUERY_BYTES, MAX_QUERY_BYTES + 1, long.len()] {
            let cut = (0..=cut).rev().find(|&i| long.is_char_boundary(i)).unwrap();
            let _ = parse(&long[..cut]);
        }
    }
}
