//! What a parsed query means: an expression tree of [`Term`]s, and the
//! exact semantics every consumer (the store's SQL, the property test's
//! reference evaluator) must give each term.
//!
//! The tree, not a flat list, because `OR` and groups cannot be written as
//! a list of ANDed conditions. The parser builds it in one canonical shape
//! (groups unwrapped, nested `AND`s and `OR`s flattened, one-child nodes
//! collapsed), which is the shape `Display` prints back without loss: for
//! any query [`crate::parse`] returns, parsing its `Display` gives the same
//! tree.
//!
//! Missing values are part of the meaning. Every term is true or false for
//! every delivery, never unknown: a delivery without a login is not matched
//! by `login:bob` and *is* matched by `-login:bob`. Consumers that evaluate
//! terms in a three-valued language (SQL) must make each term two-valued.

use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, Duration, NaiveDate, Utc};

/// A parsed query. `None` (the empty query) matches every delivery.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Query {
    /// The condition, or `None` for "everything".
    pub expr: Option<Expr>,
}

impl Query {
    /// Every term of the query, left to right.
    pub fn terms(&self) -> Vec<&Term> {
        let mut out = Vec::new();
        if let Some(e) = &self.expr {
            e.collect_terms(&mut out);
        }
        out
    }
}

/// A boolean combination of terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// One condition.
    Term(Term),
    /// The exact complement: true for every delivery the inner expression
    /// does not match, including those that lack the field.
    Not(Box<Expr>),
    /// All of these (two or more; no child is itself an `And`).
    And(Vec<Expr>),
    /// Any of these (two or more; no child is itself an `Or`).
    Or(Vec<Expr>),
}

impl Expr {
    fn collect_terms<'a>(&'a self, out: &mut Vec<&'a Term>) {
        match self {
            Expr::Term(t) => out.push(t),
            Expr::Not(e) => e.collect_terms(out),
            Expr::And(v) | Expr::Or(v) => v.iter().for_each(|e| e.collect_terms(out)),
        }
    }

    /// How deeply the expression nests (a term is 1).
    pub fn depth(&self) -> usize {
        match self {
            Expr::Term(_) => 1,
            Expr::Not(e) => 1 + e.depth(),
            Expr::And(v) | Expr::Or(v) => 1 + v.iter().map(Expr::depth).max().unwrap_or(0),
        }
    }
}

/// One condition on a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// Words or a phrase (full-text), in one field or (`field: None`)
    /// anywhere in the message.
    Text {
        field: Option<TextField>,
        value: Text,
    },
    /// An address-like envelope value: the whole value compared
    /// case-insensitively (ASCII), `*` matching any run of characters, a
    /// leading `@domain` meaning `*@domain`, one pair of angle brackets
    /// ignored; `sender:<>` is the null sender. See [`address_glob`].
    Address { field: AddressField, value: String },
    /// The MTA queue id, whole, ignoring ASCII case; `*` matches any run
    /// (queue ids never contain one, so `queue:*` is "has a queue id").
    Queue(String),
    /// The SMTP client: an address within a network, or a host name glob.
    Client(ClientMatch),
    /// The capture path: `milter`, `filter`, `pipe` or `import`.
    Capture(String),
    /// Any of the delivery's tags matches this glob (case-insensitive).
    Tag(String),
    /// The message size in bytes compared with a number.
    Size { cmp: Comparison, bytes: u64 },
    /// A time of the delivery (capture) or of the message (header Date).
    Time { field: TimeField, range: TimeRange },
    /// The message has at least one attachment.
    HasAttachment,
    /// A delivery id as printed by mailkeep: `b3:<hex>` (a prefix of the
    /// content's BLAKE3) or a number.
    Id(String),
    /// The message belongs to the conversation of the message whose
    /// Message-ID this is (one pair of angle brackets ignored; compared
    /// exactly): the message with that id, the messages naming it in
    /// In-Reply-To or References, and, from each of those, the messages
    /// their ids and references link to, step by step (a conversation is
    /// the set of messages connected by these links; ids shared by two
    /// messages link them too). Bounded: at most 1000 distinct ids are
    /// followed. The store's in-thread view is this term.
    Thread(String),
}

/// The part of a message a [`Term::Text`] is restricted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextField {
    /// Header From and the envelope sender.
    From,
    /// Header To and Cc and the envelope recipients.
    To,
    /// Header Cc.
    Cc,
    Subject,
    Body,
    /// Attachment file names and content types.
    Attachment,
    MessageId,
    /// Header To and Cc only, not the envelope: no key of the language
    /// names it; the web interface puts it in place of `to:` for a reader
    /// who did not send the message, so the envelope's Bcc recipients
    /// cannot be found by searching for them.
    ToHeaders,
}

impl TextField {
    /// The canonical key, as `Display` writes it.
    pub fn name(self) -> &'static str {
        match self {
            TextField::From => "from",
            TextField::To => "to",
            TextField::Cc => "cc",
            TextField::Subject => "subject",
            TextField::Body => "body",
            TextField::Attachment => "attachment",
            TextField::MessageId => "message-id",
            TextField::ToHeaders => "to-headers",
        }
    }
}

/// What a [`Term::Text`] searches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
    /// A single word, as typed.
    Word(String),
    /// The text between the quotes, escapes resolved, whitespace kept.
    Phrase(String),
}

impl Text {
    /// The words or phrase, without quotes.
    pub fn as_str(&self) -> &str {
        match self {
            Text::Word(w) => w,
            Text::Phrase(p) => p,
        }
    }
}

/// Which address-like envelope value a [`Term::Address`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressField {
    /// The envelope sender (`MAIL FROM`).
    Sender,
    /// Any envelope recipient (`RCPT TO`).
    Recipient,
    /// Any envelope recipient that the header To and Cc do not name.
    Bcc,
    /// The SASL login.
    Login,
}

impl AddressField {
    /// The canonical key.
    pub fn name(self) -> &'static str {
        match self {
            AddressField::Sender => "sender",
            AddressField::Recipient => "recipient",
            AddressField::Bcc => "bcc",
            AddressField::Login => "login",
        }
    }
}

/// The glob an address-like value stands for, or `None` for the null
/// sender `<>`: one pair of angle brackets is dropped (`<bob@x>` as the
/// mail log writes it), and a value starting with `@` gets a leading `*`
/// (`@example.com` is everyone at that domain, not its subdomains).
pub fn address_glob(value: &str) -> Option<String> {
    let inner = value
        .strip_prefix('<')
        .and_then(|v| v.strip_suffix('>'))
        .unwrap_or(value);
    if inner.is_empty() {
        return None;
    }
    Some(if inner.starts_with('@') {
        format!("*{inner}")
    } else {
        inner.to_owned()
    })
}

/// What a [`Term::Client`] matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMatch {
    /// The client address lies in `addr/prefix` (a plain address is a
    /// full-length prefix). Host bits in `addr` are ignored.
    Net { addr: IpAddr, prefix: u8 },
    /// The client's host name (as the MTA verified it, never the HELO)
    /// matches this glob, case-insensitively.
    Host(String),
}

impl ClientMatch {
    /// Whether `ip` lies in the network; always false for a host name and
    /// across address families.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ClientMatch::Net { addr, prefix } = self else {
            return false;
        };
        match (addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
                u32::from(*net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(*prefix)).unwrap_or(0);
                u128::from(*net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

pub use mailkeep_envelope::client_ip;

/// How [`Term::Size`] compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Comparison {
    /// `<`: strictly smaller.
    Less,
    /// `<=`
    LessOrEqual,
    /// `>`: strictly larger.
    Greater,
    /// `>=`
    GreaterOrEqual,
}

impl Comparison {
    /// The operator as written (and as SQL writes it).
    pub fn symbol(self) -> &'static str {
        match self {
            Comparison::Less => "<",
            Comparison::LessOrEqual => "<=",
            Comparison::Greater => ">",
            Comparison::GreaterOrEqual => ">=",
        }
    }

    /// `value <op> bound`.
    pub fn holds(self, value: u64, bound: u64) -> bool {
        match self {
            Comparison::Less => value < bound,
            Comparison::LessOrEqual => value <= bound,
            Comparison::Greater => value > bound,
            Comparison::GreaterOrEqual => value >= bound,
        }
    }
}

/// Which time a [`Term::Time`] compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeField {
    /// When mailkeep captured the delivery (always known).
    Received,
    /// The message's Date header (absent or unparsable on some messages).
    Date,
}

/// How precisely a [`Moment`] was written: it stands for that whole span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Precision {
    /// `2026-12-02`: the whole UTC day.
    Day,
    /// `2026-12-02T12:00`: the whole minute.
    Minute,
    /// `2026-12-02T12:00:05`: the whole second.
    Second,
}

/// A date or date-time as typed: where it starts (UTC), how long it lasts,
/// and the offset it was written in (kept only to print it back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Moment {
    /// The first instant it names, in UTC.
    pub start: DateTime<Utc>,
    /// The span it names.
    pub precision: Precision,
    /// The UTC offset it was written with, in seconds east (0 for `Z`,
    /// for no offset, and always for a bare date).
    pub offset: i32,
}

impl Moment {
    /// The first instant after the span it names.
    pub fn end(&self) -> DateTime<Utc> {
        self.start
            + match self.precision {
                Precision::Day => Duration::days(1),
                Precision::Minute => Duration::minutes(1),
                Precision::Second => Duration::seconds(1),
            }
    }

    /// A whole UTC day.
    pub fn day(d: NaiveDate) -> Moment {
        Moment {
            start: d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc(),
            precision: Precision::Day,
            offset: 0,
        }
    }
}

/// The times a [`Term::Time`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeRange {
    /// `received:D`: the whole span the moment names.
    At(Moment),
    /// `received:A..B`, `A..`, `..B` (at least one end): from the start of
    /// `A`; up to the end of `B` when `B` is a date (that whole day is in),
    /// or up to but not including `B` when it is a date-time.
    Span {
        from: Option<Moment>,
        to: Option<Moment>,
    },
    /// `after:X`: at or after the start of `X` (inclusive).
    After(Moment),
    /// `before:X`: before the start of `X` (exclusive).
    Before(Moment),
}

impl TimeRange {
    /// The half-open interval `[low, high)` this matches; `None` is
    /// unbounded on that side.
    pub fn bounds(&self) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
        match self {
            TimeRange::At(m) => (Some(m.start), Some(m.end())),
            TimeRange::Span { from, to } => (
                from.map(|m| m.start),
                to.map(|m| match m.precision {
                    Precision::Day => m.end(),
                    Precision::Minute | Precision::Second => m.start,
                }),
            ),
            TimeRange::After(m) => (Some(m.start), None),
            TimeRange::Before(m) => (None, Some(m.start)),
        }
    }
}

/// Writes `s` between quotes, escaping `"` and `\` the way the parser
/// reads them.
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

/// Writes a non-text key's value, quoting it only when it would not
/// survive a re-parse bare.
fn write_value(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    if s.is_empty()
        || s.starts_with('"')
        || s.chars().any(|c| c.is_whitespace() || c == '(' || c == ')')
    {
        write_phrase(f, s)
    } else {
        f.write_str(s)
    }
}

impl fmt::Display for Moment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let local = self.start.naive_utc() + Duration::seconds(i64::from(self.offset));
        let shape = match self.precision {
            Precision::Day => return write!(f, "{}", local.format("%Y-%m-%d")),
            Precision::Minute => "%Y-%m-%dT%H:%M",
            Precision::Second => "%Y-%m-%dT%H:%M:%S",
        };
        write!(f, "{}", local.format(shape))?;
        if self.offset == 0 {
            f.write_str("Z")
        } else {
            let sign = if self.offset < 0 { '-' } else { '+' };
            let minutes = self.offset.unsigned_abs() / 60;
            write!(f, "{sign}{:02}:{:02}", minutes / 60, minutes % 60)
        }
    }
}

/// Query syntax: for any term the parser produced, parsing the output gives
/// the same term back.
impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Term::Text { field, value } => {
                if let Some(field) = field {
                    write!(f, "{}:", field.name())?;
                }
                match value {
                    Text::Word(w) => f.write_str(w),
                    Text::Phrase(p) => write_phrase(f, p),
                }
            }
            Term::Address { field, value } => {
                write!(f, "{}:", field.name())?;
                write_value(f, value)
            }
            Term::Queue(q) => {
                f.write_str("queue:")?;
                write_value(f, q)
            }
            Term::Client(ClientMatch::Net { addr, prefix }) => {
                let full = if addr.is_ipv4() { 32 } else { 128 };
                if *prefix == full {
                    write!(f, "client:{addr}")
                } else {
                    write!(f, "client:{addr}/{prefix}")
                }
            }
            Term::Client(ClientMatch::Host(h)) => {
                f.write_str("client:")?;
                write_value(f, h)
            }
            Term::Capture(c) => write!(f, "capture:{c}"),
            Term::Tag(t) => {
                f.write_str("tag:")?;
                write_value(f, t)
            }
            Term::Size { cmp, bytes } => write!(f, "size{}{bytes}", cmp.symbol()),
            Term::Time { field, range } => {
                let key = match field {
                    TimeField::Received => "received",
                    TimeField::Date => "date",
                };
                match range {
                    TimeRange::At(m) => write!(f, "{key}:{m}"),
                    TimeRange::Span { from, to } => {
                        write!(f, "{key}:")?;
                        if let Some(m) = from {
                            write!(f, "{m}")?;
                        }
                        f.write_str("..")?;
                        if let Some(m) = to {
                            write!(f, "{m}")?;
                        }
                        Ok(())
                    }
                    // The parser gives after:/before: the capture time only.
                    TimeRange::After(m) => write!(f, "after:{m}"),
                    TimeRange::Before(m) => write!(f, "before:{m}"),
                }
            }
            Term::HasAttachment => f.write_str("has:attachment"),
            Term::Id(id) => {
                f.write_str("id:")?;
                write_value(f, id)
            }
            Term::Thread(id) => {
                // In brackets: the parser drops one pair, whatever the id.
                f.write_str("thread:")?;
                write_value(f, &format!("<{id}>"))
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

/// Query syntax: `AND` is a space and binds tighter than ` OR `, so only an
/// `OR` inside an `AND` and a negated combination need parentheses.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Term(t) => write!(f, "{t}"),
            Expr::Not(inner) => match inner.as_ref() {
                Expr::Term(t) => write!(f, "-{t}"),
                other => write!(f, "-({other})"),
            },
            Expr::And(items) => {
                for (i, e) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    match e {
                        Expr::Or(_) | Expr::And(_) => write!(f, "({e})")?,
                        _ => write!(f, "{e}")?,
                    }
                }
                Ok(())
            }
            Expr::Or(items) => {
                for (i, e) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" OR ")?;
                    }
                    match e {
                        Expr::Or(_) => write!(f, "({e})")?,
                        _ => write!(f, "{e}")?,
                    }
                }
                Ok(())
            }
        }
    }
}

/// The query in query syntax; the empty query prints as nothing.
impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.expr {
            Some(e) => write!(f, "{e}"),
            None => Ok(()),
        }
    }
}
