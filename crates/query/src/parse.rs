//! The search query language: the text a user types after `mailkeep search`
//! (and, later, into the web UI) turned into an expression tree of terms
//! (see [`crate::ast`] for what each term means, docs/search.md for the
//! user's reference).
//!
//! Sans-IO: [`parse`] takes a `&str` and either returns a [`Query`] or a
//! [`QueryError`] naming the offending text and its byte position. The
//! input may come from strangers, so the parser never panics and its work
//! is linear in the input; the input length ([`MAX_QUERY_BYTES`]), the
//! number of terms ([`MAX_TERMS`]) and the nesting of parentheses
//! ([`MAX_DEPTH`], which bounds the recursion of this parser and of every
//! consumer that walks the tree) are capped.
//!
//! # Grammar
//!
//! ```text
//! query   = ws* (or ws*)?                        ws = any Unicode whitespace
//! or      = and (ws+ "OR" ws+ and)*              OR binds loosest
//! and     = unary ((ws+ | ws+ "AND" ws+) unary)* a space is AND
//! unary   = "-"? atom                            "-" negates when a non-space, non-")" follows
//! atom    = "(" ws* or ws* ")" | term
//! term    = phrase | key ":" value | size | word
//! key     = from | to | cc | bcc | subject | body | attachment | filename
//!         | message-id | msgid | sender | recipient | rcpt | login | queue
//!         | client | capture | tag | received | date | after | before
//!         | has | id | thread                  (ASCII case-insensitive)
//! size    = "size" (">" | ">=" | "<" | "<=") number ("k" | "M" | "G")? "B"?
//! value   = phrase | bare
//! phrase  = '"' (char | '\"' | '\\')* '"'       followed by whitespace, ")" or the end
//! word    = bare, not "OR" or "AND"
//! bare    = characters other than whitespace, "(" and ")"
//! ```
//!
//! Decisions worth knowing:
//! - `OR` and `AND` are operators only in upper case and bare; `or`, `and`
//!   and `"OR"` are words. An operator needs a term on each side.
//! - `(` and `)` end a bare word (`foo(bar)` is `foo (bar)`); quote a value
//!   that contains them. An unbalanced parenthesis is an error at its byte.
//! - A lone `-`, or a `-` anywhere but the start of a term, is literal text
//!   (`-` and `e-mail` are words). Only one leading `-` is consumed, so `--x`
//!   is the negated word `-x`. `-(a OR b)` negates the group.
//! - A word shaped like `key:value` (a letter, then letters, digits, `-`
//!   or `_`, then a colon) must use a known key: anything else is an error
//!   naming the keys, so a typo never silently searches for itself. Quote
//!   the text to search for it (`"http://x"`). Words whose "key" is not of
//!   that shape (`10:30`, `:x`, `日本:x`) are words. A known key with
//!   nothing after the colon (`from:`, also `from: alice`) is an error
//!   rather than a silent "match everything".
//! - Quotes are special only at the start of a term or of a key's value;
//!   elsewhere (`5"`) they are literal. Inside a phrase `\"` and `\\` are
//!   escapes and any other backslash is literal.
//! - Dates: `YYYY-MM-DD` is that whole UTC day; `YYYY-MM-DDTHH:MM[:SS]`
//!   with `Z` or `±HH:MM` (UTC when absent) is that whole minute or second.
//!   `received:`/`date:` also take `A..B`, `A..`, `..B` (see
//!   [`crate::TimeRange`] for the ends); `after:` is inclusive, `before:`
//!   exclusive, both of the capture time. An empty range matches nothing.
//! - Values keep the case the user typed; case-insensitive matching is the
//!   store's job.

use std::net::IpAddr;

use chrono::{NaiveDate, NaiveTime};

use crate::ast::{
    address_glob, AddressField, ClientMatch, Comparison, Expr, Moment, Precision, Query, Term,
    Text, TextField, TimeField, TimeRange,
};

/// The longest query accepted, in bytes. Big enough for any query a person
/// types; small enough that a stranger's request costs next to nothing.
pub const MAX_QUERY_BYTES: usize = 4096;

/// The most terms a query may have. Each term becomes a condition in the
/// store's search, so this bounds the work one query can ask for.
pub const MAX_TERMS: usize = 64;

/// How deeply parentheses may nest. Every consumer of the tree recurses
/// once per level (this parser, `Display`, the SQL builder), so this keeps
/// hostile input far from any stack limit; people nest two or three.
pub const MAX_DEPTH: usize = 16;

/// The deepest tree [`parse`] returns ([`crate::Expr::depth`]): each group
/// can add an `OR`, an `AND` and a negation level, and so can the top.
pub const MAX_TREE_DEPTH: usize = 3 * MAX_DEPTH + 4;

/// How much of an offending term an error message quotes.
const MAX_QUOTED_TERM_CHARS: usize = 48;

/// The keys, as the unknown-key error lists them.
pub const KNOWN_KEYS: &str = "from, to, cc, bcc, subject, body, attachment, filename, \
     message-id, msgid, sender, recipient, rcpt, login, queue, client, capture, tag, \
     received, date, after, before, has, id, thread, size> and size<";

/// Why a query was rejected. Every variant names the offending text (cut
/// short if long) and the byte offset where it starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("query is {len} bytes long; the limit is {MAX_QUERY_BYTES}")]
    TooLong { len: usize },
    #[error("query has more than {MAX_TERMS} terms; `{term}` at byte {pos} is one too many")]
    TooManyTerms { term: String, pos: usize },
    #[error("`(` at byte {pos}: parentheses nest deeper than {MAX_DEPTH} levels")]
    TooDeep { pos: usize },
    #[error("`(` at byte {pos} is never closed")]
    UnclosedGroup { pos: usize },
    #[error("`)` at byte {pos} closes no `(`; quote it to search for it: \")\"")]
    UnopenedGroup { pos: usize },
    #[error("`()` at byte {pos}: a group needs a term inside")]
    EmptyGroup { pos: usize },
    #[error(
        "`{op}` at byte {pos} needs a term on each side; quote it to search for the word: \"{op}\""
    )]
    DanglingOperator { op: &'static str, pos: usize },
    #[error("unterminated quote in `{term}` at byte {pos}")]
    UnterminatedQuote { term: String, pos: usize },
    #[error("`{term}` at byte {pos}: a closing quote must be followed by a space, `)` or the end")]
    TextAfterQuote { term: String, pos: usize },
    #[error("`{term}` at byte {pos}: `{field}:` needs a value right after the colon")]
    EmptyValue {
        field: &'static str,
        term: String,
        pos: usize,
    },
    #[error("`{term}` at byte {pos}: a phrase needs some text between the quotes")]
    EmptyPhrase { term: String, pos: usize },
    #[error(
        "`{term}` at byte {pos}: `{key}:` is not a search key (the keys are {KNOWN_KEYS}); \
         to search for the text itself, quote it: \"{term}\""
    )]
    UnknownKey {
        key: String,
        term: String,
        pos: usize,
    },
    #[error("`{term}` at byte {pos}: {reason}")]
    BadValue {
        field: &'static str,
        reason: &'static str,
        term: String,
        pos: usize,
    },
}

impl QueryError {
    /// The byte offset the error is about: the offending text's start, or
    /// the limit for [`QueryError::TooLong`].
    pub fn position(&self) -> usize {
        match self {
            QueryError::TooLong { .. } => MAX_QUERY_BYTES,
            QueryError::TooManyTerms { pos, .. }
            | QueryError::TooDeep { pos }
            | QueryError::UnclosedGroup { pos }
            | QueryError::UnopenedGroup { pos }
            | QueryError::EmptyGroup { pos }
            | QueryError::DanglingOperator { pos, .. }
            | QueryError::UnterminatedQuote { pos, .. }
            | QueryError::TextAfterQuote { pos, .. }
            | QueryError::EmptyValue { pos, .. }
            | QueryError::EmptyPhrase { pos, .. }
            | QueryError::UnknownKey { pos, .. }
            | QueryError::BadValue { pos, .. } => *pos,
        }
    }
}

/// Parses a search query. The empty (or all-whitespace) query matches
/// everything.
pub fn parse(input: &str) -> Result<Query, QueryError> {
    if input.len() > MAX_QUERY_BYTES {
        return Err(QueryError::TooLong { len: input.len() });
    }
    let tokens = lex(input)?;
    let mut p = Parser {
        input,
        tokens,
        next: 0,
        terms: 0,
    };
    if p.tokens.is_empty() {
        return Ok(Query::default());
    }
    let expr = p.or(0, None)?;
    match p.peek() {
        None => Ok(Query { expr: Some(expr) }),
        // `or` stops only at the end or at a `)`.
        Some(t) => Err(QueryError::UnopenedGroup { pos: t.pos }),
    }
}

/// One lexical unit and the byte range it came from.
#[derive(Debug)]
struct Token {
    kind: Kind,
    pos: usize,
    end: usize,
}

#[derive(Debug)]
enum Kind {
    Open,
    Close,
    Or,
    And,
    Not,
    Term(Term),
}

/// Splits the input into tokens. A `-` that negates is followed directly
/// by an `(` or a term; the parser relies on that.
fn lex(input: &str) -> Result<Vec<Token>, QueryError> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        pos = skip_whitespace(input, pos);
        let Some(c) = input[pos..].chars().next() else {
            return Ok(out);
        };
        let start = pos;
        let token = |kind, end| Token {
            kind,
            pos: start,
            end,
        };
        match c {
            '(' => {
                out.push(token(Kind::Open, pos + 1));
                pos += 1;
                continue;
            }
            ')' => {
                out.push(token(Kind::Close, pos + 1));
                pos += 1;
                continue;
            }
            _ => {}
        }
        let negated = c == '-'
            && input[pos + 1..]
                .chars()
                .next()
                .is_some_and(|n| !n.is_whitespace() && n != ')');
        let body = if negated { pos + 1 } else { pos };
        if negated {
            out.push(token(Kind::Not, body));
            if input[body..].starts_with('(') {
                pos = body;
                continue;
            }
        }
        let word_end = find_delim(input, body);
        let op = match &input[body..word_end] {
            "OR" => Some((Kind::Or, "OR")),
            "AND" => Some((Kind::And, "AND")),
            _ => None,
        };
        if let Some((kind, name)) = op {
            if negated {
                return Err(QueryError::DanglingOperator {
                    op: name,
                    pos: body,
                });
            }
            out.push(token(kind, word_end));
            pos = word_end;
            continue;
        }
        let (term, end) = parse_term(input, start, body)?;
        out.push(Token {
            kind: Kind::Term(term),
            pos: body,
            end,
        });
        pos = end;
    }
}

/// Recursive descent over the tokens; each level of parentheses is one
/// level of recursion, capped by [`MAX_DEPTH`].
struct Parser<'a> {
    input: &'a str,
    tokens: Vec<Token>,
    next: usize,
    terms: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next)
    }

    fn starts_operand(&self) -> bool {
        matches!(
            self.peek().map(|t| &t.kind),
            Some(Kind::Open | Kind::Not | Kind::Term(_))
        )
    }

    /// The error for a missing operand where the next token is.
    fn missing_operand(&self, depth: usize, group: Option<usize>) -> QueryError {
        match self.peek() {
            Some(Token {
                kind: Kind::Or,
                pos,
                ..
            }) => QueryError::DanglingOperator {
                op: "OR",
                pos: *pos,
            },
            Some(Token {
                kind: Kind::And,
                pos,
                ..
            }) => QueryError::DanglingOperator {
                op: "AND",
                pos: *pos,
            },
            Some(t) if depth == 0 => QueryError::UnopenedGroup { pos: t.pos },
            _ => match group {
                Some(open) if self.peek().is_some() => QueryError::EmptyGroup { pos: open },
                Some(open) => QueryError::UnclosedGroup { pos: open },
                None => QueryError::UnclosedGroup { pos: 0 },
            },
        }
    }

    /// `and (OR and)*`, stopping at a `)` or the end.
    fn or(&mut self, depth: usize, group: Option<usize>) -> Result<Expr, QueryError> {
        if !self.starts_operand() {
            return Err(self.missing_operand(depth, group));
        }
        let mut items = vec![self.and(depth)?];
        while let Some(Token {
            kind: Kind::Or,
            pos,
            ..
        }) = self.peek()
        {
            let pos = *pos;
            self.next += 1;
            if !self.starts_operand() {
                return Err(QueryError::DanglingOperator { op: "OR", pos });
            }
            items.push(self.and(depth)?);
        }
        Ok(combine(items, false))
    }

    /// `unary ((AND)? unary)*`, stopping at `OR`, `)` or the end.
    fn and(&mut self, depth: usize) -> Result<Expr, QueryError> {
        let mut items = vec![self.unary(depth)?];
        loop {
            match self.peek().map(|t| (&t.kind, t.pos)) {
                Some((Kind::And, pos)) => {
                    self.next += 1;
                    if !self.starts_operand() {
                        return Err(QueryError::DanglingOperator { op: "AND", pos });
                    }
                }
                Some((Kind::Open | Kind::Not | Kind::Term(_), _)) => {}
                _ => break,
            }
            items.push(self.unary(depth)?);
        }
        Ok(combine(items, true))
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, QueryError> {
        if matches!(self.peek().map(|t| &t.kind), Some(Kind::Not)) {
            self.next += 1;
            // The lexer puts an `(` or a term right after a negating `-`.
            return Ok(Expr::Not(Box::new(self.atom(depth)?)));
        }
        self.atom(depth)
    }

    fn atom(&mut self, depth: usize) -> Result<Expr, QueryError> {
        let Some(token) = self.tokens.get_mut(self.next) else {
            return Err(self.missing_operand(depth, None));
        };
        let (pos, end) = (token.pos, token.end);
        if matches!(token.kind, Kind::Open) {
            if depth == MAX_DEPTH {
                return Err(QueryError::TooDeep { pos });
            }
            self.next += 1;
            let inner = self.or(depth + 1, Some(pos))?;
            return match self.peek() {
                Some(Token {
                    kind: Kind::Close, ..
                }) => {
                    self.next += 1;
                    Ok(inner)
                }
                _ => Err(QueryError::UnclosedGroup { pos }),
            };
        }
        if self.terms == MAX_TERMS {
            return Err(QueryError::TooManyTerms {
                term: quote_term(&self.input[pos..end]),
                pos,
            });
        }
        // Each token is read once, so the term can be moved out.
        match std::mem::replace(&mut token.kind, Kind::Close) {
            Kind::Term(term) => {
                self.terms += 1;
                self.next += 1;
                Ok(Expr::Term(term))
            }
            // Every caller checked `starts_operand`, and the lexer puts an
            // `(` or a term after a negating `-`; never reached.
            _ => Err(QueryError::DanglingOperator { op: "-", pos }),
        }
    }
}

/// The canonical node for `items` joined by AND (`and`) or OR: one item is
/// itself, and a child of the same kind is spliced in.
fn combine(items: Vec<Expr>, and: bool) -> Expr {
    if items.len() == 1 {
        return items.into_iter().next().unwrap_or(Expr::And(Vec::new()));
    }
    let mut flat = Vec::with_capacity(items.len());
    for e in items {
        match e {
            Expr::And(v) if and => flat.extend(v),
            Expr::Or(v) if !and => flat.extend(v),
            e => flat.push(e),
        }
    }
    if and {
        Expr::And(flat)
    } else {
        Expr::Or(flat)
    }
}

/// The keys `name:` can select, before the value is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Text(TextField),
    Address(AddressField),
    Queue,
    Client,
    Capture,
    Tag,
    Size,
    Time(TimeField),
    After,
    Before,
    Has,
    Id,
    Thread,
}

impl Key {
    fn lookup(name: &str) -> Option<Key> {
        const NAMES: &[(&str, Key)] = &[
            ("from", Key::Text(TextField::From)),
            ("to", Key::Text(TextField::To)),
            ("cc", Key::Text(TextField::Cc)),
            ("subject", Key::Text(TextField::Subject)),
            ("body", Key::Text(TextField::Body)),
            ("attachment", Key::Text(TextField::Attachment)),
            ("filename", Key::Text(TextField::Attachment)),
            ("message-id", Key::Text(TextField::MessageId)),
            ("msgid", Key::Text(TextField::MessageId)),
            ("sender", Key::Address(AddressField::Sender)),
            ("recipient", Key::Address(AddressField::Recipient)),
            ("rcpt", Key::Address(AddressField::Recipient)),
            ("bcc", Key::Address(AddressField::Bcc)),
            ("login", Key::Address(AddressField::Login)),
            ("queue", Key::Queue),
            ("client", Key::Client),
            ("capture", Key::Capture),
            ("tag", Key::Tag),
            ("size", Key::Size),
            ("received", Key::Time(TimeField::Received)),
            ("date", Key::Time(TimeField::Date)),
            ("after", Key::After),
            ("before", Key::Before),
            ("has", Key::Has),
            ("id", Key::Id),
            ("thread", Key::Thread),
        ];
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, k)| k)
    }

    fn name(self) -> &'static str {
        match self {
            Key::Text(t) => t.name(),
            Key::Address(a) => a.name(),
            Key::Queue => "queue",
            Key::Client => "client",
            Key::Capture => "capture",
            Key::Tag => "tag",
            Key::Size => "size",
            Key::Time(TimeField::Received) => "received",
            Key::Time(TimeField::Date) => "date",
            Key::After => "after",
            Key::Before => "before",
            Key::Has => "has",
            Key::Id => "id",
            Key::Thread => "thread",
        }
    }
}

/// Whether `name` has the shape of a key, known or not: an ASCII letter,
/// then ASCII letters, digits, `-` or `_`.
fn key_shaped(name: &str) -> bool {
    let mut b = name.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic())
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
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

/// Parses the term whose text (after any negating `-`) starts at `body`;
/// `start` is where the term started, for error messages. Returns it and
/// the byte offset just past it.
fn parse_term(input: &str, start: usize, body: usize) -> Result<(Term, usize), QueryError> {
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
        };
        return Ok((term, end));
    }

    let word_end = find_delim(input, body);
    let word = &input[body..word_end];
    if let Some(term) =
        size_term(word).map_err(|reason| bad(Key::Size, reason, input, start, word_end))?
    {
        return Ok((term, word_end));
    }
    let Some((name, _)) = word.split_once(':') else {
        return Ok((plain_word(word), word_end));
    };
    let key = match Key::lookup(name) {
        Some(k) => k,
        None if key_shaped(name) => {
            return Err(QueryError::UnknownKey {
                key: name.to_owned(),
                term: quote_term(&input[start..word_end]),
                pos: start,
            })
        }
        None => return Ok((plain_word(word), word_end)),
    };

    let value_start = body + name.len() + 1;
    let (value, end) = if input[value_start..].starts_with('"') {
        let (v, end) = quoted(input, start, value_start)?;
        (Value::Quoted(v), end)
    } else {
        (Value::Bare(&input[value_start..word_end]), word_end)
    };
    let raw = &input[start..end];
    if value.as_str().trim().is_empty() {
        return Err(QueryError::EmptyValue {
            field: key.name(),
            term: quote_term(raw),
            pos: start,
        });
    }
    let term = key_term(key, value).map_err(|reason| bad(key, reason, input, start, end))?;
    Ok((term, end))
}

fn plain_word(word: &str) -> Term {
    Term::Text {
        field: None,
        value: Text::Word(word.to_owned()),
    }
}

fn bad(key: Key, reason: &'static str, input: &str, start: usize, end: usize) -> QueryError {
    QueryError::BadValue {
        field: key.name(),
        reason,
        term: quote_term(&input[start..end]),
        pos: start,
    }
}

/// `size>N`, `size>=N`, `size<N`, `size<=N`: `Ok(None)` when the word is
/// not a size comparison at all.
fn size_term(word: &str) -> Result<Option<Term>, &'static str> {
    let Some(rest) = word
        .get(..4)
        .filter(|k| k.eq_ignore_ascii_case("size"))
        .map(|_| &word[4..])
    else {
        return Ok(None);
    };
    let (cmp, number) = if let Some(n) = rest.strip_prefix(">=") {
        (Comparison::GreaterOrEqual, n)
    } else if let Some(n) = rest.strip_prefix("<=") {
        (Comparison::LessOrEqual, n)
    } else if let Some(n) = rest.strip_prefix('>') {
        (Comparison::Greater, n)
    } else if let Some(n) = rest.strip_prefix('<') {
        (Comparison::Less, n)
    } else {
        return Ok(None);
    };
    let bytes = size(number)
        .ok_or("a size is a number of bytes with an optional k, M or G (×1024), as in size>10M")?;
    Ok(Some(Term::Size { cmp, bytes }))
}

/// `123`, `512k`, `10M`, `1G` (binary multiples as in the configuration's
/// sizes; an optional `B`), ASCII digits only.
fn size(text: &str) -> Option<u64> {
    let t = text.strip_suffix(['b', 'B']).unwrap_or(text);
    let (digits, mult) = match t.as_bytes().last()? {
        b'k' | b'K' => (&t[..t.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&t[..t.len() - 1], 1 << 20),
        b'g' | b'G' => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

fn key_term(key: Key, value: Value<'_>) -> Result<Term, &'static str> {
    let v = value.as_str();
    Ok(match key {
        Key::Text(f) => Term::Text {
            field: Some(f),
            value: match value {
                Value::Bare(w) => Text::Word(w.to_owned()),
                Value::Quoted(p) => Text::Phrase(p),
            },
        },
        Key::Address(field) => {
            if address_glob(v).is_none() && field != AddressField::Sender {
                return Err("`<>` is the null sender; only sender: takes it");
            }
            Term::Address {
                field,
                value: v.to_owned(),
            }
        }
        Key::Queue => Term::Queue(v.to_owned()),
        Key::Client => Term::Client(client(v)?),
        Key::Capture => {
            let name = v.to_ascii_lowercase();
            if !["milter", "filter", "pipe", "import"].contains(&name.as_str()) {
                return Err("the capture paths are milter, filter, pipe and import");
            }
            Term::Capture(name)
        }
        Key::Tag => Term::Tag(v.to_owned()),
        Key::Size => return Err("a size is compared, as in size>10M or size<=2k"),
        Key::Time(field) => Term::Time {
            field,
            range: time_range(v)?,
        },
        Key::After => Term::Time {
            field: TimeField::Received,
            range: TimeRange::After(moment(v)?),
        },
        Key::Before => Term::Time {
            field: TimeField::Received,
            range: TimeRange::Before(moment(v)?),
        },
        Key::Has => {
            if !v.eq_ignore_ascii_case("attachment") {
                return Err("`has:` only accepts `attachment`");
            }
            Term::HasAttachment
        }
        Key::Id => Term::Id(delivery_id(v).ok_or("an id is `b3:` and hex digits, or a number")?),
        Key::Thread => {
            let id = v
                .strip_prefix('<')
                .and_then(|i| i.strip_suffix('>'))
                .unwrap_or(v);
            if id.is_empty() {
                return Err("`thread:` takes a Message-ID, as in thread:<id@example.org>");
            }
            Term::Thread(id.to_owned())
        }
    })
}

/// An address, a CIDR network, or a host name glob. Anything with a `/`,
/// a `:`, or only digits and dots must be an address or network, so a
/// mistyped one (`10.0.0.0/33`, `999.1.1.1`) is an error instead of a host
/// name that never matches.
fn client(v: &str) -> Result<ClientMatch, &'static str> {
    const NOT_NET: &str = "not an IP address or network (such as 192.0.2.0/24 or 2001:db8::/32)";
    let looks_numeric =
        v.contains(['/', ':']) || v.bytes().all(|c| c.is_ascii_digit() || c == b'.');
    if !looks_numeric {
        return Ok(ClientMatch::Host(v.to_owned()));
    }
    let (addr, prefix) = match v.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (v, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| NOT_NET)?;
    let full = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => full,
        Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|c| c.is_ascii_digit()) => {
            p.parse::<u8>().ok().filter(|&n| n <= full).ok_or(NOT_NET)?
        }
        Some(_) => return Err(NOT_NET),
    };
    // The store reads an IPv4-mapped client address as IPv4 (as the rules
    // do), so a mapped network is written the same way.
    if let IpAddr::V6(v6) = addr {
        if let (Some(v4), true) = (v6.to_ipv4_mapped(), prefix >= 96) {
            return Ok(ClientMatch::Net {
                addr: IpAddr::V4(v4),
                prefix: prefix - 96,
            });
        }
    }
    Ok(ClientMatch::Net { addr, prefix })
}

/// `A`, `A..B`, `A..` or `..B`.
fn time_range(v: &str) -> Result<TimeRange, &'static str> {
    let Some((from, to)) = v.split_once("..") else {
        return Ok(TimeRange::At(moment(v)?));
    };
    if from.is_empty() && to.is_empty() {
        return Err("a range needs a start, an end or both: A..B, A.. or ..B");
    }
    let end = |s: &str| (!s.is_empty()).then(|| moment(s)).transpose();
    Ok(TimeRange::Span {
        from: end(from)?,
        to: end(to)?,
    })
}

const DATE_SHAPE: &str =
    "a date is YYYY-MM-DD, a date-time YYYY-MM-DDTHH:MM[:SS] with Z or ±HH:MM (UTC when absent)";

/// `YYYY-MM-DD`, or that, `T`, `HH:MM`, optional `:SS`, optional `Z` or
/// `±HH:MM`. Strict: chrono's parsers would also take `2026-1-1`, signed
/// or five-digit years and leap seconds, which a user did not mean.
fn moment(s: &str) -> Result<Moment, &'static str> {
    let day = date(s.get(..10).ok_or(DATE_SHAPE)?)?;
    let rest = &s[10..];
    if rest.is_empty() {
        return Ok(Moment::day(day));
    }
    let rest = rest.strip_prefix(['T', 't']).ok_or(DATE_SHAPE)?;
    let digits = |r: &str| r.len() == 2 && r.bytes().all(|c| c.is_ascii_digit());
    let num = |r: &str| r.parse::<u32>().unwrap_or(u32::MAX);
    let (hm, zone) = rest.split_at(rest.find(['Z', 'z', '+', '-']).unwrap_or(rest.len()));
    let parts: Vec<&str> = hm.split(':').collect();
    if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| digits(p)) {
        return Err(DATE_SHAPE);
    }
    let (precision, sec) = match parts.get(2) {
        Some(s) => (Precision::Second, num(s)),
        None => (Precision::Minute, 0),
    };
    let time =
        NaiveTime::from_hms_opt(num(parts[0]), num(parts[1]), sec).ok_or("no such time of day")?;
    let offset = match zone {
        "" | "Z" | "z" => 0,
        _ => {
            let (sign, hhmm) = zone.split_at(1);
            let (h, m) = hhmm.split_once(':').ok_or(DATE_SHAPE)?;
            if !digits(h) || !digits(m) || num(h) > 23 || num(m) > 59 {
                return Err("an offset is Z or ±HH:MM, at most ±23:59");
            }
            let secs = (num(h) * 3600 + num(m) * 60) as i32;
            if sign == "-" {
                -secs
            } else {
                secs
            }
        }
    };
    let start = day.and_time(time).and_utc() - chrono::Duration::seconds(i64::from(offset));
    Ok(Moment {
        start,
        precision,
        offset,
    })
}

/// Strict `YYYY-MM-DD`.
fn date(s: &str) -> Result<NaiveDate, &'static str> {
    let b = s.as_bytes();
    let shape_ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape_ok {
        return Err(DATE_SHAPE);
    }
    // The shape check made these all ASCII digits, so parse cannot fail.
    let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap_or(0);
    let year = i32::try_from(num(0..4)).unwrap_or(0);
    NaiveDate::from_ymd_opt(year, num(5..7), num(8..10)).ok_or("no such day in the calendar")
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
        .is_some_and(|c| !c.is_whitespace() && c != ')')
    {
        return Err(QueryError::TextAfterQuote {
            term: quote_term(&input[term_start..find_delim(input, end)]),
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

/// Whitespace and parentheses end a bare word or value.
fn is_delim(c: char) -> bool {
    c.is_whitespace() || c == '(' || c == ')'
}

fn find_delim(input: &str, from: usize) -> usize {
    input[from..]
        .char_indices()
        .find(|&(_, c)| is_delim(c))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ast::client_ip;
    use chrono::{DateTime, Utc};

    fn day(s: &str) -> Moment {
        Moment::day(NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap())
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn t(term: Term) -> Expr {
        Expr::Term(term)
    }

    fn not(e: Expr) -> Expr {
        Expr::Not(Box::new(e))
    }

    fn word(field: Option<TextField>, w: &str) -> Expr {
        t(Term::Text {
            field,
            value: Text::Word(w.into()),
        })
    }

    fn w(s: &str) -> Expr {
        word(None, s)
    }

    fn phrase(field: Option<TextField>, p: &str) -> Expr {
        t(Term::Text {
            field,
            value: Text::Phrase(p.into()),
        })
    }

    fn addr(field: AddressField, v: &str) -> Expr {
        t(Term::Address {
            field,
            value: v.into(),
        })
    }

    fn login(v: &str) -> Expr {
        addr(AddressField::Login, v)
    }

    fn received(range: TimeRange) -> Expr {
        t(Term::Time {
            field: TimeField::Received,
            range,
        })
    }

    fn expr(input: &str) -> Expr {
        match parse(input) {
            Ok(Query { expr: Some(e) }) => e,
            other => panic!("{input:?} should parse to something: {other:?}"),
        }
    }

    /// The top-level AND's items (one item when there is no AND).
    fn items(input: &str) -> Vec<Expr> {
        match expr(input) {
            Expr::And(v) => v,
            e => vec![e],
        }
    }

    #[track_caller]
    fn round_trips(input: &str) {
        let q = parse(input).unwrap();
        assert_eq!(parse(&q.to_string()), Ok(q.clone()), "{input:?} -> {q}");
    }

    #[test]
    fn the_issue_example_parses_into_exactly_its_terms() {
        let q = r#"from:alice to:bob@example.com login:bob subject:invoice after:2026-01-01 before:2026-07-01 has:attachment "exact phrase" words"#;
        assert_eq!(
            items(q),
            vec![
                word(Some(TextField::From), "alice"),
                word(Some(TextField::To), "bob@example.com"),
                login("bob"),
                word(Some(TextField::Subject), "invoice"),
                received(TimeRange::After(day("2026-01-01"))),
                received(TimeRange::Before(day("2026-07-01"))),
                t(Term::HasAttachment),
                phrase(None, "exact phrase"),
                w("words"),
            ]
        );
        assert_eq!(parse(q).unwrap().to_string(), q);
    }

    #[test]
    fn empty_and_whitespace_only_queries_match_everything() {
        for q in ["", " ", "\t\n  \r", "\u{3000}\u{a0}"] {
            assert_eq!(parse(q), Ok(Query::default()), "{q:?}");
            assert_eq!(parse(q).unwrap().to_string(), "");
        }
        assert_eq!(items("  a \t b\n").len(), 2);
    }

    #[test]
    fn negation() {
        assert_eq!(
            items(r#"-spam -from:bob -"big sale" -has:attachment -login:Eve -id:7"#),
            vec![
                not(w("spam")),
                not(word(Some(TextField::From), "bob")),
                not(phrase(None, "big sale")),
                not(t(Term::HasAttachment)),
                not(login("Eve")),
                not(t(Term::Id("7".into()))),
            ]
        );
        // A lone dash, a dash inside a word, and a value starting with one
        // are all literal; only the first leading dash negates.
        assert_eq!(
            items("- e-mail subject:-x --y"),
            vec![
                w("-"),
                w("e-mail"),
                word(Some(TextField::Subject), "-x"),
                not(w("-y")),
            ]
        );
        assert_eq!(items("a -"), vec![w("a"), w("-")]);
        assert_eq!(items("(a -)"), vec![w("a"), w("-")]);
        // A negated date stays a negation: its complement is exact anyway.
        assert_eq!(
            expr("-after:2026-03-01"),
            not(received(TimeRange::After(day("2026-03-01"))))
        );
    }

    #[test]
    fn or_binds_looser_than_and_and_groups_nest() {
        assert_eq!(
            expr("a b OR c"),
            Expr::Or(vec![Expr::And(vec![w("a"), w("b")]), w("c")])
        );
        assert_eq!(
            expr("a (b OR c)"),
            Expr::And(vec![w("a"), Expr::Or(vec![w("b"), w("c")])])
        );
        assert_eq!(
            expr("a AND b OR c AND d"),
            Expr::Or(vec![
                Expr::And(vec![w("a"), w("b")]),
                Expr::And(vec![w("c"), w("d")])
            ])
        );
        assert_eq!(
            expr("-(a OR b) c"),
            Expr::And(vec![not(Expr::Or(vec![w("a"), w("b")])), w("c")])
        );
        // Canonical: groups unwrapped, same-kind children spliced in.
        assert_eq!(expr("((a))"), w("a"));
        assert_eq!(expr("(a b) c"), Expr::And(vec![w("a"), w("b"), w("c")]));
        assert_eq!(
            expr("a OR (b OR c)"),
            Expr::Or(vec![w("a"), w("b"), w("c")])
        );
        assert_eq!(expr("-(-a)"), not(not(w("a"))));
        // Lower case is a word; so is a quoted OR; parentheses end words.
        assert_eq!(items("a or b"), vec![w("a"), w("or"), w("b")]);
        assert_eq!(
            items(r#"a "OR" b"#),
            vec![w("a"), phrase(None, "OR"), w("b")]
        );
        assert_eq!(
            expr("foo(bar)OR(x)"),
            Expr::Or(vec![Expr::And(vec![w("foo"), w("bar")]), w("x")])
        );
        assert_eq!(
            expr(r#"(subject:"a b")"#),
            phrase(Some(TextField::Subject), "a b")
        );
        for q in [
            "a b OR c",
            "a (b OR c) -(d e) -(-f)",
            "(a OR b) (c OR -d) OR e",
            "x -(a OR (b c)) (-y)",
        ] {
            round_trips(q);
        }
        assert_eq!(
            parse("a (b OR c) -(d e)").unwrap().to_string(),
            "a (b OR c) -(d e)"
        );
    }

    #[test]
    fn unbalanced_parentheses_and_dangling_operators_are_errors_at_their_byte() {
        for (q, want) in [
            ("(a", QueryError::UnclosedGroup { pos: 0 }),
            ("a (b (c)", QueryError::UnclosedGroup { pos: 2 }),
            ("a)", QueryError::UnopenedGroup { pos: 1 }),
            ("a ) b", QueryError::UnopenedGroup { pos: 2 }),
            (")", QueryError::UnopenedGroup { pos: 0 }),
            ("x ()", QueryError::EmptyGroup { pos: 2 }),
            ("-()", QueryError::EmptyGroup { pos: 1 }),
            ("OR a", QueryError::DanglingOperator { op: "OR", pos: 0 }),
            ("a OR", QueryError::DanglingOperator { op: "OR", pos: 2 }),
            (
                "a OR OR b",
                QueryError::DanglingOperator { op: "OR", pos: 2 },
            ),
            (
                "(a OR) b",
                QueryError::DanglingOperator { op: "OR", pos: 3 },
            ),
            ("a AND", QueryError::DanglingOperator { op: "AND", pos: 2 }),
            ("AND b", QueryError::DanglingOperator { op: "AND", pos: 0 }),
            ("a -OR b", QueryError::DanglingOperator { op: "OR", pos: 3 }),
            (
                "a OR AND b",
                QueryError::DanglingOperator { op: "OR", pos: 2 },
            ),
        ] {
            let got = parse(q).unwrap_err();
            assert_eq!(got, want, "{q:?}");
            assert!(
                got.to_string()
                    .contains(&format!("at byte {}", want.position())),
                "{got}"
            );
        }
    }

    #[test]
    fn nesting_is_capped_and_deep_input_does_not_recurse_without_bound() {
        let ok = format!("{}a{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert_eq!(expr(&ok), w("a"));
        let over = format!(
            "{}a{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        assert_eq!(parse(&over), Err(QueryError::TooDeep { pos: MAX_DEPTH }));
        // The deepest tree: every level an OR of an AND with a negated group.
        let mut worst = "a b OR c -a".to_string();
        for _ in 0..MAX_DEPTH {
            worst = format!("a b OR c -({worst})");
        }
        let tree = expr(&worst);
        assert_eq!(tree.depth(), MAX_TREE_DEPTH, "{worst}");
        round_trips(&worst);
        // As deep as the byte limit allows: refused quickly, no overflow.
        let hostile = "-(".repeat(MAX_QUERY_BYTES / 2);
        assert!(matches!(parse(&hostile), Err(QueryError::TooDeep { .. })));
        let mixed = format!("{}a", "(a OR ".repeat(MAX_QUERY_BYTES / 6));
        assert!(matches!(parse(&mixed), Err(QueryError::TooDeep { .. })));
    }

    #[test]
    fn quotes_with_fields() {
        assert_eq!(
            items(r#"subject:"quarterly  invoice" FROM:"Alice Example" -body:"do not""#),
            vec![
                phrase(Some(TextField::Subject), "quarterly  invoice"),
                phrase(Some(TextField::From), "Alice Example"),
                not(phrase(Some(TextField::Body), "do not")),
            ]
        );
        assert_eq!(
            expr(r#""say \"hi\" \\ c:\dir""#),
            phrase(None, r#"say "hi" \ c:\dir"#)
        );
        assert_eq!(
            items(r#"login:"bob" has:"Attachment" tag:"a (b)""#),
            vec![
                login("bob"),
                t(Term::HasAttachment),
                t(Term::Tag("a (b)".into()))
            ]
        );
        // Mid-word quotes are literal.
        assert_eq!(items(r#"5" x"y"#), vec![w("5\""), w("x\"y")]);
    }

    #[test]
    fn display_is_query_syntax_that_parses_back() {
        let input = r#"-"say \"hi\" \\ c:\dir" login:"a b" login:"\"q" -after:2026-03-01 msgid:<x@y> id:B3:AB filename:r.pdf tag:"x(y)""#;
        let q = parse(input).unwrap();
        assert_eq!(
            q.to_string(),
            r#"-"say \"hi\" \\ c:\\dir" login:"a b" login:"\"q" -after:2026-03-01 message-id:<x@y> id:b3:ab attachment:r.pdf tag:"x(y)""#
        );
        assert_eq!(parse(&q.to_string()), Ok(q.clone()));
        let first = q.terms()[0];
        assert_eq!(first.describe(), first.to_string());
    }

    #[test]
    fn thread_takes_a_message_id_with_or_without_brackets() {
        assert_eq!(
            items(r#"thread:<a.b@x> THREAD:c@y thread:"<d e@z>" thread:<<f>>"#),
            vec![
                t(Term::Thread("a.b@x".into())),
                t(Term::Thread("c@y".into())),
                t(Term::Thread("d e@z".into())),
                t(Term::Thread("<f>".into())),
            ]
        );
        let q = parse(r#"thread:<<f>> thread:"<d e@z>""#).unwrap();
        assert_eq!(q.to_string(), r#"thread:<<f>> thread:"<d e@z>""#);
        assert_eq!(parse(&q.to_string()), Ok(q));
        assert!(parse("thread:<>").is_err());
    }

    #[test]
    fn every_key_case_insensitively() {
        assert_eq!(
            items("Cc:c BODY:b attachment:a.pdf FileName:f Message-ID:<m@x> msgid:n To:t"),
            vec![
                word(Some(TextField::Cc), "c"),
                word(Some(TextField::Body), "b"),
                word(Some(TextField::Attachment), "a.pdf"),
                word(Some(TextField::Attachment), "f"),
                word(Some(TextField::MessageId), "<m@x>"),
                word(Some(TextField::MessageId), "n"),
                word(Some(TextField::To), "t"),
            ]
        );
        assert_eq!(
            items("id:B3:00FFab12 ID:12345 has:ATTACHMENT"),
            vec![
                t(Term::Id("b3:00ffab12".into())),
                t(Term::Id("12345".into())),
                t(Term::HasAttachment),
            ]
        );
        assert_eq!(
            items("Sender:<> RCPT:@Example.org recipient:a@b BCC:x LOGIN:Bob Queue:BA13C9A45E3 CAPTURE:Milter TAG:vip"),
            vec![
                addr(AddressField::Sender, "<>"),
                addr(AddressField::Recipient, "@Example.org"),
                addr(AddressField::Recipient, "a@b"),
                addr(AddressField::Bcc, "x"),
                login("Bob"),
                t(Term::Queue("BA13C9A45E3".into())),
                t(Term::Capture("milter".into())),
                t(Term::Tag("vip".into())),
            ]
        );
        round_trips("Sender:<> RCPT:@Example.org BCC:x Queue:Q CAPTURE:Milter TAG:vip");
    }

    #[test]
    fn address_globs() {
        assert_eq!(address_glob("<>"), None);
        assert_eq!(address_glob("<bob@x>").as_deref(), Some("bob@x"));
        assert_eq!(address_glob("@x.org").as_deref(), Some("*@x.org"));
        assert_eq!(address_glob("<@x.org>").as_deref(), Some("*@x.org"));
        assert_eq!(address_glob("b*@x").as_deref(), Some("b*@x"));
        for q in ["recipient:<>", "login:<>", "bcc:\"<>\""] {
            assert!(matches!(parse(q), Err(QueryError::BadValue { .. })), "{q}");
        }
    }

    #[test]
    fn client_addresses_networks_and_host_names() {
        let net = |s: &str, prefix| {
            t(Term::Client(ClientMatch::Net {
                addr: s.parse().unwrap(),
                prefix,
            }))
        };
        assert_eq!(
            items("client:192.0.2.1 client:10.0.0.0/8 client:2001:db8::/32 client:*.Example.com client:::ffff:10.1.0.0/112"),
            vec![
                net("192.0.2.1", 32),
                net("10.0.0.0", 8),
                net("2001:db8::", 32),
                t(Term::Client(ClientMatch::Host("*.Example.com".into()))),
                net("10.1.0.0", 16),
            ]
        );
        round_trips(
            "client:192.0.2.1 client:10.0.0.0/8 client:2001:db8::/32 client:*.x client:::1",
        );
        for q in [
            "client:10.0.0.0/33",
            "client:999.1.1.1",
            "client:10.0.0/8",
            "client:2001:db8::/129",
            "client:fe80::1%eth0",
            "client:10.0.0.0/",
            "client:10.0.0.0/+8",
        ] {
            let e = parse(q).unwrap_err();
            assert!(
                matches!(
                    e,
                    QueryError::BadValue {
                        field: "client",
                        ..
                    }
                ),
                "{q}: {e:?}"
            );
        }
        let m = ClientMatch::Net {
            addr: "10.9.9.9".parse().unwrap(),
            prefix: 8,
        };
        assert!(m.contains("10.0.0.1".parse().unwrap()));
        assert!(!m.contains("11.0.0.1".parse().unwrap()));
        assert!(!m.contains("::1".parse().unwrap()));
        let all = ClientMatch::Net {
            addr: "::".parse().unwrap(),
            prefix: 0,
        };
        assert!(all.contains("2001:db8::1".parse().unwrap()));
        assert_eq!(client_ip("[192.0.2.1]"), "192.0.2.1".parse().ok());
        assert_eq!(client_ip("IPv6:::ffff:10.0.0.1"), "10.0.0.1".parse().ok());
        assert_eq!(client_ip("unknown"), None);
    }

    #[test]
    fn capture_paths_are_checked() {
        assert!(matches!(
            parse("capture:smtp"),
            Err(QueryError::BadValue {
                field: "capture",
                ..
            })
        ));
        for c in ["milter", "FILTER", "pipe", "Import"] {
            assert_eq!(
                expr(&format!("capture:{c}")),
                t(Term::Capture(c.to_ascii_lowercase()))
            );
        }
    }

    #[test]
    fn sizes() {
        let size = |cmp, bytes| t(Term::Size { cmp, bytes });
        assert_eq!(
            items("size>10k SIZE<2M size>=1G size<=512 size>3kB"),
            vec![
                size(Comparison::Greater, 10 << 10),
                size(Comparison::Less, 2 << 20),
                size(Comparison::GreaterOrEqual, 1 << 30),
                size(Comparison::LessOrEqual, 512),
                size(Comparison::Greater, 3 << 10),
            ]
        );
        assert_eq!(parse("size>10k").unwrap().to_string(), "size>10240");
        round_trips("size>10k -size<=1 size>=0");
        for q in [
            "size>",
            "size>k",
            "size>-1",
            "size>1.5M",
            "size>99999999999999999999G",
            "size:10",
        ] {
            let e = parse(q);
            assert!(
                matches!(
                    e,
                    Err(QueryError::BadValue { field: "size", .. } | QueryError::EmptyValue { .. })
                ),
                "{q}: {e:?}"
            );
        }
        // Not a comparison: plain words.
        assert_eq!(expr("sizeable"), w("sizeable"));
        assert_eq!(expr("size=>1"), w("size=>1"));
    }

    #[test]
    fn dates_date_times_and_ranges() {
        let minute = Moment {
            start: utc("2026-12-02T12:00:00Z"),
            precision: Precision::Minute,
            offset: 0,
        };
        let second_offset = Moment {
            start: utc("2026-12-02T03:59:16Z"),
            precision: Precision::Second,
            offset: 3600,
        };
        assert_eq!(
            items("received:2026-12-01..2026-12-02T12:00 date:2026-12-02T04:59:16+01:00 date:..2026-12-02 received:2026-12-02.. after:2026-12-02T12:00Z before:2026-12-02t12:00z"),
            vec![
                received(TimeRange::Span {
                    from: Some(day("2026-12-01")),
                    to: Some(minute)
                }),
                t(Term::Time {
                    field: TimeField::Date,
                    range: TimeRange::At(second_offset)
                }),
                t(Term::Time {
                    field: TimeField::Date,
                    range: TimeRange::Span {
                        from: None,
                        to: Some(day("2026-12-02"))
                    }
                }),
                received(TimeRange::Span {
                    from: Some(day("2026-12-02")),
                    to: None
                }),
                received(TimeRange::After(minute)),
                received(TimeRange::Before(minute)),
            ]
        );
        round_trips("received:2026-12-01..2026-12-02T12:00 date:2026-12-02T04:59:16+01:00 date:..2026-12-02 received:2026-12-02.. after:2026-12-02T12:00-05:30");
        assert_eq!(
            parse("date:2026-12-02T04:59:16+01:00 received:2026-12-02T12:00")
                .unwrap()
                .to_string(),
            "date:2026-12-02T04:59:16+01:00 received:2026-12-02T12:00Z"
        );

        // The spans: a date is its whole day, a date-time its minute or
        // second; a range's date end is inclusive, a date-time end not.
        let bounds = |q: &str| match expr(q) {
            Expr::Term(Term::Time { range, .. }) => range.bounds(),
            e => panic!("{e:?}"),
        };
        assert_eq!(
            bounds("received:2026-12-02"),
            (
                Some(utc("2026-12-02T00:00:00Z")),
                Some(utc("2026-12-03T00:00:00Z"))
            )
        );
        assert_eq!(
            bounds("date:2026-12-02T04:59:16Z"),
            (
                Some(utc("2026-12-02T04:59:16Z")),
                Some(utc("2026-12-02T04:59:17Z"))
            )
        );
        assert_eq!(
            bounds("date:2026-12-02T04:59"),
            (
                Some(utc("2026-12-02T04:59:00Z")),
                Some(utc("2026-12-02T05:00:00Z"))
            )
        );
        assert_eq!(
            bounds("received:2026-12-01..2026-12-02"),
            (
                Some(utc("2026-12-01T00:00:00Z")),
                Some(utc("2026-12-03T00:00:00Z"))
            )
        );
        assert_eq!(
            bounds("received:2026-12-01T10:00+02:00..2026-12-02T12:00"),
            (
                Some(utc("2026-12-01T08:00:00Z")),
                Some(utc("2026-12-02T12:00:00Z"))
            )
        );
        assert_eq!(
            bounds("after:2026-12-02"),
            (Some(utc("2026-12-02T00:00:00Z")), None)
        );
        assert_eq!(
            bounds("before:2026-12-02"),
            (None, Some(utc("2026-12-02T00:00:00Z")))
        );
        assert_eq!(
            bounds("before:2026-12-02T00:00:01-00:30"),
            (None, Some(utc("2026-12-02T00:30:01Z")))
        );
        // Start after end is allowed and matches nothing.
        assert_eq!(
            bounds("received:2026-12-05..2026-12-01"),
            (
                Some(utc("2026-12-05T00:00:00Z")),
                Some(utc("2026-12-02T00:00:00Z"))
            )
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
            "after:2026-01-01..",
            "received:..",
            "received:2026-01-01...2026-01-02",
            "date:2026-01-01..x",
            "date:2026-01-01T24:00",
            "date:2026-01-01T12:60",
            "date:2026-01-01T12:00:60",
            "date:2026-01-01T12",
            "date:2026-01-01T1:00",
            "date:2026-01-01T12:00:00.5Z",
            "date:2026-01-01T12:00+1",
            "date:2026-01-01T12:00+24:00",
            "date:2026-01-01T12:00+01:00:00",
            "date:2026-01-01+01:00",
        ] {
            let e = parse(&format!("ok {q}")).unwrap_err();
            assert!(
                matches!(
                    e,
                    QueryError::BadValue { .. } | QueryError::TextAfterQuote { .. }
                ),
                "{q:?}: {e:?}"
            );
            let msg = e.to_string();
            assert!(msg.contains("at byte 3"), "{msg}");
        }
        assert_eq!(
            expr("after:0000-01-01"),
            received(TimeRange::After(day("0000-01-01")))
        );
        assert_eq!(
            expr("before:2024-02-29"),
            received(TimeRange::Before(day("2024-02-29")))
        );
        round_trips("after:0000-01-01T00:00+01:00 date:9999-12-31T23:59:59-23:59");
    }

    #[test]
    fn bad_has_and_id_are_errors() {
        assert!(matches!(
            parse("has:pdf"),
            Err(QueryError::BadValue {
                field: "has",
                pos: 0,
                ..
            })
        ));
        for q in [
            "id:b3:",
            "id:b3:xyz",
            "id:abc",
            "id:-1",
            "id:123456789012345678901",
        ] {
            assert!(
                matches!(parse(q), Err(QueryError::BadValue { field: "id", .. })),
                "{q:?}"
            );
        }
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_keys() {
        for (q, key, pos) in [
            ("http://x", "http", 0),
            ("a re:", "re", 2),
            (r#"xyz:"a b""#, "xyz", 0),
            ("-Fromm:alice", "Fromm", 0),
            ("(e-mail:x)", "e-mail", 1),
            ("a_b:c", "a_b", 0),
        ] {
            let e = parse(q).unwrap_err();
            assert_eq!(
                e,
                QueryError::UnknownKey {
                    key: key.into(),
                    term: match &e {
                        QueryError::UnknownKey { term, .. } => term.clone(),
                        _ => unreachable!(),
                    },
                    pos
                },
                "{q:?}"
            );
            let msg = e.to_string();
            assert!(msg.contains("queue, client"), "{msg}");
            assert!(msg.contains("quote it"), "{msg}");
        }
        // Quoted, or not shaped like a key, it is text.
        assert_eq!(expr(r#""http://x""#), phrase(None, "http://x"));
        assert_eq!(
            items(":x 10:30 日本:x subject:re:hi a.b:c"),
            vec![
                w(":x"),
                w("10:30"),
                w("日本:x"),
                word(Some(TextField::Subject), "re:hi"),
                w("a.b:c"),
            ]
        );
    }

    #[test]
    fn known_key_with_empty_value_is_an_error() {
        for (q, field, pos) in [
            ("from:", "from", 0),
            ("a from: alice", "from", 2),
            ("-subject:\"\"", "subject", 0),
            ("x login:\" \"", "login", 2),
            ("msgid:", "message-id", 0),
            ("queue:", "queue", 0),
            ("(client:)", "client", 1),
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
        // A closing quote may end a group.
        assert_eq!(expr(r#"("b")"#), phrase(None, "b"));
    }

    #[test]
    fn over_long_query_is_an_error() {
        let at_limit = "a".repeat(MAX_QUERY_BYTES);
        assert_eq!(items(&at_limit).len(), 1);
        let over = "a".repeat(MAX_QUERY_BYTES + 1);
        assert_eq!(
            parse(&over),
            Err(QueryError::TooLong {
                len: MAX_QUERY_BYTES + 1
            })
        );
        // A long bad term is quoted short in the message.
        let e = parse(&format!("after:{}", "9".repeat(4000))).unwrap_err();
        assert!(e.to_string().len() < 400, "{e}");
    }

    #[test]
    fn too_many_terms_is_an_error() {
        let ok = vec!["w"; MAX_TERMS].join(" ");
        assert_eq!(items(&ok).len(), MAX_TERMS);
        let over = format!("{ok} extra");
        assert_eq!(
            parse(&over),
            Err(QueryError::TooManyTerms {
                term: "extra".into(),
                pos: ok.len() + 1
            })
        );
        // Terms count wherever they are in the tree.
        let nested = format!("({}) OR -(extra)", vec!["w"; MAX_TERMS].join(" OR "));
        assert!(matches!(
            parse(&nested),
            Err(QueryError::TooManyTerms { .. })
        ));
    }

    #[test]
    fn unicode_words() {
        assert_eq!(
            items("Grüße from:José subject:\"日本語 テスト\"\u{3000}-🙂 résumé：x"),
            vec![
                w("Grüße"),
                word(Some(TextField::From), "José"),
                phrase(Some(TextField::Subject), "日本語 テスト"),
                not(w("🙂")),
                // A fullwidth colon does not make a key.
                w("résumé：x"),
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
            "(",
            "(",
            ")",
            ")",
            " OR ",
            "OR",
            " AND ",
            "or",
            "from:",
            "TO:",
            "subject:",
            "login:",
            "sender:",
            "<>",
            "@",
            "*",
            "queue:",
            "client:",
            "10.0.0.0/8",
            "::1",
            "capture:",
            "milter",
            "tag:",
            "size>",
            "size<=",
            "10k",
            "received:",
            "date:",
            "..",
            "T12:00",
            "Z",
            "+01:00",
            "after:",
            "before:2026-01-01",
            "has:",
            "attachment",
            "id:",
            "b3:",
            "ff",
            "msgid:",
            "2026-02-30",
            "2026-12-02",
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
            "filename:",
        ];
        let mut rng = Lcg(0x6d61_696c_6b65_6570);
        let (mut ok, mut err) = (0, 0);
        for round in 0..20000 {
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
                    assert!(q.terms().len() <= MAX_TERMS);
                    assert!(q.expr.as_ref().map_or(0, Expr::depth) <= MAX_TREE_DEPTH);
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
        assert!(ok > 2000 && err > 2000, "ok {ok}, err {err}");

        let long: String = (0..MAX_QUERY_BYTES * 2)
            .map(|_| PIECES[rng.below(PIECES.len())])
            .collect::<String>();
        for cut in [MAX_QUERY_BYTES, MAX_QUERY_BYTES + 1, long.len()] {
            let cut = (0..=cut).rev().find(|&i| long.is_char_boundary(i)).unwrap();
            let _ = parse(&long[..cut]);
        }
    }
}
